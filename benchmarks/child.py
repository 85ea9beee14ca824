"""One measurement, in its own process, so CPU time and peak RSS are its own.

    python -m benchmarks.child '<json spec>'

prints one JSON line: ``seconds`` (wall time of the transfer only), ``bytes``,
``images``, ``cpu`` (user + system seconds of this process, every thread,
during the transfer), ``rss_before_kib`` (VmRSS just before the transfer: the
imports), ``hwm_kib`` (VmHWM at the end: the peak of the whole process).

Kinds (``spec["kind"]``):

``asyncmigrate``
    ``asyncmigrate.copy_images`` from cloud ``bench-src`` to ``bench-dst``
    (``OS_CLIENT_CONFIG_FILE`` is set by the runner), every source image, with
    a CLI-like ``Stats`` subscriber receiving every progress event
    (``spec["clouds"]`` and ``spec["only_ids"]`` for the real Glance pair;
    ``spec["names"]``: only images whose name matches one of these globs, as
    ``--name``; ``spec["expect"]``: the outcome every image must have, default
    ``copied`` — ``skipped`` for a re-run with nothing to do; ``spec["metrics_addr"]``:
    also serve ``/metrics`` there from a :class:`asyncmigrate.metrics.Metrics`
    subscriber, as ``--metrics-addr`` does).
``minimal``
    the least any copy of small images must send, in aiohttp at
    ``spec["concurrency"]`` images at once: list the source in pages of 1,000
    (keeping names starting with ``spec["prefix"]``), then per image download
    the data, ``POST`` the destination image (same id, name, formats,
    visibility), ``PUT`` the data, ``GET`` the record and compare its
    ``os_hash_value`` — nothing else (no members, no retries, no discovery).
``naive``
    what simple migration scripts do, in plain ``requests``: GET the record,
    POST the destination image, download the data to a temporary file
    (hashing it with ``spec["hash"]`` algorithms, compared with the record),
    then PUT the file, then GET the destination record.
``pipe``
    the raw ceiling: ``resp.content.iter_chunked(1 MiB)`` → an async generator
    body of ``session.put``, no logic.  ``spec["hash"]`` adds the hash-bound
    pipe: ``"sha512"`` hashed inline on the loop thread, ``"sha512-thread"``
    in a one-thread executor, pipelined (one chunk in flight).

``spec["tuning"]``: ``"uvloop"`` (uvloop policy + glibc mallopt, see
:mod:`benchmarks.tuning`) or ``"mallopt"`` (mallopt only) before anything runs.
``spec["patches"]``: experiments on asyncmigrate applied by monkeypatching in
this process only (see :data:`PATCHES`) — the package is never edited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["PATCHES", "main"]

MiB = 1024 * 1024


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- experiments on asyncmigrate (monkeypatches, this process only) ------------------

CHUNK_SIZES: list[int] = []


def _patch_digest_inline(_arg: str) -> None:
    """Hash on the event-loop thread: no executor, no thread hop per chunk."""
    from asyncmigrate import stream

    async def feed(self: Any, chunk: bytes) -> None:
        self._hash.update(chunk)

    stream.Digest.feed = feed  # type: ignore[method-assign]


def _patch_digest_poll(arg: str) -> None:
    """Hash-thread queue depth ``=N`` (default 1); asyncmigrate ships ``Digest.DEPTH = 2``."""
    from asyncmigrate import stream

    stream.Digest.DEPTH = int(arg or 1)


def _patch_read_bufsize(arg: str) -> None:
    """Force the aiohttp sessions' read_bufsize (bytes) whatever chunk_size is."""
    import aiohttp

    size = int(arg)
    original = aiohttp.ClientSession.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        kw["read_bufsize"] = size
        original(self, *a, **kw)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]


def _patch_chunk_stats(_arg: str) -> None:
    """Record the length of every chunk the source download yields."""
    from asyncmigrate import glance

    original = glance.Download.chunks

    async def chunks(self: Any) -> AsyncIterator[bytes]:
        async for chunk in original(self):
            CHUNK_SIZES.append(len(chunk))
            yield chunk

    glance.Download.chunks = chunks  # type: ignore[method-assign]


def _patch_readany(_arg: str) -> None:
    """Read the source with ``iter_any()`` (whatever the socket gave, no re-slicing)
    instead of ``iter_chunked(chunk_size)``."""
    from asyncmigrate import glance

    async def chunks(self: Any) -> AsyncIterator[bytes]:
        async for chunk in self._resp.content.iter_any():
            yield chunk

    glance.Download.chunks = chunks  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[str], None]] = {
    "digest-inline": _patch_digest_inline,
    "digest-poll": _patch_digest_poll,
    "read-bufsize": _patch_read_bufsize,
    "chunk-stats": _patch_chunk_stats,
    "readany": _patch_readany,
    "no-events": lambda _arg: None,  # handled in _asyncmigrate: emit=ignore
}


