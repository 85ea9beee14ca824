"""The same-cloud store move: every image in OLD ends up in NEW only, same id.

Two methods, each a state object with step methods, re-deciding from the
image's real state on every attempt (so a re-run after a crash only does
what is left):

``copy-image`` (preferred)
    ``POST /v2/images/{id}/import`` with ``copy-image`` into NEW → poll the
    image (and its tasks) until NEW is in ``stores`` or the import failed →
    check size and hashes are unchanged → ``DELETE /v2/stores/OLD/{id}``.
    Glance does the copying (staging a full copy on the API node's disk).

``location`` (where copy-image is not enabled)
    Stream the image through this process into a hidden, protected *carrier*
    image on NEW (verified like ``copy``) → add the carrier's location to the
    original (``PATCH add /locations/-``) → remove the original's OLD
    location (never its last one).  The original keeps its id and
    attributes; the carrier shares its data and must never be deleted.
    Glance refuses to add a location whose size is 0 (every version since at
    least queens: ``glance/location.py`` ``_check_location_uri`` wants
    ``size_from_backend > 0``), so a 0-byte image is moved with copy-image when
    the cloud enables it (``GET /v2/info/import``), and fails with that reason
    when it does not.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from .capabilities import Capabilities, StoreInfo
from .catalog import list_images
from .clouds import Cloud
from .config import MoveConfig
from .containment import Listing
from .errors import (
    AsyncMigrateError,
    ClientStatusError,
    ConflictStatus,
    Forbidden,
    ImageError,
    UsageError,
    VerificationError,
)
from .glance import GlanceClient, open_glance
from .limits import Limits
from .metadata import carrier_body
from .progress import BytesMoved, CloudsDiscovered, Emit, Retrying, TransferStarted, ignore
from .report import ImageResult, Outcome, RunResult
from .retry import Budget, run_unit
from .selection import select
from .stream import Digest, expected_digest, pipeline
from .transfer import same_data
from .upload import (
    FAILED_IMPORT,
    IMPORT_LOCK,
    SWIFT_WAY_OUT,
    ImportFailed,
    Uploader,
    choose_uploader,
    latest_import_task,
    polling,
    stream_data,
    swift_segmented,
    task_message,
)

__all__ = ["CARRIER_KEY", "ImportFailed", "StoreMove", "move_images", "stores_of"]

CARRIER_KEY = "asyncmigrate_carrier_for"  # property naming the image a carrier serves
ZERO_SIZE_LOCATION = (
    'Glance refuses to add a location whose size is 0 ("400 Invalid location": glance/location.py '
    "accepts only locations whose size is above 0)"
)


class Action:
    """What the plan says to do with one image."""

    MOVE = "move"  # copy into NEW, then drop OLD
    COPY = "copy"  # copy into NEW, keep OLD (--keep-source)
    WAIT = "wait"  # an import into NEW is already running: wait for it
    DROP_OLD = "drop-old"  # already in NEW: only the delete from OLD remains
    NONE = "none"  # in NEW only: done
    SKIP = "skip"  # not in OLD, or not movable (reason says why)


def stores_of(image: dict[str, Any], key: str = "stores") -> list[str]:
    """A comma-separated store list from the image (``stores`` or an ``os_glance_*`` key)."""
    return [s for s in str(image.get(key) or "").split(",") if s]


def plan_move(image: dict[str, Any], config: MoveConfig) -> tuple[str, str]:
    """(action, reason) for ``image`` — pure, used for the dry run and each attempt."""
    stores = stores_of(image)
    old, new = config.from_store, config.to_store
    if old not in stores:
        if new in stores:
            return Action.NONE, f"already in {new} only"
        return Action.SKIP, f"not in {old} (stores: {','.join(stores) or 'none'})"
    status = image.get("status")
    if status == "deactivated" and not config.include_deactivated:
        return Action.SKIP, (
            "deactivated: copy-image needs an active image; --include-deactivated reactivates it, "
            "moves it and deactivates it again"
        )
    if status not in ("active", "deactivated"):
        return Action.SKIP, f"image is {status!r}: only active images can be moved"
    if new in stores_of(image, "os_glance_importing_to_stores") or (new in stores and image.get(IMPORT_LOCK)):
        return Action.WAIT, f"an import into {new} is already running"
    if new in stores:
        return (Action.NONE, f"in {new}; {old} kept (--keep-source)") if config.keep_source else (Action.DROP_OLD, "")
    return (Action.COPY if config.keep_source else Action.MOVE), ""


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
    ) -> None:
        self.client = client
        self.copy_image_enabled = copy_image_enabled  # GET /v2/info/import lists it
        self.to_store = to_store  # NEW as discovered (its type and thresholds, when visible)
        self.limits = limits or Limits()
        self.uploader = uploader  # the carrier's upload (--method location)
        self.image = image
        self.config = config
        self.emit = emit
        self.id: str = image["id"]
        self.size = int(image.get("size") or 0)
        self.result = ImageResult.of(image)
        self._bad_digests: set[str] = set()
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
                    await self._deactivate_again()
        return self.result

    def plan(self) -> ImageResult:
        """Dry run: what would be done, from the listing alone."""
        action, reason = plan_move(self.image, self.config)
        if action in (Action.MOVE, Action.DROP_OLD) and self._zero_by_location():
            how = "moved with copy-image" if self.copy_image_enabled else "cannot be moved: copy-image is not enabled"
            reason = f"0-byte image: {how} ({ZERO_SIZE_LOCATION})"
        self.result.action, self.result.reason, self.result.outcome = action, reason, Outcome.PLANNED
        if action in (Action.MOVE, Action.COPY):
            self.result.bytes = self.size
        return self.result

    async def _attempt(self, number: int) -> None:
        self.result.attempts = number
        if number > 1:
            self.emit(Retrying(self.id, number, 0, self.result.reason, self.budget.last_failure))
        fresh = await self.client.get_image(self.id)
        if fresh is None:
            raise ImageError("image disappeared")
        self.image = fresh
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
        location_swap_left = action == Action.DROP_OLD and method == "location"
        if action in (Action.MOVE, Action.COPY, Action.WAIT) or location_swap_left:
            self.emit(TransferStarted(self.id, self.image.get("name"), self.size))
            if method == "location":
                await self._via_location()
            else:
                await self._copy_image(start=action != Action.WAIT)
            self._check_unchanged(before)
            self.emit(BytesMoved(self.id, self.size))
            self.result.bytes = self.size
        if self.config.keep_source:
            self.result.outcome = Outcome.COPIED
            return
        if method == "copy-image":
            await self._drop_old()
        if self.config.verify_download:
            await self._verify_download()
        self.result.outcome = Outcome.MOVED
        self.result.reason = (
            "" if method == self.config.method else f"0-byte image moved with copy-image: {ZERO_SIZE_LOCATION}"
        )

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

    # -- copy-image --------------------------------------------------------------

    async def _copy_image(self, *, start: bool) -> None:
        """Start (unless one is running) a copy-image import into NEW and wait for it."""
        new = self.config.to_store
        failed_before = new in stores_of(self.image, FAILED_IMPORT)
        if start:
            try:
                await self.client.import_image(self.id, "copy-image", [new])
            except ClientStatusError as exc:
                # 400 "already present at store" is a race with another run; any other 400
                # (e.g. a store URI glance cannot parse) must fail, not wait for an import
                # that never started.
                fresh = await self.client.get_image(self.id) if exc.status == 400 else None
                if fresh is None or new not in stores_of(fresh):
                    raise
            except ConflictStatus:
                pass  # 409: another import holds the image's lock (NEW was checked at start): wait for it
        await self._wait_for_import(failed_before=failed_before)

    async def _wait_for_import(self, *, failed_before: bool) -> None:
        new = self.config.to_store
        seen_importing = False
        config = self.config
        async for _ in polling(config.import_timeout, config.poll_initial, config.poll_max):
            image = await self.client.get_image(self.id)
            if image is None:
                raise ImageError("image disappeared during the import")
            self.image = image
            importing = new in stores_of(image, "os_glance_importing_to_stores")
            # Done only once the task has released the image's lock: glance 33
            # shows NEW in `stores` before the task's final save, and that save
            # would bring back an OLD copy deleted in between.
            if new in stores_of(image) and not importing and not image.get(IMPORT_LOCK):
                return
            seen_importing |= importing
            if importing:
                self.budget.progress()  # glance is copying: waiting for it is not failing
            failed = new in stores_of(image, FAILED_IMPORT)
            if failed and not importing and (seen_importing or not failed_before):
                await self._import_failed()
            if not importing and not seen_importing and await self._task_failed():
                # Never seen importing, and the task already failed: it died at start.
                await self._import_failed()
        raise ImageError(f"copy-image into {new} did not finish within {config.import_timeout:.0f} s")

    async def _import_failed(self) -> None:
        """Raise the import's failure: retried, unless it is the Swift regression (it would fail again)."""
        message = await self._task_message()
        failure = f"copy-image into {self.config.to_store} failed: {message}"
        if swift_segmented(self.to_store, self.size):  # glance says no more than "Internal Error"
            raise ImageError(f"{failure}. {SWIFT_WAY_OUT}; {self.config.from_store} is kept")
        raise ImportFailed(failure)

    async def _task_failed(self) -> bool:
        task = await latest_import_task(self.client, self.id)
        return task is not None and task.get("status") == "failure"

    async def _task_message(self) -> str:
        return await task_message(self.client, self.id)

    def _check_unchanged(self, before: dict[str, Any]) -> None:
        if not same_data(before, self.image):
            raise VerificationError(
                f"size or hash changed during the copy (size {before.get('size')} → {self.image.get('size')}); "
                f"{self.config.from_store} is kept"
            )

    async def _drop_old(self) -> None:
        old = self.config.from_store
        try:
            await self.client.delete_from_store(old, self.id)
        except ConflictStatus as exc:
            raise ImageError(
                f"copied to {self.config.to_store}, but {old} keeps its copy: it is in use ({exc})"
            ) from exc
        except Forbidden as exc:
            raise ImageError(f"copied to {self.config.to_store}, but {old} refused the delete ({exc})") from exc

    async def _verify_download(self) -> None:
        """Re-read the image (now served from NEW) and check size and hash."""
        algo, expected = expected_digest(self.image)
        digest = Digest(algo or "md5")
        pipe = pipeline(
            lambda offset: self.client.download(self.id, offset),
            size=self.size,
            digest=digest,
            expected=expected,
            on_bytes=lambda n: None,
        )
        try:
            async for _ in pipe:
                pass
        finally:
            await pipe.aclose()
            digest.close()

    # -- location ----------------------------------------------------------------

    async def _via_location(self) -> None:
        """Stream into a carrier on NEW, then swap the original's locations."""
        locations = self.image.get("locations")
        if locations is None:
            raise UsageError(
                "--method location needs show_multiple_locations = true in glance-api.conf and an admin "
                "caller (the image shows no locations); prefer copy-image"
            )
        carrier = await self._carrier()
        url = _location_in(carrier, self.config.to_store)
        if url is None:
            raise ImageError(f"carrier {carrier['id']} has no location in {self.config.to_store}")
        if url.startswith("file://"):
            raise UsageError(
                f"{self.config.to_store} is a file store: Glance refuses to add file:// locations; "
                "use --method copy-image"
            )
        self.result.reason = f"carrier {carrier['id']} holds the data in {self.config.to_store}: never delete it"
        if _location_in(self.image, self.config.to_store) is None:
            await self.client.patch_image(
                self.id,
                [
                    {
                        "op": "add",
                        "path": "/locations/-",
                        "value": {"url": url, "metadata": {"store": self.config.to_store}},
                    }
                ],
            )
        image = await self.client.get_image(self.id)
        assert image is not None
        index = _location_index(image, self.config.from_store)
        if index is not None and len(image.get("locations") or []) > 1:
            await self.client.patch_image(self.id, [{"op": "remove", "path": f"/locations/{index}"}])
        refreshed = await self.client.get_image(self.id)
        if refreshed is not None:
            self.image = refreshed

    async def _carrier(self) -> dict[str, Any]:
        """The carrier image for this original, created and filled if needed."""
        found = [
            image
            async for image in self.client.list_images({CARRIER_KEY: self.id, "os_hidden": "true", "visibility": "all"})
        ]
        carrier = found[0] if found else await self.client.create_image(carrier_body(self.image, CARRIER_KEY))
        if carrier.get("status") == "queued":
            async with self.limits.upload_slot():
                self.budget.progress()
                await stream_data(
                    self.client,
                    self.client,
                    self.image,
                    dest_id=carrier["id"],
                    store=self.config.to_store,
                    verify="full",
                    on_started=lambda: None,
                    on_bytes=lambda n: self.budget.progress(),
                    bad_digests=self._bad_digests,
                    throttle=self.limits.throttle,
                    uploader=self.uploader,
                )
            fresh = await self.client.get_image(carrier["id"])
            assert fresh is not None
            carrier = fresh
            if not same_data(self.image, carrier):
                raise VerificationError(f"carrier {carrier['id']} recorded other hashes than the original")
        if not carrier.get("protected"):
            await self.client.patch_image(carrier["id"], [{"op": "replace", "path": "/protected", "value": True}])
        return carrier

    async def _deactivate_again(self) -> None:
        try:
            await self.client.deactivate(self.id)
        except AsyncMigrateError as exc:
            self.result.outcome = Outcome.FAILED
            self.result.reason = f"{self.result.reason}; could not deactivate it again: {exc}".strip("; ")


