"""Many small images against the REAL Glance pair: asyncmigrate against a minimal client.

Against real glance-api the server's CPU per request limits a migration of many
small images, so what is measured here is requests as much as seconds:

1. ``2 × rounds × count`` source images of ``size`` random bytes are seeded
   (named ``bench-small-<run>-r<k>-<i>``; Glance's default visibility,
   ``shared``, unless ``visibility`` says otherwise) — not timed;
2. rounds alternate A B A B …: asyncmigrate (``--name`` the round's images,
   default flags but ``concurrency``) and the minimal client of
   :mod:`benchmarks.child` (list, then per image GET data → POST → PUT → GET,
   the same concurrency), each in its own child process, each round on its own
   fresh images (Glance never lets an id be created twice);
3. a no-op re-run: asyncmigrate over the images of the first rounds, enough
   of them to cover ``noop`` images (1,000 in the full run: 4 rounds of 250),
   which must all be skipped;
4. the seeded and copied images are deleted (``keep`` leaves them).

Every request is counted from the servers' own gunicorn access logs
(``--access-logfile -`` into ``.harness/logs/<inst>.log``), between a mark
taken before each child starts and the point where the log stops growing after
it ends; the harness serves nobody else.  Each request is classified
(:func:`kind`); listing requests record their ``limit``.  glance-api's CPU
seconds (master + workers, from ``/proc``) are read around each round.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .servers import ROOT, cpu_sample, run_child, wait_quiet

__all__ = ["AccessLog", "Request", "kind", "parse_line", "run_real_small", "tally"]

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')
_IMAGE = re.compile(r"^/v2/images/[0-9a-fA-F-]{36}(?P<rest>/.*)?$")
_TICK = os.sysconf("SC_CLK_TCK")
SIDES = ("asyncmigrate", "minimal")
PER_RUN = frozenset({"discovery", "probe", "listing"})  # what a run sends once, whatever the number of images


class Request(NamedTuple):
    """One line of a gunicorn access log."""

    method: str
    path: str
    query: dict[str, str]
    status: int


def parse_line(line: str) -> Request | None:
    """The request of a gunicorn access-log line (default format); None for any other line."""
    match = _LINE.search(line)
    if match is None:
        return None
    url = urlsplit(match["target"])
    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    return Request(match["method"], url.path, query, int(match["status"]))


def kind(req: Request) -> str:
    """What a request is for: create, upload, download, read, members, listing, probe, patch, delete, discovery."""
    if req.path == "/v2/images":
        if req.method == "POST":
            return "create"
        # the endpoint check asks for one image and nothing else
        return "probe" if req.query == {"limit": "1"} else "listing"
    match = _IMAGE.match(req.path)
    if match is None:
        return "discovery"  # /versions, /v2/info/*, /v2/schemas/*
    rest = match["rest"] or ""
    if rest == "/file":
        return "upload" if req.method == "PUT" else "download"
    if rest.startswith("/members"):
        return "members"
    if rest.startswith("/actions"):
        return "action"
    return {"GET": "read", "PATCH": "patch", "DELETE": "delete"}.get(req.method, "other")


def tally(requests: Iterable[Request]) -> dict[str, Any]:
    """Counts by kind, the total, those sent once per run (:data:`PER_RUN`), the ``limit``
    of every listing page, and the error answers."""
    kinds: Counter[str] = Counter()
    limits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for req in requests:
        k = kind(req)
        kinds[k] += 1
        if k == "listing":
            limits[req.query.get("limit", "(none)")] += 1
        if req.status >= 400:
            errors[f"{req.method} {k} {req.status}"] += 1
    return {
        "total": sum(kinds.values()),
        "per_run": sum(n for k, n in kinds.items() if k in PER_RUN),
        "kinds": dict(kinds),
        "listing_limits": dict(limits),
        "errors": dict(errors),
    }


class AccessLog:
    """A server's access log, read from a mark."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """The current end of the log."""
        return self.path.stat().st_size

    def since(self, offset: int, *, settle: float = 0.3, patience: float = 10.0) -> list[Request]:
        """The requests logged after ``offset``, once the log has stopped growing for ``settle`` s.

        gunicorn writes a line after sending the response, so the last lines
        may land a moment after the client has finished.
        """
        deadline = time.monotonic() + patience
        size = self.mark()
        while time.monotonic() < deadline:
            time.sleep(settle)
            now = self.mark()
            if now == size:
                break
            size = now
        with open(self.path, "rb") as f:
            f.seek(offset)
            text = f.read(size - offset).decode(errors="replace")
        return [r for r in map(parse_line, text.splitlines()) if r is not None]


def glance_cpu(pidfile: Path) -> float:
    """CPU seconds used so far by a gunicorn master and its workers."""
    try:
        master = int(pidfile.read_text())
    except (OSError, ValueError):
        return 0.0
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid ... utime (12th) stime (13th)
        if int(entry.name) == master or int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


