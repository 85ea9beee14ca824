"""What one cloud's Glance can do, discovered once at start-up and passed down.

:func:`discover` reads the version document, the store and import discovery
endpoints, and (only where the version leaves it open) probes whether the
listing accepts ``visibility=all``.  The result, :class:`Capabilities`, is a
frozen value: the listing asks it which queries list every image, ``copy``
asks it which stores and import methods exist, ``plan`` prints it.  No other
module compares API versions.

What differs between the Glance versions a migration meets (read from
Glance's own source, ``glance/api/versions.py``, ``glance/api/v2/images.py``
and ``glance/db/sqlalchemy/api.py`` at each release's tag):

=============  ======  ===========  ===========  =======================================
release        API     ``os_hidden``  ``visibility=all``  listing that returns every image
=============  ======  ===========  ===========  =======================================
Pike (15)      2.5     no           400          not supported (refused, exit 3)
Queens (16)    2.6     no           400          default + ``visibility=community``
Rocky (17)     2.7     yes          400          the same, each for hidden and not hidden
Stein (18)     2.7     yes          yes          ``visibility=all``, hidden and not hidden
Train (19)+    2.9+    yes          yes          the same
=============  ======  ===========  ===========  =======================================

Before 2.7 an unknown query key such as ``os_hidden`` is an image-property
filter, so asking for it lists *nothing* — which is why the query is chosen
by version and never guessed.  Without ``visibility`` an admin's listing
leaves out other projects' community images, hence the extra pass.  Rocky and
Stein both report 2.7; only a probe tells them apart.  Ussuri to Wallaby
render version 2.10 as ``"v2.1"`` (a float in ``build_version_object``), so
a CURRENT version lower than a SUPPORTED one is read as that float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ClientStatusError, FatalError, UsageError
from .quota import Quota

if TYPE_CHECKING:
    from .glance import GlanceClient

__all__ = [
    "MIN_API",
    "PAGE_SIZE",
    "Capabilities",
    "StoreInfo",
    "UnsupportedVersion",
    "discover",
    "parse_versions",
]

RANGED_TYPES = frozenset({"file", "cinder"})  # see StoreInfo.serves_ranges
MIN_API = (2, 6)  # Queens: the oldest API whose listing can return every image
PAGE_SIZE = "1000"  # Glance's default api_limit_max: the largest page it serves


class UnsupportedVersion(FatalError):
    """The cloud's Glance is too old to be listed completely."""


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """One store of a multi-store Glance (``/v2/info/stores``, types from ``/detail``)."""

    id: str
    description: str = ""
    default: bool = False
    type: str | None = None  # "file", "swift", "rbd", "s3", ...; None when not visible to us
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def serves_ranges(self) -> bool:
        """Whether Glance can serve a byte range (``Range``) of this store's copy.

        Only the file and cinder drivers read at an offset (glance_store's ``_CAPABILITIES``:
        ``READ_RANDOM``); rbd, s3, swift and http refuse any range with
        ``StoreRandomGetNotSupported``, and Glance then serves the image's *next* location
        silently, or answers 400 when there is none (seen on glance 33 with rbd and s3).  A
        store whose type we cannot see is taken as one that does not.
        """
        return self.type in RANGED_TYPES


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """One cloud's Glance, as discovered (see the module docstring)."""

    cloud: str
    api_version: tuple[int, int]
    stores: tuple[StoreInfo, ...] | None  # None: single-store (no enabled_backends)
    import_methods: frozenset[str] = frozenset()
    visibility_all: bool = True
    quota: Quota | None = None  # the caller's usage and limits; None: not asked (a source)

    @property
    def version(self) -> str:
        """``"2.17"``."""
        return f"{self.api_version[0]}.{self.api_version[1]}"

    @property
    def hidden(self) -> bool:
        """Whether images have ``os_hidden`` (API 2.7, Rocky, and later)."""
        return self.api_version >= (2, 7)

    @property
    def multi_store(self) -> bool:
        """Whether the cloud runs several stores (``enabled_backends``)."""
        return self.stores is not None

    @property
    def store_ids(self) -> list[str]:
        """The store ids, in the order Glance lists them (empty when single-store)."""
        return [s.id for s in self.stores or ()]

    @property
    def default_store(self) -> str | None:
        """The store new data goes to when none is named."""
        return next((s.id for s in self.stores or () if s.default), None)

    def store(self, store_id: str | None) -> StoreInfo | None:
        """The named store (or the default one when ``store_id`` is None)."""
        wanted = store_id or self.default_store
        return next((s for s in self.stores or () if s.id == wanted), None)

    def require_store(self, store_id: str, flag: str) -> StoreInfo:
        """The store ``flag`` names; a one-line usage error when it cannot be one."""
        if self.stores is None:
            raise UsageError(
                f"{flag} {store_id}: cloud {self.cloud!r} is not multi-store (GET /v2/info/stores answers 404, "
                "images have no stores); drop the flag"
            )
        found = self.store(store_id)
        if found is None:
            raise UsageError(
                f"{flag}: unknown store {store_id!r}; cloud {self.cloud!r} has: {', '.join(self.store_ids)}"
            )
        return found

    def listing_queries(self) -> tuple[dict[str, str], ...]:
        """The listing queries that together return every image once or more."""
        hidden: tuple[dict[str, str], ...] = ({"os_hidden": "false"}, {"os_hidden": "true"}) if self.hidden else ({},)
        if self.visibility_all:
            passes: tuple[dict[str, str], ...] = ({"visibility": "all"},)
        else:
            passes = ({}, {"visibility": "community"})
        return tuple(
            {**visibility, "member_status": "all", **flag, "limit": PAGE_SIZE}
            for visibility in passes
            for flag in hidden
        )

    def describe(self) -> dict[str, Any]:
        """What ``plan``, the summary and the report show about the cloud."""
        return {
            "cloud": self.cloud,
            "api_version": self.version,
            "multi_store": self.multi_store,
            "stores": [{"id": s.id, "type": s.type, "default": s.default} for s in self.stores or ()],
            "import_methods": sorted(self.import_methods),
            **({"quota": self.quota.describe()} if self.quota is not None else {}),
        }


