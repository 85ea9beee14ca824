"""The same-cloud store move against the fake Glance: copy-image, poll, drop
the old store; resumable, idempotent, and clear about what it cannot do."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncmigrate import Cloud, load_cloud
from asyncmigrate.config import MoveConfig
from asyncmigrate.errors import UsageError
from asyncmigrate.storemove import move_images
from tests.conftest import FAST_RETRY, write_clouds_yaml
from tests.fakeglance import FakeGlance, FakeServer


@dataclasses.dataclass
class One:
    """One multi-store fake cloud (stores fast, slow, cold)."""

    fake: FakeGlance
    server: FakeServer
    cloud: Cloud


@pytest.fixture
async def one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[One]:
    """A fake cloud named 'c' with three stores."""
    fake = FakeGlance(stores={"fast": "", "slow": "", "cold": ""}, default_store="fast")
    async with FakeServer(fake) as server:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "c.yaml", {"c": server.url})))
        yield One(fake, server, await load_cloud("c"))


def cfg(**kw: Any) -> MoveConfig:
    """A move fast → cold whose polls and retries never wait."""
    kw.setdefault("from_store", "fast")
    kw.setdefault("to_store", "cold")
    return MoveConfig(retry=FAST_RETRY, poll_initial=0, poll_max=0, **kw)


def _add(one: One, n: int = 3, **attrs: Any) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = os.urandom(10_000 + i)
        image = one.fake.add_image(data, name=f"i{i}", disk_format="raw", container_format="bare", **attrs)
        out[image["id"]] = data
    return out


async def test_moves_every_image_and_keeps_ids_and_bytes(one: One) -> None:
    """Each image in OLD ends in NEW only, same id, same bytes; others are untouched; re-run is a no-op."""
    images = _add(one, 4)
    elsewhere = one.fake.add_image(b"z" * 100, disk_format="raw", container_format="bare", store="slow")
    run = await move_images(cfg(), one.cloud)
    assert {r.id: r.outcome for r in run.images} == dict.fromkeys(images, "moved")
    for image_id, data in images.items():
        assert one.fake.get(image_id)["stores"] == "cold"
        assert one.fake.data(image_id, "cold") == data
    assert one.fake.get(elsewhere["id"])["stores"] == "slow"
    posts = len(one.fake.requests_matching("POST", "/import$"))
    again = await move_images(cfg(), one.cloud)
    assert again.images == []  # nothing left in OLD
    named = await move_images(cfg(image_ids=tuple(images)), one.cloud)
    assert {r.outcome for r in named.images} == {"skipped"}
    assert len(one.fake.requests_matching("POST", "/import$")) == posts


async def test_keep_source_copies_only(one: One) -> None:
    """--keep-source leaves the data in OLD too."""
    images = _add(one, 2)
    run = await move_images(cfg(keep_source=True), one.cloud)
    assert {r.outcome for r in run.images} == {"copied"}
    assert all(set(one.fake.get(i)["stores"].split(",")) == {"fast", "cold"} for i in images)
    assert not one.fake.requests_matching("DELETE", ".*")


async def test_in_both_stores_only_the_delete_remains(one: One) -> None:
    """An image already copied (an interrupted earlier run) only loses its OLD copy."""
    (image_id,) = _add(one, 1, stores=["fast", "cold"])
    run = await move_images(cfg(), one.cloud)
    assert [(r.action, r.outcome) for r in run.images] == [("drop-old", "moved")]
    assert not one.fake.requests_matching("POST", "/import$")
    assert one.fake.get(image_id)["stores"] == "cold"


async def test_running_import_is_waited_for_not_started_twice(one: One) -> None:
    """An import already running into NEW is awaited; no second import is posted."""
    (image_id,) = _add(one, 1)
    one.fake.import_delay = 0.3
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{one.server.url}/v2/images/{image_id}/import",
            json={"method": {"name": "copy-image"}, "stores": ["cold"]},
        )
        assert resp.status == 202
    run = await move_images(cfg(), one.cloud)
    assert [(r.action, r.outcome) for r in run.images] == [("wait", "moved")]
    assert len(one.fake.requests_matching("POST", "/import$")) == 1


async def test_failed_import_is_retried(one: One) -> None:
    """A copy-image task that fails (whatever the cause) is started again and the move completes."""
    (image_id,) = _add(one, 1)
    one.fake.faults.fail_import("cold", message="database is locked", times=1)
    run = await move_images(cfg(), one.cloud)
    (result,) = run.images
    assert result.outcome == "moved" and result.attempts == 2
    assert len(one.fake.requests_matching("POST", "/import$")) == 2
    assert one.fake.get(image_id)["stores"] == "cold"


async def test_import_that_always_fails_is_reported_and_old_kept(one: One) -> None:
    """A store that never accepts the copy: the image is failed with glance's message, OLD kept."""
    (image_id,) = _add(one, 1)
    one.fake.faults.fail_import("cold", message="no space left", times=None)
    run = await move_images(cfg(), one.cloud)
    assert run.images[0].outcome == "failed" and "no space left" in run.images[0].reason
    assert one.fake.get(image_id)["stores"] == "fast"


