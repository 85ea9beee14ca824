"""Image metadata endpoints: create, list, show, JSON-patch, delete, tags, (de)activation, and
``GET /v2/images/{id}/locations`` (glance 29 on: for the service role or an admin in glance 33,
``glance/policies/base.py`` ``service_api``).

On a release without ``os_hidden`` or multihash (the profile's ``missing_attrs``), those keys
are ordinary custom properties in create and PATCH: strings, stored and shown as given.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import quota
from .backend import IN_USE, InUse, webob_error
from .listing import list_images
from .model import (
    CONTAINER_FORMATS,
    DISK_FORMATS,
    RESERVED_PREFIX,
    VISIBILITIES,
    Identity,
    ImageRecord,
    fail,
    locations,
)

if TYPE_CHECKING:
    from .core import FakeGlance, Handler

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

# Refused in create by glance's deserializer before anything else.
_DISALLOWED = ("direct_url", "self", "file", "schema", "stores")
# Refused in create by glance's ImageFactory (base attributes it won't take from a client).
_READONLY_CREATE = ("created_at", "updated_at", "status", "checksum", "size", "virtual_size")
# Refused among custom properties in create.
_RESERVED = ("location", "locations", "deleted", "deleted_at")
# Accepted in create but silently dropped: they land among the custom properties and are
# masked by the real attributes when the image is rendered.
_DROPPED_IN_CREATE = ("os_hash_algo", "os_hash_value")
# Refused as the root of a PATCH path.
_READONLY_PATCH = (
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "id",
    "os_hash_algo",
    "os_hash_value",
    # Not in glance's list; refused here so a client cannot rewrite `stores` by accident.
    "stores",
)
SETTABLE = (  # also what add_image accepts as attributes (core.py)
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "min_disk",
    "min_ram",
    "owner",
    "disk_format",
    "container_format",
    "tags",
)
PATCH_TYPES = {
    "application/openstack-images-v2.0-json-patch": 4,
    "application/openstack-images-v2.1-json-patch": 10,
}


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, or the 400 glance answers for a missing or broken one."""
    raw = await request.read()
    if not raw:
        raise fail(400, "Body expected in request.")
    try:
        return json.loads(raw)
    except ValueError:
        raise fail(400, "Malformed JSON in request body.") from None


