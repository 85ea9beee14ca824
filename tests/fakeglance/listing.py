"""GET /v2/images: glance's visibility rules, filters, sorting and marker pagination.

Mirrors glance 33 (``glance/api/v2/images.py`` index and ``glance/db/sqlalchemy/api.py``
``_image_get_all``) where a client could notice the difference, and older releases where
their :class:`~tests.fakeglance.profiles.GlanceProfile` says they differ:

* a regular caller sees public, community and own images, plus shared images it is a
  member of with ``member_status`` (default ``accepted``); an admin sees everything;
* without ``visibility``, community images are listed only to their owner (an admin too);
  ``visibility=all`` lifts that — from Stein on; before, it is 400;
* ``os_hidden`` defaults to false, and ``os_hidden=true`` lists *only* hidden images — from
  Rocky on; before, ``os_hidden`` is no column, so like every other unknown key it filters on
  a custom property of that name (and ``os_hidden=false`` usually matches nothing);
* ``created_at`` and ``updated_at`` filter with ``gt``/``gte``/``lt``/``lte``/``neq``/``eq:``
  and an ISO 8601 time (Pike and later alike: ``_make_conditions_from_filters``);
* ``killed`` images are never listed;
* pages hold ``limit`` images (default 25, capped at ``api_limit_max``, 1000), sorted by the
  requested keys followed by ``created_at`` and ``id``; ``next`` appears whenever a page is
  full (so a full last page is followed by an empty one) and is a bare ``/v2/images?...`` path
  that keeps the query, with repeated parameters collapsed to their last value as webob does.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from multidict import MultiMapping

from .model import Identity, ImageRecord, MemberRecord, fail
from .profiles import GLANCE_33, GlanceProfile

DEFAULT_LIMIT = 25
SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
)
_EQ_OR_IN_KEYS = ("name", "id", "status", "container_format", "disk_format")
_PAGING_KEYS = ("limit", "marker", "member_status", "tag", "sort", "sort_key", "sort_dir")
# Columns of glance's ``images`` table a filter key compares directly (any other key is a
# custom-property filter); os_hash_* became columns with multihash (Rocky).
_COLUMNS = ("owner", "checksum", "min_disk", "min_ram", "size", "virtual_size")
_MULTIHASH_COLUMNS = ("os_hash_algo", "os_hash_value")

Members = Mapping[str, Mapping[str, MemberRecord]]


def list_images(
    images: Iterable[ImageRecord],
    members: Members,
    identity: Identity,
    query: MultiMapping[str],
    render: Callable[[ImageRecord], dict[str, Any]],
    profile: GlanceProfile = GLANCE_33,
    limit_max: int | None = None,
) -> dict[str, Any]:
    """Answer one listing request as ``profile``'s release would; raises 400 errors the way glance does.

    ``limit_max`` overrides the profile's ``api_limit_max`` (a deployment's setting): a
    larger ``limit`` is silently capped.
    """
    limit = _parse_limit(query.get("limit"), profile.api_limit_max if limit_max is None else limit_max)
    member_status = query.get("member_status", "accepted")
    if member_status not in profile.member_statuses:
        raise fail(400, f"Invalid status: {member_status}")
    sort_keys, sort_dirs = _parse_sort(query)
    match = _make_filter(query, identity, members, member_status, profile)

    by_id = {rec.id: rec for rec in images}
    compare = functools.partial(_compare, sort_keys, sort_dirs)
    matching = (rec for rec in by_id.values() if match(rec))
    ordered = sorted(matching, key=functools.cmp_to_key(compare))

    marker_id = query.get("marker")
    if marker_id is not None:
        marker = by_id.get(marker_id)
        # Glance resolves the marker with the caller's visibility, not the listing filters.
        if marker is None or not can_see(marker, identity, members):
            raise fail(400, f"No image found with ID {marker_id}")
        ordered = [rec for rec in ordered if compare(rec, marker) > 0]
    page = ordered[:limit]

    # webob's dict(request.params): first position, last value for a repeated key.
    params = {key: query.getall(key)[-1] for key in query}
    params.pop("marker", None)
    body: dict[str, Any] = {
        "images": [render(rec) for rec in page],
        "first": "/v2/images" + (f"?{urllib.parse.urlencode(params)}" if params else ""),
        "schema": "/v2/schemas/images",
    }
    if page and len(page) == limit:
        params["marker"] = page[-1].id
        body["next"] = f"/v2/images?{urllib.parse.urlencode(params)}"
    return body


def can_see(rec: ImageRecord, identity: Identity, members: Members) -> bool:
    """Glance's ``get_image`` rule: admin, owner, public/community, or any-status member."""
    if identity.is_admin or rec.owner == identity.project_id:
        return True
    if rec.visibility in ("public", "community"):
        return True
    return rec.visibility == "shared" and identity.project_id in members.get(rec.id, {})


