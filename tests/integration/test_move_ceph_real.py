"""Store moves on the harness's real Ceph (glance 33, glance_store 5.7.0, Debian's ceph 16): file →
rbd (the seed's move, on Ceph) and rbd → rbd (dst ``ceph`` → ``ceph2``), by copy-image and by
location, each image's bytes read back out of its pool with ``rbd export``.

What the real servers showed that these pin: an image whose snapshot has a format-1 clone (what
Nova and Cinder make on a cluster whose min compat client is older than mimic) cannot leave its
old store (409, 500 for a location remove) and is kept in both, reported ``in-use``; with clones
of format 2 only, glance_store trashes the RBD image and answers 204; rbd (and s3) stores refuse
every ``Range`` (400 "Getting images randomly from this store is not supported"), and Glance then
serves the next location without a word — so ``--verify-download`` reads an RBD copy whole, and a
cut download from RBD is copied again from byte 0.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import seed

from tests.faultproxy import FaultProxy

from .conftest import Ceph, CliRun, Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB
PER_MOVE = {"stores", "updated_at", "locations", "direct_url"}


def _seed(ceph: Ceph, tag: str, n: int, store: str) -> dict[str, bytes]:
    """n small raw images in dst's ``store``, with attributes to keep; {id: data}."""
    out = {}
    for i in range(n):
        data = seed.raw_image(MiB + 4096 * i + i, 70 + i)
        attrs: dict[str, Any] = {"tags": [f"t{i}"], "min_disk": 1 + i, "hw_disk_bus": "scsi", "owner_note": tag}
        image = ceph.dst.create(
            data, store=store, name=f"mc-{tag}-{i}", disk_format="raw", container_format="bare", **attrs
        )
        out[image["id"]] = data
    return out


