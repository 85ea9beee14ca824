"""Maintenance windows (``--max-duration``): a run that takes no new image once its time is up.

A time window closes the same door a listing failure closes: the engine's
intake (:class:`~asyncmigrate.containment.Listing`) stops handing out images.
Nothing else in the run knows about the window — no deadline is checked in a
worker or a transfer.  What happens when it closes (:func:`close_when_due`,
one task beside the workers in :func:`~asyncmigrate.pool.run_pool`):

1. the listing is closed: no image is started any more; those already taken by
   a worker go on, those waiting in the pool's stream are given back, and the
   rest of the listing is read (only read) to count what is left;
2. the images in flight get ``grace`` seconds to finish; after that they are
   aborted — a dropped upload leaves its image ``queued`` at the destination,
   never deleted, and the next run uploads into it again;
3. the run ends *incomplete* (exit 4) saying how many images were not started;
   the same command, run again, continues (the destination decides what is done).

``sync`` judges no removed image when its window closed: that is new work, and
the listing it would be judged against may not have been read to the end.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import anyio

    from .containment import Listing
    from .progress import Emit

__all__ = ["Window", "close_when_due", "format_duration", "parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90m"`` → 5400.0; ``"1h30m"``, ``"8h"``, ``"45s"``, ``"1.5h"``; a bare number is seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    elif cleaned and _PART.sub("", cleaned) == "":
        seconds = sum(float(n) * _SECONDS[unit] for n, unit in _PART.findall(cleaned))
    else:
        raise UsageError(f"--max-duration takes a duration such as 90m, 8h or 1h30m (got {text!r})")
    if seconds <= 0:
        raise UsageError(f"--max-duration must be longer than 0 (got {text!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """5400 → ``"1h30m"``; 45 → ``"45s"`` (the way ``--max-duration`` is written)."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


@dataclasses.dataclass(frozen=True)
class Window:
    """How long a run may start images (``seconds``, from the run's start), and how long
    the images in flight may then take to finish (``grace``) before they are aborted."""

    seconds: float
    grace: float = 30.0

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise UsageError("--max-duration must be longer than 0")
        if self.grace < 0:
            raise UsageError("--grace cannot be negative")

    def describe(self) -> str:
        """``"the --max-duration of 1h30m"``."""
        return f"the --max-duration of {format_duration(self.seconds)}"


async def close_when_due(
    window: Window, since: float, listing: Listing, in_flight: anyio.CancelScope, emit: Emit
) -> None:
    """At ``since + window.seconds`` (``time.monotonic()``), close ``listing``; after the
    grace, cancel ``in_flight`` (the scope of the pool's workers).  Cancel this task when
    the pool ends first."""
    import anyio

    from .progress import WindowClosed, WindowGraceOver

    await anyio.sleep(max(0.0, since + window.seconds - time.monotonic()))
    why = f"{window.describe()} passed"
    listing.close(why)
    emit(WindowClosed(why, window.grace))
    await anyio.sleep(window.grace)
    listing.aborting = True
    emit(WindowGraceOver(why, window.grace))
    in_flight.cancel()
