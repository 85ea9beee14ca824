"""The whole copy pipeline against two fake Glances: ids, attributes, members,
bytes, states, idempotency, conflicts and dry runs."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from asyncmigrate import copy_images
from asyncmigrate.errors import UsageError
from asyncmigrate.progress import BytesMoved, ImageDone, ListingDone
from tests.conftest import Clouds, fast_config

MEMBERS = {"p-accepted": "accepted", "p-pending": "pending", "p-rejected": "rejected"}


def _seed_catalog(clouds: Clouds) -> dict[str, bytes | None]:
    src = clouds.src
    catalog: dict[str, bytes | None] = {}

    def add(data: bytes | None, **attrs: object) -> str:
        image = src.add_image(data, disk_format="raw", container_format="bare", **attrs)
        catalog[image["id"]] = data
        return str(image["id"])

    add(None, name="queued")
    add(b"x", name="one byte")
    add(os.urandom(300_000), name="public", visibility="public", os_distro="cirros")
    add(os.urandom(70_000), name="hidden", os_hidden=True)
    add(os.urandom(70_000), name="community", visibility="community", tags=["a", "b"])
    add(os.urandom(70_000), name="protected", protected=True)
    add(os.urandom(70_000), name="deactivated", status="deactivated")
    add(os.urandom(70_000), name="other owner", owner="someone-else", visibility="private")
    add(os.urandom(70_000), name="slow store", store="slow", min_disk=3, min_ram=512)
    add(os.urandom(70_000), name="props", **{f"p{i}": f"v{i}" for i in range(30)})
    shared = add(os.urandom(70_000), name="shared", visibility="shared")
    for member, status in MEMBERS.items():
        src.add_member(shared, member, status)
    for i in range(30):  # more than a page of 25: the lister must follow `next`
        add(os.urandom(1000 + i), name=f"small-{i}")
    return catalog


_PER_CLOUD = {"created_at", "updated_at", "stores", "locations", "direct_url"}


def _same(clouds: Clouds, catalog: dict[str, bytes | None]) -> None:
    for image_id, data in catalog.items():
        src, dst = clouds.src.get(image_id), clouds.dst.get(image_id)
        assert {k: v for k, v in dst.items() if k not in _PER_CLOUD} == {
            k: v for k, v in src.items() if k not in _PER_CLOUD
        }, src["name"]
        if data is not None:
            assert clouds.dst.data(image_id) == data
    for image_id, members in clouds.src.members.items():
        got = {m: r.status for m, r in clouds.dst.members.get(image_id, {}).items()}
        assert got == {m: r.status for m, r in members.items()}


async def test_copy_keeps_ids_attributes_members_and_bytes(clouds: Clouds) -> None:
    """Every image arrives with its id, attributes, members and bytes; a second run does nothing."""
    catalog = _seed_catalog(clouds)
    run = await copy_images(fast_config(concurrency=3), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    assert run.failed == 0, [(r.name, r.reason) for r in run.images if r.reason]
    assert sorted(r.id for r in run.images) == sorted(catalog)
    assert run.count("created") == 1 and run.count("copied") == len(catalog) - 1
    _same(clouds, catalog)
    assert sum(e.n for e in clouds.events if isinstance(e, BytesMoved)) == sum(len(d or b"") for d in catalog.values())
    assert any(isinstance(e, ListingDone) and e.images == len(catalog) for e in clouds.events)
    assert sum(isinstance(e, ImageDone) for e in clouds.events) == len(catalog)

    writes_before = [r for r in clouds.dst.requests if r.method != "GET"]
    again = await copy_images(fast_config(concurrency=3), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in again.images} == {"skipped"}
    assert [r for r in clouds.dst.requests if r.method != "GET"] == writes_before
    assert again.bytes == 0


async def test_uploads_carry_size_headers_and_store(clouds: Clouds) -> None:
    """The PUT carries Content-Length, x-openstack-image-size and X-Image-Meta-Store."""
    image = clouds.src.add_image(os.urandom(200_000), disk_format="raw", container_format="bare")
    run = await copy_images(
        fast_config(dst_store="archive", image_ids=(image["id"],)), clouds.src_cloud, clouds.dst_cloud
    )
    assert run.failed == 0
    put = clouds.dst.requests_matching("PUT", r"/file$")[0]
    assert put.headers["Content-Length"] == "200000"
    assert put.headers["x-openstack-image-size"] == "200000"
    assert put.headers["X-Image-Meta-Store"] == "archive"
    assert clouds.dst.get(image["id"])["stores"] == "archive"


async def test_unknown_destination_store_is_a_usage_error(clouds: Clouds) -> None:
    """A --dst-store the destination does not list is a one-line usage error before anything is created."""
    image = clouds.src.add_image(b"data" * 1000, disk_format="raw", container_format="bare")
    with pytest.raises(UsageError, match=r"unknown store 'nope'.*has: main, archive"):
        await copy_images(fast_config(dst_store="nope", image_ids=(image["id"],)), clouds.src_cloud, clouds.dst_cloud)
    assert not clouds.dst.requests_matching("POST", ".*") and not clouds.dst.requests_matching("PUT", ".*")


async def test_store_rejected_at_upload_fails_the_image(clouds: Clouds) -> None:
    """A store the destination refuses at upload (400) fails the image, leaves it queued, and is not retried."""
    image = clouds.src.add_image(b"data" * 1000, disk_format="raw", container_format="bare")
    clouds.dst.faults.fail_next("PUT", r"/file$", 400, retry_after=None, body="Store archive is read-only")
    config = fast_config(dst_store="archive", image_ids=(image["id"],))
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "failed" and "400" in run.images[0].reason
    assert run.images[0].attempts == 1
    assert clouds.dst.get(image["id"])["status"] == "queued"


async def test_queued_destination_is_uploaded_into(clouds: Clouds) -> None:
    """A destination image left queued by an earlier failure is completed, never deleted."""
    data = os.urandom(100_000)
    image = clouds.src.add_image(data, name="n", disk_format="raw", container_format="bare")
    clouds.dst.add_image(None, id=image["id"], name="n", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome) for r in run.images] == [("upload", "copied")]
    assert clouds.dst.data(image["id"]) == data
    assert not clouds.dst.requests_matching("DELETE", ".*")


async def test_conflicting_destination_is_reported_not_overwritten(clouds: Clouds) -> None:
    """Same id with other attributes or other data → conflict, destination untouched."""
    a = clouds.src.add_image(b"A" * 5000, name="a", disk_format="raw", container_format="bare")
    b = clouds.src.add_image(b"B" * 5000, name="b", disk_format="raw", container_format="bare")
    clouds.dst.add_image(b"A" * 5000, id=a["id"], name="renamed", disk_format="raw", container_format="bare")
    clouds.dst.add_image(b"C" * 5000, id=b["id"], name="b", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    reasons = {r.id: r.reason for r in run.images}
    assert {r.outcome for r in run.images} == {"conflict"}
    assert "name" in reasons[a["id"]] and "other data" in reasons[b["id"]]
    assert int(run.exit_code) == 1
    assert clouds.dst.data(b["id"]) == b"C" * 5000


async def test_deleted_destination_id_is_a_clear_failure(clouds: Clouds) -> None:
    """Glance never reuses a deleted id: the image fails with that reason, nothing else breaks."""
    image = clouds.src.add_image(b"x" * 100, disk_format="raw", container_format="bare")
    clouds.dst.deleted.add(image["id"])
    ok = clouds.src.add_image(b"y" * 100, disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    by_id = {r.id: r for r in run.images}
    assert by_id[image["id"]].outcome == "failed" and "deleted" in by_id[image["id"]].reason
    assert by_id[ok["id"]].outcome == "copied"


async def test_unsupported_states_are_skipped_with_reason(clouds: Clouds) -> None:
    """saving/killed/importing sources are skipped with their state as the reason."""
    for status in ("saving", "importing", "pending_delete"):
        clouds.src.add_image(None, status=status, disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"skipped"}
    assert all("source image is" in r.reason for r in run.images)
    assert int(run.exit_code) == 0
    assert not clouds.dst.images


async def test_dry_run_changes_nothing(clouds: Clouds) -> None:
    """--dry-run plans every image with its bytes and sends no write to either cloud."""
    _seed_catalog(clouds)
    run = await copy_images(fast_config(dry_run=True), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"planned"}
    assert run.bytes == sum(c.size or 0 for c in clouds.src.images.values())
    assert not clouds.dst.images
    assert all(r.method == "GET" for r in clouds.dst.requests + clouds.src.requests)


async def test_named_images_only_and_missing_ones_fail(clouds: Clouds) -> None:
    """--image copies only those ids; an id the source lacks is a failure."""
    wanted = clouds.src.add_image(b"w" * 10, disk_format="raw", container_format="bare")
    clouds.src.add_image(b"o" * 10, disk_format="raw", container_format="bare")
    missing = str(uuid.uuid4())
    run = await copy_images(fast_config(image_ids=(wanted["id"], missing)), clouds.src_cloud, clouds.dst_cloud)
    assert {r.id: r.outcome for r in run.images} == {wanted["id"]: "copied", missing: "failed"}
    assert list(clouds.dst.images) == [wanted["id"]]


async def test_md5_only_source_is_verified_with_md5(clouds: Clouds) -> None:
    """An old image with only an md5 checksum is still verified (and copied)."""
    data = os.urandom(50_000)
    image = clouds.src.add_image(data, disk_format="raw", container_format="bare")
    rec = clouds.src.images[image["id"]]
    rec.os_hash_algo = None
    rec.os_hash_value = None
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied"
    assert clouds.dst.get(image["id"])["checksum"] == hashlib.md5(data).hexdigest()


async def test_ownerless_source_image_is_copied_once_and_then_clean(clouds: Clouds) -> None:
    """A source image with owner null lands in the caller's project (Glance gives an ownerless
    create to its creator); a re-run skips it and verify calls it a match — even after a cut
    upload left it queued, the next run finishes it instead of calling it a conflict."""
    from asyncmigrate.verify import verify_catalogs

    data = os.urandom(300_000)
    image = clouds.src.add_image(data, name="orphan", owner=None, disk_format="raw", container_format="bare")
    assert image["owner"] is None
    clouds.dst.faults.cut_upload_after(image["id"], 100_000, times=4)  # every attempt of the first run
    first = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert first.images[0].outcome == "failed" and clouds.dst.get(image["id"])["status"] == "queued"
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome) for r in run.images] == [("upload", "copied")], run.images[0].reason
    assert clouds.dst.get(image["id"])["owner"] == "admin-project"
    assert clouds.dst.data(image["id"]) == data
    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"] and int(again.exit_code) == 0
    check = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in check.images] == ["match"] and int(check.exit_code) == 0
