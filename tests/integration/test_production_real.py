"""Production destinations for real: a Swift store (glance_store 5.7.0, segmented uploads), a
converting glance (image_conversion to raw, glance-direct), and two real Keystones.

Uses the harness's components (see harness/README.md): the keystone-less dst glance's ``swift``
store, the ``convert`` glance, and ks-src/ks-dst behind their own Keystone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import seed

from asyncmigrate import copy_images, load_cloud
from asyncmigrate.config import CopyConfig
from asyncmigrate.progress import Event, ImageDone

from .conftest import Converting, KeystoneClouds, Pair, SwiftStore

pytestmark = pytest.mark.realglance

MiB = seed.MiB


def _digest_of(glance: seed.Glance, image_id: str) -> tuple[int, str] | None:
    return glance.sha512_of_data(image_id)


def _secrets(env: dict[str, Any]) -> list[str]:
    """Every password/key of the harness that must never reach an output."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and re.search(r"password|secret|key$", key) and len(value) >= 8:
            found.append(value)

    walk({k: v for k, v in env.items() if k in ("keystone", "swift", "ceph")})
    return found


# -- Swift ------------------------------------------------------------------------------------


def test_copy_into_a_swift_store_segments_big_images(pair: Pair, swift_store: SwiftStore) -> None:
    """An image above the store's large_object_size arrives bit-exact in Swift as segments (uploaded
    without a declared size); a small one as one object, sized; a re-run is clean."""
    copy_into_swift_segments(pair, swift_store)


def copy_into_swift_segments(pair: Pair, swift_store: SwiftStore) -> None:
    """The copy into a swift-driver store (real Swift or RGW's Swift API), checked object by object."""
    tag = os.urandom(3).hex()
    big_size = swift_store.large_object_size * 2 + 12_345
    big = pair.src.create(
        seed.raw_image(big_size, 41), name=f"swift-big-{tag}", disk_format="raw", container_format="bare"
    )
    small = pair.src.create(
        seed.raw_image(1 * MiB, 42), name=f"swift-small-{tag}", disk_format="raw", container_format="bare"
    )
    args = ("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--dst-store", swift_store.store)
    run = pair.cli(*args, "--name", f"swift-*-{tag}")
    assert run.returncode == 0, run.stderr
    assert run.outcomes() == {big["id"]: "copied", small["id"]: "copied"}
    assert run.report is not None and run.report["summary"]["clouds"]["destination"]["upload_method"] == "put-unsized"
    for image in (big, small):
        assert _digest_of(pair.dst, image["id"]) == _digest_of(pair.src, image["id"])
        assert (pair.dst.get(image["id"]) or {})["stores"] == swift_store.store
    big_objects = swift_store.objects(big["id"])
    assert len(big_objects) >= 3, big_objects  # a manifest and its segments
    assert len(swift_store.objects(small["id"])) == 1
    again = pair.cli(*args, "--name", f"swift-*-{tag}")
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}


def test_move_file_to_swift_says_why_copy_image_fails_and_location_moves_it(
    pair: Pair, swift_store: SwiftStore
) -> None:
    """dst main (file) → swift: a small image moves by copy-image; a segmented one fails there
    (glance_store 5.7.0) and is reported with its cause and way out, old store kept; --method
    location then moves it bit-exact; no Swift key reaches any output."""
    move_into_swift(pair, swift_store)


