"""The fake Glance enforces glance 33's rules and injects the faults tests ask for.

Every test talks to the fake over real HTTP with a plain aiohttp client, the way the project's
own client will.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from tests.fakeglance import ADMIN_PROJECT, QCOW2_MAGIC, FakeGlance, FakeServer, serve

PATCH = "application/openstack-images-v2.1-json-patch"
OTHER = {"X-Project-Id": "other-project"}
DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


@pytest.fixture
def fake() -> FakeGlance:
    """A fake behind a path prefix, as real deployments often put glance."""
    return FakeGlance(prefix="/image")


@pytest.fixture
async def url(fake: FakeGlance) -> AsyncIterator[str]:
    """The fake's image endpoint, served for the test's duration."""
    async with serve(fake) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session."""
    async with aiohttp.ClientSession() as session:
        yield session


async def create(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    """Create an image through the API and return its JSON."""
    body.setdefault("disk_format", "raw")
    body.setdefault("container_format", "bare")
    async with http.post(f"{url}/v2/images", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


async def put_file(
    http: aiohttp.ClientSession, url: str, image_id: str, data: Any, headers: dict[str, str] | None = None
) -> int:
    """Upload image data; returns the status."""
    async with http.put(
        f"{url}/v2/images/{image_id}/file",
        data=data,
        headers={"Content-Type": "application/octet-stream", **(headers or {})},
    ) as resp:
        return resp.status


async def get_json(
    http: aiohttp.ClientSession, url: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET a JSON document; returns (status, body or None)."""
    async with http.get(f"{url}{path}", headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def patch(
    http: aiohttp.ClientSession, url: str, image_id: str, ops: list[dict[str, Any]], content_type: str = PATCH
) -> tuple[int, Any]:
    """Apply a JSON patch; returns (status, body or text)."""
    async with http.patch(
        f"{url}/v2/images/{image_id}", data=json.dumps(ops), headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else await resp.text())


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``check()`` holds, polling the fake's state."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Read a body until it ends or fails; returns what arrived and the error, if any."""
    received = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            received += chunk
    except aiohttp.ClientPayloadError as exc:
        return bytes(received), exc
    return bytes(received), None


# -- discovery -------------------------------------------------------------------------


async def test_version_document_links_keep_the_prefix(http: aiohttp.ClientSession, url: str) -> None:
    """/versions is 200, the bare root 300, and v2.17 is CURRENT with a prefixed absolute link."""
    status, body = await get_json(http, url, "/versions")
    assert status == 200
    current = [v for v in body["versions"] if v["status"] == "CURRENT"]
    assert [v["id"] for v in current] == ["v2.17"]
    assert current[0]["links"][0]["href"] == f"{url}/v2/"
    status, _ = await get_json(http, url, "/")
    assert status == 300


async def test_info_stores_marks_default_with_a_string(http: aiohttp.ClientSession, url: str) -> None:
    """/v2/info/stores lists the stores, the default one flagged with the string "true"."""
    status, body = await get_json(http, url, "/v2/info/stores")
    assert status == 200
    assert body["stores"] == [
        {"id": "fast", "description": "Fast file store", "default": "true"},
        {"id": "slow", "description": "Slow file store"},
    ]


async def test_single_store_glance_has_no_store_info() -> None:
    """Without multiple stores there is no /v2/info/stores and no ``stores`` on images."""
    fake = FakeGlance(stores=None)
    image = fake.add_image(b"abc")
    assert "stores" not in image
    async with serve(fake) as url, aiohttp.ClientSession() as http:
        status, _ = await get_json(http, url, "/v2/info/stores")
        assert status == 404
        assert await put_file(http, url, (await create(http, url))["id"], b"xyz") == 204


async def test_locations_shown_only_when_configured() -> None:
    """``locations`` appears only with show_multiple_locations; ``direct_url`` never does."""
    assert "locations" not in FakeGlance().add_image(b"a")
    image = FakeGlance(show_multiple_locations=True).add_image(b"a", store="slow")
    assert image["locations"][0]["metadata"] == {"store": "slow"}
    assert "direct_url" not in image


# -- create, upload, download ---------------------------------------------------------


async def test_create_upload_download_round_trip(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """An uploaded image becomes active with md5/sha512 recorded and downloads intact."""
    async with http.post(
        f"{url}/v2/images", json={"name": "a", "disk_format": "raw", "container_format": "bare"}
    ) as resp:
        assert resp.status == 201
        assert resp.headers["OpenStack-image-store-ids"] == "fast,slow"
        image = await resp.json()
    assert image["status"] == "queued"
    assert image["size"] is None and image["checksum"] is None
    assert image["visibility"] == "shared" and image["owner"] == ADMIN_PROJECT
    assert image["self"] == f"/v2/images/{image['id']}"
    assert "stores" not in image

    assert await put_file(http, url, image["id"], DATA, {"X-Image-Meta-Store": "slow"}) == 204
    status, shown = await get_json(http, url, f"/v2/images/{image['id']}")
    assert status == 200
    assert shown["status"] == "active" and shown["stores"] == "slow"
    assert shown["size"] == shown["virtual_size"] == len(DATA)
    assert shown["checksum"] == hashlib.md5(DATA).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(DATA).hexdigest()

    async with http.get(f"{url}/v2/images/{image['id']}/file") as resp:
        assert resp.status == 200
        assert resp.headers["Content-MD5"] == hashlib.md5(DATA).hexdigest()
        assert resp.headers["Content-Length"] == str(len(DATA))
        assert "Accept-Ranges" not in resp.headers
        assert await resp.read() == DATA
    assert fake.data(image["id"], "slow") == DATA


async def test_reupload_to_active_image_is_conflict(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """Only a queued image accepts data: active and deactivated answer 409."""
    active = fake.add_image(b"old")
    deactivated = fake.add_image(b"old", status="deactivated")
    assert await put_file(http, url, active["id"], b"new") == 409
    assert await put_file(http, url, deactivated["id"], b"new") == 409
    assert fake.data(active["id"]) == b"old"


async def test_upload_to_unknown_store_is_bad_request(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """An unknown X-Image-Meta-Store is 400 and the image stays queued."""
    image = await create(http, url)
    assert await put_file(http, url, image["id"], b"x", {"X-Image-Meta-Store": "nope"}) == 400
    assert fake.get(image["id"])["status"] == "queued"


async def test_chosen_id_can_never_be_reused(http: aiohttp.ClientSession, url: str) -> None:
    """A chosen id is 409 once taken, and stays 409 after the image is deleted."""
    image_id = str(uuid.uuid4())
    await create(http, url, id=image_id)
    body = {"id": image_id, "disk_format": "raw", "container_format": "bare"}
    async with http.post(f"{url}/v2/images", json=body) as resp:
        assert resp.status == 409
    async with http.delete(f"{url}/v2/images/{image_id}") as resp:
        assert resp.status == 204
    assert (await get_json(http, url, f"/v2/images/{image_id}"))[0] == 404
    async with http.post(f"{url}/v2/images", json=body) as resp:
        assert resp.status == 409


@pytest.mark.parametrize(
    "body",
    [
        {"checksum": "0" * 32},
        {"size": 3},
        {"virtual_size": 3},
        {"status": "active"},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"stores": "fast"},
        {"self": "/x"},
        {"file": "/x"},
        {"schema": "/x"},
        {"direct_url": "file:///x"},
        {"locations": []},
        {"os_glance_importing_to_stores": "slow"},
        {"deleted": "true"},
    ],
)
async def test_readonly_and_reserved_attributes_forbidden_in_create(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> None:
    """Read-only, reserved and os_glance_* attributes in a create are 403."""
    async with http.post(f"{url}/v2/images", json=body) as resp:
        assert resp.status == 403


async def test_os_hash_value_in_create_is_silently_dropped(http: aiohttp.ClientSession, url: str) -> None:
    """os_hash_value/os_hash_algo in a create are accepted and ignored, as glance does."""
    image = await create(http, url, os_hash_value="f" * 128, os_hash_algo="md5", extra="v")
    assert image["os_hash_value"] is None and image["os_hash_algo"] is None
    assert image["extra"] == "v"


async def test_create_validates_schema_and_publicize_policy(http: aiohttp.ClientSession, url: str) -> None:
    """Bad types are 400; only an admin may create public images or set another owner."""
    for body in (
        {"visibility": "everyone"},
        {"protected": "yes"},
        {"custom": 5},
        {"id": "not-a-uuid"},
        {"disk_format": "floppy"},
    ):
        async with http.post(f"{url}/v2/images", json=body) as resp:
            assert resp.status == 400, body
    for body in ({"visibility": "public"}, {"owner": "someone-else"}):
        async with http.post(f"{url}/v2/images", json=body, headers=OTHER) as resp:
            assert resp.status == 403, body
    image = await create(http, url, owner="someone-else", visibility="public")
    assert image["owner"] == "someone-else"


# -- patch, delete, tags, actions ---------------------------------------------------------


async def test_patch_applies_glance_rules(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """JSON-patch sets base and custom attributes; read-only 403, missing 409, wrong type 415."""
    image = fake.add_image(b"x", name="old", hw_disk_bus="virtio")
    iid = image["id"]
    status, body = await patch(
        http,
        url,
        iid,
        [
            {"op": "replace", "path": "/name", "value": "new"},
            {"op": "add", "path": "/os_distro", "value": "debian"},
            {"op": "remove", "path": "/hw_disk_bus"},
            {"op": "replace", "path": "/tags", "value": ["a", "b", "a"]},
            {"op": "replace", "path": "/os_hidden", "value": True},
        ],
    )
    assert status == 200
    assert body["name"] == "new" and body["os_distro"] == "debian" and body["os_hidden"] is True
    assert "hw_disk_bus" not in body and body["tags"] == ["a", "b"]

    assert (await patch(http, url, iid, [{"op": "replace", "path": "/checksum", "value": "x"}]))[0] == 403
    assert (await patch(http, url, iid, [{"op": "add", "path": "/os_glance_x", "value": "x"}]))[0] == 403
    assert (await patch(http, url, iid, [{"op": "remove", "path": "/name"}]))[0] == 403
    assert (await patch(http, url, iid, [{"op": "replace", "path": "/disk_format", "value": "qcow2"}]))[0] == 403
    assert (await patch(http, url, iid, [{"op": "replace", "path": "/nope", "value": "x"}]))[0] == 409
    assert (await patch(http, url, iid, [], content_type="application/json"))[0] == 415
    # A failing operation leaves the earlier ones in the same request unapplied.
    status, _ = await patch(
        http,
        url,
        iid,
        [
            {"op": "replace", "path": "/name", "value": "half"},
            {"op": "remove", "path": "/missing"},
        ],
    )
    assert status == 409
    assert fake.get(iid)["name"] == "new"


async def test_protected_image_cannot_be_deleted(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """Deleting a protected image is 403 until it is unprotected."""
    iid = fake.add_image(b"x", protected=True)["id"]
    async with http.delete(f"{url}/v2/images/{iid}") as resp:
        assert resp.status == 403
    assert (await patch(http, url, iid, [{"op": "replace", "path": "/protected", "value": False}]))[0] == 200
    async with http.delete(f"{url}/v2/images/{iid}") as resp:
        assert resp.status == 204
    assert iid in fake.deleted and iid not in fake.images


async def test_tags_and_deactivation(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """Tags are added and removed one by one; deactivated images download for admins only."""
    iid = fake.add_image(DATA, visibility="public")["id"]
    async with http.put(f"{url}/v2/images/{iid}/tags/blue") as resp:
        assert resp.status == 204
    assert fake.get(iid)["tags"] == ["blue"]
    async with http.delete(f"{url}/v2/images/{iid}/tags/blue") as resp:
        assert resp.status == 204
    async with http.delete(f"{url}/v2/images/{iid}/tags/blue") as resp:
        assert resp.status == 404

    async with http.post(f"{url}/v2/images/{iid}/actions/deactivate", headers=OTHER) as resp:
        assert resp.status == 403
    async with http.post(f"{url}/v2/images/{iid}/actions/deactivate") as resp:
        assert resp.status == 204
    assert fake.get(iid)["status"] == "deactivated"
    async with http.get(f"{url}/v2/images/{iid}/file", headers=OTHER) as resp:
        assert resp.status == 403
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        assert resp.status == 200 and await resp.read() == DATA
    async with http.post(f"{url}/v2/images/{iid}/actions/reactivate") as resp:
        assert resp.status == 204
    assert fake.get(iid)["status"] == "active"


# -- listing --------------------------------------------------------------------------------


async def test_pagination_next_links_keep_query_but_not_prefix(
    http: aiohttp.ClientSession, url: str, fake: FakeGlance
) -> None:
    """Pages of 25, newest first; ``next`` is a bare /v2 path keeping the query params."""
    ids = [fake.add_image(b"x")["id"] for _ in range(30)]
    fake.add_image(None)  # queued: filtered out below
    status, page1 = await get_json(http, url, "/v2/images?status=active")
    assert status == 200
    assert [i["id"] for i in page1["images"]] == ids[::-1][:25]
    next_link = page1["next"]
    assert next_link.startswith("/v2/images?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(next_link).query)
    assert query == {"status": ["active"], "marker": [ids[5]]}
    # The link must be joined to the endpoint, keeping its prefix.
    async with http.get(f"http://{urllib.parse.urlsplit(url).netloc}{next_link}") as resp:
        assert resp.status == 404
    status, page2 = await get_json(http, url, next_link)
    assert [i["id"] for i in page2["images"]] == ids[::-1][25:]
    assert "next" not in page2


async def test_full_last_page_is_followed_by_an_empty_page(
    http: aiohttp.ClientSession, url: str, fake: FakeGlance
) -> None:
    """A full page always has ``next``, even when it leads to an empty page."""
    for _ in range(4):
        fake.add_image(b"x")
    _, page1 = await get_json(http, url, "/v2/images?limit=2")
    _, page2 = await get_json(http, url, page1["next"])
    assert "limit=2" in page2["next"]
    _, page3 = await get_json(http, url, page2["next"])
    assert page3["images"] == [] and "next" not in page3


async def test_listing_rejects_bad_parameters(http: aiohttp.ClientSession, url: str) -> None:
    """Unknown markers, bad limits, sort keys and filter values are 400."""
    for query in (
        f"marker={uuid.uuid4()}",
        "limit=-1",
        "limit=x",
        "sort_key=owner",
        "os_hidden=maybe",
        "visibility=everyone",
        "member_status=maybe",
        "name=gt:x",
        "changes-since=2020-01-01",
    ):
        assert (await get_json(http, url, f"/v2/images?{query}"))[0] == 400, query


async def test_hidden_and_community_listing_rules(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """Hidden images only with os_hidden=true; foreign community only with a visibility filter."""
    mine = fake.add_image(b"x")["id"]
    hidden = fake.add_image(b"x", os_hidden=True)["id"]
    my_community = fake.add_image(b"x", visibility="community")["id"]
    their_community = fake.add_image(b"x", visibility="community", owner="p2")["id"]
    killed = fake.add_image(None, status="killed")["id"]

    async def listed(query: str = "") -> set[str]:
        _, body = await get_json(http, url, f"/v2/images?{query}")
        return {i["id"] for i in body["images"]}

    assert await listed() == {mine, my_community}
    assert await listed("os_hidden=true") == {hidden}
    assert await listed("visibility=all") == {mine, my_community, their_community}
    assert await listed("visibility=community") == {my_community, their_community}
    assert killed not in await listed("visibility=all")


async def test_shared_images_listed_to_members_by_status(
    http: aiohttp.ClientSession, url: str, fake: FakeGlance
) -> None:
    """A member lists a shared image once accepted; member_status filters only memberships."""
    shared = fake.add_image(b"x", visibility="shared")["id"]
    private = fake.add_image(b"x", visibility="private")["id"]
    public = fake.add_image(b"x", visibility="public")["id"]
    fake.add_member(shared, "other-project")

    async def listed(query: str = "") -> set[str]:
        _, body = await get_json(http, url, f"/v2/images?{query}", headers=OTHER)
        return {i["id"] for i in body["images"]}

    assert await listed() == {public}
    assert await listed("member_status=pending") == {public, shared}
    assert (await get_json(http, url, f"/v2/images/{shared}", headers=OTHER))[0] == 200
    assert (await get_json(http, url, f"/v2/images/{private}", headers=OTHER))[0] == 404
    async with http.put(
        f"{url}/v2/images/{shared}/members/other-project", json={"status": "accepted"}, headers=OTHER
    ) as resp:
        assert resp.status == 200
    assert await listed() == {public, shared}


async def test_member_endpoint_rules(http: aiohttp.ClientSession, url: str) -> None:
    """Members exist only on shared images; duplicates 409; only the member sets its status."""
    owner = {"X-Project-Id": "p1"}
    image = await create(http, url, headers=owner, visibility="shared")
    members = f"{url}/v2/images/{image['id']}/members"
    async with http.post(members, json={"member": "p2"}, headers=owner) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "pending"
    async with http.post(members, json={"member": "p2"}, headers=owner) as resp:
        assert resp.status == 409
    async with http.put(f"{members}/p2", json={"status": "accepted"}, headers=owner) as resp:
        assert resp.status == 403
    async with http.put(f"{members}/p2", json={"status": "accepted"}, headers={"X-Project-Id": "p2"}) as resp:
        assert resp.status == 200
    async with http.get(f"{members}/p2", headers=owner) as resp:
        assert (await resp.json())["status"] == "accepted"
    async with http.get(members, headers=owner) as resp:
        assert [m["member_id"] for m in (await resp.json())["members"]] == ["p2"]
    async with http.delete(f"{members}/p2", headers=owner) as resp:
        assert resp.status == 204

    private = await create(http, url, headers=owner, visibility="private")
    async with http.post(f"{url}/v2/images/{private['id']}/members", json={"member": "p2"}, headers=owner) as resp:
        assert resp.status == 403


# -- ranges and download faults -----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "content_range", "expected"),
    [
        ("bytes=2-5", 206, "bytes 2-5/10240", DATA[2:6]),
        ("bytes=10000-", 206, "bytes 10000-10239/10240", DATA[10000:]),
        ("bytes=-3", 206, "bytes 10237-10239/10240", DATA[-3:]),
        ("bytes=10000-99999", 206, "bytes 10000-10239/10240", DATA[10000:]),
        ("bytes=10240-", 416, None, None),
        ("bytes=0-1,4-5", 400, None, None),
        ("pages=1-2", 416, None, None),
    ],
)
async def test_range_requests(
    http: aiohttp.ClientSession,
    url: str,
    fake: FakeGlance,
    header: str,
    status: int,
    content_range: str | None,
    expected: bytes | None,
) -> None:
    """Single ranges give 206 with Content-Range; past the end 416; several ranges 400."""
    iid = fake.add_image(DATA)["id"]
    async with http.get(f"{url}/v2/images/{iid}/file", headers={"Range": header}) as resp:
        assert resp.status == status
        if expected is not None:
            assert resp.headers["Content-Range"] == content_range
            assert resp.headers["Content-MD5"] == hashlib.md5(DATA).hexdigest()
            assert await resp.read() == expected


async def test_range_ignored_when_not_honoured(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """With honour_range False a ranged download is answered 200 with the whole body."""
    iid = fake.add_image(DATA)["id"]
    fake.honour_range = False
    async with http.get(f"{url}/v2/images/{iid}/file", headers={"Range": "bytes=1000-"}) as resp:
        assert resp.status == 200 and "Content-Range" not in resp.headers
        assert await resp.read() == DATA


async def test_download_of_queued_image_is_no_content(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """An image without data answers 204 to a download."""
    iid = fake.add_image(None)["id"]
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        assert resp.status == 204


async def test_cut_download_sends_n_bytes_then_closes(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """cut_download_after delivers exactly n bytes then drops the connection, once."""
    iid = fake.add_image(DATA)["id"]
    fake.faults.cut_download_after(iid, 1000)
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        assert resp.status == 200
        received, error = await read_until_error(resp)
    assert received == DATA[:1000] and error is not None
    assert fake.requests_matching("GET", "/file$")[-1].fault == "cut_download"
    async with http.get(f"{url}/v2/images/{iid}/file", headers={"Range": "bytes=1000-"}) as resp:
        assert await resp.read() == DATA[1000:]


async def test_hung_download_times_out_on_the_client(fake: FakeGlance, url: str) -> None:
    """hang_download_after stops sending but keeps the connection open."""
    iid = fake.add_image(DATA)["id"]
    fake.faults.hang_download_after(iid, 100)
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{url}/v2/images/{iid}/file") as resp:
        with pytest.raises(aiohttp.ServerTimeoutError):
            await resp.read()
    assert fake.requests_matching("GET", "/file$")[-1].fault == "hang_download"


async def test_slow_download_is_throttled(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """slow_download holds the transfer to about the requested rate."""
    iid = fake.add_image(DATA[:3000])["id"]
    fake.faults.slow_download(iid, 10_000)
    started = time.monotonic()
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        assert await resp.read() == DATA[:3000]
    assert time.monotonic() - started >= 0.25


async def test_flip_byte_corrupts_data_but_not_headers(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """flip_byte serves one wrong byte while Content-MD5 still names the true checksum."""
    iid = fake.add_image(DATA)["id"]
    fake.faults.flip_byte(iid, 5000)
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        body = await resp.read()
        assert resp.headers["Content-MD5"] == hashlib.md5(DATA).hexdigest()
    assert body[5000] == DATA[5000] ^ 0xFF
    assert body[:5000] == DATA[:5000] and body[5001:] == DATA[5001:]
    async with http.get(f"{url}/v2/images/{iid}/file", headers={"Range": "bytes=4999-5001"}) as r:
        assert await r.read() == bytes([DATA[4999], DATA[5000] ^ 0xFF, DATA[5001]])


# -- upload faults ------------------------------------------------------------------------


async def test_image_is_saving_while_upload_streams(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """The image reads ``saving`` while bytes arrive and ``active`` once they are all in."""
    iid = (await create(http, url))["id"]
    release = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield DATA[:5000]
        await release.wait()
        yield DATA[5000:]

    async with anyio.create_task_group() as tg:
        statuses: list[int] = []

        async def upload() -> None:
            statuses.append(await put_file(http, url, iid, body()))

        tg.start_soon(upload)
        await eventually(lambda: fake.images[iid].status == "saving")
        assert (await get_json(http, url, f"/v2/images/{iid}"))[1]["status"] == "saving"
        release.set()
    assert statuses == [204]
    assert fake.get(iid)["status"] == "active" and fake.data(iid) == DATA


async def test_dropped_upload_returns_image_to_queued(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """A client vanishing mid-upload leaves the image queued and uploadable again."""
    iid = (await create(http, url))["id"]

    async def body() -> AsyncIterator[bytes]:
        yield DATA[:5000]
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with anyio.create_task_group() as tg:
        tg.start_soon(put_file, http, url, iid, body(), {"Content-Length": str(len(DATA))})
        await eventually(lambda: fake.images[iid].status == "saving")
        tg.cancel_scope.cancel()
    await eventually(lambda: fake.images[iid].status == "queued")
    assert fake.get(iid)["size"] is None
    assert await put_file(http, url, iid, DATA) == 204


async def test_cut_upload_returns_image_to_queued(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """cut_upload_after drops the connection mid-upload; the image goes back to queued."""
    iid = (await create(http, url))["id"]
    fake.faults.cut_upload_after(iid, 4096)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(DATA), 1024):
            yield DATA[start : start + 1024]
            await anyio.sleep(0.005)

    with pytest.raises(aiohttp.ClientConnectionError):
        await put_file(http, url, iid, body())
    await eventually(lambda: fake.images[iid].status == "queued")
    assert fake.requests_matching("PUT", "/file$")[-1].fault == "cut_upload"
    assert await put_file(http, url, iid, DATA) == 204


async def test_upload_size_and_format_checks(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """A size unlike x-openstack-image-size is 400, raw bytes for qcow2 415; both stay queued."""
    raw = (await create(http, url))["id"]
    assert await put_file(http, url, raw, DATA, {"x-openstack-image-size": "5"}) == 400
    assert fake.get(raw)["status"] == "queued"

    qcow = (await create(http, url, disk_format="qcow2"))["id"]
    assert await put_file(http, url, qcow, DATA) == 415
    assert fake.get(qcow)["status"] == "queued"
    header = QCOW2_MAGIC + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", 1 << 30)
    assert await put_file(http, url, qcow, header + bytes(100)) == 204
    assert fake.get(qcow)["virtual_size"] == 1 << 30


# -- transient failures and auth ---------------------------------------------------------


async def test_fail_next_answers_503_with_retry_after(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """fail_next answers the canned status with Retry-After the given number of times."""
    fake.faults.fail_next("GET", r"^/v2/images$", times=2, retry_after=7)
    for _ in range(2):
        async with http.get(f"{url}/v2/images") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "7"
    async with http.get(f"{url}/v2/images") as resp:
        assert resp.status == 200
    assert [r.fault for r in fake.requests_matching("GET", "^/v2/images$")] == ["fail_next", "fail_next", None]


async def test_fail_next_nth_lets_earlier_requests_through(
    http: aiohttp.ClientSession, url: str, fake: FakeGlance
) -> None:
    """fail_next(nth=k) fails the kth matching request; each armed failure counts on its own."""
    fake.faults.fail_next("GET", r"^/v2/images$", nth=2)
    fake.faults.fail_next("GET", r"^/v2/images$", nth=4)
    fake.faults.fail_next("GET", r"^/v2/images/", nth=1)  # another path: not counted above
    for _ in range(5):
        async with http.get(f"{url}/v2/images") as resp:
            await resp.read()
    got = [r.fault for r in fake.requests_matching("GET", "^/v2/images$")]
    assert got == [None, "fail_next", None, "fail_next", None]


async def test_tokens_are_required_and_can_expire(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """Without a valid token /v2 is 401; an expired token stays invalid until re-issued."""
    fake.require_token = "t1"
    assert (await get_json(http, url, "/v2/images"))[0] == 401
    assert (await get_json(http, url, "/v2/images", {"X-Auth-Token": "t1"}))[0] == 200
    assert (await get_json(http, url, "/versions"))[0] == 200

    fake.faults.expire_token_once()
    assert (await get_json(http, url, "/v2/images", {"X-Auth-Token": "t1"}))[0] == 401
    assert (await get_json(http, url, "/v2/images", {"X-Auth-Token": "t1"}))[0] == 401
    fresh = fake.issue_token()
    assert (await get_json(http, url, "/v2/images", {"X-Auth-Token": fresh}))[0] == 200
    assert all("X-Auth-Token" not in r.headers for r in fake.requests)
    assert fake.requests[-1].request_id.startswith("req-")


async def test_stopped_server_refuses_then_returns_on_same_port(fake: FakeGlance) -> None:
    """FakeServer.stop refuses connections; start serves the same state on the same URL."""
    iid = fake.add_image(b"x")["id"]
    async with FakeServer(fake) as server, aiohttp.ClientSession() as http:
        url = server.url
        assert (await get_json(http, url, f"/v2/images/{iid}"))[0] == 200
        await server.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await get_json(http, url, f"/v2/images/{iid}")
        assert await server.start() == url
        assert (await get_json(http, url, f"/v2/images/{iid}"))[0] == 200


async def test_listen_ends_refusals_at_once_and_start_serves(fake: FakeGlance) -> None:
    """FakeServer.listen (synchronous) stops the refusals; a connection waits until start()."""
    async with FakeServer(fake) as server, aiohttp.ClientSession() as http:
        url = server.url
        await server.stop()
        with pytest.raises(aiohttp.ClientConnectorError):
            await get_json(http, url, "/v2/images")
        server.listen()
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.start)
            assert (await get_json(http, url, "/v2/images"))[0] == 200
        assert server.running and server.url == url


# -- multi-store --------------------------------------------------------------------------


async def test_copy_image_import_then_store_delete(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """copy-image adds a store in the background; store delete then removes one."""
    fake.import_delay = 0.05
    iid = fake.add_image(DATA, disk_format="raw", container_format="bare")["id"]
    imports = f"{url}/v2/images/{iid}/import"
    copy = {"method": {"name": "copy-image"}, "stores": ["slow"]}

    async with http.post(imports, json=copy) as resp:
        assert resp.status == 202
    assert fake.get(iid)["os_glance_importing_to_stores"] == "slow"
    async with http.post(imports, json=copy) as resp:
        assert resp.status == 409  # the import lock is held
    await fake.drain()
    image = fake.get(iid)
    assert image["stores"] == "fast,slow"
    assert image["os_glance_importing_to_stores"] == image["os_glance_failed_import"] == ""
    assert fake.data(iid, "slow") == DATA
    _, tasks = await get_json(http, url, f"/v2/images/{iid}/tasks")
    assert [t["status"] for t in tasks["tasks"]] == ["success"]

    async with http.post(imports, json=copy) as resp:
        assert resp.status == 400  # already there
    async with http.post(imports, json={**copy, "stores": ["cold"]}) as resp:
        assert resp.status == 409
    async with http.post(imports, json=copy, headers=OTHER) as resp:
        assert resp.status == 404  # the image is not visible to that project
    public = fake.add_image(DATA, visibility="public", disk_format="raw", container_format="bare")
    async with http.post(f"{url}/v2/images/{public['id']}/import", json=copy, headers=OTHER) as resp:
        assert resp.status == 403
    queued = await create(http, url)
    async with http.post(f"{url}/v2/images/{queued['id']}/import", json=copy) as resp:
        assert resp.status == 409

    async with http.delete(f"{url}/v2/stores/cold/{iid}") as resp:
        assert resp.status == 409
    async with http.delete(f"{url}/v2/stores/fast/{iid}") as resp:
        assert resp.status == 204
    assert fake.get(iid)["stores"] == "slow"
    async with http.delete(f"{url}/v2/stores/slow/{iid}") as resp:
        assert resp.status == 403  # the only store
    async with http.get(f"{url}/v2/images/{iid}/file") as resp:
        assert await resp.read() == DATA


async def test_failed_copy_marks_the_store(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """An injected copy failure lands in os_glance_failed_import and fails the task."""
    iid = fake.add_image(DATA, disk_format="raw", container_format="bare")["id"]
    fake.faults.fail_import("slow")
    async with http.post(
        f"{url}/v2/images/{iid}/import", json={"method": {"name": "copy-image"}, "stores": ["slow"]}
    ) as resp:
        assert resp.status == 202
    await fake.drain()
    image = fake.get(iid)
    assert image["stores"] == "fast" and image["os_glance_failed_import"] == "slow"
    assert [t["status"] for t in fake.tasks.values()] == ["failure"]


async def test_unfinished_import_is_cancelled_when_the_server_closes(fake: FakeGlance) -> None:
    """Closing the server cancels background imports, leaving nothing running."""
    fake.import_delay = 60
    iid = fake.add_image(DATA, disk_format="raw", container_format="bare")["id"]
    copy = {"method": {"name": "copy-image"}, "stores": ["slow"]}
    async with (
        serve(fake) as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v2/images/{iid}/import", json=copy) as resp,
    ):
        assert resp.status == 202
    await fake.drain()
    assert fake.get(iid)["stores"] == "fast"


async def test_helpers_reject_inconsistent_seeds() -> None:
    """Seeding refuses reused ids and unknown stores rather than building impossible state."""
    fake = FakeGlance()
    image = fake.add_image(b"x")
    with pytest.raises(ValueError):
        fake.add_image(b"x", id=image["id"])
    with pytest.raises(ValueError):
        fake.add_image(b"x", store="cold")


async def test_listing_filters_on_updated_at_as_glance(http: aiohttp.ClientSession, url: str, fake: FakeGlance) -> None:
    """updated_at=gte:/lt: with an ISO time filter the listing (a PATCH moves updated_at); a bare
    time is eq; an unknown operator or a bad time is 400 — as glance (Pike to 33) answers."""
    old = fake.add_image(DATA, name="old", updated_at="2020-01-01T00:00:00Z", created_at="2020-01-01T00:00:00Z")
    fake.add_image(DATA, name="new")

    async def names(query: str) -> Any:
        async with http.get(f"{url}/v2/images?{query}") as resp:
            return resp.status, sorted(i["name"] for i in (await resp.json())["images"]) if resp.status == 200 else None

    assert await names("updated_at=gte:2021-01-01T00:00:00Z") == (200, ["new"])
    assert await names("updated_at=lt:2021-01-01T00:00:00Z") == (200, ["old"])
    assert await names("updated_at=2020-01-01T00:00:00Z") == (200, ["old"])
    patch = [{"op": "replace", "path": "/name", "value": "old-renamed"}]
    async with http.patch(f"{url}/v2/images/{old['id']}", json=patch, headers={"Content-Type": PATCH}) as resp:
        assert resp.status == 200
    assert await names("updated_at=gte:2021-01-01T00:00:00Z") == (200, ["new", "old-renamed"])
    assert (await names("updated_at=after:2021-01-01T00:00:00Z"))[0] == 400
    assert (await names("created_at=gte:yesterday"))[0] == 400
