"""The fake's storage behind the stores behaves as glance 33 was measured to: shared objects
deleted for every image that shows them, silent fallback to the next location, ``?prefer=``,
the image cache and ``Range`` (refused by every store type but file and cinder), the legacy
locations API, and RBD clones pinning data (format 1) or trashed with it (format 2)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakeglance import GLANCE_27, FakeGlance, serve

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def fake() -> FakeGlance:
    """Stores fast and slow (file), cold (s3), ceph and ceph2 (rbd), showing locations."""
    fake = FakeGlance(
        stores={"fast": "", "slow": "", "cold": "", "ceph": "", "ceph2": ""},
        store_types={"cold": "s3", "ceph": "rbd", "ceph2": "rbd"},
        show_multiple_locations=True,
    )
    fake.backend.pools.update(ceph="images", ceph2="images-ec")
    return fake


@pytest.fixture
async def http(fake: FakeGlance) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A plain client and the fake's URL."""
    async with serve(fake) as url, aiohttp.ClientSession() as session:
        yield session, url


async def _get(http: tuple[aiohttp.ClientSession, str], path: str, **headers: str) -> tuple[int, bytes]:
    session, url = http
    async with session.get(url + path, headers=headers) as resp:
        return resp.status, await resp.read()


async def _send(http: tuple[aiohttp.ClientSession, str], method: str, path: str, body: Any = None) -> tuple[int, str]:
    session, url = http
    async with session.request(method, url + path, json=body, headers=PATCH if method == "PATCH" else {}) as resp:
        return resp.status, await resp.text()


def _location(fake: FakeGlance, image_id: str, store: str) -> str:
    return next(loc["url"] for loc in fake.get(image_id)["locations"] if loc["metadata"]["store"] == store)


async def test_a_shared_object_is_deleted_for_both_images(fake: FakeGlance, http: Any) -> None:
    """Removing a location another image shares deletes the object: the other keeps a location
    that serves nothing (204), as the carrier of a moved image did on glance 33."""
    carrier = fake.add_image(b"c" * 100, store="cold", disk_format="raw", container_format="bare")
    original = fake.add_image(b"c" * 100, store="fast", disk_format="raw", container_format="bare")
    value = {"url": _location(fake, carrier["id"], "cold"), "metadata": {"store": "cold"}}
    assert (
        await _send(
            http, "PATCH", f"/v2/images/{original['id']}", [{"op": "add", "path": "/locations/-", "value": value}]
        )
    )[0] == 200
    assert (await _send(http, "DELETE", f"/v2/stores/cold/{original['id']}"))[0] == 204
    assert await _get(http, f"/v2/images/{carrier['id']}/file") == (204, b"")
    assert fake.get(carrier["id"])["status"] == "active" and fake.get(carrier["id"])["stores"] == "cold"
    assert await _get(http, f"/v2/images/{original['id']}/file") == (200, b"c" * 100)


async def test_downloads_fall_back_silently_and_prefer_orders_the_stores(fake: FakeGlance, http: Any) -> None:
    """The first location that opens serves the bytes, ``?prefer=`` first; an object gone is
    skipped without a word; an unknown store in ``prefer`` is 400 (glance 33)."""
    image = fake.add_image(b"a" * 50, stores=["fast", "cold"], disk_format="raw", container_format="bare")
    fake.images[image["id"]].data["cold"] = b"b" * 50  # a different copy in cold, for telling them apart
    path = f"/v2/images/{image['id']}/file"
    assert await _get(http, path) == (200, b"a" * 50)
    assert await _get(http, path + "?prefer=cold") == (200, b"b" * 50)
    fake.backend.gone.add(_location(fake, image["id"], "cold"))
    assert await _get(http, path + "?prefer=cold") == (200, b"a" * 50)
    status, body = await _get(http, path + "?prefer=nowhere", **JSON)
    assert status == 400 and json.loads(body)["message"].startswith("Store 'nowhere' is not configured.")


async def test_glance_27_ignores_prefer() -> None:
    """Before glance 33.0.0 the ``prefer`` parameter is ignored, unknown store or not."""
    fake = FakeGlance(profile=GLANCE_27, stores={"fast": "", "slow": ""})
    image = fake.add_image(b"x" * 10, stores=["fast", "slow"], disk_format="raw", container_format="bare")
    async with serve(fake) as url, aiohttp.ClientSession() as session:
        resp = await session.get(f"{url}/v2/images/{image['id']}/file?prefer=nowhere")
        assert resp.status == 200 and await resp.read() == b"x" * 10


async def test_the_cache_ignores_prefer_but_never_serves_a_range(fake: FakeGlance, http: Any) -> None:
    """A cached image is served from the cache whatever ``prefer`` says; a ranged request reads the stores."""
    image = fake.add_image(b"a" * 20, stores=["fast", "slow"], disk_format="raw", container_format="bare")
    fake.images[image["id"]].data["slow"] = b"b" * 20
    fake.backend.cached[image["id"]] = b"a" * 20
    path = f"/v2/images/{image['id']}/file?prefer=slow"
    assert await _get(http, path) == (200, b"a" * 20)
    assert await _get(http, path, Range="bytes=0-") == (206, b"b" * 20)


