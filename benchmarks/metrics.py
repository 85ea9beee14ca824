"""What ``--metrics-addr`` costs a run: the same copy with and without it, scraped every second.

    python -m benchmarks.metrics [--rounds 5] [--large-mib 256 --large 4] [--small-kib 64 --small 400]

Against the two fake Glance processes (:class:`~benchmarks.servers.FakePair`), two
workloads — a few large images (the byte path: one metric increment per chunk) and
many small ones (the request path: one event per HTTP request, several per image) —
each copied by the real command (``python -m asyncmigrate copy … -q --no-journal``)
in rounds that alternate the order of the two variants (off, on) so drift on a shared
machine falls on both alike:

* ``off``: no ``--metrics-addr``;
* ``on``: ``--metrics-addr 127.0.0.1:<port>``, a scraper thread ``GET /metrics`` every
  second for the whole run (its answer times recorded).

Before each run the fakes are reset and reseeded and the machine is let go quiet
(:func:`~benchmarks.servers.wait_quiet`).  Measured per run: the run's own seconds and
bytes from its report (start-up excluded), and the child's CPU seconds.  Reported: the
median of the rounds per variant and the overhead ``1 - rate_on / rate_off``; written to
``benchmarks/results/metrics.json``.  Nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .pattern import MiB
from .servers import ROOT, FakePair, wait_quiet

__all__ = ["main", "run_once"]

RESULTS = ROOT / "benchmarks" / "results" / "metrics.json"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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
    """Reseed ``count`` images of ``size`` bytes and copy them once; the run's figures."""
    pair.reset()
    pair.seed(7, count, size)
    busy = wait_quiet()
    with tempfile.TemporaryDirectory(prefix="asyncmigrate-bench-metrics-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "asyncmigrate", "copy", "--src-cloud", "bench-src", "--dst-cloud", "bench-dst"]
        cmd += ["--no-journal", "-q", "--concurrency", str(concurrency), "--report", str(report)]
        scraper = None
        if metrics:
            port = _free_port()
            cmd += ["--metrics-addr", f"127.0.0.1:{port}"]
            scraper = _Scraper(f"http://127.0.0.1:{port}/metrics")
            scraper.start()
        cpu0 = _children_cpu()
        try:
            proc = subprocess.run(cmd, env=pair.env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
        finally:
            if scraper is not None:
                scraper.stop()
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"copy exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        summary = json.loads(report.read_text())["summary"]
    assert summary["outcomes"] == {"copied": count}, summary["outcomes"]
    result = {"seconds": summary["seconds"], "bytes": summary["bytes"], "cpu": cpu, "busy": busy}
    result["rate"] = summary["bytes"] / summary["seconds"]
    result["images_per_second"] = count / summary["seconds"]
    if scraper is not None:
        result["scrapes"] = len(scraper.times)
        result["scrape_seconds_median"] = statistics.median(scraper.times) if scraper.times else None
    return result


def _workload(pair: FakePair, name: str, count: int, size: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for variant in order:
            runs[variant].append(run_once(pair, count, size, metrics=variant == "on"))
    med = {v: {k: statistics.median(x[k] for x in rs) for k in ("seconds", "rate", "cpu")} for v, rs in runs.items()}
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
    }


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
    print("workload  variant  median s  MiB/s    img/s   CPU s   overhead (rate, CPU)")
    for w in results:
        for v in ("off", "on"):
            m = w["median"][v]
            line = f"{w['workload']:<9} {v:<8} {m['seconds']:8.2f} {m['rate'] / MiB:7.1f} "
            line += f"{w['images'] / m['seconds']:8.1f} {m['cpu']:7.2f}"
            if v == "on":
                line += f"   {w['overhead_rate']:+.1%}, {w['overhead_cpu']:+.1%}"
            print(line)
        print(
            f"          scrapes per 'on' run: {w['scrapes_per_run']}, median answer {w['scrape_answer_seconds_median']}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "workloads": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
