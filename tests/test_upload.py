"""Production destinations: uploads into Swift stores declare no size, converting
destinations get stage + glance-direct import, conversions are recognised as done."""

from __future__ import annotations

import os
import struct

import pytest

from asyncmigrate import copy_images
from asyncmigrate.errors import UsageError
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config
from tests.fakeglance import QCOW2_MAGIC

MiB = 1 << 20


def qcow2(virtual_size: int, payload: int = 50_000) -> bytes:
    """Bytes the fakes take for a qcow2 image: magic, header with the virtual size, payload."""
    header = QCOW2_MAGIC + b"\0" * 20 + struct.pack(">Q", virtual_size)
    return header + os.urandom(payload)


def _puts(clouds: Clouds, image_id: str, what: str = "file") -> list[dict[str, str]]:
    return [r.headers for r in clouds.dst.requests if r.method == "PUT" and r.path.endswith(f"{image_id}/{what}")]


async def test_swift_store_gets_uploads_without_a_declared_size(clouds: Clouds) -> None:
    """Into a Swift store (glance_store 5.7.0 hangs on known sizes it segments) the PUT declares no size from
    the store's large_object_size on; below it, and into other stores, it does."""
    clouds.dst.store_types["archive"] = "swift"
    clouds.dst.swift_segment_size = 100_000
    big = clouds.src.add_image(os.urandom(300_000), name="big", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(dst_store="archive"), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in run.images] == ["copied"] and run.images[0].verification == "sha512"
    (headers,) = _puts(clouds, big["id"])
    assert "x-openstack-image-size" not in headers and headers.get("Transfer-Encoding") == "chunked"
    assert clouds.dst.data(big["id"], "archive") == clouds.src.data(big["id"])
    assert run.clouds["destination"]["upload_method"] == "put-unsized"

    small = clouds.src.add_image(os.urandom(90_000), name="small", disk_format="raw", container_format="bare")
    config = fast_config(dst_store="archive", image_ids=(small["id"],))
    assert (await copy_images(config, clouds.src_cloud, clouds.dst_cloud)).images[0].outcome == "copied"
    (headers,) = _puts(clouds, small["id"])  # below large_object_size: one object, sized as usual
    assert headers["x-openstack-image-size"] == "90000"

    other = clouds.src.add_image(os.urandom(300_000), name="file", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(image_ids=(other["id"],)), clouds.src_cloud, clouds.dst_cloud)
    (headers,) = _puts(clouds, other["id"])
    assert headers["x-openstack-image-size"] == "300000" and headers["Content-Length"] == "300000"


async def test_a_sized_upload_into_swift_fails_and_put_unsized_is_the_way_out(clouds: Clouds) -> None:
    """Where the store's type cannot be read (non-admin: /detail refused), a sized PUT into Swift fails as on
    glance_store 5.7.0; --upload-method put-unsized copies it."""
    clouds.dst.store_types["archive"] = "swift"
    clouds.dst.swift_segment_size = 100_000
    clouds.dst.faults.fail_next("GET", r"/v2/info/stores/detail$", 403, retry_after=None, times=None)
    image = clouds.src.add_image(os.urandom(300_000), name="big", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(dst_store="archive"), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "failed" and "Failed to add object to Swift" in run.images[0].reason
    assert clouds.dst.get(image["id"])["status"] == "queued"
    unsized = fast_config(dst_store="archive", upload_method="put-unsized")
    again = await copy_images(unsized, clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome) for r in again.images] == [("upload", "copied")]
    assert clouds.dst.data(image["id"], "archive") == clouds.src.data(image["id"])


async def test_glance_direct_converts_and_the_rerun_recognises_it(clouds: Clouds) -> None:
    """Stage + import into a converting destination: qcow2 arrives raw, reported; re-run and verify agree."""
    clouds.dst.convert_to = "raw"
    data = qcow2(virtual_size=4 * MiB)
    image = clouds.src.add_image(data, name="cirros", disk_format="qcow2", container_format="bare", os_distro="x")
    plain = clouds.src.add_image(os.urandom(20_000), name="raw one", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    results = {r.id: r for r in run.images}
    converted = results[image["id"]]
    assert converted.outcome == "copied" and converted.verification == "sha512"
    assert converted.converted == {"from": "qcow2", "to": "raw", "size": 4 * MiB}
    assert results[plain["id"]].converted is None and results[plain["id"]].outcome == "copied"
    dst = clouds.dst.get(image["id"])
    assert dst["disk_format"] == "raw" and dst["size"] == 4 * MiB and dst["os_distro"] == "x"
    assert not [k for k in dst if k.startswith("asyncmigrate")]  # nothing of ours added to the image
    assert _puts(clouds, image["id"], "stage") and not _puts(clouds, image["id"], "file")
    imports = clouds.dst.requests_matching("POST", rf"/v2/images/{image['id']}/import$")
    assert len(imports) == 1

    again = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in again.images} == {"skipped"}
    assert {r.id: r.converted for r in again.images}[image["id"]] == converted.converted
    checked = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in checked.images} == {"match"}
    clouds.dst.images[image["id"]].min_ram = 4096  # any other difference is still caught
    checked = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert {r.id: r.outcome for r in checked.images}[image["id"]] == "differs"