def _location_in(image: dict[str, Any], store: str) -> str | None:
    index = _location_index(image, store)
    return None if index is None else str(image["locations"][index]["url"])


def _location_index(image: dict[str, Any], store: str) -> int | None:
    for i, location in enumerate(image.get("locations") or []):
        if (location.get("metadata") or {}).get("store") == store:
            return i
    return None


def check_stores(caps: Capabilities, config: MoveConfig) -> None:
    """A one-line usage error for a single-store cloud, an unknown store, or a
    location move into a file store (Glance refuses file:// locations)."""
    if not caps.multi_store:
        raise UsageError(
            f"cloud {caps.cloud!r} is not multi-store (GET /v2/info/stores: 404): 'move' needs stores; "
            "configure enabled_backends in glance-api.conf, or use 'asyncmigrate copy' to another cloud"
        )
    caps.require_store(config.from_store, "--from-store")
    target = caps.require_store(config.to_store, "--to-store")
    for store in sorted(config.selection.stores):
        caps.require_store(store, "--store")
    if config.method == "location" and target.type == "file":
        raise UsageError(
            f"--method location cannot move into {config.to_store!r}: it is a file store and Glance refuses "
            "to add file:// locations; use --method copy-image"
        )


async def move_images(
    config: MoveConfig, cloud: Cloud, *, emit: Emit = ignore, stop: anyio.Event | None = None
) -> RunResult:
    """Move every image (or ``config.image_ids``) from ``from_store`` to ``to_store``.

    Setting ``stop`` ends the run after the images in flight (``interrupted``).
    """
    from .engine import journaled, open_cloud, run_pool

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
        target = caps.store(config.to_store)

        # Glance refuses 0-byte locations: --method location moves those with copy-image, if enabled.
        copy_image = config.method == "copy-image" or "copy-image" in caps.import_methods

        async def handle(image: dict[str, Any]) -> ImageResult:
            move = StoreMove(
                client, image, config, emit, limits, uploader, copy_image_enabled=copy_image, to_store=target
            )
            return move.plan() if config.dry_run else await move.run()

        async def wanted() -> Any:
            async for image in select(list_images(client, caps, config.image_ids), config.selection):
                # Carriers of an earlier location move are not images to move.
                if CARRIER_KEY in image:
                    continue
                if config.image_ids or config.from_store in stores_of(image):
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
        interrupted=stop is not None and stop.is_set(),
        clouds={"cloud": caps.describe()},
        incomplete=listing.incomplete,
    )
