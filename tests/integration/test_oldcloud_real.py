"""From an old cloud to a new one, for real: glance 27.1.1 (2023.2, single-store) → glance 33.

One image of every legacy kind the old glance holds (harness/legacy.py: md5-only, no hash,
owner null, size null, location-only, signed, encrypted, volume-backed snapshot, 130 properties,
hidden, community, shared, deactivated, protected, queued) is copied with the CLI; each arrives
identical and verified against what the source recorded, or is reported with its trap and the
way out — and nothing is left behind at the destination for a refused image.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import seed

from .conftest import OldGlance, Pair

pytestmark = pytest.mark.realglance

CARRIED = {  # kind -> what the report must say it was verified against
    "modern": "sha512",
    "md5_only": "md5",
    "no_hash": "size-only",
    "owner_null": "sha512",
    "size_null": "sha512",
    "location_only": "size-only",
    "hidden": "sha512",
    "community": "sha512",
    "shared": "sha512",
    "private_other_owner": "sha512",
    "deactivated": "sha512",
    "protected": "sha512",
}
BLOCKED = {"signed": "signed", "encrypted": "encrypted", "volume_snapshot": "volume-snapshot"}
# Glance keeps these per cloud; the rest of an image must be equal.
PER_CLOUD = {"created_at", "updated_at", "locations", "stores", "direct_url", "self", "file", "schema"}


@pytest.fixture(scope="module")
def legacy(old_glance: OldGlance) -> dict[str, Any]:
    """One image of every legacy kind on the old glance."""
    return old_glance.seed_legacy(size=3 * 1024 * 1024 + 7)


def _copy(pair: Pair, old: OldGlance, legacy: dict[str, Any], *flags: str, command: str = "copy") -> Any:
    ids = [arg for item in legacy.values() for arg in ("--image", item.id)]
    return pair.cli(*command.split(), "--src-cloud", old.cloud, "--dst-cloud", "harness-dst", *ids, *flags)


def _comparable(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if k not in PER_CLOUD}


def test_plan_names_both_api_versions_and_every_trap(pair: Pair, old_glance: OldGlance, legacy: dict[str, Any]) -> None:
    """plan shows glance 27's API 2.15 (single-store) and 33's, and flags each trap before anything is created."""
    run = _copy(pair, old_glance, legacy, "--output", "json", command="plan copy")
    assert run.returncode == 1, run.stderr  # blocked rows: the copy would exit 1 too
    plan = json.loads(run.stdout)
    assert plan["clouds"]["source"]["api_version"] == "2.15" and not plan["clouds"]["source"]["multi_store"]
    assert plan["clouds"]["destination"]["api_version"] == "2.17"
    actions = {i["id"]: (i["action"], i["traps"]) for i in plan["images"]}
    for kind, trap in BLOCKED.items():
        assert actions[legacy[kind].id] == ("blocked", [trap]), kind
    assert "too-many-properties" in actions[legacy["many_properties"].id][1]
    assert actions[legacy["no_hash"].id] == ("copy", ["no-hash"])
    assert all(pair.dst.get(item.id) is None for item in legacy.values())


def test_old_cloud_copies_identical_or_reported(pair: Pair, old_glance: OldGlance, legacy: dict[str, Any]) -> None:
    """Every legacy kind arrives bit-exact with its attributes and verification, or is reported; then the flags
    bring the trapped ones, a re-run is clean and verify passes."""
    first = _copy(pair, old_glance, legacy)
    assert first.returncode == 1, first.stderr  # blocked and refused images: not everything arrived
    assert first.report is not None
    by_id = {entry["id"]: entry for entry in first.report["images"]}
    for kind, verification in CARRIED.items():
        item = legacy[kind]
        entry = by_id[item.id]
        assert (entry["outcome"], entry["verification"]) == ("copied", verification), (kind, entry["reason"])
        src, dst = old_glance.glance.get(item.id), pair.dst.get(item.id)
        assert src is not None and dst is not None
        if kind == "owner_null":
            assert dst.pop("owner") == pair.env["admin_project_id"] and src.pop("owner") is None
        if kind == "size_null":
            assert src.pop("size") is None and dst.pop("size") == item.data["size"]
        if kind in ("no_hash", "location_only", "md5_only", "size_null"):
            for key in ("checksum", "os_hash_algo", "os_hash_value", "virtual_size"):
                src.pop(key, None), dst.pop(key, None)  # the destination hashed what it received
        assert _comparable(dst) == _comparable(src), kind
        assert pair.dst.sha512_of_data(item.id) == (item.data["size"], item.data["sha512"]), kind
    assert by_id[legacy["queued"].id]["outcome"] == "created"
    assert pair.dst.members(legacy["shared"].id) == old_glance.glance.members(legacy["shared"].id)
    for kind, trap in BLOCKED.items():
        entry = by_id[legacy[kind].id]
        assert (entry["outcome"], entry["traps"]) == ("blocked", [trap]), kind
        assert pair.dst.get(legacy[kind].id) is None, f"{kind}: something was created"
    many = by_id[legacy["many_properties"].id]
    assert many["outcome"] == "failed" and "image_property_quota (it allows 128)" in many["reason"]
    assert pair.dst.get(legacy["many_properties"].id) is None
    assert first.report["summary"]["size_only"] == 2

    flags = ("--strip-signature", "--include-encrypted", "--include-volume-snapshots")
    everything_but_quota = (*flags, "--exclude", legacy["many_properties"].id)
    second = _copy(pair, old_glance, legacy, *everything_but_quota)
    assert second.returncode == 0, second.stderr
    outcomes = second.outcomes()
    assert [outcomes[legacy[kind].id] for kind in BLOCKED] == ["copied", "copied", "created"]
    signed = {e["id"]: e for e in second.report["images"]}[legacy["signed"].id]
    assert sorted(signed["stripped"]) == sorted(k for k in legacy["signed"].shows if k.startswith("img_signature"))
    assert len(signed["stripped"]) == 4
    dst_signed = pair.dst.get(legacy["signed"].id)
    assert dst_signed is not None and not [k for k in dst_signed if k.startswith("img_signature")]
    snapshot = pair.dst.get(legacy["volume_snapshot"].id)  # a record only: glance 33 refuses the empty qcow2
    assert snapshot is not None and snapshot["status"] == "queued" and snapshot["bdm_v2"] == "True"
    assert snapshot["block_device_mapping"] == legacy["volume_snapshot"].shows["block_device_mapping"]

    third = _copy(pair, old_glance, legacy, *everything_but_quota)
    assert third.returncode == 0 and set(third.outcomes().values()) == {"skipped"}, third.stderr
    verify = _copy(pair, old_glance, legacy, *everything_but_quota, command="verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert {e["outcome"] for e in verify.report["images"]} == {"match"}


def test_certificate_map_reaches_the_destinations_signature_check(pair: Pair, old_glance: OldGlance) -> None:
    """--certificate-map rewrites the certificate id the destination verifies against (here it has no key
    manager, so its refusal names the mapped certificate); the image stays queued for a re-run."""
    legacy = old_glance.seed_legacy(size=64 * 1024)
    signed = legacy["signed"]
    new_cert = "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f"
    mapping = pair.tmp / "certs.yaml"
    mapping.write_text(f"{signed.shows['img_signature_certificate_uuid']}: {new_cert}\n")
    run = pair.cli(
        "copy", "--src-cloud", old_glance.cloud, "--dst-cloud", "harness-dst", "--image", signed.id,
        "--certificate-map", str(mapping),
    )  # fmt: skip
    assert run.returncode == 1 and run.report is not None
    (entry,) = run.report["images"]
    assert entry["outcome"] == "failed" and new_cert in entry["reason"], entry["reason"]
    assert "Signature verification failed" in entry["reason"] and "--strip-signature" in entry["reason"]
    dst = pair.dst.get(signed.id)
    assert dst is not None and dst["status"] == "queued" and dst["img_signature_certificate_uuid"] == new_cert


def test_copy_into_a_single_store_cloud(pair: Pair, old_glance: OldGlance) -> None:
    """glance 33 → the single-store glance 27: copied bit-exact (no store named); --dst-store is one line, exit 2."""
    tag = uuid.uuid4().hex[:6]
    images = [pair.src.create(seed.raw_image(2 * 1024 * 1024 + i, 60 + i), name=f"to-old-{tag}-{i}",
                              disk_format="raw", container_format="bare") for i in range(2)]  # fmt: skip
    args = ("copy", "--src-cloud", "harness-src", "--dst-cloud", old_glance.cloud, "--name", f"to-old-{tag}-*")
    refused = pair.cli(*args, "--dst-store", "fast")
    assert refused.returncode == 2 and "not multi-store" in refused.stderr
    assert all(old_glance.glance.get(i["id"]) is None for i in images)
    run = pair.cli(*args)
    assert run.returncode == 0, run.stderr
    assert run.report is not None and run.report["summary"]["clouds"]["destination"]["multi_store"] is False
    for image in images:
        assert old_glance.glance.sha512_of_data(image["id"]) == pair.src.sha512_of_data(image["id"])
    assert set(pair.cli(*args).outcomes().values()) == {"skipped"}
