"""What is measured: the variants of one run, their repeats, and the medians.

Groups, in run order:

``single``       one large image: asyncmigrate verified/unverified, the naive
                 baselines, the raw ceiling and the hash-bound pipes (and the
                 same under uvloop + mallopt);
``concurrency``  asyncmigrate with default flags at 1, 2, 4, 8 workers, N images;
``size``         asyncmigrate with default flags, one image of each size
                 (the ``single`` group's image is one of the points);
``small``        many tiny images: images per second;
``experiment``   (``--experiments``) monkeypatched variants of asyncmigrate.

Repeats run round-robin (every variant once, then again), so a slow spell of
the machine hits every variant alike; each figure is the median of its repeats.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

from .pattern import MiB

__all__ = ["Variant", "plan", "run_group", "summarize"]

GiB = 1024 * MiB
INLINE = "digest-inline"
GROUPS = ("single", "concurrency", "size", "small", "experiment")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One thing to measure: a child spec and the source images it needs."""

    key: str
    group: str
    label: str
    spec: dict[str, Any]
    count: int = 1
    size: int = 0
    repeats: int = 3
    x: float | None = None  # concurrency or image size, for the plots
    ref: str | None = None  # reuse another variant's samples instead of measuring


@dataclasses.dataclass(frozen=True)
class Scale:
    """The sizes of a run (full or ``--quick``)."""

    single: int
    conc_count: int
    conc_size: int
    sizes: tuple[int, ...]
    small_count: int
    small_size: int


FULL = Scale(2 * GiB, 8, 256 * MiB, (100_000_000, 512 * MiB, 2 * GiB, 8 * GiB), 10_000, 1024)
QUICK = Scale(256 * MiB, 8, 64 * MiB, (10_000_000, 256 * MiB, 1 * GiB), 500, 1024)


def _am(verify: str = "full", **kw: Any) -> dict[str, Any]:
    return {"kind": "asyncmigrate", "verify": verify, **kw}


def plan(
    scale: Scale,
    *,
    repeats: int,
    tuning: str = "",
    uvloop_variants: bool = True,
    experiments: bool = False,
    small_concurrency: int = 4,
) -> list[Variant]:
    """Every variant of a run.  ``tuning`` applies to every child (``--uvloop``)."""
    big = max(scale.sizes)
    t = {"tuning": tuning} if tuning else {}
    s, n = scale.single, 1
    single = [
        Variant("single/naive", "single", "naive: requests GET → temp file → PUT", {"kind": "naive", **t}, n, s),
        Variant(
            "single/naive-hash",
            "single",
            "naive + md5 & sha512 (old scripts)",
            {"kind": "naive", "hash": ["md5", "sha512"], **t},
            n,
            s,
        ),
        Variant("single/pipe", "single", "raw ceiling: aiohttp GET → PUT pipe", {"kind": "pipe", **t}, n, s),
        Variant(
            "single/hashpipe",
            "single",
            "hash-bound pipe: + sha512 in loop",
            {"kind": "pipe", "hash": "sha512", **t},
            n,
            s,
        ),
        Variant(
            "single/hashpipe-thread",
            "single",
            "hash-bound pipe: + sha512 in 1 thread",
            {"kind": "pipe", "hash": "sha512-thread", **t},
            n,
            s,
        ),
        Variant("single/am-full", "single", "asyncmigrate verify=full", _am("full", **t), n, s),
        Variant("single/am-server", "single", "asyncmigrate verify=server", _am("server", **t), n, s),
    ]
    if uvloop_variants and not tuning:
        uv = {"tuning": "uvloop"}
        single += [
            Variant("single/pipe-uv", "single", "raw ceiling, uvloop+mallopt", {"kind": "pipe", **uv}, n, s),
            Variant(
                "single/hashpipe-uv",
                "single",
                "hash-bound pipe (loop), uvloop+mallopt",
                {"kind": "pipe", "hash": "sha512", **uv},
                n,
                s,
            ),
            Variant("single/am-full-uv", "single", "asyncmigrate full, uvloop+mallopt", _am("full", **uv), n, s),
            Variant("single/am-server-uv", "single", "asyncmigrate server, uvloop+mallopt", _am("server", **uv), n, s),
        ]
    conc = [
        Variant(
            f"concurrency/{c}",
            "concurrency",
            f"asyncmigrate c={c}, {scale.conc_count}×{scale.conc_size // MiB} MiB",
            _am(concurrency=c, **t),
            scale.conc_count,
            scale.conc_size,
            x=c,
        )
        for c in (1, 2, 4, 8)
    ]
    if uvloop_variants and not tuning:
        conc.append(
            Variant(
                "concurrency/8-uv",
                "concurrency",
                f"asyncmigrate c=8, uvloop+mallopt, {scale.conc_count}×{scale.conc_size // MiB} MiB",
                _am(concurrency=8, tuning="uvloop"),
                scale.conc_count,
                scale.conc_size,
                x=8,
            )
        )
    sizes = []
    for size in scale.sizes:
        label = f"asyncmigrate 1 image of {_human(size)}"
        if size == scale.single:
            sizes.append(Variant(f"size/{size}", "size", label, {}, x=size, size=size, ref="single/am-full"))
        else:
            sizes.append(Variant(f"size/{size}", "size", label, _am(**t), 1, size, 1 if size == big else repeats, size))
    small = [
        Variant(
            "small/default",
            "small",
            f"asyncmigrate {scale.small_count} × {scale.small_size} B, c={small_concurrency}",
            _am(concurrency=small_concurrency, **t),
            scale.small_count,
            scale.small_size,
            repeats=min(repeats, 2),
        )
    ]
    out = [dataclasses.replace(v, repeats=min(v.repeats, repeats)) for v in single + conc + sizes + small]
    if experiments:
        out += _experiments(scale, repeats)
    return out


