"""One view over a sharded job: the shards' reports merged into one (``report merge``).

A job run as N shards (``--shard K/N``, e.g. a Kubernetes Indexed Job) leaves N
reports.  :func:`merge_reports` takes them as :class:`~asyncmigrate.report.Report`
values (read by :meth:`Report.read`, never a second reader of the JSON) and says
what a single report would: the totals and outcomes of every image, the failures
with their ids and reasons — and what only a set of shards can show: shards
missing or not completed (incomplete, interrupted), and images claimed by two
shards (a shard mistake: the same K twice in the job, or different selections).

The merged job is done (:attr:`Merged.exit_code` 0) only when every shard of N
is there and completed and nothing failed; otherwise it is 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .errors import ExitCode, UsageError, redact
from .report import ImageResult, Outcome, Report, RunResult, format_shard

__all__ = ["Merged", "merge_reports"]


@dataclasses.dataclass(frozen=True)
class Merged:
    """The shards' reports as one job."""

    command: str
    of: int  # N: the job's number of shards
    reports: dict[int, Report]  # shard K -> its report
    run: RunResult  # every shard's images, the job's wall time (the longest shard)
    claimed_twice: dict[str, list[int]]  # image id -> the shards that reported it

    @property
    def missing(self) -> list[int]:
        """The shards (K) with no report."""
        return [k for k in range(self.of) if k not in self.reports]

    @property
    def not_completed(self) -> dict[int, str]:
        """Shard K -> why it did not complete (its listing failed or its window closed; interrupted)."""
        why: dict[int, str] = {}
        for k, report in sorted(self.reports.items()):
            if report.run.interrupted:
                why[k] = "interrupted"
            elif report.run.incomplete is not None:
                why[k] = f"incomplete: {redact(report.run.incomplete)}"
        return why

    def failures(self) -> list[tuple[int, ImageResult]]:
        """(shard, result) of every image that failed, conflicted, was blocked or differs."""
        return [
            (k, r) for k, report in sorted(self.reports.items()) for r in report.run.images if r.outcome in Outcome.BAD
        ]

    @property
    def exit_code(self) -> ExitCode:
        """0 when every shard is there and completed and no image failed; else 1."""
        done = not self.missing and not self.not_completed and not self.claimed_twice and not self.run.failed
        return ExitCode.OK if done else ExitCode.IMAGES_FAILED

    def shard_name(self, k: int) -> str:
        """``"K/N"``."""
        return format_shard((k, self.of))

    def summary(self) -> dict[str, Any]:
        """A single report's ``summary`` over every shard, and what the shards add."""
        summary = self.run.summary()
        summary.pop("shard", None)
        # Each shard checked the destination's quota against its own plan: say what each found.
        quotas = {self.shard_name(k): r.run.quota for k, r in sorted(self.reports.items()) if r.run.quota is not None}
        if quotas:
            summary["quota"] = quotas
        summary["peak_rss_bytes"] = max((r.peak_rss_bytes for r in self.reports.values()), default=0)
        summary["exit_code"] = int(self.exit_code)
        summary["shards"] = {
            "of": self.of,
            "reports": {self.shard_name(k): str(r.path) for k, r in sorted(self.reports.items())},
            "missing": [self.shard_name(k) for k in self.missing],
            "not_completed": {self.shard_name(k): why for k, why in self.not_completed.items()},
        }
        summary["claimed_twice"] = {i: [self.shard_name(k) for k in ks] for i, ks in sorted(self.claimed_twice.items())}
        summary["failures"] = [
            {"id": r.id, "name": r.name, "outcome": r.outcome, "reason": redact(r.reason), "shard": self.shard_name(k)}
            for k, r in self.failures()
        ]
        return summary


def merge_reports(reports: Sequence[Report]) -> Merged:
    """Merge the reports of one job's shards.

    A report without a shard is the job's only shard (0/1).  Reports of different
    commands or shard counts, or two reports of the same shard, are a usage error:
    they are not one job (or one of them is stale), and guessing which to trust
    could hide a failure.
    """
    if not reports:
        raise UsageError("report merge needs at least one report")
    commands = {r.command for r in reports}
    if len(commands) > 1:
        raise UsageError(f"these reports are of different commands ({', '.join(sorted(commands))}): not one job")
    if len({r.run.dry_run for r in reports}) > 1:
        raise UsageError("some of these reports are of dry runs and some not: not one job")
    counts = {(r.run.shard or (0, 1))[1] for r in reports}
    if len(counts) > 1:
        raise UsageError(f"these reports split the job differently (N = {', '.join(map(str, sorted(counts)))})")
    (of,) = counts
    by_shard: dict[int, Report] = {}
    for report in reports:
        k = (report.run.shard or (0, 1))[0]
        if k in by_shard:
            raise UsageError(
                f"shard {format_shard((k, of))} has two reports ({by_shard[k].path}, {report.path}): give one per shard"
            )
        by_shard[k] = report
    owners: dict[str, list[int]] = {}
    for k, report in sorted(by_shard.items()):
        for r in report.run.images:
            if k not in owners.setdefault(r.id, []):
                owners[r.id].append(k)
    ordered = [by_shard[k] for k in sorted(by_shard)]
    reasons = [f"{format_shard((k, of))}: {r.run.incomplete}" for k, r in sorted(by_shard.items()) if r.run.incomplete]
    run = RunResult(
        images=[image for report in ordered for image in report.run.images],
        seconds=max(r.run.seconds for r in ordered),
        dry_run=ordered[0].run.dry_run,
        interrupted=any(r.run.interrupted for r in ordered),
        clouds=ordered[0].run.clouds,
        incomplete="; ".join(reasons) or None,
        notes=[f"{format_shard((k, of))}: {n}" for k, r in sorted(by_shard.items()) for n in r.run.notes],
    )
    twice = {image_id: ks for image_id, ks in owners.items() if len(ks) > 1}
    return Merged(commands.pop(), of, by_shard, run, twice)
