"""The run: a lister feeding a bounded stream, N workers, one task group.

::

    lister ──(memory object stream, buffer = concurrency)──▶ worker × concurrency
                                                              └─ handle(image) → ImageResult

The stream's buffer is bounded, so the lister waits while every worker is
busy (backpressure) and never holds more than ``concurrency`` image records
ahead of the workers.  A fatal error in any task cancels the group: in-flight
uploads are dropped, which Glance answers by returning those images to
``queued`` — a re-run uploads into them again.

:func:`run_pool` is shared by ``copy`` (:func:`copy_images`) and ``move``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .capabilities import Capabilities, discover
from .catalog import DestinationIndex, list_images, load_index
from .clouds import Cloud
from .config import CopyConfig
from .containment import Listing, handle_contained
from .errors import AsyncMigrateError, Behaviour, EndpointError, collapse, redact
from .glance import GlanceClient, client_options, open_glance
from .identity import mapping_of
from .journal import Journal, read_destination_properties
from .limits import Limits
from .metadata import size_of
from .owned import DestinationProperties
from .preflight import PreflightOptions, clone_note
from .progress import (
    CloudsDiscovered,
    Emit,
    ImageDone,
    ImageQueued,
    ImageTaken,
    JournalOpened,
    ListingDone,
    RunWarning,
    ignore,
)
from .quota import Needs, QuotaExceeded, Verdict, judge
from .recheck import Recheck, each
from .record import PairRecord, SourceIdentity, open_record
from .report import Action, ImageResult, Outcome, RunResult
from .selection import select
from .transfer import ImageTransfer, destination_view
from .upload import Uploader, choose_uploader, unsized_cost
from .window import Window, close_when_due

__all__ = [
    "PairRun",
    "QuotaTally",
    "at_destination",
    "check_endpoint",
    "copy_images",
    "fit_quota",
    "journaled",
    "list_images",
    "missing_result",
    "open_cloud",
    "pair_record",
    "read_index",
    "rechecked",
    "run_pool",
    "start_run",
]

Handler = Callable[[dict[str, Any]], Awaitable[ImageResult]]
C = TypeVar("C", bound=CopyConfig)


def missing_result(image: dict[str, Any]) -> ImageResult:
    """The result for an ``--image`` id the source does not have."""
    return ImageResult(
        id=image["id"],
        name=None,
        action=Action.FAIL,
        outcome=Outcome.FAILED,
        reason="no such image on the source",
    )


# The image is at the destination after the run when it arrived now, or when
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


async def destination_owned(config: CopyConfig, journal: Journal | None, destination: str) -> list[str]:
    """The properties the pair's journal remembers the destination setting itself (read only
    on a dry run)."""
    if journal is not None:
        return await journal.destination_properties(destination)
    if config.journal is not None:
        return await read_destination_properties(config.journal, destination)
    return []


async def keep_owned(journal: Journal | None, owned: DestinationProperties, destination: str) -> None:
    """Write the properties just learned to the journal at once: a run killed later must not
    lose them (the next one would take them for the source's to level)."""
    keys = owned.unsaved()
    if journal is not None and keys:
        await journal.remember_destination_properties(destination, keys)


async def check_endpoint(client: GlanceClient, role: str) -> None:
    """Fail fast (fatal) when an endpoint is unreachable or refuses us."""
    try:
        await client.probe()
    except AsyncMigrateError as exc:
        if exc.behaviour is Behaviour.FATAL:
            raise
        raise EndpointError(f"{role} cloud {client.cloud.name!r} is not usable: {exc}") from exc


async def open_cloud(client: GlanceClient, role: str, *, quota: bool = False) -> Capabilities:
    """Check the endpoint answers us, then discover what its Glance can do (once per run);
    ``quota``: its usage and limits too (a destination's)."""
    await check_endpoint(client, role)
    try:
        return await discover(client, quota=quota)
    except AsyncMigrateError as exc:
        if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
            raise
        raise EndpointError(f"{role} cloud {client.cloud.name!r}: cannot discover its Glance: {exc}") from exc


async def read_index(
    client: GlanceClient, caps: Capabilities, owned: DestinationProperties | None = None
) -> DestinationIndex:
    """The destination's catalog (:func:`~asyncmigrate.catalog.load_index`), read before any
    image starts: a failure is fatal and nothing has been done."""
    try:
        return await load_index(client, caps, owned.strip if owned is not None else None)
    except AsyncMigrateError as exc:
        if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
            raise
        raise EndpointError(f"cannot read the destination's catalog (nothing was done): {exc}") from exc


@dataclasses.dataclass(frozen=True)
class PairRun:
    """What a two-cloud command (copy, sync, verify) settles before its first image:
    each cloud's capabilities, the run-wide caps, the upload way, the destination index, the
    properties the destination sets itself, the pre-flight options the images are judged with
    and what the run says once (``notes``)."""

    src_caps: Capabilities
    dst_caps: Capabilities
    limits: Limits
    uploader: Uploader
    index: DestinationIndex | None  # None: named images, read one by one
    owned: DestinationProperties = dataclasses.field(default_factory=DestinationProperties)
    projects_checked: bool = False  # the destination's Keystone can say which projects exist
    # The caller's pre-flight options, told where the data goes (the target store's id and
    # type, the upload way): preflight's not-raw-on-rbd judges by them.
    preflight: PreflightOptions = dataclasses.field(default_factory=PreflightOptions)
    notes: tuple[str, ...] = ()

    def judged(self, config: C) -> C:
        """``config`` with this run's pre-flight options (what its images are judged with)."""
        return dataclasses.replace(config, preflight=self.preflight)

    def clouds(self) -> dict[str, Any]:
        """The report's ``clouds``: each side's capabilities (the upload way, and whether owners and
        members are checked against the destination's projects)."""
        destination = self.dst_caps.describe() | {
            "upload_method": self.uploader.method,
            "projects_checked": self.projects_checked,
        }
        return {"source": self.src_caps.describe(), "destination": destination}


async def start_run(
    config: CopyConfig, src: GlanceClient, dst: GlanceClient, emit: Emit, owned: Iterable[str] = ()
) -> PairRun:
    """Discover both clouds, check the flags against them (a usage error before anything is
    done), choose the upload way and read the destination's catalog; ``owned``: the keys the
    journal remembers the destination setting itself (with ``--destination-property``'s)."""
    src_caps = await open_cloud(src, "source")
    dst_caps = await open_cloud(dst, "destination", quota=True)
    check_selection(config, src_caps, dst_caps)
    emit(CloudsDiscovered(src_caps.describe(), dst_caps.describe()))
    limits = Limits(max_rate=config.max_rate, max_uploads=config.max_uploads, chunk_size=config.chunk_size)
    uploader = choose_uploader(config.upload_method, dst_caps, config.dst_store, import_timeout=config.import_timeout)
    target = dst_caps.store(config.dst_store)
    preflight = dataclasses.replace(
        config.preflight,
        store=target.id if target is not None else None,
        store_type=target.type if target is not None else None,
        upload_method=uploader.method,
    )
    notes = []
    cost = unsized_cost(uploader.method, target)
    if cost is not None:
        emit(RunWarning(cost))  # said now: the operator may stop a run they did not mean to be slow
        notes.append(f"warning: {cost}")
    fresh = clone_note(target.type, target.id) if target is not None else None
    if fresh is not None:
        notes.append(fresh)
    properties = DestinationProperties([*config.destination_properties, *owned])
    # Named images are read one by one; a whole catalog is decided from one listing.
    index = None if config.image_ids else await read_index(dst, dst_caps, properties)
    return PairRun(
        src_caps,
        dst_caps,
        limits,
        uploader,
        index,
        properties,
        projects_checked=dst.cloud.can_ask_projects(),
        preflight=preflight,
        notes=tuple(notes),
    )


async def pair_record(
    config: CopyConfig, journal: Journal | None, src: GlanceClient, dst_cloud: Cloud
) -> PairRecord | None:
    """The pair's record for this run (:func:`~asyncmigrate.record.open_record`): bound and
    written by a live run with a journal, only read by a dry run; None without a journal.

    Checked before any image is handled: a source that is not the record's, or another
    identity mapping than its copies used, is a usage error (nothing done).
    """
    if journal is None and not (config.dry_run and config.journal is not None):
        return None
    identity = SourceIdentity(src.cloud.endpoint, await src.cloud.identity())
    mapping = mapping_of(
        keep_owner=config.keep_owner,
        project_map=config.project_map,
        drop_unmapped_members=config.drop_unmapped_members,
    )
    return await open_record(
        journal,
        config.journal,
        src,
        identity,
        dst_cloud.endpoint,
        mapping,
        confirm_source=config.confirm_source,
        change_mapping=config.change_mapping,
    )


class QuotaTally:
    """A plan's images counted against the destination's quota (:class:`~asyncmigrate.quota.Needs`),
    each from its planned result and its owner at the destination."""

    def __init__(self, config: CopyConfig, run: PairRun) -> None:
        self.config, self.run = config, run
        quota = run.dst_caps.quota
        self.needs = Needs(quota.project if quota is not None else None, stages=run.uploader.stages)

    def add(self, image: dict[str, Any], result: ImageResult) -> None:
        """Count one planned image."""
        owner = destination_view(image, self.config).image.get("owner")
        self.needs.add(result, owner, declares=self.run.uploader.declares_size(result.size))

    def verdict(self) -> Verdict | None:
        """The plan against the quota (None: the destination was not asked)."""
        quota = self.run.dst_caps.quota
        return None if quota is None else judge(quota, self.needs, ignored=self.config.ignore_quota)


async def fit_quota(
    config: CopyConfig, run: PairRun, images: AsyncIterator[dict[str, Any]], plan: Handler, verb: str
) -> Verdict | None:
    """Before a run that changes the destination: when its quota is enforced, plan every
    selected image (reads only, nothing emitted) and refuse the run (:class:`QuotaExceeded`)
    when it cannot fit; else bound the uploads at once by ``image_count_uploading``."""
    quota = run.dst_caps.quota
    if quota is None or not quota.enforced:
        return None if quota is None else judge(quota, Needs(quota.project))
    if config.ignore_quota:
        # No plan read: bound uploads as if every one counted (safe), refuse nothing.
        room = quota.get("image_count_uploading")
        if room is not None and room.limit >= 0:
            run.limits.bound_uploads(max(1, room.limit - room.usage))
        return Verdict(quota, max_uploads=run.limits.max_uploads, ignored=True)
    tally = QuotaTally(config, run)

    async def one(image: dict[str, Any]) -> ImageResult:
        result = await plan(image)
        tally.add(image, result)
        return result

    listing = Listing(images, "source listing")  # ended early: what was counted is still a lower bound
    await run_pool(listing, one, concurrency=config.concurrency, emit=ignore, keep=False)
    verdict = judge(quota, tally.needs)
    refusal = verdict.refusal(verb)
    if refusal is not None:
        raise QuotaExceeded(refusal)
    run.limits.bound_uploads(verdict.max_uploads)
    return verdict


def check_selection(config: CopyConfig, src: Capabilities, dst: Capabilities) -> None:
    """Flags that name stores must fit the clouds: a one-line usage error before anything is done."""
    for store in sorted(config.selection.stores):
        src.require_store(store, "--store")
    if config.dst_store is not None:
        dst.require_store(config.dst_store, "--dst-store")


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
