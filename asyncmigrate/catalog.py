"""Listing a cloud's images, and the destination's catalog read once per run.

Listing
    :func:`list_images` asks :class:`~asyncmigrate.capabilities.Capabilities`
    which queries return every image on that Glance version and follows their
    ``next`` links, in pages of 1,000 (Glance's default ``api_limit_max``).
    The queries are not one snapshot: an image whose ``os_hidden`` (or, before
    Stein, visibility) changes between them can be in none.  So the same
    queries are asked once more for the images updated since the listing began
    (``updated_at=gte:``, Pike and later): one page each when little changed.
    A miss then takes three changes of one image within one listing, the last
    between the two re-check queries; ``sync`` still reads an image by id before
    it calls it removed.

The destination index
    Deciding what to do with an image needs the destination's record of the
    same id.  One ``GET /v2/images/{id}`` per image costs the destination a
    request — glance-api's CPU per request is what limits a migration of many
    small images, and a re-run with nothing to do would cost one request per
    image.  So a run reads the destination's catalog once, in pages, into a
    :class:`DestinationIndex` of compact :class:`Entry` records: the fields that
    decide (status, size, hashes, owner, ``protected``, formats) and a 16-byte
    fingerprint of every other settable attribute.  Only an image whose
    fingerprint differs (a conflict to explain, a drift to apply) is read in
    full.

    Memory: about 600 bytes per destination image, its id included (hash values
    stored as bytes, common strings interned; ``created_at``, which the pair's
    record needs to know a copy again, is 77 of them): measured 590 bytes with
    tracemalloc over 100,000 entries built from listing pages, so 100,000
    images ≈ 59 MB.  A run given
    explicit ``--image`` ids reads those images one by one instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .metadata import comparable

if TYPE_CHECKING:
    from .capabilities import Capabilities
    from .glance import GlanceClient

__all__ = ["RECHECK_MARGIN", "Entry", "fingerprint", "list_images", "load_index"]

# How far before the listing's start the re-check reaches back: the server clock we know
# is the Date header of one answer (to the second, from whichever node answered, maybe a load
# balancer's), and updated_at is written by the API node that took the change.
RECHECK_MARGIN = dt.timedelta(minutes=2)

# Compared on their own rather than through the fingerprint: the owner (a
# project map or a null source owner changes what "equal" means), ``protected``
# (set last), and the formats (a converting destination changes them).
_APART = frozenset({"owner", "protected", "disk_format", "container_format"})


def fingerprint(image: Mapping[str, Any]) -> bytes:
    """A 16-byte digest of the settable attributes but those compared apart.

    Two records with the same fingerprint agree on name, visibility,
    ``os_hidden``, ``min_disk``, ``min_ram``, tags (in any order) and every
    custom property.
    """
    attrs = {k: v for k, v in comparable(image, keep_owner=False).items() if k not in _APART}
    blob = json.dumps(attrs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).digest()


def _intern(value: Any) -> str | None:
    return None if value is None else sys.intern(str(value))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _hex(value: Any) -> bytes | None:
    if not value:
        return None
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        return str(value).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """What the destination's listing says about one image, compactly."""

    status: str | None
    size: int | None
    virtual_size: int | None
    checksum: bytes | None
    hash_algo: str | None
    hash_value: bytes | None
    owner: str | None
    protected: bool
    visibility: str | None
    disk_format: str | None
    container_format: str | None
    attrs: bytes
    created_at: str | None = None  # with size and hashes, what identifies this copy (record.copy_of)

    @classmethod
    def of(cls, image: Mapping[str, Any]) -> Entry:
        """The entry for a full image record (a listing item or a GET)."""
        return cls(
            status=_intern(image.get("status")),
            size=image.get("size"),
            virtual_size=image.get("virtual_size"),
            checksum=_hex(image.get("checksum")),
            hash_algo=_intern(image.get("os_hash_algo")),
            hash_value=_hex(image.get("os_hash_value")),
            owner=_intern(image.get("owner")),
            protected=bool(image.get("protected")),
            visibility=_intern(image.get("visibility")),
            disk_format=_intern(image.get("disk_format")),
            container_format=_intern(image.get("container_format")),
            attrs=fingerprint(image),
            created_at=_str(image.get("created_at")),
        )

    def converted_from(self, image: Mapping[str, Any]) -> bool:
        """Is this the destination's conversion of the source ``image`` (``image_conversion``
        on import: another disk format, container ``bare``, new size and hashes)?

        The converted size (raw) or virtual size must equal the source's recorded
        ``virtual_size``: the virtual disk is the same.  Without a recorded virtual
        size nothing proves it, and the image is not taken for a conversion.
        """
        if self.status not in ("active", "deactivated") or self.disk_format == image.get("disk_format"):
            return False
        if self.container_format != "bare":
            return False
        virtual = image.get("virtual_size")
        # A conversion rewrites the bytes: the same bytes under other formats are not one.
        return virtual is not None and virtual in (self.virtual_size, self.size) and not self.same_data(image)

    def same_data(self, image: Mapping[str, Any]) -> bool:
        """Does the source record ``image`` describe the same bytes (size and every comparable hash)?

        A source without a recorded size (old images) is compared by hash only.
        """
        if image.get("size") is not None and image.get("size") != self.size:
            return False
        if image.get("checksum") and self.checksum and _hex(image["checksum"]) != self.checksum:
            return False
        comparable = image.get("os_hash_value") and self.hash_value and image.get("os_hash_algo") == self.hash_algo
        return not (comparable and _hex(image["os_hash_value"]) != self.hash_value)

    def compared_by(self, image: Mapping[str, Any]) -> str:
        """What :meth:`same_data` can compare of the two records: the multihash algorithm both
        carry, else ``md5`` (both checksums), else ``size-only``, else ``unverified``."""
        if image.get("os_hash_value") and self.hash_value and image.get("os_hash_algo") == self.hash_algo:
            return str(self.hash_algo)
        if image.get("checksum") and self.checksum:
            return "md5"
        return "size-only" if image.get("size") is not None and self.size is not None else "unverified"


