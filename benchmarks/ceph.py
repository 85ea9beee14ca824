"""Figures for Ceph destinations on the real harness: one image into RBD and into S3 on RGW, side
by side with what the same bytes cost without the tool and without glance.

    .venv/bin/python -m benchmarks.ceph [--mib 1024]

Needs the harness with Ceph (``python3 harness/realglance.py start --s3 --ceph``).  The same
``--mib`` bytes (a file under the harness dir, deleted afterwards) go, in one run, into each of
dst's stores ``ceph`` (rbd) and ``s3`` (S3 on RGW):

* ``asyncmigrate copy`` from src's file store (``put``: the size declared), as an operator runs it;
* ``asyncmigrate copy --upload-method put-unsized`` (what its warning says it costs);
* ``curl -T FILE`` into the same store through the same glance (the size declared);
* ``curl`` from src's glance piped into ``curl -T -`` to dst's (the size declared with
  ``x-openstack-image-size``): the same glance-to-glance path as the tool, without its checks;
* the backend's own ceiling, glance left out: ``rbd import`` (8 MiB objects, as glance_store
  writes them) / a boto3 multipart upload straight to RGW (``upload_file``, as the aws CLI does).

For each: seconds, MB/s (10^6 bytes), the client's peak RSS, and the peak RSS of the dst glance
worker, the OSD and RGW while it ran (sampled every 0.1 s).  Writes benchmarks/results/ceph.json.
Timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "harness"))

import seed  # noqa: E402

MiB = 1024 * 1024
SEED = 4300

_BOTO3_PUT = """\
import sys, boto3
from boto3.s3.transfer import TransferConfig
url, key, secret, bucket, name, path = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)
s3.upload_file(path, bucket, name, Config=TransferConfig())
s3.delete_object(Bucket=bucket, Key=name)
"""


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Peaks:
    """Samples the servers' RSS every 0.1 s while a step runs; the peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], _rss(pid))
            time.sleep(0.1)

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _servers(env: dict[str, Any]) -> dict[str, int]:
    """The dst glance's worker (the gunicorn master's child), the OSD and RGW."""
    master = int((Path(env["harness_dir"]) / "run" / "dst.pid").read_text())
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    pids = {"glance_dst_worker": int(children[0])}
    for daemon, name in (("osd", "ceph_osd"), ("rgw", "radosgw")):
        pids[name] = int(Path(env["ceph"]["pids"][daemon]).read_text())
    return pids


def _chunks(size: int) -> Iterator[bytes]:
    """The benchmark's bytes: seed.raw_image's, streamed (bytes 510-511 zeroed: no MBR signature)."""
    first = True
    for piece in seed.pseudo_random(size, SEED):
        if first and len(piece) >= 512:
            piece = piece[:510] + b"\0\0" + piece[512:]
        first = False
        yield piece


def _timed(cmd: list[str], **kw: Any) -> tuple[float, int, int]:
    """Run ``cmd``; (seconds, exit status, its peak RSS in bytes)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.wait()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} -> {code}: {out[-800:]}")
    return seconds, code, usage.ru_maxrss * 1024


def _figures(size: int, seconds: float, client_rss: int, peaks: _Peaks, **more: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "MB_per_s": round(size / seconds / 1e6, 1),
        "client_peak_rss_MiB": round(client_rss / MiB, 1),
        **{f"{name}_peak_rss_MiB": round(value / MiB, 1) for name, value in peaks.peak.items()},
        **more,
    }


def _step(env: dict[str, Any], run: Callable[[], tuple[float, int, dict[str, Any]]], size: int) -> dict[str, Any]:
    with _Peaks(_servers(env)) as peaks:
        seconds, client_rss, more = run()
    return _figures(size, seconds, client_rss, peaks, **more)


def _source_image(src: seed.Glance, path: Path, size: int) -> str:
    """A fresh src image in its file store holding the benchmark's bytes (ids are never reused)."""
    image = src.ok("POST", "/v2/images", {"name": f"bench-ceph-{uuid.uuid4().hex[:6]}", "disk_format": "raw",
                                         "container_format": "bare"})  # fmt: skip

    def body() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while block := fh.read(MiB):
                yield block

    src.ok("PUT", f"/v2/images/{image['id']}/file", raw=body(), size=size, headers={"X-Image-Meta-Store": "fast"})
    return str(image["id"])


