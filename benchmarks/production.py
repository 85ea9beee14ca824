"""Figures for production destinations on the real harness: Swift, conversion, the Swift move.

    .venv/bin/python -m benchmarks.production [--swift-mib 210] [--qcow2-virtual-mib 1024]

Needs the harness with Swift and the converting glance
(``python3 harness/realglance.py start --s3 --swift --convert``).  Measures, each with the CLI
as an operator runs it (a subprocess, its own report):

* copying one image of ``--swift-mib`` into the dst glance's ``swift`` store (segmented:
  uploaded without a declared size) against the same size into its ``main`` file store,
  MB/s and the CLI's peak RSS;
* a real qcow2 (``qemu-img``) copied with ``--upload-method glance-direct`` into the converting
  glance: time, the raw size it became, MB/s of source bytes;
* a store move on dst, ``main`` → ``swift``, of one image below the segment size and one above
  (copy-image, which fails for the big one on glance_store 5.7.0, then ``--method location``).

Writes benchmarks/results/production.json.  Timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "harness"))

import seed  # noqa: E402

MiB = 1024 * 1024


def _cli(env: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], float]:
    report = Path(env["harness_dir"]) / f"bench-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, "-m", "asyncmigrate", *args, "--report", str(report), "-q"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env={**os.environ, "OS_CLIENT_CONFIG_FILE": env["clouds_yaml"]}, capture_output=True)
    seconds = time.monotonic() - t0
    data = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} -> {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return proc.returncode, data, seconds


def _copy_figures(env: dict[str, Any], src: seed.Glance, size: int, store: str) -> dict[str, Any]:
    image = src.create(seed.raw_image(size, 71), name=f"bench-{store}-{uuid.uuid4().hex[:6]}", disk_format="raw",
                       container_format="bare")  # fmt: skip
    _, report, seconds = _cli(env, "copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst",
                                 "--image", image["id"], "--dst-store", store)  # fmt: skip
    (entry,) = report["images"]
    summary = report["summary"]
    return {
        "store": store,
        "bytes": size,
        "outcome": entry["outcome"],
        "upload_method": summary["clouds"]["destination"]["upload_method"],
        "transfer_seconds": round(entry["seconds"], 2),
        "MB_per_s": round(size / entry["seconds"] / 1e6, 1),
        "cli_seconds": round(seconds, 2),
        "peak_rss_MiB": round(summary["peak_rss_bytes"] / MiB, 1),
    }


def _convert_figures(env: dict[str, Any], src: seed.Glance, virtual: int, data: int) -> dict[str, Any]:
    disk = seed.qemu_qcow2(virtual_size=virtual, data_size=data, seed=72)
    image = src.create(disk.data, name=f"bench-qcow2-{uuid.uuid4().hex[:6]}", disk_format="qcow2",
                       container_format="bare")  # fmt: skip
    _, report, seconds = _cli(env, "copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-convert",
                                 "--image", image["id"], "--upload-method", "glance-direct")  # fmt: skip
    (entry,) = report["images"]
    return {
        "qcow2_bytes": len(disk.data),
        "virtual_size": virtual,
        "outcome": entry["outcome"],
        "converted": entry["converted"],
        "raw_is_the_source_disk": entry["converted"] is not None and entry["converted"]["size"] == disk.raw_size,
        "seconds": round(entry["seconds"], 2),
        "cli_seconds": round(seconds, 2),
        "peak_rss_MiB": round(report["summary"]["peak_rss_bytes"] / MiB, 1),
    }


def _move_figures(env: dict[str, Any], dst: seed.Glance, segment: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    sizes = {"small": 8 * MiB, "big": segment + 8 * MiB}
    for label, size in sizes.items():
        dst.create(seed.raw_image(size, 73), name=f"bench-mv-{label}-{tag}", disk_format="raw",
                   container_format="bare", store="main")  # fmt: skip
    args = (
        "move",
        "--cloud",
        "harness-dst",
        "--from-store",
        "main",
        "--to-store",
        "swift",
        "--name",
        f"bench-mv-*-{tag}",
    )
    code1, first, s1 = _cli(env, *args)
    code2, second, s2 = _cli(env, *args, "--method", "location")
    return {
        "sizes": sizes,
        "copy_image": {"exit": code1, "seconds": round(s1, 2), "outcomes": first["summary"]["outcomes"]},
        "location": {"exit": code2, "seconds": round(s2, 2), "outcomes": second["summary"]["outcomes"]},
    }


def main() -> int:
    """Measure, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swift-mib", type=int, default=210)
    parser.add_argument("--qcow2-virtual-mib", type=int, default=1024)
    parser.add_argument("--qcow2-data-mib", type=int, default=128)
    args = parser.parse_args()
    env = seed.load_env()
    if not env.get("swift") or "convert" not in env["instances"]:
        print("start the harness with --swift --convert first", file=sys.stderr)
        return 2
    src, dst = seed.Glance(env["instances"]["src"]["url"]), seed.Glance(env["instances"]["dst"]["url"])
    size = args.swift_mib * MiB
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": os.getloadavg(),
        "copy_into_swift": _copy_figures(env, src, size, "swift"),
        "copy_into_file_store": _copy_figures(env, src, size, "main"),
        "converting_copy": _convert_figures(env, src, args.qcow2_virtual_mib * MiB, args.qcow2_data_mib * MiB),
        "move_file_to_swift": _move_figures(env, dst, int(env["swift"]["large_object_size"])),
    }
    out = ROOT / "benchmarks" / "results" / "production.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