def move_into_swift(pair: Pair, swift_store: SwiftStore) -> None:
    """The move main → a swift-driver store (real Swift or RGW's Swift API) and its way out."""
    tag = os.urandom(3).hex()
    small = pair.dst.create(
        seed.raw_image(2 * MiB, 43), name=f"mv-small-{tag}", disk_format="raw", container_format="bare", store="main"
    )
    big_size = swift_store.large_object_size + 3 * MiB
    big = pair.dst.create(
        seed.raw_image(big_size, 44), name=f"mv-big-{tag}", disk_format="raw", container_format="bare", store="main"
    )
    before = {i["id"]: _digest_of(pair.dst, i["id"]) for i in (small, big)}
    to = swift_store.store
    args = ("move", "--cloud", "harness-dst", "--from-store", "main", "--to-store", to, "--name", f"mv-*-{tag}")
    plan = pair.cli("plan", *args, "--output", "json", report=False)
    traps = {i["id"]: i["traps"] for i in json.loads(plan.stdout)["images"]}
    assert traps == {small["id"]: [], big["id"]: ["copy-image-into-swift"]}, plan.stdout + plan.stderr
    first = pair.cli(*args, "-v")
    assert first.returncode == 1 and first.report is not None
    entries = {e["id"]: e for e in first.report["images"]}
    assert entries[small["id"]]["outcome"] == "moved"
    failed = entries[big["id"]]
    assert failed["outcome"] == "failed" and failed["attempts"] == 1, failed
    assert "--method location" in failed["reason"] and "LP #2136857" in failed["reason"]
    assert (pair.dst.get(big["id"]) or {})["stores"] == "main"

    second = pair.cli(*args, "--method", "location", "-v")
    assert second.returncode == 0, second.stderr
    assert second.outcomes()[big["id"]] == "moved"
    moved = next(e for e in second.report["images"] if e["id"] == big["id"])  # type: ignore[index]
    assert moved["carrier"] and f"carrier {moved['carrier']}" in moved["reason"]
    assert f"os_glance_failed_import still names {to}" in moved["reason"] and "it stays" in moved["reason"]
    for image in (small, big):
        moved = pair.dst.get(image["id"]) or {}
        assert moved["stores"] == to and _digest_of(pair.dst, image["id"]) == before[image["id"]]
    everything = first.stdout + first.stderr + second.stdout + second.stderr + json.dumps(second.report)
    for secret in _secrets(pair.env):
        assert secret not in everything


def test_a_location_moved_image_moves_on_and_its_carrier_leaves_with_it(pair: Pair, swift_store: SwiftStore) -> None:
    """main → swift by location, then swift → main by copy-image: the carrier (which shares the
    Swift object the second move deletes) is retired first, so no image is left without its
    data; the reports name the carrier, and the download check says it read main before the
    delete of swift."""
    tag = os.urandom(3).hex()
    data = seed.raw_image(2 * MiB + 7, 45)
    image = pair.dst.create(data, name=f"on-{tag}", disk_format="raw", container_format="bare", store="main")
    to_swift = ("move", "--cloud", "harness-dst", "--from-store", "main", "--to-store", "swift", "--image", image["id"])
    first = pair.cli(*to_swift, "--method", "location")
    assert first.returncode == 0, first.stdout + first.stderr
    (carrier,) = [i["id"] for i in pair.dst.all_images() if i.get("asyncmigrate_carrier_for") == image["id"]]
    assert len(swift_store.objects(carrier)) == 1
    back = ("move", "--cloud", "harness-dst", "--from-store", "swift", "--to-store", "main", "--image", image["id"])
    second = pair.cli(*back, "--verify-download")
    assert second.returncode == 0, second.stdout + second.stderr
    left = pair.dst.get(carrier)  # retired, or else still holding its data
    assert left is None or pair.dst.sha512_of_data(carrier) == (len(data), hashlib.sha512(data).hexdigest())
    (entry,) = first.report["images"]  # type: ignore[index]
    assert entry["carrier"] == carrier and f"carrier {carrier}" in entry["reason"]
    (entry,) = second.report["images"]  # type: ignore[index]
    assert entry["outcome"] == "moved" and entry["retired_carriers"] == [carrier], entry
    assert entry["download_check"]["how"] == "prefer" and entry["download_check"]["store"] == "main"
    assert pair.dst.get(carrier) is None and swift_store.objects(carrier) == []
    assert (pair.dst.get(image["id"]) or {})["stores"] == "main"
    assert pair.dst.sha512_of_data(image["id"]) == (len(data), hashlib.sha512(data).hexdigest())


