"""Copies into, out of and between Ceph-backed clouds, for real (the harness's one-node Ceph).

Every kind of image the other real tests copy arrives bit-exact with every attribute into an RBD
default store (glance "rbd") — from the glance 33 pair and from the old glance 27 — and out of an
RBD store; in Ceph the bytes sit in the pool as ``POOL/ID@snap``, the snapshot Nova and Cinder
clone.  A non-raw image bound for RBD is flagged ``not-raw-on-rbd`` (and converted by the way out,
glance-direct into a converting glance); ``put-unsized`` into rbd or s3 says what it costs; S3 and
Swift on RGW take copies and moves as they do elsewhere (glance_store 5.7.0's Swift bug included).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import seed

from .conftest import Ceph, OldGlance, Pair, SwiftStore
from .test_copy_real import assert_same, seed_catalog
from .test_oldcloud_real import CARRIED, PER_CLOUD
from .test_production_real import copy_into_swift_segments, move_into_swift

pytestmark = pytest.mark.realglance

MiB = seed.MiB
NOT_RAW = "not-raw-on-rbd"
FRESH = "clones at the destination start fresh"


def _tag() -> str:
    return os.urandom(3).hex()


def _copy(pair: Pair, dst: str, *flags: str) -> Any:
    return pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", dst, *flags)


def _assert_in_pool(ceph: Ceph, glance: seed.Glance, image_id: str, sha512: str, store: str = "ceph") -> str:
    """The image's bytes (``sha512``) are RBD image POOL/ID's protected snapshot; its ``POOL/ID@snap``."""
    image = glance.get(image_id)
    assert image is not None and image["stores"] == store
    snapshot = ceph.snapshot(image, store)
    assert snapshot.endswith(f"/{image_id}@snap")
    assert ceph.exported(snapshot) == (image["size"], sha512)
    return snapshot


def test_copy_every_kind_between_rbd_clouds_and_out_of_rbd(pair: Pair, ceph: Ceph) -> None:
    """The whole catalog (queued, 1 byte, qcow2, iso, hidden, protected, shared with members, 40
    properties, deactivated, another owner, unicode, an odd 17 MiB, …), its data in src's RBD store,
    lands in glance "rbd"'s default RBD store and in dst's file store: same ids, attributes, members
    and bytes, in RBD each a new image's snapshot (no parent: a copy, not a clone); qcow2 and iso are
    flagged not-raw-on-rbd into RBD (copied all the same), the summary says clones start fresh; a
    re-run is all skips."""
    tag = f"rbdcat-{_tag()}-"
    seeded = seed_catalog(pair.src, store="ceph", tag=tag, without=frozenset({"big-256mb", "in-slow-store"}))
    odd = seed.raw_image(17 * MiB + 5, 4201)
    big = pair.src.create(odd, store="ceph", name=f"{tag}odd-17mb", disk_format="raw", container_format="bare")
    seeded[big["id"]] = hashlib.sha512(odd).hexdigest()
    _assert_in_pool(ceph, pair.src, big["id"], seeded[big["id"]])  # the source's data is in RBD (all alike)
    names = ("--name", f"{tag}*", "--concurrency", "4")
    plan = _copy(pair, ceph.rbd_cloud, *names, "--dry-run")
    run = _copy(pair, ceph.rbd_cloud, *names)
    assert plan.returncode == 0 and run.returncode == 0, run.stdout + run.stderr
    assert run.report is not None and plan.report is not None
    for report in (plan.report, run.report):
        flagged = {e["name"].removeprefix(tag) for e in report["images"] if NOT_RAW in e["traps"]}
        assert flagged == {"qcow2-tagged", "iso-community"}, flagged
    assert (
        any(FRESH in note for note in run.report["summary"]["notes"])
        and "each image copied into RBD store 'ceph'" in run.stdout
    )
    assert {run.outcomes()[i] for i in seeded} == {"copied", "created"}
    assert_same(pair.src, ceph.rbd_glance, seeded)
    for image_id, sha in seeded.items():
        if sha is not None:
            snapshot = _assert_in_pool(ceph, ceph.rbd_glance, image_id, sha)
            assert ceph.rbd_json("info", snapshot.split("@")[0]).get("parent") is None
    again = _copy(pair, ceph.rbd_cloud, *names)
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}, again.stdout
    out_of = _copy(pair, "harness-dst", *names)
    assert out_of.returncode == 0, out_of.stdout + out_of.stderr
    assert out_of.report is not None and not any(e["traps"] for e in out_of.report["images"])
    assert out_of.report["summary"]["notes"] == []  # a file store: nothing to say about clones
    assert_same(pair.src, pair.dst, seeded)


def test_legacy_kinds_from_an_old_cloud_into_rbd(ceph: Ceph, old_glance: OldGlance, pair: Pair) -> None:
    """From glance 27 (single-store, file) into the RBD default store: every legacy kind that copies
    (md5 only, no hash, owner null, size null, location-only, hidden, community, shared, deactivated,
    protected) arrives bit-exact, verified as far as its record allows, its bytes in the pool."""
    legacy = old_glance.seed_legacy(size=2 * MiB + 7)
    ids = [arg for kind in CARRIED for arg in ("--image", legacy[kind].id)]
    run = pair.cli("copy", "--src-cloud", old_glance.cloud, "--dst-cloud", ceph.rbd_cloud, *ids, "--concurrency", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.report is not None
    by_id = {e["id"]: e for e in run.report["images"]}
    for kind, verification in CARRIED.items():
        item = legacy[kind]
        entry = by_id[item.id]
        assert (entry["outcome"], entry["verification"]) == ("copied", verification), (kind, entry["reason"])
        assert ceph.rbd_glance.sha512_of_data(item.id) == (item.data["size"], item.data["sha512"]), kind
        src, dst = old_glance.glance.get(item.id), ceph.rbd_glance.get(item.id)
        assert src is not None and dst is not None
        recomputed = {"checksum", "os_hash_algo", "os_hash_value", "virtual_size", "size", "owner"}
        keep = {k: v for k, v in src.items() if k not in PER_CLOUD | recomputed}
        assert {k: dst.get(k) for k in keep} == keep, kind
        _assert_in_pool(ceph, ceph.rbd_glance, item.id, item.data["sha512"])
    assert ceph.rbd_glance.members(legacy["shared"].id) == old_glance.glance.members(legacy["shared"].id)


def test_glance_direct_into_rbd_converts_a_qcow2_to_a_cloneable_raw(pair: Pair, ceph: Ceph) -> None:
    """The way out of not-raw-on-rbd: --upload-method glance-direct into glance "rbd" (image_conversion
    to raw) turns a real qcow2 into raw bytes in the pool; the snapshot clones; the plan's warning says
    it is raw only if the destination converts."""
    tag = f"conv-{_tag()}"
    qcow2 = seed.qemu_qcow2(24 * MiB, 5 * MiB, seed=4202)
    image = pair.src.create(qcow2.data, name=tag, disk_format="qcow2", container_format="bare")
    flags = ("--name", tag, "--upload-method", "glance-direct")
    plan = _copy(pair, ceph.rbd_cloud, *flags, "--dry-run")
    assert plan.returncode == 0 and plan.report is not None, plan.stderr
    (entry,) = plan.report["images"]
    assert entry["traps"] == [NOT_RAW] and "only if the destination converts" in entry["warnings"][0]
    run = _copy(pair, ceph.rbd_cloud, *flags)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.report is not None and run.report["images"][0]["converted"]["to"] == "raw"
    converted = ceph.rbd_glance.get(image["id"])
    assert converted is not None and converted["disk_format"] == "raw"
    snapshot = ceph.snapshot(converted, "ceph")
    assert ceph.exported(snapshot) == (qcow2.raw_size, qcow2.raw_sha512)
    child = f"{snapshot.split('/')[0]}/{tag}-child"
    ceph.cli("rbd", "clone", snapshot, child)  # what Nova does for an instance's disk
    ceph.cli("rbd", "rm", "--no-progress", child)


def _resize_warnings(pair: Pair) -> int:
    log = Path(pair.env["instances"]["dst"]["log"]).read_text(errors="replace")
    return log.count("doing resize-before-write")


def test_put_unsized_into_rbd_and_s3_says_its_cost_and_put_declares_the_size(pair: Pair, ceph: Ceph) -> None:
    """put-unsized into dst's rbd store and into its s3 store (RGW) warns at the start (and under the totals) with the
    store's cost (resize-before-write; the whole image in glance-api's memory) and still copies
    bit-exact; the default put into RBD makes glance_store log no resize-before-write, and a copy into
    s3 on RGW lands as an object of the image's size in its bucket."""
    tag = _tag()
    sizes = {"ceph": 9 * MiB + 1, "s3": 3 * MiB + 2}
    for store, words in (("ceph", "resize-before-write"), ("s3", "WHOLE into glance-api's memory")):
        image = pair.src.create(seed.raw_image(sizes[store], 4203), name=f"unsized-{store}-{tag}",
                                disk_format="raw", container_format="bare")  # fmt: skip
        before = _resize_warnings(pair)
        args = ("--name", f"unsized-{store}-{tag}", "--dst-store", store, "--upload-method", "put-unsized")
        run = _copy(pair, "harness-dst", *args)
        assert run.returncode == 0, run.stdout + run.stderr
        warning = f"warning: --upload-method put-unsized into store {store!r}"
        assert run.stdout.index(warning) < run.stdout.index("done: 1 images") < run.stdout.rindex(warning), run.stdout
        assert words in run.stdout
        assert pair.dst.sha512_of_data(image["id"]) == pair.src.sha512_of_data(image["id"])
        assert _resize_warnings(pair) == before + (store == "ceph")
    sized = pair.src.create(seed.raw_image(9 * MiB + 3, 4204), name=f"sized-{tag}", disk_format="raw",
                            container_format="bare")  # fmt: skip
    into_s3 = pair.src.create(seed.raw_image(5 * MiB + 3, 4205), name=f"sized-s3-{tag}", disk_format="raw",
                              container_format="bare")  # fmt: skip
    before = _resize_warnings(pair)
    for image, store in ((sized, "ceph2"), (into_s3, "s3")):
        run = _copy(pair, "harness-dst", "--image", image["id"], "--dst-store", store)
        assert run.returncode == 0 and "warning:" not in run.stdout + run.stderr, run.stdout
        assert pair.dst.sha512_of_data(image["id"]) == pair.src.sha512_of_data(image["id"])
    assert _resize_warnings(pair) == before
    _assert_in_pool(ceph, pair.dst, sized["id"], pair.src.sha512_of_data(sized["id"])[1], "ceph2")  # type: ignore[index]
    assert ceph.bucket(ceph.env["ceph"]["rgw"]["buckets"]["dst/s3"])[into_s3["id"]] == into_s3["size"]


