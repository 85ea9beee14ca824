"""Store moves on RBD (ceph → ceph2) against the fake Glance: an image whose snapshot has clones
stays in both stores, reported in use with what holds it and the way out; the run goes on,
exits 1, never says the old store is empty; a re-run after the flatten finishes; ``plan move``
says what moves and warns about what the destination store does badly; ``--verify-download``
reads an RBD copy whole (RBD serves no ranges: a ranged read would be served from OLD)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncmigrate import load_cloud
from asyncmigrate.config import MoveConfig
from asyncmigrate.report import RunResult
from asyncmigrate.storemove import move_images
from tests.conftest import FAST_RETRY, write_clouds_yaml
from tests.fakeglance import GLANCE_27, FakeGlance, FakeServer


def ceph_cloud(*, locations: bool = True) -> FakeGlance:
    """Stores main (file), ceph (rbd pool images), ceph2 (rbd pool images-ec), swift."""
    fake = FakeGlance(
        stores={"main": "", "ceph": "", "ceph2": "", "swift": ""},
        store_types={"ceph": "rbd", "ceph2": "rbd", "swift": "swift"},
        show_multiple_locations=locations,
    )
    fake.backend.pools.update(ceph="images", ceph2="images-ec")
    return fake


@pytest.fixture
async def serve_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Serves a given fake as cloud 'c' for the test."""
    servers: list[FakeServer] = []

    async def start(fake: FakeGlance) -> None:
        server = FakeServer(fake)
        await server.__aenter__()
        servers.append(server)
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "c.yaml", {"c": server.url})))

    yield start
    for server in servers:
        await server.__aexit__(None, None, None)


async def move(old: str = "ceph", new: str = "ceph2", **kw: Any) -> RunResult:
    """One move of cloud 'c' whose polls and retries never wait."""
    config = MoveConfig(from_store=old, to_store=new, retry=FAST_RETRY, poll_initial=0, poll_max=0, **kw)
    return await move_images(config, await load_cloud("c"))


def seed(fake: FakeGlance, n: int, store: str = "ceph", **attrs: Any) -> list[str]:
    attrs.setdefault("disk_format", "raw")
    return [
        fake.add_image(os.urandom(20_000 + i), name=f"vm{i}", store=store, container_format="bare", **attrs)["id"]
        for i in range(n)
    ]


async def test_an_image_with_clones_stays_in_both_and_a_rerun_after_flatten_finishes(serve_fake: Any) -> None:
    """ceph → ceph2 with one image cloned (a Nova disk): that image is in-use, kept in both,
    its reason names the RBD snapshot read from its location and the way out; the others move;
    exit 1; the summary says ceph still holds it; after `rbd flatten` a re-run moves it."""
    fake = ceph_cloud()
    pinned, *others = seed(fake, 3)
    holder = fake.backend.clone(pinned, "ceph")
    await serve_fake(fake)
    run = await move(concurrency=1)
    results = {r.id: r for r in run.images}
    assert {results[i].outcome for i in others} == {"moved"}
    stuck = results[pinned]
    assert stuck.outcome == "in-use" and run.exit_code == 1
    assert f"its RBD snapshot {holder}" in stuck.reason and f"`rbd children {holder}`" in stuck.reason
    assert "rbd flatten" in stuck.reason and "keep ceph" in stuck.reason
    assert fake.get(pinned)["stores"] == "ceph,ceph2"
    assert run.notes[0] == "ceph still holds 1 of these images (1 in-use): see the report"
    assert "in-use" in run.summary()["outcomes"] and run.summary()["notes"][0] == run.notes[0]
    fake.backend.flatten("vms/instance-disk")
    again = await move()
    assert [(r.id, r.action, r.outcome) for r in again.images] == [(pinned, "drop-old", "moved")]
    assert fake.get(pinned)["stores"] == "ceph2" and again.exit_code == 0
    assert again.notes[0] == "ceph: Glance holds none of the images this run took in it any more"


async def test_without_locations_the_holder_is_named_from_the_pool(serve_fake: Any) -> None:
    """Where Glance shows no locations the snapshot is named from the store's pool
    (/v2/info/stores/detail) and the image id, marked as presumed."""
    fake = ceph_cloud(locations=False)
    (pinned,) = seed(fake, 1)
    fake.backend.clone(pinned, "ceph")
    await serve_fake(fake)
    (result,) = (await move()).images
    assert result.outcome == "in-use" and f"presumably images/{pinned}@snap" in result.reason


async def test_a_move_out_of_rbd_says_what_a_204_does_not_prove(serve_fake: Any) -> None:
    """With only clones of format 2 glance_store trashes the RBD image and answers 204: the image
    is moved as far as Glance knows (exit 0), and the summary never says the pool is empty — it
    says Glance's 204 proves only the location gone, where trashed images are found
    (`rbd trash ls POOL`) and freed (`rbd trash purge POOL`) once their clones are flattened."""
    fake = ceph_cloud()
    (pinned,) = seed(fake, 1)
    fake.backend.clone(pinned, "ceph", clone_format=2)
    await serve_fake(fake)
    run = await move()
    assert run.images[0].outcome == "moved" and run.exit_code == 0 and fake.backend.trash
    gone, trash = run.notes
    assert gone == "ceph: Glance holds none of the images this run took in it any more"
    assert "not that pool images let go of their data" in trash and "clones of format 2" in trash
    assert "`rbd trash ls images`" in trash and "`rbd trash purge images`" in trash