def test_a_carrier_left_without_data_by_an_earlier_move_is_retired(pair: Pair, swift_store: SwiftStore) -> None:
    """The state an earlier version left (the image moved off swift by a store delete, its carrier
    active there with its Swift object gone) is found when swift is emptied: the carrier is
    retired and named; the image is untouched."""
    tag = os.urandom(3).hex()
    data = seed.raw_image(MiB + 3, 46)
    image = pair.dst.create(data, name=f"left-{tag}", disk_format="raw", container_format="bare", store="main")
    base = ("move", "--cloud", "harness-dst", "--image", image["id"])
    assert pair.cli(*base, "--from-store", "main", "--to-store", "swift", "--method", "location").returncode == 0
    (carrier,) = [i["id"] for i in pair.dst.all_images() if i.get("asyncmigrate_carrier_for") == image["id"]]
    assert pair.cli(*base, "--from-store", "swift", "--to-store", "main", "--keep-source").returncode == 0
    assert pair.dst.request("DELETE", f"/v2/stores/swift/{image['id']}")[0] == 204  # as the earlier version did
    assert swift_store.objects(carrier) == [] and (pair.dst.get(carrier) or {})["status"] == "active"
    # (the carrier's name is "asyncmigrate carrier of left-…": the glob takes it and the image only)
    run = pair.cli(
        "move", "--cloud", "harness-dst", "--from-store", "swift", "--to-store", "archive", "--name", f"*left-{tag}"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    entries = {e["id"]: e for e in run.report["images"]}  # type: ignore[index]
    assert entries[carrier]["outcome"] == "retired" and image["id"] in entries[carrier]["reason"]
    assert pair.dst.get(carrier) is None
    assert pair.dst.sha512_of_data(image["id"]) == (len(data), hashlib.sha512(data).hexdigest())


# -- converting destination ---------------------------------------------------------------------


def test_glance_direct_into_a_converting_destination(pair: Pair, converting: Converting) -> None:
    """A real qcow2 (qemu-img) goes stage + glance-direct into the converting glance and is raw
    there, exactly the source's disk; the report says so; a re-run and verify agree."""
    tag = os.urandom(3).hex()
    disk = seed.qemu_qcow2(virtual_size=48 * MiB, data_size=6 * MiB, seed=45)
    image = pair.src.create(
        disk.data, name=f"qcow-{tag}", disk_format="qcow2", container_format="bare", os_distro="cirros"
    )
    args = ("--src-cloud", "harness-src", "--dst-cloud", converting.cloud, "--name", f"qcow-{tag}")
    run = pair.cli("copy", *args, "--upload-method", "glance-direct")
    assert run.returncode == 0, run.stderr
    (entry,) = run.report["images"] if run.report else []
    assert entry["outcome"] == "copied" and entry["verification"] == "sha512"
    assert entry["converted"] == {"from": "qcow2", "to": "raw", "size": disk.raw_size}
    dst = converting.glance.get(image["id"]) or {}
    assert (dst["disk_format"], dst["container_format"], dst["size"]) == ("raw", "bare", disk.raw_size)
    assert dst["os_hash_value"] == disk.raw_sha512 and dst["os_distro"] == "cirros"
    assert not [k for k in dst if k.startswith("asyncmigrate")]
    again = pair.cli("copy", *args, "--upload-method", "glance-direct")
    assert again.returncode == 0 and again.outcomes() == {image["id"]: "skipped"}
    verify = pair.cli("verify", *args)
    assert verify.returncode == 0 and verify.outcomes() == {image["id"]: "match"}, verify.stdout


def test_glance_direct_where_it_is_not_offered_is_refused(pair: Pair, keystone_clouds: KeystoneClouds) -> None:
    """ks-dst offers only copy-image: --upload-method glance-direct is one line, exit 2, nothing created."""
    image = pair.src.create(
        seed.raw_image(64 * 1024, 46), name=f"gd-{os.urandom(3).hex()}", disk_format="raw", container_format="bare"
    )
    run = pair.cli(
        "copy", "--src-cloud", "harness-src", "--dst-cloud", keystone_clouds.dst.cloud, "--image", image["id"],
        "--upload-method", "glance-direct",
    )  # fmt: skip
    assert run.returncode == 2 and "does not offer it" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert keystone_clouds.dst.glance().get(image["id"]) is None


# -- Keystone ------------------------------------------------------------------------------------


def _seed_ks(cloud: Any, tag: str, owners: dict[str, str]) -> dict[str, str]:
    """Images on a Keystone-guarded glance, one per owner project; {image id: owner}."""
    glance = cloud.glance()
    out = {}
    for i, (label, owner) in enumerate(owners.items()):
        image = glance.create(seed.raw_image(512 * 1024 + i, 47 + i), name=f"ks-{label}-{tag}", disk_format="raw",
                              container_format="bare", owner=owner, visibility="private")  # fmt: skip
        out[image["id"]] = owner
    return out


def test_copy_between_keystone_clouds_maps_projects_by_name(pair: Pair, keystone_clouds: KeystoneClouds) -> None:
    """Password auth at the source, an application credential at the destination (catalog, region,
    interface from clouds.yaml); owners mapped by project NAME resolved in the source Keystone."""
    src, dst = keystone_clouds.src, keystone_clouds.dst
    tag = os.urandom(3).hex()
    images = _seed_ks(
        src, tag, {"team": src.identity["team"]["project_id"], "admin": src.identity["admin"]["project_id"]}
    )
    mapping = pair.tmp / f"projects-{tag}.yaml"
    mapping.write_text(
        f"{src.identity['team']['project_name']}: {dst.identity['team']['project_id']}\n"
        f"{src.identity['admin']['project_name']}: {dst.identity['admin']['project_id']}\n"
    )
    args = (
        "--src-cloud",
        src.cloud,
        "--dst-cloud",
        dst.appcred_cloud,
        "--name",
        f"ks-*-{tag}",
        "--project-map",
        str(mapping),
    )
    # The pair's record remembers the mapping its copies used: this map gets a journal of its own.
    journal = ("--journal", str(pair.tmp / f"mapped-{tag}.sqlite"))
    run = pair.cli("copy", *args, *journal)
    assert run.returncode == 0, run.stderr
    owners = {src.identity["team"]["project_id"]: dst.identity["team"]["project_id"],
              src.identity["admin"]["project_id"]: dst.identity["admin"]["project_id"]}  # fmt: skip
    dst_glance, src_glance = dst.glance(), src.glance()
    for image_id, owner in images.items():
        arrived = dst_glance.get(image_id) or {}
        assert arrived["owner"] == owners[owner]
        assert dst_glance.sha512_of_data(image_id) == src_glance.sha512_of_data(image_id)
    assert pair.cli("verify", *args).returncode == 0
    assert set(pair.cli("copy", *args, *journal).outcomes().values()) == {"skipped"}


async def test_a_token_revoked_mid_run_is_renewed(
    pair: Pair, keystone_clouds: KeystoneClouds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool's source token is revoked after the first image: the next request gets 401, the
    tool re-authenticates once and every image arrives on its first attempt."""
    src, dst = keystone_clouds.src, keystone_clouds.dst
    tag = os.urandom(3).hex()
    owner = src.identity["admin"]["project_id"]
    images = _seed_ks(src, tag, {f"r{i}": owner for i in range(4)})
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", pair.env["clouds_yaml"])
    old, new = await load_cloud(src.cloud), await load_cloud(dst.cloud)
    revoked: list[str] = []

    def revoke_once(event: Event) -> None:
        if isinstance(event, ImageDone) and not revoked:
            token = old._headers["X-Auth-Token"]  # the token every later source request carries
            revoked.append(token)
            assert src.revoke(token) == 204

    config = CopyConfig(concurrency=1, image_ids=tuple(images), keep_owner=False)  # other projects at the dst
    with anyio.fail_after(300):
        run = await copy_images(config, old, new, emit=revoke_once)
    assert revoked and {(r.outcome, r.attempts) for r in run.images} == {("copied", 1)}
    assert old._headers["X-Auth-Token"] != revoked[0]
    log = Path(pair.env["instances"]["ks-src"]["log"]).read_text()
    assert re.search(r'" 401 ', log), "the revoked token was never refused"


async def test_a_transfer_outlives_its_token(
    pair: Pair, keystone_clouds: KeystoneClouds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The src Keystone's tokens live seconds: a download throttled past that lifetime outlives the
    token it started with (Glance checks a token when a request starts); the copy completes on its
    first attempt and the requests after it carry a renewed token."""
    src = keystone_clouds.src
    lifetime = int(src.identity["token_expiration"])
    rate = 64 * 1024  # the smallest --max-rate
    data = seed.raw_image(rate * (lifetime + 12), 52)
    image = src.glance().create(data, name=f"long-{os.urandom(3).hex()}", disk_format="raw", container_format="bare")
    # A second image, copied after the long one: its requests are the ones after the transfer (the long
    # image's own members are read before its copy starts).
    after = src.glance().create(b"a" * 1024, name=f"after-{os.urandom(3).hex()}", disk_format="raw",
                                container_format="bare")  # fmt: skip
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", pair.env["clouds_yaml"])
    old, new = await load_cloud(src.cloud), await load_cloud("harness-dst")
    at_start: list[str] = []

    def note_token(event: Event) -> None:
        if type(event).__name__ == "TransferStarted":
            at_start.append(old._headers["X-Auth-Token"])

    # Small chunks keep the throttle's burst (two chunks) small: the transfer lasts the lifetime and more.
    config = CopyConfig(
        image_ids=(image["id"], after["id"]), concurrency=1, keep_owner=False, max_rate=rate, chunk_size=64 * 1024
    )
    with anyio.fail_after(lifetime * 4 + 60):
        run = await copy_images(config, old, new, emit=note_token)
    (result,) = [r for r in run.images if r.id == image["id"]]
    assert (result.outcome, result.attempts) == ("copied", 1), result.reason
    assert result.seconds > lifetime
    assert at_start and old._headers["X-Auth-Token"] != at_start[0]
    assert pair.dst.sha512_of_data(image["id"]) == src.glance().sha512_of_data(image["id"])
