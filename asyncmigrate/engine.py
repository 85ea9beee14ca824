"""``copy``: every selected source image through the worker pool into the destination.

:func:`copy_images` settles the pair first (:mod:`asyncmigrate.pairrun`: capabilities, flags,
upload way, catalog, record, quota), runs each image as an
:class:`~asyncmigrate.transfer.ImageTransfer` in the pool (:mod:`asyncmigrate.pool`), then
judges again what rested on the run's first read of the destination (:func:`rechecked`).
The pool and the pair's set-up are re-exported here for the other commands.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from .catalog import DestinationIndex, list_images
from .clouds import Cloud
from .config import CopyConfig
from .containment import Listing
from .glance import GlanceClient, client_options, open_glance
from .pairrun import (
    PairRun,
    QuotaTally,
    check_endpoint,
    check_selection,
    destination_owned,
    fit_quota,
    keep_owned,
    open_cloud,
    pair_record,
    read_index,
    start_run,
)
from .pool import Handler, journaled, missing_result, run_pool
from .progress import Emit, ignore
from .recheck import Recheck, each, unconfirmed
from .report import Action, ImageResult, Outcome, RunResult
from .selection import select
from .transfer import ImageTransfer

__all__ = [
    "Handler",
    "PairRun",
    "QuotaTally",
    "at_destination",
    "check_endpoint",
    "check_selection",
    "copy_images",
    "destination_owned",
    "fit_quota",
    "journaled",
    "keep_owned",
    "list_images",
    "missing_result",
    "open_cloud",
    "pair_record",
    "read_index",
    "rechecked",
    "run_pool",
    "start_run",
]


# the decision was made against an image of the same id found there.
_ARRIVED = frozenset({Outcome.COPIED, Outcome.CREATED, Outcome.FINISHED, Outcome.UPDATED})
_FOUND = frozenset({Action.NONE, Action.UPLOAD, Action.FINISH, Action.CONFLICT, Action.UPDATE})


def at_destination(result: ImageResult, index: DestinationIndex | None) -> bool:
    """Does the destination hold this source image (same id) after the run?

    What ``copy`` and ``sync`` write to the pair's record: a Glance id is a
    random UUID, so an id found at both ends was copied from this source.
    """
    if index is not None and result.id in index:
        return True
    return result.outcome in _ARRIVED or result.action in _FOUND


async def copy_images(
    config: CopyConfig,
    src_cloud: Cloud,
    dst_cloud: Cloud,
    *,
    emit: Emit = ignore,
    stop: anyio.Event | None = None,
) -> RunResult:
    """Copy the source cloud's images (or ``config.image_ids``) to the destination.

    Returns every image's result.  Per-image failures are recorded, never
    raised; :class:`FatalError` (authentication, endpoint) stops the run; a
    listing that fails part-way ends it ``incomplete`` once the images in
    flight are done.
    Setting ``stop`` ends the run after the images in flight (``interrupted``).
    """
    started = time.monotonic()
    kw = client_options(config)
    journal_path = None if config.dry_run else config.journal
    async with (
        open_glance(src_cloud, **kw, role="source", emit=emit) as src,
        open_glance(dst_cloud, **kw, role="destination", emit=emit) as dst,
        journaled(journal_path, "copy", emit, stop) as journal,
    ):
        owned = await destination_owned(config, journal, dst_cloud.endpoint)
        run = await start_run(config, src, dst, emit, owned)
        config = run.judged(config)  # the flags plus where the data goes (pre-flight judges by it)
        record = await pair_record(config, journal, src, dst_cloud)
        tally = QuotaTally(config, run)

        def listed() -> AsyncIterator[dict[str, Any]]:
            return select(list_images(src, run.src_caps, config.image_ids), config.selection)

        async def plan(image: dict[str, Any]) -> ImageResult:
            # Members use no quota: the pre-flight reads none.
            transfer = ImageTransfer(src, dst, image, config, emit, run.limits, run.index, run.uploader)
            return await transfer.plan(members=False)

        verdict = None if config.dry_run else await fit_quota(config, run, listed(), plan, "copy")

        async def handle(image: dict[str, Any], index: DestinationIndex | None = run.index) -> ImageResult:
            transfer = ImageTransfer(src, dst, image, config, emit, run.limits, index, run.uploader, run.owned)
            if config.dry_run:
                planned = await transfer.plan()
                tally.add(image, planned)
                return planned
            result = await transfer.run()
            await keep_owned(journal, run.owned, dst_cloud.endpoint)
            if record is not None and at_destination(result, index):
                # The record sync's removed images come from, with the destination copy it saw.
                await record.remember(image, transfer.seen or (index.get(image["id"]) if index else None))
            return result

        # A listing that fails part-way ends the intake; the images in flight finish.
        listing = Listing(listed(), "source listing", emit)
        results = await run_pool(
            listing,
            handle,
            concurrency=config.concurrency,
            emit=emit,
            stop=stop,
            journal=journal,
            window=config.window,
            since=started,
        )
        # A signal that came after the last image was taken and finished cut nothing short.
        interrupted = stop is not None and stop.is_set() and not listing.drained(len(results))
        check = None
        if not config.dry_run and not interrupted and listing.closed is None:
            # A closed window, or a stop that cut the run short, checks nothing more (new work after
            # it; the run is incomplete anyway). A stop after the last image cut nothing short: the
            # run ends complete, so what it states must be checked like any complete run's.
            results, check = await rechecked(run, src, dst, results, handle, concurrency=config.concurrency, emit=emit)
        elif not config.dry_run and run.index is not None:
            results = unconfirmed(results, run.index)  # cut short: said, not checked
        if journal is not None:
            journal.cut_short = interrupted
            await journal.flush_record()
        if check is not None and record is not None:
            await record.forget(check.gone)  # deleted at the destination meanwhile: not brought
        if config.dry_run:
            verdict = tally.verdict()
    return RunResult(
        images=results,
        seconds=time.monotonic() - started,
        dry_run=config.dry_run,
        interrupted=interrupted,
        clouds=run.clouds(),
        incomplete="; ".join(filter(None, [listing.incomplete, check.incomplete if check else None])) or None,
        quota=None if verdict is None else verdict.describe(),
        notes=list(run.notes),
    )


async def rechecked(
    run: PairRun,
    src: GlanceClient,
    dst: GlanceClient,
    results: list[ImageResult],
    handle: Callable[[dict[str, Any], DestinationIndex | None], Awaitable[ImageResult]],
    *,
    concurrency: int,
    emit: Emit,
) -> tuple[list[ImageResult], Recheck | None]:
    """``results`` with what rests on the run's first read of the destination judged again
    against a second listing (:mod:`asyncmigrate.recheck`); changed images go through
    ``handle(image, None)`` again, from fresh reads.  No index (named images): nothing to check."""
    if run.index is None:
        return results, None
    check = Recheck(dst, run.dst_caps, run.index, emit, run.owned.strip)
    first = {r.id: r for r in results}

    async def fresh(stub: dict[str, Any]) -> ImageResult:
        image = await src.get_image(stub["id"])
        return first[stub["id"]] if image is None else await handle(image, None)

    async def again(ids: list[str]) -> list[ImageResult]:
        # Not reported as progress again: these images were counted once already.
        return await run_pool(each(ids), fresh, concurrency=concurrency, emit=ignore)

    return await check.rejudge(results, again), check
