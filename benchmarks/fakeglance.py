"""A fast fake Glance v2 for benchmarks, run in its own process.

    python -m benchmarks.fakeglance [--port 0] [--uvloop]

prints one JSON line ``{"port": N, "pid": P}`` once it listens on 127.0.0.1.

It answers what ``asyncmigrate.copy_images`` uses, as glance-api 33 does:
``GET /versions``, ``GET /v2/info/import`` (single-store: ``/v2/info/stores``
is a 404), ``GET/POST /v2/images`` (``limit`` default 25, max 1000, ``marker``, ``next``
links, ``os_hidden`` passes), ``GET/PATCH/DELETE /v2/images/{id}``,
``PUT/GET /v2/images/{id}/file`` (``Range``, ``Content-MD5``), members,
deactivate.  Image data is never stored: a source image's bytes are the
:mod:`benchmarks.pattern` stream, served as memoryview slices.

An upload is recorded as Glance records it — size, md5 ``checksum``, sha512
``os_hash_value`` of the bytes received — but cheaply: while every chunk
matches the pattern (a memcmp), the digests are those the runner computed
once for that size.  On the first byte that differs the fake switches to real
hashing (re-hashing the pattern prefix it already accepted), so a client that
corrupts data gets a different recorded hash, as from Glance.  The cost of the
real server's hashing is measured separately, against the real Glance pair.

``/_bench/*`` is the runner's control API: reset, seed images, digest table,
CPU seconds used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import resource
import sys
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .pattern import MiB, Pattern

__all__ = ["FakeGlance", "image_id", "main"]

READ_ONLY = frozenset(
    {
        "status", "created_at", "updated_at", "size", "virtual_size", "checksum", "os_hash_algo",
        "os_hash_value", "locations", "direct_url", "self", "file", "schema", "stores",
    }
)  # fmt: skip
OWNER = "b0b0b0b0b0b04b0b8b0b0b0b0b0b0b01"
SEND_PIECE = int(__import__("os").environ.get("BENCH_SEND_PIECE", MiB))  # bytes per write when serving data
JSON_PATCH = "application/openstack-images-v2.1-json-patch"


def image_id(prefix: int, index: int) -> str:
    """A reproducible UUID: seeded images get the same ids on every run."""
    return str(uuid.UUID(int=(prefix << 64) | index, version=4))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, text: str) -> web.Response:
    cls = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound, 409: web.HTTPConflict}
    raise cls[status](text=text, headers={"x-openstack-request-id": "req-bench"})


class _Upload:
    """Digests of an upload: free while the bytes follow the pattern, real once they do not."""

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.count = 0
        self.hashes: list[Any] | None = None  # [md5, sha512] once the bytes diverge

    def feed(self, data: bytes) -> None:
        if self.hashes is None and not self.pattern.matches(self.count, data):
            self.hashes = [hashlib.md5(), hashlib.sha512()]
            for piece in self.pattern.pieces(0, self.count, 8 * MiB):
                for h in self.hashes:
                    h.update(piece)
        if self.hashes is not None:
            for h in self.hashes:
                h.update(data)
        self.count += len(data)

    def digests(self, known: dict[int, dict[str, str]]) -> tuple[str, str]:
        if self.hashes is None:
            if self.count not in known:  # a size the runner did not announce: hash the prefix
                md5, sha = hashlib.md5(), hashlib.sha512()
                for piece in self.pattern.pieces(0, self.count, 8 * MiB):
                    md5.update(piece)
                    sha.update(piece)
                known[self.count] = {"md5": md5.hexdigest(), "sha512": sha.hexdigest()}
            d = known[self.count]
            return d["md5"], d["sha512"]
        return self.hashes[0].hexdigest(), self.hashes[1].hexdigest()


class FakeGlance:
    """The images, their (virtual) data and the HTTP routes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pattern = Pattern()
        self.images: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, str]] = {}
        self.known: dict[int, dict[str, str]] = {}
        self.requests = 0
        self.app = web.Application(client_max_size=16 * MiB)
        self.app.middlewares.append(self._count)
        r = self.app.router
        r.add_get("/versions", self.versions)
        r.add_get("/v2/info/import", self.info_import)
        r.add_get("/v2/images", self.list_images)
        r.add_post("/v2/images", self.create)
        r.add_get("/v2/images/{id}", self.show)
        r.add_patch("/v2/images/{id}", self.patch)
        r.add_delete("/v2/images/{id}", self.delete)
        r.add_put("/v2/images/{id}/file", self.upload)
        r.add_get("/v2/images/{id}/file", self.download)
        r.add_post("/v2/images/{id}/actions/deactivate", self.deactivate)
        r.add_post("/v2/images/{id}/actions/reactivate", self.reactivate)
        r.add_get("/v2/images/{id}/members", self.list_members)
        r.add_post("/v2/images/{id}/members", self.add_member)
        r.add_put("/v2/images/{id}/members/{member}", self.set_member)
        r.add_post("/_bench/reset", self.reset)
        r.add_post("/_bench/seed", self.seed)
        r.add_post("/_bench/known", self.add_known)
        r.add_get("/_bench/stats", self.stats)

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        resp: web.StreamResponse = await handler(request)
        return resp

    # -- records --------------------------------------------------------------

    def _record(self, body: dict[str, Any]) -> dict[str, Any]:
        iid = str(body.get("id") or uuid.uuid4())
        now = _now()
        rec: dict[str, Any] = {
            "name": None,
            "disk_format": None,
            "container_format": None,
            "visibility": "shared",
            "protected": False,
            "os_hidden": False,
            "min_disk": 0,
            "min_ram": 0,
            "tags": [],
            "owner": OWNER,
        }
        rec.update({k: v for k, v in body.items() if k != "id"})
        rec.update(
            id=iid,
            status="queued",
            size=None,
            virtual_size=None,
            checksum=None,
            os_hash_algo=None,
            os_hash_value=None,
            created_at=now,
            updated_at=now,
            self=f"/v2/images/{iid}",
            file=f"/v2/images/{iid}/file",
            schema="/v2/schemas/image",
        )
        return rec

    def _get(self, request: web.Request) -> dict[str, Any]:
        rec = self.images.get(request.match_info["id"])
        if rec is None:
            _error(404, "No image found with ID " + request.match_info["id"])
        assert rec is not None
        return rec

    # -- images ---------------------------------------------------------------

    async def versions(self, request: web.Request) -> web.Response:
        """glance 33's version document (single-store: /v2/info/stores is a 404 here)."""
        ids = [("v2.17", "CURRENT")] + [(f"v2.{n}", "SUPPORTED") for n in (15, 9, 7, 6, 5, 4, 3, 2, 1, 0)]
        return web.json_response({"versions": [{"id": i, "status": st, "links": []} for i, st in ids]})

    async def info_import(self, request: web.Request) -> web.Response:
        """The import methods glance 33 offers by default."""
        methods = ["glance-direct", "web-download", "copy-image"]
        return web.json_response({"import-methods": {"description": "Import methods available.", "value": methods}})

    async def list_images(self, request: web.Request) -> web.Response:
        q = request.query
        limit = min(int(q.get("limit", 25)), 1000)
        hidden = q.get("os_hidden", "false").lower() == "true"
        visibility = q.get("visibility", "all")
        ids = list(self.images)
        start = 0
        if "marker" in q:
            try:
                start = ids.index(q["marker"]) + 1
            except ValueError:
                _error(400, "marker not found")
        page: list[dict[str, Any]] = []
        for iid in ids[start:]:
            rec = self.images[iid]
            if bool(rec.get("os_hidden")) != hidden:
                continue
            if visibility != "all" and rec.get("visibility") != visibility:
                continue
            page.append(rec)
            if len(page) == limit:
                break
        body: dict[str, Any] = {"images": page, "first": "/v2/images", "schema": "/v2/schemas/images"}
        if len(page) == limit:
            params = {k: v for k, v in q.items() if k != "marker"}
            params["marker"] = page[-1]["id"]
            body["next"] = "/v2/images?" + urlencode(params)
        return web.json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        bad = sorted(k for k in body if k in READ_ONLY or k.startswith("os_glance_"))
        if bad:
            _error(403, f"Attribute '{bad[0]}' is read-only.")
        rec = self._record(body)
        if rec["id"] in self.images:
            _error(409, f"Image with identifier {rec['id']} already exists!")
        self.images[rec["id"]] = rec
        return web.json_response(rec, status=201)

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(self._get(request))

    async def patch(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        if request.content_type != JSON_PATCH:
            _error(400, "bad content type")
        for op in await request.json():
            key = op["path"].lstrip("/")
            if key in READ_ONLY or key == "id":
                _error(403, f"Attribute '{key}' is read-only.")
            if op["op"] in ("add", "replace"):
                rec[key] = op["value"]
            elif op["op"] == "remove":
                rec.pop(key, None)
        rec["updated_at"] = _now()
        return web.json_response(rec)

    async def delete(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        if rec.get("protected"):
            _error(403, "Image is protected")
        del self.images[rec["id"]]
        return web.Response(status=204)

    async def deactivate(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        if rec["status"] not in ("active", "deactivated"):
            _error(400, "Not allowed to deactivate image in status " + rec["status"])
        rec["status"] = "deactivated"
        return web.Response(status=204)

    async def reactivate(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        rec["status"] = "active"
        return web.Response(status=204)

    # -- data -----------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        if rec["status"] != "queued":
            _error(409, f"Image status transition from {rec['status']} to saving is not allowed")
        rec["status"] = "saving"
        upload = _Upload(self.pattern)
        try:
            async for data in request.content.iter_any():
                upload.feed(data)
            if request.content_length is not None and upload.count != request.content_length:
                raise ConnectionError("short body")
        except BaseException:
            rec["status"] = "queued"  # as Glance: a broken upload leaves the image queued
            raise
        md5, sha512 = upload.digests(self.known)
        rec.update(
            status="active",
            size=upload.count,
            checksum=md5,
            os_hash_algo="sha512",
            os_hash_value=sha512,
            stores="main",
            updated_at=_now(),
        )
        return web.Response(status=204)

    async def download(self, request: web.Request) -> web.StreamResponse:
        rec = self._get(request)
        if rec["status"] == "deactivated":
            _error(403, "The requested image has been deactivated.")
        size = rec.get("size")
        if rec["status"] != "active" or not size:
            return web.Response(status=204)
        start, status = 0, 200
        resp = web.StreamResponse(status=200)
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            status = 206
            resp.set_status(206)
            resp.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        resp.content_type = "application/octet-stream"
        resp.content_length = size - start
        if status == 200:
            resp.headers["Content-MD5"] = rec["checksum"]
        await resp.prepare(request)
        for piece in self.pattern.pieces(start, size, SEND_PIECE):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    # -- members --------------------------------------------------------------

    async def list_members(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        members = [
            {"image_id": rec["id"], "member_id": m, "status": s, "schema": "/v2/schemas/member"}
            for m, s in self.members.get(rec["id"], {}).items()
        ]
        return web.json_response({"members": members, "schema": "/v2/schemas/members"})

    async def add_member(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        member = (await request.json())["member"]
        members = self.members.setdefault(rec["id"], {})
        if member in members:
            _error(409, "Member already exists")
        members[member] = "pending"
        return web.json_response({"image_id": rec["id"], "member_id": member, "status": "pending"})

    async def set_member(self, request: web.Request) -> web.Response:
        rec = self._get(request)
        member = request.match_info["member"]
        members = self.members.get(rec["id"], {})
        if member not in members:
            _error(404, "Not a member")
        members[member] = (await request.json())["status"]
        return web.json_response({"image_id": rec["id"], "member_id": member, "status": members[member]})

    # -- control --------------------------------------------------------------

    async def reset(self, request: web.Request) -> web.Response:
        self.images.clear()
        self.members.clear()
        return web.json_response({"ok": True})

    async def add_known(self, request: web.Request) -> web.Response:
        for size, d in (await request.json()).items():
            self.known[int(size)] = d
        return web.json_response({"known": len(self.known)})

    async def seed(self, request: web.Request) -> web.Response:
        """``{"prefix": P, "count": N, "size": S, "md5": .., "sha512": ..}`` → N active images."""
        spec = await request.json()
        size = int(spec["size"])
        self.known[size] = {"md5": spec["md5"], "sha512": spec["sha512"]}
        ids = []
        for i in range(int(spec["count"])):
            iid = image_id(int(spec["prefix"]), i)
            rec = self._record(
                {
                    "id": iid,
                    "name": f"bench-{spec['prefix']}-{i}",
                    "disk_format": "raw",
                    "container_format": "bare",
                    "visibility": spec.get("visibility", "private"),
                }
            )
            rec.update(status="active", size=size, checksum=spec["md5"], os_hash_algo="sha512")
            rec.update(os_hash_value=spec["sha512"], stores="main")
            self.images[iid] = rec
            ids.append(iid)
        return web.json_response({"ids": ids})

    async def stats(self, request: web.Request) -> web.Response:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        active = sum(1 for r in self.images.values() if r["status"] == "active")
        return web.json_response(
            {
                "cpu": ru.ru_utime + ru.ru_stime,
                "images": len(self.images),
                "active": active,
                "requests": self.requests,
                "maxrss_kib": ru.ru_maxrss,
            }
        )


async def _serve(name: str, port: int) -> None:
    fake = FakeGlance(name)
    # A big read buffer: the upload handler sees few, large chunks.
    runner = web.AppRunner(fake.app, access_log=None, read_bufsize=4 * MiB)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1]
    print(json.dumps({"port": bound, "pid": __import__("os").getpid()}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fakeglance")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--uvloop", action="store_true", help="uvloop + glibc mallopt (see benchmarks.tuning)")
    args = parser.parse_args(argv)
    if args.uvloop:
        from .tuning import install_uvloop

        install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.name, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
