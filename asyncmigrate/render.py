"""Drawing progress for people, and the run's log (the CLI's side of the progress events).

:class:`Log` is where every line the CLI prints goes: the log stream (stdout, so
``copy … | tee migration.log`` keeps everything; stderr when stdout carries a
document), fatal errors on stderr, and with ``--log-file`` all of it in a file too.
In text mode a line is text; with ``--log-format json`` every line of every stream
is one JSON object with ``time``, ``level`` and ``event``.

On a terminal: rich progress bars, an overall line (images, bytes, rate, ETA)
and one line per active transfer, refreshed by rich at a fixed rate in its own
thread; notable lines print above the bars.  Elsewhere (a log file, CI): one
plain line every ``interval`` seconds.  Every image that fails, conflicts, is
blocked, removed or deleted gets one line with its id, name and reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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
    RunWarning,
    Stats,
    TransferStarted,
    WindowClosed,
    WindowGraceOver,
    human_bytes,
)
from .report import ImageResult, Outcome

__all__ = [
    "NOTABLE",
    "JsonRenderer",
    "LineRenderer",
    "Log",
    "RichRenderer",
    "failure_note",
    "human_bytes",
    "journal_note",
    "listing_note",
    "progress_note",
    "resume_note",
    "retry_note",
    "window_note",
]

# Outcomes that get a line of their own as they happen, and the level they are logged at.
NOTABLE = {
    Outcome.FAILED: "error",
    Outcome.CONFLICT: "error",
    Outcome.QUARANTINED: "error",  # its reason is the way out
    Outcome.IN_USE: "error",
    Outcome.BLOCKED: "warning",
    Outcome.REMOVED: "warning",
    Outcome.DELETED: "warning",
    Outcome.RETIRED: "warning",
}


class Log:
    """Every line the CLI prints (see the module docstring): ``write`` a line of the log,
    ``record`` a structured event (JSON mode), ``error`` a fatal line on stderr.

    ``echo``, while set, prints the log stream's text lines instead (rich sets it, so lines
    appear above its bars).
    """

    def __init__(self, fmt: str, *, out: IO[str], err: IO[str], file: IO[str] | None = None) -> None:
        self.json = fmt == "json"
        self.out, self.err, self.file = out, err, file
        self.echo: Callable[[str], None] | None = None

    def _emit(self, line: str, stream: IO[str] | None) -> None:
        if stream is self.out and self.echo is not None:
            self.echo(line)
        elif stream is not None:
            print(line, file=stream, flush=True)
        if self.file is not None:
            print(line, file=self.file, flush=True)

    def _object(self, level: str, event: str, fields: dict[str, Any]) -> str:
        return json.dumps({"time": round(time.time(), 3), "level": level, "event": event, **fields})

    def write(self, text: str, *, level: str = "info", event: str = "message", **fields: Any) -> None:
        """One line of the log: ``text``, or (JSON) an object whose ``message`` is ``text``."""
        if self.json:
            message = text.removeprefix("asyncmigrate: ")
            self._emit(self._object(level, event, {"message": message, **fields}), self.out)
        else:
            self._emit(text, self.out)

    def record(self, event: str, *, level: str = "info", **fields: Any) -> None:
        """A structured event, written only in JSON mode (text mode has its own line for it, or none)."""
        if self.json:
            self._emit(self._object(level, event, fields), self.out)

    def error(self, text: str, *, level: str = "error", event: str = "error", **fields: Any) -> None:
        """A line on stderr (a fatal error, a diagnostic), and in the file."""
        if self.json:
            message = text.removeprefix("asyncmigrate: ").removeprefix("error: ")
            self._emit(self._object(level, event, {"message": message, **fields}), self.err)
        else:
            self._emit(text, self.err)

    def to_file(self, text: str) -> None:
        """A text line for the file only (what a terminal sees drawn, e.g. progress)."""
        if self.file is not None:
            print(text, file=self.file, flush=True)


class _BinaryRate(ProgressColumn):
    """The transfer rate in binary units (rich's own column prints decimal MB/s)."""

    def render(self, task: Task) -> Text:
        """``12.3 MiB/s``."""
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed")


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


def window_note(event: WindowClosed | WindowGraceOver) -> str:
    """The line printed when the maintenance window closes, and when its grace is over."""
    if isinstance(event, WindowClosed):
        return f"{event.reason}: starting no new image; finishing those in flight (up to {event.grace:g} s)"
    return f"{event.reason} and its grace of {event.grace:g} s: aborting the images still in flight"


def failure_note(result: ImageResult) -> str:
    """The line printed when an image fails, conflicts, is quarantined, blocked, removed or deleted."""
    return f"{result.outcome}: {result.id} {result.name or ''}: {redact(result.reason)}"


def progress_note(stats: Stats) -> str:
    """The periodic progress line."""
    return (
        f"progress: {stats.done}/{stats.images_seen} images, {human_bytes(stats.bytes_moved)} "
        f"at {human_bytes(stats.rate)}/s, {stats.elapsed:.0f} s"
    )


def _notes(log: Log, event: Event, *, verbose: bool) -> None:
    """The text lines every renderer writes for an event (the log's, wherever bars are drawn)."""
    if isinstance(event, JournalOpened) and event.crashed_in_flight:
        log.write(resume_note(event), level="warning", event="resuming")
    elif isinstance(event, RunWarning):
        log.write(f"warning: {event.message}", level="warning", event="warning")
    elif isinstance(event, JournalFailed):
        log.write(journal_note(event), level="warning", event="journal-failed")
    elif isinstance(event, ListingFailed):
        log.write(listing_note(event), level="error", event="listing-failed")
    elif isinstance(event, (WindowClosed, WindowGraceOver)):
        log.write(window_note(event), level="warning", event="window")
    elif isinstance(event, Retrying) and verbose:
        log.write(retry_note(event), level="warning", event="retrying")
    elif isinstance(event, ImageDone | ImageRejudged) and event.result.outcome in NOTABLE:
        log.write(failure_note(event.result), level=NOTABLE[event.result.outcome], event="image")


class RichRenderer:
    """Progress bars on a terminal; use as a context manager and as the emit callback.

    The log's lines print above the bars; ``--log-file`` gets them and, every
    ``interval`` seconds, the progress as a line."""

    def __init__(
        self, console: Console, stats: Stats, log: Log, *, verbose: bool = False, interval: float = 10.0
    ) -> None:
        self.stats = stats
        self.log = log
        self.verbose = verbose
        self.interval = interval
        self._last = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            DownloadColumn(binary_units=True),
            _BinaryRate(),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self.overall = self.progress.add_task("images 0/0", total=None)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichRenderer:
        self.progress.start()
        self.log.echo = lambda line: self.progress.console.print(line, markup=False, highlight=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.log.echo = None
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        """Apply one event (called on the event loop; rich redraws in its thread)."""
        self.stats(event)
        _notes(self.log, event, verbose=self.verbose)
        if isinstance(event, (ImageQueued, ListingDone)):
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
            self.progress.advance(self.overall, -event.rewound)
            if event.image_id in self.tasks:
                self.progress.update(self.tasks[event.image_id], completed=0)
        elif isinstance(event, ImageDone):
            task = self.tasks.pop(event.result.id, None)
            if task is not None:
                self.progress.remove_task(task)
        seen = self.stats.images_seen if self.stats.listing_done else f"{self.stats.images_seen}+"
        self.progress.update(self.overall, description=f"images {self.stats.done}/{seen}")
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log.to_file(progress_note(self.stats))


class LineRenderer:
    """Plain progress lines every ``interval`` seconds, for non-terminals."""

    def __init__(self, log: Log, stats: Stats, interval: float = 10.0, *, verbose: bool = False) -> None:
        self.log = log
        self.stats = stats
        self.interval = interval
        self.verbose = verbose
        self._last = time.monotonic()

    def __enter__(self) -> LineRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, event: Event) -> None:
        """Apply one event; write a line when the interval has passed or an image is notable."""
        self.stats(event)
        _notes(self.log, event, verbose=self.verbose)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log.write(progress_note(self.stats), event="progress")


class JsonRenderer:
    """``--log-format json``: one JSON object per line (for log shippers): every image as it
    ends, failures and resumptions as they happen, progress every ``interval`` seconds."""

    def __init__(self, log: Log, stats: Stats, interval: float = 10.0) -> None:
        self.log = log
        self.stats = stats
        self.interval = interval
        self._last = time.monotonic()

    def __enter__(self) -> JsonRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, event: Event) -> None:
        """Apply one event; write a line when something an operator must see happened."""
        self.stats(event)
        record = self.log.record
        if isinstance(event, JournalOpened) and event.crashed_in_flight:
            record("resuming", level="warning", journal=event.path, crashed_in_flight=event.crashed_in_flight)
        elif isinstance(event, RunWarning):
            record("warning", level="warning", message=event.message)
        elif isinstance(event, JournalFailed):
            record("journal-failed", level="warning", journal=event.path, reason=redact(event.reason))
        elif isinstance(event, ListingFailed):
            record("listing-failed", level="error", reason=redact(event.reason))
        elif isinstance(event, WindowClosed):
            record("window-closed", level="warning", reason=event.reason, grace=event.grace)
        elif isinstance(event, WindowGraceOver):
            record("window-grace-over", level="warning", reason=event.reason, grace=event.grace)
        elif isinstance(event, InternalError):
            record("internal-error", level="error", image=event.image_id, summary=redact(event.summary))
        elif isinstance(event, Retrying):
            record(
                "retrying", level="warning", image=event.image_id, attempt=event.attempt, reason=redact(event.reason)
            )
        elif isinstance(event, ImageDone | ImageRejudged):
            r = event.result
            record(
                "image" if isinstance(event, ImageDone) else "image-rejudged",
                level=NOTABLE.get(r.outcome, "info"),
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
            record(
                "progress",
                done=s.done,
                seen=s.images_seen,
                bytes=s.bytes_moved,
                rate=round(s.rate, 1),
                elapsed=round(s.elapsed, 1),
            )
