"""Keeping one image's trouble inside that image, and a broken listing from
aborting the work in flight.

* :func:`handle_contained` runs one image's handler so that whatever it raises
  ends that image only: our per-image and transient errors are recorded as its
  failure (the handler retried the transient ones already), an unexpected
  exception — a bug, or a server answer the code did not foresee — becomes a
  failed image labelled *internal error*, its traceback sent as an
  :class:`~asyncmigrate.progress.InternalError` event for the CLI to write to a
  log file.  Only fatal and usage errors (and cancellation) pass through: they
  are meant to stop the run.
* :class:`Listing` wraps a listing (any async iterator of image records) so
  that a failure part-way — after the client's own retries — *ends* it instead
  of raising: the pool stops taking new images, the images in flight finish,
  and the run ends *incomplete* (:attr:`Listing.incomplete`, carried by
  :attr:`~asyncmigrate.report.RunResult.incomplete`, exit code 4).  A re-run
  completes the job.  Fatal errors (authentication) still stop the run.
  A maintenance window closes the same door (:meth:`Listing.close`): then even
  the images already listed are not started, and what is left is counted.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from .errors import AsyncMigrateError, BadCopy, Behaviour, DestinationBusy, DestinationConflict, collapse, redact
from .metadata import size_of
from .progress import Emit, InternalError, ListingFailed, human_bytes, ignore
from .report import Action, ImageResult, Outcome

__all__ = ["Listing", "handle_contained", "internal_error", "planning"]

_STOPS_THE_RUN = (Behaviour.FATAL, Behaviour.USAGE)


def internal_error(exc: BaseException, image_id: str | None, emit: Emit) -> str:
    """Report an unexpected exception: emit its (redacted) traceback, return a one-line summary."""
    summary = f"internal error: {type(exc).__name__}: {redact(str(exc))}"
    text = redact("".join(traceback.format_exception(exc)))
    emit(InternalError(image_id, summary, text))
    return summary


async def handle_contained(
    image: dict[str, Any], handle: Callable[[dict[str, Any]], Awaitable[ImageResult]], emit: Emit
) -> ImageResult:
    """``await handle(image)``, turning anything it raises into the image's failed result.

    Fatal and usage errors propagate (they stop the run), as does cancellation.
    """
    try:
        return await handle(image)
    except Exception as raised:
        exc: BaseException = collapse(raised) if isinstance(raised, BaseExceptionGroup) else raised
        if isinstance(exc, AsyncMigrateError):
            if exc.behaviour in _STOPS_THE_RUN:
                if exc is raised:
                    raise
                raise exc from raised
            reason = redact(str(exc))
        else:
            reason = internal_error(exc, image.get("id"), emit) + " (a bug: its traceback is in the error log)"
        return ImageResult(
            id=str(image.get("id")),
            name=image.get("name"),
            action=Action.FAIL,
            outcome=Outcome.FAILED,
            size=size_of(image),
            reason=reason,
        )


class Listing:
    """A listing that ends early, instead of raising, when its cloud stops answering — or
    when it is closed (:meth:`close`: a maintenance window, :mod:`asyncmigrate.window`).

    Iterate it once; afterwards :attr:`incomplete` says why it ended early (None:
    it was complete).  ``what`` names it in that reason ("source listing").
    """

    def __init__(self, images: AsyncIterator[dict[str, Any]], what: str, emit: Emit = ignore) -> None:
        self._images = images
        self.what = what
        self._emit = emit
        self._failed: str | None = None
        self.closed: str | None = None  # why the intake was closed early (None: open)
        self.aborting = False  # the images in flight are being aborted (the window's grace is over)
        self.left = 0  # images not started once closed (see settle)
        self.left_bytes = 0
        self._handed = self._handed_bytes = 0  # images handed out (to the pool)
        self._unlisted = self._unlisted_bytes = 0  # listed after the close, only counted
        self._read_to_end = False  # the listing was read to its end

    def drained(self, handled: int) -> bool:
        """Was the listing read to its end, never closed, and every image it handed out
        ``handled``?  (A run stopped after that point was cut short of nothing.)"""
        return self._read_to_end and self.closed is None and handled >= self._handed

    def close(self, why: str) -> None:
        """Stop the intake now: no image is handed out after this; the rest of the
        listing is only read, to count what is left (see :attr:`incomplete`)."""
        if self.closed is None:
            self.closed = why

    def settle(self, done: Sequence[ImageResult]) -> None:
        """The pool is over and ``done`` are its results: every image handed out and not
        done (waiting when the door closed, or aborted) is left, as is the rest of the listing."""
        self.left = max(0, self._handed - len(done)) + self._unlisted
        self.left_bytes = max(0, self._handed_bytes - sum(r.size for r in done)) + self._unlisted_bytes

    @property
    def incomplete(self) -> str | None:
        """Why the listing ended early (None: complete, or closed with nothing left)."""
        if self.closed is None or (self._read_to_end and not self.left):
            return self._failed
        at_least = "" if self._read_to_end else "at least "
        left = f"{self.closed}: {at_least}{self.left} image(s) ({human_bytes(self.left_bytes)}) not started"
        if self.aborting:
            left += "; those in flight at the end of the grace were aborted (left queued, never deleted)"
        else:
            left += "; those in flight were finished"
        return left if self._failed is None else f"{self._failed}; {left}"

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        listed = 0
        try:
            async for image in self._images:
                if self.closed is not None:  # read on, only to count what is left
                    self._unlisted, self._unlisted_bytes = self._unlisted + 1, self._unlisted_bytes + size_of(image)
                    continue
                listed += 1
                self._handed, self._handed_bytes = self._handed + 1, self._handed_bytes + size_of(image)
                yield image
            self._read_to_end = True
        except AsyncMigrateError as exc:
            if exc.behaviour in _STOPS_THE_RUN:
                raise
            self._ended(listed, redact(str(exc)))
        except Exception as exc:  # a bug, or a page the code did not foresee
            self._ended(listed, internal_error(exc, None, self._emit))

    def _ended(self, listed: int, why: str) -> None:
        if self.closed is not None:
            return  # failed while counting what is left: the count is a lower bound
        self._failed = f"the {self.what} failed after {listed} images: {why}"
        self._emit(ListingFailed(self._failed))


@contextlib.contextmanager
def planning(result: ImageResult) -> Iterator[None]:
    """A dry run's decision for one image: an error becomes its action (``fail``, or
    ``upload`` for an image busy at the destination, ``conflict``), fatal ones propagate;
    the result is ``planned`` either way."""
    try:
        yield
    except DestinationBusy as exc:
        result.action, result.reason = Action.UPLOAD, str(exc)
    except DestinationConflict as exc:
        result.action, result.reason = Action.CONFLICT, str(exc)
    except BadCopy as exc:
        result.action, result.reason = Action.QUARANTINED, str(exc)
    except AsyncMigrateError as exc:
        if exc.behaviour in _STOPS_THE_RUN:
            raise
        result.action, result.reason = Action.FAIL, redact(str(exc))
    result.outcome = Outcome.PLANNED