def _tool(env: dict[str, Any], src: seed.Glance, dst: seed.Glance, path: Path, size: int, store: str,
          *flags: str) -> Callable[[], tuple[float, int, dict[str, Any]]]:  # fmt: skip
    image_id = _source_image(src, path, size)

    def run() -> tuple[float, int, dict[str, Any]]:
        report = Path(env["harness_dir"]) / f"bench-{uuid.uuid4().hex[:8]}.json"
        cmd = [sys.executable, "-m", "asyncmigrate", "copy", "--src-cloud", "harness-src", "--dst-cloud",
               "harness-dst", "--image", image_id, "--dst-store", store, *flags]  # fmt: skip
        cmd += ["--report", str(report), "-q"]
        seconds, _, rss = _timed(cmd, env={**os.environ, "OS_CLIENT_CONFIG_FILE": env["clouds_yaml"]})
        data = json.loads(report.read_text())
        report.unlink()
        (entry,) = data["images"]
        intact = dst.sha512_of_data(image_id) == src.sha512_of_data(image_id)
        dst.ok("DELETE", f"/v2/images/{image_id}")  # room for the next step in the OSD's 10 GiB
        more = {"outcome": entry["outcome"], "transfer_seconds": round(entry["seconds"], 2), "bit_exact": intact}
        more["transfer_MB_per_s"] = round(size / entry["seconds"] / 1e6, 1)  # the image's own PUT, as curl's
        return seconds, rss, more | {"upload_method": data["summary"]["clouds"]["destination"]["upload_method"]}

    return run


def _curl(dst: seed.Glance, path: Path, store: str) -> Callable[[], tuple[float, int, dict[str, Any]]]:
    image = dst.ok("POST", "/v2/images", {"name": f"bench-curl-{uuid.uuid4().hex[:6]}", "disk_format": "raw",
                                         "container_format": "bare"})  # fmt: skip

    def run() -> tuple[float, int, dict[str, Any]]:
        cmd = ["curl", "-sS", "--fail", "--noproxy", "*", "-T", str(path), "-X", "PUT"]
        cmd += ["-H", "Content-Type: application/octet-stream", "-H", f"X-Image-Meta-Store: {store}"]
        seconds, _, rss = _timed([*cmd, f"{dst.url}/v2/images/{image['id']}/file"])
        shown = dst.get(image["id"]) or {}
        dst.ok("DELETE", f"/v2/images/{image['id']}")
        return seconds, rss, {"status": shown.get("status"), "stores": shown.get("stores")}

    return run


def _curl_pipe(
    src: seed.Glance, dst: seed.Glance, path: Path, size: int, store: str
) -> Callable[[], tuple[float, int, dict[str, Any]]]:
    source = _source_image(src, path, size)
    image = dst.ok("POST", "/v2/images", {"name": f"bench-pipe-{uuid.uuid4().hex[:6]}", "disk_format": "raw",
                                         "container_format": "bare"})  # fmt: skip

    def run() -> tuple[float, int, dict[str, Any]]:
        get = f"curl -sS --fail --noproxy '*' {src.url}/v2/images/{source}/file"
        put = (
            f"curl -sS --fail --noproxy '*' -T - -X PUT -H 'Content-Type: application/octet-stream' "
            f"-H 'X-Image-Meta-Store: {store}' -H 'x-openstack-image-size: {size}' "
            f"{dst.url}/v2/images/{image['id']}/file"
        )
        seconds, _, rss = _timed(["bash", "-o", "pipefail", "-c", f"{get} | {put}"])
        shown = dst.get(image["id"]) or {}
        dst.ok("DELETE", f"/v2/images/{image['id']}")
        return seconds, rss, {"status": shown.get("status"), "recorded_size": shown.get("size")}

    return run


