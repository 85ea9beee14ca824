"""Interrupting the CLI mid-transfer against the real Glance pair: SIGKILL and
SIGINT, then a re-run; every image complete, bit-exact, same id, none deleted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import seed

from .conftest import Pair

pytestmark = pytest.mark.realglance


def _seed(pair: Pair, tag: str) -> dict[str, str]:
    out = {}
    for i, size in enumerate((96 * seed.MiB + 7, 64 * seed.MiB, 3 * seed.MiB)):
        data = seed.raw_image(size, 600 + i)
        image = pair.src.create(data, name=f"{tag}-{i}", disk_format="raw", container_format="bare")
        out[image["id"]] = hashlib.sha512(data).hexdigest()
    return out


def _interrupt(pair: Pair, ids: dict[str, str], signals: list[int]) -> int:
    args = [arg for image_id in ids for arg in ("--image", image_id)]
    cmd = [
        sys.executable,
        "-m",
        "asyncmigrate",
        "copy",
        "--src-cloud",
        "harness-src",
        "--dst-cloud",
        "harness-dst",
        "--concurrency",
        "2",
        "--chunk-size",
        "256KiB",
        "-q",
        *args,
    ]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": pair.env["clouds_yaml"]}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until an upload is really in flight
        if any((pair.dst.get(i) or {}).get("status") == "saving" for i in ids):
            break
        time.sleep(0.01)
    else:
        proc.kill()
        raise AssertionError("no upload was ever seen in flight")
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.1)
    return proc.wait(timeout=60)


def _assert_complete(pair: Pair, ids: dict[str, str]) -> None:
    run = pair.cli(
        "copy",
        "--src-cloud",
        "harness-src",
        "--dst-cloud",
        "harness-dst",
        *[arg for image_id in ids for arg in ("--image", image_id)],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for image_id, sha in ids.items():
        dst = pair.dst.get(image_id)
        assert dst is not None and dst["status"] == "active" and dst["os_hash_value"] == sha
        got = pair.dst.sha512_of_data(image_id)
        assert got is not None and got[1] == sha
    # Nothing was ever deleted on the destination: no DELETE reached its API.
    with open(pair.env["instances"]["dst"]["log"]) as fh:
        log = fh.read()
    assert not any(f'"DELETE /v2/images/{i}' in log for i in ids)


def test_sigkill_mid_transfer_then_rerun(pair: Pair) -> None:
    """kill -9 while uploading; the re-run uploads into the same queued ids and finishes."""
    ids = _seed(pair, "kill9")
    assert _interrupt(pair, ids, [signal.SIGKILL]) == -signal.SIGKILL
    time.sleep(0.5)  # glance notices the dropped upload and returns the image to queued
    assert all((pair.dst.get(i) or {}).get("status") in (None, "queued", "active") for i in ids)
    _assert_complete(pair, ids)


def test_double_sigint_mid_transfer_then_rerun(pair: Pair) -> None:
    """Ctrl-C twice while uploading: exit 130 at once, nothing left saving, the re-run finishes."""
    ids = _seed(pair, "sigint")
    t0 = time.monotonic()
    assert _interrupt(pair, ids, [signal.SIGINT, signal.SIGINT]) == 130
    assert time.monotonic() - t0 < 30
    time.sleep(0.5)
    assert all((pair.dst.get(i) or {}).get("status") in (None, "queued", "active") for i in ids)
    _assert_complete(pair, ids)


def test_single_sigint_finishes_in_flight(pair: Pair) -> None:
    """One Ctrl-C while uploading: the images in flight complete, exit 130, the re-run finishes the rest."""
    ids = _seed(pair, "graceful")
    assert _interrupt(pair, ids, [signal.SIGINT]) == 130
    statuses = [(pair.dst.get(i) or {}).get("status") for i in ids]
    assert "saving" not in statuses and "active" in statuses
    _assert_complete(pair, ids)
