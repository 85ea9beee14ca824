"""The harness's production-like components answer and are wired as documented: two Keystones
guarding their glance, Swift as a store of "dst", and the converting glance."""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from typing import Any

import keystoneauth1.exceptions
import openstack.config
import pytest
import seed
from keystoneauth1 import session as ks_session

from .conftest import Converting, KeystoneClouds, SwiftStore

pytestmark = pytest.mark.realglance

MiB = seed.MiB


def _region(harness_env: dict[str, Any], cloud: str, **overrides: Any) -> Any:
    """A clouds.yaml entry loaded as the openstack CLI loads it."""
    with warnings.catch_warnings():
        # openstacksdk warns about its own deprecated metrics options while loading (as clouds.py does)
        warnings.filterwarnings("ignore", module=r"openstack\.")
        config = openstack.config.OpenStackConfig(config_files=[harness_env["clouds_yaml"]])
        return config.get_one(cloud, **overrides)


def _session(harness_env: dict[str, Any], cloud: str) -> ks_session.Session:
    """A keystoneauth1 session for a clouds.yaml entry."""
    return _region(harness_env, cloud).get_session()


def test_each_keystone_issues_tokens_for_admin_alice_and_app_credential(keystone_clouds: KeystoneClouds) -> None:
    """Password (admin, alice) and application-credential clouds of both Keystones authenticate
    and find their own glance in the catalog; the clouds' projects differ in id and name."""
    for cloud in (keystone_clouds.src, keystone_clouds.dst):
        for name in (cloud.cloud, cloud.appcred_cloud, cloud.alice_cloud):
            sess = _session(keystone_clouds.env, name)
            assert sess.get_endpoint(service_type="image", interface="public") == cloud.glance_url
            projects = (cloud.identity["admin"]["project_id"], cloud.identity["team"]["project_id"])
            assert sess.get_project_id() in projects
    src, dst = keystone_clouds.src.identity, keystone_clouds.dst.identity
    assert {src["admin"]["project_id"], src["team"]["project_id"]}.isdisjoint(
        {dst["admin"]["project_id"], dst["team"]["project_id"]}
    )
    assert src["team"]["project_name"] != dst["team"]["project_name"]


def test_keystone_guarded_glance_refuses_missing_foreign_and_revoked_tokens(keystone_clouds: KeystoneClouds) -> None:
    """ks-src answers 401 without a token, with a dst token and right after a revocation; 200 with its own."""
    src, dst = keystone_clouds.src, keystone_clouds.dst
    assert seed.Glance(src.glance_url).request("GET", "/v2/images")[0] == 401
    assert src.glance(dst.token()).request("GET", "/v2/images")[0] == 401
    token = src.token()
    assert src.glance(token).request("GET", "/v2/images")[0] == 200
    assert src.revoke(token) == 204
    assert src.glance(token).request("GET", "/v2/images")[0] == 401


def test_alice_is_not_admin(keystone_clouds: KeystoneClouds) -> None:
    """A non-admin token gets 403 where glance wants an admin (stores detail)."""
    alice = keystone_clouds.dst.glance(keystone_clouds.dst.token("alice"))
    assert alice.request("GET", "/v2/images")[0] == 200
    assert alice.request("GET", "/v2/info/stores/detail")[0] == 403


def test_keystoneauth_reauthenticates_after_revocation(keystone_clouds: KeystoneClouds) -> None:
    """A keystoneauth1 session whose token was revoked gets a 401, re-authenticates and succeeds."""
    sess = _session(keystone_clouds.env, keystone_clouds.src.cloud)
    url = keystone_clouds.src.glance_url + "/v2/images"
    assert sess.get(url).status_code == 200
    old = sess.get_token()
    assert keystone_clouds.src.revoke(old) == 204
    # keystoneauth1 retries a 401 once after invalidating its auth plugin.
    assert sess.get(url).status_code == 200
    assert sess.get_token() != old


