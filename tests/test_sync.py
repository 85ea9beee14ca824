"""sync against two fake Glances: every kind of drift levelled with one PATCH,
no-change syncs in O(pages), removed images reported or deleted, the
destination's own images never touched, the record rebuilt after a lost journal."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import copy_images
from asyncmigrate.config import SyncConfig
from asyncmigrate.errors import UsageError
from asyncmigrate.identity import ProjectMap
from asyncmigrate.report import RunResult
from asyncmigrate.selection import Selection, shard_of
from asyncmigrate.sync import sync_images
from tests.conftest import FAST_RETRY, Clouds, fast_config

_PER_CLOUD = {"created_at", "updated_at", "stores", "locations", "direct_url"}
_IMAGE = re.compile(r"^/v2/images/[0-9a-f-]{36}$")


def sync_config(tmp_path: Path, **kw: Any) -> SyncConfig:
    """A SyncConfig with fast retries and a journal in ``tmp_path``."""
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("chunk_size", 64 * 1024)
    kw.setdefault("journal", tmp_path / "pair.sqlite")
    return SyncConfig(**kw)


def _add(clouds: Clouds, data: bytes | None = None, **attrs: Any) -> str:
    attrs.setdefault("disk_format", "raw")
    attrs.setdefault("container_format", "bare")
    return str(clouds.src.add_image(os.urandom(3000) if data is None else data, **attrs)["id"])


def _same(clouds: Clouds, ids: list[str]) -> None:
    for image_id in ids:
        src, dst = clouds.src.get(image_id), clouds.dst.get(image_id)
        dst = {k: (sorted(v) if k == "tags" else v) for k, v in dst.items() if k not in _PER_CLOUD}
        src = {k: (sorted(v) if k == "tags" else v) for k, v in src.items() if k not in _PER_CLOUD}
        assert dst == src, src["name"]
        want = {m: r.status for m, r in clouds.src.members.get(image_id, {}).items()}
        if src["visibility"] == "shared":
            assert {m: r.status for m, r in clouds.dst.members.get(image_id, {}).items()} == want, src["name"]


def _writes(clouds: Clouds, since: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in clouds.dst.requests[since:] if r.method != "GET"]


def _outcomes(run: RunResult) -> dict[str, str]:
    return {r.id: r.outcome for r in run.images}


async def _copied(clouds: Clouds, tmp_path: Path, ids: list[str]) -> None:
    run = await copy_images(fast_config(journal=tmp_path / "pair.sqlite"), clouds.src_cloud, clouds.dst_cloud)
    assert run.failed == 0 and {r.id for r in run.images} >= set(ids)


async def test_every_kind_of_drift_is_levelled_with_one_patch_each(clouds: Clouds, tmp_path: Path) -> None:
    """Rename, properties added/changed/removed, tags, min_disk/min_ram, visibility, os_hidden and
    protect/unprotect each cost the drifting image exactly one PATCH, and the copy equals the source."""
    ids = {
        "rename": _add(clouds, name="old-name"),
        "props": _add(clouds, name="props", os_distro="ubuntu", os_version="22.04", hw_disk_bus="ide"),
        "tags": _add(clouds, name="tags", tags=["a", "b"]),
        "minima": _add(clouds, name="minima", min_disk=1, min_ram=128),
        "visibility": _add(clouds, name="visibility", visibility="private"),
        "hidden": _add(clouds, name="hidden"),
        "protect": _add(clouds, name="protect"),
        "unprotect": _add(clouds, name="unprotect", protected=True),
        "untouched": _add(clouds, name="untouched", visibility="public"),
    }
    await _copied(clouds, tmp_path, list(ids.values()))
    src = clouds.src.images
    src[ids["rename"]].name = "new-name"
    src[ids["props"]].properties.update(os_version="24.04", hw_vif_model="virtio")
    del src[ids["props"]].properties["hw_disk_bus"]
    src[ids["tags"]].tags = ["b", "c"]
    src[ids["minima"]].min_disk, src[ids["minima"]].min_ram = 20, 4096
    src[ids["visibility"]].visibility = "public"
    src[ids["hidden"]].os_hidden = True
    src[ids["protect"]].protected = True
    src[ids["unprotect"]].protected = False
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    drifting = [v for k, v in ids.items() if k != "untouched"]
    assert _outcomes(run) == {**dict.fromkeys(drifting, "updated"), ids["untouched"]: "skipped"}
    assert int(run.exit_code) == 0
    _same(clouds, list(ids.values()))
    writes = _writes(clouds, before)
    assert Counter(writes) == Counter(("PATCH", f"/v2/images/{i}") for i in drifting)
    reads = [r.path for r in clouds.dst.requests[before:] if r.method == "GET" and _IMAGE.match(r.path)]
    assert sorted(reads) == sorted(f"/v2/images/{i}" for i in drifting)  # only drifting images are read
    patch = clouds.dst.requests_matching("PATCH", ids["props"])[-1]
    assert patch.headers["Content-Type"] == "application/openstack-images-v2.1-json-patch"
    by_id = {r.id: r for r in run.images}
    assert by_id[ids["rename"]].changes == {"name": ["old-name", "new-name"]}
    assert by_id[ids["props"]].changes == {
        "hw_disk_bus": ["ide", None],
        "hw_vif_model": [None, "virtio"],
        "os_version": ["22.04", "24.04"],
    }
    assert "name 'old-name' → 'new-name'" in by_id[ids["rename"]].reason

    again_from = len(clouds.dst.requests)
    again = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert set(_outcomes(again).values()) == {"skipped"}
    assert not _writes(clouds, again_from)


async def test_status_drift_deactivates_first_and_reactivates_last(clouds: Clouds, tmp_path: Path) -> None:
    """A deactivated source image is deactivated before its PATCH; a reactivated one is reactivated after it."""
    off = _add(clouds, name="to-deactivate")
    on = _add(clouds, name="to-reactivate", status="deactivated")
    await _copied(clouds, tmp_path, [off, on])
    assert clouds.dst.get(on)["status"] == "deactivated"
    clouds.src.images[off].status = "deactivated"
    clouds.src.images[off].name = "deactivated now"
    clouds.src.images[on].status = "active"
    clouds.src.images[on].min_ram = 512
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {off: "updated", on: "updated"}
    _same(clouds, [off, on])
    writes = _writes(clouds, before)
    mine = [w for w in writes if off in w[1]]
    assert mine == [("POST", f"/v2/images/{off}/actions/deactivate"), ("PATCH", f"/v2/images/{off}")]
    theirs = [w for w in writes if on in w[1]]
    assert theirs == [("PATCH", f"/v2/images/{on}"), ("POST", f"/v2/images/{on}/actions/reactivate")]


async def test_members_added_accepted_removed_and_restatused(clouds: Clouds, tmp_path: Path) -> None:
    """Members the source gained, lost or changed the status of are levelled; the image itself is not patched."""
    image = _add(clouds, name="shared", visibility="shared")
    for member, status in {"p-stays": "pending", "p-leaves": "accepted", "p-flips": "accepted"}.items():
        clouds.src.add_member(image, member, status)
    await _copied(clouds, tmp_path, [image])
    del clouds.src.members[image]["p-leaves"]
    clouds.src.members[image]["p-flips"].status = "rejected"
    clouds.src.add_member(image, "p-new-accepted", "accepted")
    clouds.src.add_member(image, "p-new-pending", "pending")
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {image: "updated"}
    _same(clouds, [image])
    assert Counter(_writes(clouds, before)) == Counter(
        [
            ("DELETE", f"/v2/images/{image}/members/p-leaves"),
            ("PUT", f"/v2/images/{image}/members/p-flips"),
            ("POST", f"/v2/images/{image}/members"),
            ("POST", f"/v2/images/{image}/members"),
            ("PUT", f"/v2/images/{image}/members/p-new-accepted"),
        ]
    )
    assert "members +p-new-accepted (accepted)" in run.images[0].reason and "-p-leaves" in run.images[0].reason


async def test_a_no_change_sync_reads_no_image(clouds: Clouds, tmp_path: Path) -> None:
    """With nothing changed, sync reads the destination's listing and shared images' members, no image, no write."""
    ids = [_add(clouds, name=f"img-{i}", visibility="private") for i in range(60)]
    shared = [_add(clouds, name=f"shared-{i}", visibility="shared") for i in range(3)]
    clouds.src.add_member(shared[0], "p1", "accepted")
    await _copied(clouds, tmp_path, ids + shared)
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert set(_outcomes(run).values()) == {"skipped"} and len(run.images) == 63
    paths = [r.path for r in clouds.dst.requests[before:]]
    assert not [p for p in paths if _IMAGE.match(p)]  # no image read (and no write: checked below)
    assert Counter(p for p in paths if p.endswith("/members")) == Counter(f"/v2/images/{i}/members" for i in shared)
    assert not _writes(clouds, before)
    # Discovery (probe, versions, stores, stores detail, import methods, usage), the listing's two
    # passes and their re-check of recently updated images (one page each), the members of the 3
    # shared images, and the two passes once more at the end (what was skipped is checked again).
    assert len(paths) == 6 + 2 * 2 + len(shared) + 2, paths


async def test_missing_images_are_copied_and_new_ones_recorded(clouds: Clouds, tmp_path: Path) -> None:
    """Images new at the source (data or queued) are copied exactly as copy does, same ids and bytes."""
    old = _add(clouds, name="old")
    await _copied(clouds, tmp_path, [old])
    data = os.urandom(200_000)
    new = _add(clouds, data, name="new", os_distro="cirros")
    placeholder = str(clouds.src.add_image(None, name="queued", disk_format="raw", container_format="bare")["id"])
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {old: "skipped", new: "copied", placeholder: "created"}
    assert clouds.dst.data(new) == data
    _same(clouds, [old, new, placeholder])


async def test_other_data_or_formats_are_conflicts_never_overwritten(clouds: Clouds, tmp_path: Path) -> None:
    """Same id with other bytes or other formats on an image with data: conflict, exit 1, destination untouched."""
    bytes_differ = _add(clouds, b"A" * 5000, name="a")
    formats_differ = _add(clouds, b"B" * 5000, name="b")
    clouds.dst.add_image(b"C" * 5000, id=bytes_differ, name="a", disk_format="raw", container_format="bare")
    clouds.dst.add_image(b"B" * 5000, id=formats_differ, name="b", disk_format="iso", container_format="bare")
    before = len(clouds.dst.requests)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    reasons = {r.id: r.reason for r in run.images}
    assert set(_outcomes(run).values()) == {"conflict"} and int(run.exit_code) == 1
    assert "other data" in reasons[bytes_differ] and "disk_format 'iso'" in reasons[formats_differ]
    assert not _writes(clouds, before)
    assert clouds.dst.data(bytes_differ) == b"C" * 5000


async def test_a_queued_destination_is_levelled_then_uploaded_into(clouds: Clouds, tmp_path: Path) -> None:
    """A copy left queued whose source drifted (name, formats, protected) is patched, then uploaded and protected."""
    data = os.urandom(100_000)
    image = _add(clouds, data, name="final", disk_format="vhd", protected=True)
    clouds.dst.add_image(None, id=image, name="draft", disk_format="raw", container_format="bare")
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {image: "copied"}, run.images[0].reason
    assert clouds.dst.data(image) == data
    _same(clouds, [image])
    assert run.images[0].changes == {
        "disk_format": ["raw", "vhd"],
        "name": ["draft", "final"],
        "protected": [False, True],
    }


async def test_owner_drift_goes_through_the_project_map(clouds: Clouds, tmp_path: Path) -> None:
    """A changed owner is patched to the mapped destination project; an owner-null source never drifts the owner."""
    pmap = ProjectMap({"src-a": "dst-a", "src-b": "dst-b", "admin-project": "admin-project"})
    moved = _add(clouds, name="moved", owner="src-a")
    nobody = _add(clouds, name="nobody", owner="src-a")
    config = sync_config(tmp_path, project_map=pmap)
    first = await sync_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert set(_outcomes(first).values()) == {"copied"} and clouds.dst.get(moved)["owner"] == "dst-a"
    clouds.src.images[moved].owner = "src-b"
    clouds.src.images[nobody].owner = None
    run = await sync_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {moved: "updated", nobody: "skipped"}
    assert clouds.dst.get(moved)["owner"] == "dst-b" and clouds.dst.get(nobody)["owner"] == "dst-a"


async def test_removed_images_are_reported_and_kept_by_default(clouds: Clouds, tmp_path: Path) -> None:
    """An image this tool brought that the source deleted is reported as removed (exit 0) and left alone;
    the destination's own image is never mentioned."""
    keep, gone = _add(clouds, name="keep"), _add(clouds, name="gone")
    await _copied(clouds, tmp_path, [keep, gone])
    own = str(clouds.dst.add_image(b"local" * 100, name="dst-own", disk_format="raw", container_format="bare")["id"])
    del clouds.src.images[gone]
    clouds.src.deleted.add(gone)
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {keep: "skipped", gone: "removed"}
    removed = next(r for r in run.images if r.id == gone)
    assert removed.name == "gone" and "--delete-removed" in removed.reason
    assert int(run.exit_code) == 0
    assert gone in clouds.dst.images and own in clouds.dst.images
    assert not clouds.dst.requests_matching("DELETE", ".*")


