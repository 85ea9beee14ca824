"""Pre-flight traps (signed, encrypted, volume snapshots, property quota, no hash):
judged alike by plan, copy and verify, and nothing created for a blocked image."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from asyncmigrate import copy_images
from asyncmigrate.preflight import SIGNATURE_KEYS, PreflightOptions, judge
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config

CERT = "0a6f9d4e-2c8b-4d1e-9f3a-5b7c8d9e0f1a"
NEW_CERT = "7d1e2f3a-4b5c-4d6e-8f9a-0b1c2d3e4f5a"
SIGNED = {
    "img_signature": "c2lnbmF0dXJl",
    "img_signature_hash_method": "SHA-256",
    "img_signature_key_type": "RSA-PSS",
    "img_signature_certificate_uuid": CERT,
}
SNAPSHOT_BDM = json.dumps(
    [{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "5c1a", "boot_index": 0}]
)
BASE = {"id": "i", "status": "active", "size": 3, "checksum": "c" * 32, "name": "n"}


def test_signed_image_is_blocked_until_told_what_to_do() -> None:
    """Signed: blocked with the way out; --certificate-map rewrites the certificate; --strip-signature drops 4 keys."""
    image = {**BASE, **SIGNED}
    plain = judge(image, PreflightOptions())
    assert plain.blocking is not None and plain.blocking.kind == "signed"
    assert "--certificate-map" in plain.blocking.reason and "--strip-signature" in plain.blocking.reason
    mapped = judge(image, PreflightOptions(certificate_map={CERT: NEW_CERT}))
    assert mapped.blocking is None and mapped.image["img_signature_certificate_uuid"] == NEW_CERT
    assert mapped.rewritten == {"img_signature_certificate_uuid": (CERT, NEW_CERT)}
    other = judge(image, PreflightOptions(certificate_map={"someone-else": NEW_CERT}))
    assert other.blocking is not None and f"certificate {CERT} is not in --certificate-map" in other.blocking.reason
    stripped = judge(image, PreflightOptions(strip_signature=True))
    assert stripped.blocking is None and stripped.stripped == SIGNATURE_KEYS
    assert not set(SIGNATURE_KEYS) & set(stripped.image)
    assert image["img_signature"] == SIGNED["img_signature"]  # the source record is never changed


def test_encrypted_and_volume_snapshots_are_blocked_unless_included() -> None:
    """Encrypted images and volume-backed snapshots need an explicit flag to be copied."""
    encrypted = {**BASE, "cinder_encryption_key_id": "k1"}
    assert judge(encrypted, PreflightOptions()).blocking is not None
    assert judge(encrypted, PreflightOptions(include_encrypted=True)).blocking is None
    snapshot = {**BASE, "size": 0, "block_device_mapping": SNAPSHOT_BDM, "bdm_v2": "True"}
    blocked = judge(snapshot, PreflightOptions()).blocking
    assert blocked is not None and blocked.kind == "volume-snapshot" and "5c1a" in blocked.reason
    included = judge(snapshot, PreflightOptions(include_volume_snapshots=True))
    assert included.blocking is None and included.image["status"] == "queued" and included.image["size"] is None
    assert snapshot["status"] == "active"  # the source record is never changed
    assert judge({**BASE, "block_device_mapping": "[]"}, PreflightOptions()).traps == ()


def test_property_quota_warns_above_the_default_and_blocks_once_known() -> None:
    """Above 128 custom properties is a warning; above a known destination quota it blocks."""
    many = {**BASE, **{f"p{i}": "v" for i in range(130)}}
    (warning,) = judge(many, PreflightOptions()).traps
    assert warning.kind == "too-many-properties" and not warning.blocking
    blocked = judge(many, PreflightOptions(property_quota=100)).blocking
    assert blocked is not None and "allows 100" in blocked.reason


def test_images_without_a_hash_or_a_size_are_flagged_not_blocked() -> None:
    """No recorded hash (or size) is noted for the report, never a reason to skip the image."""
    no_hash = judge({**BASE, "checksum": None}, PreflightOptions())
    assert no_hash.kinds == ["no-hash"] and no_hash.blocking is None
    assert judge({**BASE, "size": None, "checksum": None}, PreflightOptions()).kinds == ["unverified"]
    assert judge({**BASE, "size": None}, PreflightOptions()).kinds == []  # the hash verifies it
    assert judge({**BASE, "status": "queued", "size": None, "checksum": None}, PreflightOptions()).kinds == []


async def test_blocked_images_create_nothing_and_fail_the_run(clouds: Clouds) -> None:
    """Signed, encrypted and volume-snapshot images are not attempted: no request names them; exit 1."""
    ok = clouds.src.add_image(os.urandom(5000), name="ok", disk_format="raw", container_format="bare")
    signed = clouds.src.add_image(os.urandom(5000), name="signed", disk_format="raw", container_format="bare", **SIGNED)
    encrypted = clouds.src.add_image(
        os.urandom(5000), name="enc", disk_format="raw", container_format="bare", cinder_encryption_key_id="k1"
    )
    snapshot = clouds.src.add_image(
        b"", name="snap", disk_format="raw", container_format="bare", block_device_mapping=SNAPSHOT_BDM, bdm_v2="True"
    )
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    outcomes = {r.id: (r.outcome, r.traps) for r in run.images}
    assert outcomes[ok["id"]] == ("copied", [])
    assert outcomes[signed["id"]] == ("blocked", ["signed"])
    assert outcomes[encrypted["id"]] == ("blocked", ["encrypted"])
    assert outcomes[snapshot["id"]] == ("blocked", ["volume-snapshot"])
    assert run.failed == 3 and int(run.exit_code) == 1
    for image in (signed, encrypted, snapshot):
        assert image["id"] not in clouds.dst.images
        assert not [r for r in clouds.dst.requests if image["id"] in r.path + r.query]
        assert not [r for r in clouds.src.requests if r.path.endswith(f"{image['id']}/file")]


async def test_strip_signature_and_certificate_map_copy_signed_images(clouds: Clouds) -> None:
    """--strip-signature copies without the 4 keys (reported); --certificate-map rewrites the uuid the destination
    verifies against (refused until that certificate exists there, then uploaded into); verify agrees."""
    a = clouds.src.add_image(os.urandom(7000), name="a", disk_format="raw", container_format="bare", **SIGNED)
    stripping = fast_config(preflight=PreflightOptions(strip_signature=True))
    run = await copy_images(stripping, clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "copied" and result.stripped == list(SIGNATURE_KEYS)
    assert not set(SIGNATURE_KEYS) & set(clouds.dst.get(a["id"]))
    assert {r.outcome for r in (await verify_catalogs(stripping, clouds.src_cloud, clouds.dst_cloud)).images} == {
        "match"
    }
    plain = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert "img_signature" in plain.images[0].reason  # without the flag the difference shows

    b = clouds.src.add_image(os.urandom(7000), name="b", disk_format="raw", container_format="bare", **SIGNED)
    mapping = fast_config(image_ids=(b["id"],), preflight=PreflightOptions(certificate_map={CERT: NEW_CERT}))
    refused = await copy_images(mapping, clouds.src_cloud, clouds.dst_cloud)  # not (yet) in its key manager
    assert refused.images[0].outcome == "failed" and refused.images[0].attempts == 1
    assert f"against certificate {NEW_CERT}" in refused.images[0].reason and "stays queued" in refused.images[0].reason
    assert clouds.dst.get(b["id"])["status"] == "queued"
    clouds.dst.certificates.add(NEW_CERT)  # the operator re-created it at the destination
    run = await copy_images(mapping, clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome) for r in run.images] == [("upload", "copied")]
    assert clouds.dst.get(b["id"])["img_signature_certificate_uuid"] == NEW_CERT
    assert clouds.src.get(b["id"])["img_signature_certificate_uuid"] == CERT


async def test_property_quota_413_is_reported_and_learned(clouds: Clouds) -> None:
    """A destination refusing too many properties (413) creates nothing; later such images are blocked up front."""
    clouds.dst.property_quota = 20
    big = [
        clouds.src.add_image(os.urandom(100), name=f"many-{i}", disk_format="raw", container_format="bare",
                             **{f"p{j}": "v" for j in range(25)})["id"]
        for i in range(3)
    ]  # fmt: skip
    run = await copy_images(fast_config(concurrency=1), clouds.src_cloud, clouds.dst_cloud)
    first, *rest = run.images  # in the order they were handled (one at a time)
    assert first.outcome == "failed" and "image_property_quota (it allows 20)" in first.reason
    assert all(r.outcome == "blocked" and "allows 20" in r.reason for r in rest) and len(rest) == 2
    assert not any(i in clouds.dst.images for i in big)
    assert len(clouds.dst.requests_matching("POST", r"^/v2/images$")) == 1


async def test_policy_refusal_at_create_names_the_cause(clouds: Clouds) -> None:
    """A 403 at create (property protection) is one image's failure with the destination's reason."""
    image = clouds.src.add_image(os.urandom(100), name="x", disk_format="raw", container_format="bare", x_secret="1")
    clouds.dst.faults.fail_next("POST", r"^/v2/images$", 403, retry_after=None, body="Property 'x_secret' is protected")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "Property 'x_secret' is protected" in result.reason
    assert "refuses an attribute" in result.reason and image["id"] not in clouds.dst.images


async def _cli(clouds: Clouds, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_plan_flags_traps_and_the_flags_exist_on_plan_verify_and_copy(clouds: Clouds, tmp_path: Path) -> None:
    """plan shows a blocked signed image with its way out; a bad --certificate-map is exit 2 everywhere."""
    clouds.src.add_image(os.urandom(100), name="signed", disk_format="raw", container_format="bare", **SIGNED)
    code, out, err = await _cli(clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--output", "json")
    assert code == 1, err  # a blocked row: the copy would exit 1 too
    (entry,) = json.loads(out)["images"]
    assert entry["action"] == "blocked" and "--strip-signature" in entry["reason"]
    good = tmp_path / "certs.yaml"
    good.write_text(f"{CERT}: {NEW_CERT}\n")
    code, out, err = await _cli(
        clouds, "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--output", "json",
        "--certificate-map", str(good),
    )  # fmt: skip
    assert code == 0 and json.loads(out)["images"][0]["action"] == "copy", err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    for command in (["plan", "copy"], ["verify"], ["copy", "--no-journal"]):
        code, _, err = await _cli(
            clouds, *command, "--src-cloud", "src", "--dst-cloud", "dst", "--certificate-map", str(bad)
        )
        assert code == 2 and "--certificate-map" in err and len(err.strip().splitlines()) == 1
    assert not clouds.dst.images


async def test_included_volume_snapshot_is_created_as_a_record_and_verifies(clouds: Clouds) -> None:
    """--include-volume-snapshots creates a 0-byte snapshot's record (queued, no upload); re-run and verify agree."""
    snapshot = clouds.src.add_image(
        b"", name="snap", disk_format="qcow2", container_format="bare", block_device_mapping=SNAPSHOT_BDM, bdm_v2="True"
    )
    config = fast_config(preflight=PreflightOptions(include_volume_snapshots=True))
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome, r.traps) for r in run.images] == [("create", "created", ["volume-snapshot"])]
    dst = clouds.dst.get(snapshot["id"])
    assert dst["status"] == "queued" and dst["block_device_mapping"] == SNAPSHOT_BDM
    assert not clouds.dst.requests_matching("PUT", ".*")
    assert [r.outcome for r in (await copy_images(config, clouds.src_cloud, clouds.dst_cloud)).images] == ["skipped"]
    assert [r.outcome for r in (await verify_catalogs(config, clouds.src_cloud, clouds.dst_cloud)).images] == ["match"]
