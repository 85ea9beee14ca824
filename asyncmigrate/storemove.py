"""The same-cloud store move: every image in OLD ends up in NEW only, same id.

Two methods, each step re-decided from the image's real state on every attempt (so a re-run
after a crash only does what is left):

``copy-image`` (preferred)
    ``POST /v2/images/{id}/import`` with ``copy-image`` into NEW → poll the image (and its
    tasks) until NEW is in ``stores`` and the import lock is released → ``DELETE
    /v2/stores/OLD/{id}``.  Glance does the copying (staging a full copy on the API node's
    disk) and keeps the record: its size and hashes say nothing about NEW's bytes, which only
    ``--verify-download`` reads (:mod:`asyncmigrate.moveverify`: before the delete where Glance
    serves a chosen store).
``location`` (where copy-image is not enabled)
    Stream the image through this process into a hidden, protected carrier on NEW (verified on
    the fly, :mod:`asyncmigrate.carriers`) → add the carrier's location to the original → remove
    the original's OLD location.  Glance refuses to add a location whose size is 0 (every
    version since at least queens: ``glance/location.py`` ``_check_location_uri`` wants
    ``size_from_backend > 0``), so a 0-byte image is moved with copy-image when the cloud
    enables it (``GET /v2/info/import``), and fails with that reason when it does not.

Whatever the method, leaving OLD retires the image's carriers there first (an earlier location
move's: they share the data being deleted) and an OLD copy Glance cannot delete because it is in
use (RBD clones, :mod:`asyncmigrate.rbd`) keeps the image in both stores, reported ``in-use``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import anyio

from .capabilities import StoreInfo
from .carriers import CARRIER_KEY, adopt, carrier_in, carriers_of, leftover_of, retire, retire_leftover, stores_of
from .catalog import list_images
from .clouds import Cloud
from .config import MoveConfig
from .containment import Listing
from .copyimage import CopyImage
from .errors import (
    AsyncMigrateError,
    ConflictStatus,
    Forbidden,
    ImageError,
    ServerStatusError,
    UsageError,
    VerificationError,
)
from .glance import GlanceClient, open_glance
from .limits import Limits
from .moveplan import Action, check_stores, left_in_old, plan_move
from .moveverify import NewCopyCheck, StoreReads
from .preflight import store_traps
from .progress import BytesMoved, CloudsDiscovered, Emit, Retrying, TransferStarted, ignore
from .rbd import in_use, in_use_reason, location_in
from .report import ImageResult, Outcome, RunResult
from .retry import Budget, run_unit
from .selection import select
from .transfer import same_data
from .upload import FAILED_IMPORT, ImportFailed, Uploader, choose_uploader

__all__ = ["CARRIER_KEY", "ImportFailed", "StoreMove", "move_images", "stores_of"]

ZERO_SIZE_LOCATION = (
    'Glance refuses to add a location whose size is 0 ("400 Invalid location": glance/location.py '
    "accepts only locations whose size is above 0)"
)


class InUse(ImageError):
    """OLD's copy cannot be deleted: it is in use outside Glance (RBD clones)."""


