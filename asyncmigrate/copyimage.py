"""copy-image for a store move: start the import into NEW (unless one is running), wait until
Glance is really done with it, and say why when it fails.

Done means NEW is in ``stores`` *and* the task released the image's lock
(``os_glance_import_task``): glance 33 shows NEW in ``stores`` before the task's final save,
and that save brings back an OLD copy deleted in between (seen on the real server).  A failed
import (``os_glance_failed_import`` names NEW, or the task failed — whatever the cause, e.g.
"database is locked") is :class:`~asyncmigrate.upload.ImportFailed`, retried by the caller;
the glance_store 5.7.0 Swift regression is not (it would fail again).
"""

from __future__ import annotations

from typing import Any

from .capabilities import StoreInfo
from .carriers import stores_of
from .config import MoveConfig
from .errors import ClientStatusError, ConflictStatus, ImageError
from .glance import GlanceClient
from .retry import Budget
from .upload import (
    FAILED_IMPORT,
    IMPORT_LOCK,
    SWIFT_WAY_OUT,
    ImportFailed,
    latest_import_task,
    polling,
    swift_segmented,
    task_message,
)

__all__ = ["CopyImage"]

IMPORTING = "os_glance_importing_to_stores"


class CopyImage:
    """One image's copy-image import into ``config.to_store``."""

    def __init__(
        self,
        client: GlanceClient,
        image: dict[str, Any],
        config: MoveConfig,
        budget: Budget,
        to_store: StoreInfo | None,
    ) -> None:
        self.client = client
        self.image = image
        self.id = str(image["id"])
        self.config = config
        self.budget = budget  # a running import is progress, not failing
        self.to_store = to_store

    async def run(self, *, start: bool) -> dict[str, Any]:
        """Start (unless ``start`` is False: one is running) and wait; the image when done."""
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
                # 409: another import holds the image's lock (NEW was checked at start): wait for it —
                # unless the image shows no import at all: Glance refused this one for a reason of its
                # own, and waiting would only run out --import-timeout.
                fresh = await self.client.get_image(self.id)
                if fresh is not None and not fresh.get(IMPORT_LOCK) and not self._in_new(fresh):
                    raise
        return await self._wait(failed_before=failed_before)

    async def _wait(self, *, failed_before: bool) -> dict[str, Any]:
        new = self.config.to_store
        seen_importing = False
        config = self.config
        async for _ in polling(config.import_timeout, config.poll_initial, config.poll_max):
            image = await self.client.get_image(self.id)
            if image is None:
                raise ImageError("image disappeared during the import")
            self.image = image
            importing = new in stores_of(image, IMPORTING)
            if new in stores_of(image) and not importing and not image.get(IMPORT_LOCK):
                return image
            seen_importing |= importing
            if importing:
                self.budget.progress()  # glance is copying: waiting for it is not failing
            failed = new in stores_of(image, FAILED_IMPORT)
            if failed and not importing and (seen_importing or not failed_before):
                await self._failed()
            if not importing and not seen_importing and await self._task_failed():
                # Never seen importing, and the task already failed: it died at start.
                await self._failed()
        raise ImageError(f"copy-image into {new} did not finish within {config.import_timeout:.0f} s")

    def _in_new(self, image: dict[str, Any]) -> bool:
        """Is NEW among the image's stores, or being imported into?"""
        new = self.config.to_store
        return new in stores_of(image) or new in stores_of(image, IMPORTING)

    async def _failed(self) -> None:
        """Raise the import's failure: retried, unless it is the Swift regression (it would fail again)."""
        message = await task_message(self.client, self.id)
        failure = f"copy-image into {self.config.to_store} failed: {message}"
        if swift_segmented(self.to_store, int(self.image.get("size") or 0)):  # glance says only "Internal Error"
            raise ImageError(f"{failure}. {SWIFT_WAY_OUT}; {self.config.from_store} is kept")
        raise ImportFailed(failure)

    async def _task_failed(self) -> bool:
        task = await latest_import_task(self.client, self.id)
        return task is not None and task.get("status") == "failure"
