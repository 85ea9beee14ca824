"""What ``--metrics-addr`` costs a run: the same copy with and without it, scraped every second.

    python -m benchmarks.metrics [--rounds 5] [--large-mib 256 --large 4] [--small-kib 64 --small 400]

Against the two fake Glance processes (:class:`~benchmarks.servers.FakePair`), two
workloads — a few large images (the byte path: one metric increment per chunk) and
many small ones (the request path: one event per HTTP request, several per image) —
each copied by a :mod:`benchmarks.child` (``copy_images`` with the CLI's ``Stats``
subscriber, every progress event) in rounds that alternate the order of the two
variants (off, on) so drift on a shared machine falls on both alike:

* ``off``: no metrics;
* ``on``: what ``--metrics-addr 127.0.0.1:<port>`` adds — the :class:`~asyncmigrate.metrics.Metrics`
  subscriber and its HTTP server — while a scraper thread here ``GET /metrics`` every
  second for the whole run (its answer times recorded).

Before each run the fakes are reset and reseeded and the machine is let go quiet
(:func:`~benchmarks.servers.measure`).  Measured per run: the transfer's seconds and the
child's CPU seconds during it (imports and start-up excluded: importing
``prometheus_client`` and ``aiohttp.web`` is a one-time cost, measured separately).
Reported: the median of the rounds per variant, the overheads ``1 - rate_on / rate_off``
and ``cpu_on / cpu_off - 1``, and what other processes used meanwhile.  On a shared
machine those end-to-end figures carry more noise than the overhead itself, so each
workload is also copied once in this process with every call of the subscriber timed
(:func:`in_subscriber`): the share of the run spent in it.  Written to
``benchmarks/results/metrics.json``.  Nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .pattern import MiB
from .servers import ROOT, FakePair, measure

__all__ = ["main", "run_once"]

RESULTS = ROOT / "benchmarks" / "results" / "metrics.json"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Scraper(threading.Thread):
    """GET ``url`` every ``interval`` seconds until stopped; keeps each answer's seconds."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.times: list[float] = []
        self.failures = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            t0 = time.perf_counter()
            try:
                with _HTTP.open(self.url, timeout=5) as resp:
                    resp.read()
                self.times.append(time.perf_counter() - t0)
            except OSError:
                self.failures += 1  # before the port is bound, or after the run

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_once(pair: FakePair, count: int, size: int, *, metrics: bool, concurrency: int = 4) -> dict[str, Any]:
    """Reseed ``count`` images of ``size`` bytes and copy them once (a :mod:`benchmarks.child`
    running ``copy_images`` with the CLI's subscribers); the transfer's seconds and CPU."""
    pair.reset()
    pair.seed(7, count, size)
    spec: dict[str, Any] = {"kind": "asyncmigrate", "concurrency": concurrency, "count": count}
    scraper = None
    if metrics:
        port = _free_port()
        spec["metrics_addr"] = f"127.0.0.1:{port}"
        scraper = _Scraper(f"http://127.0.0.1:{port}/metrics")
        scraper.start()
    try:
        result = measure(pair, spec)
    finally:
        if scraper is not None:
            scraper.stop()
    if "error" in result:
        raise RuntimeError(result["error"])
    result["rate"] = result["bytes"] / result["seconds"]
    if scraper is not None:
        result["scrapes"] = len(scraper.times)
        result["scrape_seconds_median"] = statistics.median(scraper.times) if scraper.times else None
    return result


def in_subscriber(pair: FakePair, count: int, size: int, concurrency: int = 4) -> dict[str, Any]:
    """The same copy in this process, timing every call of the Metrics subscriber: the share
    of the run spent in it (what the endpoint costs the event loop, less the rare scrapes),
    the events by kind, and what rendering one scrape costs at the end of the run."""
    import asyncio
    import os
    from collections import Counter

    from asyncmigrate import CopyConfig, copy_images, load_cloud
    from asyncmigrate.metrics import Metrics
    from asyncmigrate.progress import Event, Stats

    pair.reset()
    pair.seed(7, count, size)
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(pair.clouds_file)
    metrics, stats, kinds = Metrics("copy"), Stats(), Counter[str]()
    spent = 0.0

    def emit(event: Event) -> None:
        nonlocal spent
        stats(event)
        kinds[type(event).__name__] += 1
        t0 = time.perf_counter()
        metrics(event)
        spent += time.perf_counter() - t0

    async def copy() -> float:
        src, dst = await load_cloud("bench-src"), await load_cloud("bench-dst")
        t0 = time.perf_counter()
        run = await copy_images(CopyConfig(concurrency=concurrency), src, dst, emit=emit)
        assert run.count("copied") == count
        return time.perf_counter() - t0

    seconds = asyncio.run(copy())
    t0 = time.perf_counter()
    for _ in range(100):
        metrics.exposition()
    render = (time.perf_counter() - t0) / 100
    return {
        "seconds": seconds,
        "in_subscriber": spent,
        "share": spent / seconds,
        "events": dict(kinds),
        "render": render,
    }


