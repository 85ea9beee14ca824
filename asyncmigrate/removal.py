"""The images this tool brought from a source that the source no longer has — and what
protects an image from being deleted.

``sync`` hands :class:`Removal` the pair's record (:mod:`asyncmigrate.record`: every
image found at both ends by a ``copy`` or a ``sync``, bound to the source cloud, with
the source attributes and the destination copy last seen) and the ids of a *complete*
source listing.  A recorded image the source did not list, within the selection flags
and the shard (judged by its attributes as last seen), is a candidate; it is confirmed
gone with one ``GET`` at the source, then reported as ``removed`` — or, with
``delete_removed``, deleted at the destination (a protected one is a conflict unless
``force_protected`` unprotects it first).  An image the record does not name — the
destination's own — is never looked at.

What protects an image from deletion is :func:`protection`, one pure function of

* **the record**: bound to this source (its Keystone identity and a sample of its
  holdings, checked before the run began: :func:`asyncmigrate.record.open_record`), and
  the source still lists *most* of what the record says it held (not known to be gone,
  within the selection) — a source that lists fewer than half is another cloud, or
  credentials that see less, and no image is deleted (``--confirm-source`` vouches);
* **the evidence that the image is gone**: the source listing was read to its end
  without it, and the source answered 404 for it just now;
* **the destination copy, unchanged**: the destination image is the copy the record
  saw (``created_at``, size and hashes); a row of an older version, which noted no
  copy, is never deleted.

Only an image that passes all three is deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from typing import Any

from .catalog import DestinationIndex, Entry
from .config import SyncConfig
from .containment import planning
from .errors import DestinationConflict, NotFound
from .glance import GlanceClient
from .record import Recorded, copy_of
from .report import Action, ImageResult, Outcome
from .retry import run_unit

__all__ = ["CopyEvidence", "GoneEvidence", "Protection", "RecordTrust", "Removal", "protection"]


@dataclasses.dataclass(frozen=True)
class RecordTrust:
    """What the run knows of the record as a whole."""

    bound: bool  # the source is the one the record was made from (or the operator vouched for it)
    held: int | None  # recorded images the complete listing still names; None: not counted (--image)
    recorded: int  # recorded images not known to be gone, within the selection, before this run
    confirmed: bool = False  # --confirm-source: the images are really gone


@dataclasses.dataclass(frozen=True)
class GoneEvidence:
    """What the run knows of one recorded image at the source."""

    listing_complete: bool  # the source listing was read to its end (or the image was named)
    listed: bool  # ... and named this image
    at_source: bool | None  # a GET just now found it (True), answered 404 (False); None: not asked


@dataclasses.dataclass(frozen=True)
class CopyEvidence:
    """The destination copy the record saw, and the destination's image now (:func:`copy_of`)."""

    recorded: str | None  # None: a row of an older version, which noted no copy
    now: str | None  # None: the destination has no such image


@dataclasses.dataclass(frozen=True)
class Protection:
    """Why an image must not be deleted; ``whole_record``: nothing of this record may be."""

    reason: str
    whole_record: bool = False


def protection(trust: RecordTrust, gone: GoneEvidence, copy: CopyEvidence) -> Protection | None:
    """Why the recorded image must not be deleted at the destination; None: it may be."""
    if not gone.listing_complete:
        return Protection("the source listing was not read to its end", whole_record=True)
    if gone.listed or gone.at_source:
        return Protection("the source still has it")
    if gone.at_source is None:
        return Protection("not confirmed gone: the source was not asked for it")
    if not trust.bound:
        return Protection("the record is not bound to this source", whole_record=True)
    if trust.held is not None and trust.held * 2 < trust.recorded and not trust.confirmed:
        return Protection(
            f"the source lists only {trust.held} of the {trust.recorded} images its record names: another cloud, "
            "or credentials that see less (--confirm-source if they are really gone)",
            whole_record=True,
        )
    if copy.recorded is None:
        return Protection(
            "recorded by an older asyncmigrate, which did not note the destination copy: never deleted by this "
            "tool (check it and delete it by hand)"
        )
    if copy.now is None:
        return Protection("not at the destination")
    if copy.now != copy.recorded:
        return Protection(f"the destination image is not the copy the record saw ({_differs(copy)})")
    return None