async def test_old_store_refusing_delete_is_reported_and_run_goes_on(one: One) -> None:
    """A 409 on the store delete that is not glance_store's "in use": that image fails with
    Glance's answer and keeps both copies, the others move."""
    images = _add(one, 3)
    one.fake.faults.fail_next("DELETE", r"^/v2/stores/fast/", status=409, retry_after=None)
    run = await move_images(cfg(concurrency=1), one.cloud)
    outcomes = sorted(r.outcome for r in run.images)
    assert outcomes == ["failed", "moved", "moved"]
    failed = next(r for r in run.images if r.outcome == "failed")
    assert "fast refused the delete" in failed.reason and "409 injected" in failed.reason
    assert set(one.fake.get(failed.id)["stores"].split(",")) == {"fast", "cold"}
    assert len(images) == 3


async def test_deactivated_images_are_left_alone_unless_asked(one: One) -> None:
    """Deactivated images are skipped with advice; --include-deactivated moves and re-deactivates them."""
    (image_id,) = _add(one, 1, status="deactivated")
    run = await move_images(cfg(), one.cloud)
    assert run.images[0].outcome == "skipped" and "--include-deactivated" in run.images[0].reason
    run = await move_images(cfg(include_deactivated=True), one.cloud)
    assert run.images[0].outcome == "moved"
    image = one.fake.get(image_id)
    assert image["stores"] == "cold" and image["status"] == "deactivated"


async def test_dry_run_changes_nothing(one: One) -> None:
    """--dry-run lists the moves and their bytes; no write reaches the cloud."""
    _add(one, 2)
    run = await move_images(cfg(dry_run=True), one.cloud)
    assert {r.action for r in run.images} == {"move"} and run.bytes == 20_001
    assert all(r.method == "GET" for r in one.fake.requests)


async def test_unknown_store_and_single_store_cloud_are_usage_errors(one: One, tmp_path: Path) -> None:
    """An unknown store, or a cloud without multi-store, is a clear usage error before anything moves."""
    _add(one, 1)
    with pytest.raises(UsageError, match="unknown store 'nope'"):
        await move_images(cfg(to_store="nope"), one.cloud)
    single = FakeGlance(stores=None)
    async with FakeServer(single) as server:
        write_clouds_yaml(tmp_path / "s.yaml", {"s": server.url})
        os.environ["OS_CLIENT_CONFIG_FILE"] = str(tmp_path / "s.yaml")
        with pytest.raises(UsageError, match="not multi-store"):
            await move_images(cfg(), await load_cloud("s"))
    assert not one.fake.requests_matching("POST", ".*")


async def test_location_method_refuses_a_file_store(one: One) -> None:
    """--method location into a file store is refused up front (Glance rejects file:// locations)."""
    _add(one, 1)
    with pytest.raises(UsageError, match="file store"):
        await move_images(cfg(method="location"), one.cloud)
    assert not one.fake.requests_matching("POST", ".*")


