"""The worker pool: a lister feeding a bounded stream, N workers, one task group.

::

    lister ──(memory object stream, buffer = concurrency)──▶ worker × concurrency
                                                              └─ handle(image) → ImageResult

The stream's buffer is bounded, so the lister waits while every worker is
busy (backpressure) and never holds more than ``concurrency`` image records
ahead of the workers.  A fatal error in any task cancels the group: in-flight
uploads are dropped, which Glance answers by returning those images to
``queued`` — a re-run uploads into them again.

:func:`run_pool` is shared by ``copy`` (:func:`~asyncmigrate.engine.copy_images`), ``sync``,
``verify`` and ``move``; :func:`journaled` opens and closes a run in its journal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .containment import Listing, handle_contained
from .errors import collapse, redact
from .journal import Journal
from .metadata import size_of
from .progress import Emit, ImageDone, ImageQueued, ImageTaken, JournalOpened, ListingDone
from .report import Action, ImageResult, Outcome
from .window import Window, close_when_due

__all__ = ["Handler", "journaled", "missing_result", "run_pool"]

Handler = Callable[[dict[str, Any]], Awaitable[ImageResult]]


def missing_result(image: dict[str, Any]) -> ImageResult:
    """The result for an ``--image`` id the source does not have."""
    return ImageResult(
        id=image["id"],
        name=None,
        action=Action.FAIL,
        outcome=Outcome.FAILED,
        reason="no such image on the source",
    )


async def run_pool(
    images: AsyncIterable[dict[str, Any]],
    handle: Handler,
    *,
    concurrency: int,
    emit: Emit,
    stop: anyio.Event | None = None,
    journal: Journal | None = None,
    keep: bool = True,
    window: Window | None = None,
    since: float | None = None,
) -> list[ImageResult]:
    """Feed ``images`` through a bounded stream to ``concurrency`` workers
    running ``handle``; return the results in the order images finished
    (none when not ``keep``: a pass that only counts).

    When ``stop`` is set, no new image is started; images in flight finish
    (a caller that wants them aborted cancels the surrounding scope).  With a
    ``journal``, each image is recorded when taken and when done.  With a
    ``window`` (``images`` must then be a :class:`Listing`), the listing is closed
    ``window.seconds`` after ``since`` (a ``time.monotonic()``, default now) and the
    images still in flight after its grace are aborted (:mod:`asyncmigrate.window`).
    """
    stop = stop or anyio.Event()
    intake = images if isinstance(images, Listing) else None
    if window is not None and intake is None:
        raise TypeError("a window closes a Listing")
    results: list[ImageResult] = []
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](max_buffer_size=concurrency)
    try:
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as pool:  # cancelled by the window when its grace is over
                if window is not None and intake is not None:
                    since = time.monotonic() if since is None else since
                    outer.start_soon(close_when_due, window, since, intake, pool, emit)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_produce, images, send, emit, stop, intake)
                    for _ in range(concurrency):
                        tg.start_soon(
                            _work, handle, receive.clone(), results if keep else None, emit, stop, journal, intake
                        )
                    receive.close()
            outer.cancel_scope.cancel()  # the pool is over: its window need not close
    except BaseExceptionGroup as group:
        raise collapse(group) from group
    if intake is not None:
        intake.settle(results)  # what a closed window left
    return results


@contextlib.asynccontextmanager
async def journaled(
    path: Path | None, command: str, emit: Emit, stop: anyio.Event | None
) -> AsyncIterator[Journal | None]:
    """Open the run's journal (if any); close the run in it when it ends.

    A run cancelled (aborted after a signal: the grace was over, or a second
    signal) is closed as interrupted, its images in flight marked ``aborted``:
    the next run must not take a clean interrupt for a kill.  On a fatal error
    the run is left open, as a crash leaves it, so the next run reports the
    images that were in flight.
    """
    if path is None:
        yield None
        return
    journal = await Journal.open(path, command, emit)
    emit(JournalOpened(str(path), len(journal.crashed_in_flight)))
    try:
        yield journal
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await journal.finish(interrupted=True)
        raise
    except BaseException:
        with anyio.CancelScope(shield=True):
            await journal.abandon()
        raise
    stopped = stop is not None and stop.is_set()
    await journal.finish(interrupted=stopped if journal.cut_short is None else journal.cut_short)


async def _produce(
    images: AsyncIterable[dict[str, Any]],
    send: ObjectSendStream[dict[str, Any]],
    emit: Emit,
    stop: anyio.Event,
    intake: Listing | None,
) -> None:
    count = total = 0
    async with send:
        try:
            async for image in images:
                if stop.is_set():
                    return
                size = size_of(image)
                await send.send(image)
                count, total = count + 1, total + size
                emit(ImageQueued(image["id"], image.get("name"), size))
        except anyio.BrokenResourceError:
            return  # every worker stopped (stop requested): nothing takes images any more
    if intake is None or intake.closed is None:
        emit(ListingDone(count, total))


async def _work(
    handle: Handler,
    receive: ObjectReceiveStream[dict[str, Any]],
    results: list[ImageResult] | None,
    emit: Emit,
    stop: anyio.Event,
    journal: Journal | None,
    intake: Listing | None,
) -> None:
    async with receive:
        async for image in receive:
            if stop.is_set():
                return
            if intake is not None and intake.closed is not None:
                continue  # listed before the door closed: not started (Listing.settle counts it)
            emit(ImageTaken(image["id"], image.get("name"), size_of(image)))
            if journal is not None:
                await journal.started(image)
            if image.get("status") == "missing":
                result = missing_result(image)
            else:
                # Whatever handling one image raises ends that image only (fatal errors aside).
                result = await handle_contained(image, handle, emit)
            result.reason = redact(result.reason)
            if journal is not None:
                result.resumed = image["id"] in journal.crashed_in_flight
                await journal.done(result)
            if results is not None:
                results.append(result)
            emit(ImageDone(result))