def _differs(copy: CopyEvidence) -> str:
    import json

    was, now = json.loads(copy.recorded or "{}"), json.loads(copy.now or "{}")
    return ", ".join(f"{k} {was.get(k)!r}, now {now.get(k)!r}" for k in sorted(now) if was.get(k) != now.get(k))


class Removal:
    """The images of this pair's record that the source no longer has."""

    def __init__(
        self,
        src: GlanceClient,
        dst: GlanceClient,
        config: SyncConfig,
        index: DestinationIndex | None,
        record: dict[str, Recorded],
        *,
        prior_live: frozenset[str] = frozenset(),
        bound: bool = True,
        confirmed: bool = False,
    ) -> None:
        self.src, self.dst, self.config, self.index, self.record = src, dst, config, index, record
        self.prior_live, self.bound, self.confirmed = prior_live, bound, confirmed
        self.trust = RecordTrust(bound, None, 0, confirmed)
        self.gone: list[str] = []  # deleted now, or found gone from both ends: dropped from the record
        self.lost: set[str] = set()  # confirmed gone from the source, kept at the destination
        self.refused: str | None = None  # why no image of the record was deleted this run

    def candidates(self, listed: set[str], named_missing: Iterable[str]) -> list[dict[str, Any]]:
        """Recorded images the source did not list, within the selection (and the named ids);
        also counts how much of the record the listing still holds (:attr:`trust`)."""
        wants = self.config.selection.wants
        if self.config.image_ids:
            ids = [i for i in named_missing if i in self.record]
        else:
            ids = [i for i in self.record if i not in listed]
            if self.index is not None:
                self.gone += [i for i in ids if i not in self.index]
                ids = [i for i in ids if i in self.index]
            recorded = [i for i in self.prior_live if i in self.record and wants(self.record[i].source)]
            held = sum(1 for i in recorded if i in listed)
            self.trust = RecordTrust(self.bound, held, len(recorded), self.confirmed)
        return [{**self.record[i].source, "id": i} for i in sorted(ids) if wants(self.record[i].source)]

    async def handle(self, last_seen: dict[str, Any]) -> ImageResult:
        """Report, delete (``delete_removed``) or, on a dry run, plan one removed image."""
        image_id = last_seen["id"]
        row = self.record[image_id]
        result = ImageResult.of(last_seen, Action.DELETE if self.config.delete_removed else Action.REMOVE)
        deleting = False

        async def attempt(number: int) -> None:
            nonlocal deleting
            result.attempts = number
            if await self.src.get_image(image_id) is not None:
                result.action, result.outcome = Action.NONE, Outcome.SKIPPED
                result.reason = "missing from the source's listing but the source still has it: left for the next run"
                return
            # A delete is judged on the destination copy as it is now (one read per image), not as
            # the run's first listing showed it, hours ago perhaps.
            fresh = self.config.delete_removed or number > 1
            entry = self.index.get(image_id) if self.index is not None and not fresh else None
            if entry is None:
                full = await self.dst.get_image(image_id)
                if full is None:
                    self.gone.append(image_id)
                    result.outcome = Outcome.DELETED if deleting else Outcome.SKIPPED
                    result.reason = "deleted at the destination" if deleting else "gone from both clouds"
                    return
                entry = Entry.of(full)
            gone = GoneEvidence(listing_complete=True, listed=False, at_source=False)
            why = protection(self.trust, gone, CopyEvidence(row.copy, copy_of(entry)))
            result.reason = "deleted at the source"
            if why is not None and why.whole_record:
                result.action = Action.REMOVE
                result.reason += f"; kept: {why.reason}"
                result.outcome = Outcome.PLANNED if self.config.dry_run else Outcome.REMOVED
                if self.config.delete_removed:
                    self.refused = why.reason
                return
            self.lost.add(image_id)
            if not self.config.delete_removed:
                result.reason += "; kept at the destination (--delete-removed deletes it)"
                if why is not None:
                    result.reason += f", though not this one: {why.reason}"
                result.outcome = Outcome.PLANNED if self.config.dry_run else Outcome.REMOVED
                return
            if why is not None:
                raise DestinationConflict(f"deleted at the source; not deleted: {why.reason}")
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