async def test_stores_without_random_reads_refuse_a_range_and_the_next_location_serves_it(
    fake: FakeGlance, http: Any
) -> None:
    """Any Range on an rbd or s3 copy is refused (glance_store's StoreRandomGetNotSupported):
    Glance serves the next location silently, even past ``?prefer=``, and when none can it
    answers 400 with the offset and length, as glance 33 did on the harness's Ceph."""
    image = fake.add_image(b"a" * 50, stores=["fast", "ceph"], disk_format="raw", container_format="bare")
    fake.images[image["id"]].data["ceph"] = b"b" * 50
    path = f"/v2/images/{image['id']}/file?prefer=ceph"
    assert await _get(http, path) == (200, b"b" * 50)
    assert await _get(http, path, Range="bytes=0-") == (206, b"a" * 50)  # fast's copy, not ceph's
    for store in ("ceph", "cold"):
        only = fake.add_image(b"c" * 50, store=store, disk_format="raw", container_format="bare")
        status, body = await _get(http, f"/v2/images/{only['id']}/file", Range="bytes=10-")
        assert status == 400 and b"Getting images randomly from this store is not supported." in body
        assert b"Offset: 10, length: 40" in body
        assert await _get(http, f"/v2/images/{only['id']}/file") == (200, b"c" * 50)


async def test_legacy_locations_refuse_what_glance_refuses(fake: FakeGlance, http: Any) -> None:
    """Adding a file:// or 0-byte location is 400 "Invalid location"; removing the last one is
    403; without show_multiple_locations the whole API is 403."""
    image = fake.add_image(b"z" * 10, store="fast", disk_format="raw", container_format="bare")
    empty = fake.add_image(b"", store="cold", disk_format="raw", container_format="bare")
    path = f"/v2/images/{image['id']}"
    for url in (_location(fake, image["id"], "fast"), _location(fake, empty["id"], "cold")):
        value = {"url": url, "metadata": {"store": "cold"}}
        status, text = await _send(http, "PATCH", path, [{"op": "add", "path": "/locations/-", "value": value}])
        assert status == 400 and "Invalid location" in text
    status, text = await _send(http, "PATCH", path, [{"op": "remove", "path": "/locations/0"}])
    assert status == 403 and "last location" in text
    fake.show_multiple_locations = False
    assert (await _send(http, "PATCH", path, [{"op": "remove", "path": "/locations/0"}]))[0] == 403


async def test_rbd_store_detail_and_locations(fake: FakeGlance, http: Any) -> None:
    """An rbd store shows its pool and fsid in /v2/info/stores/detail; its locations are rbd://FSID/POOL/ID/snap."""
    status, body = await _get(http, "/v2/info/stores/detail")
    assert status == 200
    stores = {s["id"]: s for s in json.loads(body)["stores"]}
    assert stores["ceph"]["type"] == "rbd" and stores["ceph"]["properties"]["pool"] == "images"
    image = fake.add_image(b"r" * 10, store="ceph2", disk_format="raw", container_format="bare")
    assert _location(fake, image["id"], "ceph2") == f"rbd://{fake.backend.fsid}/images-ec/{image['id']}/snap"


async def test_a_clone_pins_the_data_until_flattened(fake: FakeGlance, http: Any) -> None:
    """With a clone of its snapshot the copy in an rbd store cannot be deleted: 403 while it is
    the only store, 409 "in use" (HTML to */*, JSON to application/json) once in two, the image
    delete 409; after the clone is flattened the delete works."""
    image = fake.add_image(b"p" * 10, store="ceph", disk_format="raw", container_format="bare")
    assert fake.backend.clone(image["id"], "ceph") == f"images/{image['id']}@snap"
    session, url = http
    delete = f"{url}/v2/stores/ceph/{image['id']}"
    async with session.delete(delete) as resp:
        assert resp.status == 403
    fake.images[image["id"]].data["ceph2"] = b"p" * 10
    async with session.delete(delete) as resp:
        text = await resp.text()
        assert resp.status == 409 and resp.content_type == "text/html" and "<h1>409 Conflict</h1>" in text
    async with session.delete(delete, headers=JSON) as resp:
        body = await resp.json()
        assert (
            body["code"] == "409 Conflict" and "in use through the backend store outside of Glance" in body["message"]
        )
    async with session.delete(f"{url}/v2/images/{image['id']}") as resp:
        assert resp.status == 409
    assert fake.get(image["id"])["stores"] == "ceph,ceph2"
    fake.backend.flatten("vms/instance-disk")
    async with session.delete(delete) as resp:
        assert resp.status == 204
    assert fake.get(image["id"])["stores"] == "ceph2" and not fake.backend.trash


async def test_clone_v2_trash_reports_success(fake: FakeGlance, http: Any) -> None:
    """With only format-2 clones glance_store trashes the RBD image and glance answers 204; one
    format-1 clone beside them still pins it (409), as measured with Ceph 16."""
    image = fake.add_image(b"t" * 10, stores=["ceph", "ceph2"], disk_format="raw", container_format="bare")
    fake.backend.clone(image["id"], "ceph", "vms/v2-disk", clone_format=2)
    fake.backend.clone(image["id"], "ceph", "vms/v1-disk")
    assert (await _send(http, "DELETE", f"/v2/stores/ceph/{image['id']}"))[0] == 409
    fake.backend.flatten("vms/v1-disk")
    assert (await _send(http, "DELETE", f"/v2/stores/ceph/{image['id']}"))[0] == 204
    assert fake.get(image["id"])["stores"] == "ceph2" and fake.backend.trash == {_ceph_url(fake, image["id"])}


def _ceph_url(fake: FakeGlance, image_id: str) -> str:
    return f"rbd://{fake.backend.fsid}/images/{image_id}/snap"