async def test_plan_says_what_moves_and_warns_about_the_destination(serve_fake: Any) -> None:
    """plan move: images with data only in OLD move (their bytes counted), images in both only
    lose OLD's copy; a qcow2 bound for rbd is flagged not-raw-on-rbd, an image above Swift's
    large_object_size bound for Swift by copy-image copy-image-into-swift; nothing is written."""
    fake = ceph_cloud()
    fake.swift_segment_size = 30_000
    (raw,) = seed(fake, 1, store="main")
    qcow2 = fake.add_image(b"QFI\xfb" + os.urandom(40_000), name="q", store="main", disk_format="qcow2")["id"]
    (both,) = seed(fake, 1, store="main")
    fake.images[both].data["ceph"] = fake.images[both].data["main"]
    await serve_fake(fake)
    plan = {r.id: r for r in (await move("main", "ceph", dry_run=True)).images}
    assert plan[raw].action == "move" and "data only in main" in plan[raw].reason and plan[raw].bytes == 20_000
    assert plan[qcow2].traps == ["not-raw-on-rbd"] and "Nova and Cinder clone only raw" in plan[qcow2].reason
    assert plan[both].action == "drop-old" and plan[both].bytes == 0 and "nothing moves" in plan[both].reason
    swift = {r.id: r for r in (await move("main", "swift", dry_run=True)).images}
    assert swift[qcow2].traps == ["copy-image-into-swift"] and "--method location" in swift[qcow2].reason
    assert swift[raw].traps == []
    by_location = {r.id: r for r in (await move("main", "swift", dry_run=True, method="location")).images}
    assert by_location[qcow2].traps == []
    assert all(r.method == "GET" for r in fake.requests)


async def test_the_move_itself_flags_a_qcow2_bound_for_rbd_as_its_plan_does(serve_fake: Any) -> None:
    """A qcow2 moved into rbd is moved (a warning never blocks) and its result carries the plan's
    not-raw-on-rbd with the way out; a raw image beside it carries nothing."""
    fake = ceph_cloud()
    (raw,) = seed(fake, 1, store="main")
    qcow2 = fake.add_image(
        b"QFI\xfb" + os.urandom(40_000), name="q", store="main", disk_format="qcow2", container_format="bare"
    )["id"]
    await serve_fake(fake)
    with anyio.fail_after(20):
        moved = {r.id: r for r in (await move("main", "ceph2")).images}
    assert moved[qcow2].outcome == "moved" and moved[qcow2].traps == ["not-raw-on-rbd"]
    assert "convert it to raw first" in moved[qcow2].warnings[0] and moved[raw].traps == moved[raw].warnings == []
    assert fake.get(qcow2)["stores"] == "ceph2"


async def test_a_409_with_no_import_on_the_image_fails_at_once_instead_of_waiting(serve_fake: Any) -> None:
    """copy-image answered 409 while the image shows no import lock (Glance refused it for a reason
    of its own: here no container_format) is that image's failure with Glance's words, at once —
    not a wait for an import that never started until --import-timeout runs out; OLD is kept."""
    fake = ceph_cloud()
    image = fake.add_image(os.urandom(30_000), name="nocf", store="main", disk_format="raw")["id"]
    await serve_fake(fake)
    with anyio.fail_after(20):
        (result,) = (await move("main", "ceph2", import_timeout=3600)).images
    assert result.outcome == "failed" and "container_format" in result.reason, result.reason
    assert fake.get(image)["stores"] == "main"
    assert [r.status for r in fake.requests_matching("POST", r"/import$")] == [409]


@pytest.mark.parametrize("old", ["main", "ceph"])
async def test_verify_download_reads_an_rbd_copy_whole_before_the_delete(serve_fake: Any, old: str) -> None:
    """Into rbd (from file, the seed's move, and from rbd) the check reads ceph2's copy through
    ?prefer= without Range — a ranged read is refused by RBD and served from OLD — so a good copy
    moves (active, the report says it was read whole) and a damaged one is caught before OLD's
    delete and dropped, OLD kept."""
    fake = ceph_cloud()
    good, bad = seed(fake, 2, store=old)
    await serve_fake(fake)
    run = await move(old, "ceph2", verify_download=True, image_ids=(good,))
    (result,) = run.images
    assert result.outcome == "moved" and run.exit_code == 0, result.reason
    assert fake.get(good)["status"] == "active" and fake.get(good)["stores"] == "ceph2"
    check = result.download_check or {}
    assert check["how"] == "prefer" and check["store"] == "ceph2" and "read whole" in check["proves"]
    reads = fake.requests_matching("GET", rf"/v2/images/{good}/file$")
    assert [r.query for r in reads][-2:] == ["prefer=ceph2", ""] and not any("Range" in r.headers for r in reads[1:])
    fake.faults.corrupt_copy("ceph2", times=None)
    (result,) = (await move(old, "ceph2", verify_download=True, image_ids=(bad,))).images
    assert result.outcome == "failed" and "ceph2's copy differs" in result.reason
    assert fake.get(bad)["stores"] == old and fake.get(bad)["status"] == "active"


async def test_a_probe_refused_for_its_range_is_not_taken_for_prefer(serve_fake: Any) -> None:
    """glance 27 ignores ?prefer=; between two rbd stores the probe's ranged read is refused with
    a 400 that names no store — not glance 33's "Store … is not configured" — so the check is not
    fooled into reading through ?prefer=: it waits for the delete, reads ceph2 whole and says why."""
    fake = ceph_cloud()
    fake.profile = GLANCE_27
    (image_id,) = seed(fake, 1)
    await serve_fake(fake)
    (result,) = (await move(verify_download=True)).images
    check = result.download_check or {}
    assert result.outcome == "moved" and check["how"] == "only-location", result.reason
    assert "ignores ?prefer=" in check["proves"] and "read whole" in check["proves"]
    assert fake.get(image_id)["stores"] == "ceph2" and fake.get(image_id)["status"] == "active"