def _experiments(scale: Scale, repeats: int) -> list[Variant]:
    s = scale.single
    uv = {"tuning": "uvloop"}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("digest-inline", "full, sha512 inline in the loop (no thread)", _am(patches=[INLINE])),
        ("digest-inline-uv", "full, sha512 inline, uvloop+mallopt", _am(patches=[INLINE], **uv)),
        ("digest-poll", "full, hash queue depth 1 (before)", _am(patches=["digest-poll"])),
        ("digest-poll-uv", "full, hash queue depth 1, uvloop+mallopt", _am(patches=["digest-poll"], **uv)),
        ("digest-poll2", "full, hash queue depth 2 (= default)", _am(patches=["digest-poll=2"])),
        ("digest-poll2-uv", "full, hash queue depth 2, uvloop+mallopt", _am(patches=["digest-poll=2"], **uv)),
        ("mallopt", "full, mallopt only (asyncio)", _am(tuning="mallopt")),
        ("uvloop-stock", "full, uvloop without mallopt", _am(tuning="uvloop-stock")),
        ("no-events", "full, no progress subscriber (emit=ignore)", _am(patches=["no-events"])),
        ("readany", "full, iter_any() instead of iter_chunked", _am(patches=["readany"])),
        ("readany-poll2", "full, iter_any() + hash queue depth 2", _am(patches=["readany", "digest-poll=2"])),
        ("readany-mallopt", "full, iter_any() + mallopt", _am(patches=["readany"], tuning="mallopt")),
        ("poll2-mallopt", "full, hash queue depth 2 + mallopt", _am(patches=["digest-poll=2"], tuning="mallopt")),
        ("rbuf-256k", "full, read_bufsize 256 KiB", _am(patches=["read-bufsize=262144"])),
        ("rbuf-4m", "full, read_bufsize 4 MiB", _am(patches=["read-bufsize=4194304"])),
        ("chunk-256k", "full, chunk 256 KiB", _am(chunk_size=256 * 1024)),
        ("chunk-4m", "full, chunk 4 MiB", _am(chunk_size=4 * MiB)),
        ("server-chunk-4m", "server, chunk 4 MiB", _am("server", chunk_size=4 * MiB)),
        ("server-mallopt", "server, mallopt only (asyncio)", _am("server", tuning="mallopt")),
        ("server-uvloop-stock", "server, uvloop without mallopt", _am("server", tuning="uvloop-stock")),
        ("chunks", "full, chunk-size statistics", _am(patches=["chunk-stats"])),
    ]
    out = [Variant(f"experiment/{k}", "experiment", label, spec, 1, s, repeats) for k, label, spec in cases]
    c8 = [
        ("c8-inline", "c=8, digest inline", _am(concurrency=8, patches=[INLINE])),
        ("c8-poll", "c=8, hash queue depth 1", _am(concurrency=8, patches=["digest-poll"])),
        ("c8-poll-uv", "c=8, hash queue depth 1, uvloop+mallopt", _am(concurrency=8, patches=["digest-poll"], **uv)),
        ("c8-chunk-256k", "c=8, chunk 256 KiB", _am(concurrency=8, chunk_size=256 * 1024)),
    ]
    out += [
        Variant(f"experiment/{k}", "experiment", label, spec, scale.conc_count, scale.conc_size, repeats, x=8)
        for k, label, spec in c8
    ]
    for c in (8, 16, 32):
        out.append(
            Variant(
                f"experiment/small-c{c}",
                "experiment",
                f"small images, c={c}",
                _am(concurrency=c),
                scale.small_count,
                scale.small_size,
                min(repeats, 2),
            )
        )
    return out


