"""One image's copy as a state object with step methods.

    judge (pre-flight) → decide → open the source → create → stream (verify on the fly) → check → finish

:func:`~asyncmigrate.decision.decide` is pure: from the source image and what the
destination holds under the same id (an :class:`~asyncmigrate.catalog.Entry` from
the run's destination index, or from one GET), it says what to do.
:class:`ImageTransfer` runs the steps, re-deciding on every attempt from a
fresh read, so a retry (or a re-run after a crash) picks up from the
destination's real state: an image left ``queued`` is uploaded into again —
never deleted, because Glance never lets a deleted id be used again; one left
between stage and import is imported (:mod:`asyncmigrate.staged`); data an
earlier attempt sent is proved before anything else (a lost answer must not
turn a copy into "already there").  After the commit the destination's record
is proved against the source's, and a copy whose bytes differ is quarantined
(:mod:`asyncmigrate.integrity`).

What a fresh copy sends the destination: ``POST /v2/images`` (a 409 says the
id exists: only then is it read), ``PUT …/file``, and the one ``GET`` that
proves the recorded size and hash — plus members, ``protected`` and
deactivation only for images that have them.  The source download is opened
(status and length checked, first chunk read) *before* the create, so a source
that fails before its first byte leaves nothing behind at the destination.
"""

from __future__ import annotations

import re
from typing import Any

from .catalog import DestinationIndex, Entry
from .config import CopyConfig
from .containment import planning
from .decision import (
    ATTRIBUTES_DIFFER,
    BUSY,
    COPYABLE,
    HAS_DATA,
    decide,
    destination_view,
    finish_plan,
    keeps_owner,
    same_data,
)
from .errors import (
    ClientStatusError,
    ConflictStatus,
    DestinationConflict,
    Forbidden,
    ImageError,
    VerificationError,
)
from .glance import GlanceClient
from .identity import left_out_note
from .integrity import Hashed, prove, recognised, stream_check
from .limits import Limits
from .metadata import create_body
from .owned import DestinationProperties
from .preflight import CERTIFICATE_KEY, Judgement
from .progress import BytesMoved, Emit, Retrying, TransferStarted
from .quota import refused_by_quota
from .report import Action, ImageResult, Outcome
from .retry import Budget, run_unit
from .sharing import Sharing, block
from .staged import STAGING, finish, pending
from .upload import PlainPut, Uploader, stream_data

# decide() and its kin live in asyncmigrate.decision; re-exported for their users.
__all__ = [
    "BUSY",
    "COPYABLE",
    "ImageTransfer",
    "decide",
    "destination_view",
    "same_data",
]


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
        # An attempt began sending the data: a later attempt that finds the data there proves it (it
        # may be ours, committed with its answer lost) instead of taking it for a copy found done.
        self._sent = False
        self._hashed = Hashed()  # what the stream was hashed with, for the proof after the commit
        self._rewound = 0  # bytes the last retry took back (counted again if they were committed)
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
                    full = await self._full(full)
                    if (bad := recognised(full)) is not None:
                        raise bad
                    action, reason = decide(judgement.image, full)
                # Owners and members are checked by the plan an operator reads, not the quota's pre-flight.
                keeps = members and action in _KEEPS
                why = await self.sharing.refused(judgement.image, action, result) if keeps else None
                if why is not None and action in _WRITES:
                    action, reason = Action.BLOCKED, why
                elif action == Action.FINISH and dst is not None:
                    action, reason = finish_plan(
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
            self._rewound, self._moved = self._moved, 0
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
        keep_owner = keeps_owner(view)
        if entry is not None and (entry.status in STAGING or (self._sent and entry.status in HAS_DATA)):
            full = await self._full(full)
            if full is not None and await self._resumed(view, full):
                return
        action, reason = decide(view, entry)
        if reason == ATTRIBUTES_DIFFER:
            full = await self._full(full)
            if (bad := recognised(full)) is not None:
                raise bad  # a bad copy an earlier run deactivated: say what it is
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
            block(self.result, why)
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

    async def _resumed(self, view: dict[str, Any], full: dict[str, Any]) -> bool:
        """Go on from where the destination was left: data an earlier attempt of this run sent
        (committed, its answer or the proof lost) is proved; data staged but never imported is
        imported, a running import waited for (:mod:`asyncmigrate.staged`).  False: nothing to resume."""
        how = pending(full, self.image)
        if how is None and not (self._sent and full.get("status") in HAS_DATA):
            return False
        why = await self.sharing.refused(view, Action.UPLOAD, self.result)  # as before any write
        if why is not None:
            block(self.result, why)
            return True
        if how is not None:
            self.result.action = Action.UPLOAD
            self.result.reason = "staged data imported" if how == "import" else "waited for the import that held it"
            timeout = self.config.import_timeout
            full = await finish(self.dst, self.id, how, self.uploader, timeout=timeout, store=self.config.dst_store)
        else:  # our own data, committed in an earlier attempt
            self._on_bytes(self._rewound)  # they arrived after all
            self.result.reason = ""  # the last attempt's error: it was only the answer that failed
        await self._finish(view, Entry.of(await self._check(view, full)))
        self.result.outcome = Outcome.COPIED
        return True

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
        # A destination that imports (glance-direct) may convert: its record is no proof then.
        check = stream_check(self.image, self.config.verify, may_convert=self.uploader.method == "glance-direct")

        async def before_upload() -> None:
            if create:
                await self._create(view, keep_owner, may_upload=True)
            self._sent = True

        async with self.limits.upload_slot():
            self.budget.progress()  # waiting for a slot is not failing
            self._hashed = await stream_data(
                self.src,
                self.dst,
                self.image,
                dest_id=self.id,
                store=self.config.dst_store,
                on_started=lambda: self.emit(TransferStarted(self.id, self.image.get("name"), self.result.size)),
                on_bytes=self._on_bytes,
                bad_digests=self._bad_digests,
                throttle=self.limits.throttle,
                before_upload=before_upload,
                uploader=self.uploader,
                check=check,
            )

    def _on_bytes(self, n: int) -> None:
        self.budget.progress()
        self._moved += n
        self.result.bytes = self._moved
        self.emit(BytesMoved(self.id, n))

    async def _check(self, view: dict[str, Any], image: dict[str, Any] | None) -> dict[str, Any]:
        """After the commit: the destination must record the source's size and hashes (or,
        when it converted the data on import, the conversion of it); a copy whose record
        differs is quarantined (:func:`~asyncmigrate.integrity.prove`)."""
        dst = image if image is not None else await self.dst.get_image(self.id)
        if dst is None:
            raise ImageError("destination image vanished after upload")
        added = self.owned.learn(create_body(view, keep_owner=True), dst)
        if added:  # an import plugin's (inject_image_metadata): the destination's, left alone
            said = f"the destination set properties of its own: {', '.join(added)} (left alone)"
            self.result.reason = "; ".join(filter(None, [self.result.reason, said]))
        dst = self.owned.strip(dst)
        self.seen = Entry.of(dst)
        if dst.get("status") not in HAS_DATA:
            raise VerificationError(
                f"destination recorded status={dst.get('status')} size={dst.get('size')} after the upload"
            )
        entry = Entry.of(dst)
        if entry.converted_from(view):
            self._note_conversion(view, entry)
            self.result.verification = self._hashed.algorithm or "size-only"
            return dst
        server = self.config.verify == "server"
        self.result.verification = await prove(self.dst, self.image, dst, self._hashed, server=server)
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
