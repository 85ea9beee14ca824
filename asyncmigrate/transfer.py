"""One image's copy as a state object with step methods.

    judge (pre-flight) → decide → open the source → create → stream (verify on the fly) → check → finish

:func:`decide` is pure: from the source image and what the destination holds
under the same id (an :class:`~asyncmigrate.catalog.Entry` from the run's
destination index, or from one GET), it says what to do.
:class:`ImageTransfer` runs the steps, re-deciding on every attempt from a
fresh read, so a retry (or a re-run after a crash) picks up from the
destination's real state: an image left ``queued`` is uploaded into again —
never deleted, because Glance never lets a deleted id be used again.

What a fresh copy sends the destination: ``POST /v2/images`` (a 409 says the
id exists: only then is it read), ``PUT …/file``, and the one ``GET`` that
proves the recorded size and hash — plus members, ``protected`` and
deactivation only for images that have them.  The source download is opened
(status and length checked, first chunk read) *before* the create, so a source
that fails before its first byte leaves nothing behind at the destination.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .catalog import DestinationIndex, Entry, fingerprint
from .config import CopyConfig
from .containment import planning
from .errors import (
    ClientStatusError,
    ConflictStatus,
    DestinationBusy,
    DestinationConflict,
    Forbidden,
    ImageError,
    VerificationError,
)
from .glance import GlanceClient
from .identity import left_out_note
from .limits import Limits
from .metadata import create_body, differences
from .owned import DestinationProperties
from .preflight import CERTIFICATE_KEY, Judgement, judge
from .progress import BytesMoved, Emit, Retrying, TransferStarted
from .quota import refused_by_quota
from .report import Action, ImageResult, Outcome
from .retry import Budget, run_unit
from .sharing import Sharing
from .stream import verification_of
from .upload import PlainPut, Uploader, stream_data

__all__ = [
    "ImageTransfer",
    "decide",
    "destination_view",
    "same_data",
]

COPYABLE = frozenset({"active", "deactivated", "queued"})
HAS_DATA = frozenset({"active", "deactivated"})
BUSY = frozenset({"saving", "uploading", "importing"})
# decide()'s reason when only fingerprints were compared: the caller reads the
# destination image in full to say which attributes differ.
ATTRIBUTES_DIFFER = "destination differs in its attributes"


def same_data(src: Mapping[str, Any], dst: Mapping[str, Any]) -> bool:
    """Do the two records describe the same bytes (size and every comparable hash)?"""
    return Entry.of(dst).same_data(src)


def destination_view(
    image: dict[str, Any],
    config: CopyConfig,
    property_quota: int | None = None,
    owned: DestinationProperties | None = None,
) -> Judgement:
    """The source image as the destination should hold it: the project map applied
    (owner), then the pre-flight rewrites and traps (:func:`~asyncmigrate.preflight.judge`);
    without the properties the destination sets itself (``owned``: never sent nor compared).

    A view without ``owner`` means the owner is not kept (``--no-owner``, or a
    project map that leaves the image to the caller's project).
    """
    pmap = config.project_map
    view = owned.strip(image) if owned is not None else image
    if not config.keep_owner:
        view = {k: v for k, v in image.items() if k != "owner"}
    elif pmap is not None:
        owner = pmap.owner(image)
        view = {k: v for k, v in image.items() if k != "owner"} if owner is None else {**image, "owner": owner}
    options = config.preflight
    if property_quota is not None and options.property_quota is None:
        options = dataclasses.replace(options, property_quota=property_quota)
    return judge(view, options)


def _keeps_owner(view: Mapping[str, Any]) -> bool:
    # A source image without an owner gets the caller's project at the
    # destination: there is nothing to compare (old tooling makes such images).
    return view.get("owner") is not None


def decide(src: Mapping[str, Any], dst: Entry | Mapping[str, Any] | None) -> tuple[str, str]:
    """What to do with ``src`` (the destination view) given the destination image of the same id.

    The owner is compared when the view has one (:func:`destination_view` drops it
    when it is not kept).  Returns ``(action, reason)``; the reason explains skips
    and conflicts.
    With a full destination record the reason names the attributes that
    differ; with an :class:`Entry` it is :data:`ATTRIBUTES_DIFFER`.
    """
    status = src.get("status")
    if status not in COPYABLE:
        return Action.UNSUPPORTED, f"source image is {status!r}: only active, deactivated and queued images are copied"
    has_data = status in HAS_DATA
    if dst is None:
        return (Action.COPY if has_data else Action.CREATE), ""
    full = dst if isinstance(dst, Mapping) else None
    entry = Entry.of(dst) if isinstance(dst, Mapping) else dst
    if entry.status in BUSY:
        raise DestinationBusy(f"destination image is {entry.status!r}")
    owner_differs = _keeps_owner(src) and src.get("owner") != entry.owner
    formats = (src.get("disk_format"), src.get("container_format"))
    # A converting destination changes the formats, size and hashes on import.
    converted = formats != (entry.disk_format, entry.container_format) and has_data and entry.converted_from(src)
    formats_differ = formats != (entry.disk_format, entry.container_format) and not converted
    if owner_differs or formats_differ or fingerprint(src) != entry.attrs:
        if full is None:
            return Action.CONFLICT, ATTRIBUTES_DIFFER
        diffs = differences(src, full, keep_owner=_keeps_owner(src))
        return Action.CONFLICT, "destination differs in: " + (", ".join(diffs) or "attributes")
    if entry.protected and not src.get("protected"):
        return Action.CONFLICT, "destination is protected, source is not"
    if entry.status == "queued":
        return (Action.UPLOAD if has_data else Action.FINISH), ""
    if entry.status in HAS_DATA:
        if not has_data:
            return Action.CONFLICT, "destination holds data, the source has none"
        if not converted and not entry.same_data(src):
            return Action.CONFLICT, "destination holds other data (size or hash differ)"
        if entry.status == "deactivated" and status == "active":
            return Action.CONFLICT, "destination is deactivated, source is active"
        return Action.FINISH, ""
    return Action.FAIL, f"destination image is {entry.status!r} and cannot be written"


class _Redecide(Exception):
    """The destination changed under us (a create answered 409): decide again from ``image``."""

    def __init__(self, image: dict[str, Any]) -> None:
        super().__init__("redecide")
        self.image = image


class ImageTransfer:
    """Copies one image from ``src`` to ``dst``, keeping its id and attributes.

    ``index`` is the run's destination catalog (None: read the destination
    image by id); it is consulted on the first attempt only — every retry
    reads the destination afresh.  ``uploader`` is the run's way of putting
    bytes in (:mod:`asyncmigrate.upload`; a plain PUT by default).
    """

    def __init__(
        self,
        src: GlanceClient,
        dst: GlanceClient,
        image: dict[str, Any],
        config: CopyConfig,
        emit: Emit,
        limits: Limits | None = None,
        index: DestinationIndex | None = None,
        uploader: Uploader | None = None,
        owned: DestinationProperties | None = None,
    ) -> None:
        self.src = src
        self.uploader = uploader or PlainPut()
        # The properties the destination sets itself: left out of the view and of every
        # destination record compared with it (asyncmigrate/owned.py).
        self.owned = owned if owned is not None else DestinationProperties()
        self.limits = limits or Limits()
        self.dst = dst
        self.image = image
        self.config = config
        self.emit = emit
        self.index = index
        self.id: str = image["id"]
        self.result = ImageResult.of(image, with_left_out=True)
        self._moved = 0  # bytes handed to the destination in this attempt
        self._bad_digests: set[str] = set()
        self._created = False  # this attempt created the destination image (it has no members yet)
        self.seen: Entry | None = None  # the destination's image as last seen (the record notes the copy)
        self.sharing = Sharing(src, dst, self.id, config)  # owner and members at the destination
        # --retry-deadline counts time spent failing; bytes moved and a slot obtained are progress.
        self.budget = Budget(config.retry)

    # -- the unit of work -----------------------------------------------------

    async def run(self) -> ImageResult:
        """Run every step with retries; return the image's result (fatal errors propagate)."""
        await run_unit(self.config.retry, self._attempt, self.result, budget=self.budget)
        return self.result

    async def plan(self, *, members: bool = True) -> ImageResult:
        """Dry run: decide against the destination's state, change nothing.  Without
        ``members`` no member list is read: an image whose data is there is planned
        ``none`` even when its members differ (what a quota pre-flight needs)."""
        result = self.result
        with planning(result):
            judgement = self._judge()
            if judgement.blocking is not None:
                result.action, result.reason = Action.BLOCKED, judgement.blocking.reason
            else:
                dst, full = await self._lookup(fresh=False)
                action, reason = decide(judgement.image, dst)
                if reason == ATTRIBUTES_DIFFER:
                    action, reason = decide(judgement.image, await self._full(full))
                # Owners and members are checked by the plan an operator reads, not the quota's pre-flight.
                keeps = members and action in _KEEPS
                why = await self.sharing.refused(judgement.image, action, result) if keeps else None
                if why is not None and action in _WRITES:
                    action, reason = Action.BLOCKED, why
                elif action == Action.FINISH and dst is not None:
                    action, reason = _finish_plan(
                        judgement.image, dst, members_differ=members and await self.sharing.differ(judgement.image)
                    )
                result.action, result.reason = action, _with_note(reason, left_out_note(result.members_left_out))
        if result.action in (Action.COPY, Action.UPLOAD):
            result.bytes = result.size
        return result

    def _judge(self) -> Judgement:
        judgement = destination_view(self.image, self.config, self.limits.property_quota, self.owned)
        self.result.traps, self.result.warnings = judgement.kinds, judgement.warnings
        self.result.stripped = list(judgement.stripped)
        return judgement

    async def _lookup(self, *, fresh: bool) -> tuple[Entry | None, dict[str, Any] | None]:
        """The destination's image: from the index on a first attempt, else one GET."""
        if self.index is not None and not fresh:
            self.seen = self.index.get(self.id)
            return self.seen, None
        full = await self._read()
        self.seen = None if full is None else Entry.of(full)
        return self.seen, full

    async def _full(self, full: dict[str, Any] | None) -> dict[str, Any] | None:
        return full if full is not None else await self._read()

    async def _read(self) -> dict[str, Any] | None:
        """The destination image as compared: without the properties it sets itself."""
        full = await self.dst.get_image(self.id)
        return None if full is None else self.owned.strip(full)

    async def _attempt(self, number: int) -> None:
        self.result.attempts = number
        self.sharing.reset()
        if number > 1:
            self.emit(Retrying(self.id, number, self._moved, self.result.reason, self.budget.last_failure))
            self._moved = 0
            fresh = await self.src.get_image(self.id)
            if fresh is None:
                raise ImageError("image disappeared from the source")
            self.image = fresh
        judgement = self._judge()
        if judgement.blocking is not None:
            self.result.action, self.result.reason = Action.BLOCKED, judgement.blocking.reason
            self.result.outcome = Outcome.BLOCKED
            return
        entry, full = await self._lookup(fresh=number > 1)
        for _ in range(3):  # a create that races with another writer decides again
            try:
                await self._decided(judgement.image, entry, full)
                return
            except _Redecide as again:
                full = again.image
                entry = self.seen = Entry.of(full)
        raise ImageError("the destination image kept changing while it was being written")

    async def _decided(self, view: dict[str, Any], entry: Entry | None, full: dict[str, Any] | None) -> None:
        keep_owner = _keeps_owner(view)
        if entry is not None and entry.status == "uploading":
            full = await self._full(full)
            if full is not None and self.uploader.staged(full):
                # Staged by an earlier attempt whose import never started: import it now.
                self.result.action, self.result.reason = Action.UPLOAD, "staged data imported"
                completed = await self.uploader.complete(self.dst, self.id, store=self.config.dst_store)
                await self._finish(view, Entry.of(await self._check(view, completed)))
                self.result.outcome = Outcome.COPIED
                return
        action, reason = decide(view, entry)
        if reason == ATTRIBUTES_DIFFER:
            full = await self._full(full)
            action, reason = decide(view, full)
        self.result.action, self.result.reason = action, reason
        self._created = False
        if action == Action.UNSUPPORTED:
            self.result.outcome = Outcome.SKIPPED
            return
        if action == Action.CONFLICT:
            raise DestinationConflict(reason)
        if action == Action.FAIL:
            raise ImageError(reason)
        why = await self.sharing.refused(view, action, self.result)
        if why is not None and action in _WRITES:  # caught before anything is written
            self.result.action, self.result.outcome, self.result.reason = Action.BLOCKED, Outcome.BLOCKED, why
            self.result.traps = [*self.result.traps, "identity"]
            return
        if action == Action.CREATE:
            await self._create(view, keep_owner, may_upload=False)
            entry = None
        elif action in (Action.COPY, Action.UPLOAD):
            await self._stream(view, keep_owner, create=action == Action.COPY)
            completed = await self.uploader.complete(self.dst, self.id, store=self.config.dst_store)
            entry = Entry.of(await self._check(view, completed))
        elif entry is not None and entry.converted_from(view):
            self._note_conversion(view, entry)
        assert entry is not None or self._created
        changed = await self._finish(view, entry)
        if action in (Action.COPY, Action.UPLOAD):
            self.result.outcome = Outcome.COPIED
        elif action == Action.CREATE:
            self.result.outcome = Outcome.CREATED
        elif changed:
            self.result.outcome = Outcome.FINISHED
        else:
            self.result.outcome = Outcome.SKIPPED
            self.result.action = Action.NONE
            self.result.reason = _with_note("already at the destination", left_out_note(self.result.members_left_out))

    # -- steps ------------------------------------------------------------------

    async def _create(self, view: dict[str, Any], keep_owner: bool, *, may_upload: bool) -> None:
        """Create the destination image with the same id and attributes.

        A 409 means the id exists (another run, a race) or belonged to a
        deleted image: read it; go on uploading into it when it is the same
        image still ``queued`` (``may_upload``), else decide again.
        """
        body = create_body(view, keep_owner=keep_owner)
        try:
            self.seen = Entry.of(await self.dst.create_image(body))
        except ClientStatusError as exc:
            raise _refused(exc, self.limits) from exc
        except Forbidden as exc:
            raise ImageError(
                f"the destination refuses an attribute of this image (403, policy or property "
                f"protection): {exc.detail or exc}"
            ) from exc
        except ConflictStatus as exc:
            existing = await self._read()
            if existing is None:
                raise ImageError(
                    f"the destination refuses id {self.id}: it belonged to a deleted image, "
                    "and Glance never reuses a deleted image's id"
                ) from exc
            self.seen = Entry.of(existing)
            action, _ = decide(view, existing)
            if may_upload and action == Action.UPLOAD:
                return
            raise _Redecide(existing) from exc
        self._created = True

    async def _stream(self, view: dict[str, Any], keep_owner: bool, *, create: bool) -> None:
        """Open the source, create the image (COPY), stream the data in, verifying on the fly."""
        try:
            await self._stream_verified(view, keep_owner, create=create)
        except ClientStatusError as exc:
            quota = refused_by_quota(exc.detail or "", "upload") if exc.status == 413 else None
            if quota is not None:
                raise ImageError(f"{quota} (the image stays queued and a re-run uploads into it)") from exc
            if "Signature verification failed" not in (exc.detail or ""):
                raise
            certificate = view.get(CERTIFICATE_KEY)
            raise ImageError(
                f"the destination checked the image's signature against certificate {certificate} in its key "
                f"manager and refused it ({exc.detail}); re-create that certificate there (--certificate-map maps "
                "the source's id to it) or copy with --strip-signature; the image stays queued and a re-run "
                "uploads into it"
            ) from exc

    async def _stream_verified(self, view: dict[str, Any], keep_owner: bool, *, create: bool) -> None:
        async with self.limits.upload_slot():
            self.budget.progress()  # waiting for a slot is not failing
            hashed = await stream_data(
                self.src,
                self.dst,
                self.image,
                dest_id=self.id,
                store=self.config.dst_store,
                verify=self.config.verify,
                on_started=lambda: self.emit(TransferStarted(self.id, self.image.get("name"), self.result.size)),
                on_bytes=self._on_bytes,
                bad_digests=self._bad_digests,
                throttle=self.limits.throttle,
                before_upload=(lambda: self._create(view, keep_owner, may_upload=True)) if create else None,
                uploader=self.uploader,
            )
        self.result.verification = verification_of(self.image, hashed)

    def _on_bytes(self, n: int) -> None:
        self.budget.progress()
        self._moved += n
        self.result.bytes = self._moved
        self.emit(BytesMoved(self.id, n))

    async def _check(self, view: dict[str, Any], image: dict[str, Any] | None) -> dict[str, Any]:
        """After upload: the destination must record the source's size and hashes
        (or, when it converted the data on import, the conversion of it)."""
        dst = image if image is not None else await self.dst.get_image(self.id)
        if dst is None:
            raise ImageError("destination image vanished after upload")
        added = self.owned.learn(create_body(view, keep_owner=True), dst)
        if added:  # an import plugin's (inject_image_metadata): the destination's, left alone
            self.result.reason = f"the destination set properties of its own: {', '.join(added)} (left alone)"
        dst = self.owned.strip(dst)
        entry = self.seen = Entry.of(dst)
        converted = entry.converted_from(view)
        if dst.get("status") != "active" or not (converted or entry.same_data(self.image)):
            raise VerificationError(
                f"destination recorded status={dst.get('status')} size={dst.get('size')} "
                f"checksum={dst.get('checksum')}; source size={self.image.get('size')} "
                f"checksum={self.image.get('checksum')}"
            )
        if converted:
            self._note_conversion(view, entry)
        return dst

    def _note_conversion(self, view: dict[str, Any], entry: Entry) -> None:
        self.result.converted = {"from": view.get("disk_format"), "to": entry.disk_format, "size": entry.size}

    async def _finish(self, view: dict[str, Any], dst: Entry | None) -> bool:
        """Members, then ``protected``, then deactivation; True if anything changed.

        ``dst`` is None for an image this attempt created without data (queued,
        unprotected, no members).
        """
        changed = False
        if view.get("visibility") == "shared":
            changed |= await self.sharing.level(self.result, created=self._created)
        if view.get("protected") and not (dst is not None and dst.protected):
            await self.dst.patch_image(self.id, [{"op": "replace", "path": "/protected", "value": True}])
            changed = True
        if view.get("status") == "deactivated" and dst is not None and dst.status == "active":
            await self.dst.deactivate(self.id)
            changed = True
        return changed


