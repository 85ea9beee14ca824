"""Properties a destination sets itself (glance's inject_image_metadata import plugin) are the
destination's: a re-run is no conflict, sync does not patch them away, verify does not count
them — while a property removed at the source is still removed at the destination."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from asyncmigrate import copy_images
from asyncmigrate.journal import read_destination_properties
from asyncmigrate.sync import sync_images
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config
from tests.test_sync import sync_config

INJECT = {"x_cloud_region": "east-2", "x_managed_by": "platform-team"}


def _inject(clouds: Clouds) -> None:
    """The destination injects on every glance-direct import, an admin's too (ignore_user_roles
    names a role the migrating admin lacks)."""
    clouds.dst.inject_properties = dict(INJECT)
    clouds.dst.inject_ignore_roles = frozenset({"service"})


def _add(clouds: Clouds, name: str, **props: Any) -> str:
    return str(
        clouds.src.add_image(os.urandom(40_000), name=name, disk_format="raw", container_format="bare", **props)["id"]
    )


def _config(tmp_path: Path, **kw: Any) -> Any:
    return fast_config(upload_method="glance-direct", journal=tmp_path / "pair.sqlite", **kw)


async def test_a_rerun_takes_injected_properties_for_the_destinations(clouds: Clouds, tmp_path: Path) -> None:
    """glance-direct into a destination that injects properties: the copy names them in its
    reason and the journal keeps them; the re-run skips every image without reading one
    (no conflict), and verify says match."""
    _inject(clouds)
    ids = [_add(clouds, f"img-{n}", os_distro="debian") for n in range(3)]
    run = await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"copied"} and int(run.exit_code) == 0
    assert all(clouds.dst.get(i)["x_cloud_region"] == "east-2" for i in ids)
    assert any("x_cloud_region, x_managed_by" in r.reason for r in run.images)
    assert await read_destination_properties(tmp_path / "pair.sqlite", clouds.dst_cloud.endpoint) == sorted(INJECT)
    before = len(clouds.dst.requests)
    again = await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert {r.id: r.outcome for r in again.images} == dict.fromkeys(ids, "skipped"), [r.reason for r in again.images]
    assert not [
        r for r in clouds.dst.requests[before:] if r.method == "GET" and r.path.removeprefix("/v2/images/") in ids
    ]
    check = await verify_catalogs(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in check.images} == {"match"}, [r.reason for r in check.images]


async def test_sync_leaves_injected_properties_and_removes_what_the_source_removed(
    clouds: Clouds, tmp_path: Path
) -> None:
    """After the copy the source drops one of its properties and renames the image: sync sends
    one PATCH that renames and removes that property — and leaves the destination's own."""
    _inject(clouds)
    image_id = _add(clouds, "web", os_distro="debian", os_version="12")
    await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    rec = clouds.src.images[image_id]
    del rec.properties["os_version"]
    rec.name = "web-renamed"
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path, upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in run.images] == ["updated"], [r.reason for r in run.images]
    (patch,) = [r for r in clouds.dst.requests[before:] if r.method == "PATCH"]
    dst = clouds.dst.get(image_id)
    assert dst["name"] == "web-renamed" and "os_version" not in dst and dst["os_distro"] == "debian"
    assert {k: dst[k] for k in INJECT} == INJECT
    quiet = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in quiet.images] == ["skipped"] and not [
        r for r in clouds.dst.requests[before + 1 :] if r.method == "PATCH" and r is not patch
    ]


async def test_a_key_the_source_has_too_keeps_the_destinations_value(clouds: Clouds, tmp_path: Path) -> None:
    """The source carries x_cloud_region itself; the destination's plugin overwrites it on
    import: the destination's value stands, on the re-run and through sync."""
    _inject(clouds)
    image_id = _add(clouds, "both", x_cloud_region="west-1")
    await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert clouds.dst.get(image_id)["x_cloud_region"] == "east-2"
    again = await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"]
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in run.images] == ["skipped"] and clouds.dst.get(image_id)["x_cloud_region"] == "east-2"


async def test_named_destination_properties_without_a_journal(clouds: Clouds, tmp_path: Path) -> None:
    """With no journal to remember them, --destination-property names the keys: the re-run and
    sync leave them alone; without the names, sync takes them for drift and removes them."""
    _inject(clouds)
    image_id = _add(clouds, "nojournal")
    await copy_images(fast_config(upload_method="glance-direct"), clouds.src_cloud, clouds.dst_cloud)
    named = tuple(INJECT)
    again = await copy_images(fast_config(destination_properties=named), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in again.images] == ["skipped"]
    sync = await sync_images(
        sync_config(tmp_path, journal=None, destination_properties=named), clouds.src_cloud, clouds.dst_cloud
    )
    assert [r.outcome for r in sync.images] == ["skipped"]
    blind = await sync_images(sync_config(tmp_path, journal=None), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in blind.images] == ["updated"] and "x_cloud_region" not in clouds.dst.get(image_id)


async def test_an_admins_import_is_not_injected_by_default(clouds: Clouds, tmp_path: Path) -> None:
    """Glance's default ignore_user_roles is admin: the migrating admin's imports get nothing
    injected, and nothing is learned."""
    clouds.dst.inject_properties = dict(INJECT)
    image_id = _add(clouds, "admin-import")
    run = await copy_images(_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in run.images] == ["copied"] and "x_cloud_region" not in clouds.dst.get(image_id)
    assert await read_destination_properties(tmp_path / "pair.sqlite", clouds.dst_cloud.endpoint) == []
