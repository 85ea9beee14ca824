"""Store moves on a real glance-api with two file stores and an S3 store (Ceph's RGW):
file → S3 and file → file by copy-image, file → S3 by location swap, and a run
killed mid-way that completes on re-run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import seed

from .conftest import Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB
PER_MOVE = {"stores", "updated_at", "locations", "direct_url"}


def _catalog(tag: str) -> list[tuple[bytes, dict[str, Any]]]:
    return [
        (b"y", {"name": f"{tag}-one-byte", "disk_format": "raw"}),
        (seed.raw_image(MiB, 41), {"name": f"{tag}-1mib", "disk_format": "raw", "visibility": "public"}),
        (seed.raw_image(5 * MiB + 3, 42), {"name": f"{tag}-5mib", "disk_format": "raw", "tags": ["t1", "t2"]}),
        (seed.raw_image(24 * MiB, 43), {"name": f"{tag}-24mib", "disk_format": "raw", "os_hidden": True}),
        (seed.qcow2_image(256 * MiB, seed=44), {"name": f"{tag}-qcow2", "disk_format": "qcow2"}),
        (seed.iso_image(3 * MiB, seed=45), {"name": f"{tag}-iso", "disk_format": "iso", "visibility": "community"}),
        (seed.raw_image(2 * MiB, 46), {"name": f"{tag}-protected", "disk_format": "raw", "protected": True}),
        (
            seed.raw_image(2 * MiB, 47),
            {"name": f"{tag}-props", "disk_format": "raw", **{f"k{i}": f"v{i}" for i in range(20)}},
        ),
        (seed.raw_image(2 * MiB, 48), {"name": f"{tag}-shared", "disk_format": "raw", "visibility": "shared"}),
        (seed.raw_image(3 * MiB, 49), {"name": f"{tag}-deactivated", "disk_format": "raw"}),
        (seed.raw_image(7 * MiB + 1, 50), {"name": f"{tag}-7mib", "disk_format": "raw", "min_disk": 2}),
    ]


def _seed(pair: Pair, tag: str, store: str) -> dict[str, dict[str, Any]]:
    """Seed the catalog into ``store``; {id: {"sha": ..., "before": image json}}."""
    out: dict[str, dict[str, Any]] = {}
    for data, attrs in _catalog(tag):
        image = pair.src.create(data, store=store, container_format="bare", **attrs)
        if attrs["name"].endswith("shared"):
            pair.src.ok("POST", f"/v2/images/{image['id']}/members", {"member": "d3d3d3d3d3d34d3d8d3d3d3d3d3d3d01"})
        if attrs["name"].endswith("deactivated"):
            pair.src.ok("POST", f"/v2/images/{image['id']}/actions/deactivate")
        out[image["id"]] = {"sha": hashlib.sha512(data).hexdigest(), "before": pair.src.get(image["id"])}
    return out


def _assert_moved(pair: Pair, seeded: dict[str, dict[str, Any]], new: str) -> None:
    for image_id, info in seeded.items():
        now = pair.src.get(image_id)
        assert now is not None
        assert now["stores"] == new, (now["name"], now["stores"])
        strip = lambda d: {k: v for k, v in d.items() if k not in PER_MOVE and not k.startswith("os_glance_")}  # noqa: E731
        assert strip(now) == strip(info["before"]), now["name"]
        if now["status"] == "deactivated":
            pair.src.ok("POST", f"/v2/images/{image_id}/actions/reactivate")
        got = pair.src.sha512_of_data(image_id)
        if now["status"] != info["before"]["status"]:
            raise AssertionError(f"status changed for {now['name']}")
        if info["before"]["status"] == "deactivated":
            pair.src.ok("POST", f"/v2/images/{image_id}/actions/deactivate")
        assert got is not None and got[1] == info["sha"], now["name"]


def _ids(seeded: dict[str, Any]) -> list[str]:
    return [arg for image_id in seeded for arg in ("--image", image_id)]


def test_copy_image_move_file_to_s3_then_nothing(pair: Pair) -> None:
    """11 varied images move fast → cold (S3) with their ids, attributes and bytes; a re-run does nothing."""
    seeded = _seed(pair, "s3", "fast")
    args = ["move", "--cloud", "harness-src", "--from-store", "fast", "--to-store", "cold"]
    run = pair.cli(*args, "--include-deactivated", "--concurrency", "3", *_ids(seeded))
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(run.outcomes().values()) == {"moved"}
    print(f"\nFIGURES move file->s3 {len(seeded)} images in {run.seconds:.1f} s")
    _assert_moved(pair, seeded, "cold")
    again = pair.cli(*args, "--include-deactivated", *_ids(seeded))
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}
    _assert_moved(pair, seeded, "cold")


def test_copy_image_move_file_to_file(pair: Pair) -> None:
    """slow → fast between two file stores, every image intact."""
    seeded = dict(list(_seed(pair, "ff", "slow").items())[:6])
    run = pair.cli(
        "move",
        "--cloud",
        "harness-src",
        "--from-store",
        "slow",
        "--to-store",
        "fast",
        "--verify-download",
        *_ids(seeded),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    _assert_moved(pair, seeded, "fast")


def test_location_method_file_to_s3(pair: Pair) -> None:
    """--method location: data streams into hidden protected carriers in S3; originals keep id and attributes."""
    seeded = {k: v for k, v in _seed(pair, "loc", "slow").items() if v["before"]["status"] == "active"}
    move = ("move", "--cloud", "harness-src", "--from-store", "slow", "--to-store", "cold", "--method", "location")
    run = pair.cli(*move, *_ids(seeded))
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(run.outcomes().values()) == {"moved"}
    _assert_moved(pair, seeded, "cold")
    carriers = [i for i in pair.src.all_images() if i.get("asyncmigrate_carrier_for") in seeded]
    assert len(carriers) == len(seeded)
    assert all(c["protected"] and c["os_hidden"] and c["stores"] == "cold" for c in carriers)
    again = pair.cli(*move, *_ids(seeded))
    assert set(again.outcomes().values()) == {"skipped"}


def test_killed_move_completes_on_rerun(pair: Pair) -> None:
    """SIGKILL in the middle of a move; the re-run finishes every image, nothing lost."""
    seeded = {k: v for k, v in _seed(pair, "kill", "fast").items() if v["before"]["status"] == "active"}
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
        "slow",
        "--concurrency",
        "2",
        "-q",
        *_ids(seeded),
    ]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": pair.env["clouds_yaml"]}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any("slow" in (pair.src.get(i) or {}).get("stores", "") for i in seeded):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    moved_before = sum(pair.src.get(i)["stores"] == "slow" for i in seeded)  # type: ignore[index]
    assert moved_before < len(seeded), "the kill came too late to interrupt anything"
    run = pair.cli("move", "--cloud", "harness-src", "--from-store", "fast", "--to-store", "slow", *_ids(seeded))
    assert run.returncode == 0, run.stdout + run.stderr
    _assert_moved(pair, seeded, "slow")


def test_location_method_empties_a_store_of_zero_byte_images(pair: Pair) -> None:
    """--method location cannot add a 0-byte location (glance answers 400 "Invalid location":
    glance/location.py accepts only sizes > 0), so 0-byte images are moved with copy-image,
    which this cloud enables: the store is emptied completely, no carrier is made for them."""
    zero = pair.src.create(b"", store="slow", name="zero-bytes", disk_format="raw", container_format="bare")
    one = pair.src.create(
        seed.raw_image(MiB, 60), store="slow", name="one-mib", disk_format="raw", container_format="bare"
    )
    ids = {zero["id"]: hashlib.sha512(b"").hexdigest(), one["id"]: hashlib.sha512(seed.raw_image(MiB, 60)).hexdigest()}
    move = ("move", "--cloud", "harness-src", "--from-store", "slow", "--to-store", "cold", "--method", "location")
    run = pair.cli(*move, *_ids(ids))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outcomes() == dict.fromkeys(ids, "moved")
    reasons = {i["id"]: i["reason"] for i in run.report["images"]}  # type: ignore[index]
    assert "copy-image" in reasons[zero["id"]] and "0-byte" in reasons[zero["id"]]
    for image_id, sha in ids.items():
        image = pair.src.get(image_id)
        assert image is not None and image["stores"] == "cold" and image["status"] == "active"
        assert [loc["metadata"]["store"] for loc in image["locations"]] == ["cold"]
        size = image["size"]
        assert (pair.src.sha512_of_data(image_id) or (0, hashlib.sha512(b"").hexdigest())) == (size, sha)
    carriers = [i for i in pair.src.all_images() if i.get("asyncmigrate_carrier_for") in ids]
    assert [c["asyncmigrate_carrier_for"] for c in carriers] == [one["id"]]
    again = pair.cli(*move, *_ids(ids))
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}


def _copy_into(pair: Pair, image_id: str, old: str, new: str) -> Path:
    """copy-image ``image_id`` into ``new`` keeping ``old`` (a real server's copy); the file of NEW's copy."""
    run = pair.cli(
        "move", "--cloud", "harness-src", "--from-store", old, "--to-store", new, "--keep-source", "--image", image_id
    )
    assert run.returncode == 0 and run.outcomes() == {image_id: "copied"}, run.stdout + run.stderr
    path = Path(pair.env["instances"]["src"]["data_dir"]) / new / image_id
    assert path.is_file(), path
    return path


def test_verify_download_reads_the_new_store_before_the_delete_and_catches_a_damaged_copy(pair: Pair) -> None:
    """glance 33 honours ?prefer=: --verify-download reads slow's copy before fast's is deleted;
    a copy damaged on disk is read twice, dropped and copied again, never kept; the report
    says how each image was checked."""
    good = pair.src.create(
        seed.raw_image(2 * MiB, 61), store="fast", name="vd-good", disk_format="raw", container_format="bare"
    )
    data = seed.raw_image(3 * MiB, 62)
    bad = pair.src.create(data, store="fast", name="vd-bad", disk_format="raw", container_format="bare")
    copy = _copy_into(pair, bad["id"], "fast", "slow")
    damaged = bytearray(copy.read_bytes())
    damaged[MiB] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    run = pair.cli(
        "move",
        "--cloud",
        "harness-src",
        "--from-store",
        "fast",
        "--to-store",
        "slow",
        "--verify-download",
        "--image",
        good["id"],
        "--image",
        bad["id"],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    entries = {e["id"]: e for e in run.report["images"]}  # type: ignore[index]
    assert {e["outcome"] for e in entries.values()} == {"moved"}
    assert entries[bad["id"]]["attempts"] == 3  # read bad twice, dropped, copied again
    for entry in entries.values():
        check = entry["download_check"]
        assert check["how"] == "prefer" and check["store"] == "slow" and check["algorithm"] == "sha512", entry
        assert entry["verification"] == "sha512"
    assert pair.src.sha512_of_data(bad["id"]) == (len(data), hashlib.sha512(data).hexdigest())
    assert (pair.src.get(bad["id"]) or {})["stores"] == "slow"


def test_a_missing_new_copy_is_served_from_the_old_one_and_caught_after_the_delete(pair: Pair) -> None:
    """What ?prefer= cannot see, on the real server: with slow's file gone glance serves fast's
    bytes to the check without a word; once fast is deleted the one-byte read of slow finds no
    data, and the image is deactivated and reported."""
    image = pair.src.create(
        seed.raw_image(MiB, 63), store="fast", name="vd-lost", disk_format="raw", container_format="bare"
    )
    _copy_into(pair, image["id"], "fast", "slow").unlink()
    ranged = urllib.request.Request(
        f"{pair.src.url}/v2/images/{image['id']}/file?prefer=slow", headers={"Range": "bytes=0-"}
    )
    with seed.HTTP.open(ranged) as resp:  # served in full: from fast, without a word
        assert resp.status == 206 and hashlib.sha512(resp.read()).hexdigest() == image["os_hash_value"]
    run = pair.cli(
        "move",
        "--cloud",
        "harness-src",
        "--from-store",
        "fast",
        "--to-store",
        "slow",
        "--verify-download",
        "--image",
        image["id"],
    )
    assert run.returncode == 1, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert entry["outcome"] == "failed" and "serves no data" in entry["reason"] and "DEACTIVATED" in entry["reason"]
    assert (pair.src.get(image["id"]) or {})["status"] == "deactivated"
