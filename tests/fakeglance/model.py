"""The fake's records (images, members, callers) and how they render as Glance v2 JSON.

Records are plain mutable dataclasses so tests can reach in and bend state
(``fake.images[id].status = "killed"``) where the API offers no way to do it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import http
import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from aiohttp import web

ADMIN_PROJECT = "admin-project"
"""Project of the default caller, who is also an admin."""

ADMIN_USER = "admin-user"
"""User id of the default caller."""

DEFAULT_STORES: Mapping[str, str] = {"fast": "Fast file store", "slow": "Slow file store"}
"""Store ids and descriptions a FakeGlance has unless told otherwise; the first is the default."""

QCOW2_MAGIC = b"QFI\xfb"

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
STATUSES = (
    "queued",
    "saving",
    "active",
    "killed",
    "deleted",
    "uploading",
    "importing",
    "pending_delete",
    "deactivated",
)

# Base attributes: always rendered, never stored among the custom properties.
BASE_ATTRS = (
    "name",
    "disk_format",
    "container_format",
    "visibility",
    "size",
    "virtual_size",
    "status",
    "checksum",
    "protected",
    "min_ram",
    "min_disk",
    "owner",
    "os_hidden",
    "os_hash_algo",
    "os_hash_value",
)

RESERVED_PREFIX = "os_glance_"

# Recorded on the image, never shown: glance/api/v2/images.py ResponseSerializer._hidden_properties
# (glance 27 and 33; glance 27 hides only the first). A client cannot tell a finished stage by them.
HIDDEN_PROPERTIES = frozenset({"os_glance_stage_host", "os_glance_hash_op_host"})

# Properties glance's copy-image flow writes on the image; clients may read, never write.
IMPORTING_KEY = "os_glance_importing_to_stores"
FAILED_IMPORT_KEY = "os_glance_failed_import"
IMPORT_LOCK_KEY = "os_glance_import_task"


def isotime(moment: dt.datetime) -> str:
    """Format a timestamp the way glance does: seconds precision, ``Z`` suffix."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | dt.datetime) -> dt.datetime:
    """Accept a datetime or an ISO 8601 string (``Z`` allowed) for seeding timestamps."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def virtual_size_of(data: bytes, disk_format: str | None) -> int:
    """What glance's format inspector reports: the qcow2 header's size, else the byte count."""
    if disk_format == "qcow2" and data.startswith(QCOW2_MAGIC) and len(data) >= 32:
        return int(struct.unpack(">Q", data[24:32])[0])
    return len(data)


class Digest:
    """md5 (glance's ``checksum``) and sha512 (``os_hash_value``) computed as bytes arrive."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Feed the next chunk."""
        self._md5.update(chunk)
        self._sha512.update(chunk)
        self.size += len(chunk)

    @property
    def checksum(self) -> str:
        """Hex md5 of everything fed so far."""
        return self._md5.hexdigest()

    @property
    def os_hash_value(self) -> str:
        """Hex sha512 of everything fed so far."""
        return self._sha512.hexdigest()


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is calling, as glance's context middleware would see it."""

    project_id: str
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Glance's default ``context_is_admin`` rule: the ``admin`` role."""
        return "admin" in self.roles


@dataclasses.dataclass
class ImageRecord:
    """One image as the fake stores it; ``data`` maps store id to bytes (``""`` single-store)."""

    id: str
    owner: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    status: str = "queued"
    name: str | None = None
    visibility: str = "shared"
    protected: bool = False
    os_hidden: bool = False
    min_disk: int = 0
    min_ram: int = 0
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    properties: dict[str, str] = dataclasses.field(default_factory=dict)
    data: dict[str, bytes] = dataclasses.field(default_factory=dict)
    receiving: int = 0
    """Bytes of the upload in progress received so far (tests watch an upload's progress)."""
    staged: bytes | None = None
    """Data in the staging store (``PUT …/stage``) awaiting a glance-direct import."""
    location_urls: dict[str, str] = dataclasses.field(default_factory=dict)
    """Location URL per store, shown instead of the default ``file://`` one (e.g. an
    ``s3://key:secret@host/bucket/id`` URL, which glance shows as stored)."""

    def store_bytes(self, data: bytes, stores: Iterable[str], digest: Digest | None = None) -> None:
        """Record ``data`` as this image's content in ``stores``, with its sizes and hashes.

        ``digest`` is the one computed while the bytes streamed in, if they did.
        """
        if digest is None:
            digest = Digest()
            digest.update(data)
        self.size = digest.size
        self.virtual_size = virtual_size_of(data, self.disk_format)
        self.checksum = digest.checksum
        self.os_hash_algo = "sha512"
        self.os_hash_value = digest.os_hash_value
        self.data = {store: data for store in stores}

    def content(self) -> bytes | None:
        """The bytes (every store holds the same), or None when no store holds any."""
        return next(iter(self.data.values()), None)


@dataclasses.dataclass
class MemberRecord:
    """One project's membership of a shared image."""

    image_id: str
    member_id: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def render(self) -> dict[str, Any]:
        """The member's JSON as glance returns it."""
        return {
            "created_at": isotime(self.created_at),
            "image_id": self.image_id,
            "member_id": self.member_id,
            "schema": "/v2/schemas/member",
            "status": self.status,
            "updated_at": isotime(self.updated_at),
        }


def locations(rec: ImageRecord, url_of: Callable[[ImageRecord, str], str] | None = None) -> list[dict[str, Any]]:
    """The image's locations as glance shows them: ``url`` (``url_of(rec, store)``, by default
    ``location_urls`` or a ``file://`` one) and ``metadata`` (store id, if any)."""
    return [
        {
            "url": url_of(rec, store)
            if url_of is not None
            else rec.location_urls.get(store, f"file:///var/lib/glance/{store or 'images'}/{rec.id}"),
            "metadata": {"store": store} if store else {},
        }
        for store in rec.data
    ]


def render_image(
    rec: ImageRecord,
    *,
    multi_store: bool,
    show_locations: bool,
    missing_attrs: Collection[str] = (),
    url_of: Callable[[ImageRecord, str], str] | None = None,
) -> dict[str, Any]:
    """The image's JSON: custom properties at top level (but the ones glance hides), links,
    ``stores`` as a CSV string.

    ``missing_attrs`` are base attributes the release lacks (e.g. ``os_hidden`` before Rocky):
    not rendered, so a custom property of that name shows instead.
    """
    view: dict[str, Any] = {k: v for k, v in rec.properties.items() if k not in HIDDEN_PROPERTIES}
    for key in BASE_ATTRS:
        if key not in missing_attrs:
            view[key] = getattr(rec, key)
    view["id"] = rec.id
    view["created_at"] = isotime(rec.created_at)
    view["updated_at"] = isotime(rec.updated_at)
    if show_locations:
        view["locations"] = locations(rec, url_of)
    view["tags"] = list(rec.tags)
    view["self"] = f"/v2/images/{rec.id}"
    view["file"] = f"/v2/images/{rec.id}/file"
    view["schema"] = "/v2/schemas/image"
    # Real glance omits `stores` entirely (not an empty string) when no store holds data.
    if multi_store and rec.data:
        view["stores"] = ",".join(rec.data)
    return view


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    410: web.HTTPGone,
    413: web.HTTPRequestEntityTooLarge,
    415: web.HTTPUnsupportedMediaType,
    416: web.HTTPRequestRangeNotSatisfiable,
    500: web.HTTPInternalServerError,
    501: web.HTTPNotImplemented,
}


def fail(status: int, explanation: str, headers: Mapping[str, str] | None = None) -> web.HTTPException:
    """An error to raise, with a plain-text body shaped like webob's (what glance sends)."""
    reason = http.HTTPStatus(status).phrase
    text = f"{status} {reason}\n\n{explanation}\n\n"
    if status == 413:  # aiohttp's class wants the sizes of a too-large body; glance's 413s are quotas
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=text, headers=headers)
    return _ERRORS[status](text=text, headers=headers)