def _human(n: int) -> str:
    if n % GiB == 0:
        return f"{n // GiB} GiB"
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n / 1e6:g} MB"


Measure = Callable[[Variant], dict[str, Any]]


def run_group(variants: list[Variant], measure: Measure, samples: dict[str, list[dict[str, Any]]], log: Any) -> None:
    """Measure each variant ``repeats`` times, round-robin; append to ``samples[key]``."""
    todo = [v for v in variants if v.ref is None]
    for r in range(max((v.repeats for v in todo), default=0)):
        for v in todo:
            if r >= v.repeats:
                continue
            started = time.perf_counter()
            result = measure(v)
            samples.setdefault(v.key, []).append(result)
            log(v, r, result, time.perf_counter() - started)


def summarize(v: Variant, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of a variant's repeats (failed repeats are counted, not averaged)."""
    good = [r for r in runs if "error" not in r and r.get("seconds")]
    out: dict[str, Any] = {
        "key": v.key,
        "group": v.group,
        "label": v.label,
        "x": v.x,
        "images": v.count,
        "image_size": v.size,
        "repeats": len(good),
        "failed": len(runs) - len(good),
        "errors": sorted({r["error"] for r in runs if "error" in r}),
    }
    if not good:
        return out

    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return float(statistics.median(f(r) for r in good))

    out.update(
        mib_s=med(lambda r: r["bytes"] / MiB / r["seconds"]),
        images_s=med(lambda r: r["images"] / r["seconds"]),
        seconds=med(lambda r: r["seconds"]),
        client_cpu_s_per_gib=med(lambda r: r["cpu"] / max(r["bytes"] / GiB, 1e-9)),
        client_cpu_s=med(lambda r: r["cpu"]),
        server_cpu_s_per_gib=med(lambda r: r.get("server_cpu", 0.0) / max(r["bytes"] / GiB, 1e-9)),
        peak_rss_mib=med(lambda r: r["hwm_kib"] / 1024),
        rss_before_mib=med(lambda r: r.get("rss_before_kib", 0) / 1024),
        samples_mib_s=[round(r["bytes"] / MiB / r["seconds"], 1) for r in good],
        samples_peak_rss_mib=[round(r["hwm_kib"] / 1024, 1) for r in good],
    )
    chunks = [r["chunks"] for r in good if "chunks" in r]
    if chunks:
        out["chunks"] = chunks[0]
    out["others_cores"] = max(r.get("others_cores", 0.0) for r in good)
    return out
