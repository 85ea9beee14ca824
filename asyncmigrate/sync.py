"""``asyncmigrate sync``: keep the destination level with the source until the cut-over.

For every selected source image, decided from the destination's catalog read
once (:func:`~asyncmigrate.catalog.load_index`):

* **not at the destination** → copied exactly as ``copy`` does
  (:class:`~asyncmigrate.transfer.ImageTransfer`);
* **at both ends, level** (its listing entry agrees: attributes fingerprint,
  owner, formats, ``protected``, status, size and hashes) → nothing is sent;
  only a shared image's members are read, on both sides;
* **at both ends, drifted** → the destination image is read in full and
  levelled with the fewest requests (:mod:`asyncmigrate.drift`): deactivate,
  one JSON-patch, members, reactivate; a destination left ``queued`` is then
  uploaded into by ``ImageTransfer``.  Other data or other formats on an
  image with data are a **conflict**: reported, never overwritten.

Then the **removed** images (:class:`~asyncmigrate.removal.Removal`): the
images of this pair's record that the source no longer lists, within the
selection — reported, or deleted with ``delete_removed`` — judged only after
a complete source listing.

Every attempt re-reads both sides, so a re-run (after a crash, a Ctrl-C)
continues from the real state, and a second sync sends nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from .catalog import DestinationIndex, Entry, list_images
from .clouds import Cloud
from .config import SyncConfig
from .containment import Listing, planning
from .drift import Drift, compute_drift, describe, is_level, member_delta
from .engine import (
    QuotaTally,
    at_destination,
    destination_owned,
    fit_quota,
    journaled,
    keep_owned,
    pair_record,
    rechecked,
    run_pool,
    start_run,
)
from .errors import DestinationBusy, DestinationConflict, ImageError, NotFound
from .glance import GlanceClient, client_options, open_glance
from .identity import left_out_note, map_members, unknown_projects, unmapped_members_refused
from .integrity import recognised
from .limits import Limits
from .owned import DestinationProperties
from .progress import Emit, Retrying, ignore
from .recheck import unconfirmed
from .removal import Removal
from .report import Action, ImageResult, Outcome, RunResult
from .retry import Budget, run_unit
from .selection import select
from .sharing import block
from .staged import STAGING
from .transfer import BUSY, COPYABLE, ImageTransfer, destination_view
from .upload import Uploader

__all__ = ["ImageSync", "sync_images"]

WRITABLE = frozenset({"queued", "active", "deactivated"})


@dataclasses.dataclass
class _Assessment:
    """What one image needs, read from both sides (nothing sent yet)."""

    entry: Entry | None  # the destination's image; None: not there
    drift: Drift = dataclasses.field(default_factory=Drift)
    members: tuple[dict[str, str], dict[str, str]] | None = None  # (destination, wanted) when they differ


def _with_note(reason: str, note: str) -> str:
    return "; ".join(filter(None, [reason, note]))


def _uploads(view: dict[str, Any], entry: Entry) -> bool:
    """Does the destination wait for data the source has (a copy left queued, or a source image
    uploaded since)?  Then ImageTransfer uploads into it once the attributes are levelled."""
    return entry.status == "queued" and view.get("status") in ("active", "deactivated")


class ImageSync:
    """Levels one source image at the destination (see the module docstring)."""

    def __init__(
        self,
        src: GlanceClient,
        dst: GlanceClient,
        image: dict[str, Any],
        config: SyncConfig,
        emit: Emit,
        limits: Limits,
        index: DestinationIndex | None,
        uploader: Uploader | None = None,
        owned: DestinationProperties | None = None,
    ) -> None:
        self.src, self.dst, self.image, self.config = src, dst, image, config
        self.emit, self.limits, self.index, self.uploader = emit, limits, index, uploader
        # The destination's own properties: neither drift nor conflict (asyncmigrate/owned.py).
        self.owned = owned if owned is not None else DestinationProperties()
        self.id: str = image["id"]
        self.result = ImageResult.of(image, with_left_out=True)
        self._hand_over = False  # ImageTransfer copies or uploads after this sync's own steps
        self._staged = False  # the destination was between stage and import: level it once imported
        self._transfers: list[ImageTransfer] = []
        self.seen: Entry | None = None  # the destination's image as last seen (the record notes the copy)
        self.budget = Budget(config.retry)  # its own, so a retry's event can say why (Budget.last_failure)

    def _transfer(self, index: DestinationIndex | None) -> ImageTransfer:
        transfer = ImageTransfer(
            self.src, self.dst, self.image, self.config, self.emit, self.limits, index, self.uploader, self.owned
        )
        self._transfers.append(transfer)
        return transfer

    @property
    def last_seen(self) -> Entry | None:
        """The destination's image as this sync (or the copy it handed over to) last saw it."""
        for transfer in reversed(self._transfers):
            if transfer.seen is not None:
                return transfer.seen
        return self.seen

    async def run(self) -> ImageResult:
        """Level the image (retrying transient errors); fatal errors propagate."""
        if self.index is not None and self.id not in self.index:
            return await self._transfer(self.index).run()  # missing: exactly as copy
        await run_unit(self.config.retry, self._attempt, self.result, budget=self.budget)
        if not self._hand_over:
            return self.result
        done = await self._transfer(None).run()
        if self._staged and done.outcome == Outcome.COPIED:
            return await self._level_imported(done)
        if self.result.changes:
            done.changes = self.result.changes
            done.reason = "; ".join(filter(None, [describe(self._changes()), done.reason]))
        return done

    async def _level_imported(self, done: ImageResult) -> ImageResult:
        """An image imported only now (it was left between stage and import): level the
        attributes that drifted meanwhile, read afresh."""
        self.index, self.result = None, ImageResult.of(self.image, with_left_out=True)
        await run_unit(self.config.retry, self._attempt, self.result)
        if self.result.outcome not in (Outcome.UPDATED, Outcome.SKIPPED):
            return self.result  # the levelling failed: that is what the image needs next
        if self.result.outcome == Outcome.UPDATED:
            done.changes = self.result.changes
            done.reason = "; ".join(filter(None, [done.reason, self.result.reason]))
        return done

    async def plan(self, *, members: bool = True) -> ImageResult:
        """Dry run: what would be sent, from what to what; nothing is written (without
        ``members``, no member list is read: their drift is not planned)."""
        if self.index is not None and self.id not in self.index:
            return await self._transfer(self.index).plan(members=members)
        result = self.result
        with planning(result):
            view = self._view()
            if view is not None:
                found = await self._assess(view, fresh=False, members=members)
                if found.entry is None:
                    return await self._transfer(None).plan(members=members)
                # Owners and members are checked by the plan an operator reads, not the quota's pre-flight.
                why = None if found.drift.conflict or not members else await self._refused(view, found)
                if why is not None:
                    result.action, result.reason = Action.BLOCKED, why
                else:
                    self._judge_plan(view, found)
        return result

    def _judge_plan(self, view: dict[str, Any], found: _Assessment) -> None:
        result = self.result
        if found.drift.conflict:
            result.action, result.reason = Action.CONFLICT, found.drift.conflict
            return
        self._note(found)
        assert found.entry is not None
        if found.entry.status in STAGING:
            result.action, result.reason = Action.UPLOAD, f"destination is {found.entry.status!r}: finish its import"
        elif _uploads(view, found.entry):
            result.action, result.bytes = Action.UPLOAD, result.size
            result.reason = "; ".join(filter(None, [describe(self._changes()), "then upload the data"]))
        elif result.changes:
            result.action, result.reason = Action.UPDATE, _with_note(describe(self._changes()), self._left_out_note())
        else:
            result.action, result.reason = Action.NONE, _with_note("already level", self._left_out_note())

    # -- one attempt ------------------------------------------------------------

    def _view(self) -> dict[str, Any] | None:
        """The destination view, or None when the image is not to be synced (result says why)."""
        judgement = destination_view(self.image, self.config, self.limits.property_quota, self.owned)
        self.result.traps, self.result.stripped = judgement.kinds, list(judgement.stripped)
        self.result.warnings = judgement.warnings
        if judgement.blocking is not None:
            self.result.action, self.result.reason = Action.BLOCKED, judgement.blocking.reason
            self.result.outcome = Outcome.BLOCKED
            return None
        status = judgement.image.get("status")
        if status not in COPYABLE:
            self.result.action = Action.UNSUPPORTED
            self.result.reason = f"source image is {status!r}: only active, deactivated and queued images are synced"
            self.result.outcome = Outcome.SKIPPED
            return None
        return judgement.image

    async def _assess(self, view: dict[str, Any], *, fresh: bool, members: bool = True) -> _Assessment:
        full: dict[str, Any] | None = None
        entry = None if self.index is None or fresh else self.index.get(self.id)
        if entry is None:
            full = await self._read()
            if full is None:
                return _Assessment(None)
            entry = Entry.of(full)
        self.seen = entry
        if entry.status in STAGING and view.get("status") in ("active", "deactivated"):
            return _Assessment(entry)  # left between stage and import: ImageTransfer finishes it
        if entry.status in BUSY:
            raise DestinationBusy(f"destination image is {entry.status!r}")
        if entry.status not in WRITABLE:
            raise ImageError(f"destination image is {entry.status!r} and cannot be written")
        drift = Drift()
        if not is_level(view, entry):
            full = full if full is not None else await self._read()
            if full is None:
                return _Assessment(None)
            if (bad := recognised(full)) is not None:
                raise bad  # a bad copy an earlier run deactivated: never "levelled" (reactivated)
            drift = compute_drift(view, full)
        wanted = None
        if members and view.get("visibility") == "shared" and not drift.conflict and not _uploads(view, entry):
            # Glance lists members of shared images only (403 otherwise): a copy that
            # becomes shared by this sync's PATCH has none to read yet.
            wanted = await self._member_state(listable=entry.visibility == "shared")
        return _Assessment(entry, drift, wanted)

    async def _read(self) -> dict[str, Any] | None:
        """The destination image as compared: without the properties it sets itself."""
        full = await self.dst.get_image(self.id)
        return None if full is None else self.owned.strip(full)

    async def _member_state(self, *, listable: bool = True) -> tuple[dict[str, str], dict[str, str]] | None:
        """(destination members, wanted members) of a shared image, None when they agree."""
        listed = await self.src.member_statuses(self.id)
        wanted, unmapped = map_members(self.config.project_map, listed)
        self.result.members, self.result.members_left_out = wanted, unmapped
        have: dict[str, str] = {}
        if listable:
            have = await self.dst.member_statuses(self.id)
        return None if member_delta(wanted, have).empty else (have, wanted)

    async def _refused(self, view: dict[str, Any], found: _Assessment) -> str | None:
        """Note the owner and members the image gets; why its drift cannot be applied (members
        without a mapping, projects the destination's Keystone lacks), None if it can."""
        self.result.owner = view.get("owner")
        refused = unmapped_members_refused(self.result.members_left_out, drop=self.config.drop_unmapped_members)
        if refused is not None:
            return refused
        owner = [op.get("value") for op in found.drift.ops if op.get("path") == "/owner"]
        added = list(member_delta(found.members[1], found.members[0]).add) if found.members else []
        return await unknown_projects(self.dst.cloud, [*owner, *added])

    def _left_out_note(self) -> str:
        return left_out_note(self.result.members_left_out)

    def _note(self, found: _Assessment) -> None:
        changes: dict[str, Any] = {k: [a, b] for k, (a, b) in found.drift.changes.items()}
        if found.members is not None:
            changes["members"] = list(found.members)
        self.result.changes = changes

    def _changes(self) -> dict[str, tuple[Any, Any]]:
        return {k: (v[0], v[1]) for k, v in self.result.changes.items()}

    async def _attempt(self, number: int) -> None:
        result = self.result
        result.attempts = number
        self._hand_over = False
        if number > 1:
            self.emit(Retrying(self.id, number, 0, result.reason, self.budget.last_failure))
            result.reason, result.changes = "", {}
            fresh = await self.src.get_image(self.id)
            if fresh is None:
                raise ImageError("image disappeared from the source")
            self.image = fresh
        view = self._view()
        if view is None:
            return
        found = await self._assess(view, fresh=number > 1)
        if found.entry is None:  # not at the destination (named ids, or deleted since the listing)
            self._hand_over = True
            return
        if found.entry.status in STAGING:
            self._hand_over = self._staged = True
            return
        if found.drift.conflict:
            result.action = Action.CONFLICT
            raise DestinationConflict(found.drift.conflict)
        why = await self._refused(view, found)
        if why is not None:  # caught before anything is written
            block(result, why)
            return
        self._note(found)
        drift = found.drift
        if _uploads(view, found.entry):
            # The copy sets `protected` once the data is in; everything else first.
            ops = [op for op in drift.ops if not (op["path"] == "/protected" and op.get("value"))]
            if ops:
                await self.dst.patch_image(self.id, ops)
            self._hand_over = True
            return
        # Tighten first, loosen last: users never see the copy more open than the source.
        if drift.status == "deactivate":
            await self.dst.deactivate(self.id)
        if drift.ops:
            await self.dst.patch_image(self.id, list(drift.ops))
        members = found.members
        if "visibility" in drift.changes and view.get("visibility") == "shared":
            # Shared only now: its members (some perhaps left from an earlier sharing) can be read.
            members = await self._member_state()
            self._note(dataclasses.replace(found, members=members))
        if members is not None:
            await self._level_members(*members)
        if drift.status == "reactivate":
            await self.dst.reactivate(self.id)
        if result.changes:
            result.action, result.outcome = Action.UPDATE, Outcome.UPDATED
            result.reason = _with_note(describe(self._changes()), self._left_out_note())
        else:
            result.action, result.outcome = Action.NONE, Outcome.SKIPPED
            result.reason = _with_note("already level", self._left_out_note())

    async def _level_members(self, have: dict[str, str], wanted: dict[str, str]) -> None:
        delta = member_delta(wanted, have)
        for member in delta.remove:
            with contextlib.suppress(NotFound):  # already gone: a retry after a lost answer
                await self.dst.remove_member(self.id, member)
        for member, status in sorted({**delta.add, **delta.status}.items()):
            if member in delta.add:
                await self.dst.add_member(self.id, member)
            if status != "pending" or member in delta.status:
                await self.dst.set_member_status(self.id, member, status)


