"""The fake Glance behaves as the release its profile names, each fact taken from Glance's source.

Sources (openstack/glance at the profile's tag): ``glance/api/versions.py`` (version document),
``glance/api/v2/images.py`` (listing filters, image fields), ``glance/db/sqlalchemy/api.py``
(property filters, community rule), ``glance/api/v2/discovery.py`` and ``router.py`` (``/v2/info``
and which routes exist), ``glance/policies/base.py`` (locations API). The expected values below
are written out by hand from those files, not computed from the profiles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakeglance import (
    GLANCE_27,
    GLANCE_33,
    PIKE,
    PROFILES,
    QUEENS,
    ROCKY,
    STEIN,
    USSURI,
    FakeGlance,
    GlanceProfile,
    serve,
)

OTHER = "other-project"
Versions = list[tuple[str, str]]


def supported(*ids: str) -> Versions:
    """Version entries with status SUPPORTED."""
    return [(version_id, "SUPPORTED") for version_id in ids]


V2_7_TO_2_0 = supported("v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0")
V1 = [("v1.1", "DEPRECATED"), ("v1.0", "DEPRECATED")]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, path: str, **headers: str) -> tuple[int, Any]:
    """GET ``path``; returns (status, JSON body or text)."""
    async with http.get(f"{url}{path}", headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def listed(http: aiohttp.ClientSession, url: str, query: str = "") -> set[str]:
    """Ids of the images one listing page returns to the admin (400 fails the test)."""
    status, body = await get(http, url, f"/v2/images?limit=1000&{query}")
    assert status == 200, body
    return {image["id"] for image in body["images"]}


def seed_visibilities(fake: FakeGlance) -> dict[str, str]:
    """One image per kind an admin's listing must reach, by name; owned by the admin unless named."""
    return {
        "private": fake.add_image(b"a", visibility="private")["id"],
        "shared": fake.add_image(b"b", visibility="shared")["id"],
        "public": fake.add_image(b"c", visibility="public")["id"],
        "community": fake.add_image(b"d", visibility="community")["id"],
        "their private": fake.add_image(b"e", visibility="private", owner=OTHER)["id"],
        "their community": fake.add_image(b"f", visibility="community", owner=OTHER)["id"],
    }


# -- version documents ---------------------------------------------------------------------


MULTI = {"a": "store a"}


@pytest.mark.parametrize(
    ("profile", "stores", "expected"),
    [
        pytest.param(
            PIKE, None, [("v2.5", "CURRENT"), *supported("v2.4", "v2.3", "v2.2", "v2.1", "v2.0"), *V1], id="pike"
        ),
        pytest.param(QUEENS, None, [("v2.6", "CURRENT"), *V2_7_TO_2_0[2:], *V1], id="queens"),
        pytest.param(ROCKY, None, [("v2.7", "CURRENT"), *V2_7_TO_2_0[1:]], id="rocky"),
        pytest.param(ROCKY, MULTI, [("v2.8", "EXPERIMENTAL"), ("v2.7", "CURRENT"), *V2_7_TO_2_0[1:]], id="rocky-multi"),
        pytest.param(STEIN, None, [("v2.7", "CURRENT"), *V2_7_TO_2_0[1:]], id="stein"),
        pytest.param(USSURI, None, [("v2.9", "CURRENT"), *V2_7_TO_2_0], id="ussuri-single"),
        pytest.param(USSURI, MULTI, [("v2.1", "CURRENT"), *supported("v2.9", "v2.8"), *V2_7_TO_2_0], id="ussuri-multi"),
        pytest.param(GLANCE_27, None, [("v2.15", "CURRENT"), *supported("v2.9"), *V2_7_TO_2_0], id="glance-27"),
        pytest.param(
            GLANCE_27,
            MULTI,
            [("v2.15", "CURRENT"), *supported("v2.13", "v2.12", "v2.11", "v2.10", "v2.9", "v2.8"), *V2_7_TO_2_0],
            id="glance-27-multi",
        ),
        pytest.param(
            GLANCE_33, None, [*supported("v2.15", "v2.9"), ("v2.17", "CURRENT"), *V2_7_TO_2_0], id="glance-33-single"
        ),
        pytest.param(
            GLANCE_33,
            MULTI,
            [
                *supported("v2.15", "v2.13", "v2.12", "v2.11", "v2.10", "v2.9", "v2.8"),
                ("v2.17", "CURRENT"),
                *V2_7_TO_2_0,
            ],
            id="glance-33",
        ),
    ],
)
async def test_version_document_as_the_release_renders_it(
    http: aiohttp.ClientSession, profile: GlanceProfile, stores: dict[str, str] | None, expected: Versions
) -> None:
    """/versions lists exactly the release's entries in its order, Ussuri's 2.10 showing as "v2.1"."""
    async with serve(FakeGlance(profile=profile, stores=stores)) as url:
        status, body = await get(http, url, "/versions")
    assert status == 200
    assert [(v["id"], v["status"]) for v in body["versions"]] == expected