class StoreMove:
    """Moves one image from ``config.from_store`` to ``config.to_store``."""

    def __init__(
        self,
        client: GlanceClient,
        image: dict[str, Any],
        config: MoveConfig,
        emit: Emit,
        limits: Limits | None = None,
        uploader: Uploader | None = None,
        *,
        copy_image_enabled: bool = True,
        to_store: StoreInfo | None = None,
        from_store: StoreInfo | None = None,
        reads: StoreReads | None = None,
    ) -> None:
        self.client = client
        self.copy_image_enabled = copy_image_enabled  # GET /v2/info/import lists it
        self.to_store, self.from_store = to_store, from_store  # as discovered (type, thresholds, pool)
        self.limits = limits or Limits()
        self.uploader = uploader  # the carrier's upload (--method location)
        self.image = image
        self.config = config
        self.emit = emit
        self.id: str = image["id"]
        self.size = int(image.get("size") or 0)
        self.result = ImageResult.of(image)
        self._bad_digests: set[str] = set()  # carrier uploads (stream_data)
        self.check = NewCopyCheck(
            client,
            reads or StoreReads(client, []),
            config.from_store,
            config.to_store,
            ranged=to_store is not None and to_store.serves_ranges,
        )
        self._notes: list[str] = []
        self._reactivated = False
        # --retry-deadline counts time spent failing: a running import and bytes moved are progress.
        self.budget = Budget(config.retry)

    async def run(self) -> ImageResult:
        """Every step with retries; fatal errors propagate, others are recorded."""
        try:
            await run_unit(self.config.retry, self._attempt, self.result, budget=self.budget)
        finally:
            if self._reactivated:
                with anyio.CancelScope(shield=True):  # never leave it active by accident
                    await self._deactivate("could not deactivate it again")
        return self.result

    def plan(self) -> ImageResult:
        """Dry run: what would be done, from the listing alone."""
        action, reason = plan_move(self.image, self.config)
        moves = action in (Action.MOVE, Action.COPY)
        if action in (Action.MOVE, Action.DROP_OLD) and self._zero_by_location():
            how = "moved with copy-image" if self.copy_image_enabled else "cannot be moved: copy-image is not enabled"
            reason = f"0-byte image: {how} ({ZERO_SIZE_LOCATION})"
        if moves:
            by_copy_image = self.config.method == "copy-image" or self._zero_by_location()
            traps = store_traps(self.image, self.to_store, copy_image=by_copy_image)
            self.result.traps = [t.kind for t in traps]
            reason = "; ".join([reason, *(t.reason for t in traps)])
            self.result.bytes = self.size
        self.result.action, self.result.reason, self.result.outcome = action, reason, Outcome.PLANNED
        return self.result

    async def _attempt(self, number: int) -> None:
        self.result.attempts = number
        if number > 1:
            self.emit(Retrying(self.id, number, 0, self.result.reason, self.budget.last_failure))
        self.image = await self._fresh()
        action, reason = plan_move(self.image, self.config)
        self.result.action, self.result.reason = action, reason
        if action in (Action.SKIP, Action.NONE):
            self.result.outcome = Outcome.SKIPPED
            return
        method = self._method()
        if self.image.get("status") == "deactivated":
            await self.client.reactivate(self.id)
            self._reactivated = True
        before = dict(self.image)
        new = self.config.to_store
        carriers = [] if method == "copy-image" and self.config.keep_source else await carriers_of(self.client, self.id)
        if action in (Action.MOVE, Action.COPY, Action.WAIT):
            # The plan's warnings (not-raw-on-rbd, …) hold for the move itself: its report says them too.
            traps = store_traps(self.image, self.to_store, copy_image=method == "copy-image")
            self.result.traps, self.result.warnings = [t.kind for t in traps], [t.reason for t in traps]
            self.emit(TransferStarted(self.id, self.image.get("name"), self.size))
            if method == "location":
                await self._by_location(carriers)
            else:
                copying = CopyImage(self.client, self.image, self.config, self.budget, self.to_store)
                self.image = await copying.run(start=action != Action.WAIT)
            if not same_data(before, self.image):
                raise VerificationError(
                    f"size or hash changed during the copy (size {before.get('size')} → {self.image.get('size')}); "
                    f"{self.config.from_store} is kept"
                )
            self.emit(BytesMoved(self.id, self.size))
            self.result.bytes = self.size
        elif method == "location":  # resumed: the carrier already holds the data in NEW
            found = [c for c in carriers if new in stores_of(c) and location_in(c, new) == location_in(self.image, new)]
            self.result.carrier = found[0]["id"] if found else None
        if self.config.verify_download and self.check.done is None:
            await self.check.before_delete(self.image)
        if self.config.keep_source:
            self._finish(Outcome.COPIED)
            return
        try:
            await self._leave_old(carriers)
        except InUse as exc:
            self._finish(Outcome.IN_USE, str(exc))
            return
        if self.config.verify_download:
            await self.check.after_delete(self.image)
        self._finish(Outcome.MOVED)

    async def _fresh(self) -> dict[str, Any]:
        fresh = await self.client.get_image(self.id)
        if fresh is None:
            raise ImageError("image disappeared")
        return fresh

    def _finish(self, outcome: str, why: str = "") -> None:
        notes = [why, *self._notes] if why else list(self._notes)
        if self.check.done is not None:
            self.result.download_check = self.check.done.to_json()
            self.result.verification = self.check.done.algorithm
        elif self.config.verify_download and self.check.waits:
            notes.append(f"--verify-download read nothing: {self.check.waits}, and {self.config.from_store} is kept")
        if self._method() != self.config.method:
            notes.insert(0, f"0-byte image moved with copy-image: {ZERO_SIZE_LOCATION}")
        if self.result.carrier:
            notes.append(
                f"carrier {self.result.carrier} holds its data in {self.config.to_store}: never delete it while the "
                "image exists (a later move retires it)"
            )
        # (self.image was read before OLD's delete: the stores it is in now are NEW's side)
        now_in = [s for s in stores_of(self.image) if s != self.config.from_store or outcome == Outcome.COPIED]
        failed = [s for s in stores_of(self.image, FAILED_IMPORT) if s in now_in]
        if failed:
            notes.append(
                f"os_glance_failed_import still names {','.join(failed)} from an earlier failed copy-image: it stays — "
                "Glance lets no caller change os_glance_* properties and clears it only on a new import into that "
                "store; the image is in it all the same"
            )
        self.result.outcome, self.result.reason = outcome, "; ".join(notes)

    def _zero_by_location(self) -> bool:
        return self.config.method == "location" and self.image.get("size") == 0

    def _method(self) -> str:
        """How this image moves: as configured, except a 0-byte image by location, which
        only copy-image can move (a failure, with the reason, where it is not enabled)."""
        if not self._zero_by_location():
            return self.config.method
        if not self.copy_image_enabled:
            raise ImageError(
                f"0-byte image: --method location cannot move it — {ZERO_SIZE_LOCATION}; enable the copy-image "
                "import method (enabled_import_methods in glance-api.conf) to move it"
            )
        return "copy-image"

    # -- location ----------------------------------------------------------------

    async def _by_location(self, carriers: list[dict[str, Any]]) -> None:
        """Stream into a carrier on NEW (checked back with --verify-download), then give the
        original its location."""
        if self.image.get("locations") is None:
            raise UsageError(
                "--method location needs show_multiple_locations = true in glance-api.conf and an admin "
                "caller (the image shows no locations); prefer copy-image"
            )
        new = self.config.to_store
        carrier = await carrier_in(
            self.client,
            self.image,
            new,
            carriers,
            limits=self.limits,
            uploader=self.uploader,
            budget=self.budget,
            bad_digests=self._bad_digests,
            on_note=self._notes.append,
        )
        self.result.carrier = carrier["id"]
        if self.config.verify_download:
            await self.check.before_delete(self.image, carrier)
        self.image = await adopt(self.client, self.image, carrier, new)

    # -- leaving OLD -------------------------------------------------------------------

    async def _leave_old(self, carriers: list[dict[str, Any]]) -> None:
        """Retire the image's carriers in OLD (they share what is deleted), then drop OLD."""
        old = self.config.from_store
        for carrier in carriers:
            if old in stores_of(carrier):
                try:
                    said = await retire(self.client, self.image, carrier, old)
                except ConflictStatus as exc:
                    if not in_use(exc):
                        raise
                    raise InUse(in_use_reason(carrier, self.from_store, self.config.to_store, str(exc))) from exc
                self.result.retired_carriers.append(str(carrier["id"]))
                self._notes.append(said)
        try:
            if self.config.method == "location" and self._method() == "location":
                await self._remove_location(old)
            else:
                await self.client.delete_from_store(old, self.id)
        except ConflictStatus as exc:
            if not in_use(exc):
                raise ImageError(f"copied to {self.config.to_store}, but {old} refused the delete ({exc})") from exc
            raise InUse(in_use_reason(self.image, self.from_store, self.config.to_store, str(exc))) from exc
        except Forbidden as exc:
            raise ImageError(f"copied to {self.config.to_store}, but {old} refused the delete ({exc})") from exc

    async def _remove_location(self, old: str) -> None:
        image = self.image  # read this attempt, after the carrier's location was added
        for index, location in enumerate(image.get("locations") or []):
            if (location.get("metadata") or {}).get("store") == old and len(image["locations"]) > 1:
                try:
                    await self.client.patch_image(self.id, [{"op": "remove", "path": f"/locations/{index}"}])
                except ServerStatusError as exc:
                    # glance 33 answers a store's InUseByStore here with 500 (_do_remove_locations).
                    rbd = self.from_store is not None and self.from_store.type == "rbd"
                    if rbd and location_in(await self._fresh(), old) is not None:
                        raise InUse(in_use_reason(image, self.from_store, self.config.to_store, str(exc))) from exc
                    raise
                return

    async def _deactivate(self, failure: str) -> None:  # --include-deactivated's, in a finally
        try:
            await self.client.deactivate(self.id)
        except AsyncMigrateError as exc:
            self.result.outcome = Outcome.FAILED
            self.result.reason = f"{self.result.reason}; {failure}: {exc}".strip("; ")


