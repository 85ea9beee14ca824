"""Image data: ``PUT`` and ``GET /v2/images/{id}/file``, streamed both ways.

Upload rules (glance 33): only a ``queued`` image accepts data (409 otherwise); it is
``saving`` while bytes arrive; an unknown ``X-Image-Meta-Store`` is 400; any failure (the
connection dropping, a size different from ``x-openstack-image-size``, a format mismatch)
returns the image to ``queued`` with no data, so the same id can be uploaded again.

One deliberate simplification: real glance answers 415 to bytes that do not match a
``qcow2`` ``disk_format`` but then leaves the image broken (queued, yet holding a location,
so a retry gets 500); the fake leaves it cleanly ``queued``.

Staging (``PUT …/stage``, for glance-direct imports): see ``_DataApi.stage``.

Download rules: 200 with ``Content-Length`` and ``Content-MD5`` (the hex md5, not base64);
``Range: bytes=a-b|a-|-n`` gives 206 with ``Content-Range`` (no ``Accept-Ranges`` is sent);
a start past the end is 416, several ranges 400; an image holding no data is 204; a
deactivated image is 403 except for admins. Which location serves the bytes, ``?prefer=``, the
stores that refuse ranges (400) and the image cache: see :mod:`tests.fakeglance.backend`. With
``FakeGlance.honour_range`` False the ``Range`` header is ignored: 200 and the whole body, so a
cut download cannot be resumed.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from aiohttp import web

from . import quota
from .backend import RandomGetRefused, webob_error
from .faults import DownloadPlan
from .model import QCOW2_MAGIC, Digest, ImageRecord, fail

if TYPE_CHECKING:
    from .core import FakeGlance, Handler

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
# How often a hung download checks whether its client has gone.
_HANG_POLL = 0.02


def routes(fake: FakeGlance) -> list[tuple[str, str, Handler]]:
    """The (method, path, handler) triples this module serves."""
    api = _DataApi(fake)
    return [
        ("PUT", "/v2/images/{image_id}/file", api.upload),
        ("PUT", "/v2/images/{image_id}/stage", api.stage),
        ("GET", "/v2/images/{image_id}/file", api.download),
    ]


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(first, last) byte positions, inclusive, for a single-range ``Range`` header."""
    if "," in header:
        raise fail(
            400,
            "Requests with multiple ranges are not supported in Glance. "
            "You may make multiple single-range requests instead.",
        )
    match = _RANGE.fullmatch(header)
    if match is None or match.group(1) == match.group(2) == "":
        raise fail(416, "Invalid Range header.")
    first, last = match.group(1), match.group(2)
    if first == "":
        # Suffix form: the last n bytes (all of them when n >= size).
        count = int(last)
        if count == 0:
            raise fail(416, "Invalid Range header.")
        return max(size - count, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        raise fail(416, "Invalid Range header.")
    if start >= size:
        raise fail(
            416,
            f"Invalid start position in Range header. Start position MUST be in the inclusive range [0, {size - 1}].",
        )
    return start, min(end, size - 1)


def _flipped(piece: bytes, start: int, offsets: frozenset[int]) -> bytes:
    """``piece`` (at absolute ``start``) with the bytes at ``offsets`` inverted."""
    hits = [o for o in offsets if start <= o < start + len(piece)]
    if not hits:
        return piece
    corrupted = bytearray(piece)
    for offset in hits:
        corrupted[offset - start] ^= 0xFF
    return bytes(corrupted)


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _drop_connection(request: web.Request) -> None:
    # close(), not abort(): bytes already written still reach the client, then EOF.
    if request.transport is not None:
        request.transport.close()


# What glance answers when glance_store 5.7.0's Swift driver, told the size, declares the
# last segment full-size and Swift times out waiting for it (see FakeGlance.swift_segment_size).
SWIFT_SEGMENT_ERROR = (
    "Error in store configuration. Adding images to store is disabled. "
    "(BackendException: Failed to add object to Swift. Got error from Swift: "
    "Object PUT failed ... 408 Request Timeout; failure and no ability to reset contents for reupload)"
)


_SIGNATURE_KEYS = (
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
)


def _signature_certificate(rec: ImageRecord) -> str | None:
    """The certificate a signed image's upload is verified against (glance/location.py checks the
    data when all four img_signature* properties are present; image_data.py answers a failure 400)."""
    if all(key in rec.properties for key in _SIGNATURE_KEYS):
        return rec.properties["img_signature_certificate_uuid"]
    return None


class _DataApi:
    def __init__(self, fake: FakeGlance) -> None:
        self.fake = fake

    async def upload(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        identity = fake.identity(request)
        store = ""
        if fake.multi_store:
            store = request.headers.get("X-Image-Meta-Store", fake.default_store or "")
            if store not in fake.stores:
                raise fail(400, f"Store for identifier {store} not found")
        if "Content-Type" in request.headers and request.content_type != "application/octet-stream":
            raise fail(415, f"Content type {request.content_type} not supported")
        claimed = request.headers.get("x-openstack-image-size")
        try:
            claimed_size = None if claimed is None else int(claimed)
        except ValueError:
            raise fail(400, "Invalid or missing image size in request headers.") from None
        # The caller's project pays (image_data.py): the declared size, 0 when none is declared.
        declared = quota.declared_mib(claimed_size or request.content_length)
        quota.enforce(fake, identity.project_id, "image_size_total", declared)
        rec = fake.lookup(request.match_info["image_id"], identity)
        fake.require_owner(rec, identity, "upload data to")
        if rec.status != "queued":
            raise fail(409, f"Image status transition from {rec.status} to saving is not allowed")

        rec.status = "saving"
        rec.updated_at = fake.now()
        try:  # checked once the image is saving: the caller's own image counts itself
            quota.enforce(fake, identity.project_id, "image_count_uploading")
        except web.HTTPException:
            self._restore(rec)
            raise
        fake.uploads_in_flight += 1
        fake.max_uploads_in_flight = max(fake.max_uploads_in_flight, fake.uploads_in_flight)
        try:
            return await self._receive(request, rec, store, claimed_size)
        finally:
            fake.uploads_in_flight -= 1

    async def _receive(
        self, request: web.Request, rec: ImageRecord, store: str, claimed_size: int | None
    ) -> web.StreamResponse:
        fake = self.fake
        entry = fake.log_entry(request)
        cut_after = fake.faults.take_upload_cut(rec.id)
        flips = fake.faults.take_upload_flips(rec.id)
        digest = Digest()
        pieces: list[bytes] = []
        done = False
        try:
            while True:
                want = fake.chunk_size
                if cut_after is not None:
                    want = min(want, cut_after - digest.size)
                    if want <= 0:
                        entry.fault = "cut_upload"
                        _drop_connection(request)
                        # Never delivered: the connection is gone.
                        return web.Response(status=500)
                piece = await request.content.read(want)
                if not piece:
                    break
                piece = _flipped(piece, digest.size, flips)
                digest.update(piece)
                pieces.append(piece)
                rec.receiving = digest.size
            done = True
        except ConnectionError:
            entry.fault = "client_disconnected"
            return web.Response(status=500)
        finally:
            if not done:
                self._restore(rec)

        # glance takes the size from x-openstack-image-size, else Content-Length (0: unknown)
        known = claimed_size or request.content_length
        answer = self._finish_upload(rec, store, b"".join(pieces), digest, claimed_size, known)
        if fake.faults.take_lost_answer(rec.id):
            entry.fault = "lost_answer"
            _drop_connection(request)
        return answer

    def _finish_upload(
        self,
        rec: ImageRecord,
        store: str,
        data: bytes,
        digest: Digest,
        claimed_size: int | None,
        known: int | None,
    ) -> web.Response:
        if self.fake.images.get(rec.id) is not rec:
            raise fail(
                410,
                f"Image {rec.id} could not be found after upload. The image may "
                "have been deleted during the upload, cleaning up the chunks uploaded.",
            )
        certificate = _signature_certificate(rec)
        if certificate is not None and certificate not in self.fake.certificates:
            self._restore(rec)
            raise fail(
                400,
                f"Signature verification failed for image {rec.id}: Unable to retrieve certificate with ID: "
                f"{certificate}",
            )
        if self.fake.swift_fails_known_size(store, known):
            self._restore(rec)
            raise fail(500, SWIFT_SEGMENT_ERROR)
        if claimed_size is not None and claimed_size != digest.size:
            self._restore(rec)
            raise fail(
                400, f"Image size {digest.size} does not match the size {claimed_size} given in x-openstack-image-size."
            )
        if rec.disk_format == "qcow2" and not data.startswith(QCOW2_MAGIC):
            self._restore(rec)
            raise fail(415, "Image disk_format is qcow2 but the data is not a qcow2 image.")
        rec.store_bytes(data, [store], digest)
        self.fake.backend.written(rec, [store])
        rec.status = "active"
        rec.updated_at = self.fake.now()
        return web.Response(status=204)

    async def stage(self, request: web.Request) -> web.StreamResponse:
        """``PUT …/stage`` (glance/api/v2/image_data.py ``stage``): queued → uploading, the data
        kept in the staging store until a glance-direct import; a failed upload restores
        ``queued`` and (as glance_store's file driver does) drops the partial file."""
        fake = self.fake
        identity = fake.identity(request)
        rec = fake.lookup(request.match_info["image_id"], identity)
        fake.require_owner(rec, identity, "upload data to")
        if "glance-direct" not in fake.import_methods:
            raise fail(404, "The requested resource could not be found.")
        quota.enforce(fake, identity.project_id, "image_stage_total", quota.declared_mib(request.content_length))
        if rec.staged is not None:
            raise fail(409, f"The image {rec.id} has data on staging")
        if rec.status != "queued":
            raise fail(409, f"Image status transition from {rec.status} to uploading is not allowed")
        rec.status = "uploading"
        try:
            quota.enforce(fake, identity.project_id, "image_count_uploading")
        except web.HTTPException:
            rec.status = "queued"
            raise
        flips = fake.faults.take_upload_flips(rec.id)
        pieces: list[bytes] = []
        received = 0
        try:
            while piece := await request.content.read(fake.chunk_size):
                pieces.append(_flipped(piece, received, flips))
                received += len(piece)
        except ConnectionError:
            fake.log_entry(request).fault = "client_disconnected"
            rec.status = "queued"
            return web.Response(status=500)
        rec.staged = b"".join(pieces)
        rec.size = len(rec.staged)  # saved with the staged data: the one sign a client sees of a finished stage
        # As glance with worker_self_reference_url set; its serializer never shows it (model.HIDDEN_PROPERTIES).
        rec.properties["os_glance_stage_host"] = f"{request.scheme}://{request.host}{fake.prefix}"
        rec.updated_at = fake.now()
        return web.Response(status=204)

    def _restore(self, rec: ImageRecord) -> None:
        # Glance v2 puts a failed upload back to queued so it can be retried.
        if rec.status == "saving":
            rec.status = "queued"
            rec.data = {}
            rec.updated_at = self.fake.now()

    async def download(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        identity = fake.identity(request)
        rec = fake.lookup(request.match_info["image_id"], identity)
        if rec.status == "deactivated" and not identity.is_admin:
            raise fail(403, "The requested image has been deactivated. Image data download is forbidden.")
        ranged = "Range" in request.headers
        content = fake.backend.cached.get(rec.id) if not ranged else None
        if content is None:
            try:
                content = fake.backend.readable(rec, self._preferred(request), ranged=ranged and fake.honour_range)
            except RandomGetRefused:
                first, last = parse_range(request.headers["Range"], rec.size or 0)
                raise webob_error(
                    request,
                    400,
                    "Getting images randomly from this store is not supported. "
                    f"Offset: {first}, length: {last - first + 1}",
                ) from None
        if content is None or rec.status not in ("active", "deactivated"):
            return web.Response(status=204)
        if ranged and fake.faults.stale_ranges(rec.id) is not None:
            content = fake.faults.stale_ranges(rec.id)
            assert content is not None
        size = len(content)
        first, last = 0, size - 1
        headers = {"Content-Type": "application/octet-stream"}
        status = 200
        partial = None if ranged else fake.faults.take_partial(rec.id)
        if ranged and fake.honour_range:
            first, last = parse_range(request.headers["Range"], size)
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            status = 206
        elif partial is not None:
            last = min(partial, size) - 1
            headers["Content-Range"] = f"bytes 0-{last}/{size}"
            status = 206
        if rec.checksum:
            headers["Content-MD5"] = rec.checksum
        headers["Content-Length"] = str(last - first + 1)
        if rec.size is None:
            return self._sizeless(request, status, headers, content[first : last + 1])
        plan = fake.faults.take_download_plan(rec.id)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        try:
            await self._stream(request, response, content, first, last + 1, plan)
        except ConnectionError:
            fake.log_entry(request).fault = "client_disconnected"
        return response

    def _preferred(self, request: web.Request) -> list[str]:
        """The stores ``?prefer=`` names (glance 33, ``image_data.py`` ``download``): 400 for a store
        not configured or a single-store glance; older releases ignore the parameter."""
        stores = [s.strip() for s in request.query.get("prefer", "").split(",") if s.strip()]
        if not stores or not self.fake.profile.download_prefer:
            return []
        if not self.fake.download_from_store:  # the policy, when a cloud restricts it
            raise webob_error(request, 403, "You are not authorized to complete download_from_store action.")
        if not self.fake.multi_store:
            raise webob_error(
                request, 400, "Store selection for download is not available when multiple backends are not enabled."
            )
        for store in stores:
            if store not in self.fake.stores:
                raise webob_error(request, 400, f"Store '{store}' is not configured.")
        return stores

    def _sizeless(self, request: web.Request, status: int, headers: dict[str, str], body: bytes) -> web.Response:
        """Glance writes ``str(image.size)`` into ``Content-Length``: ``None`` for an image whose
        size was never recorded (glance/api/v2/image_data.py ``ResponseSerializer.download``,
        27.1.1 and master alike). aiohttp will not send that header, so the response is written
        to the socket by hand, and the connection closed after the body (as eventlet does)."""
        headers["Content-Length"] = "None"
        head = [f"HTTP/1.1 {status} OK", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
        transport = request.transport
        if transport is not None:
            transport.write("\r\n".join(head).encode("latin-1") + body)
            transport.close()
        self.fake.log_entry(request).fault = "sizeless_download"
        return web.Response(status=status)

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        content: bytes,
        start: int,
        stop: int,
        plan: DownloadPlan,
    ) -> None:
        entry = self.fake.log_entry(request)
        chunk = self.fake.chunk_size
        if plan.bytes_per_sec:
            # About ten writes a second, so throttled transfers still progress smoothly.
            chunk = max(1, min(chunk, int(plan.bytes_per_sec / 10)))
        limit = plan.cut_after if plan.cut_after is not None else plan.hang_after
        pos = start
        while pos < stop:
            end = min(pos + chunk, stop)
            if limit is not None:
                end = min(end, start + limit)
                if pos == start + limit:
                    break
            piece = _flipped(content[pos:end], pos, plan.flips)
            if plan.bytes_per_sec:
                # Wait before writing, so n bytes never arrive sooner than n / rate seconds.
                await asyncio.sleep(len(piece) / plan.bytes_per_sec)
            await response.write(piece)
            pos = end
        if pos == stop:
            return
        if plan.cut_after is not None:
            entry.fault = "cut_download"
            _drop_connection(request)
            return
        entry.fault = "hang_download"
        # Keep the connection open and silent until the client (or the server) closes it.
        while not _closed(request):
            await asyncio.sleep(_HANG_POLL)