# -- seeding and cleaning up (not timed) ---------------------------------------


def _request(method: str, url: str, body: Any = None, raw: bytes | None = None) -> int:
    headers = {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif raw is not None:
        data, headers["Content-Type"] = raw, "application/octet-stream"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _HTTP.open(req, timeout=120) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _parallel(fn: Callable[[str], None], items: list[str], threads: int = 8) -> None:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def payload(size: int) -> bytes:
    """``size`` bytes that glance-api's format inspector takes for raw data and nothing else.

    Plain random bytes are not: one image in 65,536 ends in ``55 AA`` at
    offset 510, an MBR boot signature, and Glance refuses it (415, "Safety
    checks failed: mbr") — seen here at the 122nd of 1,000.  An ASCII head
    matches no format's magic either.
    """
    data = bytearray(b"asyncmigrate benchmark image\n" + os.urandom(max(0, size - 29)))[:size]
    data[510:512] = b"\0\0"[: max(0, min(2, size - 510))]
    return bytes(data)


def seed(url: str, names: list[str], size: int, visibility: str | None = None) -> list[str]:
    """Create an image per name with ``size`` random bytes (raw/bare; ``visibility`` None: Glance's
    default, ``shared``); return the ids."""
    ids = {name: str(uuid.uuid4()) for name in names}
    extra = {"visibility": visibility} if visibility else {}

    def one(name: str) -> None:
        body = {"id": ids[name], "name": name, "disk_format": "raw", "container_format": "bare", **extra}
        if (status := _request("POST", f"{url}/v2/images", body)) != 201:
            raise RuntimeError(f"seeding {name}: create answered {status}")
        if (status := _request("PUT", f"{url}/v2/images/{ids[name]}/file", raw=payload(size))) != 204:
            raise RuntimeError(f"seeding {name}: upload answered {status}")

    _parallel(one, names)
    return [ids[n] for n in names]


def delete(url: str, ids: list[str]) -> None:
    """Delete these images (404s ignored: an image a round failed to create)."""

    def one(iid: str) -> None:
        _request("DELETE", f"{url}/v2/images/{iid}")

    _parallel(one, ids)


# -- the measurement -------------------------------------------------------------


class _Pair:
    def __init__(self, env: dict[str, Any], patience: float) -> None:
        self.env = env
        self.patience = patience
        self.urls = {role: env["instances"][role]["url"] for role in ("src", "dst")}
        self.logs = {role: AccessLog(Path(env["instances"][role]["log"])) for role in ("src", "dst")}
        harness = Path(env.get("harness_dir", ROOT / ".harness"))
        self.pidfiles = {role: harness / "run" / f"{role}.pid" for role in ("src", "dst")}
        self.child_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_") and "proxy" not in k.lower()}
        self.child_env["OS_CLIENT_CONFIG_FILE"] = env["clouds_yaml"]
        self.child_env["PYTHONPATH"] = str(ROOT)

    def measure(self, spec: dict[str, Any], images: int) -> dict[str, Any]:
        """Run one child; its result plus requests and glance CPU on each side."""
        wait_quiet(patience=self.patience)
        marks = {role: log.mark() for role, log in self.logs.items()}
        cpu0 = {role: glance_cpu(p) for role, p in self.pidfiles.items()}
        machine0, t0 = cpu_sample(), time.perf_counter()
        result = run_child(spec, self.child_env)
        wall, machine1 = time.perf_counter() - t0, cpu_sample()
        cpu1 = {role: glance_cpu(p) for role, p in self.pidfiles.items()}
        for role, log in self.logs.items():
            counts = tally(log.since(marks[role]))
            # requests naming one image, per image; the per-run ones are reported apart
            counts["per_image"] = (counts["total"] - counts["per_run"]) / max(images, 1)
            counts["glance_cpu_s"] = cpu1[role] - cpu0[role]
            result[role] = counts
        ours = result.get("cpu_total", 0.0) + sum(cpu1[r] - cpu0[r] for r in cpu0)
        result["others_cores"] = max(0.0, (machine1[1] - machine0[1]) - ours) / max(wall, 1e-9)
        if "seconds" in result:
            result["images_s"] = result["images"] / result["seconds"]
        return result


def run_real_small(
    env: dict[str, Any],
    *,
    count: int,
    rounds: int,
    concurrency: int,
    size: int = 1024,
    visibility: str | None = None,
    noop: int = 1000,
    keep: bool = False,
    patience: float = 10.0,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Alternate asyncmigrate and the minimal client over fresh images, then a no-op re-run (module docstring).

    Before each measurement, wait up to ``patience`` seconds for other processes to calm down.
    """
    pair = _Pair(env, patience)
    clouds = [env["instances"][role]["cloud"] for role in ("src", "dst")]
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-small-{run}"
    out: dict[str, Any] = {"count": count, "rounds": rounds, "concurrency": concurrency, "size": size}
    out["visibility"] = visibility or "shared (Glance's default)"
    names = {k: [f"{prefix}-r{k}-{i:05d}" for i in range(count)] for k in range(2 * rounds)}
    t0 = time.perf_counter()
    log(f"real-small: seeding {2 * rounds} × {count} source images of {size} B …")
    ids = {k: seed(pair.urls["src"], names[k], size, visibility) for k in names}
    out["seed_seconds"] = time.perf_counter() - t0
    out["seed_images_s"] = 2 * rounds * count / out["seed_seconds"]
    copied: list[str] = []
    try:
        out["rounds_results"] = []
        for k in names:
            side = SIDES[k % 2]  # A B A B …
            spec: dict[str, Any]
            if side == "asyncmigrate":
                spec = {"kind": "asyncmigrate", "clouds": clouds, "names": [f"{prefix}-r{k}-*"]}
            else:
                spec = {"kind": "minimal", "src_url": pair.urls["src"], "dst_url": pair.urls["dst"]}
                spec["prefix"] = f"{prefix}-r{k}-"
            spec.update(concurrency=concurrency, count=count)
            r = pair.measure(spec, count)
            r.update(side=side, round=k)
            out["rounds_results"].append(r)
            copied += ids[k]
            log(_line(r, f"round {k + 1}/{2 * rounds} {side}"))
        # whole rounds, as few as cover `noop` images (all of them when there are fewer)
        noop_rounds = min(len(names), -(-noop // max(count, 1)))
        again = noop_rounds * count
        spec = {"kind": "asyncmigrate", "clouds": clouds, "names": [f"{prefix}-r{k}-*" for k in range(noop_rounds)]}
        spec.update(expect="skipped", concurrency=concurrency, count=again)
        out["noop"] = pair.measure(spec, again)
        out["noop"]["images"] = again
        log(_line(out["noop"], f"no-op re-run of {again} images"))
    finally:
        if not keep:
            t1 = time.perf_counter()
            log("real-small: deleting the images …")
            delete(pair.urls["dst"], copied)
            delete(pair.urls["src"], [i for k in ids for i in ids[k]])
            out["cleanup_seconds"] = time.perf_counter() - t1
    out["summary"] = summarize(out)
    return out


def _line(r: dict[str, Any], label: str) -> str:
    if "error" in r:
        return f"real-small: {label}: ERROR {r['error']}"
    return (
        f"real-small: {label}: {r['images_s']:.1f} images/s ({r['seconds']:.1f} s), "
        f"dst {r['dst']['total']} requests ({r['dst']['per_image']:.2f}/image + {r['dst']['per_run']}/run), "
        f"src {r['src']['total']} ({r['src']['per_image']:.2f}/image + {r['src']['per_run']}/run), "
        f"glance CPU dst {r['dst']['glance_cpu_s']:.1f} s src {r['src']['glance_cpu_s']:.1f} s"
        + (f", other load {r['others_cores']:.2f} cores" if r.get("others_cores", 0) > 0.25 else "")
    )


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    """Per side: the median images/s and requests per image; their ratio; the no-op figures."""
    summary: dict[str, Any] = {}
    for side in SIDES:
        good = [r for r in out.get("rounds_results", []) if r["side"] == side and "error" not in r]
        if not good:
            continue
        summary[side] = {
            "images_s": statistics.median(r["images_s"] for r in good),
            "samples_images_s": [round(r["images_s"], 2) for r in good],
            "dst_per_image": statistics.median(r["dst"]["per_image"] for r in good),
            "src_per_image": statistics.median(r["src"]["per_image"] for r in good),
            "dst_per_run": max(r["dst"]["per_run"] for r in good),
            "src_per_run": max(r["src"]["per_run"] for r in good),
            "dst_kinds": good[0]["dst"]["kinds"],
            "src_kinds": good[0]["src"]["kinds"],
            "glance_cpu_per_image_ms": statistics.median(
                1000 * (r["dst"]["glance_cpu_s"] + r["src"]["glance_cpu_s"]) / r["images"] for r in good
            ),
            "client_cpu_s": statistics.median(r["cpu"] for r in good),
            "others_cores": max(r.get("others_cores", 0.0) for r in good),
            "listing_limits": sorted(
                {limit for r in good for role in ("src", "dst") for limit in r[role]["listing_limits"]}
            ),
        }
    am, mini = summary.get("asyncmigrate"), summary.get("minimal")
    if am and mini:
        summary["ratio"] = am["images_s"] / mini["images_s"]
    noop = out.get("noop")
    if noop and "error" not in noop:
        summary["noop"] = {
            "images": noop["images"],
            "seconds": noop["seconds"],
            "dst_requests": noop["dst"]["total"],
            "src_requests": noop["src"]["total"],
            "dst_kinds": noop["dst"]["kinds"],
            "src_kinds": noop["src"]["kinds"],
            "listing_limits": sorted({lim for role in ("src", "dst") for lim in noop[role]["listing_limits"]}),
        }
    return summary