class _Listed:
    """The source listing passed through, remembering every id and whether it was read to the end."""

    def __init__(self, images: AsyncIterator[dict[str, Any]]) -> None:
        self._images = images
        self.ids: set[str] = set()  # about 100 bytes per source image
        self.named_missing: list[str] = []  # --image ids the source does not have
        self.complete = False

    async def each(self) -> AsyncIterator[dict[str, Any]]:
        """Every listed image, in listing order."""
        async for image in self._images:
            if image.get("status") == "missing":
                self.named_missing.append(image["id"])
            else:
                self.ids.add(image["id"])
            yield image
        self.complete = True


async def _each(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


async def sync_images(
    config: SyncConfig,
    src_cloud: Cloud,
    dst_cloud: Cloud,
    *,
    emit: Emit = ignore,
    stop: anyio.Event | None = None,
) -> RunResult:
    """Level the destination with the source (see the module docstring).

    Per-image failures and conflicts are recorded, never raised; fatal errors
    stop the run.  Setting ``stop`` ends the run after the images in flight,
    and removed images are then not judged (the listing was not complete).
    """
    started = time.monotonic()
    refused: str | None = None
    journal_path = None if config.dry_run else config.journal
    async with (
        open_glance(src_cloud, **client_options(config), role="source", emit=emit) as src,
        open_glance(dst_cloud, **client_options(config), role="destination", emit=emit) as dst,
        journaled(journal_path, "sync", emit, stop) as journal,
    ):
        run = await start_run(config, src, dst, emit, await destination_owned(config, journal, dst_cloud.endpoint))
        config = run.judged(config)  # the flags plus where the data goes (pre-flight judges by it)
        record = await pair_record(config, journal, src, dst_cloud)
        index = run.index
        tally = QuotaTally(config, run)

        async def plan(image: dict[str, Any]) -> ImageResult:
            # Members use no quota: the pre-flight reads none.
            one = ImageSync(src, dst, image, config, emit, run.limits, index, run.uploader, run.owned)
            return await one.plan(members=False)

        verdict = None
        if not config.dry_run:
            each = select(list_images(src, run.src_caps, config.image_ids), config.selection)
            verdict = await fit_quota(config, run, each, plan, "sync")
        listed = _Listed(list_images(src, run.src_caps, config.image_ids))
        # A listing that fails part-way ends the intake (the images in flight finish), and
        # leaves removed images unjudged: listed.complete stays False.
        listing = Listing(select(listed.each(), config.selection), "source listing", emit)

        async def handle(image: dict[str, Any], index: DestinationIndex | None = index) -> ImageResult:
            one = ImageSync(src, dst, image, config, emit, run.limits, index, run.uploader, run.owned)
            if config.dry_run:
                planned = await one.plan()
                tally.add(image, planned)
                return planned
            result = await one.run()
            await keep_owned(journal, run.owned, dst_cloud.endpoint)
            if record is not None and at_destination(result, index):
                await record.remember(image, one.last_seen or (index.get(image["id"]) if index else None))
            return result

        kw: dict[str, Any] = {"concurrency": config.concurrency, "emit": emit, "stop": stop, "journal": journal}
        kw |= {"window": config.window, "since": started}
        results = await run_pool(listing, handle, **kw)
        stopped = stop is not None and stop.is_set()
        cut = not listing.drained(len(results))  # a stop cut the images short
        removals = None
        # A closed window judges no removed image: that would be new work (window.py).
        if listed.complete and not stopped and listing.closed is None and record is not None:
            rows = await record.rows()
            removal = Removal(src, dst, config, index, rows, prior_live=record.prior_live, confirmed=record.confirmed)
            found = removal.candidates(listed.ids, listed.named_missing)
            if found:
                ids = {c["id"] for c in found}
                removals = Listing(_each(found), "removed images", emit)
                judged = await run_pool(removals, removal.handle, **kw)
                cut |= not removals.drained(len(judged))
                results = [r for r in results if r.id not in ids] + judged
            refused = removal.refused
            await record.forget(removal.gone)
            await record.mark_gone(sorted(removal.lost - set(removal.gone)))
        elif listed.complete and record is not None:
            cut = True  # stopped before the removed images were judged
        # A signal that came after the last image (and the removed ones) changed nothing.
        interrupted = stop is not None and stop.is_set() and cut
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
        incomplete="; ".join(filter(None, [_incomplete(listing, removals), check.incomplete if check else None]))
        or None,
        refused=refused,
        clouds=run.clouds(),
        quota=None if verdict is None else verdict.describe(),
        notes=list(run.notes),
    )


def _incomplete(listing: Listing, removals: Listing | None) -> str | None:
    """Why the sync is not complete: its listing, its window (closed before the removed
    images were judged), or its window closed while removing."""
    if listing.incomplete is not None:
        return listing.incomplete
    if listing.closed is not None:
        return f"{listing.closed}: the images the source no longer has were not judged"
    return None if removals is None else removals.incomplete
