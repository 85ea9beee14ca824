"""What the CLI prints at the end: the summary, the plan table with its time
estimate, the verify differences — as text for people or JSON for machines.

On a terminal, plan and verify draw a table fitted to its width.  Anywhere
else (a pipe, a log file, CI, ``kubectl logs``) they print one tab-separated
line per image instead — id, whole name, action or outcome, whole reason —
so nothing is cut or wrapped, whatever the width, and ``grep``/``cut`` work.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from math import ceil
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import redact
from .merge import Merged
from .progress import human_bytes
from .render import failure_note
from .report import Action, ImageResult, Outcome, RunResult
from .window import format_duration

__all__ = [
    "clouds_line",
    "plan_records",
    "print_merge",
    "print_plan",
    "print_summary",
    "print_verify",
    "projects_note",
    "quota_lines",
    "verify_records",
]

_COPYING = {Action.COPY, Action.UPLOAD, "move"}
# Actions after which the image is at the destination: the owner and members it gets count.
_AT_DESTINATION = {Action.COPY, Action.UPLOAD, Action.CREATE, Action.FINISH, Action.NONE, Action.UPDATE}


def clouds_line(clouds: dict[str, Any]) -> str:
    """``source 'old': Glance API 2.15, single-store → destination 'new': API 2.17, stores main*, swift``."""
    parts = []
    for role, info in clouds.items():
        stores = info.get("stores") or []
        where = (
            "stores " + ", ".join(s["id"] + ("*" if s.get("default") else "") for s in stores)
            if info.get("multi_store")
            else "single-store"
        )
        parts.append(f"{role} {info.get('cloud')!r}: Glance API {info.get('api_version')}, {where}")
    return " → ".join(parts)


def _cell(text: object) -> str:
    """A field of a tab-separated line: no tab or line break inside."""
    return " ".join(str(text).split())


def _print_lines(console: Console, header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> None:
    """One tab-separated line per row, under a header: nothing cut, nothing wrapped."""
    for row in (header, *rows):  # plain print: rich would expand the tabs and fit the width
        print("\t".join(_cell(field) for field in row), file=console.file)


def _plan_key(r: ImageResult) -> tuple[bool, str, int, str]:
    return (r.action not in _COPYING, r.action, -r.size, r.id)


def print_summary(console: Console, run: RunResult) -> None:
    """One line: counts by outcome, bytes, time, rate, peak memory."""
    s = run.summary()
    if run.clouds:
        console.print(clouds_line(run.clouds), markup=False)
    console.print(_done_line(run, s), markup=False)
    _print_notes(console, run)


def _done_line(run: RunResult, s: dict[str, Any]) -> str:
    order = (
        Outcome.COPIED,
        Outcome.MOVED,
        Outcome.CREATED,
        Outcome.FINISHED,
        Outcome.UPDATED,
        Outcome.SKIPPED,
        Outcome.RETIRED,
        Outcome.REMOVED,
        Outcome.DELETED,
        Outcome.CONFLICT,
        Outcome.QUARANTINED,
        Outcome.IN_USE,
        Outcome.FAILED,
        Outcome.ABORTED,
    )
    parts = ", ".join(f"{run.count(o)} {o}" for o in order if run.count(o) or o == Outcome.FAILED)
    if run.count(Outcome.BLOCKED):
        parts += f", {run.count(Outcome.BLOCKED)} blocked"
    for other in sorted({r.outcome for r in run.images} - {*order, Outcome.BLOCKED}):  # verify's, a dry run's
        parts += f", {run.count(other)} {other}"
    if s["size_only"]:
        parts += f"; {s['size_only']} verified by size only (no recorded hash)"
    if s["unverified"]:
        parts += f"; {s['unverified']} NOT verified (neither size nor hash recorded)"
    return (
        f"done: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} in {s['seconds']:.1f} s "
        f"({human_bytes(s['bytes_per_second'])}/s); peak memory {human_bytes(s['peak_rss_bytes'])}"
    )


def _print_notes(console: Console, run: RunResult) -> None:
    """What the summary must add (a store's state, a copy's note, a warning): one line each, after the totals."""
    for note in run.notes:
        console.print(redact(note), markup=False)


def _why(r: ImageResult) -> str:
    """A plan line's reason, followed by what its non-blocking traps warn of."""
    return "; ".join(filter(None, [r.reason, *r.warnings]))


def print_merge(console: Console, merged: Merged, *, as_json: bool) -> None:
    """The shards' reports as one: which shards, what is missing or not completed, the
    images claimed twice, every failure (id, name, reason, shard), and the totals."""
    s = merged.summary()
    if as_json:
        print(json.dumps(s, indent=2))
        return
    present = " ".join(merged.shard_name(k) for k in sorted(merged.reports))
    head = f"report merge: {merged.command}, {len(merged.reports)} of {merged.of} shards ({present})"
    console.print(head, markup=False)
    for k in merged.missing:
        console.print(f"missing: shard {merged.shard_name(k)} (no report)", markup=False)
    for k, why in merged.not_completed.items():
        console.print(f"not completed: shard {merged.shard_name(k)}: {why}", markup=False)
    for image_id, shards in s["claimed_twice"].items():
        console.print(f"claimed by two shards: {image_id} ({', '.join(shards)})", markup=False)
    for k, r in merged.failures():
        console.print(f"{failure_note(r)} (shard {merged.shard_name(k)})", markup=False)
    if merged.run.clouds:
        console.print(clouds_line(merged.run.clouds), markup=False)
    verdict = "the job is complete" if s["exit_code"] == 0 else "the job is NOT complete"
    console.print(f"{_done_line(merged.run, s)}; {verdict}", markup=False)
    for note in merged.run.notes:
        console.print(redact(note), markup=False)


def _estimate(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def quota_lines(quota: dict[str, Any], verb: str) -> list[str]:
    """What ``plan`` says about the destination's quota (:meth:`asyncmigrate.quota.Verdict.describe`)."""
    checks = quota.get("checks") or []
    if not checks:
        return [f"quota: {note}" for note in quota.get("not_checked") or ["nothing published; nothing was checked"]]
    who = f"project {quota['project']}" if quota.get("project") else "the caller's project (its id unknown)"
    lines = [
        f"quota of the destination, {who}: glance checks every create and upload against the caller's project "
        "and counts only the images it owns"
    ]
    lines += [f"  {check['text']}" for check in checks]
    if quota.get("max_uploads") is not None:
        lines.append(f"  uploads at once: at most {quota['max_uploads']} (the room left in image_count_uploading)")
    lines += [f"  not checked: {note}" for note in quota.get("not_checked") or []]
    short = [check["text"] for check in checks if check.get("short")]
    if short:
        ignored = (
            " (--ignore-quota: it would start anyway)" if quota.get("ignored") else " (--ignore-quota starts anyway)"
        )
        lines.append(f"{verb} would refuse to start: the quota cannot hold this plan{ignored}")
    return lines


def _plan_image(r: ImageResult) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "action": r.action,
        "size": r.size,
        "reason": redact(r.reason),
        "traps": r.traps,
        "warnings": [redact(w) for w in r.warnings],
        **({"changes": r.changes} if r.changes else {}),
        **_identity_fields(r),
    }


def _estimate_of(run: RunResult, rate: int | None, window: float | None) -> dict[str, Any]:
    """The time at ``rate`` and whether it fits a maintenance ``window`` (``--max-duration``)."""
    seconds = run.bytes / rate if rate else None
    fits = None if seconds is None or window is None else seconds <= window
    windows = None if window is None or seconds is None else max(1, ceil(seconds / window))
    return {
        "rate_bytes_per_second": rate,
        "seconds": seconds,
        "max_duration_seconds": window,
        "fits": fits,
        "windows": windows,
    }


def _plan_totals(run: RunResult, rate: int | None, window: float | None = None) -> dict[str, Any]:
    actions = Counter(r.action for r in run.images)
    return {
        "clouds": run.clouds,
        "notes": [redact(n) for n in run.notes],
        **({"quota": run.quota} if run.quota is not None else {}),
        "totals": {"images": len(run.images), "actions": dict(actions), "bytes": run.bytes},
        "estimate": _estimate_of(run, rate, window),
        "exit_code": int(run.exit_code),
    }


Record = tuple[str, str, dict[str, Any]]  # (event, level, fields): one JSON line of the log


def plan_records(run: RunResult, *, rate: int | None, verb: str, window: float | None = None) -> list[Record]:
    """A dry run as JSON lines (``--log-format json``): one per image, then the totals."""
    rows: list[Record] = [
        ("plan", "error" if r.action in Action.BAD else "info", _plan_image(r))
        for r in sorted(run.images, key=_plan_key)
    ]
    return [*rows, ("summary", "info", {"command": verb, "dry_run": True, **_plan_totals(run, rate, window)})]


def verify_records(run: RunResult) -> list[Record]:
    """verify as JSON lines: one per image that does not match, then the counts."""
    counts = Counter(r.outcome for r in run.images)
    rows: list[Record] = [
        (
            "difference" if r.outcome != Outcome.MATCH else "match",
            "error" if r.outcome != Outcome.MATCH else "info",
            {"id": r.id, "name": r.name, "outcome": r.outcome, "why": redact(r.reason)},
        )
        for r in sorted(run.images, key=lambda r: (r.outcome, r.id))
        if r.outcome != Outcome.MATCH or r.reason  # a match still names the members it leaves out
    ]
    summary = {
        "images": len(run.images),
        "counts": dict(counts),
        "verification": dict(Counter(r.verification for r in run.images if r.verification)),
        "match": not run.failed,
        "exit_code": int(run.exit_code),
    }
    return [*rows, ("summary", "info", summary)]


