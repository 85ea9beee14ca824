"""What differs between a source image and its copy, as the fewest requests that level it.

Pure functions, no I/O: ``sync`` applies what they return, ``plan sync``
prints it.  The source side is always the *destination view* of the source
image (:func:`~asyncmigrate.transfer.destination_view`: project map,
``--certificate-map``/``--strip-signature``), so a rewritten owner or a
stripped signature is never taken for drift.

What one image can need, in the order ``sync`` sends it (tighten first,
loosen last, so users never see the copy more open than the source):

1. ``deactivate`` when the source was deactivated;
2. ONE JSON-patch (``application/openstack-images-v2.1-json-patch``) for
   every attribute: ``replace`` for Glance's own attributes (name,
   visibility, ``protected``, ``os_hidden``, ``min_disk``, ``min_ram``,
   owner, tags), ``add`` for a custom property set or changed (with the v2.1
   patch type ``add`` sets a property whether or not it exists:
   ``glance/api/v2/images.py`` ``_do_add``), ``remove`` for one the source
   no longer has.  Glance accepts a PATCH of a protected or a deactivated
   image (only delete is refused for ``protected``: ``glance/domain``
   ``Image.delete``);
3. members added, removed, or set to the source's status;
4. ``reactivate`` when the source was reactivated.

Never drift, always a conflict (reported, the destination left alone): other
data (size or hashes: Glance cannot change the bytes under an id), or other
formats on an image that has data (Glance lets ``disk_format`` and
``container_format`` change only while an image is ``queued``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .catalog import Entry, fingerprint
from .metadata import differences

__all__ = [
    "CORE_KEYS",
    "Drift",
    "MemberDelta",
    "compute_drift",
    "describe",
    "is_level",
    "member_delta",
]

# Glance's own image attributes: patched with "replace", never removed.
CORE_KEYS = frozenset({"name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "owner", "tags"})
FORMAT_KEYS = ("disk_format", "container_format")
HAS_DATA = frozenset({"active", "deactivated"})


@dataclasses.dataclass(frozen=True)
class Drift:
    """How to bring one destination image level with the source (empty: it is level)."""

    ops: tuple[dict[str, Any], ...] = ()  # the one JSON-patch
    changes: Mapping[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)  # key: (destination, source)
    status: str | None = None  # "deactivate" or "reactivate"
    conflict: str = ""  # why the destination cannot be levelled (data or formats differ)

    @property
    def empty(self) -> bool:
        """Nothing to send."""
        return not self.ops and self.status is None and not self.conflict


@dataclasses.dataclass(frozen=True)
class MemberDelta:
    """Members to add (with the status to give them), remove, and set to another status."""

    add: Mapping[str, str] = dataclasses.field(default_factory=dict)
    remove: tuple[str, ...] = ()
    status: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """The members already agree."""
        return not self.add and not self.remove and not self.status


def is_level(view: Mapping[str, Any], entry: Entry) -> bool:
    """Does the destination's listing entry already hold everything of ``view`` (members aside)?

    True means no request is needed for the image itself.  The owner is
    compared only when the view keeps one (``--no-owner``, an owner-null
    source image, ``--unmapped-owner caller`` leave it to the destination).
    """
    same_formats = tuple(view.get(k) for k in FORMAT_KEYS) == (entry.disk_format, entry.container_format)
    return (
        view.get("status") == entry.status
        and fingerprint(view) == entry.attrs
        and bool(view.get("protected")) == entry.protected
        and (view.get("owner") is None or view.get("owner") == entry.owner)
        and (
            (same_formats and (view.get("status") not in HAS_DATA or entry.same_data(view)))
            or entry.converted_from(view)  # a converting destination's own formats and bytes
        )
    )


def compute_drift(view: Mapping[str, Any], dest: Mapping[str, Any]) -> Drift:
    """The drift of ``dest`` (the destination image, read in full) from ``view``."""
    src_status, dst_status = view.get("status"), dest.get("status")
    converted = Entry.of(dest).converted_from(view)  # formats and bytes are the destination's own
    if dst_status in HAS_DATA:
        if src_status not in HAS_DATA:
            return Drift(conflict="destination holds data, the source has none")
        if not converted and not Entry.of(dest).same_data(view):
            return Drift(conflict="destination holds other data (size or hash differ): Glance cannot replace it")
    keep_owner = view.get("owner") is not None
    diffs = differences(view, dest, keep_owner=keep_owner, ignore=frozenset(FORMAT_KEYS) if converted else frozenset())
    formats = {k: diffs.pop(k) for k in FORMAT_KEYS if k in diffs}
    if formats and dst_status != "queued":
        said = ", ".join(f"{k} {b!r} (source {a!r})" for k, (a, b) in formats.items())
        return Drift(conflict=f"destination has {said}: Glance changes formats only while an image has no data")
    diffs.update(formats)
    ops: list[dict[str, Any]] = []
    changes: dict[str, tuple[Any, Any]] = {}
    for key, (want, have) in sorted(diffs.items()):
        changes[key] = (have, want)
        if key in CORE_KEYS or key in FORMAT_KEYS:
            value = list(dict.fromkeys(want)) if key == "tags" else want
            ops.append({"op": "replace", "path": f"/{_pointer(key)}", "value": value})
        elif want is None:
            ops.append({"op": "remove", "path": f"/{_pointer(key)}"})
        else:
            ops.append({"op": "add", "path": f"/{_pointer(key)}", "value": want})
    status = None
    if src_status == "deactivated" and dst_status == "active":
        status = "deactivate"
    elif src_status == "active" and dst_status == "deactivated":
        status = "reactivate"
    if status is not None:
        changes["status"] = (dst_status, src_status)
    return Drift(ops=tuple(ops), changes=changes, status=status)


def _pointer(key: str) -> str:
    """A property name as one JSON-pointer token (RFC 6901 escapes)."""
    return key.replace("~", "~0").replace("/", "~1")


def member_delta(wanted: Mapping[str, str], have: Mapping[str, str]) -> MemberDelta:
    """What turns the destination's members ``have`` into ``wanted`` ({project: status})."""
    add = {m: s for m, s in wanted.items() if m not in have}
    remove = tuple(sorted(m for m in have if m not in wanted))
    status = {m: s for m, s in wanted.items() if m in have and have[m] != s}
    return MemberDelta(add=add, remove=remove, status=status)


def describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """One line for people: ``name 'a' → 'b'; +hw_disk_bus='virtio'; -os_version; deactivate``."""
    parts: list[str] = []
    for key, (have, want) in changes.items():
        if key == "status":
            parts.append("deactivate" if want == "deactivated" else "reactivate")
        elif key == "members":
            parts.append(_describe_members(have, want))
        elif key in CORE_KEYS or key in FORMAT_KEYS:
            parts.append(f"{key} {have!r} → {want!r}")
        elif have is None:
            parts.append(f"+{key}={want!r}")
        elif want is None:
            parts.append(f"-{key}")
        else:
            parts.append(f"{key} {have!r} → {want!r}")
    return "; ".join(parts)


def _describe_members(have: Mapping[str, str], want: Mapping[str, str]) -> str:
    delta = member_delta(want, have)
    said = [f"+{m} ({s})" for m, s in sorted(delta.add.items())]
    said += [f"-{m}" for m in delta.remove]
    said += [f"{m} {have[m]} → {s}" for m, s in sorted(delta.status.items())]
    return "members " + ", ".join(said)
