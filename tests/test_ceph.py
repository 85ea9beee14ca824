"""Destinations on Ceph: RBD stores (what Nova and Cinder can clone), S3 stores, and what an upload
without a declared size costs there — judged from the store's type, never its name."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import aiohttp
import anyio

from asyncmigrate import copy_images
from asyncmigrate.capabilities import StoreInfo
from asyncmigrate.config import SyncConfig
from asyncmigrate.preflight import NOT_RAW_ON_RBD, PreflightOptions, judge, not_raw_on_rbd
from asyncmigrate.progress import RunWarning
from asyncmigrate.sync import sync_images
from asyncmigrate.upload import unsized_cost
from tests.conftest import FAST_RETRY, Clouds, fast_config
from tests.fakeglance import QCOW2_MAGIC

ACTIVE = {"id": "i", "status": "active", "size": 3, "checksum": "c" * 32}


def _qcow2(payload: int = 20_000) -> bytes:
    return QCOW2_MAGIC + b"\0" * 20 + struct.pack(">Q", 1 << 20) + os.urandom(payload)


async def _cli(*args: str, clouds_yaml: Path) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_not_raw_on_rbd_warns_for_images_with_data_bound_for_rbd() -> None:
    """A qcow2 (or any non-raw) image with data bound for an rbd store is a non-blocking warning naming
    Nova/Cinder's clone rule and the way out; raw images, records without data and other stores are not."""
    trap = not_raw_on_rbd({**ACTIVE, "disk_format": "qcow2"}, "rbd", "ceph")
    assert trap is not None and trap.kind == NOT_RAW_ON_RBD and not trap.blocking
    assert "rbd://FSID/POOL/IMAGE/snap" in trap.reason and "--upload-method glance-direct" in trap.reason
    assert "RBD store 'ceph'" in trap.reason and "qcow2" in trap.reason
    assert not_raw_on_rbd({**ACTIVE, "disk_format": "raw"}, "rbd", "ceph") is None
    assert not_raw_on_rbd({**ACTIVE, "status": "queued", "disk_format": "qcow2"}, "rbd") is None
    assert not_raw_on_rbd({**ACTIVE, "disk_format": "qcow2"}, "file", "ceph") is None
    assert not_raw_on_rbd({**ACTIVE, "disk_format": "qcow2"}, None, "ceph") is None
    deactivated = not_raw_on_rbd({**ACTIVE, "status": "deactivated", "disk_format": "vmdk"}, "rbd")
    assert deactivated is not None and "vmdk" in deactivated.reason
    staged = not_raw_on_rbd({**ACTIVE, "disk_format": "qcow2"}, "rbd", "ceph", method="glance-direct")
    assert staged is not None and "only if the destination converts" in staged.reason
    moved = not_raw_on_rbd({**ACTIVE, "disk_format": "qcow2"}, "rbd", "ceph2", method="copy-image")
    assert moved is not None and "store move copies the bytes as they are: convert it to raw first" in moved.reason
    judged = judge({**ACTIVE, "disk_format": "iso"}, PreflightOptions(store="ceph", store_type="rbd"))
    assert judged.blocking is None and judged.kinds == [NOT_RAW_ON_RBD] and judged.warnings == [judged.traps[0].reason]


def test_put_unsized_costs_are_named_by_store_type() -> None:
    """put-unsized into an rbd store names resize-before-write; into an s3 store the whole image in
    glance-api's memory; elsewhere, and for put, it costs nothing worth a warning."""
    rbd = unsized_cost("put-unsized", StoreInfo("main", type="rbd"))
    assert rbd is not None and "resize-before-write" in rbd and "'main' (rbd)" in rbd
    s3 = unsized_cost("put-unsized", StoreInfo("ceph", type="s3"))
    assert s3 is not None and "WHOLE into glance-api's memory" in s3 and "'ceph' (s3)" in s3
    assert unsized_cost("put", StoreInfo("main", type="rbd")) is None
    assert unsized_cost("put-unsized", StoreInfo("ceph", type="file")) is None
    assert unsized_cost("put-unsized", StoreInfo("ceph", type="swift")) is None
    assert unsized_cost("put-unsized", None) is None


