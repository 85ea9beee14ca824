"""The harness's old glance (27.1.1, OpenStack 2023.2) runs single-store, and legacy images seed as documented.

Plain HTTP against the real server, no asyncmigrate code: these tests pin what the harness gives
the migration tests — the facts harness/README.md ("The old glance") lists.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import OldGlance

pytestmark = pytest.mark.realglance

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
OTHER_PROJECT = "bbbbbbbbbbbb4bbb8bbbbbbbbbbbbbbb"


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with HTTP.open(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def listing(old: OldGlance, query: str, **headers: str) -> list[str]:
    """Ids of every image a listing returns, following ``next`` links."""
    ids: list[str] = []
    path: str | None = f"/v2/images{query}"
    while path:
        status, _, body = fetch(old.url + path, headers=headers)
        assert status == 200, body
        page = json.loads(body)
        ids += [image["id"] for image in page["images"]]
        path = page.get("next")
    return ids


@pytest.fixture(scope="module")
def legacy_set(old_glance: OldGlance) -> dict[str, Any]:
    """One seeded image of every legacy kind."""
    return old_glance.seed_legacy()


def test_versions_document_is_glance_27_single_store(old_glance: OldGlance) -> None:
    """/versions lists v2.15 as CURRENT and only 2.9, 2.7 … 2.0 below it (no 2.8, 2.10–2.13: no multi-store)."""
    status, _, body = fetch(f"{old_glance.url}/versions")
    versions = json.loads(body)["versions"]
    assert status == 200
    assert [(v["id"], v["status"]) for v in versions] == [("v2.15", "CURRENT")] + [
        (f"v2.{n}", "SUPPORTED") for n in (9, 7, 6, 5, 4, 3, 2, 1, 0)
    ]
    assert {link["href"] for v in versions for link in v["links"]} == {f"{old_glance.url}/v2/"}


def test_store_discovery_answers_404_single_store(old_glance: OldGlance) -> None:
    """/v2/info/stores and /v2/info/stores/detail answer 404 "Multi backend is not supported at this site"."""
    for path in ("/v2/info/stores", "/v2/info/stores/detail"):
        status, headers, body = fetch(old_glance.url + path, headers={"Accept": "application/json"})
        assert status == 404
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["message"].startswith("Multi backend is not supported at this site.")
    status, _, body = fetch(f"{old_glance.url}/v2/info/import")
    assert status == 200
    assert json.loads(body)["import-methods"]["value"] == ["glance-direct", "web-download"]


def test_images_have_locations_but_no_stores(legacy_set: dict[str, Any]) -> None:
    """An uploaded image shows one file:// location with empty metadata and no `stores` key."""
    shows = legacy_set["modern"].shows
    assert "stores" not in shows
    assert [loc["metadata"] for loc in shows["locations"]] == [{}]
    assert shows["locations"][0]["url"].startswith("file://")


