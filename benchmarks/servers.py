"""The two fake Glance processes (source and destination) and one measurement run.

:class:`FakePair` starts ``python -m benchmarks.fakeglance`` twice on
127.0.0.1 (free ports), writes a ``clouds.yaml`` with clouds ``bench-src`` and
``bench-dst`` (``auth_type: none``) into a temporary directory, and talks to
the fakes' ``/_bench`` control API with the standard library only.

:func:`measure` runs one :mod:`benchmarks.child` process and adds the servers'
CPU seconds used meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .fakeglance import image_id
from .pattern import digests

__all__ = ["FakePair", "busy_cores", "measure", "run_child", "wait_quiet"]

ROOT = Path(__file__).resolve().parent.parent
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def _call(url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with _HTTP.open(req, timeout=120) as resp:
        return json.loads(resp.read())


class FakePair:
    """A source and a destination fake Glance, each in its own process."""

    def __init__(self, *, uvloop: bool = False) -> None:
        self.uvloop = uvloop
        self._procs: list[subprocess.Popen[str]] = []
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncmigrate-bench-")
        self.clouds_file = Path(self._tmp.name) / "clouds.yaml"

    def __enter__(self) -> FakePair:
        try:
            for role in ("src", "dst"):
                cmd = [sys.executable, "-m", "benchmarks.fakeglance", "--name", role]
                if self.uvloop:
                    cmd.append("--uvloop")
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
                self._procs.append(proc)
                assert proc.stdout is not None
                info = json.loads(proc.stdout.readline())
                self.urls[role] = f"http://127.0.0.1:{info['port']}"
                self.pids[role] = info["pid"]
        except BaseException:
            self.__exit__()
            raise
        lines = ["clouds:"]
        for role in ("src", "dst"):
            lines += [
                f"  bench-{role}:",
                "    auth_type: none",
                "    auth:",
                f"      endpoint: {self.urls[role]}",
                "    region_name: RegionOne",
            ]
        self.clouds_file.write_text("\n".join(lines) + "\n")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._tmp.cleanup()

    def env(self) -> dict[str, str]:
        """The environment for a child: our clouds.yaml, no proxies, no stray OS_* auth."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_") and "proxy" not in k.lower()}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_file)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def reset(self) -> None:
        """Forget every image on both fakes."""
        for role in ("src", "dst"):
            _call(self.urls[role] + "/_bench/reset", {})

    def seed(self, prefix: int, count: int, size: int) -> list[str]:
        """``count`` active source images of ``size`` pattern bytes; returns their ids."""
        d = digests([size])[size]
        _call(self.urls["dst"] + "/_bench/known", {str(size): d})
        body = {"prefix": prefix, "count": count, "size": size, **d}
        ids: list[str] = _call(self.urls["src"] + "/_bench/seed", body)["ids"]
        assert ids == [image_id(prefix, i) for i in range(count)]
        return ids

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each fake's CPU seconds, image counts and requests served so far."""
        return {role: _call(self.urls[role] + "/_bench/stats") for role in ("src", "dst")}


def run_child(spec: dict[str, Any], env: dict[str, str], *, timeout: float = 900) -> dict[str, Any]:
    """Run one :mod:`benchmarks.child` with ``spec``; its JSON result (or ``error``)."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.child", "-"],  # the spec on stdin: 10,000 ids overflow argv
            input=json.dumps(spec),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"child timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited {proc.returncode}: {' | '.join(tail)}", "process_seconds": wall}
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_seconds"] = wall
    return result


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_sample() -> tuple[float, float]:
    """(all CPU seconds since boot, busy seconds: user + nice + system) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields[:8]) / _TICK, sum(fields[:3]) / _TICK


def busy_cores(seconds: float = 0.3) -> float:
    """How many cores something else keeps busy right now (our fakes are idle between runs)."""
    total0, busy0 = cpu_sample()
    time.sleep(seconds)
    total1, busy1 = cpu_sample()
    ncpu = os.cpu_count() or 1
    return ncpu * (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_quiet(limit: float = 0.3, patience: float = 10.0) -> float:
    """Wait (up to ``patience`` s) until other processes use under ``limit`` cores; return the last reading."""
    deadline = time.monotonic() + patience
    busy = busy_cores()
    while busy > limit and time.monotonic() < deadline:
        time.sleep(1.0)
        busy = busy_cores()
    return busy


def measure(pair: FakePair, spec: dict[str, Any], *, timeout: float = 900) -> dict[str, Any]:
    """Run one child against the fakes; adds ``server_cpu`` (both fakes), ``dst_active``
    and ``busy`` (cores other processes used just before)."""
    for role in ("src", "dst"):
        spec.setdefault(f"{role}_url", pair.urls[role])
    waited = time.perf_counter()
    busy = wait_quiet()
    waited = time.perf_counter() - waited
    before = pair.stats()
    machine0 = cpu_sample()
    t0 = time.perf_counter()
    result = run_child(spec, pair.env(), timeout=timeout)
    wall = time.perf_counter() - t0
    machine1 = cpu_sample()
    after = pair.stats()
    result["server_cpu"] = sum(after[r]["cpu"] - before[r]["cpu"] for r in ("src", "dst"))
    # Whatever the machine spent beyond the child and the fakes: other processes.
    ours = result.get("cpu_total", 0.0) + result["server_cpu"]
    result["others_cores"] = max(0.0, (machine1[1] - machine0[1]) - ours) / max(wall, 1e-9)
    result["dst_active"] = after["dst"]["active"]
    result["busy"] = busy
    result["waited"] = waited
    return result