async def test_version_links_lose_the_prefix_up_to_train(http: aiohttp.ClientSession) -> None:
    """Up to Train the links are built from host_url and drop the path prefix; Ussuri keeps it."""
    async with serve(FakeGlance(profile=PIKE, prefix="/image")) as url:
        host = url.removesuffix("/image")
        _, body = await get(http, url, "/versions")
        assert {v["id"]: v["links"][0]["href"] for v in body["versions"]}.items() >= {
            "v2.5": f"{host}/v2/",
            "v1.0": f"{host}/v1/",
        }.items()
    async with serve(FakeGlance(profile=STEIN, prefix="/image")) as url:
        _, body = await get(http, url, "/versions")
        assert {v["links"][0]["href"] for v in body["versions"]} == {f"{url.removesuffix('/image')}/v2/"}
    async with serve(FakeGlance(profile=USSURI, prefix="/image")) as url:
        _, body = await get(http, url, "/versions")
        assert {v["links"][0]["href"] for v in body["versions"]} == {f"{url}/v2/"}


# -- listing ---------------------------------------------------------------------------------


async def test_queens_os_hidden_filter_matches_nothing(http: aiohttp.ClientSession) -> None:
    """On Queens os_hidden=false lists nothing; the plain listing has all but others' community images."""
    fake = FakeGlance(profile=QUEENS)
    ids = seed_visibilities(fake)
    async with serve(fake) as url:
        assert await listed(http, url, "os_hidden=false") == set()
        assert await listed(http, url, "os_hidden=true") == set()
        assert await listed(http, url) == set(ids.values()) - {ids["their community"]}
        assert await listed(http, url, "visibility=community") == {ids["community"], ids["their community"]}


async def test_queens_treats_os_hidden_as_a_custom_property(http: aiohttp.ClientSession) -> None:
    """Before Rocky os_hidden is a property: a filter matches its string, no value is a 400."""
    fake = FakeGlance(profile=QUEENS)
    plain = fake.add_image(b"a")["id"]
    tagged = fake.add_image(b"b", os_hidden="false")["id"]
    async with serve(fake) as url:
        assert await listed(http, url, "os_hidden=false") == {tagged}
        assert await listed(http, url, "os_hidden=maybe") == set()
        assert await listed(http, url) == {plain, tagged}
        assert (await get(http, url, f"/v2/images/{tagged}"))[1]["os_hidden"] == "false"


@pytest.mark.parametrize("profile", [PIKE, QUEENS, ROCKY])
async def test_visibility_all_is_refused_before_stein(http: aiohttp.ClientSession, profile: GlanceProfile) -> None:
    """Pike, Queens and Rocky answer visibility=all with 400 "Invalid visibility value: all"."""
    async with serve(FakeGlance(profile=profile)) as url:
        status, text = await get(http, url, "/v2/images?visibility=all")
    assert status == 400
    assert "Invalid visibility value: all" in text


async def test_rocky_hides_images_but_needs_two_visibility_passes(http: aiohttp.ClientSession) -> None:
    """On Rocky hidden images appear only with os_hidden=true; others' community only with visibility."""
    fake = FakeGlance(profile=ROCKY)
    ids = seed_visibilities(fake)
    hidden = fake.add_image(b"h", os_hidden=True)["id"]
    hidden_theirs = fake.add_image(b"i", os_hidden=True, visibility="community", owner=OTHER)["id"]
    async with serve(fake) as url:
        assert await listed(http, url) == set(ids.values()) - {ids["their community"]}
        assert await listed(http, url, "os_hidden=true") == {hidden}
        assert await listed(http, url, "visibility=community&os_hidden=true") == {hidden_theirs}
        status, _ = await get(http, url, "/v2/images?os_hidden=maybe")
        assert status == 400


