"""One image's copy as a state object with step methods.

    decide → create → stream (verify on the fly) → check → finish

:func:`decide` is pure: from the source image and what the destination holds
under the same id, it says what to do.  :class:`ImageTransfer` runs the steps,
re-deciding on every attempt, so a retry (or a re-run after a crash) picks up
from the destination's real state: an image left ``queued`` is uploaded into
again — never deleted, because Glance never lets a deleted id be used again.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .config import CopyConfig
from .errors import (
    AsyncMigrateError,
    Behaviour,
    ConflictStatus,
    DestinationBusy,
    DestinationConflict,
    ImageError,
    SourceCorrupt,
    StreamCorrupted,
    VerificationError,
)
from .glance import GlanceClient
from .identity import map_members
from .limits import Limits, Throttle
from .metadata import create_body, differences, left_out
from .progress import BytesMoved, Emit, Retrying, TransferStarted
from .report import Action, ImageResult, Outcome
from .retry import Budget, run_unit
from .stream import Digest, close_quietly, pipeline

__all__ = ["ImageTransfer", "computable", "decide", "expected_digest", "same_data", "stream_data"]

COPYABLE = frozenset({"active", "deactivated", "queued"})
HAS_DATA = frozenset({"active", "deactivated"})
BUSY = frozenset({"saving", "uploading", "importing"})


def computable(algorithm: str) -> bool:
    """Can this Python hash with ``algorithm`` for verification (FIPS hosts included)?"""
    try:
        hashlib.new(algorithm, usedforsecurity=False)
    except (ValueError, TypeError):
        return False
    return True


def expected_digest(image: dict[str, Any]) -> tuple[str | None, str | None]:
    """The (algorithm, hex digest) a copy of ``image`` is verified with — the algorithm
    actually checked: the multihash when this Python can compute it, else the md5
    ``checksum``, else ``(None, None)`` (size only)."""
    algo, value = image.get("os_hash_algo"), image.get("os_hash_value")
    if algo and value and computable(str(algo)):
        return str(algo), str(value)
    if image.get("checksum") and computable("md5"):
        return "md5", str(image["checksum"])
    return None, None


def same_data(src: dict[str, Any], dst: dict[str, Any]) -> bool:
    """Do the two records describe the same bytes (size and every comparable hash)?"""
    if src.get("size") != dst.get("size"):
        return False
    if src.get("checksum") and dst.get("checksum") and src["checksum"] != dst["checksum"]:
        return False
    comparable = (
        src.get("os_hash_value") and dst.get("os_hash_value") and src.get("os_hash_algo") == dst.get("os_hash_algo")
    )
    return not (comparable and src["os_hash_value"] != dst["os_hash_value"])


def decide(src: dict[str, Any], dst: dict[str, Any] | None, *, keep_owner: bool) -> tuple[str, str]:
    """What to do with ``src`` given the destination image of the same id.

    Returns ``(action, reason)``; the reason explains skips and conflicts.
    """
    status = src.get("status")
    if status not in COPYABLE:
        return Action.UNSUPPORTED, f"source image is {status!r}: only active, deactivated and queued images are copied"
    has_data = status in HAS_DATA
    if dst is None:
        return (Action.COPY if has_data else Action.CREATE), ""
    dstatus = dst.get("status")
    if dstatus in BUSY:
        raise DestinationBusy(f"destination image is {dstatus!r}")
    diffs = differences(src, dst, keep_owner=keep_owner)
    if diffs:
        return Action.CONFLICT, "destination differs in: " + ", ".join(diffs)
    if dst.get("protected") and not src.get("protected"):
        return Action.CONFLICT, "destination is protected, source is not"
    if dstatus == "queued":
        return (Action.UPLOAD if has_data else Action.FINISH), ""
    if dstatus in HAS_DATA:
        if not has_data:
            return Action.CONFLICT, "destination holds data, the source has none"
        if not same_data(src, dst):
            return Action.CONFLICT, "destination holds other data (size or hash differ)"
        if dstatus == "deactivated" and status == "active":
            return Action.CONFLICT, "destination is deactivated, source is active"
        return Action.FINISH, ""
    return Action.FAIL, f"destination image is {dstatus!r} and cannot be written"


class ImageTransfer:
    """Copies one image from ``src`` to ``dst``, keeping its id and attributes."""

    def __init__(
        self,
        src: GlanceClient,
        dst: GlanceClient,
        image: dict[str, Any],
        config: CopyConfig,
        emit: Emit,
        limits: Limits | None = None,
    ) -> None:
        self.src = src
        self.limits = limits or Limits()
        self.dst = dst
        self.image = image
        self.config = config
        self.emit = emit
        self.id: str = image["id"]
        self.result = ImageResult(
            id=self.id,
            name=image.get("name"),
            action="",
            outcome="",
            size=int(image.get("size") or 0),
            left_out=left_out(image),
        )
        self._moved = 0  # bytes handed to the destination in this attempt
        self._bad_digests: set[str] = set()
        # --retry-deadline counts time spent failing; bytes moved and a slot obtained are progress.
        self.budget = Budget(config.retry)

    # -- the unit of work -----------------------------------------------------

    async def run(self) -> ImageResult:
        """Run every step with retries; return the image's result (fatal errors propagate)."""
        await run_unit(self.config.retry, self._attempt, self.result, budget=self.budget)
        return self.result

    async def plan(self) -> ImageResult:
        """Dry run: decide against the destination's state, change nothing."""
        try:
            dst = await self.dst.get_image(self.id)
            view, keep_owner = self._view()
            action, reason = decide(view, dst, keep_owner=keep_owner)
            if action == Action.FINISH and dst is not None:
                action, reason = _finish_plan(view, dst, members_differ=await self._members_differ())
        except DestinationBusy as exc:
            action, reason = Action.UPLOAD, str(exc)
        except AsyncMigrateError as exc:
            if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
                raise
            action, reason = Action.FAIL, str(exc)
        self.result.action = action
        self.result.reason = reason
        self.result.outcome = Outcome.PLANNED
        if action in (Action.COPY, Action.UPLOAD):
            self.result.bytes = self.result.size
        return self.result

    async def _attempt(self, number: int) -> None:
        self.result.attempts = number
        if number > 1:
            self.emit(Retrying(self.id, number, self._moved, self.result.reason))
            self._moved = 0
            fresh = await self.src.get_image(self.id)
            if fresh is None:
                raise ImageError("image disappeared from the source")
            self.image = fresh
        dst = await self.dst.get_image(self.id)
        view, keep_owner = self._view()
        action, reason = decide(view, dst, keep_owner=keep_owner)
        self.result.action, self.result.reason = action, reason
        if action == Action.UNSUPPORTED:
            self.result.outcome = Outcome.SKIPPED
            return
        if action == Action.CONFLICT:
            raise DestinationConflict(reason)
        if action == Action.FAIL:
            raise ImageError(reason)
        if action in (Action.COPY, Action.CREATE):
            dst = await self._create()
            if dst.get("status") != "queued":  # somebody else got there first
                return await self._attempt_again(number)
        assert dst is not None
        if action in (Action.COPY, Action.UPLOAD):
            await self._stream()
            dst = await self._check()
        changed = await self._finish(dst)
        if action in (Action.COPY, Action.UPLOAD):
            self.result.outcome = Outcome.COPIED
        elif action == Action.CREATE:
            self.result.outcome = Outcome.CREATED
        elif changed:
            self.result.outcome = Outcome.FINISHED
        else:
            self.result.outcome = Outcome.SKIPPED
            self.result.action = Action.NONE
            self.result.reason = "already at the destination"

    async def _attempt_again(self, number: int) -> None:
        # The create raced with another writer: decide again from what is there.
        await self._attempt(number)

    # -- steps ------------------------------------------------------------------

    async def _create(self) -> dict[str, Any]:
        """Create the destination image with the same id and attributes."""
        view, keep_owner = self._view()
        body = create_body(view, keep_owner=keep_owner)
        try:
            return await self.dst.create_image(body)
        except ConflictStatus as exc:
            existing = await self.dst.get_image(self.id)
            if existing is None:
                raise ImageError(
                    f"the destination refuses id {self.id}: it belonged to a deleted image, "
                    "and Glance never reuses a deleted image's id"
                ) from exc
            return existing

    async def _stream(self) -> None:
        """Stream the source data into the destination, verifying on the fly."""
        async with self.limits.upload_slot():
            self.budget.progress()  # waiting for a slot is not failing
            await self._stream_in_slot()

    async def _stream_in_slot(self) -> None:
        await stream_data(
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
        )

    def _on_bytes(self, n: int) -> None:
        self.budget.progress()
        self._moved += n
        self.result.bytes = self._moved
        self.emit(BytesMoved(self.id, n))

    async def _check(self) -> dict[str, Any]:
        """After upload: the destination must record the source's size and hashes."""
        dst = await self.dst.get_image(self.id)
        if dst is None:
            raise ImageError("destination image vanished after upload")
        if dst.get("status") != "active" or not same_data(self.image, dst):
            raise VerificationError(
                f"destination recorded status={dst.get('status')} size={dst.get('size')} "
                f"checksum={dst.get('checksum')}; source size={self.image.get('size')} "
                f"checksum={self.image.get('checksum')}"
            )
        return dst

    async def _finish(self, dst: dict[str, Any]) -> bool:
        """Members, then ``protected``, then deactivation; True if anything changed."""
        changed = False
        if self.image.get("visibility") == "shared":
            changed |= await self._sync_members()
        if self.image.get("protected") and not dst.get("protected"):
            await self.dst.patch_image(self.id, [{"op": "replace", "path": "/protected", "value": True}])
            changed = True
        if self.image.get("status") == "deactivated" and dst.get("status") == "active":
            await self.dst.deactivate(self.id)
            changed = True
        return changed

    async def _members_differ(self) -> bool:
        if self.image.get("visibility") != "shared":
            return False
        members = {m["member_id"]: m.get("status", "pending") for m in await self.src.list_members(self.id)}
        wanted, _ = map_members(self.config.project_map, members)
        have = {m["member_id"]: m.get("status") for m in await self.dst.list_members(self.id)}
        return any(have.get(m) != st for m, st in wanted.items())

    def _view(self) -> tuple[dict[str, Any], bool]:
        """The source image as the destination should hold it, and whether its owner is kept.

        With a project map the owner is the mapped destination project (or left
        to the caller's project); otherwise the source's owner, as is.
        """
        pmap = self.config.project_map
        if pmap is None:
            return self.image, self.config.keep_owner
        owner = pmap.owner(self.image)
        if owner is None or not self.config.keep_owner:
            return {k: v for k, v in self.image.items() if k != "owner"}, False
        return {**self.image, "owner": owner}, True

    async def _sync_members(self) -> bool:
        src_members = {m["member_id"]: m.get("status", "pending") for m in await self.src.list_members(self.id)}
        src_members, unmapped = map_members(self.config.project_map, src_members)
        if unmapped:
            self.result.reason = f"members without a mapping, not shared: {', '.join(unmapped)}"
        dst_members = {m["member_id"]: m.get("status", "pending") for m in await self.dst.list_members(self.id)}
        changed = False
        for member, status in sorted(src_members.items()):
            if member not in dst_members:
                await self.dst.add_member(self.id, member)
                dst_members[member] = "pending"
                changed = True
            if dst_members[member] != status:
                await self.dst.set_member_status(self.id, member, status)
                changed = True
        return changed