def validate_attr(key: str, value: Any, missing_attrs: Collection[str] = ()) -> None:
    """400 unless ``value`` fits glance's image schema for ``key``.

    Keys in ``missing_attrs`` are not attributes of the release: custom properties (strings).
    """
    ok: bool
    if key in missing_attrs:
        ok = isinstance(value, str)
    elif key == "name":
        ok = value is None or (isinstance(value, str) and len(value) <= 255)
    elif key == "visibility":
        ok = value in VISIBILITIES
    elif key in ("protected", "os_hidden"):
        ok = isinstance(value, bool)
    elif key in ("min_disk", "min_ram"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif key == "disk_format":
        ok = value is None or value in DISK_FORMATS
    elif key == "container_format":
        ok = value is None or value in CONTAINER_FORMATS
    elif key == "tags":
        ok = isinstance(value, list) and all(isinstance(t, str) and len(t) <= 255 for t in value)
    elif key == "owner":
        ok = value is None or (isinstance(value, str) and len(value) <= 255)
    else:
        # The schema's additionalProperties: custom properties are strings.
        ok = isinstance(value, str) and len(key) <= 255
    if not ok:
        raise fail(
            400,
            f"Provided object does not match schema 'image': {value!r} is not valid "
            f"under any of the given schemas\n\nFailed validating {key!r}",
        )


def routes(fake: FakeGlance) -> list[tuple[str, str, Handler]]:
    """The (method, path, handler) triples this module serves."""
    api = _ImagesApi(fake)
    one = "/v2/images/{image_id}"
    locations_api = [
        ("GET", one + "/locations", api.locations),
        ("POST", one + "/locations", api.add_location),
    ]
    return [
        *(locations_api if fake.profile.locations_api else []),
        ("GET", "/v2/images", api.index),
        ("POST", "/v2/images", api.create),
        ("GET", one, api.show),
        ("PATCH", one, api.update),
        ("DELETE", one, api.delete),
        ("PUT", one + "/tags/{tag}", api.add_tag),
        ("DELETE", one + "/tags/{tag}", api.remove_tag),
        ("POST", one + "/actions/deactivate", api.deactivate),
        ("POST", one + "/actions/reactivate", api.reactivate),
    ]


class _ImagesApi:
    def __init__(self, fake: FakeGlance) -> None:
        self.fake = fake

    async def index(self, request: web.Request) -> web.Response:
        fake = self.fake
        body = list_images(
            fake.images.values(),
            fake.members,
            fake.identity(request),
            request.query,
            fake.render,
            fake.profile,
            fake.limit_max,
        )
        return web.json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise fail(400, "Request body must be a JSON object.")
        missing = self.fake.profile.missing_attrs
        for key in _DISALLOWED:
            if key in body:
                raise fail(403, f"Attribute '{key}' is read-only.")
        for key in _DROPPED_IN_CREATE:
            if key not in missing:
                body.pop(key, None)
        image_id = body.pop("id", None)
        if image_id is not None and not (isinstance(image_id, str) and _UUID.match(image_id)):
            raise fail(
                400, f"Provided object does not match schema 'image': {image_id!r} does not match the id pattern"
            )
        tags = body.pop("tags", [])
        validate_attr("tags", tags)
        for key, value in body.items():
            if key in _READONLY_CREATE:
                raise fail(403, f"Attribute '{key}' is read-only.")
            if key in _RESERVED or key.startswith(RESERVED_PREFIX):
                raise fail(403, f"Attribute '{key}' is reserved.")
            validate_attr(key, value, missing)
        owner = body.pop("owner", None) or identity.project_id
        if owner != identity.project_id and not identity.is_admin:
            raise fail(403, f"You are not permitted to create images owned by '{owner}'.")
        _check_publicize(body.get("visibility"), identity)
        # glance/api/v2/images.py: the caller's project pays, whoever will own the image.
        quota.enforce(self.fake, identity.project_id, "image_count_total", 1)
        if image_id is not None and (image_id in self.fake.images or image_id in self.fake.deleted):
            raise fail(409, f"Image with identifier {image_id} already exists!")

        now = self.fake.now()
        rec = ImageRecord(id=image_id or _new_id(), owner=owner, created_at=now, updated_at=now, tags=_dedupe(tags))
        for key, value in body.items():
            if key in SETTABLE and key not in missing:
                setattr(rec, key, value)
            else:
                rec.properties[key] = value
        self._check_property_quota(rec)
        self.fake.images[rec.id] = rec
        headers = {"Location": f"{request.scheme}://{request.host}{self.fake.prefix}/v2/images/{rec.id}"}
        if self.fake.import_methods:
            headers["OpenStack-image-import-methods"] = ",".join(self.fake.import_methods)
        if self.fake.multi_store:
            headers["OpenStack-image-store-ids"] = ",".join(self.fake.stores)
        return web.json_response(self.fake.render(rec), status=201, headers=headers)

    def _check_property_quota(self, rec: ImageRecord) -> None:
        # glance/quota/__init__.py: ImagePropertyLimitExceeded (a LimitExceeded) → 413 in
        # glance/api/v2/images.py, before anything is saved.
        quota = self.fake.property_quota
        if quota >= 0 and len(rec.properties) > quota:
            raise fail(
                413,
                "The limit has been exceeded on the number of allowed image properties. "
                f"Attempted: {len(rec.properties)}, Maximum: {quota}",
            )

    async def show(self, request: web.Request) -> web.Response:
        rec = self.fake.lookup(request.match_info["image_id"], self.fake.identity(request))
        return web.json_response(self.fake.render(rec))

    async def update(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        draft = PATCH_TYPES.get(request.content_type)
        if draft is None:
            allowed = ", ".join(sorted(PATCH_TYPES))
            raise fail(415, f"Image PATCH expects Content-Type one of: {allowed}", headers={"Accept-Patch": allowed})
        changes = await json_body(request)
        if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
            raise fail(400, "Request body must be a JSON array of operation objects.")
        missing = self.fake.profile.missing_attrs
        if any(str(c.get("path", c.get("add", c.get("remove", "")))).startswith("/locations") for c in changes):
            rec = self.fake.lookup(request.match_info["image_id"], identity)
            self.fake.require_owner(rec, identity)
            self.fake.backend.patch(rec, changes, admin=identity.is_admin)  # the legacy locations API (backend.py)
            return web.json_response(self.fake.render(rec))
        parsed = [_parse_change(change, draft, missing) for change in changes]
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        self.fake.require_owner(rec, identity)
        # Glance saves only if every change applies, so work on a copy.
        draft_rec = copy.copy(rec)
        draft_rec.tags, draft_rec.properties = list(rec.tags), dict(rec.properties)
        for op, key, value in parsed:
            _apply(draft_rec, op, key, value, identity, missing)
        if len(draft_rec.properties) > len(rec.properties):
            self._check_property_quota(draft_rec)
        if parsed:
            # Copy back field by field: uploads and imports in flight hold `rec` itself.
            for field in (*SETTABLE, "properties"):
                setattr(rec, field, getattr(draft_rec, field))
            rec.updated_at = self.fake.now()
        return web.json_response(self.fake.render(rec))

    async def locations(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        if not (identity.is_admin or "service" in identity.roles):
            raise fail(403, "You are not authorized to complete fetch_image_location action.")
        return web.json_response(locations(rec, self.fake.backend.url))

    async def add_location(self, request: web.Request) -> web.Response:
        raise fail(501, "fakeglance does not implement adding a location.")

    async def delete(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        self.fake.require_owner(rec, identity, "delete")
        if rec.protected:
            raise fail(403, f"Image {rec.id} is protected and cannot be deleted.")
        try:
            self.fake.backend.delete_image(rec)
        except InUse:
            raise webob_error(
                request, 409, f"Image {rec.id} could not be deleted because it is in use: {IN_USE}"
            ) from None
        del self.fake.images[rec.id]
        self.fake.deleted.add(rec.id)
        self.fake.members.pop(rec.id, None)
        return web.Response(status=204)

    async def add_tag(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        self.fake.require_owner(rec, identity)
        tag = request.match_info["tag"]
        if len(tag) > 255:
            raise fail(400, "Tag too long.")
        if tag not in rec.tags:
            rec.tags.append(tag)
            rec.updated_at = self.fake.now()
        return web.Response(status=204)

    async def remove_tag(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        self.fake.require_owner(rec, identity)
        tag = request.match_info["tag"]
        if tag not in rec.tags:
            raise fail(404, f"Tag {tag} not found on image {rec.id}.")
        rec.tags.remove(tag)
        rec.updated_at = self.fake.now()
        return web.Response(status=204)

    async def deactivate(self, request: web.Request) -> web.Response:
        return self._toggle(request, "active", "deactivated")

    async def reactivate(self, request: web.Request) -> web.Response:
        return self._toggle(request, "deactivated", "active")

    def _toggle(self, request: web.Request, source: str, target: str) -> web.Response:
        identity = self.fake.identity(request)
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        # Glance's default policy: admin, or a member of the owning project.
        self.fake.require_owner(rec, identity, f"make {target}")
        if rec.status == source:
            rec.status = target
            rec.updated_at = self.fake.now()
        elif rec.status != target:
            raise fail(403, f"Not allowed to change image in status '{rec.status}' to '{target}'")
        return web.Response(status=204)


def _new_id() -> str:
    return str(uuid.uuid4())


def _dedupe(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _check_publicize(visibility: Any, identity: Identity) -> None:
    # Glance's default publicize_image policy is admin-only.
    if visibility == "public" and not identity.is_admin:
        raise fail(403, "You are not authorized to publicize images.")


def _parse_change(change: dict[str, Any], draft: int, missing_attrs: Collection[str]) -> tuple[str, str, Any]:
    """Validate one JSON-patch operation; returns (op, attribute, value)."""
    ops = ("add", "remove", "replace")
    if draft == 10:
        op, pointer = change.get("op"), change.get("path")
        if op not in ops:
            raise fail(400, f"Invalid operation: `{op}`. It must be one of the following: add, remove, replace.")
        if not isinstance(pointer, str):
            raise fail(400, "Unable to find 'path' in JSON Schema change")
    else:
        present = [key for key in ops if key in change]
        if len(present) != 1:
            raise fail(400, 'Operation objects must contain exactly one member named "add", "remove", or "replace".')
        op = present[0]
        pointer = change[op]
        if not isinstance(pointer, str):
            raise fail(400, "Invalid JSON pointer.")
    if not pointer.startswith("/") or pointer.endswith("/") or "//" in pointer:
        raise fail(400, f"Invalid JSON pointer for this resource: '{pointer}'")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    root = parts[0]
    if root == "locations":
        raise fail(501, "fakeglance does not implement the legacy locations API.")
    if len(parts) != 1:
        raise fail(400, f"Invalid JSON pointer for this resource: '{pointer}'")
    if root in _READONLY_PATCH and root not in missing_attrs:
        raise fail(403, f"Attribute '{root}' is read-only.")
    if root in _RESERVED or root.startswith(RESERVED_PREFIX):
        raise fail(403, f"Attribute '{root}' is reserved.")
    if op == "remove":
        return op, root, None
    if "value" not in change:
        raise fail(400, f'Operation "{op}" requires a member named "value".')
    validate_attr(root, change["value"], missing_attrs)
    return op, root, change["value"]


def _apply(rec: ImageRecord, op: str, key: str, value: Any, identity: Identity, missing_attrs: Collection[str]) -> None:
    if key in SETTABLE and key not in missing_attrs:
        if op == "remove":
            raise fail(403, f"Property {key} may not be removed.")
        if key == "owner" and not identity.is_admin:
            raise fail(403, "Owner can't be updated by non admin.")
        if key in ("disk_format", "container_format") and rec.status != "queued":
            raise fail(403, f"Attribute {key} can be only replaced for a queued image.")
        if key == "visibility":
            _check_publicize(value, identity)
        setattr(rec, key, _dedupe(value) if key == "tags" else value)
    elif op == "add":
        rec.properties[key] = value
    elif key not in rec.properties:
        raise fail(409, f"Property {key} does not exist.")
    elif op == "replace":
        rec.properties[key] = value
    else:
        del rec.properties[key]
