"""The images this tool brought from a source that the source no longer has.

``sync`` hands :class:`Removal` the pair's record (:mod:`asyncmigrate.journal`:
every image found at both ends by a ``copy`` or a ``sync``, with the source
attributes last seen) and the ids of a *complete* source listing.  A recorded
image the source did not list, within the selection flags and the shard
(judged by its attributes as last seen), is a candidate; it is confirmed gone
with one ``GET`` at the source, then reported as ``removed`` — or, with
``delete_removed``, deleted at the destination (a protected one is a conflict
unless ``force_protected`` unprotects it first).  An image the record does
not name — the destination's own — is never looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from .catalog import DestinationIndex, Entry
from .config import SyncConfig
from .containment import planning
from .errors import DestinationConflict, NotFound
from .glance import GlanceClient
from .report import Action, ImageResult, Outcome
from .retry import run_unit

__all__ = ["Removal"]


class Removal:
    """The images of this pair's record that the source no longer has."""

    def __init__(
        self,
        src: GlanceClient,
        dst: GlanceClient,
        config: SyncConfig,
        index: DestinationIndex | None,
        record: dict[str, dict[str, Any]],
    ) -> None:
        self.src, self.dst, self.config, self.index, self.record = src, dst, config, index, record
        self.gone: list[str] = []  # deleted now, or found gone from both ends: dropped from the record

    def candidates(self, listed: set[str], named_missing: Iterable[str]) -> list[dict[str, Any]]:
        """Recorded images the source did not list, within the selection (and the named ids)."""
        if self.config.image_ids:
            ids = [i for i in named_missing if i in self.record]
        else:
            ids = [i for i in self.record if i not in listed]
            if self.index is not None:
                self.gone += [i for i in ids if i not in self.index]
                ids = [i for i in ids if i in self.index]
        return [{**self.record[i], "id": i} for i in sorted(ids) if self.config.selection.wants(self.record[i])]

    async def handle(self, last_seen: dict[str, Any]) -> ImageResult:
        """Report, delete (``delete_removed``) or, on a dry run, plan one removed image."""
        image_id = last_seen["id"]
        result = ImageResult.of(last_seen, Action.DELETE if self.config.delete_removed else Action.REMOVE)
        deleting = False

        async def attempt(number: int) -> None:
            nonlocal deleting
            result.attempts = number
            if await self.src.get_image(image_id) is not None:
                result.action, result.outcome = Action.NONE, Outcome.SKIPPED
                result.reason = "missing from the source's listing but the source still has it: left for the next run"
                return
            entry = self.index.get(image_id) if self.index is not None and number == 1 else None
            if entry is None:
                full = await self.dst.get_image(image_id)
                if full is None:
                    self.gone.append(image_id)
                    result.outcome = Outcome.DELETED if deleting else Outcome.SKIPPED
                    result.reason = "deleted at the destination" if deleting else "gone from both clouds"
                    return
                entry = Entry.of(full)
            result.reason = "deleted at the source"
            if not self.config.delete_removed:
                result.reason += "; kept at the destination (--delete-removed deletes it)"
                result.outcome = Outcome.PLANNED if self.config.dry_run else Outcome.REMOVED
                return
            if entry.protected and not self.config.force_protected:
                raise DestinationConflict(
                    "deleted at the source; protected at the destination, so not deleted "
                    "(--force-protected unprotects and deletes it)"
                )
            if self.config.dry_run:
                result.reason += "; delete at the destination" + (" (unprotect first)" if entry.protected else "")
                result.outcome = Outcome.PLANNED
                return
            deleting = True
            if entry.protected:
                await self.dst.patch_image(image_id, [{"op": "replace", "path": "/protected", "value": False}])
            with contextlib.suppress(NotFound):  # a retry after a lost answer: it is gone
                await self.dst.delete_image(image_id)
            self.gone.append(image_id)
            result.reason += "; deleted at the destination" + (" (unprotected first)" if entry.protected else "")
            result.outcome = Outcome.DELETED

        if self.config.dry_run:
            with planning(result):
                await attempt(1)
            return result
        await run_unit(self.config.retry, attempt, result)
        return result
