"""The pure drift functions: which JSON-patch, which status action, which member changes, which conflicts."""

from __future__ import annotations

from typing import Any

from asyncmigrate.catalog import Entry
from asyncmigrate.drift import compute_drift, describe, is_level, member_delta

BASE: dict[str, Any] = {
    "id": "7d3c1a52-9a43-4c5e-b0a1-2f4c8e6d9b10",
    "name": "img",
    "status": "active",
    "disk_format": "raw",
    "container_format": "bare",
    "visibility": "private",
    "protected": False,
    "os_hidden": False,
    "min_disk": 0,
    "min_ram": 0,
    "owner": "p1",
    "tags": ["a"],
    "size": 10,
    "checksum": "0" * 32,
    "os_hash_algo": "sha512",
    "os_hash_value": "1" * 128,
    "os_distro": "ubuntu",
    "created_at": "2026-01-01T00:00:00Z",
}


def test_one_patch_replaces_core_attributes_and_adds_or_removes_properties() -> None:
    """Core attributes are replaced, custom properties added (set) or removed, tags sent whole, in one patch."""
    src = {**BASE, "name": "new", "tags": ["b", "a", "b"], "min_ram": 512, "hw_disk_bus": "virtio", "a/b": "x"}
    del src["os_distro"]
    drift = compute_drift(src, BASE)
    assert sorted(drift.ops, key=lambda op: op["path"]) == [
        {"op": "add", "path": "/a~1b", "value": "x"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "replace", "path": "/min_ram", "value": 512},
        {"op": "replace", "path": "/name", "value": "new"},
        {"op": "remove", "path": "/os_distro"},
        {"op": "replace", "path": "/tags", "value": ["b", "a"]},
    ]
    assert drift.status is None and not drift.conflict
    assert "name 'img' → 'new'" in describe(drift.changes) and "-os_distro" in describe(drift.changes)


def test_tag_order_and_the_destinations_read_only_fields_are_no_drift() -> None:
    """Tags in another order, other timestamps, stores or locations are not drift."""
    dest = {**BASE, "tags": ["a"], "created_at": "2027-01-01T00:00:00Z", "stores": "main", "locations": []}
    assert compute_drift({**BASE, "tags": ["a"]}, dest).empty
    assert is_level(BASE, Entry.of(dest))


def test_status_drift_and_protected_are_levelled() -> None:
    """Deactivation and reactivation are status actions; protected is part of the patch either way."""
    off = compute_drift({**BASE, "status": "deactivated", "protected": True}, BASE)
    assert off.status == "deactivate" and off.ops == ({"op": "replace", "path": "/protected", "value": True},)
    on = compute_drift(BASE, {**BASE, "status": "deactivated", "protected": True})
    assert on.status == "reactivate" and on.ops == ({"op": "replace", "path": "/protected", "value": False},)


def test_an_owner_null_source_never_drifts_the_owner() -> None:
    """A source view without an owner (owner-null, --no-owner, --unmapped-owner caller) leaves the owner alone."""
    src = {k: v for k, v in BASE.items() if k != "owner"}
    assert compute_drift(src, {**BASE, "owner": "someone"}).empty
    assert compute_drift({**BASE, "owner": "p2"}, BASE).ops == ({"op": "replace", "path": "/owner", "value": "p2"},)


def test_data_and_format_differences_are_conflicts() -> None:
    """Other bytes, data on one side only, or other formats on an image with data cannot be levelled."""
    assert "other data" in compute_drift({**BASE, "size": 11}, BASE).conflict
    assert "has none" in compute_drift({**BASE, "status": "queued", "size": None}, BASE).conflict
    assert "disk_format" in compute_drift({**BASE, "disk_format": "qcow2"}, BASE).conflict
    queued = {**BASE, "status": "queued", "size": None, "checksum": None, "os_hash_value": None}
    fixable = compute_drift({**BASE, "disk_format": "qcow2"}, queued)
    assert fixable.ops == ({"op": "replace", "path": "/disk_format", "value": "qcow2"},) and not fixable.conflict


def test_member_delta() -> None:
    """Members are added with their status, removed, or set to another status."""
    delta = member_delta(
        {"a": "accepted", "b": "pending", "c": "rejected"}, {"b": "accepted", "c": "rejected", "d": "x"}
    )
    assert dict(delta.add) == {"a": "accepted"} and delta.remove == ("d",) and dict(delta.status) == {"b": "pending"}
    assert member_delta({"a": "pending"}, {"a": "pending"}).empty