async def move_images(
    config: MoveConfig, cloud: Cloud, *, emit: Emit = ignore, stop: anyio.Event | None = None
) -> RunResult:
    """Move every image (or ``config.image_ids``) from ``from_store`` to ``to_store``.

    Setting ``stop`` ends the run after the images in flight (``interrupted``).
    """
    from .pairrun import open_cloud
    from .pool import journaled, run_pool

    started = time.monotonic()
    async with (
        open_glance(
            cloud,
            chunk_size=config.chunk_size,
            concurrency=config.concurrency,
            timeouts=config.timeouts,
            retry=config.retry,
            role="destination",  # the one cloud: the one this command changes
            emit=emit,
        ) as client,
        journaled(None if config.dry_run else config.journal, "move", emit, stop) as journal,
    ):
        caps = await open_cloud(client, "the")
        check_stores(caps, config)
        emit(CloudsDiscovered(caps.describe(), None))
        limits = Limits(max_rate=config.max_rate, max_uploads=config.max_uploads, chunk_size=config.chunk_size)
        # The carrier's data goes into NEW as a copy's would (unsized into Swift: see upload.py).
        uploader = choose_uploader("put", caps, config.to_store, import_timeout=config.import_timeout)
        target, source = caps.store(config.to_store), caps.store(config.from_store)
        reads = StoreReads(client, caps.store_ids)  # asked once, by the first image checked

        # Glance refuses 0-byte locations: --method location moves those with copy-image, if enabled.
        copy_image_enabled = config.method == "copy-image" or "copy-image" in caps.import_methods

        async def handle(image: dict[str, Any]) -> ImageResult:
            if CARRIER_KEY in image:  # a leftover carrier (wanted() let it through)
                result = ImageResult.of(image, "retire")
                result.outcome, result.reason = Outcome.PLANNED, f"leftover carrier of {image[CARRIER_KEY]}"
                if not config.dry_run:
                    attempt = functools.partial(retire_leftover, client, image, config.from_store, result)
                    await run_unit(config.retry, attempt, result)
                return result
            move = StoreMove(
                client,
                image,
                config,
                emit,
                limits,
                uploader,
                copy_image_enabled=copy_image_enabled,
                to_store=target,
                from_store=source,
                reads=reads,
            )
            return move.plan() if config.dry_run else await move.run()

        async def wanted() -> Any:
            async for image in select(list_images(client, caps, config.image_ids), config.selection):
                # Carriers move (or are retired) with their image; only leftovers come on their own.
                if CARRIER_KEY in image:
                    if config.from_store in stores_of(image) and await leftover_of(client, image, config.from_store):
                        yield image
                elif config.image_ids or config.from_store in stores_of(image):
                    yield image

        listing = Listing(wanted(), "listing", emit)  # a failure part-way ends the intake only
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
    return RunResult(
        images=results,
        seconds=time.monotonic() - started,
        dry_run=config.dry_run,
        interrupted=stop is not None and stop.is_set() and not listing.drained(len(results)),
        clouds={"cloud": caps.describe()},
        incomplete=listing.incomplete,
        notes=left_in_old(results, source, config),
    )
