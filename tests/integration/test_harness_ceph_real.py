"""The harness's one-node Ceph is wired as documented: RBD stores whose uploads are cloneable
snapshots in their own pools, S3 stores that are buckets on RGW, and Swift on RGW behind Keystone."""

from __future__ import annotations

import hashlib
import math
import uuid

import pytest
import seed

from .conftest import Ceph, SwiftStore

pytestmark = pytest.mark.realglance

MiB = seed.MiB


def _types(glance: seed.Glance) -> dict[str, tuple[str, bool]]:
    listed = glance.ok("GET", "/v2/info/stores/detail")["stores"]
    return {s["id"]: (s["type"], bool(s.get("default"))) for s in listed}


def test_rbd_and_s3_stores_are_listed_with_their_types(ceph: Ceph) -> None:
    """src has rbd store ceph and s3 store cold; dst has rbd ceph and ceph2 and s3; glance "rbd"'s default is rbd."""
    src, dst, rbd = _types(ceph.src), _types(ceph.dst), _types(ceph.rbd_glance)
    assert src["ceph"] == ("rbd", False) and src["cold"] == ("s3", False)
    assert dst["ceph"] == ("rbd", False) and dst["ceph2"] == ("rbd", False) and dst["s3"] == ("s3", False)
    assert rbd == {"ceph": ("rbd", True)}
    assert len({ceph.pool("src"), ceph.pool("dst"), ceph.pool("dst", "ceph2"), ceph.pool("rbd")}) == 4


def test_an_upload_into_rbd_is_a_protected_snapshot_that_clones(ceph: Ceph) -> None:
    """An upload into dst's ceph2 is RBD image POOL/ID with protected snapshot snap, holding the exact
    bytes; the location is rbd://FSID/POOL/ID/snap; a clone of the snapshot works at once."""
    data = seed.raw_image(9 * MiB + 3, 4101)
    image = ceph.dst.create(data, store="ceph2", name="harness-rbd", disk_format="raw", container_format="bare")
    shown = ceph.dst.get(image["id"])
    assert shown is not None and shown["stores"] == "ceph2"
    snapshot = ceph.snapshot(shown, "ceph2")
    assert snapshot == f"{ceph.pool('dst', 'ceph2')}/{image['id']}@snap"
    assert ceph.exported(snapshot) == (len(data), hashlib.sha512(data).hexdigest())
    (snap,) = ceph.rbd_json("snap", "ls", snapshot.split("@")[0])
    assert snap["name"] == "snap" and snap["protected"] == "true"
    child = f"{ceph.pool('dst', 'ceph2')}/child-{uuid.uuid4().hex[:8]}"
    ceph.cli("rbd", "clone", snapshot, child)
    assert ceph.rbd_json("children", snapshot) == [{"pool": child.split("/")[0], "pool_namespace": "",
                                                    "image": child.split("/")[1]}]  # fmt: skip
    ceph.cli("rbd", "rm", "--no-progress", child)


def test_s3_stores_are_buckets_on_rgw(ceph: Ceph) -> None:
    """An upload into src's cold and dst's s3 is an object of that size in the store's own RGW bucket."""
    buckets = ceph.env["ceph"]["rgw"]["buckets"]
    for glance, where, store in ((ceph.src, "src", "cold"), (ceph.dst, "dst", "s3")):
        data = seed.raw_image(2 * MiB + 11, 4102)
        image = glance.create(data, store=store, name=f"harness-{store}", disk_format="raw", container_format="bare")
        shown = glance.get(image["id"])
        assert shown is not None and shown["stores"] == store
        bucket = buckets[f"{where}/{store}"]
        assert shown["locations"][0]["url"] == f"s3://{ceph.env['ceph']['rgw']['url'][7:]}/{bucket}/{image['id']}"
        assert ceph.bucket(bucket)[image["id"]] == len(data)
        assert glance.sha512_of_data(image["id"]) == (len(data), hashlib.sha512(data).hexdigest())


def test_swift_on_rgw_keeps_small_images_whole_and_segments_unsized_large_ones(rgw_swift: SwiftStore) -> None:
    """Through RGW's Swift API (Keystone tokens): a sized upload below the segment size is one
    object; an unsized one above it is a manifest plus ceil(size / chunk) segments; both bit-exact."""
    small = seed.raw_image(MiB, 4103)
    image = rgw_swift.dst.create(small, store="rgw", name="rgw-small", disk_format="raw", container_format="bare")
    assert rgw_swift.dst.sha512_of_data(image["id"]) == (len(small), hashlib.sha512(small).hexdigest())
    assert len(rgw_swift.objects(image["id"])) == 1
    size = rgw_swift.large_object_size + MiB + 5
    big = seed.raw_image(size, 4104)
    image = rgw_swift.dst.create(None, name="rgw-big", disk_format="raw", container_format="bare")
    status, _ = rgw_swift.dst.request(
        "PUT", f"/v2/images/{image['id']}/file", raw=iter([big]), headers={"X-Image-Meta-Store": "rgw"}
    )
    assert status == 204
    assert len(rgw_swift.objects(image["id"])) == 1 + math.ceil(size / rgw_swift.chunk_size)
    assert rgw_swift.dst.sha512_of_data(image["id"]) == (size, hashlib.sha512(big).hexdigest())