def _parse_limit(raw: str | None, limit_max: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, limit_max)
    try:
        limit = int(raw)
    except ValueError:
        raise fail(400, "limit param must be an integer") from None
    if limit < 0:
        raise fail(400, "limit param must be positive")
    return min(limit, limit_max)


def _parse_sort(query: MultiMapping[str]) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    dirs: list[str] = []
    if "sort" in query:
        if "sort_key" in query or "sort_dir" in query:
            raise fail(400, "Old and new sorting syntax cannot be combined")
        for item in query["sort"].strip().split(","):
            key, _sep, direction = item.partition(":")
            keys.append(key.strip())
            dirs.append(direction.strip() or "desc")
    else:
        keys = [k.strip() for k in query.getall("sort_key", [])]
        dirs = [d.strip() for d in query.getall("sort_dir", [])]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise fail(400, "Number of sort dirs does not match the number of sort keys")
    for key in keys:
        if key not in SORT_KEYS:
            raise fail(400, f"Invalid sort key: {key}. It must be one of the following: {', '.join(SORT_KEYS)}.")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise fail(400, f"Invalid sort direction: {direction}")
    keys = keys or ["created_at"]
    default_dir = dirs[0] if len(dirs) == 1 else "desc"
    if len(dirs) <= 1:
        dirs = [default_dir] * len(keys)
    # Glance always appends created_at and id so the order is total and markers are exact.
    for key in ("created_at", "id"):
        if key not in keys:
            keys.append(key)
            dirs.append(default_dir)
    return keys, dirs


def _compare(keys: list[str], dirs: list[str], a: ImageRecord, b: ImageRecord) -> int:
    for key, direction in zip(keys, dirs, strict=True):
        # None sorts lowest, as NULL does in MySQL.
        left, right = getattr(a, key), getattr(b, key)
        va = (0, "") if left is None else (1, left)
        vb = (0, "") if right is None else (1, right)
        if va != vb:
            result = -1 if va < vb else 1
            return result if direction == "asc" else -result
    return 0


def _parse_bool(name: str, raw: str | None, default: str | None) -> bool | None:
    value = raw if raw is not None else default
    if value is None:
        return None
    value = value.lower()
    if value not in ("true", "false"):
        raise fail(400, f"Invalid value '{raw}' for '{name}' filter. Valid values are 'true' or 'false'.")
    return value == "true"


