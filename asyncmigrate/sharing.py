"""Who one image belongs to at the destination, for a copy: its owner and its members,
through the project map (:mod:`asyncmigrate.identity`).

:class:`Sharing` reads the source's members once per attempt, notes in the image's
result the owner and members it gets at the destination (plan and the report show
them), says *before anything is written* why it cannot get them — members without a
mapping (unless ``--drop-unmapped-members``), projects the destination's Keystone does
not have — and, once the data is in, adds the members the copy lacks (a copy adds and
sets members, never removes any: ``sync`` levels them both ways).
"""

from __future__ import annotations

from typing import Any

from .config import CopyConfig
from .glance import GlanceClient
from .identity import left_out_note, map_members, unknown_projects, unmapped_members_refused
from .report import Action, ImageResult, Outcome

__all__ = ["Sharing", "block"]


def block(result: ImageResult, why: str) -> None:
    """Mark ``result`` blocked for ``why`` (an owner or member it cannot get), before anything is written."""
    result.action, result.outcome, result.reason = Action.BLOCKED, Outcome.BLOCKED, why
    result.traps = [*result.traps, "identity"]


class Sharing:
    """The owner and members of one image being copied (see the module docstring)."""

    def __init__(self, src: GlanceClient, dst: GlanceClient, image_id: str, config: CopyConfig) -> None:
        self.src, self.dst, self.id, self.config = src, dst, image_id, config
        self._members: dict[str, str] | None = None

    def reset(self) -> None:
        """A new attempt: read the source's members afresh."""
        self._members = None

    async def source_members(self) -> dict[str, str]:
        """The source image's members ({project: status}), read once per attempt."""
        if self._members is None:
            self._members = await self.src.member_statuses(self.id)
        return self._members

    async def refused(self, view: dict[str, Any], action: str, result: ImageResult) -> str | None:
        """Note in ``result`` the owner and members the image gets at the destination; why it
        cannot get them, None if it can.  The owner is checked only when ``action`` creates
        the image (an existing one keeps its owner)."""
        result.owner = view.get("owner")
        members: dict[str, str] = {}
        if view.get("visibility") == "shared":
            members, left_out = map_members(self.config.project_map, await self.source_members())
            result.members, result.members_left_out = members, left_out
        refused = unmapped_members_refused(result.members_left_out, drop=self.config.drop_unmapped_members)
        if refused is not None:
            return refused
        owner = [result.owner] if action in (Action.COPY, Action.CREATE) else []
        return await unknown_projects(self.dst.cloud, [*owner, *members])

    async def differ(self, view: dict[str, Any]) -> bool:
        """For a plan: would the copy add or change members?"""
        if view.get("visibility") != "shared":
            return False
        wanted, _ = map_members(self.config.project_map, await self.source_members())
        if not wanted:  # copy adds members, never removes them: nothing to do, no destination request
            return False
        have = await self.dst.member_statuses(self.id)
        return any(have.get(m) != st for m, st in wanted.items())

    async def level(self, result: ImageResult, *, created: bool) -> bool:
        """Add the members the destination image lacks and set their status; True if anything
        changed.  An image this attempt ``created`` has no members yet: nothing to read."""
        wanted, unmapped = map_members(self.config.project_map, await self.source_members())
        if unmapped:
            result.reason = "; ".join(filter(None, [result.reason, left_out_note(unmapped)]))
        if not wanted:
            return False
        have: dict[str, str] = {} if created else await self.dst.member_statuses(self.id)
        changed = False
        for member, status in sorted(wanted.items()):
            if member not in have:
                await self.dst.add_member(self.id, member)
                have[member] = "pending"
                changed = True
            if have[member] != status:
                await self.dst.set_member_status(self.id, member, status)
                changed = True
        return changed
