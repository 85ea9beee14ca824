"""``move --verify-download`` proves NEW's bytes before OLD's copy is deleted where Glance serves
a chosen store (``?prefer=``, glance 33), says in the report what it read, and never leaves
wrong bytes in service (against the fake Glance)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import load_cloud
from asyncmigrate.config import MoveConfig
from asyncmigrate.report import ImageResult
from asyncmigrate.storemove import move_images
from tests.conftest import FAST_RETRY, write_clouds_yaml
from tests.fakeglance import GLANCE_27, FakeGlance, FakeServer

STORES = {"fast": "", "cold": ""}


@pytest.fixture
async def serve_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Serves a given fake as cloud 'c' (call it with the fake)."""
    servers: list[FakeServer] = []

    async def start(fake: FakeGlance) -> None:
        server = FakeServer(fake)
        await server.__aenter__()
        servers.append(server)
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "c.yaml", {"c": server.url})))

    yield start
    for server in servers:
        await server.__aexit__(None, None, None)


async def move(**kw: Any) -> ImageResult:
    """Move the one image fast → cold with --verify-download; its result."""
    kw.setdefault("from_store", "fast")
    kw.setdefault("to_store", "cold")
    config = MoveConfig(verify_download=True, retry=FAST_RETRY, poll_initial=0, poll_max=0, **kw)
    (result,) = (await move_images(config, await load_cloud("c"))).images
    return result


def seeded(fake: FakeGlance, size: int = 50_000) -> tuple[str, bytes]:
    data = os.urandom(size)
    return fake.add_image(data, name="disk", store="fast", disk_format="raw", container_format="bare")["id"], data


async def test_a_bad_copy_is_caught_before_the_old_copy_is_deleted(serve_fake: Any) -> None:
    """NEW stores damaged bytes every time: the read through ?prefer= sees it before the delete,
    NEW's copy is dropped and the image keeps its good copy in OLD."""
    fake = FakeGlance(stores=STORES)
    image_id, data = seeded(fake)
    fake.faults.corrupt_copy("cold", times=None)
    await serve_fake(fake)
    result = await move()
    assert fake.get(image_id)["stores"] == "fast" and fake.backend.readable(fake.images[image_id]) == data
    assert result.outcome == "failed" and "cold's copy differs" in result.reason and "fast kept" in result.reason


async def test_a_copy_damaged_once_is_copied_again_and_the_report_says_what_was_read(serve_fake: Any) -> None:
    """Damaged once: dropped, copied again, read back good; the report's download_check names
    the store, the way it was read (prefer), the algorithm and the bytes."""
    fake = FakeGlance(stores=STORES)
    image_id, data = seeded(fake)
    fake.faults.corrupt_copy("cold", times=1)
    await serve_fake(fake)
    result = await move()
    assert result.outcome == "moved" and fake.backend.readable(fake.images[image_id]) == data
    check = result.to_json()["download_check"]
    assert check["store"] == "cold" and check["how"] == "prefer" and check["bytes"] == len(data)
    assert check["algorithm"] == "sha512" == result.verification and "before fast was deleted" in check["proves"]
    reads = fake.requests_matching("GET", rf"/v2/images/{image_id}/file$")
    assert all(r.query == "prefer=cold" and r.headers.get("Range") == "bytes=0-" for r in reads[1:4])


async def test_the_image_cache_does_not_hide_a_bad_copy(serve_fake: Any) -> None:
    """The image cache serves a cached image to a plain GET whatever ?prefer= says; the check's
    reads are ranged, which the cache never serves, so a bad copy in NEW is still seen."""
    fake = FakeGlance(stores=STORES)
    image_id, data = seeded(fake)
    fake.backend.cached[image_id] = data
    fake.faults.corrupt_copy("cold", times=None)
    await serve_fake(fake)
    result = await move()
    assert result.outcome == "failed" and fake.get(image_id)["stores"] == "fast"


async def test_where_prefer_is_ignored_the_check_waits_for_the_delete_and_deactivates_a_bad_copy(
    serve_fake: Any,
) -> None:
    """glance 27 ignores ?prefer=: the check reads NEW once it is the only location; a bad copy
    is then deactivated at once, and the reason says so; a good one is reported as read after
    the delete, and why."""
    fake = FakeGlance(profile=GLANCE_27, stores=STORES)
    bad, _ = seeded(fake)
    fake.faults.corrupt_copy("cold", times=None)
    await serve_fake(fake)
    result = await move(image_ids=(bad,))
    assert result.outcome == "failed" and "DEACTIVATED" in result.reason
    assert fake.get(bad)["status"] == "deactivated"
    fake.faults.clear()
    good, _ = seeded(fake)
    result = await move(image_ids=(good,))
    check = result.download_check
    assert result.outcome == "moved" and check is not None and check["how"] == "only-location"
    assert "ignores ?prefer=" in check["proves"] and "after fast was deleted" in check["proves"]


async def test_a_new_copy_that_cannot_be_opened_is_caught_after_the_delete(serve_fake: Any) -> None:
    """What ?prefer= cannot see: NEW's object missing makes Glance serve OLD's bytes to the
    check; once OLD is deleted the one-byte read of NEW finds nothing, and the image is
    deactivated and reported."""
    fake = FakeGlance(stores=STORES)
    image_id, _ = seeded(fake)
    fake.faults.corrupt_copy("cold", times=None, lose=True)
    await serve_fake(fake)
    result = await move()
    assert result.outcome == "failed" and "serves no data" in result.reason and "DEACTIVATED" in result.reason
    assert fake.get(image_id)["status"] == "deactivated"


async def test_a_policy_refusing_prefer_is_named(serve_fake: Any) -> None:
    """Where the download_from_store policy refuses ?prefer=, the check reads after the delete and says why."""
    fake = FakeGlance(stores=STORES)
    fake.download_from_store = False
    seeded(fake)
    await serve_fake(fake)
    result = await move()
    assert result.download_check is not None and "download_from_store policy" in result.download_check["proves"]


async def test_the_carrier_is_read_and_a_zero_byte_image_needs_no_read(serve_fake: Any) -> None:
    """--method location reads the carrier (NEW its only location) before the swap — whole, as
    an s3 store serves no ranges; a 0-byte image (moved with copy-image) has nothing to read, and
    the report says so."""
    fake = FakeGlance(stores=STORES, store_types={"cold": "s3"}, show_multiple_locations=True)
    image_id, _ = seeded(fake)
    empty = fake.add_image(b"", name="empty", store="fast", disk_format="raw", container_format="bare")
    await serve_fake(fake)
    result = await move(method="location", image_ids=(image_id,))
    assert result.download_check is not None and result.download_check["how"] == "carrier"
    reads = fake.requests_matching("GET", rf"/v2/images/{result.carrier}/file$")
    assert reads and not any("Range" in r.headers for r in reads) and "read whole" in result.download_check["proves"]
    result = await move(method="location", image_ids=(empty["id"],))
    assert result.outcome == "moved" and result.download_check is not None
    assert result.download_check["how"] == "empty" and result.download_check["bytes"] == 0


async def test_keep_source_without_prefer_says_it_read_nothing(serve_fake: Any) -> None:
    """--keep-source where ?prefer= is ignored: nothing can tell NEW's copy from OLD's, and the reason says so."""
    fake = FakeGlance(profile=GLANCE_27, stores=STORES)
    seeded(fake)
    await serve_fake(fake)
    result = await move(keep_source=True)
    assert result.outcome == "copied" and result.download_check is None
    assert "--verify-download read nothing" in result.reason