def _make_filter(
    query: MultiMapping[str], identity: Identity, members: Members, member_status: str, profile: GlanceProfile
) -> Callable[[ImageRecord], bool]:
    visibility = query.get("visibility")
    allowed_visibilities = ("community", "public", "private", "shared", *(("all",) if profile.visibility_all else ()))
    if visibility and visibility not in allowed_visibilities:
        raise fail(400, f"Invalid visibility value: {visibility}")
    if "changes-since" in query:
        raise fail(400, 'The "changes-since" filter is no longer available on v2.')
    # Before Rocky os_hidden is no filter of its own: it falls through to the property filters.
    os_hidden = _parse_bool("os_hidden", query.get("os_hidden"), "false") if profile.os_hidden else None
    protected = _parse_bool("protected", query.get("protected"), None)
    tags = query.getall("tag", [])
    exact: dict[str, set[str]] = {}
    for key in _EQ_OR_IN_KEYS:
        if key in query:
            exact[key] = _eq_or_in(query[key])
    times = [(key, *_time_filter(key, query[key])) for key in ("created_at", "updated_at") if key in query]
    bounds: list[tuple[str, int]] = []
    for key in ("size_min", "size_max"):
        if key in query:
            try:
                bounds.append((key[-3:], int(query[key])))
            except ValueError:
                raise fail(400, "Unable to filter on a range with a non-numeric value.") from None
    handled = {
        "visibility",
        *(("os_hidden",) if profile.os_hidden else ()),
        "protected",
        "changes-since",
        "size_min",
        "size_max",
        "created_at",
        "updated_at",
        *_EQ_OR_IN_KEYS,
        *_PAGING_KEYS,
    }
    others = {key: query[key] for key in query if key not in handled}
    columns = _COLUMNS + (_MULTIHASH_COLUMNS if profile.multihash else ())

    def listed_to_caller(rec: ImageRecord) -> bool:
        if identity.is_admin or rec.owner == identity.project_id:
            return True
        if rec.visibility in ("public", "community"):
            return True
        member = members.get(rec.id, {}).get(identity.project_id)
        return rec.visibility == "shared" and member is not None and member_status in ("all", member.status)

    def visibility_ok(rec: ImageRecord) -> bool:
        if visibility:
            return visibility == "all" or rec.visibility == visibility
        return rec.visibility != "community" or rec.owner == identity.project_id

    def match(rec: ImageRecord) -> bool:
        if rec.status in ("killed", "deleted") or (os_hidden is not None and rec.os_hidden != os_hidden):
            return False
        if protected is not None and rec.protected != protected:
            return False
        if not (listed_to_caller(rec) and visibility_ok(rec)):
            return False
        if any(str(getattr(rec, key)) not in allowed for key, allowed in exact.items()):
            return False
        if not all(_COMPARE[op](getattr(rec, key), moment) for key, op, moment in times):
            return False
        for kind, bound in bounds:
            size = rec.size or 0
            if (kind == "min" and size < bound) or (kind == "max" and size > bound):
                return False
        if not all(tag in rec.tags for tag in tags):
            return False
        return all(_column_or_property(rec, key, columns) == value for key, value in others.items())

    return match


_COMPARE: dict[str, Callable[[dt.datetime, dt.datetime], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "neq": operator.ne,
    "eq": operator.eq,
}


def _time_filter(key: str, raw: str) -> tuple[str, dt.datetime]:
    """``created_at``/``updated_at`` as glance reads them (``utils.split_filter_op``: a whole value
    that is a time is ``eq``, else ``op:time``; ``oslo_utils.timeutils.parse_isotime``)."""
    op, moment = "eq", raw
    if ":" in raw and _isotime(raw) is None:
        op, _sep, moment = raw.partition(":")
    threshold = _isotime(moment)
    if threshold is None:
        raise fail(400, f'Bad "{key}" query filter format. Use ISO 8601 DateTime notation.')
    if op not in _COMPARE:
        raise fail(400, "Unable to filter on a unknown operator.")
    return op, threshold


def _isotime(raw: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _eq_or_in(raw: str) -> set[str]:
    op, sep, rest = raw.partition(":")
    if not sep:
        return {raw}
    if op == "eq":
        return {rest}
    if op == "in":
        return {item.strip().strip('"') for item in rest.split(",")}
    raise fail(400, f"Unable to filter by unknown operator '{op}'.")


def _column_or_property(rec: ImageRecord, key: str, columns: tuple[str, ...]) -> str | None:
    if key in columns:
        value = getattr(rec, key)
        return None if value is None else str(value)
    return rec.properties.get(key)
