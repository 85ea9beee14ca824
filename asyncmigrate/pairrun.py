"""What a two-cloud command (copy, sync, verify) settles before its first image: both clouds
discovered and checked, the flags held against them, the upload way, the destination's
catalog, the pair's record, and the plan held against the destination's quota.

Everything here reads; nothing is written to the destination.  A failure is fatal or a usage
error, raised before any image is handled (nothing done).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from .capabilities import Capabilities, discover
from .catalog import DestinationIndex, load_index
from .clouds import Cloud
from .config import CopyConfig
from .containment import Listing
from .errors import AsyncMigrateError, Behaviour, EndpointError
from .glance import GlanceClient
from .identity import mapping_of
from .journal import Journal, read_destination_properties
from .limits import Limits
from .owned import DestinationProperties
from .pool import Handler, run_pool
from .preflight import PreflightOptions, clone_note
from .progress import CloudsDiscovered, Emit, RunWarning, ignore
from .quota import Needs, QuotaExceeded, Verdict, judge
from .record import PairRecord, SourceIdentity, open_record
from .report import ImageResult
from .transfer import destination_view
from .upload import Uploader, choose_uploader, unsized_cost

__all__ = [
    "PairRun",
    "QuotaTally",
    "check_endpoint",
    "check_selection",
    "destination_owned",
    "fit_quota",
    "keep_owned",
    "open_cloud",
    "pair_record",
    "read_index",
    "start_run",
]

C = TypeVar("C", bound=CopyConfig)


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