def test_head_on_image_data_is_not_allowed(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """HEAD …/file answers 405 with Allow: GET, PUT; the v2 locations API does not exist yet (404)."""
    image_id = legacy_set["modern"].id
    status, headers, _ = fetch(f"{old_glance.url}/v2/images/{image_id}/file", method="HEAD")
    assert (status, headers["Allow"]) == (405, "GET, PUT")
    status, _, _ = fetch(f"{old_glance.url}/v2/images/{image_id}/locations")
    assert status == 404


# kind -> fields GET /v2/images/{id} shows on glance 27.1.1 (None: JSON null); "<md5>"/"<sha512>": the data's digest
SHOWS: dict[str, dict[str, Any]] = {
    "modern": {"status": "active", "checksum": "<md5>", "os_hash_algo": "sha512", "os_hash_value": "<sha512>"},
    "md5_only": {"status": "active", "checksum": "<md5>", "os_hash_algo": None, "os_hash_value": None},
    "no_hash": {"status": "active", "checksum": None, "os_hash_algo": None, "os_hash_value": None},
    "owner_null": {"status": "active", "owner": None, "checksum": "<md5>", "os_hash_algo": "sha512"},
    "size_null": {"status": "active", "size": None, "checksum": "<md5>", "os_hash_value": "<sha512>"},
    "location_only": {"status": "active", "checksum": None, "os_hash_algo": None, "virtual_size": None},
    "volume_snapshot": {"status": "active", "size": 0, "disk_format": "qcow2", "virtual_size": None, "bdm_v2": "True"},
    "hidden": {"os_hidden": True},
    "community": {"visibility": "community", "owner": OTHER_PROJECT},
    "private_other_owner": {"visibility": "private", "owner": OTHER_PROJECT},
    "deactivated": {"status": "deactivated", "checksum": "<md5>"},
    "protected": {"protected": True},
    "queued": {"status": "queued", "size": None, "checksum": None, "os_hash_algo": None},
}


@pytest.mark.parametrize("kind", sorted(SHOWS))
def test_legacy_kind_shows_as_documented(legacy_set: dict[str, Any], kind: str) -> None:
    """Each legacy kind's image shows the documented fields (hashes null where the kind says so)."""
    item = legacy_set[kind]
    for key, want in SHOWS[kind].items():
        if want in ("<md5>", "<sha512>"):
            want = item.data[want.strip("<>")]
        assert item.shows[key] == want, key
    if item.data is not None and SHOWS[kind].get("size", "") is not None:
        assert item.shows["size"] == item.data["size"]


def test_special_properties_survive_on_the_source(legacy_set: dict[str, Any]) -> None:
    """Signed, encrypted, volume-snapshot and many-property images keep their properties as given."""
    signed = legacy_set["signed"].shows
    assert {k: v for k, v in signed.items() if k.startswith("img_signature")} == {
        "img_signature": "c2lnbmF0dXJlLW9mLWFuLW9sZC1jbG91ZA==",
        "img_signature_hash_method": "SHA-256",
        "img_signature_key_type": "RSA-PSS",
        "img_signature_certificate_uuid": "d3d3d3d3-d3d3-4d3d-8d3d-d3d3d3d3d3d3",
    }
    assert signed["status"] == "active"
    encrypted = legacy_set["encrypted"].shows
    assert encrypted["cinder_encryption_key_deletion_policy"] == "on_image_deletion"
    assert len(encrypted["cinder_encryption_key_id"]) == 36
    snapshot = legacy_set["volume_snapshot"].shows
    (bdm,) = json.loads(snapshot["block_device_mapping"])
    assert (bdm["source_type"], bdm["destination_type"], bdm["boot_index"]) == ("snapshot", "volume", 0)
    assert snapshot["root_device_name"] == "/dev/vda"
    props = [k for k in legacy_set["many_properties"].shows if k.startswith("legacy_prop_")]
    assert len(props) == 130


def test_shared_image_has_a_member_of_each_status(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """The shared image has one pending, one accepted and one rejected member."""
    members = old_glance.glance.members(legacy_set["shared"].id)
    assert sorted(members.values()) == ["accepted", "pending", "rejected"]


# kind -> (status, Content-Length, Content-MD5) of GET …/file; "size"/"md5": the data's own
DOWNLOADS: dict[str, tuple[int, str | None, str | None]] = {
    "modern": (200, "size", "md5"),
    "md5_only": (200, "size", "md5"),
    "no_hash": (200, "size", None),
    "owner_null": (200, "size", "md5"),
    "size_null": (200, "None", "md5"),  # str(None): glance 27 writes the literal; aiohttp and curl reject it
    "location_only": (200, "size", None),
    "volume_snapshot": (200, "0", hashlib.md5(b"").hexdigest()),
    "deactivated": (200, "size", "md5"),  # for an admin
    "queued": (204, "0", None),
}


@pytest.mark.parametrize("kind", sorted(DOWNLOADS))
def test_download_headers_per_legacy_kind(legacy_set: dict[str, Any], kind: str) -> None:
    """Downloads carry Content-MD5 only when a checksum is recorded, and Content-Length: None when size is null."""
    item = legacy_set[kind]
    status, length, md5 = DOWNLOADS[kind]
    data = item.data or {}
    length = str(data["size"]) if length == "size" else length
    md5 = data["md5"] if md5 == "md5" else md5
    assert (item.download["status"], item.download["content_length"], item.download["content_md5"]) == (
        status,
        length,
        md5,
    )
    assert item.download["bytes"] == data.get("size", 0)


def test_range_request_on_old_glance(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """Range → 206 with Content-Range, and Content-MD5 is the WHOLE image's checksum, not the range's."""
    item = legacy_set["modern"]
    url = f"{old_glance.url}/v2/images/{item.id}/file"
    status, headers, body = fetch(url, headers={"Range": "bytes=10-19"})
    assert (status, len(body), headers["Content-Range"]) == (206, 10, f"bytes 10-19/{item.data['size']}")
    assert headers["Content-MD5"] == item.data["md5"]


def test_listing_queries_on_old_glance(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """Admin: hidden images listed only with os_hidden=true; others' community images only with visibility=all."""
    ids = {kind: item.id for kind, item in legacy_set.items()}
    default = set(listing(old_glance, ""))
    every = set(listing(old_glance, "?visibility=all"))
    hidden = set(listing(old_glance, "?os_hidden=true"))
    assert ids["hidden"] not in default | every
    assert ids["hidden"] in hidden and ids["modern"] not in hidden
    assert ids["community"] not in default and ids["community"] in every
    assert set(ids.values()) - {ids["hidden"]} <= every
    assert (every - default) & set(ids.values()) == {ids["community"]}  # all adds only community images here
    assert ids["community"] in set(listing(old_glance, "?visibility=community"))
    assert set(listing(old_glance, "?member_status=all")) == default  # an admin sees every shared image anyway


def test_pending_member_sees_shared_image_only_with_member_status(
    old_glance: OldGlance, legacy_set: dict[str, Any]
) -> None:
    """A non-admin pending member lists the shared image only with member_status=all (or pending)."""
    project = "c1c1c1c1c1c14c1c8c1c1c1c1c1c1c01"
    as_member = {"X-Project-Id": project, "X-Roles": "member,reader"}
    shared = legacy_set["shared"].id
    assert shared not in listing(old_glance, "", **as_member)
    assert shared in listing(old_glance, "?member_status=all", **as_member)


def test_next_link_is_relative_and_keeps_the_query(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """`next` is a relative /v2/images link carrying the query and a marker; limit=0 returns an empty page."""
    status, _, body = fetch(f"{old_glance.url}/v2/images?visibility=all&limit=2")
    page = json.loads(body)
    assert status == 200 and len(page["images"]) == 2
    assert page["next"] == f"/v2/images?visibility=all&limit=2&marker={page['images'][-1]['id']}"
    status, _, body = fetch(f"{old_glance.url}/v2/images?limit=0")
    assert json.loads(body)["images"] == []


def test_property_quota_is_enforced(old_glance: OldGlance) -> None:
    """More custom properties than the configured image_property_quota (256) → 413 on create."""
    props = {f"p{i:03d}": "x" for i in range(257)}
    status, body = old_glance.glance.request(
        "POST", "/v2/images", {"name": "too-many", "disk_format": "raw", "container_format": "bare", **props}
    )
    assert status == 413
    assert "Attempted: 257, Maximum: 256" in str(body)


def test_blob_server_serves_head_get_and_ranges(old_glance: OldGlance, legacy_set: dict[str, Any]) -> None:
    """The blob server answers HEAD with Content-Length, GET with the bytes, Range with 206, unknown names 404."""
    url = legacy_set["location_only"].shows["locations"][0]["url"]
    size = legacy_set["location_only"].data["size"]
    status, headers, body = fetch(url, method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(size), b"")
    status, _, body = fetch(url)
    assert status == 200 and hashlib.md5(body).hexdigest() == legacy_set["location_only"].data["md5"]
    status, headers, body = fetch(url, headers={"Range": "bytes=0-99"})
    assert (status, len(body), headers["Content-Range"]) == (206, 100, f"bytes 0-99/{size}")
    assert fetch(url + "-missing")[0] == 404


def test_clouds_yaml_names_the_old_glance(old_glance: OldGlance) -> None:
    """clouds.yaml has a `harness-old` cloud with auth_type none pointing at the old glance."""
    text = Path(old_glance.env["clouds_yaml"]).read_text()
    assert f"  {old_glance.cloud}:\n    auth_type: none\n    auth:\n      endpoint: {old_glance.url}\n" in text
    assert old_glance.cloud == "harness-old"