async def list_images(
    client: GlanceClient, caps: Capabilities, image_ids: tuple[str, ...] = (), *, recheck: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Every image once: the ones named, or all of them (pages of 1,000).

    A named image that does not exist is yielded as a stub with ``status``
    ``"missing"`` so it is reported, not silently dropped.  Without ``recheck``
    the passes are not asked again for the images updated meanwhile (for a
    caller that confirms every image it misses by id).
    """
    if image_ids:
        for image_id in image_ids:
            image = await client.get_image(image_id)
            yield image if image is not None else {"id": image_id, "status": "missing"}
        return
    # Passes can overlap (before Stein an admin's own community images are in
    # both the plain and the community pass; an image whose os_hidden flips
    # during the listing can be in both halves): each id is handed on once, so two
    # workers never take the same image (about 100 bytes per id).
    seen: set[str] = set()
    began = min(client.server_now(), dt.datetime.now(dt.UTC)) - RECHECK_MARGIN
    for params in caps.listing_queries():
        async for image in client.list_images(params):
            if image["id"] not in seen:
                seen.add(image["id"])
                yield image
    # The passes are separate queries, not one snapshot: an image un-hidden after the
    # os_hidden=false pass went by it, and before the os_hidden=true pass reached it, is in
    # neither (before Stein, the same for a visibility change between the plain and the
    # community pass).  Every such change is a PATCH, which sets updated_at: the same queries
    # once more for the images updated since the listing began find it — a fixed cost of one
    # page per query, whatever the catalog's size.
    if not recheck:
        return
    since = began.strftime("%Y-%m-%dT%H:%M:%SZ")
    for params in caps.listing_queries():
        async for image in client.list_images({**params, "updated_at": f"gte:{since}"}):
            if image["id"] not in seen:
                seen.add(image["id"])
                yield image


class DestinationIndex:
    """The destination's images by id, read once (see the module docstring)."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def get(self, image_id: str) -> Entry | None:
        """The entry for ``image_id``, None when the destination does not list it."""
        return self._entries.get(image_id)


async def load_index(
    client: GlanceClient, caps: Capabilities, strip: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> DestinationIndex:
    """Read the whole destination catalog into a :class:`DestinationIndex`; ``strip`` takes
    out of each record what is not compared (the destination's own properties)."""
    entries: dict[str, Entry] = {}
    async for image in list_images(client, caps):
        entries[sys.intern(str(image["id"]))] = Entry.of(strip(image) if strip is not None else image)
    return DestinationIndex(entries)