def _rbd_import(env: dict[str, Any], path: Path) -> Callable[[], tuple[float, int, dict[str, Any]]]:
    conf, pool = env["ceph"]["conf"], env["ceph"]["rbd"]["dst"]["ceph"]
    name = f"{pool}/bench-import-{uuid.uuid4().hex[:6]}"

    def run() -> tuple[float, int, dict[str, Any]]:
        cmd = ["rbd", "-c", conf, "import", "--no-progress", "--object-size", "8M", str(path), name]
        seconds, _, rss = _timed(cmd)
        _timed(["rbd", "-c", conf, "rm", "--no-progress", name])
        return seconds, rss, {"object_size": "8M"}

    return run


def _boto3(env: dict[str, Any], path: Path) -> Callable[[], tuple[float, int, dict[str, Any]]]:
    rgw = env["ceph"]["rgw"]
    python = str(Path(env["harness_dir"]) / "venv-glance" / "bin" / "python")  # boto3 lives there

    def run() -> tuple[float, int, dict[str, Any]]:
        args = [rgw["url"], rgw["access_key"], rgw["secret_key"], rgw["buckets"]["dst/s3"], f"bench-{uuid.uuid4()}"]
        seconds, _, rss = _timed([python, "-c", _BOTO3_PUT, *args, str(path)])
        return seconds, rss, {"how": "boto3 upload_file, TransferConfig defaults (8 MiB parts, 10 threads)"}

    return run


def main() -> int:
    """Measure, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    env = seed.load_env()
    if not env.get("ceph") or "rbd" not in env["instances"]:
        print("start the harness with Ceph first: python3 harness/realglance.py start --s3 --ceph", file=sys.stderr)
        return 2
    src, dst = seed.Glance(env["instances"]["src"]["url"]), seed.Glance(env["instances"]["dst"]["url"])
    size = args.mib * MiB
    path = Path(env["harness_dir"]) / f"bench-ceph-{args.mib}m.raw"
    with open(path, "wb") as out:
        for piece in _chunks(size):
            out.write(piece)
    try:
        results: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average_before": os.getloadavg(),
            "bytes": size,
        }
        # put-unsized last in each group: the memory it makes glance's worker take stays taken.
        results["rbd"] = {
            "asyncmigrate_put": _step(env, _tool(env, src, dst, path, size, "ceph"), size),
            "curl_T_into_glance": _step(env, _curl(dst, path, "ceph"), size),
            "curl_pipe_src_to_dst": _step(env, _curl_pipe(src, dst, path, size, "ceph"), size),
            "rbd_import": _step(env, _rbd_import(env, path), size),
            "asyncmigrate_put_unsized": _step(
                env, _tool(env, src, dst, path, size, "ceph", "--upload-method", "put-unsized"), size
            ),
        }
        results["s3_on_rgw"] = {
            "asyncmigrate_put": _step(env, _tool(env, src, dst, path, size, "s3"), size),
            "curl_T_into_glance": _step(env, _curl(dst, path, "s3"), size),
            "curl_pipe_src_to_dst": _step(env, _curl_pipe(src, dst, path, size, "s3"), size),
            "boto3_straight_to_rgw": _step(env, _boto3(env, path), size),
            "asyncmigrate_put_unsized": _step(
                env, _tool(env, src, dst, path, size, "s3", "--upload-method", "put-unsized"), size
            ),
        }
        results["load_average_after"] = os.getloadavg()
    finally:
        path.unlink(missing_ok=True)
    out_file = ROOT / "benchmarks" / "results" / "ceph.json"
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
