"""Which image attributes are copied, which are left out, and how two compare.

Glance answers ``GET /v2/images/{id}`` with core attributes, read-only ones and
every custom property at the top level.  On create it refuses read-only and
reserved keys (403) — or silently drops some (``os_hash_value``) — so they are
filtered here and listed in the report instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULTS",
    "LATE_KEYS",
    "READ_ONLY",
    "carrier_body",
    "comparable",
    "create_body",
    "differences",
    "left_out",
    "settable",
    "size_of",
]

# Set by Glance itself, or links: never sent.
READ_ONLY = frozenset(
    {
        "id",  # sent, but separately: it is the identity, not an attribute
        "status",
        "created_at",
        "updated_at",
        "deleted",
        "deleted_at",
        "size",
        "virtual_size",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "locations",
        "direct_url",
        "stores",
        "self",
        "file",
        "schema",
        "members",
    }
)

# Reserved namespace: any key with this prefix is refused (403) on create.
RESERVED_PREFIXES = ("os_glance_",)

# Settable, but only at the end of the copy (``protected`` would block a retry's
# fix-ups; members are a separate API).
LATE_KEYS = frozenset({"protected"})


def size_of(image: Mapping[str, Any]) -> int:
    """The image's ``size`` for counting and filtering; 0 when absent or not a number
    (the image's own handling then fails it — the listing goes on)."""
    try:
        return int(image.get("size") or 0)
    except (TypeError, ValueError):
        return 0


def _is_left_out(key: str) -> bool:
    return key in READ_ONLY or key.startswith(RESERVED_PREFIXES)


def left_out(image: Mapping[str, Any]) -> list[str]:
    """The keys of ``image`` that are never sent (reported per image)."""
    return sorted(k for k in image if _is_left_out(k) and k != "id")


def settable(image: Mapping[str, Any], *, keep_owner: bool) -> dict[str, Any]:
    """Every attribute to give the destination image, ``protected`` included."""
    out: dict[str, Any] = {}
    for key, value in image.items():
        if _is_left_out(key) or value is None:
            continue
        if key == "owner" and not keep_owner:
            continue
        out[key] = value
    return out


def create_body(image: Mapping[str, Any], *, keep_owner: bool) -> dict[str, Any]:
    """The ``POST /v2/images`` body: the same id and every settable attribute
    but the late ones (``protected`` is set once the data is in)."""
    body = {k: v for k, v in settable(image, keep_owner=keep_owner).items() if k not in LATE_KEYS}
    body["id"] = image["id"]
    return body


# What a destination records for a key the source's Glance does not have (os_hidden
# came with API 2.7, Rocky): compared as if the source had said it.
DEFAULTS: dict[str, Any] = {"os_hidden": False}


def comparable(image: Mapping[str, Any], *, keep_owner: bool) -> dict[str, Any]:
    """The settable attributes as compared between clouds: defaults filled, tags in order."""
    out = {**DEFAULTS, **settable(image, keep_owner=keep_owner)}
    if isinstance(out.get("tags"), list):
        out["tags"] = sorted(str(t) for t in out["tags"])
    return out


def differences(
    source: Mapping[str, Any],
    dest: Mapping[str, Any],
    *,
    keep_owner: bool,
    ignore: frozenset[str] = LATE_KEYS,
) -> dict[str, tuple[Any, Any]]:
    """Settable attributes whose values differ: ``{key: (source, dest)}``.

    Keys listed in ``ignore`` (by default the late ones, which the finishing
    step fixes) are not compared.  A key missing on one side counts as ``None``.
    A source without an owner (``owner: null``, left by old tooling) cannot be
    copied as such: Glance gives an ownerless create to the caller's project,
    so whatever owner the destination holds is the expected one.
    """
    if source.get("owner") is None:
        ignore = ignore | {"owner"}
    src = comparable(source, keep_owner=keep_owner)
    dst = comparable(dest, keep_owner=keep_owner)
    diffs: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(src) | set(dst)):
        if key in ignore:
            continue
        if src.get(key) != dst.get(key):
            diffs[key] = (source.get(key), dest.get(key))
    return diffs


def carrier_body(image: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The create body of a hidden *carrier* image that will hold ``image``'s data
    in another store (store move by location); ``key`` names the original."""
    return {
        "name": f"asyncmigrate carrier of {image.get('name') or image['id']}",
        "disk_format": image.get("disk_format"),
        "container_format": image.get("container_format"),
        "visibility": "private",
        "os_hidden": True,
        key: image["id"],
    }