def parse_versions(document: Mapping[str, Any]) -> tuple[int, int] | None:
    """The highest usable v2 API version in a ``/versions`` document, or None.

    A CURRENT version below a SUPPORTED one is Ussuri–Wallaby's float
    rendering of 2.10 as ``"v2.1"`` (and 2.20 as ``"v2.2"``): read it as such.
    """
    current: tuple[int, int] | None = None
    highest: tuple[int, int] | None = None
    for entry in document.get("versions") or []:
        number = _parse_id(str(entry.get("id", "")))
        status = str(entry.get("status", "")).upper()
        if number is None or number[0] != 2:
            continue
        if status == "CURRENT":
            current = number if current is None else max(current, number)
        elif status == "SUPPORTED":
            highest = number if highest is None else max(highest, number)
    if current is None:
        return highest
    if highest is not None and current < highest and current[1] < 10:
        current = (2, current[1] * 10)  # "v2.1" was 2.10
    return current


def _parse_id(text: str) -> tuple[int, int] | None:
    major, _dot, minor = text.lstrip("vV").partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


async def discover(client: GlanceClient, *, quota: bool = False) -> Capabilities:
    """Ask the cloud once what it can do; refuse a Glance too old to list completely.

    ``quota``: also read the caller's usage and limits (a destination's)."""
    name = client.cloud.name
    document = await client.versions()
    version = parse_versions(document) if document else None
    if version is None:
        raise FatalError(f"cloud {name!r}: cannot tell its Glance API version (no v2 entry in GET /versions)")
    if version < MIN_API:
        raise UnsupportedVersion(
            f"cloud {name!r} runs Glance API v{version[0]}.{version[1]} (Pike or older): its listing cannot return "
            f"every image (no visibility=all, community images hidden); the oldest supported is "
            f"v{MIN_API[0]}.{MIN_API[1]} (Queens)"
        )
    stores = await _stores(client)
    methods = frozenset(await client.import_methods())
    visibility_all = version >= (2, 9) or (version >= (2, 7) and await _lists_all(client))
    usage = Quota.parse(await client.usage(), client.cloud.project) if quota else None
    return Capabilities(
        cloud=name,
        api_version=version,
        stores=stores,
        import_methods=methods,
        visibility_all=visibility_all,
        quota=usage,
    )


async def _stores(client: GlanceClient) -> tuple[StoreInfo, ...] | None:
    listed = await client.stores_info()
    if listed is None:
        return None
    detail = {str(s.get("id")): s for s in await client.stores_detail()}
    out = []
    for store in listed:
        sid = str(store["id"])
        more = detail.get(sid, {})
        out.append(
            StoreInfo(
                id=sid,
                description=str(store.get("description") or ""),
                default=str(store.get("default", "")).lower() == "true",
                type=str(more["type"]) if more.get("type") else None,
                properties=dict(more.get("properties") or {}),
            )
        )
    return tuple(out)


async def _lists_all(client: GlanceClient) -> bool:
    """Rocky and Stein both say 2.7; only Stein accepts ``visibility=all``."""
    try:
        await client.list_page({"visibility": "all", "limit": "1"})
    except ClientStatusError as exc:
        if exc.status == 400:
            return False
        raise
    return True
