"""The source is opened before anything is created at the destination, and every
report entry says what its copy was verified against."""

from __future__ import annotations

import os

import pytest

from asyncmigrate import copy_images
from tests.conftest import Clouds, fast_config


def _image(clouds: Clouds, data: bytes | None = None, **attrs: object) -> str:
    data = os.urandom(150_000) if data is None else data
    return str(clouds.src.add_image(data, disk_format="raw", container_format="bare", **attrs)["id"])


def _nothing_at_destination(clouds: Clouds, image_id: str) -> None:
    assert image_id not in clouds.dst.images
    assert not [r for r in clouds.dst.requests if r.method != "GET"], "the destination was written to"


async def test_source_refusing_the_download_creates_nothing(clouds: Clouds) -> None:
    """A 403 on the source's data (a deactivated image for a non-admin) leaves no queued image behind."""
    image_id = _image(clouds, name="forbidden", visibility="public")
    clouds.src.faults.fail_next("GET", r"/file$", 403, retry_after=None, times=None, body="deactivated")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "403" in result.reason
    _nothing_at_destination(clouds, image_id)


async def test_active_source_without_data_creates_nothing(clouds: Clouds) -> None:
    """An active source image whose download answers 204 (no data) is reported; nothing is created."""
    image_id = _image(clouds, name="hollow")
    clouds.src.images[image_id].data = {}
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "recorded size is 150000" in result.reason
    _nothing_at_destination(clouds, image_id)


async def test_source_announcing_another_length_creates_nothing(clouds: Clouds) -> None:
    """A download whose Content-Length is not the recorded size fails before the first byte is used."""
    image_id = _image(clouds, name="liar")
    clouds.src.images[image_id].size = 999
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "announces 150000 bytes, its recorded size is 999" in result.reason
    _nothing_at_destination(clouds, image_id)


@pytest.mark.parametrize("verify", ["full", "server"])
async def test_report_says_what_each_copy_was_verified_against(clouds: Clouds, verify: str) -> None:
    """sha512 (multihash), md5 (md5-only legacy) or size-only (nothing recorded); the summary counts size-only."""
    modern = _image(clouds, name="modern")
    md5_only = _image(clouds, name="md5-only")
    bare = _image(clouds, name="no-hash")
    queued = clouds.src.add_image(None, name="queued", disk_format="raw", container_format="bare")["id"]
    for image_id in (md5_only, bare):
        clouds.src.images[image_id].os_hash_algo = None
        clouds.src.images[image_id].os_hash_value = None
    clouds.src.images[bare].checksum = None
    run = await copy_images(fast_config(verify=verify), clouds.src_cloud, clouds.dst_cloud)
    assert run.failed == 0
    checked = {r.id: (r.verification, r.traps) for r in run.images}
    assert checked == {
        modern: ("sha512", []),
        md5_only: ("md5", []),
        bare: ("size-only", ["no-hash"]),
        queued: (None, []),
    }
    summary = run.summary()
    assert summary["verification"] == {"sha512": 1, "md5": 1, "size-only": 1} and summary["size_only"] == 1
    for image_id in (modern, md5_only, bare):
        assert clouds.dst.data(image_id) == clouds.src.data(image_id)


async def test_image_without_a_recorded_size_is_streamed_unsized_and_checked_by_length(clouds: Clouds) -> None:
    """size: null with data and no hash (old glance): read despite Glance's "Content-Length: None", sent
    chunked with no declared size, reported as unverified (nothing recorded to check); a re-run is clean."""
    image_id = _image(clouds, name="sizeless")
    rec = clouds.src.images[image_id]
    rec.size, rec.checksum, rec.os_hash_algo, rec.os_hash_value = None, None, None, None
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert (result.outcome, result.verification, result.traps) == ("copied", "unverified", ["unverified"])
    assert run.summary()["unverified"] == 1
    assert clouds.dst.data(image_id) == clouds.src.data(image_id)
    (put,) = [r for r in clouds.dst.requests if r.method == "PUT"]
    assert "x-openstack-image-size" not in put.headers and put.headers.get("Transfer-Encoding") == "chunked"
    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"]