def test_move_file_to_s3_on_rgw_then_copy_it_across(pair: Pair, ceph: Ceph) -> None:
    """src fast → cold (S3 on RGW) by copy-image, then a cross-cloud copy out of that bucket into dst's
    own s3 store: same bytes at each step, each an object in its store's bucket."""
    tag = f"s3mv-{_tag()}"
    images = [pair.src.create(seed.raw_image(2 * MiB + i, 4210 + i), name=f"{tag}-{i}", disk_format="raw",
                              container_format="bare") for i in range(2)]  # fmt: skip
    digests = {i["id"]: pair.src.sha512_of_data(i["id"]) for i in images}
    move = pair.cli(
        "move", "--cloud", "harness-src", "--from-store", "fast", "--to-store", "cold", "--name", f"{tag}-*"
    )
    assert move.returncode == 0, move.stdout + move.stderr
    buckets = ceph.env["ceph"]["rgw"]["buckets"]
    for image in images:
        assert (pair.src.get(image["id"]) or {})["stores"] == "cold"
        assert ceph.bucket(buckets["src/cold"])[image["id"]] == image["size"]
    run = _copy(pair, "harness-dst", "--name", f"{tag}-*", "--dst-store", "s3")
    assert run.returncode == 0, run.stdout + run.stderr
    for image in images:
        assert pair.dst.sha512_of_data(image["id"]) == digests[image["id"]]
        assert ceph.bucket(buckets["dst/s3"])[image["id"]] == image["size"]
    assert json.dumps(run.report).count("harness-secret") == 0  # RGW's S3 secret never in the report


def test_copy_into_swift_on_rgw_segments_big_images(pair: Pair, rgw_swift: SwiftStore) -> None:
    """Into Swift on RGW, as into real Swift: an image above large_object_size arrives bit-exact as
    segments (the tool declares no size), a small one as one object; a re-run is clean."""
    copy_into_swift_segments(pair, rgw_swift)


def test_move_file_to_swift_on_rgw_fails_by_copy_image_and_location_moves_it(pair: Pair, rgw_swift: SwiftStore) -> None:
    """glance_store 5.7.0's sized-segment bug on RGW as on Swift: copy-image moves a small image and
    fails the segmented one (reported with the way out, old store kept); --method location moves it."""
    move_into_swift(pair, rgw_swift)
