"""Facts read at the start of a run, checked again at its end.

``copy`` and ``sync`` decide from the destination's catalog, read once before the first image
(:class:`~asyncmigrate.catalog.DestinationIndex`).  An image found there already is not read
again in that run, so in a long run "already at the destination" can be hours old by the time
the report states it: the image may have been deleted there meanwhile (by a person, another
shard, another tool), or changed.  So once the images are done, the destination is listed
again — the same pages as at the start, never a request per image — and every result that
rests on the first read alone (skipped as already there or level, a conflict, a removed image
kept) is judged again:

* its listing entry is unchanged: the result stands;
* it is gone (one ``GET`` confirms it): the image is reported ``failed``, deleted at the
  destination during the run — Glance never reuses a deleted id, so it cannot be copied there
  again under its id — and dropped from the pair's record (a removed image gone too is
  "gone from both clouds");
* it changed: it is handled again from fresh reads, as a re-run would.

A listing that fails at the end leaves those results unconfirmed: the run ends incomplete
(exit 4), as after a listing that failed part-way.  A run cut short (a closed window, a stop
before its last image) checks nothing more — listing again would be new work after the door
closed — and says so instead in each such result (:func:`unconfirmed`): the fact is the one read
when the run began, not checked again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .catalog import DestinationIndex, Entry, list_images
from .containment import Listing
from .progress import Emit, ImageRejudged
from .report import Action, ImageResult, Outcome

if TYPE_CHECKING:
    from .capabilities import Capabilities
    from .glance import GlanceClient

__all__ = ["UNCHECKED", "Recheck", "each", "resting_on_first_read", "unconfirmed"]

# Handles images again from fresh reads (their source records read anew), by id; an image the
# source no longer has has no result there, and its first result stands.
Again = Callable[[list[str]], Awaitable[list[ImageResult]]]


UNCHECKED = (
    "as the destination showed it when this run began, not checked again: the run was cut short "
    "(the next run reads it afresh)"
)


def unconfirmed(results: list[ImageResult], first: DestinationIndex) -> list[ImageResult]:
    """``results`` of a run cut short, each one resting on the first read saying so (:data:`UNCHECKED`)."""
    return [
        dataclasses.replace(r, reason="; ".join(filter(None, [r.reason, UNCHECKED])))
        if r.id in first and resting_on_first_read(r)
        else r
        for r in results
    ]


def resting_on_first_read(result: ImageResult) -> bool:
    """Does the result state a destination fact taken from the catalog read at the start?"""
    if result.outcome == Outcome.SKIPPED:
        return result.action == Action.NONE
    return result.outcome in (Outcome.CONFLICT, Outcome.QUARANTINED, Outcome.REMOVED)


@dataclasses.dataclass
class Recheck:
    """The end-of-run check of one run (see the module docstring)."""

    dst: GlanceClient
    caps: Capabilities
    first: DestinationIndex
    emit: Emit
    # What the first read took out of each record before it was compared (the destination's own properties).
    strip: Callable[[dict[str, Any]], dict[str, Any]] = lambda image: image
    gone: list[str] = dataclasses.field(default_factory=list)  # deleted at the destination meanwhile
    incomplete: str | None = None  # why the end's listing could not confirm them

    async def rejudge(self, results: list[ImageResult], again: Again) -> list[ImageResult]:
        """``results`` with the stale ones judged again (the others as they were)."""
        suspects = {r.id: r for r in results if r.id in self.first and resting_on_first_read(r)}
        if not suspects:
            return results
        now = await self._relist(suspects)
        if now is None:
            return results
        changed: dict[str, ImageResult] = {}
        redo: list[str] = []
        for image_id, result in suspects.items():
            entry = now.get(image_id)
            if entry == self.first.get(image_id):
                continue
            if entry is None and await self.dst.get_image(image_id) is None:
                self.gone.append(image_id)
                changed[image_id] = _deleted_meanwhile(result)
            elif result.outcome != Outcome.REMOVED:  # a removed image still there is still removed
                redo.append(image_id)
        if redo:
            changed.update((r.id, r) for r in await again(redo))
        for image_id, result in changed.items():
            self.emit(ImageRejudged(result, suspects[image_id].outcome))
        return [changed.get(r.id, r) for r in results]

    async def _relist(self, suspects: Mapping[str, ImageResult]) -> dict[str, Entry] | None:
        """The suspects' entries in a second listing (only theirs are kept); None if it failed."""
        # No second round for images updated meanwhile: one missed (un-hidden between the passes)
        # is confirmed by id before it is called gone, and then handled again.
        images = list_images(self.dst, self.caps, recheck=False)
        listing = Listing(images, "destination listing at the end of the run", self.emit)
        entries: dict[str, Entry] = {}
        async for image in listing:
            if image["id"] in suspects:
                entries[str(image["id"])] = Entry.of(self.strip(image))
        if listing.incomplete is not None:
            self.incomplete = (
                f"{listing.incomplete}: images found at the destination when the run began are not confirmed"
            )
            return None
        return entries


def _deleted_meanwhile(result: ImageResult) -> ImageResult:
    if result.outcome == Outcome.REMOVED:
        return dataclasses.replace(result, outcome=Outcome.SKIPPED, reason="gone from both clouds")
    was = result.reason or result.outcome
    return dataclasses.replace(
        result,
        action=Action.FAIL,
        outcome=Outcome.FAILED,
        reason=(
            f"deleted at the destination during this run (when the run read its catalog: {was}); Glance "
            "never reuses a deleted image's id, so this image cannot be copied there again under its id"
        ),
    )


async def each(ids: list[str]) -> AsyncIterator[dict[str, Any]]:
    """Stubs ``{"id": …}`` for a pool that handles the images again by id."""
    for image_id in ids:
        yield {"id": image_id}