def _workload(pair: FakePair, name: str, count: int, size: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for variant in order:
            runs[variant].append(run_once(pair, count, size, metrics=variant == "on"))
    keys = ("seconds", "rate", "cpu", "others_cores")
    med = {v: {k: statistics.median(x[k] for x in rs) for k in keys} for v, rs in runs.items()}
    scrapes = [x["scrapes"] for x in runs["on"]]
    answer = [x["scrape_seconds_median"] for x in runs["on"] if x["scrape_seconds_median"] is not None]
    return {
        "workload": name,
        "images": count,
        "size": size,
        "rounds": rounds,
        "median": med,
        "overhead_rate": 1 - med["on"]["rate"] / med["off"]["rate"],
        "overhead_cpu": med["on"]["cpu"] / med["off"]["cpu"] - 1,
        "scrapes_per_run": scrapes,
        "scrape_answer_seconds_median": statistics.median(answer) if answer else None,
        "runs": runs,
        "subscriber": in_subscriber(pair, count, size),
    }


def import_cost(repeats: int = 7) -> dict[str, float]:
    """Median CPU seconds of a fresh interpreter importing what a run imports, with and without
    what ``--metrics-addr`` adds (``asyncmigrate.metrics``: prometheus_client, aiohttp.web)."""
    import resource
    import subprocess

    def cpu_of(code: str) -> float:
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)

    base = "import asyncmigrate.engine, asyncmigrate.sync, asyncmigrate.storemove"
    off = [cpu_of(base) for _ in range(repeats)]
    on = [cpu_of(base + "; import asyncmigrate.metrics, aiohttp.web") for _ in range(repeats)]
    return {"off": statistics.median(off), "on": statistics.median(on)}


def main(argv: list[str] | None = None) -> int:
    """Measure both workloads; print a table and write ``benchmarks/results/metrics.json``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.metrics", description=__doc__.split("\n\n")[1])
    p.add_argument("--rounds", type=int, default=5, help="rounds per workload (default 5), median reported")
    p.add_argument("--large", type=int, default=4, help="large images (default 4)")
    p.add_argument("--large-mib", type=int, default=256, help="their size in MiB (default 256)")
    p.add_argument("--small", type=int, default=400, help="small images (default 400)")
    p.add_argument("--small-kib", type=int, default=64, help="their size in KiB (default 64)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = p.parse_args(argv)
    with FakePair() as pair:
        results = [
            _workload(pair, "large", args.large, args.large_mib * MiB, args.rounds),
            _workload(pair, "small", args.small, args.small_kib * 1024, args.rounds),
        ]
    print("workload  variant  median s  MiB/s    img/s   CPU s  others  overhead (rate, CPU)")
    for w in results:
        for v in ("off", "on"):
            m = w["median"][v]
            line = f"{w['workload']:<9} {v:<8} {m['seconds']:8.2f} {m['rate'] / MiB:7.1f} "
            line += f"{w['images'] / m['seconds']:8.1f} {m['cpu']:7.2f} {m['others_cores']:6.2f}"
            if v == "on":
                line += f"   {w['overhead_rate']:+.1%}, {w['overhead_cpu']:+.1%}"
            print(line)
        print(
            f"          scrapes per 'on' run: {w['scrapes_per_run']}, median answer {w['scrape_answer_seconds_median']}"
        )
        sub = w["subscriber"]
        print(
            f"          in the subscriber: {sub['in_subscriber'] * 1e3:.1f} ms of a {sub['seconds']:.2f} s run "
            f"({sub['share']:.2%}), {sum(sub['events'].values())} events; one scrape renders in "
            f"{sub['render'] * 1e3:.2f} ms"
        )
    imports = import_cost()
    print(f"imports (one-time, CPU s): {imports['off']:.3f} without, {imports['on']:.3f} with the metrics modules")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "workloads": results, "imports_cpu_seconds": imports}
    args.output.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
