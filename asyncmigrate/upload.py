"""How bytes enter the destination: the upload ways, chosen once per run.

Every way is fed by the same verified pipeline (:mod:`asyncmigrate.stream`):
the last chunk is held back until size and digest match the source, so a
mismatch drops the connection before the last byte and the destination never
commits unverified bytes — staged bytes included, since an import is started
only after its stage upload succeeded.

:class:`PlainPut` (``put``)
    ``PUT /v2/images/{id}/file`` declaring the size (``Content-Length``,
    ``x-openstack-image-size``): the fast path everywhere else.
:class:`UnsizedPut` (``put-unsized``; what ``put`` becomes for a Swift store)
    The same upload sent chunked, declaring no size.  glance_store 5.7.0's
    Swift driver, given a size above ``swift_store_large_object_size``,
    declares every segment full-size — the last, shorter one too — and the
    upload hangs until Swift's timeout, then fails (an upstream regression
    around LP #2136857).  Without a size it segments by reading, and works.
:class:`GlanceDirect` (``glance-direct``)
    ``PUT /v2/images/{id}/stage``, then ``POST …/import`` with
    ``glance-direct``, then wait for the import task.  A plain PUT skips
    import plugins: a converting destination (``image_conversion``, e.g. Ceph
    clouds turning qcow2 into raw for copy-on-write clones) only converts what
    is imported.  The import's failures (``os_glance_failed_import``, the
    task's message) are reported per image.

:func:`choose_uploader` picks one from the destination's
:class:`~asyncmigrate.capabilities.Capabilities` and the ``--upload-method``
flag, before anything is done: asking for ``glance-direct`` where it is not
offered is a one-line usage error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .errors import (
    AsyncMigrateError,
    Behaviour,
    ConflictStatus,
    ImageError,
    SourceCorrupt,
    StreamCorrupted,
    UsageError,
    redact,
)
from .integrity import MD5, Hashed, StreamCheck, stream_check
from .stream import Digest, close_quietly, pipeline

if TYPE_CHECKING:
    from .capabilities import Capabilities, StoreInfo
    from .glance import GlanceClient
    from .limits import Throttle

__all__ = [
    "FAILED_IMPORT",
    "IMPORT_LOCK",
    "SWIFT_WAY_OUT",
    "GlanceDirect",
    "ImportFailed",
    "PlainPut",
    "UnsizedPut",
    "Uploader",
    "choose_uploader",
    "large_object_size",
    "latest_import_task",
    "polling",
    "stream_data",
    "swift_segmented",
    "task_message",
    "unsized_cost",
]

IMPORT_LOCK = "os_glance_import_task"  # set by glance while an import task holds the image
FAILED_IMPORT = "os_glance_failed_import"  # stores an import failed to reach


class ImportFailed(ImageError):
    """A Glance import task failed (its message says why); the image may be tried again."""

    behaviour = Behaviour.RETRY


class Uploader(Protocol):
    """One way of putting verified bytes into a destination image."""

    method: str
    stages: bool  # the data goes through the staging area (image_stage_total counts it)

    def declares_size(self, size: int) -> bool:
        """Whether an upload of ``size`` bytes tells glance its size (its quota checks count it only then)."""

    async def send(
        self, dst: GlanceClient, image_id: str, body: AsyncIterable[bytes], *, size: int | None, store: str | None
    ) -> None:
        """Stream ``body`` into the image (the bytes' last chunk is held back upstream)."""

    async def complete(self, dst: GlanceClient, image_id: str, *, store: str | None) -> dict[str, Any] | None:
        """After ``send``: whatever makes the data the image's (an import); the image when it read it."""


class PlainPut:
    """``PUT …/file`` with the size declared: the fast path."""

    method = "put"
    stages = False

    def declares_size(self, size: int) -> bool:
        """Always."""
        return True

    async def send(
        self, dst: GlanceClient, image_id: str, body: AsyncIterable[bytes], *, size: int | None, store: str | None
    ) -> None:
        """Upload, declaring ``size``."""
        await dst.upload(image_id, body, size=size, store=store)

    async def complete(self, dst: GlanceClient, image_id: str, *, store: str | None) -> dict[str, Any] | None:
        """Nothing: the PUT committed the data."""
        return None


class UnsizedPut(PlainPut):
    """``PUT …/file`` sent chunked with no declared size (Swift stores, see the module docstring).

    ``threshold`` is the store's ``large_object_size`` when ``/v2/info/stores/detail``
    shows it: glance_store segments an upload of a known size only from there on, so
    smaller images keep the sized (cheaper: no manifest) upload.  None: never declare.
    """

    method = "put-unsized"

    def __init__(self, threshold: int | None = None) -> None:
        self.threshold = threshold

    def declares_size(self, size: int) -> bool:
        """Only below the segmenting threshold."""
        return self.threshold is not None and size < self.threshold

    async def send(
        self, dst: GlanceClient, image_id: str, body: AsyncIterable[bytes], *, size: int | None, store: str | None
    ) -> None:
        """Upload, declaring the size only below the segmenting threshold; the pipeline still checks it."""
        declared = size if size is not None and self.declares_size(size) else None
        await dst.upload(image_id, body, size=declared, store=store)


class GlanceDirect:
    """Stage, then import with ``glance-direct``, then wait for the task (bounded, with backoff)."""

    method = "glance-direct"
    stages = True

    def declares_size(self, size: int) -> bool:
        """Always: the stage declares it, and the import counts what was staged."""
        return True

    def __init__(self, *, multi_store: bool, timeout: float, poll_initial: float = 0.5, poll_max: float = 15.0):
        self.multi_store = multi_store
        self.timeout = timeout
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self._failures: dict[str, str] = {}  # image id -> the last import failure's message

    async def send(
        self, dst: GlanceClient, image_id: str, body: AsyncIterable[bytes], *, size: int | None, store: str | None
    ) -> None:
        """``PUT …/stage``: the image becomes ``uploading``."""
        try:
            await dst.upload(image_id, body, size=size, stage=True)
        except ConflictStatus as exc:
            if "has data on staging" not in (exc.detail or ""):
                raise
            raise ImageError(
                "the destination still holds this image's data in its staging area from an import that "
                "failed; Glance neither imports it (the image is queued) nor cleans it for a live image: "
                f"an operator deletes {image_id} from the API node's os_glance_staging_store directory "
                "(node_staging_uri), then runs this again"
            ) from exc

    async def complete(self, dst: GlanceClient, image_id: str, *, store: str | None) -> dict[str, Any]:
        """Start the import (unless one runs) and wait until the image is active or the task failed.

        A 409 on the import is an import already holding the image ("Image has active task":
        another run, or our own earlier request whose answer was lost): it is waited for.
        """
        image = await dst.get_image(image_id)
        if image is None:
            raise ImageError("destination image vanished after staging")
        if image.get("status") == "uploading" and not image.get(IMPORT_LOCK):
            stores = [store] if store else None
            # A 409: one is running (or the image moved on): the wait below sees which.
            with contextlib.suppress(ConflictStatus):
                await dst.import_image(image_id, "glance-direct", stores if self.multi_store else None)
        return await self.wait(dst, image_id)

    async def wait(self, dst: GlanceClient, image_id: str) -> dict[str, Any]:
        """Poll (backoff up to ``poll_max``) until ``active``; glance puts a failed
        import back to ``queued``.  An import task that died before marking the
        image ``importing`` leaves it ``uploading``: its task says so."""
        async for poll in polling(self.timeout, self.poll_initial, self.poll_max):
            image = await dst.get_image(image_id)
            if image is None:
                raise ImageError("destination image vanished during its import")
            status = image.get("status")
            if status == "active" and not image.get(IMPORT_LOCK):
                self._failures.pop(image_id, None)
                return image
            failed = status == "queued"
            if not failed and status == "uploading" and poll >= 2:
                task = await latest_import_task(dst, image_id)
                failed = task is not None and task.get("status") == "failure"
            if failed:
                why = await task_message(dst, image_id)
                message = f"the destination's glance-direct import failed: {why}"
                if self._failures.get(image_id) == why:  # the same twice: it will not go better
                    raise ImageError(f"{message} (twice)")
                self._failures[image_id] = why
                raise ImportFailed(message)
        raise ImageError(f"the destination's import did not finish within {self.timeout:.0f} s")


async def polling(timeout: float, initial: float, maximum: float) -> AsyncIterator[int]:
    """Poll numbers 0, 1, 2, … for a bounded wait on an import: the caller checks after
    each; between them a delay doubling from ``initial`` to ``maximum``; it ends (the
    caller then reports the timeout) once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = initial
    number = 0
    while True:
        yield number
        if time.monotonic() > deadline:
            return
        await anyio.sleep(delay)
        delay = min(maximum, delay * 2 if delay else 0)
        number += 1


def choose_uploader(method: str, caps: Capabilities, store: str | None, *, import_timeout: float) -> Uploader:
    """The uploader for ``--upload-method`` on this destination (``put`` adapts to Swift stores)."""
    if method == "glance-direct":
        if "glance-direct" not in caps.import_methods:
            offered = ", ".join(sorted(caps.import_methods)) or "no import methods"
            raise UsageError(
                f"--upload-method glance-direct: destination {caps.cloud!r} does not offer it "
                f"(GET /v2/info/import lists: {offered}); use --upload-method put"
            )
        return GlanceDirect(multi_store=caps.multi_store, timeout=import_timeout)
    if method == "put-unsized":
        return UnsizedPut()
    target = caps.store(store)
    if target is not None and target.type == "swift":
        return UnsizedPut(large_object_size(target))
    return PlainPut()


def unsized_cost(method: str, store: StoreInfo | None) -> str | None:
    """What ``--upload-method put-unsized`` costs in ``store``, judged by its type (None: nothing).

    glance_store 5.7.0: an rbd store creates an upload of unknown size empty and grows it while
    writing ("resize-before-write", doubling up to 8 GiB, then trimmed); an s3 store reads an
    upload of unknown size whole into glance-api's memory (``bytes +=`` per 5 MiB: quadratic) and
    sends it in one PUT (multipart only for a declared size of at least
    ``s3_store_large_object_size``).  Measured (benchmarks/ceph.py, 1 GiB into S3 on RGW, two
    runs): 133–274 s and 2.3 GB of glance-api's memory unsized, 23–34 s and 267–319 MB sized.
    """
    if method != "put-unsized" or store is None:
        return None
    if store.type == "rbd":
        return (
            f"--upload-method put-unsized into store {store.id!r} (rbd): without a declared size glance_store "
            "creates each RBD image empty and resizes it while writing (resize-before-write, which it logs as "
            "slower than normal); the default put declares the size"
        )
    if store.type == "s3":
        return (
            f"--upload-method put-unsized into store {store.id!r} (s3): without a declared size glance_store "
            "reads each image WHOLE into glance-api's memory (about twice its size while it grows, by repeated "
            "concatenation: slow) before one PUT, no multipart; an image near that node's free memory cannot be "
            "uploaded; the default put declares the size (multipart from s3_store_large_object_size on)"
        )
    return None


def large_object_size(store: StoreInfo | None) -> int | None:
    """A Swift store's ``large_object_size`` in bytes, when ``/v2/info/stores/detail`` shows it."""
    value = (store.properties if store is not None else {}).get("large_object_size")
    return int(value) if isinstance(value, int | str) and str(value).isdecimal() else None


def swift_segmented(store: StoreInfo | None, size: int | None) -> bool:
    """Would glance_store write ``size`` bytes into ``store`` as Swift segments — where
    5.7.0's regression fails every upload whose size it knows (copy-image always does)?"""
    if store is None or store.type != "swift" or not size:
        return False
    threshold = large_object_size(store)
    return threshold is None or size >= threshold


SWIFT_WAY_OUT = (
    "glance_store's Swift driver (5.7.0) fails segmented uploads whose size it knows, and copy-image always "
    "knows it (upstream regression around LP #2136857): images above swift_store_large_object_size cannot be "
    "copied into Swift server-side; use --method location (the tool uploads the carrier without declaring "
    "its size), or a fixed glance_store"
)


async def latest_import_task(dst: GlanceClient, image_id: str) -> dict[str, Any] | None:
    """The image's newest ``api_image_import`` task, if any."""
    tasks = [t for t in await dst.image_tasks(image_id) if t.get("type") == "api_image_import"]
    tasks.sort(key=lambda t: str(t.get("created_at", "")), reverse=True)
    return tasks[0] if tasks else None


async def task_message(dst: GlanceClient, image_id: str) -> str:
    """What the newest import task says (its message, else its status), credentials redacted."""
    task = await latest_import_task(dst, image_id)
    if task is None:
        return "no task recorded"
    # Glance's task messages quote store URIs, credentials included.
    return redact(str(task.get("message") or task.get("status") or "unknown"))


async def stream_data(
    src: GlanceClient,
    dst: GlanceClient,
    image: dict[str, Any],
    *,
    dest_id: str,
    store: str | None,
    verify: str = "full",
    on_started: Callable[[], None],
    on_bytes: Callable[[int], None],
    bad_digests: set[str],
    throttle: Throttle | None = None,
    before_upload: Callable[[], Awaitable[None]] | None = None,
    uploader: Uploader | None = None,
    check: StreamCheck | None = None,
) -> Hashed:
    """Stream ``image``'s data from ``src`` into ``dest_id`` on ``dst``, verified
    as ``check`` says (by default as :func:`~asyncmigrate.integrity.stream_check`
    says for ``verify``); return what the bytes were hashed with.

    The source is opened and its first chunk read before anything touches the
    destination; ``before_upload`` (the create, for a new image) runs then, so
    a source failing before its first byte leaves nothing behind.  Raises
    :class:`StreamCorrupted` (retry) when the bytes do not match the source's
    record, or :class:`SourceCorrupt` when the same wrong digest was already
    seen in ``bad_digests`` (the stored bytes themselves are bad).  The caller
    holds an upload slot (:meth:`Limits.upload_slot`) around it.
    """
    size = None if image.get("size") is None else int(image["size"])
    check = check or stream_check(image, verify)
    digest = Digest(check.algorithm) if check.algorithm else None
    sent = Digest(MD5) if check.md5_sent else None
    pipe = pipeline(
        # Glance serves an image without a recorded size with "Content-Length: None".
        lambda offset: src.download(image["id"], offset, lenient=size is None),
        size=size,
        digest=digest,
        expected=check.expected,
        on_bytes=on_bytes,
        throttle=throttle,
        also=sent,
    )
    chunks = pipe.__aiter__()
    try:
        # Read (and, for small images, fully verify) before touching the
        # destination: a source error must not flip the destination to saving.
        first = await _first(chunks)
        if before_upload is not None:
            await before_upload()
        on_started()
        try:
            await (uploader or PlainPut()).send(dst, dest_id, _prepend(first, chunks), size=size, store=store)
        except AsyncMigrateError:
            # aiohttp reports a failing body as a lost connection: raise what really
            # failed (ours, or a bug that must not pass for a transient error).
            if isinstance(pipe.error, Exception):
                raise pipe.error from None
            raise
        return Hashed(check.algorithm, None if sent is None else await sent.hexdigest())
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
        for hasher in (digest, sent):
            if hasher is not None:
                hasher.close()


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
