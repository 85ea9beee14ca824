"""Per-image results, the run's summary and the JSON report.

The core returns a :class:`RunResult`; the CLI prints its summary and, with
``--report``, writes :func:`write_report`'s JSON (one entry per image).
:meth:`Report.read` reads such a file back into the same types (``report merge``
works on them, never on the JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ExitCode, UsageError, redact
from .metadata import left_out as _left_out
from .metadata import size_of

__all__ = [
    "Action",
    "ImageResult",
    "Outcome",
    "Report",
    "RunResult",
    "check_writable",
    "format_shard",
    "peak_rss_bytes",
    "write_report",
]


class Action:
    """What the plan says to do with an image."""

    COPY = "copy"  # create on the destination, then stream the data
    UPLOAD = "upload"  # destination exists and is queued: stream the data into it
    CREATE = "create"  # source has no data (queued): create with metadata only
    FINISH = "finish"  # data already there: members / protected / deactivate remain
    NONE = "none"  # already complete at the destination
    CONFLICT = "conflict"  # same id at the destination with other content or attributes
    UNSUPPORTED = "unsupported"  # source state cannot be copied (saving, killed, ...)
    FAIL = "fail"  # cannot be done (e.g. the id was deleted at the destination)
    BLOCKED = "blocked"  # a blocking pre-flight trap: not attempted (reason says the way out)
    QUARANTINED = "quarantined"  # the destination's copy holds other bytes: deactivated (reason: the way out)
    # sync
    UPDATE = "update"  # same image at both ends: apply the attribute, member and status drift
    REMOVE = "remove"  # brought earlier, gone from the source: report it (kept at the destination)
    DELETE = "delete"  # the same, deleted at the destination (--delete-removed)

    BAD = frozenset({FAIL, CONFLICT, BLOCKED})  # a plan with one of these exits 1, as the run would


class Outcome:
    """How an image ended."""

    COPIED = "copied"
    MOVED = "moved"  # store move: now in the new store only
    IN_USE = "in-use"  # store move: the old store's copy is in use (RBD clones): kept in both stores
    RETIRED = "retired"  # store move: a carrier left in the old store by its image, deleted
    CREATED = "created"  # metadata only (no data at the source)
    FINISHED = "finished"  # only the finishing steps were needed
    SKIPPED = "skipped"  # nothing to do, or not copyable (reason says which)
    PLANNED = "planned"  # dry run
    CONFLICT = "conflict"
    FAILED = "failed"
    BLOCKED = "blocked"  # a pre-flight trap (signed, encrypted, ...): not attempted, nothing created
    # The destination's copy holds bytes other than the source recorded: deactivated at once (now, or
    # by an earlier run), so nobody boots it; Glance cannot mend it under its id (reason: the way out).
    QUARANTINED = "quarantined"
    ABORTED = "aborted"  # in flight when an interrupted run aborted it (bytes: what was sent)
    # sync
    UPDATED = "updated"  # drift applied: attributes, members, status
    REMOVED = "removed"  # gone from the source, kept at the destination (reported; exit code unaffected)
    DELETED = "deleted"  # gone from the source, deleted at the destination (--delete-removed)
    # verify
    MATCH = "match"
    DIFFERS = "differs"
    MISSING = "missing"
    EXTRA = "extra"  # only at the destination (--strict)

    BAD = frozenset({CONFLICT, FAILED, BLOCKED, QUARANTINED, ABORTED, DIFFERS, MISSING, EXTRA, IN_USE})


@dataclasses.dataclass
class ImageResult:
    """One image's line in the report."""

    id: str
    name: str | None
    action: str
    outcome: str
    bytes: int = 0
    seconds: float = 0.0
    reason: str = ""
    attempts: int = 0
    left_out: list[str] = dataclasses.field(default_factory=list)
    size: int = 0
    resumed: bool = False  # a previous run was killed while this image was in flight
    # What the copy was checked against: the algorithm hashed ("sha512", "md5", ...),
    # "size-only" (nothing recorded but the size) or "unverified" (not even that: the bytes
    # are whatever the source sends until it closes).
    verification: str | None = None
    traps: list[str] = dataclasses.field(default_factory=list)  # pre-flight kinds (preflight.py)
    warnings: list[str] = dataclasses.field(default_factory=list)  # what the non-blocking traps say
    stripped: list[str] = dataclasses.field(default_factory=list)  # keys dropped (--strip-signature)
    # The destination converted the data on import: {"from": "qcow2", "to": "raw", "size": N}.
    converted: dict[str, Any] | None = None
    # sync: what changed (or would change), {attribute: [destination value, source value]}
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)
    # store move: the carrier image holding the data (--method location), carriers retired with
    # the image, and what --verify-download read (moveverify.DownloadCheck.to_json()).
    carrier: str | None = None
    retired_carriers: list[str] = dataclasses.field(default_factory=list)
    download_check: dict[str, Any] | None = None
    # Who the image belongs to at the destination (through --project-map): its owner (None: the
    # caller's project), and for a shared image its members ({project: status}) and the source
    # members left out for want of a mapping.
    owner: str | None = None
    members: dict[str, str] | None = None
    members_left_out: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, image: Mapping[str, Any], action: str = "", *, with_left_out: bool = False) -> ImageResult:
        """A fresh result for a source image (its id, name and size; ``left_out`` on request)."""
        return cls(
            id=str(image["id"]),
            name=image.get("name"),
            action=action,
            outcome="",
            size=size_of(image),
            left_out=_left_out(image) if with_left_out else [],
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to the report."""
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["reason"] = redact(self.reason)  # reasons quote servers: never a credential in the file
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageResult:
        """The result :meth:`to_json` wrote (keys this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class RunResult:
    """Everything a run did, in the order images finished."""

    images: list[ImageResult]
    seconds: float
    dry_run: bool = False
    interrupted: bool = False
    clouds: dict[str, Any] = dataclasses.field(default_factory=dict)  # role -> Capabilities.describe()
    incomplete: str | None = None  # why a listing ended early (the run must be run again)
    refused: str | None = None  # why sync deleted none of the removed images it was asked to delete (exit 1)
    quota: dict[str, Any] | None = None  # the destination's quota against the plan (quota.Verdict.describe)
    shard: tuple[int, int] | None = None  # (K, N): the run was shard K of N (--shard)
    notes: list[str] = dataclasses.field(default_factory=list)  # what the summary must add (e.g. a store's state)

    def count(self, outcome: str) -> int:
        """How many images ended with ``outcome``."""
        return sum(1 for r in self.images if r.outcome == outcome)

    @property
    def bytes(self) -> int:
        """Bytes copied (dry run: bytes that would be copied)."""
        return sum(r.bytes for r in self.images)

    @property
    def failed(self) -> int:
        """Images that did not arrive: failures and conflicts (a dry run: that would not)."""
        if self.dry_run:
            return sum(1 for r in self.images if r.action in Action.BAD)
        return sum(1 for r in self.images if r.outcome in Outcome.BAD)

    @property
    def exit_code(self) -> ExitCode:
        """0 all done, 1 some images failed (or their deletion was refused), 4 a listing failed
        part-way, 130 interrupted."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.incomplete is not None:
            return ExitCode.INCOMPLETE
        return ExitCode.IMAGES_FAILED if self.failed or self.refused else ExitCode.OK

    def summary(self) -> dict[str, Any]:
        """Totals for the summary line and the report header."""
        counts: dict[str, int] = {}
        for r in self.images:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        rate = self.bytes / self.seconds if self.seconds > 0 and not self.dry_run else 0.0
        checked: dict[str, int] = {}
        for r in self.images:
            if r.verification:
                checked[r.verification] = checked.get(r.verification, 0) + 1
        return {
            "images": len(self.images),
            "outcomes": counts,
            "verification": checked,
            "size_only": checked.get("size-only", 0),
            "unverified": checked.get("unverified", 0),
            "clouds": self.clouds,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "bytes_per_second": round(rate, 1),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "incomplete": None if self.incomplete is None else redact(self.incomplete),
            "refused": self.refused,
            "shard": None if self.shard is None else format_shard(self.shard),
            "notes": [redact(n) for n in self.notes],
            "peak_rss_bytes": peak_rss_bytes(),
            **({"quota": self.quota} if self.quota is not None else {}),
            "exit_code": int(self.exit_code),
        }


def format_shard(shard: tuple[int, int]) -> str:
    """``(2, 4)`` → ``"2/4"``, as ``--shard`` takes it."""
    return f"{shard[0]}/{shard[1]}"


@dataclasses.dataclass
class Report:
    """A report file read back: the command that wrote it, its run, and the peak
    memory it recorded (``report merge`` reads the shards' reports into these)."""

    path: Path
    command: str
    run: RunResult
    peak_rss_bytes: int = 0

    @classmethod
    def read(cls, path: Path) -> Report:
        """Read a report :func:`write_report` wrote; a file that is not one is a UsageError."""
        try:
            document = json.loads(path.read_text())
            summary = document["summary"]
            shard = summary.get("shard")
            run = RunResult(
                images=[ImageResult.from_json(entry) for entry in document["images"]],
                seconds=float(summary["seconds"]),
                dry_run=bool(summary["dry_run"]),
                interrupted=bool(summary["interrupted"]),
                clouds=dict(summary.get("clouds") or {}),
                incomplete=summary.get("incomplete"),
                shard=None if shard is None else _parse_shard(str(shard)),
                notes=[str(n) for n in summary.get("notes") or []],
                quota=summary.get("quota"),
            )
            return cls(path, str(document["command"]), run, int(summary.get("peak_rss_bytes") or 0))
        except OSError as exc:
            raise UsageError(f"cannot read the report {path}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path} is not an asyncmigrate report ({type(exc).__name__}: {exc})") from exc


def _parse_shard(text: str) -> tuple[int, int]:
    k, _slash, n = text.partition("/")
    return int(k), int(n)


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    Read from ``/proc/self/status`` (VmHWM) where it exists, because
    ``getrusage`` also counts the parent's memory from before ``exec``.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def check_writable(path: Path) -> None:
    """Raise OSError now if the report could not be written at the end."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    if path.is_dir():
        raise IsADirectoryError(f"is a directory: {path}")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"not writable: {path}")


def write_report(path: Path, run: RunResult, *, command: str) -> None:
    """Write the JSON report atomically (temp file + rename)."""
    document = {
        "command": command,
        "summary": run.summary(),
        "images": [r.to_json() for r in run.images],
    }
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