def test_move_config_refuses_nonsense() -> None:
    """Same store twice, or --keep-source with the location method, is refused."""
    with pytest.raises(UsageError):
        MoveConfig(from_store="a", to_store="a")
    with pytest.raises(UsageError):
        MoveConfig(from_store="a", to_store="b", method="location", keep_source=True)


async def test_waits_for_the_import_task_to_release_its_lock(one: One) -> None:
    """NEW shows in `stores` before glance's task makes its final save; deleting OLD
    before the lock is released would be undone (seen on glance 33), so the move waits."""
    images = _add(one, 3)
    one.fake.import_finish_delay = 0.2
    run = await move_images(cfg(), one.cloud)
    await one.fake.drain()
    assert {r.outcome for r in run.images} == {"moved"}
    assert {one.fake.get(i)["stores"] for i in images} == {"cold"}


async def test_copy_image_into_swift_above_the_segment_size_says_why_and_the_way_out(one: One) -> None:
    """glance_store 5.7.0 fails copy-image into Swift for segmented images: reported once, not retried, OLD kept."""
    one.fake.store_types["cold"] = "swift"
    one.fake.swift_segment_size = 15_000
    small = one.fake.add_image(os.urandom(10_000), name="small", disk_format="raw", container_format="bare")
    big = one.fake.add_image(os.urandom(20_000), name="big", disk_format="raw", container_format="bare")
    run = await move_images(cfg(), one.cloud)
    results = {r.id: r for r in run.images}
    assert results[small["id"]].outcome == "moved"
    failed = results[big["id"]]
    assert failed.outcome == "failed" and failed.attempts == 1
    assert "Task failed due to Internal Error" in failed.reason and "--method location" in failed.reason
    assert "LP #2136857" in failed.reason
    assert one.fake.get(big["id"])["stores"] == "fast"
    assert len(one.fake.requests_matching("POST", rf"/v2/images/{big['id']}/import$")) == 1


def _zero_byte_cloud(*methods: str) -> FakeGlance:
    """A cloud showing locations whose 'cold' store is S3, holding one 0-byte image in 'fast'."""
    fake = FakeGlance(
        stores={"fast": "", "cold": ""},
        store_types={"cold": "s3"},
        show_multiple_locations=True,
        import_methods=methods,
    )
    fake.add_image(b"", name="empty", store="fast", disk_format="raw", container_format="bare")
    return fake


async def _move_by_location(fake: FakeGlance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    async with FakeServer(fake) as server:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "z.yaml", {"z": server.url})))
        return await move_images(cfg(method="location"), await load_cloud("z"))


async def test_zero_byte_image_by_location_moves_with_copy_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--method location on a 0-byte image (Glance refuses a zero-size location) moves it with
    copy-image when the cloud enables it: no carrier, the old store emptied."""
    fake = _zero_byte_cloud("glance-direct", "copy-image")
    run = await _move_by_location(fake, tmp_path, monkeypatch)
    (result,) = run.images
    assert result.outcome == "moved" and "copy-image" in result.reason, result.reason
    (image,) = fake.images.values()
    assert fake.get(image.id)["stores"] == "cold" and fake.data(image.id, "cold") == b""
    assert not fake.requests_matching("PATCH", ".*") and not fake.requests_matching("POST", r"^/v2/images$")


async def test_zero_byte_image_by_location_without_copy_image_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where copy-image is not enabled, the 0-byte image fails with the precise reason (Glance
    refuses zero-size locations) and nothing is created or changed."""
    fake = _zero_byte_cloud("glance-direct", "web-download")
    run = await _move_by_location(fake, tmp_path, monkeypatch)
    (result,) = run.images
    assert result.outcome == "failed" and result.attempts == 1
    assert "0-byte" in result.reason and "copy-image" in result.reason and "Invalid location" in result.reason
    (image,) = fake.images.values()
    assert fake.get(image.id)["stores"] == "fast"
    assert all(r.method == "GET" for r in fake.requests)
