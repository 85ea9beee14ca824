"""End-to-end against the REAL Glance pair of ``harness/realglance.py``.

One image of pattern bytes is uploaded into the source with ``curl -T`` (timed:
the source server's own write limit), downloaded back with curl (its read
limit), copied to the destination by asyncmigrate with default flags (timed,
in a child process: CPU and peak RSS), and uploaded again with curl into a
fresh destination image: the destination's own write limit, the ceiling any
copy into it can reach (glance-api hashes md5 + sha512 of what it receives
and writes the file store).  The images are deleted at the end.

Needs the harness running (``python3 harness/realglance.py start``); the
runner starts it when it is not (``--no-real`` skips this part).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .pattern import MiB, Pattern
from .servers import ROOT, run_child, wait_quiet

__all__ = ["harness_env", "run_real"]

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
GiB = 1024 * MiB


def _harness_dir() -> Path:
    return Path(os.environ.get("ASYNCMIGRATE_HARNESS_DIR", ROOT / ".harness"))


def harness_env(*, start: bool, log: Any) -> dict[str, Any] | str:
    """The harness's env.json, starting the pair if allowed; a reason string when unusable."""
    script = ROOT / "harness" / "realglance.py"
    if not script.exists():
        return "harness/realglance.py not found"
    status = subprocess.run([sys.executable, str(script), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        if not start:
            return "the real Glance pair is not running (python3 harness/realglance.py start)"
        log("starting the real Glance pair (python3 harness/realglance.py start) …")
        started = subprocess.run([sys.executable, str(script), "start"], capture_output=True, text=True, timeout=600)
        if started.returncode != 0:
            return "harness start failed: " + " | ".join(started.stdout.strip().splitlines()[-3:])
    try:
        env: dict[str, Any] = json.loads((_harness_dir() / "env.json").read_text())
    except (OSError, ValueError) as exc:
        return f"cannot read the harness env.json: {exc}"
    for role in ("src", "dst"):
        url = env["instances"][role]["url"]
        if not url.startswith("http://127.0.0.1:"):
            return f"refusing a non-loopback Glance URL: {url}"
    return env


def _request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _HTTP.open(req, timeout=120) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _create(url: str, name: str) -> str:
    iid = str(uuid.uuid4())
    body = {"id": iid, "name": name, "disk_format": "raw", "container_format": "bare", "visibility": "private"}
    status, answer = _request("POST", f"{url}/v2/images", body)
    if status != 201:
        raise RuntimeError(f"create on {url}: {status} {answer}")
    return iid


def _curl(args: list[str], size: int) -> dict[str, Any]:
    """Run curl, time it; MB/s of ``size`` bytes."""
    wait_quiet()
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - t0
    code = proc.stdout.strip()
    if proc.returncode != 0 or not code.startswith("2"):
        return {"error": f"curl exit {proc.returncode}, HTTP {code}: {proc.stderr.strip()[:200]}"}
    return {"seconds": seconds, "mb_s": size / 1e6 / seconds, "mib_s": size / MiB / seconds}


def run_real(env: dict[str, Any], size: int, log: Any) -> dict[str, Any]:
    """The real-Glance figures (one run each); images are deleted afterwards."""
    src = env["instances"]["src"]["url"]
    dst = env["instances"]["dst"]["url"]
    out: dict[str, Any] = {"size_mib": size / MiB, "src": src, "dst": dst}
    created: list[tuple[str, str]] = []
    tag = uuid.uuid4().hex[:6]
    with tempfile.NamedTemporaryFile(prefix="bench-real-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as f:
        for piece in Pattern().pieces(0, size, 8 * MiB):
            f.write(piece)
        f.flush()
        octet = ["-H", "Content-Type: application/octet-stream"]
        try:
            iid = _create(src, f"bench-real-{tag}")
            created.append((src, iid))
            log(f"real: curl upload of {size // MiB} MiB into the source …")
            out["curl_upload_src"] = _curl(["-T", f.name, *octet, f"{src}/v2/images/{iid}/file"], size)
            if "error" in out["curl_upload_src"]:
                return out
            out["curl_download_src"] = _curl([f"{src}/v2/images/{iid}/file"], size)
            log("real: asyncmigrate copy source → destination …")
            clouds = [env["instances"][role]["cloud"] for role in ("src", "dst")]
            spec = {"kind": "asyncmigrate", "clouds": clouds, "only_ids": [iid]}
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_") and "proxy" not in k.lower()}
            child_env["OS_CLIENT_CONFIG_FILE"] = env["clouds_yaml"]
            child_env["PYTHONPATH"] = str(ROOT)
            wait_quiet()
            r = run_child(spec, child_env)
            created.append((dst, iid))
            if "error" in r:
                out["asyncmigrate"] = {"error": r["error"]}
            else:
                out["asyncmigrate"] = {
                    "seconds": r["seconds"],
                    "mb_s": r["bytes"] / 1e6 / r["seconds"],
                    "mib_s": r["bytes"] / MiB / r["seconds"],
                    "client_cpu_s_per_gib": r["cpu"] / (r["bytes"] / GiB),
                    "peak_rss_mib": r["hwm_kib"] / 1024,
                }
            log("real: curl upload into the destination …")
            other = _create(dst, f"bench-real-curl-{tag}")
            created.append((dst, other))
            out["curl_upload_dst"] = _curl(["-T", f.name, *octet, f"{dst}/v2/images/{other}/file"], size)
        finally:
            for url, image in created:
                _request("DELETE", f"{url}/v2/images/{image}")
    return out