def _kept(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    """Every attribute but the per-store ones is unchanged."""
    assert after is not None
    strip = lambda d: {k: v for k, v in d.items() if k not in PER_MOVE and not k.startswith("os_glance_")}  # noqa: E731
    return strip(before) == strip(after)


def _in_pool(ceph: Ceph, image: dict[str, Any] | None, store: str, data: bytes) -> bool:
    """The bytes of the image's snapshot in ``store``'s pool, as Ceph holds them, are ``data``."""
    assert image is not None
    return ceph.exported(ceph.snapshot(image, store)) == (len(data), hashlib.sha512(data).hexdigest())


def _entry(run: CliRun, image_id: str) -> dict[str, Any]:
    assert run.report is not None
    return next(e for e in run.report["images"] if e["id"] == image_id)


def _rbd_names(ceph: Ceph, *args: str) -> set[str]:
    """The RBD image names ``rbd ls``, ``rbd trash ls`` or ``rbd children`` (``args``) lists."""
    listed = ceph.rbd_json(*args)
    return {item if isinstance(item, str) else item.get("name") or item["image"] for item in listed}


def _move(pair: Pair, tag: str, old: str, new: str, *extra: str) -> CliRun:
    args = ("move", "--cloud", "harness-dst", "--from-store", old, "--to-store", new, "--name", f"mc-{tag}-*")
    return pair.cli(*args, "--no-journal", *extra)


def test_file_to_rbd_plan_then_move_bit_exact_with_the_rbd_copy_read_whole(pair: Pair, ceph: Ceph) -> None:
    """main (file) → ceph: plan says which images hold data only in main and the bytes that move
    (none for one already in both); the move with --verify-download reads each ceph copy whole
    through ?prefer= before main's delete (a ranged read is refused by RBD and served from main),
    leaves every image active with every attribute, its bytes in POOL/ID@snap, main emptied."""
    tag = os.urandom(3).hex()
    images = _seed(ceph, tag, 3, "main")
    both = next(iter(images))
    ceph.dst.ok("POST", f"/v2/images/{both}/import", {"method": {"name": "copy-image"}, "stores": ["ceph"]})
    before = {i: ceph.dst.get(i) or {} for i in images}
    plan = json.loads(
        pair.cli(
            "plan", "move", "--cloud", "harness-dst", "--from-store", "main", "--to-store", "ceph",
            "--name", f"mc-{tag}-*", "--output", "json", report=False,
        ).stdout
    )  # fmt: skip
    rows = {r["id"]: r for r in plan["images"]}
    # The copy-image above may still be running: then the plan waits for it, and nothing moves.
    assert rows[both]["action"] in ("drop-old", "wait"), rows[both]
    only_main = [i for i in images if i != both]
    assert all(rows[i]["action"] == "move" and "data only in main" in rows[i]["reason"] for i in only_main)
    assert plan["totals"]["bytes"] == sum(len(images[i]) for i in only_main)

    run = _move(pair, tag, "main", "ceph", "--verify-download")
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(run.outcomes().values()) == {"moved"}
    for image_id, data in images.items():
        image = ceph.dst.get(image_id)
        assert image is not None and image["stores"] == "ceph" and image["status"] == "active"
        assert _kept(before[image_id], image), image_id
        assert _in_pool(ceph, image, "ceph", data)
        assert not (Path(pair.env["instances"]["dst"]["data_dir"]) / "main" / image_id).exists()
        check = _entry(run, image_id)["download_check"]
        assert check["how"] == "prefer" and check["store"] == "ceph" and check["bytes"] == len(data)
        assert check["algorithm"] == "sha512" and "read whole: ceph serves no byte ranges" in check["proves"]
    assert "main: none of the images this run took is left in it" in run.stdout


def test_rbd_to_rbd_keeps_a_cloned_image_in_both_until_its_clone_is_flattened(pair: Pair, ceph: Ceph) -> None:
    """ceph → ceph2 with one image cloned as Nova does (format 1): glance refuses its delete from
    ceph (409 in use), so it stays in both, reported in-use with its snapshot and the way out;
    the others move, read back whole, bit-exact in ceph2's pool; exit 1; nothing says ceph is
    empty. After `rbd flatten` of the child a re-run drops its ceph copy for real: exit 0."""
    tag = os.urandom(3).hex()
    images = _seed(ceph, tag, 3, "ceph")
    pinned = next(iter(images))
    snapshot = ceph.snapshot(ceph.dst.get(pinned) or {}, "ceph")
    child = f"{ceph.pool('dst', 'ceph')}/vm-{tag}"
    ceph.cli("rbd", "clone", "--rbd-default-clone-format=1", snapshot, child)
    try:
        first = _move(pair, tag, "ceph", "ceph2", "--verify-download")
        assert first.returncode == 1, first.stdout + first.stderr
        outcomes = first.outcomes()
        assert outcomes.pop(pinned) == "in-use" and set(outcomes.values()) == {"moved"}
        reason = _entry(first, pinned)["reason"]
        assert f"its RBD snapshot {snapshot} has clones" in reason and f"`rbd children {snapshot}`" in reason
        assert "`rbd flatten` each child" in reason and "or keep ceph" in reason and "409" in reason
        assert set((ceph.dst.get(pinned) or {})["stores"].split(",")) == {"ceph", "ceph2"}
        assert _rbd_names(ceph, "children", snapshot) == {f"vm-{tag}"}
        for image_id in outcomes:
            image = ceph.dst.get(image_id)
            assert image is not None and image["stores"] == "ceph2" and _in_pool(ceph, image, "ceph2", images[image_id])
            assert "read whole" in _entry(first, image_id)["download_check"]["proves"]
        assert "ceph still holds 1 of these images (1 in-use): see the report" in first.stdout
        assert first.report is not None and "Glance holds none" not in json.dumps(first.report)
        assert "Glance holds none" not in first.stdout + first.stderr

        ceph.cli("rbd", "flatten", "--no-progress", child)
        second = _move(pair, tag, "ceph", "ceph2")
        assert second.returncode == 0, second.stdout + second.stderr
        assert [(e["id"], e["action"], e["outcome"]) for e in second.report["images"]] == [  # type: ignore[index]
            (pinned, "drop-old", "moved")
        ]
        image = ceph.dst.get(pinned)
        assert image is not None and image["stores"] == "ceph2" and _in_pool(ceph, image, "ceph2", images[pinned])
        assert pinned not in _rbd_names(ceph, "ls", ceph.pool("dst", "ceph"))
        assert pinned not in _rbd_names(ceph, "trash", "ls", ceph.pool("dst", "ceph"))  # deleted, not trashed
        assert "ceph: Glance holds none of the images this run took in it any more" in second.stdout
    finally:
        ceph.cli("rbd", "rm", "--no-progress", child)


def test_a_204_for_an_image_with_clone_v2_children_trashes_it_and_the_summary_says_where(
    pair: Pair, ceph: Ceph
) -> None:
    """With a format-2 clone only (RBD clone v2) glance_store trashes the RBD image and Glance
    answers 204: the move says moved (exit 0) — the tool cannot see Ceph — and its summary says a
    204 proves only the location gone, where the trashed image is (`rbd trash ls POOL`) and how it
    is freed; Ceph shows it so: in the trash, the clone's parent, kept after the flatten."""
    tag = os.urandom(3).hex()
    (image_id,) = _seed(ceph, tag, 1, "ceph")
    pool = ceph.pool("dst", "ceph")
    snapshot = ceph.snapshot(ceph.dst.get(image_id) or {}, "ceph")
    child = f"{pool}/vm2-{tag}"
    ceph.cli("rbd", "clone", "--rbd-default-clone-format=2", snapshot, child)
    try:
        run = _move(pair, tag, "ceph", "ceph2")
        assert run.returncode == 0 and run.outcomes() == {image_id: "moved"}, run.stdout + run.stderr
        assert run.report is not None
        gone, trash = run.report["summary"]["notes"]
        assert gone == "ceph: Glance holds none of the images this run took in it any more"
        assert f"not that pool {pool} let go of their data" in trash and "clones of format 2" in trash
        assert f"`rbd trash ls {pool}`" in trash and f"`rbd trash purge {pool}`" in trash
        assert gone in run.stdout and trash in run.stdout
        # What Ceph holds: the RBD image in the pool's trash, still the clone's parent.
        assert image_id in _rbd_names(ceph, "trash", "ls", pool) and image_id not in _rbd_names(ceph, "ls", pool)
        parent = ceph.rbd_json("info", child)["parent"]
        assert parent["image"] == image_id and parent["trash"] is True
        ceph.cli("rbd", "flatten", "--no-progress", child)
        assert image_id in _rbd_names(ceph, "trash", "ls", pool)  # flattened: still there until purged
    finally:
        ceph.cli("rbd", "rm", "--no-progress", child)
        trashed = [t["id"] for t in ceph.rbd_json("trash", "ls", pool) if t["name"] == image_id]
        for rbd_id in trashed:
            ceph.cli("rbd", "trash", "rm", "--no-progress", "--pool", pool, rbd_id)


def test_location_move_between_rbd_stores_with_a_cloned_image(pair: Pair, ceph: Ceph) -> None:
    """ceph → ceph2 by location (show_multiple_locations): each image gets its carrier's RBD
    snapshot in ceph2 as its location, read back whole from the carrier before the swap; the
    cloned one's location remove is refused (500 "in use"), so it stays in both, in-use, its
    carrier named; after the flatten a re-run drops its ceph location: exit 0."""
    tag = os.urandom(3).hex()
    images = _seed(ceph, tag, 2, "ceph")
    pinned, free = images
    snapshot = ceph.snapshot(ceph.dst.get(pinned) or {}, "ceph")
    child = f"{ceph.pool('dst', 'ceph')}/vml-{tag}"
    ceph.cli("rbd", "clone", "--rbd-default-clone-format=1", snapshot, child)
    try:
        first = _move(pair, tag, "ceph", "ceph2", "--method", "location", "--verify-download")
        assert first.returncode == 1, first.stdout + first.stderr
        assert first.outcomes() == {pinned: "in-use", free: "moved"}
        moved = _entry(first, free)
        carrier = moved["carrier"]
        image = ceph.dst.get(free)
        assert image is not None and image["stores"] == "ceph2"
        assert ceph.snapshot(image, "ceph2") == f"{ceph.pool('dst', 'ceph2')}/{carrier}@snap"
        assert _in_pool(ceph, image, "ceph2", images[free])
        check = moved["download_check"]
        assert check["how"] == "carrier" and "read whole" in check["proves"]
        stuck = _entry(first, pinned)
        assert "500" in stuck["reason"] and f"`rbd children {snapshot}`" in stuck["reason"]
        assert f"carrier {stuck['carrier']} holds its data in ceph2" in stuck["reason"]
        assert set((ceph.dst.get(pinned) or {})["stores"].split(",")) == {"ceph", "ceph2"}

        ceph.cli("rbd", "flatten", "--no-progress", child)
        second = _move(pair, tag, "ceph", "ceph2", "--method", "location")
        assert second.returncode == 0 and second.outcomes() == {pinned: "moved"}, second.stdout + second.stderr
        image = ceph.dst.get(pinned)
        assert image is not None and image["stores"] == "ceph2" and _in_pool(ceph, image, "ceph2", images[pinned])
    finally:
        ceph.cli("rbd", "rm", "--no-progress", child)


@pytest.fixture
def proxied_src(pair: Pair, tmp_path: Path) -> Iterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the real src glance, as cloud 'proxy-src'; (proxy, clouds.yaml)."""
    with FaultProxy.running(pair.env["instances"]["src"]["url"]) as proxy:
        clouds = tmp_path / "clouds.yaml"
        dst = pair.env["instances"]["dst"]["url"]
        lines = ["clouds:"]
        for name, url in (("proxy-src", proxy.url), ("harness-dst", dst)):
            lines += [f"  {name}:", "    auth_type: none", "    auth:", f"      endpoint: {url}"]
        clouds.write_text("\n".join(lines) + "\n")
        yield proxy, str(clouds)


def test_a_cut_download_from_rbd_is_copied_again_from_byte_zero(
    pair: Pair, ceph: Ceph, proxied_src: tuple[FaultProxy, str]
) -> None:
    """RBD refuses the Range a resume sends (400), so a source connection cut mid-image is healed
    by a second attempt from byte 0 — the copy arrives bit-exact — instead of failing the image."""
    proxy, clouds = proxied_src
    data = seed.raw_image(3 * MiB + 5, 77)
    image = ceph.src.create(
        data, store="ceph", name=f"cut-{os.urandom(3).hex()}", disk_format="raw", container_format="bare"
    )
    proxy.cut_after("GET", rf"/v2/images/{image['id']}/file$", MiB)
    run = pair.cli("copy", "--src-cloud", "proxy-src", "--dst-cloud", "harness-dst", "--image", image["id"],
                   "--no-journal", clouds_yaml=clouds)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    entry = _entry(run, image["id"])
    assert entry["outcome"] == "copied" and entry["attempts"] == 2, entry
    assert [s.status for s in proxy.matching("GET", r"/file$")] == [200, 400, 200]
    assert pair.dst.sha512_of_data(image["id"]) == (len(data), hashlib.sha512(data).hexdigest())


def test_a_qcow2_bound_for_rbd_is_flagged_by_plan_move_move_and_sync(pair: Pair, ceph: Ceph) -> None:
    """not-raw-on-rbd on the real servers for the commands other than copy: a qcow2 in dst's file
    store is flagged by ``plan move`` and by the move into the RBD store (which copies it as it is,
    bit-exact, never blocked); a qcow2 synced from src into glance "rbd" is flagged by ``plan
    sync`` and ``sync``, whose summary says clones at the destination start fresh."""
    tag = os.urandom(3).hex()
    qcow2 = seed.qemu_qcow2(8 * MiB, 2 * MiB, seed=4203)
    moving = ceph.dst.create(qcow2.data, store="main", name=f"mc-{tag}-q", disk_format="qcow2", container_format="bare")
    plan = pair.cli(
        "plan", "move", "--cloud", "harness-dst", "--from-store", "main", "--to-store", "ceph",
        "--name", f"mc-{tag}-*", "--output", "json", report=False,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    ((row),) = json.loads(plan.stdout)["images"]
    assert row["traps"] == ["not-raw-on-rbd"] and "convert it to raw first" in row["reason"], row
    run = _move(pair, tag, "main", "ceph")
    assert run.returncode == 0 and run.outcomes() == {moving["id"]: "moved"}, run.stdout + run.stderr
    moved = _entry(run, moving["id"])
    assert moved["traps"] == ["not-raw-on-rbd"] and "convert it to raw first" in moved["warnings"][0], moved
    assert _in_pool(ceph, ceph.dst.get(moving["id"]), "ceph", qcow2.data)

    synced = pair.src.create(qcow2.data, name=f"sq-{tag}", disk_format="qcow2", container_format="bare")
    args = ("sync", "--src-cloud", "harness-src", "--dst-cloud", ceph.rbd_cloud, "--image", synced["id"])
    args += ("--journal", str(pair.tmp / f"sq-{tag}.sqlite"))
    plan_sync = pair.cli("plan", *args, "--output", "json", report=False)
    assert plan_sync.returncode == 0, plan_sync.stdout + plan_sync.stderr
    assert [r["traps"] for r in json.loads(plan_sync.stdout)["images"]] == [["not-raw-on-rbd"]]
    sync = pair.cli(*args)
    assert sync.returncode == 0 and sync.outcomes() == {synced["id"]: "copied"}, sync.stdout + sync.stderr
    assert _entry(sync, synced["id"])["traps"] == ["not-raw-on-rbd"]
    assert sync.report is not None and any(
        "clones at the destination start fresh" in n for n in sync.report["summary"]["notes"]
    )
    assert ceph.rbd_glance.sha512_of_data(synced["id"]) == (len(qcow2.data), hashlib.sha512(qcow2.data).hexdigest())
