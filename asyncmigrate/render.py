"""Drawing progress for people (the CLI's side of the progress events).

On a terminal: rich progress bars, an overall line (images, bytes, rate, ETA)
and one line per active transfer, refreshed by rich at a fixed rate in its own
thread.  Elsewhere (a log file, CI): one plain line every ``interval`` seconds.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import redact
from .progress import (
    BytesMoved,
    Event,
    ImageDone,
    ImageQueued,
    ImageRejudged,
    InternalError,
    JournalFailed,
    JournalOpened,
    ListingDone,
    ListingFailed,
    Retrying,
    Stats,
    TransferStarted,
)
from .report import ImageResult

__all__ = [
    "JsonRenderer",
    "LineRenderer",
    "RichRenderer",
    "failure_note",
    "human_bytes",
    "journal_note",
    "listing_note",
    "resume_note",
    "retry_note",
]


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def resume_note(event: JournalOpened) -> str:
    """The line that tells an operator a killed run is being resumed."""
    return (
        f"journal {event.path}: the previous run was killed with {event.crashed_in_flight} image(s) in flight; "
        "resuming (each is checked against the destination)"
    )


def retry_note(event: Retrying) -> str:
    """The line ``-v`` shows when an image is tried again."""
    return f"retrying {event.image_id} (attempt {event.attempt}): {redact(event.reason)}"


def journal_note(event: JournalFailed) -> str:
    """The one warning printed when the journal cannot be written any more."""
    return (
        f"warning: journal {event.path} cannot be written ({redact(event.reason)}); going on without it "
        "(it is only a record: the destination decides what is done)"
    )


def listing_note(event: ListingFailed) -> str:
    """The line printed as soon as a listing fails part-way."""
    return f"{redact(event.reason)}; taking no new image, finishing those in flight"


# The outcomes printed as they happen, with their reason (the way out, for a quarantined copy).
NOTED = frozenset({"failed", "conflict", "quarantined"})


def failure_note(result: ImageResult) -> str:
    """The line printed when an image fails, conflicts or is quarantined."""
    return f"{result.outcome}: {result.id} {result.name or ''}: {redact(result.reason)}"


class RichRenderer:
    """Progress bars on a terminal; use as a context manager and as the emit callback."""

    def __init__(self, console: Console, stats: Stats, *, verbose: bool = False) -> None:
        self.stats = stats
        self.verbose = verbose
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self.overall = self.progress.add_task("images 0/0", total=None)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        """Apply one event (called on the event loop; rich redraws in its thread)."""
        self.stats(event)
        if isinstance(event, JournalOpened) and event.crashed_in_flight:
            self.progress.console.print(resume_note(event), markup=False)
        elif isinstance(event, JournalFailed):
            self.progress.console.print(journal_note(event), markup=False)
        elif isinstance(event, ListingFailed):
            self.progress.console.print(listing_note(event), markup=False)
        elif isinstance(event, (ImageQueued, ListingDone)):
            total = self.stats.bytes_seen if self.stats.listing_done else None
            self.progress.update(self.overall, total=total)
        elif isinstance(event, TransferStarted):
            label = (event.name or event.image_id)[:28]
            self.tasks[event.image_id] = self.progress.add_task(f"  {label}", total=event.size)
        elif isinstance(event, BytesMoved):
            self.progress.advance(self.overall, event.n)
            if event.image_id in self.tasks:
                self.progress.advance(self.tasks[event.image_id], event.n)
        elif isinstance(event, Retrying):
            if self.verbose:
                self.progress.console.print(retry_note(event), markup=False)
            self.progress.advance(self.overall, -event.rewound)
            if event.image_id in self.tasks:
                self.progress.update(self.tasks[event.image_id], completed=0)
        elif isinstance(event, ImageDone):
            task = self.tasks.pop(event.result.id, None)
            if task is not None:
                self.progress.remove_task(task)
            if event.result.outcome in NOTED:
                self.progress.console.print(failure_note(event.result), markup=False)
        elif isinstance(event, ImageRejudged) and event.result.outcome in NOTED:
            self.progress.console.print(failure_note(event.result), markup=False)
        seen = self.stats.images_seen if self.stats.listing_done else f"{self.stats.images_seen}+"
        self.progress.update(self.overall, description=f"images {self.stats.done}/{seen}")


class LineRenderer:
    """Plain progress lines every ``interval`` seconds, for non-terminals."""

    def __init__(self, stream: IO[str], stats: Stats, interval: float = 10.0, *, verbose: bool = False) -> None:
        self.stream = stream
        self.stats = stats
        self.interval = interval
        self.verbose = verbose
        self._last = time.monotonic()

    def __enter__(self) -> LineRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, event: Event) -> None:
        """Apply one event; print a line when the interval has passed or an image failed."""
        self.stats(event)
        if isinstance(event, JournalOpened) and event.crashed_in_flight:
            print(resume_note(event), file=self.stream, flush=True)
        if isinstance(event, JournalFailed):
            print(journal_note(event), file=self.stream, flush=True)
        if isinstance(event, ListingFailed):
            print(listing_note(event), file=self.stream, flush=True)
        if isinstance(event, Retrying) and self.verbose:
            print(retry_note(event), file=self.stream, flush=True)
        if isinstance(event, ImageDone | ImageRejudged) and event.result.outcome in NOTED:
            print(failure_note(event.result), file=self.stream, flush=True)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            s = self.stats
            print(
                f"progress: {s.done}/{s.images_seen} images, {human_bytes(s.bytes_moved)} "
                f"at {human_bytes(s.rate)}/s, {s.elapsed:.0f} s",
                file=self.stream,
                flush=True,
            )


class JsonRenderer:
    """``--log-format json``: one JSON object per line on ``stream`` (for log shippers):
    failures and resumptions as they happen, progress every ``interval`` seconds."""

    def __init__(self, stream: IO[str], stats: Stats, interval: float = 10.0) -> None:
        self.stream = stream
        self.stats = stats
        self.interval = interval
        self._last = time.monotonic()

    def __enter__(self) -> JsonRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _line(self, **fields: Any) -> None:
        print(json.dumps({"time": round(time.time(), 3), **fields}), file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        """Apply one event; write a line when something an operator must see happened."""
        self.stats(event)
        if isinstance(event, JournalOpened) and event.crashed_in_flight:
            self._line(event="resuming", journal=event.path, crashed_in_flight=event.crashed_in_flight)
        elif isinstance(event, JournalFailed):
            self._line(event="journal-failed", journal=event.path, reason=redact(event.reason))
        elif isinstance(event, ListingFailed):
            self._line(event="listing-failed", reason=redact(event.reason))
        elif isinstance(event, InternalError):
            self._line(event="internal-error", image=event.image_id, summary=redact(event.summary))
        elif isinstance(event, Retrying):
            self._line(event="retrying", image=event.image_id, attempt=event.attempt, reason=redact(event.reason))
        elif isinstance(event, ImageDone | ImageRejudged):
            r = event.result
            self._line(
                event="image" if isinstance(event, ImageDone) else "image-rejudged",
                id=r.id,
                name=r.name,
                action=r.action,
                outcome=r.outcome,
                bytes=r.bytes,
                seconds=round(r.seconds, 3),
                reason=redact(r.reason),
            )
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            s = self.stats
            self._line(
                event="progress",
                done=s.done,
                seen=s.images_seen,
                bytes=s.bytes_moved,
                rate=round(s.rate, 1),
                elapsed=round(s.elapsed, 1),
            )
