"""Progress as data: events the core emits, and statistics built from them.

The core calls an ``emit(event)`` callback (cheap, synchronous, never blocks);
it never draws.  The CLI subscribes and renders at its own fixed refresh rate.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import ImageResult

__all__ = [
    "BytesMoved",
    "CloudsDiscovered",
    "Emit",
    "Event",
    "HttpRequest",
    "ImageDone",
    "ImageQueued",
    "ImageRejudged",
    "ImageTaken",
    "InternalError",
    "JournalFailed",
    "JournalOpened",
    "ListingDone",
    "ListingFailed",
    "Retrying",
    "RunWarning",
    "Stats",
    "TransferStarted",
    "WindowClosed",
    "WindowGraceOver",
    "human_bytes",
    "ignore",
]


@dataclasses.dataclass(frozen=True)
class JournalOpened:
    """The run's journal is open; ``crashed_in_flight`` images were in flight when a
    previous run was killed (they are re-checked against the destination)."""

    path: str
    crashed_in_flight: int


@dataclasses.dataclass(frozen=True)
class CloudsDiscovered:
    """What each cloud's Glance can do (``Capabilities.describe()``); ``destination``
    is None for a single-cloud command (``move``)."""

    source: dict[str, Any]
    destination: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class RunWarning:
    """Something the whole run costs that the operator asked for (e.g. ``put-unsized`` into an
    rbd or s3 store): said once, when the run starts; the run goes on."""

    message: str


@dataclasses.dataclass(frozen=True)
class JournalFailed:
    """The journal could not be written (``reason``); the run goes on without it.

    Emitted once: the journal is only a record, every image is decided from the
    destination's real state anyway.
    """

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class InternalError:
    """An unexpected exception (a bug) ended one image, or the listing (``image_id`` None).

    ``traceback`` is the formatted traceback, secrets redacted: for a log file,
    never for the console (the image's result says "internal error: …").
    """

    image_id: str | None
    summary: str
    traceback: str


@dataclasses.dataclass(frozen=True)
class ImageQueued:
    """The lister found an image and handed it to the workers."""

    image_id: str
    name: str | None
    size: int


@dataclasses.dataclass(frozen=True)
class ImageTaken:
    """A worker took the image: from now on this run may change it at the destination."""

    image_id: str
    name: str | None
    size: int


@dataclasses.dataclass(frozen=True)
class ListingDone:
    """The lister has seen every image: totals are now final."""

    images: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class ListingFailed:
    """A listing failed part-way (after its retries): no new image is taken, those
    in flight finish, and the run ends incomplete with this ``reason``."""

    reason: str


@dataclasses.dataclass(frozen=True)
class WindowClosed:
    """The run's maintenance window (``--max-duration``) passed: no new image is
    started; those in flight have ``grace`` seconds to finish."""

    reason: str
    grace: float


@dataclasses.dataclass(frozen=True)
class WindowGraceOver:
    """The grace after the window is over: the images still in flight are aborted."""

    reason: str
    grace: float


@dataclasses.dataclass(frozen=True)
class TransferStarted:
    """A worker began moving an image's bytes."""

    image_id: str
    name: str | None
    size: int


@dataclasses.dataclass(frozen=True)
class BytesMoved:
    """``n`` more bytes of an image were handed to the destination."""

    image_id: str
    n: int


@dataclasses.dataclass(frozen=True)
class Retrying:
    """An attempt failed transiently; ``rewound`` bytes will be sent again.

    ``reason`` is the failure's text; ``kind`` its class, one of a small fixed set
    (:func:`asyncmigrate.errors.failure_kind`), for counting.
    """

    image_id: str
    attempt: int
    rewound: int
    reason: str
    kind: str = "other"


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    """One HTTP request to a cloud got its answer (``code``: the status) or none (``"error"``).

    Emitted once per request by the one HTTP boundary (``glance.py``), never per chunk.
    ``cloud`` is the role the client plays: ``"source"`` or ``"destination"``.
    """

    cloud: str
    method: str
    code: str


@dataclasses.dataclass(frozen=True)
class ImageDone:
    """An image reached its final outcome for this run."""

    result: ImageResult


@dataclasses.dataclass(frozen=True)
class ImageRejudged:
    """An image's result judged again at the end of the run (the destination changed under it
    while the run went on: :mod:`asyncmigrate.recheck`); ``was`` is the outcome it replaces."""

    result: ImageResult
    was: str


Event = (
    CloudsDiscovered
    | RunWarning
    | JournalOpened
    | JournalFailed
    | ImageQueued
    | ImageTaken
    | ListingDone
    | ListingFailed
    | WindowClosed
    | WindowGraceOver
    | TransferStarted
    | BytesMoved
    | Retrying
    | ImageDone
    | ImageRejudged
    | InternalError
    | HttpRequest
)
Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default subscriber: drop every event."""


@dataclasses.dataclass
class Stats:
    """Running totals built from events; what a renderer or summary reads."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    images_seen: int = 0
    bytes_seen: int = 0
    listing_done: bool = False
    bytes_moved: int = 0
    done: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    results: list[ImageResult] = dataclasses.field(default_factory=list)
    in_flight: dict[str, str | None] = dataclasses.field(default_factory=dict)  # streaming: id -> name
    # Taken by a worker and not done: id -> (name, size, bytes handed to the destination so far).
    # What an aborted run reports of the images it was handling (see cli.py).
    taken: dict[str, tuple[str | None, int, int]] = dataclasses.field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        """Update the totals with one event."""
        if isinstance(event, ImageQueued):
            self.images_seen += 1
            self.bytes_seen += event.size
        elif isinstance(event, ImageTaken):
            self.taken[event.image_id] = (event.name, event.size, 0)
        elif isinstance(event, ListingDone):
            self.listing_done = True
        elif isinstance(event, TransferStarted):
            self.in_flight[event.image_id] = event.name
        elif isinstance(event, BytesMoved):
            self.bytes_moved += event.n
            self._moved(event.image_id, event.n)
        elif isinstance(event, Retrying):
            self.bytes_moved -= event.rewound
            self._moved(event.image_id, -event.rewound)
        elif isinstance(event, ImageDone):
            self.done += 1
            key = event.result.outcome
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            self.results.append(event.result)
            self.in_flight.pop(event.result.id, None)
            self.taken.pop(event.result.id, None)
        elif isinstance(event, ImageRejudged):  # counted once already: only its outcome changes
            self.outcomes[event.was] = self.outcomes.get(event.was, 1) - 1
            self.outcomes[event.result.outcome] = self.outcomes.get(event.result.outcome, 0) + 1
            self.results = [event.result if r.id == event.result.id else r for r in self.results]

    def _moved(self, image_id: str, n: int) -> None:
        if image_id in self.taken:
            name, size, moved = self.taken[image_id]
            self.taken[image_id] = (name, size, moved + n)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Average bytes per second so far."""
        return self.bytes_moved / self.elapsed if self.elapsed > 0 else 0.0


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
