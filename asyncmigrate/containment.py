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
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from .errors import AsyncMigrateError, BadCopy, Behaviour, DestinationBusy, DestinationConflict, collapse, redact
from .metadata import size_of
from .progress import Emit, InternalError, ListingFailed, ignore
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
    """A listing that ends early, instead of raising, when its cloud stops answering.

    Iterate it once; afterwards :attr:`incomplete` says why it ended early (None:
    it was complete).  ``what`` names it in that reason ("source listing").
    """

    def __init__(self, images: AsyncIterator[dict[str, Any]], what: str, emit: Emit = ignore) -> None:
        self._images = images
        self.what = what
        self._emit = emit
        self.incomplete: str | None = None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        listed = 0
        try:
            async for image in self._images:
                listed += 1
                yield image
        except AsyncMigrateError as exc:
            if exc.behaviour in _STOPS_THE_RUN:
                raise
            self._ended(listed, redact(str(exc)))
        except Exception as exc:  # a bug, or a page the code did not foresee
            self._ended(listed, internal_error(exc, None, self._emit))

    def _ended(self, listed: int, why: str) -> None:
        self.incomplete = f"the {self.what} failed after {listed} images: {why}"
        self._emit(ListingFailed(self.incomplete))


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
