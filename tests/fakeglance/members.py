"""Image member endpoints: sharing a ``shared`` image with other projects.

Rules (glance 33 with its default policies): only ``shared`` images have members (403
otherwise, 404 on show); the owner or an admin adds (200, ``pending``; 409 if already a
member) and removes members; the member project itself or an admin sets its status, the owner
may not (403); a non-owner sees only its own membership.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .images import json_body
from .model import MEMBER_STATUSES, Identity, ImageRecord, MemberRecord, fail

if TYPE_CHECKING:
    from .core import FakeGlance, Handler


def routes(fake: FakeGlance) -> list[tuple[str, str, Handler]]:
    """The (method, path, handler) triples this module serves."""
    api = _MembersApi(fake)
    many = "/v2/images/{image_id}/members"
    one = many + "/{member_id}"
    return [
        ("GET", many, api.index),
        ("POST", many, api.create),
        ("GET", one, api.show),
        ("PUT", one, api.update),
        ("DELETE", one, api.delete),
    ]


class _MembersApi:
    def __init__(self, fake: FakeGlance) -> None:
        self.fake = fake

    def _image(self, request: web.Request, identity: Identity, not_shared: int = 403) -> ImageRecord:
        rec = self.fake.lookup(request.match_info["image_id"], identity)
        if rec.visibility != "shared":
            raise fail(not_shared, "Only shared images have members.")
        return rec

    def _is_owner(self, rec: ImageRecord, identity: Identity) -> bool:
        return identity.is_admin or rec.owner == identity.project_id

    def _member(self, rec: ImageRecord, identity: Identity, member_id: str) -> MemberRecord:
        member = self.fake.members.get(rec.id, {}).get(member_id)
        # A project that is neither owner nor this member must not learn the membership exists.
        visible = self._is_owner(rec, identity) or member_id == identity.project_id
        if member is None or not visible:
            raise fail(404, f"{member_id} not found in the member list of the image {rec.id}.")
        return member

    async def index(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self._image(request, identity)
        listed = [
            m.render()
            for m in self.fake.members.get(rec.id, {}).values()
            if self._is_owner(rec, identity) or m.member_id == identity.project_id
        ]
        return web.json_response({"members": listed, "schema": "/v2/schemas/members"})

    async def create(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        body = await json_body(request)
        member_id = body.get("member") if isinstance(body, dict) else None
        if not isinstance(member_id, str) or not member_id:
            raise fail(400, "Member to be added not specified")
        rec = self._image(request, identity)
        if not self._is_owner(rec, identity):
            raise fail(403, f"Not allowed to create members for image {rec.id}.")
        existing = self.fake.members.setdefault(rec.id, {})
        if member_id in existing:
            raise fail(409, f"Member {member_id} is duplicated for image {rec.id}")
        now = self.fake.now()
        existing[member_id] = MemberRecord(rec.id, member_id, "pending", now, now)
        return web.json_response(existing[member_id].render())

    async def show(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self._image(request, identity, not_shared=404)
        member = self._member(rec, identity, request.match_info["member_id"])
        return web.json_response(member.render())

    async def update(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        body = await json_body(request)
        status = body.get("status") if isinstance(body, dict) else None
        if status not in MEMBER_STATUSES:
            raise fail(400, f"Invalid status: {status}")
        rec = self._image(request, identity)
        member = self._member(rec, identity, request.match_info["member_id"])
        if not (identity.is_admin or member.member_id == identity.project_id):
            raise fail(403, f"Not allowed to update members for image {rec.id}.")
        member.status = status
        member.updated_at = self.fake.now()
        return web.json_response(member.render())

    async def delete(self, request: web.Request) -> web.Response:
        identity = self.fake.identity(request)
        rec = self._image(request, identity)
        if not self._is_owner(rec, identity):
            raise fail(403, "You cannot delete image member.")
        member = self._member(rec, identity, request.match_info["member_id"])
        del self.fake.members[rec.id][member.member_id]
        return web.Response(status=204)