async def test_stein_visibility_all_lists_every_non_hidden_image(http: aiohttp.ClientSession) -> None:
    """On Stein visibility=all adds others' community images; hidden ones still need os_hidden=true."""
    fake = FakeGlance(profile=STEIN)
    ids = seed_visibilities(fake)
    hidden = fake.add_image(b"h", os_hidden=True, visibility="community", owner=OTHER)["id"]
    async with serve(fake) as url:
        assert await listed(http, url, "visibility=all") == set(ids.values())
        assert await listed(http, url, "visibility=all&os_hidden=true") == {hidden}


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
async def test_unknown_keys_filter_on_custom_properties(http: aiohttp.ClientSession, profile: GlanceProfile) -> None:
    """In every release a key that is no column filters on the custom property of that name."""
    fake = FakeGlance(profile=profile)
    virtio = fake.add_image(b"a", hw_disk_bus="virtio")["id"]
    fake.add_image(b"b", hw_disk_bus="scsi")
    fake.add_image(b"c")
    async with serve(fake) as url:
        assert await listed(http, url, "hw_disk_bus=virtio") == {virtio}
        assert await listed(http, url, "os_distro=debian") == set()
        assert (await get(http, url, "/v2/images?member_status=all"))[0] == 200
        assert (await get(http, url, "/v2/images?member_status=maybe"))[0] == 400


@pytest.mark.parametrize("profile", [QUEENS, GLANCE_33], ids=["queens", "glance-33"])
async def test_pages_are_capped_at_api_limit_max(http: aiohttp.ClientSession, profile: GlanceProfile) -> None:
    """A limit above api_limit_max (1000) yields pages of 1000 with a next link."""
    fake = FakeGlance(profile=profile)
    for _ in range(1001):
        fake.add_image(None)
    async with serve(fake) as url:
        _, page = await get(http, url, "/v2/images?limit=5000")
        assert len(page["images"]) == 1000 and "limit=5000" in page["next"]
        _, rest = await get(http, url, page["next"])
        assert len(rest["images"]) == 1 and "next" not in rest


# -- image fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [PIKE, QUEENS])
async def test_images_before_rocky_have_no_hidden_or_multihash_fields(
    http: aiohttp.ClientSession, profile: GlanceProfile
) -> None:
    """Before Rocky images show checksum but no os_hidden/os_hash_*; those keys are string properties."""
    fake = FakeGlance(profile=profile)
    image = fake.add_image(b"data")
    assert image["checksum"] and not {"os_hidden", "os_hash_algo", "os_hash_value", "stores"} & image.keys()
    with pytest.raises(ValueError, match="no os_hidden"):
        fake.add_image(b"x", os_hidden=True)
    body = {"disk_format": "raw", "container_format": "bare"}
    async with serve(fake) as url:
        async with http.post(f"{url}/v2/images", json={**body, "os_hidden": True}) as resp:
            assert resp.status == 400
        async with http.post(f"{url}/v2/images", json={**body, "os_hash_value": "abc"}) as resp:
            assert resp.status == 201
            assert (await resp.json())["os_hash_value"] == "abc"


async def test_rocky_images_have_hidden_and_multihash_fields() -> None:
    """From Rocky images carry os_hidden, os_hash_algo and os_hash_value (single-store: no stores)."""
    image = FakeGlance(profile=ROCKY).add_image(b"data", os_hidden=True)
    assert image["os_hidden"] is True and image["os_hash_algo"] == "sha512" and image["os_hash_value"]
    assert "stores" not in image


# -- discovery and store routes ---------------------------------------------------------------