def test_import_methods_match_each_profile(keystone_clouds: KeystoneClouds, converting: Converting) -> None:
    """ks-dst offers only copy-image; convert offers glance-direct and web-download."""
    ks_dst = keystone_clouds.dst.glance()
    assert ks_dst.ok("GET", "/v2/info/import")["import-methods"]["value"] == ["copy-image"]
    methods = converting.glance.ok("GET", "/v2/info/import")["import-methods"]["value"]
    assert methods == ["glance-direct", "web-download"]


def test_swift_store_is_listed_with_its_segment_size(swift_store: SwiftStore) -> None:
    """dst lists store "swift" of type swift, with the configured large_object_size."""
    stores = {s["id"]: s for s in swift_store.dst.ok("GET", "/v2/info/stores/detail")["stores"]}
    assert stores["swift"]["type"] == "swift"
    assert stores["swift"]["properties"]["large_object_size"] == swift_store.large_object_size
    assert stores["swift"]["properties"]["large_object_chunk_size"] == swift_store.chunk_size


def test_swift_store_keeps_small_images_whole_and_segments_unsized_large_ones(swift_store: SwiftStore) -> None:
    """A sized upload below the segment size is one Swift object; an unsized (chunked) upload
    above it is a manifest plus ceil(size / chunk) segments; both download bit-exact."""
    small = seed.raw_image(MiB, 61)
    image = swift_store.dst.create(small, store="swift", name="swift-small", disk_format="raw", container_format="bare")
    assert image["stores"] == "swift"
    assert len(swift_store.objects(image["id"])) == 1
    size = swift_store.large_object_size + MiB + 5
    big = seed.raw_image(size, 62)
    image = swift_store.dst.create(None, name="swift-big", disk_format="raw", container_format="bare")
    status, _ = swift_store.dst.request(
        "PUT", f"/v2/images/{image['id']}/file", raw=iter([big]), headers={"X-Image-Meta-Store": "swift"}
    )
    assert status == 204
    assert len(swift_store.objects(image["id"])) == 1 + math.ceil(size / swift_store.chunk_size)
    assert swift_store.dst.sha512_of_data(image["id"]) == (size, hashlib.sha512(big).hexdigest())


def test_converting_glance_turns_a_real_qcow2_into_its_raw_disk(converting: Converting) -> None:
    """glance-direct of a qemu-img qcow2 ends active as raw with the raw disk's size and hashes."""
    qcow2 = seed.qemu_qcow2(16 * MiB, 2 * MiB, seed=63)
    image = converting.glance.create(None, name="convert-me", disk_format="qcow2", container_format="bare")
    converting.glance.ok("PUT", f"/v2/images/{image['id']}/stage", raw=qcow2.data, size=len(qcow2.data))
    converting.glance.ok("POST", f"/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}})
    got = _wait_active(converting, image["id"])
    assert (got["disk_format"], got["size"], got["virtual_size"]) == ("raw", qcow2.raw_size, qcow2.raw_size)
    assert (got["checksum"], got["os_hash_value"]) == (qcow2.raw_md5, qcow2.raw_sha512)


def _wait_active(converting: Converting, image_id: str) -> dict[str, Any]:
    """Poll until the import ends (active, or a failure recorded); at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        image = converting.glance.get(image_id)
        assert image is not None
        if image["status"] == "active" or image.get("os_glance_failed_import"):
            return image
        if time.monotonic() > deadline:
            raise AssertionError(f"import still running: {image}")
        time.sleep(0.2)


def test_wrong_password_is_refused_by_the_real_keystone(keystone_clouds: KeystoneClouds) -> None:
    """A wrong password in a clouds.yaml-style auth is refused by the real Keystone (401)."""
    region = _region(keystone_clouds.env, keystone_clouds.src.cloud, auth={"password": "wrong"})
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        region.get_session().get_token()