async def test_fake_shows_rbd_and_s3_stores_as_glance_33_does(clouds: Clouds) -> None:
    """As glance 33 on the harness's Ceph: an rbd store lists its pool, fsid and chunk_size in bytes
    (8388608), its images' locations are rbd://FSID/POOL/ID/snap; an s3 store lists its multipart
    thresholds in bytes."""
    clouds.dst.store_types.update(main="rbd", archive="s3")
    clouds.dst.backend.pools["main"] = "images"
    clouds.dst.show_multiple_locations = True
    image = clouds.dst.add_image(os.urandom(100), store="main", disk_format="raw", container_format="bare")
    shown = clouds.dst.render(clouds.dst.images[image["id"]])
    fsid = clouds.dst.backend.fsid
    assert shown["locations"] == [{"url": f"rbd://{fsid}/images/{image['id']}/snap", "metadata": {"store": "main"}}]
    async with aiohttp.ClientSession() as http, http.get(f"{clouds.dst_server.url}/v2/info/stores/detail") as resp:
        detail = {s["id"]: s for s in (await resp.json())["stores"]}
    assert detail["main"]["type"] == "rbd"
    assert detail["main"]["properties"] == {"chunk_size": 8388608, "pool": "images", "thin_provisioning": False,
                                            "fsid": fsid}  # fmt: skip
    assert detail["archive"]["type"] == "s3"
    assert detail["archive"]["properties"]["s3_store_large_object_size"] == 104857600


async def test_copy_into_rbd_warns_of_not_raw_images_and_says_clones_start_fresh(clouds: Clouds) -> None:
    """Into an rbd default store a qcow2 image is copied with the not-raw-on-rbd warning (a raw one
    without), plan and copy agree, and the run's notes say the destination's clones start fresh."""
    clouds.dst.store_types["main"] = "rbd"
    qcow = clouds.src.add_image(_qcow2(), name="q", disk_format="qcow2", container_format="bare")
    raw = clouds.src.add_image(os.urandom(5000), name="r", disk_format="raw", container_format="bare")
    plan = await copy_images(fast_config(dry_run=True), clouds.src_cloud, clouds.dst_cloud)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    for result in (plan, run):
        by_id = {r.id: r for r in result.images}
        assert by_id[qcow["id"]].traps == [NOT_RAW_ON_RBD] and "Nova and Cinder" in by_id[qcow["id"]].warnings[0]
        assert by_id[raw["id"]].traps == [] and by_id[raw["id"]].warnings == []
        assert any("clones at the destination start fresh" in note for note in result.notes), result.notes
    assert {r.outcome for r in run.images} == {"copied"}
    assert clouds.dst.data(qcow["id"], "main") == clouds.src.data(qcow["id"])
    # The size is declared: glance_store then creates the RBD image at its size (no resize-before-write).
    puts = [r.headers for r in clouds.dst.requests if r.method == "PUT" and r.path.endswith(f"{raw['id']}/file")]
    assert [h.get("x-openstack-image-size") for h in puts] == ["5000"] and run.clouds["destination"][
        "upload_method"
    ] == "put"


async def test_the_store_type_decides_never_its_name(clouds: Clouds) -> None:
    """A store named like Ceph but of type file gets no RBD warning; one named 'archive' of type rbd does;
    a destination that hides its store types (non-admin) gets none either."""
    clouds.dst.stores["ceph"] = "looks like ceph"
    qcow = clouds.src.add_image(_qcow2(), name="q", disk_format="qcow2", container_format="bare")
    as_file = await copy_images(fast_config(dry_run=True, dst_store="ceph"), clouds.src_cloud, clouds.dst_cloud)
    assert as_file.images[0].traps == [] and as_file.notes == []
    clouds.dst.store_types["archive"] = "rbd"
    as_rbd = await copy_images(fast_config(dry_run=True, dst_store="archive"), clouds.src_cloud, clouds.dst_cloud)
    assert as_rbd.images[0].traps == [NOT_RAW_ON_RBD] and "RBD store 'archive'" in as_rbd.images[0].warnings[0]
    clouds.dst.faults.fail_next("GET", r"/v2/info/stores/detail$", 403, retry_after=None, times=None)
    hidden = await copy_images(fast_config(dry_run=True, dst_store="archive"), clouds.src_cloud, clouds.dst_cloud)
    assert hidden.images[0].traps == [] and qcow["id"] == hidden.images[0].id