def _finish_plan(src: dict[str, Any], dst: dict[str, Any], *, members_differ: bool) -> tuple[str, str]:
    """For a dry run: which finishing steps remain for an image whose data is there."""
    steps = ["sync members"] if members_differ else []
    if src.get("protected") and not dst.get("protected"):
        steps.append("set protected")
    if src.get("status") == "deactivated" and dst.get("status") == "active":
        steps.append("deactivate")
    if not steps:
        return Action.NONE, "already at the destination"
    return Action.FINISH, "data is there; " + ", ".join(steps)


async def stream_data(
    src: GlanceClient,
    dst: GlanceClient,
    image: dict[str, Any],
    *,
    dest_id: str,
    store: str | None,
    verify: str,
    on_started: Callable[[], None],
    on_bytes: Callable[[int], None],
    bad_digests: set[str],
    throttle: Throttle | None = None,
) -> None:
    """Stream ``image``'s data from ``src`` into ``dest_id`` on ``dst``, verified.

    Raises :class:`StreamCorrupted` (retry) when the bytes do not match the
    source's record, or :class:`SourceCorrupt` when the same wrong digest was
    already seen in ``bad_digests`` (the stored bytes themselves are bad).
    The caller holds an upload slot (:meth:`Limits.upload_slot`) around it.
    """
    size = int(image.get("size") or 0)
    algo, expected = expected_digest(image)
    digest = Digest(algo) if algo and verify == "full" else None
    pipe = pipeline(
        lambda offset: src.download(image["id"], offset),
        size=size,
        digest=digest,
        expected=expected,
        on_bytes=on_bytes,
        throttle=throttle,
    )
    chunks = pipe.__aiter__()
    try:
        # Read (and, for small images, fully verify) before touching the
        # destination: a source error must not flip the destination to saving.
        first = await _first(chunks)
        on_started()
        try:
            await dst.upload(dest_id, _prepend(first, chunks), size=size, store=store)
        except AsyncMigrateError:
            # aiohttp reports a failing body as a lost connection: raise what really
            # failed (ours, or a bug that must not pass for a transient error).
            if isinstance(pipe.error, Exception):
                raise pipe.error from None
            raise
    except StreamCorrupted as exc:
        # A wire error gives a different wrong digest each time; the same wrong
        # digest twice means the stored bytes themselves do not match the record.
        if exc.actual is not None and exc.actual in bad_digests:
            raise SourceCorrupt("source data does not match its own recorded hash (read twice): not copied") from exc
        if exc.actual is not None:
            bad_digests.add(exc.actual)
        raise
    finally:
        await close_quietly(chunks)
        await pipe.aclose()
        if digest is not None:
            digest.close()


async def _first(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


async def _prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk
