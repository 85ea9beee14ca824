"""End to end against two real glance-api servers: copy a varied catalog with
the CLI at concurrency 4, then prove every image arrived whole, same id, same
attributes, same members, bit-exact — and that a second run changes nothing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
import seed

from .conftest import Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB
BIG = 256 * MiB + 17  # an odd size: the last chunk is short
OTHER_PROJECT = "b1b1b1b1b1b14b1b8b1b1b1b1b1b1b01"
MEMBERS = {
    "c2c2c2c2c2c24c2c8c2c2c2c2c2c2c01": "accepted",
    "c2c2c2c2c2c24c2c8c2c2c2c2c2c2c02": "pending",
    "c2c2c2c2c2c24c2c8c2c2c2c2c2c2c03": "rejected",
}
# Keys that legitimately differ between two clouds for the same image.
PER_CLOUD = {"created_at", "updated_at", "locations", "stores", "direct_url"}


def _catalog() -> list[tuple[bytes | None, dict[str, Any]]]:
    many = {f"prop_{i:02d}": f"value {i} é" for i in range(40)}
    return [
        (None, {"name": "queued-no-data", "disk_format": "raw"}),
        (b"x", {"name": "one-byte", "disk_format": "raw"}),
        (seed.raw_image(3 * MiB + 5, 3), {"name": "few-mb-public", "disk_format": "raw", "visibility": "public"}),
        (seed.raw_image(BIG, 4), {"name": "big-256mb", "disk_format": "raw", "visibility": "private"}),
        (
            seed.qcow2_image(512 * MiB, seed=5),
            {"name": "qcow2-tagged", "disk_format": "qcow2", "tags": ["linux", "tiny", "x86_64"]},
        ),
        (seed.iso_image(4 * MiB, seed=6), {"name": "iso-community", "disk_format": "iso", "visibility": "community"}),
        (seed.raw_image(2 * MiB, 7), {"name": "hidden", "disk_format": "raw", "os_hidden": True}),
        (seed.raw_image(1 * MiB, 8), {"name": "protected", "disk_format": "raw", "protected": True}),
        (seed.raw_image(1 * MiB, 9), {"name": "shared-with-members", "disk_format": "raw", "visibility": "shared"}),
        (seed.raw_image(1 * MiB, 10), {"name": "many-properties", "disk_format": "raw", **many}),
        (seed.raw_image(2 * MiB, 11), {"name": "deactivated", "disk_format": "raw"}),
        (
            seed.raw_image(1 * MiB, 12),
            {"name": "other-owner", "disk_format": "raw", "owner": OTHER_PROJECT, "visibility": "private"},
        ),
        (seed.raw_image(1 * MiB, 13), {"name": "min-disk-ram", "disk_format": "raw", "min_disk": 10, "min_ram": 2048}),
        (seed.raw_image(1 * MiB, 14), {"name": "in-slow-store", "disk_format": "raw", "_store": "slow"}),
        (None, {"name": "queued-hidden-props", "disk_format": "qcow2", "os_hidden": True, "os_distro": "cirros"}),
        (
            seed.raw_image(1 * MiB, 16),
            {"name": "community-tagged", "disk_format": "raw", "visibility": "community", "tags": ["c"]},
        ),
        (
            seed.raw_image(1 * MiB, 17),
            {
                "name": "public-protected-hidden",
                "disk_format": "raw",
                "visibility": "public",
                "protected": True,
                "os_hidden": True,
            },
        ),
        (seed.raw_image(1 * MiB, 18), {"name": "shared-no-members", "disk_format": "raw", "visibility": "shared"}),
        (seed.raw_image(1 * MiB, 19), {"name": "deactivated-protected", "disk_format": "raw", "protected": True}),
        (seed.raw_image(1 * MiB, 20), {"name": "ünïcode ☃ name", "disk_format": "raw", "container_format": "ovf"}),
        (seed.raw_image(MiB + 1, 21), {"name": "chunk-plus-one", "disk_format": "raw"}),
    ]


def seed_catalog(
    src: seed.Glance, *, store: str | None = None, tag: str = "", without: frozenset[str] = frozenset()
) -> dict[str, str | None]:
    """Seed every kind of the catalog (names prefixed with ``tag``, all data in ``store`` when named,
    the kinds in ``without`` left out) on ``src``; returns {id: sha512 of its data, None when it has none}."""
    expected: dict[str, str | None] = {}
    kernel = ramdisk = None
    for data, attrs in _catalog():
        attrs = dict(attrs)
        own_store = attrs.pop("_store", None)
        if attrs["name"] in without:
            continue
        attrs.setdefault("container_format", "bare")
        name = attrs["name"]
        attrs["name"] = tag + name
        image = src.create(data, store=store or own_store, **attrs)
        expected[image["id"]] = hashlib.sha512(data).hexdigest() if data is not None else None
        if name == "shared-with-members":
            for member, status in MEMBERS.items():
                src.ok("POST", f"/v2/images/{image['id']}/members", {"member": member})
                if status != "pending":
                    src.ok("PUT", f"/v2/images/{image['id']}/members/{member}", {"status": status})
        if name.startswith("deactivated"):
            src.ok("POST", f"/v2/images/{image['id']}/actions/deactivate")
        if name == "one-byte":
            kernel = image["id"]
        if name == "chunk-plus-one":
            ramdisk = image["id"]
    # An image that refers to others by id: it keeps working because ids are kept.
    refs = src.create(
        seed.raw_image(MiB, 22),
        store=store,
        name=tag + "refers-to-kernel",
        disk_format="raw",
        container_format="bare",
        kernel_id=kernel,
        ramdisk_id=ramdisk,
    )
    expected[refs["id"]] = hashlib.sha512(seed.raw_image(MiB, 22)).hexdigest()
    return expected


@pytest.fixture(scope="module")
def seeded(pair: Pair) -> dict[str, str | None]:
    """Seed the source; returns {id: sha512 of its data, None when it has none}."""
    expected = seed_catalog(pair.src)
    assert len(expected) >= 20
    return expected


def _comparable(image: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in image.items() if k not in PER_CLOUD and not k.startswith("os_glance_")}
    out["tags"] = sorted(out.get("tags") or [])
    return out


def assert_same(src_glance: seed.Glance, dst_glance: seed.Glance, seeded: dict[str, str | None]) -> None:
    """Every seeded image is at the destination with the same attributes, members and bytes."""
    for image_id, sha in seeded.items():
        src = src_glance.get(image_id)
        dst = dst_glance.get(image_id)
        assert src is not None and dst is not None, image_id
        assert _comparable(dst) == _comparable(src), f"attributes differ for {src['name']}"
        if src.get("visibility") == "shared":
            assert dst_glance.members(image_id) == src_glance.members(image_id)
        if sha is None:
            assert dst["status"] == "queued" and dst["size"] is None
            continue
        got = dst_glance.sha512_of_data(image_id)
        assert got is not None and got[1] == sha, f"data differs for {src['name']}"
        assert dst["os_hash_value"] == sha


def _assert_same(pair: Pair, seeded: dict[str, str | None]) -> None:
    assert_same(pair.src, pair.dst, seeded)


def test_dry_run_changes_nothing(pair: Pair, seeded: dict[str, str | None]) -> None:
    """--dry-run plans every image (with its bytes) and creates nothing on the destination."""
    run = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.report is not None
    planned = {i["id"]: i for i in run.report["images"]}
    assert set(seeded) <= set(planned)
    assert {planned[i]["action"] for i in seeded} == {"copy", "create"}
    assert run.report["summary"]["bytes"] >= BIG
    assert all(pair.dst.get(i) is None for i in seeded)
    assert "dry run:" in run.stdout


def test_copy_everything_then_nothing(pair: Pair, seeded: dict[str, str | None]) -> None:
    """A copy at concurrency 4 brings every image over intact; a second run is all skips."""
    run = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--concurrency", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    outcomes = run.outcomes()
    for image_id, sha in seeded.items():
        assert outcomes[image_id] == ("copied" if sha else "created"), image_id
    assert run.report is not None
    big = next(i for i in run.report["images"] if i["name"] == "big-256mb")
    print(
        f"\nFIGURES big image {BIG} B in {big['seconds']:.2f} s = {BIG / big['seconds'] / 1e6:.1f} MB/s; "
        f"whole run {run.seconds:.1f} s; CLI peak RSS {run.report['summary']['peak_rss_bytes'] / 2**20:.1f} MiB"
    )
    _assert_same(pair, seeded)
    stamps = {i: pair.dst.get(i)["updated_at"] for i in seeded}  # type: ignore[index]

    again = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--concurrency", "4")
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(again.outcomes().values()) == {"skipped"}
    assert again.report["summary"]["bytes"] == 0  # type: ignore[index]
    assert {i: pair.dst.get(i)["updated_at"] for i in seeded} == stamps  # type: ignore[index]
    _assert_same(pair, seeded)


def test_dst_store_is_honoured(pair: Pair) -> None:
    """--dst-store puts the data in the named destination store."""
    image = pair.src.create(seed.raw_image(MiB, 30), name="to-archive", disk_format="raw", container_format="bare")
    run = pair.cli(
        "copy",
        "--src-cloud",
        "harness-src",
        "--dst-cloud",
        "harness-dst",
        "--image",
        image["id"],
        "--dst-store",
        "archive",
    )
    assert run.returncode == 0, run.stderr
    assert pair.dst.get(image["id"])["stores"] == "archive"  # type: ignore[index]


def test_conflicts_are_reported_never_overwritten(pair: Pair) -> None:
    """Same id with other attributes at the destination → conflict, exit 1, destination untouched."""
    image = pair.src.create(seed.raw_image(MiB, 31), name="mine", disk_format="raw", container_format="bare")
    pair.dst.create(seed.raw_image(MiB, 32), id=image["id"], name="theirs", disk_format="raw", container_format="bare")
    before = pair.dst.get(image["id"])
    run = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--image", image["id"])
    assert run.returncode == 1
    assert run.outcomes() == {image["id"]: "conflict"}
    assert pair.dst.get(image["id"]) == before


def test_a_deleted_id_is_reported_not_burned_again(pair: Pair) -> None:
    """An id deleted at the destination can never be recreated: the image fails with that reason."""
    image = pair.src.create(seed.raw_image(MiB, 33), name="was-deleted", disk_format="raw", container_format="bare")
    pair.dst.create(None, id=image["id"], name="was-deleted", disk_format="raw", container_format="bare")
    pair.dst.ok("DELETE", f"/v2/images/{image['id']}")
    run = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--image", image["id"])
    assert run.returncode == 1
    entry = run.report["images"][0]  # type: ignore[index]
    assert entry["outcome"] == "failed" and "deleted" in entry["reason"]


def test_unknown_image_id_fails_that_image(pair: Pair) -> None:
    """--image with an id the source does not have is reported as failed (exit 1)."""
    missing = str(uuid.uuid4())
    run = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--image", missing)
    assert run.returncode == 1
    assert run.outcomes() == {missing: "failed"}