# -- kinds --------------------------------------------------------------------


def _both(first: Any, second: Any) -> Any:
    def emit(event: Any) -> None:
        first(event)
        second(event)

    return emit


async def _asyncmigrate(spec: dict[str, Any]) -> dict[str, Any]:
    from asyncmigrate import CopyConfig, copy_images, load_cloud
    from asyncmigrate.progress import Stats, ignore
    from asyncmigrate.selection import Selection

    for patch in spec.get("patches", []):
        name, _, arg = patch.partition("=")
        PATCHES[name](arg)
    src_name, dst_name = spec.get("clouds", ["bench-src", "bench-dst"])
    src = await load_cloud(src_name)
    dst = await load_cloud(dst_name)
    config = CopyConfig(
        concurrency=spec.get("concurrency", 4),
        chunk_size=spec.get("chunk_size", MiB),
        verify=spec.get("verify", "full"),
        image_ids=tuple(spec.get("only_ids", ())),
        selection=Selection(names=tuple(spec.get("names", ()))),
    )
    emit: Any = ignore if "no-events" in spec.get("patches", []) else Stats()
    async with contextlib.AsyncExitStack() as stack:
        if spec.get("metrics_addr"):  # --metrics-addr as the CLI serves it: one more subscriber
            from asyncmigrate.metrics import Metrics, serve

            server = await stack.enter_async_context(serve(spec["metrics_addr"], Metrics("copy")))
            emit = _both(emit, server.metrics)
        rss = _status("VmRSS")
        cpu0, t0 = _cpu(), time.perf_counter()
        run = await copy_images(config, src, dst, emit=emit)
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    expect = spec.get("expect", "copied")
    bad = [(r.id, r.outcome, r.reason) for r in run.images if r.outcome != expect]
    out: dict[str, Any] = {
        "seconds": seconds,
        "cpu": cpu,
        "bytes": run.bytes,
        "images": len(run.images),
        "rss_before_kib": rss,
    }
    if bad:
        out["error"] = f"{len(bad)} images not {expect}, e.g. {bad[0]}"
    elif spec.get("count") is not None and len(run.images) != spec["count"]:
        out["error"] = f"{len(run.images)} images selected, expected {spec['count']}"
    if CHUNK_SIZES:
        sizes = sorted(CHUNK_SIZES)
        out["chunks"] = {
            "count": len(sizes),
            "median": sizes[len(sizes) // 2],
            "p10": sizes[len(sizes) // 10],
            "max": sizes[-1],
        }
    return out


def _naive(spec: dict[str, Any]) -> dict[str, Any]:
    import requests

    src, dst = spec["src_url"], spec["dst_url"]
    algos: list[str] = spec.get("hash", [])
    http = requests.Session()
    http.trust_env = False  # loopback only, never a proxy
    rss = _status("VmRSS")
    cpu0, t0 = _cpu(), time.perf_counter()
    moved = 0
    for iid in spec["image_ids"]:
        image = http.get(f"{src}/v2/images/{iid}").json()
        body = {k: image[k] for k in ("id", "name", "disk_format", "container_format", "visibility")}
        http.post(f"{dst}/v2/images", json=body).raise_for_status()
        with tempfile.TemporaryFile(prefix="bench-naive-") as f:
            hashes = [hashlib.new(a) for a in algos]
            with http.get(f"{src}/v2/images/{iid}/file", stream=True) as resp:
                resp.raise_for_status()
                for chunk in resp.iter_content(MiB):
                    f.write(chunk)
                    for h in hashes:
                        h.update(chunk)
            for h in hashes:
                recorded = image["checksum"] if h.name == "md5" else image["os_hash_value"]
                if h.hexdigest() != recorded:
                    raise RuntimeError(f"{h.name} mismatch")
            size = f.tell()
            f.seek(0)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            http.put(f"{dst}/v2/images/{iid}/file", data=f, headers=headers).raise_for_status()
        copied = http.get(f"{dst}/v2/images/{iid}").json()
        if copied["status"] != "active" or copied["os_hash_value"] != image["os_hash_value"]:
            raise RuntimeError(f"destination recorded {copied['status']} {copied['os_hash_value']}")
        moved += size
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {"seconds": seconds, "cpu": cpu, "bytes": moved, "images": len(spec["image_ids"]), "rss_before_kib": rss}


async def _pipe(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    src, dst = spec["src_url"], spec["dst_url"]
    chunk_size = spec.get("chunk_size", MiB)
    mode = spec.get("hash", "")
    moved = 0
    async with aiohttp.ClientSession(read_bufsize=spec.get("read_bufsize", chunk_size)) as http:
        images = []
        for iid in spec["image_ids"]:  # set-up, not timed: the records and queued images
            async with http.get(f"{src}/v2/images/{iid}") as r:
                image = await r.json()
            async with http.post(f"{dst}/v2/images", json={"id": iid, "name": image["name"]}) as r:
                assert r.status == 201, r.status
            images.append(image)
        rss = _status("VmRSS")
        cpu0, t0 = _cpu(), time.perf_counter()
        for image in images:
            iid = image["id"]
            h = hashlib.new(mode.split("-")[0]) if mode else None
            pool = ThreadPoolExecutor(1) if mode.endswith("-thread") else None
            async with http.get(f"{src}/v2/images/{iid}/file") as resp:
                size = resp.content_length or 0

                async def body(
                    resp: aiohttp.ClientResponse = resp, h: Any = h, pool: Any = pool
                ) -> AsyncIterator[bytes]:
                    pending = None
                    async for chunk in resp.content.iter_chunked(chunk_size):
                        if pool is not None:
                            if pending is not None:
                                await pending
                            pending = asyncio.wrap_future(pool.submit(h.update, chunk))
                        elif h is not None:
                            h.update(chunk)
                        yield chunk
                    if pending is not None:
                        await pending

                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                async with http.put(f"{dst}/v2/images/{iid}/file", data=body(), headers=headers) as up:
                    if up.status != 204:
                        raise RuntimeError(f"upload answered {up.status}")
            if pool is not None:
                pool.shutdown()
            if h is not None and h.hexdigest() != image["os_hash_value"]:
                raise RuntimeError("digest mismatch")
            moved += size
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {"seconds": seconds, "cpu": cpu, "bytes": moved, "images": len(images), "rss_before_kib": rss}


async def _minimal(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    src, dst, prefix = spec["src_url"], spec["dst_url"], spec["prefix"]
    concurrency = spec.get("concurrency", 8)
    moved = 0
    connector = aiohttp.TCPConnector(limit=2 * concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        rss = _status("VmRSS")
        cpu0, t0 = _cpu(), time.perf_counter()
        images: list[dict[str, Any]] = []
        path: str | None = "/v2/images?limit=1000"
        while path:
            async with http.get(src + path) as r:
                r.raise_for_status()
                page = await r.json()
            images += [i for i in page["images"] if str(i.get("name") or "").startswith(prefix)]
            path = page.get("next")

        async def copy(image: dict[str, Any]) -> int:
            iid = image["id"]
            async with http.get(f"{src}/v2/images/{iid}/file") as down:
                down.raise_for_status()
                data = await down.read()  # small images: the whole body
            body = {k: image[k] for k in ("id", "name", "disk_format", "container_format", "visibility")}
            async with http.post(f"{dst}/v2/images", json=body) as r:
                if r.status != 201:
                    raise RuntimeError(f"create {iid}: {r.status} {await r.text()}")
            headers = {"Content-Type": "application/octet-stream"}
            async with http.put(f"{dst}/v2/images/{iid}/file", data=data, headers=headers) as r:
                if r.status != 204:
                    raise RuntimeError(f"upload {iid}: {r.status} {await r.text()}")
            async with http.get(f"{dst}/v2/images/{iid}") as r:
                copied = await r.json()
            if copied["status"] != "active" or copied["os_hash_value"] != image["os_hash_value"]:
                raise RuntimeError(f"{iid}: destination recorded {copied['status']} {copied['os_hash_value']}")
            return len(data)

        todo = iter(images)

        async def worker() -> None:
            nonlocal moved
            for image in todo:  # each worker takes the next image: `concurrency` in flight
                n = await copy(image)  # (not `moved += await …`: that reads `moved` before awaiting)
                moved += n

        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    out: dict[str, Any] = {"seconds": seconds, "cpu": cpu, "bytes": moved, "images": len(images), "rss_before_kib": rss}
    if spec.get("count") is not None and len(images) != spec["count"]:
        out["error"] = f"{len(images)} images listed with prefix {prefix!r}, expected {spec['count']}"
    return out


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]`` (``-``: read it from stdin); print the result as one JSON line."""
    spec = json.loads(sys.stdin.read() if argv[1] == "-" else argv[1])
    tuning = spec.get("tuning", "")
    if tuning == "uvloop":
        from .tuning import install_uvloop

        install_uvloop()
    elif tuning == "mallopt":
        from .tuning import mallopt

        mallopt()
    elif tuning == "uvloop-stock":
        from .tuning import install_uvloop

        install_uvloop(with_mallopt=False)
    kind = spec["kind"]
    try:
        if kind == "asyncmigrate":
            out = asyncio.run(_asyncmigrate(spec))
        elif kind == "naive":
            out = _naive(spec)
        elif kind == "pipe":
            out = asyncio.run(_pipe(spec))
        elif kind == "minimal":
            out = asyncio.run(_minimal(spec))
        else:
            raise ValueError(f"unknown kind {kind!r}")
    except Exception as exc:  # reported to the runner, which shows it in the table
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["hwm_kib"] = _status("VmHWM")
    out["cpu_total"] = _cpu()
    out["pid"] = os.getpid()
    print(json.dumps(out), flush=True)
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