async def test_sync_into_rbd_judges_as_copy_does(clouds: Clouds) -> None:
    """sync flags a qcow2 image bound for an rbd store exactly as copy does, and says clones start fresh."""
    clouds.dst.store_types["main"] = "rbd"
    qcow = clouds.src.add_image(_qcow2(), name="q", disk_format="qcow2", container_format="bare")
    run = await sync_images(SyncConfig(retry=FAST_RETRY), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert (result.id, result.outcome, result.traps) == (qcow["id"], "copied", [NOT_RAW_ON_RBD])
    assert any("start fresh" in note for note in run.notes)


async def test_put_unsized_into_rbd_or_s3_warns_once_at_the_start(clouds: Clouds) -> None:
    """--upload-method put-unsized aimed at an rbd or s3 store emits one warning before the first image
    (and keeps it in the run's notes); the default put into the same store does not."""
    clouds.dst.store_types.update(main="rbd", archive="s3")
    clouds.src.add_image(os.urandom(5000), name="r", disk_format="raw", container_format="bare")
    for store, words in (("main", "resize-before-write"), ("archive", "WHOLE into glance-api's memory")):
        events: list[object] = []
        config = fast_config(dst_store=store, upload_method="put-unsized", dry_run=True)
        run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud, emit=events.append)
        warnings = [e for e in events if isinstance(e, RunWarning)]
        assert len(warnings) == 1 and words in warnings[0].message
        assert events.index(warnings[0]) < next(i for i, e in enumerate(events) if type(e).__name__ == "ImageDone")
        assert run.notes[0] == f"warning: {warnings[0].message}"
    events = []
    await copy_images(
        fast_config(dst_store="main", dry_run=True), clouds.src_cloud, clouds.dst_cloud, emit=events.append
    )
    assert not [e for e in events if isinstance(e, RunWarning)]


async def test_cli_prints_the_cost_warning_and_the_clone_note(clouds: Clouds, tmp_path: Path) -> None:
    """The CLI says put-unsized's cost when the run starts (and under the totals), the clone note after them,
    and a plan's 'why' carries the not-raw-on-rbd way out; the report keeps notes and warnings."""
    clouds.dst.store_types["main"] = "rbd"
    clouds.src.add_image(_qcow2(), name="q", disk_format="qcow2", container_format="bare")
    pair = ("--src-cloud", "src", "--dst-cloud", "dst")
    code, out, err = await _cli("plan", "copy", *pair, clouds_yaml=clouds.clouds_yaml)
    assert code == 0, err
    assert "not raw" not in out and "Nova and Cinder clone only raw images" in out and "--upload-method" in out
    assert "each image copied into RBD store 'main' is a new RBD image" in out
    report = tmp_path / "r.json"
    code, out, err = await _cli(
        "copy", *pair, "--upload-method", "put-unsized", "--report", str(report), clouds_yaml=clouds.clouds_yaml
    )
    assert code == 0, err
    # Said as the run starts (stop it now if that was not meant), and again under the totals.
    warning = "warning: --upload-method put-unsized into store 'main' (rbd)"
    done = out.index("done: 1 images")
    assert out.count(warning) == 2 and out.index(warning) < done < out.rindex(warning), out
    assert out.index("each image copied into RBD store 'main'") > out.index("done: 1 images") and "1 copied" in out
    document = json.loads(report.read_text())
    assert len(document["summary"]["notes"]) == 2
    assert document["images"][0]["traps"] == [NOT_RAW_ON_RBD] and document["images"][0]["warnings"]