def print_plan(
    console: Console, run: RunResult, *, rate: int | None, as_json: bool, verb: str, window: float | None = None
) -> None:
    """Each image's action (and why), the totals, the time at ``rate`` bytes/s, and whether that
    fits a maintenance ``window`` (seconds, ``--max-duration``); ``as_json``: one document, for
    ``plan --output json``."""
    actions = Counter(r.action for r in run.images)
    estimate = run.bytes / rate if rate else None
    fits = None if estimate is None or window is None else estimate <= window
    if as_json:
        document = {"images": [_plan_image(r) for r in run.images], **_plan_totals(run, rate, window)}
        print(json.dumps(document, indent=2), file=console.file)
        return
    if run.clouds:
        console.print(clouds_line(run.clouds), markup=False)
    unchecked = projects_note(run.clouds)
    if unchecked:
        console.print(unchecked, markup=False)
    ordered = sorted(run.images, key=_plan_key)
    if not console.is_terminal:
        rows = [
            (r.action, r.id, human_bytes(r.size), r.name or "", redact(_why(r)), *_identity_cells(r)) for r in ordered
        ]
        _print_lines(console, ("action", "id", "size", "name", "why", "owner", "members"), rows)
    else:
        table = Table(title=f"plan: {verb}", show_lines=False)
        table.add_column("action")
        table.add_column("id", no_wrap=True)
        table.add_column("name")
        table.add_column("size", justify="right")
        table.add_column("why")
        table.add_column("owner / members at the destination")
        for r in ordered:
            owner, members = _identity_cells(r)
            who = owner + (f" / {members}" if members else "")
            table.add_row(r.action, r.id, r.name or "", human_bytes(r.size), redact(_why(r)), who)
        console.print(table)
    for text in quota_lines(run.quota, verb) if run.quota is not None else []:
        console.print(text, markup=False)
    parts = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    line = f"dry run: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} to {verb}; nothing changed"
    if estimate is not None and rate:
        line += f"; about {_estimate(estimate)} at {human_bytes(rate)}/s"
        if window is not None:
            within = f"the --max-duration of {format_duration(window)}"
            line += f": fits in {within}" if fits else f": does NOT fit in {within} ({ceil(estimate / window)} windows)"
    bad = sum(1 for r in run.images if r.action in Action.BAD)
    if bad:
        line += f"; {bad} would not arrive (fail, conflict or blocked: exit 1)"
    console.print(line, markup=False)
    _print_notes(console, run)


def projects_note(clouds: dict[str, Any]) -> str | None:
    """The line that says the destination's projects could not be checked (no Keystone)."""
    destination = clouds.get("destination") or {}
    if destination.get("projects_checked") is False:
        return (
            f"projects not checked: the destination {destination.get('cloud')!r} has no Keystone to ask; owners "
            "and members are written as mapped, whether or not such projects exist there"
        )
    return None


def _identity_fields(r: ImageResult) -> dict[str, Any]:
    """The owner and members an image gets at the destination (plan JSON)."""
    if r.action not in _AT_DESTINATION:
        return {}
    return {"owner": r.owner, "members": r.members, "members_left_out": r.members_left_out}


def _identity_cells(r: ImageResult) -> tuple[str, str]:
    """(owner, members) as words: ``caller's project`` for an image given to the caller."""
    if r.action not in _AT_DESTINATION:
        return "", ""
    members = ", ".join(f"{m} ({st})" for m, st in sorted((r.members or {}).items()))
    if r.members_left_out:
        members = "; ".join(filter(None, [members, "left out: " + ", ".join(r.members_left_out)]))
    return r.owner or "caller's project", members


def print_verify(console: Console, run: RunResult) -> None:
    """Every image that does not match, with its differences, and the counts."""
    counts = Counter(r.outcome for r in run.images)
    # Differences, and matches with something to say (members left out by --drop-unmapped-members).
    bad = [r for r in run.images if r.outcome != Outcome.MATCH or r.reason]
    if not console.is_terminal:  # every image, one line each, for logs and scripts
        ordered = sorted(run.images, key=lambda r: (r.outcome == Outcome.MATCH, r.outcome, r.id))
        rows = [(r.outcome, r.id, r.name or "", redact(r.reason)) for r in ordered]
        _print_lines(console, ("outcome", "id", "name", "what differs"), rows)
    elif bad:
        table = Table(title="differences")
        table.add_column("outcome")
        table.add_column("id", no_wrap=True)
        table.add_column("name")
        table.add_column("what differs")
        for r in sorted(bad, key=lambda r: (r.outcome, r.id)):
            table.add_row(r.outcome, r.id, r.name or "", redact(r.reason))
        console.print(table)
    verdict = "catalogs match" if not run.failed else "catalogs differ"
    parts = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    console.print(f"verify: {len(run.images)} images ({parts}); {verdict}{_weakly(run)}", markup=False)


def _weakly(run: RunResult) -> str:
    """What a match rests on when the two records share no hash: said, never passed over."""
    by = Counter(r.verification for r in run.images if r.outcome == Outcome.MATCH)
    parts = [f"{by[v]} by {label}" for v, label in (("size-only", "size only"), ("unverified", "nothing")) if by[v]]
    if not parts:
        return ""
    return f"; matched {' and '.join(parts)}: the two clouds record no hash in common for them"
