"""An image left between stage and import at the destination (a crash after ``PUT …/stage``)
is finished by copy and by sync, whatever upload method the re-run uses; the fake shows such
an image as glance 33 does: ``uploading`` with its size, no stage host."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from asyncmigrate import copy_images
from asyncmigrate.sync import sync_images
from tests.conftest import Clouds, fast_config
from tests.test_sync import sync_config


async def _stage_by_hand(clouds: Clouds, data: bytes, **attrs: Any) -> str:
    """Create the source image's copy at the destination and stage its bytes, as a glance-direct
    run does before its import; return the id."""
    image = clouds.src.add_image(data, disk_format="raw", container_format="bare", **attrs)
    body = {k: image[k] for k in ("id", "name", "disk_format", "container_format", "visibility")}
    async with aiohttp.ClientSession(clouds.dst_server.url) as http:
        async with http.post("/v2/images", json=body) as resp:
            assert resp.status == 201
        async with http.put(f"/v2/images/{image['id']}/stage", data=data) as resp:
            assert resp.status == 204
    return str(image["id"])


async def test_copy_with_put_imports_what_a_glance_direct_run_left_staged(clouds: Clouds) -> None:
    """Staged, never imported, and nothing but status and size to tell it (glance 33 hides the
    stage host): a plain-PUT re-run imports the staged data, proves it, and calls it copied."""
    data = os.urandom(40_000)
    image_id = await _stage_by_hand(clouds, data, name="half")
    seen = clouds.dst.get(image_id)
    assert (seen["status"], seen["size"]) == ("uploading", len(data)) and "os_glance_stage_host" not in seen
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts, r.reason, r.verification) for r in run.images] == [
        ("copied", 1, "staged data imported", "sha512")
    ]
    assert clouds.dst.get(image_id)["status"] == "active" and clouds.dst.data(image_id) == data
    assert not clouds.dst.requests_matching("PUT", r"/file$")
    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"]


async def test_sync_finishes_a_staged_image_and_levels_what_drifted(clouds: Clouds, tmp_path: Path) -> None:
    """sync took an 'uploading' image for busy on every run; now it imports the staged data, then
    levels the attribute the source changed meanwhile."""
    data = os.urandom(30_000)
    image_id = await _stage_by_hand(clouds, data, name="before")
    clouds.src.images[image_id].name = "after"
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert (result.outcome, result.changes) == ("copied", {"name": ["before", "after"]}), result.reason
    dst = clouds.dst.get(image_id)
    assert (dst["status"], dst["name"]) == ("active", "after") and clouds.dst.data(image_id) == data
    again = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"]


async def test_an_import_running_is_waited_for(clouds: Clouds) -> None:
    """An image whose import runs (the lock set, 'importing') is waited for, then proved: copied."""
    clouds.dst.import_delay = 0.3
    data = os.urandom(20_000)
    image_id = await _stage_by_hand(clouds, data, name="importing")
    async with aiohttp.ClientSession(clouds.dst_server.url) as http:
        body = {"method": {"name": "glance-direct"}}
        async with http.post(f"/v2/images/{image_id}/import", json=body) as resp:
            assert resp.status == 202
    assert clouds.dst.get(image_id)["status"] == "importing"
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.reason) for r in run.images] == [("copied", "waited for the import that held it")]
    assert len(clouds.dst.requests_matching("POST", r"/import$")) == 1 and clouds.dst.data(image_id) == data


async def test_a_409_on_the_import_is_an_import_running_and_is_waited_for(clouds: Clouds) -> None:
    """Another import starts between our read and our import request: its 409 ("Image has active
    task") is waited out, not a failure, and the image is copied in one attempt."""
    clouds.dst.import_delay = 0.2
    data = os.urandom(20_000)
    image_id = await _stage_by_hand(clouds, data, name="raced")
    clouds.dst.faults.delay_next("POST", rf"/v2/images/{image_id}/import$", 0.3)

    async def other_importer() -> None:
        while not clouds.dst.requests_matching("POST", r"/import$"):
            await anyio.sleep(0.01)
        body = {"method": {"name": "glance-direct"}}
        async with (
            aiohttp.ClientSession(clouds.dst_server.url) as http,  # overtakes our delayed request
            http.post(f"/v2/images/{image_id}/import", json=body) as resp,
        ):
            assert resp.status == 202

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_importer)
        run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in run.images] == [("copied", 1)], run.images[0].reason
    # Logged as they arrive: ours first (then held back), answered 409 after the other's 202.
    assert [r.status for r in clouds.dst.requests_matching("POST", r"/import$")] == [409, 202]
    assert clouds.dst.data(image_id) == data


async def test_staged_bytes_of_another_size_are_never_imported(clouds: Clouds) -> None:
    """Staged data whose size is not the source's would become the image's data: not imported,
    the image fails with what is there."""
    data = os.urandom(20_000)
    image_id = await _stage_by_hand(clouds, data, name="odd")
    clouds.src.images[image_id].data[clouds.src.default_store or ""] = data + b"x"
    clouds.src.images[image_id].store_bytes(data + b"x", [clouds.src.default_store or ""])
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "20000 staged bytes" in result.reason and "20001" in result.reason
    assert not clouds.dst.requests_matching("POST", r"/import$")
    assert clouds.dst.get(image_id)["status"] == "uploading"