async def test_stage_keeps_the_hold_back(clouds: Clouds) -> None:
    """A flipped byte in flight aborts the stage before its last byte; the retry stages clean data and imports."""
    data = os.urandom(400_000)
    image = clouds.src.add_image(data, name="flip", disk_format="raw", container_format="bare")
    clouds.src.faults.flip_byte(image["id"], 123_456, times=1)
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in run.images] == [("copied", 2)]
    assert clouds.dst.data(image["id"]) == data
    stages = [r for r in clouds.dst.requests if r.path.endswith("/stage")]
    assert len(stages) == 2 and stages[0].fault == "client_disconnected"


async def test_conversion_failure_is_reported_with_the_tasks_message(clouds: Clouds) -> None:
    """A failing conversion (the plugin's revert drops the staged file) is staged and imported once more;
    the same failure twice is final, with Glance's reason; the image stays queued."""
    clouds.dst.convert_to = "raw"
    image = clouds.src.add_image(os.urandom(10_000), name="x", disk_format="raw", container_format="bare")
    clouds.src.images[image["id"]].disk_format = "qcow2"  # raw bytes claiming qcow2: the plugin refuses them
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and result.attempts == 2, result.reason
    assert "glance-direct import failed: Image format mismatch (twice)" in result.reason
    dst = clouds.dst.get(image["id"])
    assert dst["status"] == "queued" and dst["os_glance_failed_import"] == "main"


async def test_store_failure_leaving_staged_data_says_what_to_do(clouds: Clouds) -> None:
    """A store that fails the import leaves the staged data (Glance cleans it only for deleted images): the
    re-stage is refused (409) and the image fails with what an operator must remove, not a retry loop."""
    image = clouds.src.add_image(os.urandom(10_000), name="x", disk_format="raw", container_format="bare")
    clouds.dst.faults.fail_import("main", message="Error in store configuration", times=1)
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and result.attempts == 2
    assert "staging area" in result.reason and "os_glance_staging_store" in result.reason
    stages = [r.status for r in clouds.dst.requests if r.path.endswith("/stage")]
    assert stages == [204, 409] and clouds.dst.get(image["id"])["status"] == "queued"


async def test_glance_direct_not_offered_is_a_usage_error(clouds: Clouds) -> None:
    """A destination without glance-direct in /v2/info/import is refused before anything is created."""
    clouds.dst.import_methods = ("web-download", "copy-image")
    clouds.src.add_image(os.urandom(100), name="x", disk_format="raw", container_format="bare")
    with pytest.raises(UsageError, match=r"does not offer it .*lists: copy-image, web-download"):
        await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert not [r for r in clouds.dst.requests if r.method != "GET"]


async def test_staged_image_whose_import_never_started_is_imported(clouds: Clouds) -> None:
    """An earlier attempt staged the data but its import task died before marking the image importing:
    the re-run imports what is staged instead of waiting on an 'uploading' image forever."""
    data = os.urandom(30_000)
    image = clouds.src.add_image(data, name="half", disk_format="raw", container_format="bare")
    clouds.dst.add_image(None, id=image["id"], name="half", disk_format="raw", container_format="bare")
    rec = clouds.dst.images[image["id"]]
    rec.status, rec.staged, rec.size = "uploading", data, len(data)
    rec.properties["os_glance_stage_host"] = "http://127.0.0.1:1"
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts, r.reason) for r in run.images] == [("copied", 1, "staged data imported")]
    assert clouds.dst.data(image["id"]) == data
    assert not [r for r in clouds.dst.requests if r.path.endswith("/stage")]


async def test_an_image_still_being_staged_is_not_imported(clouds: Clouds) -> None:
    """'uploading' with no size recorded yet is a stage still in flight (another run): never imported
    half-written; the image is reported busy once its retries are spent."""
    image = clouds.src.add_image(os.urandom(30_000), name="busy", disk_format="raw", container_format="bare")
    clouds.dst.add_image(None, id=image["id"], name="busy", disk_format="raw", container_format="bare")
    clouds.dst.images[image["id"]].status = "uploading"
    run = await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "failed" and "uploading" in run.images[0].reason
    assert not clouds.dst.requests_matching("POST", r"/import$")