async def test_pike_offers_no_import_nor_store_info(http: aiohttp.ClientSession) -> None:
    """Pike's /v2/info/import is 404 by default, /v2/info/stores does not exist, create names no methods."""
    async with serve(FakeGlance(profile=PIKE)) as url:
        status, text = await get(http, url, "/v2/info/import")
        assert status == 404 and "Image import is not supported at this site." in text
        assert (await get(http, url, "/v2/info/stores"))[0] == 404
        body = {"disk_format": "raw", "container_format": "bare"}
        async with http.post(f"{url}/v2/images", json=body) as resp:
            assert resp.status == 201 and "OpenStack-image-import-methods" not in resp.headers


async def test_ussuri_multi_store_routes(http: aiohttp.ClientSession) -> None:
    """Multi-store Ussuri lists its stores and copy-image, has store delete, not stores/detail nor tasks."""
    fake = FakeGlance(profile=USSURI)
    image = fake.add_image(b"data")
    assert image["stores"] == "fast"
    async with serve(fake) as url:
        status, body = await get(http, url, "/v2/info/stores")
        assert status == 200 and [s["id"] for s in body["stores"]] == ["fast", "slow"]
        _, body = await get(http, url, "/v2/info/import")
        assert body["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]
        assert (await get(http, url, "/v2/info/stores/detail"))[0] == 404
        assert (await get(http, url, f"/v2/images/{image['id']}/tasks"))[0] == 404
        async with http.delete(f"{url}/v2/stores/fast/{image['id']}") as resp:
            assert resp.status == 403  # the route exists: the only store holding the image


async def test_glance_27_is_single_store_by_default(http: aiohttp.ClientSession) -> None:
    """Glance 27 as old clouds run it: /v2/info/stores 404, no stores on images, no locations API."""
    fake = FakeGlance(profile=GLANCE_27)
    image = fake.add_image(b"data")
    assert "stores" not in image and image["os_hash_algo"] == "sha512"
    async with serve(fake) as url:
        status, text = await get(http, url, "/v2/info/stores")
        assert status == 404 and "Multi backend is not supported at this site." in text
        assert (await get(http, url, f"/v2/images/{image['id']}/locations"))[0] == 404
        assert (await get(http, url, f"/v2/images/{image['id']}/tasks"))[0] == 200
        _, body = await get(http, url, "/v2/info/import")
        assert body["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]
        body = {"disk_format": "raw", "container_format": "bare"}
        async with http.post(f"{url}/v2/images", json=body) as resp:
            assert resp.status == 201 and "OpenStack-image-store-ids" not in resp.headers
            created = await resp.json()
        async with http.put(f"{url}/v2/images/{created['id']}/file", data=b"xyz") as resp:
            assert resp.status == 204
        assert "stores" not in fake.get(created["id"])


async def test_glance_33_locations_api_for_admin_and_service(http: aiohttp.ClientSession) -> None:
    """Glance 33 shows an image's locations to admin and service roles; others get 403 or 404."""
    fake = FakeGlance()
    iid = fake.add_image(b"data", owner="p1", visibility="private")["id"]
    path = f"/v2/images/{iid}/locations"
    async with serve(fake) as url:
        status, body = await get(http, url, path)
        assert status == 200
        assert body == [{"url": f"file:///var/lib/glance/fast/{iid}", "metadata": {"store": "fast"}}]
        assert (await get(http, url, path, **{"X-Project-Id": "p1", "X-Roles": "service"}))[0] == 200
        assert (await get(http, url, path, **{"X-Project-Id": "p1", "X-Roles": "member,reader"}))[0] == 403
        assert (await get(http, url, path, **{"X-Project-Id": "p2"}))[0] == 404
        async with http.post(f"{url}{path}", json={"url": "http://x"}) as resp:
            assert resp.status == 501


# -- construction ----------------------------------------------------------------------------


def test_profile_and_stores_must_agree() -> None:
    """The default is multi-store glance 33; stores on a release without multi-store are refused."""
    assert FakeGlance().profile is GLANCE_33 and FakeGlance().multi_store
    assert not FakeGlance(profile=GLANCE_27).multi_store
    assert FakeGlance(profile=GLANCE_27, stores={"a": ""}).multi_store
    with pytest.raises(ValueError, match="no multi-store"):
        FakeGlance(profile=QUEENS, stores={"a": ""})
    with pytest.raises(ValueError, match="no image import"):
        FakeGlance(profile=PIKE, import_methods=["glance-direct"])
