"""Figures for a same-cloud store move on the real Glance: 1 GiB of images file → S3.

    .venv/bin/python -m benchmarks.move_s3 [--images 4] [--size-mib 256]

Needs the harness with S3 (``python3 harness/realglance.py start --s3``).  Seeds
the images into the ``fast`` file store, runs ``asyncmigrate move --from-store
fast --to-store cold`` and reports the wall time, and what the server-side
copy cost: peak bytes in glance's staging directory (copy-image stages a full
copy of each image on the API node's disk), glance's CPU seconds, and the peak
RSS of the S3 server (Ceph's RGW).  Writes benchmarks/results/move_s3.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "harness"))

import seed  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks


def _tree_cpu(pid: int) -> float:
    total = _cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += _cpu_seconds(int(child))
    return total


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    """Seed, move, measure, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    env = seed.load_env()
    if not env.get("s3"):
        print("the harness runs without S3: python3 harness/realglance.py start --s3", file=sys.stderr)
        return 2
    harness = Path(env["harness_dir"])
    glance_pid = int((harness / "run" / "src.pid").read_text())
    rgw_pid = int(Path(env["ceph"]["pids"]["rgw"]).read_text())
    staging = Path(env["instances"]["src"]["data_dir"]) / "staging"
    src = seed.Glance(env["instances"]["src"]["url"])

    size = args.size_mib * seed.MiB
    ids = []
    t0 = time.monotonic()
    for i in range(args.images):
        ids.append(
            src.create(
                seed.raw_image(size, 900 + i),
                store="fast",
                name=f"bench-move-{i}",
                disk_format="raw",
                container_format="bare",
            )["id"]
        )
    seeded = time.monotonic() - t0

    peak = {"staging": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["staging"] = max(peak["staging"], _du(staging) if staging.exists() else 0)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before = _tree_cpu(glance_pid)
    sampler.start()
    cmd = [
        sys.executable,
        "-m",
        "asyncmigrate",
        "move",
        "--cloud",
        "harness-src",
        "--from-store",
        "fast",
        "--to-store",
        "cold",
        "--concurrency",
        str(args.concurrency),
        "-q",
    ]
    for image_id in ids:
        cmd += ["--image", image_id]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, env={**os.environ, "OS_CLIENT_CONFIG_FILE": env["clouds_yaml"]}, capture_output=True, text=True
    )
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    cpu = _tree_cpu(glance_pid) - cpu_before
    rgw_rss = 0
    for line in Path(f"/proc/{rgw_pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rgw_rss = int(line.split()[1]) * 1024
    ok = all(src.get(i)["stores"] == "cold" for i in ids)  # type: ignore[index]
    total = args.images * size
    figures = {
        "images": args.images,
        "bytes": total,
        "concurrency": args.concurrency,
        "exit_code": proc.returncode,
        "all_in_new_store_only": ok,
        "move_seconds": round(wall, 2),
        "move_MiB_per_s": round(total / wall / seed.MiB, 1),
        "seed_upload_seconds": round(seeded, 2),
        "staging_peak_bytes": peak["staging"],
        "glance_cpu_seconds": round(cpu, 2),
        "s3_server": "ceph radosgw",
        "s3_server_peak_rss_bytes": rgw_rss,
        # The summary line ("done: …"): notes about the old store may follow it.
        "cli_summary": next(
            (line for line in proc.stdout.splitlines() if line.startswith("done:")), proc.stderr.strip()
        ),
    }
    print(json.dumps(figures, indent=2))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "move_s3.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