_QUOTA = re.compile(r"Maximum:\s*(\d+)")
_WRITES = frozenset({Action.COPY, Action.CREATE, Action.UPLOAD, Action.FINISH})  # actions that write
_KEEPS = _WRITES | {Action.NONE}  # the image is (or will be) at the destination: its owner and members count


def _with_note(reason: str, note: str) -> str:
    return "; ".join(filter(None, [reason, note]))


def _refused(exc: ClientStatusError, limits: Limits) -> ImageError:
    """A create refused with a 4xx: name the cause; a 413 teaches the property quota."""
    quota = refused_by_quota(exc.detail or "", "create") if exc.status == 413 else None
    if quota is not None:
        return ImageError(quota)
    if exc.status == 413:
        match = _QUOTA.search(exc.detail or "")
        if match:
            limits.property_quota = int(match[1])
        quota = f" (it allows {match[1]})" if match else ""
        return ImageError(
            f"the destination refuses this image's custom properties: more than its image_property_quota{quota}; "
            f"raise the quota there or drop properties at the source ({exc.detail})"
        )
    return ImageError(f"the destination refuses to create this image (HTTP {exc.status}): {exc.detail or exc}")


def _finish_plan(src: dict[str, Any], dst: Entry, *, members_differ: bool) -> tuple[str, str]:
    """For a dry run: which finishing steps remain for an image whose data is there."""
    steps = ["sync members"] if members_differ else []
    if src.get("protected") and not dst.protected:
        steps.append("set protected")
    if src.get("status") == "deactivated" and dst.status == "active":
        steps.append("deactivate")
    if not steps:
        return Action.NONE, "already at the destination"
    return Action.FINISH, "data is there; " + ", ".join(steps)