async def test_delete_removed_deletes_exactly_the_removed_images(clouds: Clouds, tmp_path: Path) -> None:
    """--delete-removed deletes the removed images, reports a protected one as a conflict unless
    --force-protected, and never touches the destination's own images."""
    keep = [_add(clouds, name=f"keep-{i}") for i in range(3)]  # the source still holds most of the record
    gone, guarded = _add(clouds, name="gone"), _add(clouds, name="g", protected=True)
    await _copied(clouds, tmp_path, [*keep, gone, guarded])
    own = str(clouds.dst.add_image(b"mine" * 10, name="dst-own", disk_format="raw", container_format="bare")["id"])
    for image_id in (gone, guarded):
        del clouds.src.images[image_id]
        clouds.src.deleted.add(image_id)
    kept = dict.fromkeys(keep, "skipped")
    run = await sync_images(sync_config(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {**kept, gone: "deleted", guarded: "conflict"}
    assert int(run.exit_code) == 1
    assert sorted(clouds.dst.images) == sorted([*keep, guarded, own])
    forced = await sync_images(
        sync_config(tmp_path, delete_removed=True, force_protected=True), clouds.src_cloud, clouds.dst_cloud
    )
    assert _outcomes(forced) == {**kept, guarded: "deleted"}
    assert sorted(clouds.dst.images) == sorted([*keep, own])
    quiet = await sync_images(sync_config(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(quiet) == kept and int(quiet.exit_code) == 0


async def test_removal_respects_the_selection_and_the_shard(clouds: Clouds, tmp_path: Path) -> None:
    """A removed image outside --name or outside this shard is not removed by that run."""
    ids = [_add(clouds, name=f"web-{i}") for i in range(8)] + [_add(clouds, name="db-0")]
    await _copied(clouds, tmp_path, ids)
    for image_id in ids:
        del clouds.src.images[image_id]
    # The source lost all it had: only the operator's word lets such a record delete anything.
    web = await sync_images(
        sync_config(tmp_path, delete_removed=True, confirm_source=True, selection=Selection(names=("db-*",))),
        clouds.src_cloud,
        clouds.dst_cloud,
    )
    assert _outcomes(web) == {ids[-1]: "deleted"}
    shard = await sync_images(
        sync_config(tmp_path, delete_removed=True, confirm_source=True, selection=Selection(shard=(0, 2))),
        clouds.src_cloud,
        clouds.dst_cloud,
    )
    assert sorted(_outcomes(shard)) == sorted(i for i in ids[:-1] if shard_of(i, 2) == 0)
    assert sorted(clouds.dst.images) == sorted(i for i in ids[:-1] if shard_of(i, 2) == 1)


async def test_a_lost_journal_is_rebuilt_from_both_catalogs(clouds: Clouds, tmp_path: Path) -> None:
    """Without the journal the first sync knows only the images at both ends; a later deletion is then seen."""
    a, b, c = _add(clouds, name="a"), _add(clouds, name="b"), _add(clouds, name="c")
    await _copied(clouds, tmp_path, [a, b, c])
    (tmp_path / "pair.sqlite").unlink()
    del clouds.src.images[a]  # deleted at the source while the journal was lost: forgotten (the safe direction)
    config = sync_config(tmp_path, delete_removed=True)
    first = await sync_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(first) == {b: "skipped", c: "skipped"}
    del clouds.src.images[b]
    second = await sync_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(second) == {b: "deleted", c: "skipped"}
    assert sorted(clouds.dst.images) == sorted([a, c])


async def test_named_image_gone_from_the_source_is_removed(clouds: Clouds, tmp_path: Path) -> None:
    """With --image, a named id the source no longer has but the record names is removed, not failed."""
    image, *_others = _add(clouds, name="named"), _add(clouds, name="other-1"), _add(clouds, name="other-2")
    await _copied(clouds, tmp_path, [image])
    del clouds.src.images[image]
    run = await sync_images(sync_config(tmp_path, image_ids=(image,)), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {image: "removed"} and int(run.exit_code) == 0


async def test_plan_shows_each_delta_and_changes_nothing(clouds: Clouds, tmp_path: Path) -> None:
    """A dry run lists copy, update (with what changes from what to what), conflict and removal, and writes nothing."""
    same, renamed, gone = _add(clouds, name="same"), _add(clouds, name="before"), _add(clouds, name="gone")
    await _copied(clouds, tmp_path, [same, renamed, gone])
    journal = (tmp_path / "pair.sqlite").read_bytes()
    clouds.src.images[renamed].name = "after"
    del clouds.src.images[gone]
    new = _add(clouds, name="new")
    before = len(clouds.dst.requests)
    run = await sync_images(
        sync_config(tmp_path, dry_run=True, delete_removed=True), clouds.src_cloud, clouds.dst_cloud
    )
    actions = {r.id: (r.action, r.outcome) for r in run.images}
    assert actions == {
        same: ("none", "planned"),
        renamed: ("update", "planned"),
        gone: ("delete", "planned"),
        new: ("copy", "planned"),
    }
    assert next(r for r in run.images if r.id == renamed).changes == {"name": ["before", "after"]}
    assert not _writes(clouds, before) and gone in clouds.dst.images
    assert (tmp_path / "pair.sqlite").read_bytes() == journal


async def test_a_failed_sync_finishes_on_rerun(clouds: Clouds, tmp_path: Path) -> None:
    """A sync whose PATCH is refused after the deactivation ends failed; the re-run finishes the image."""
    image = _add(clouds, name="x")
    await _copied(clouds, tmp_path, [image])
    clouds.src.images[image].status = "deactivated"
    clouds.src.images[image].name = "y"
    clouds.dst.faults.fail_next("PATCH", image, 400, retry_after=None, body="refused once")
    first = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(first) == {image: "failed"} and clouds.dst.get(image)["status"] == "deactivated"
    second = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(second) == {image: "updated"} and second.images[0].changes == {"name": ["x", "y"]}
    _same(clouds, [image])


def test_flags_that_cannot_work_are_usage_errors() -> None:
    """--force-protected without --delete-removed is refused when the config is built."""
    with pytest.raises(UsageError, match="--force-protected"):
        SyncConfig(force_protected=True)


async def test_an_image_shared_only_now_gets_its_members(clouds: Clouds, tmp_path: Path) -> None:
    """A private copy whose source became shared with members is patched to shared, then given the members."""
    image = _add(clouds, name="was private", visibility="private")
    await _copied(clouds, tmp_path, [image])
    clouds.src.images[image].visibility = "shared"
    clouds.src.add_member(image, "p-new", "accepted")
    plan = await sync_images(sync_config(tmp_path, dry_run=True), clouds.src_cloud, clouds.dst_cloud)
    assert plan.images[0].changes == {"visibility": ["private", "shared"], "members": [{}, {"p-new": "accepted"}]}
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {image: "updated"}, run.images[0].reason
    _same(clouds, [image])
    assert "members +p-new (accepted)" in run.images[0].reason


async def test_a_queued_image_renamed_at_both_ends_is_updated(clouds: Clouds, tmp_path: Path) -> None:
    """A source image still without data, renamed and shared since the copy, is patched and shared: updated."""
    image = str(clouds.src.add_image(None, name="draft", disk_format="raw", container_format="bare")["id"])
    await _copied(clouds, tmp_path, [image])
    clouds.src.images[image].name = "named"
    clouds.src.add_member(image, "p1", "accepted")
    run = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run) == {image: "updated"}, run.images[0].reason
    _same(clouds, [image])
