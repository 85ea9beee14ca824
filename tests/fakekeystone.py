"""An in-process fake Keystone v3, enough for keystoneauth1's ``password`` and
``v3applicationcredential`` plugins, guarding one or more fake Glances.

Typical use::

    keystone = FakeKeystone(users={"admin": "s3cret"})
    async with FakeServer(glance) as g_srv, serve_keystone(keystone) as auth_url:
        keystone.add_image_endpoint(glance, g_srv.url)       # glance now needs its tokens
        write_keystone_clouds_yaml(path, {"src": PasswordCloud(auth_url, "admin", "s3cret")})

or :func:`guarded_clouds` for a source and a destination behind one Keystone.

keystoneauth first discovers the identity versions at the auth URL (``GET /v3``, or
``GET /`` for an unversioned URL), then ``POST /v3/auth/tokens``. A good password (or
application credential) gets ``201``, a fresh random ``X-Subject-Token`` and a token body
whose catalog lists each image endpoint by region; a bad one gets keystone's ``401``.

Every guarded Glance shares :attr:`FakeKeystone.valid`, the set of issued tokens still
valid: it accepts exactly those, so a token that ``glance.faults.expire_token_once()``
expires on one is expired everywhere, as with a real Keystone. (``glance.issue_token()``
and ``glance.require_token`` replace that set; don't mix them with a FakeKeystone.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakeglance import ADMIN_PROJECT, ADMIN_USER, FakeGlance, FakeServer

PROJECT_NAME = "admin"
"""The one project tokens are scoped to; its id is the fake Glance's ``ADMIN_PROJECT``."""

DOMAIN = {"id": "default", "name": "Default"}
_FAR_FUTURE = "2099-12-31T23:59:59.000000Z"
_MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]


@dataclasses.dataclass
class KeystoneRequest:
    """One request as the fake Keystone saw it (never its body: that holds the password)."""

    method: str
    path: str
    status: int | None = None


class FakeKeystone:
    """A Keystone v3 with password users and application credentials, all in one project.

    ``users`` maps user names (domain ``Default``) to passwords; ``app_credentials`` maps
    application-credential ids to secrets. Each user has the admin, member and reader roles.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        app_credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.users = dict(users if users is not None else {"admin": "password"})
        self.app_credentials = dict(app_credentials or {})
        self.endpoints: list[tuple[str, str]] = []
        """(region, url) of every image endpoint in the catalog."""
        self.issued: list[str] = []
        """Every token issued, oldest first."""
        self.valid: set[str] = set()
        """Issued tokens not yet expired: the set every guarded Glance accepts."""
        self.requests: list[KeystoneRequest] = []
        self.projects: dict[str, str] = {ADMIN_PROJECT: PROJECT_NAME}
        """Project id → name: what ``GET /v3/projects/{id}`` knows (admins may read any)."""
        self.image_service_id = "image-service"
        """The image service's id in the catalog (a real Keystone's is random per deployment)."""
        self.app = self._build_app()

    def add_image_endpoint(self, glance: FakeGlance, url: str, region: str = "RegionOne") -> None:
        """List ``url`` as the public image endpoint of ``region``; ``glance`` accepts exactly
        the tokens this Keystone issued and nobody expired."""
        self.endpoints.append((region, url))
        glance.valid_tokens = self.valid

    def token_requests(self) -> list[KeystoneRequest]:
        """The ``POST /v3/auth/tokens`` requests, in order."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v3/auth/tokens"]

    # -- the app -----------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._log_middleware])
        app.router.add_get("/", self._versions)
        app.router.add_get("/v3", self._version)
        app.router.add_get("/v3/", self._version)
        app.router.add_post("/v3/auth/tokens", self._issue)
        app.router.add_get("/v3/projects/{project_id}", self._project)
        return app

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        entry = KeystoneRequest(request.method, request.path)
        self.requests.append(entry)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            entry.status = exc.status
            raise
        entry.status = response.status
        return response

    def _version_doc(self, request: web.Request) -> dict[str, Any]:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{request.scheme}://{request.host}/v3/"}],
            "media-types": _MEDIA_TYPES,
        }

    async def _versions(self, request: web.Request) -> web.Response:
        # Keystone answers the unversioned root with 300 Multiple Choices.
        return web.json_response({"versions": {"values": [self._version_doc(request)]}}, status=300)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self._version_doc(request)})

    async def _project(self, request: web.Request) -> web.Response:
        # Keystone's GET /v3/projects/{id}: a valid token (every user here is an admin), then 200 or 404.
        if request.headers.get("X-Auth-Token") not in self.valid:
            raise _unauthorized()
        project_id = request.match_info["project_id"]
        if project_id not in self.projects:
            body = {"error": {"code": 404, "title": "Not Found", "message": f"Could not find project: {project_id}."}}
            raise web.HTTPNotFound(text=json.dumps(body), content_type="application/json")
        project = {"id": project_id, "name": self.projects[project_id], "domain_id": DOMAIN["id"], "enabled": True}
        return web.json_response({"project": project})

    async def _issue(self, request: web.Request) -> web.Response:
        try:
            auth = (await request.json())["auth"]
            identity = auth["identity"]
            methods = list(identity["methods"])
        except (ValueError, KeyError, TypeError):
            raise _error(400, "Bad Request", "Malformed auth request.") from None
        if methods == ["password"]:
            user = self._password_user(identity.get("password", {}))
            self._check_scope(auth.get("scope"))
        elif methods == ["application_credential"]:
            user = self._app_credential_user(identity.get("application_credential", {}))
        else:
            raise _error(401, "Unauthorized", "Unsupported authentication method.")
        token = secrets.token_hex(24)
        self.issued.append(token)
        self.valid.add(token)
        body = {"token": self._token_body(methods, user, f"{request.scheme}://{request.host}/v3")}
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})

    def _password_user(self, password: Any) -> str:
        user = password.get("user", {}) if isinstance(password, dict) else {}
        domain = user.get("domain", {})
        in_default = domain.get("id") == DOMAIN["id"] or domain.get("name") == DOMAIN["name"]
        name = user.get("name")
        if not in_default or name not in self.users or self.users[name] != user.get("password"):
            raise _unauthorized()
        return str(name)

    def _app_credential_user(self, cred: Any) -> str:
        cred_id = cred.get("id") if isinstance(cred, dict) else None
        if cred_id not in self.app_credentials or self.app_credentials[cred_id] != cred.get("secret"):
            raise _unauthorized()
        return next(iter(self.users), "admin")

    def _check_scope(self, scope: Any) -> None:
        project = scope.get("project", {}) if isinstance(scope, dict) else {}
        domain = project.get("domain", {})
        by_name = project.get("name") == PROJECT_NAME and (
            domain.get("id") == DOMAIN["id"] or domain.get("name") == DOMAIN["name"]
        )
        if not (by_name or project.get("id") == ADMIN_PROJECT):
            raise _unauthorized()

    def _token_body(self, methods: list[str], user: str, identity_url: str) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "methods": methods,
            "user": {"id": ADMIN_USER, "name": user, "domain": DOMAIN, "password_expires_at": None},
            "audit_ids": [secrets.token_urlsafe(16)],
            "expires_at": _FAR_FUTURE,
            "issued_at": now,
            "project": {"id": ADMIN_PROJECT, "name": PROJECT_NAME, "domain": DOMAIN},
            "is_domain": False,
            "roles": [{"id": f"role-{name}", "name": name} for name in ("admin", "member", "reader")],
            "catalog": [
                {
                    "type": "image",
                    "name": "glance",
                    "id": self.image_service_id,
                    "endpoints": [
                        {
                            "id": str(uuid.uuid4()),
                            "interface": "public",
                            "region": region,
                            "region_id": region,
                            "url": url,
                        }
                        for region, url in self.endpoints
                    ],
                },
                {
                    "type": "identity",
                    "name": "keystone",
                    "id": "identity-service",
                    "endpoints": [
                        {
                            "id": f"identity-{region}",
                            "interface": "public",
                            "region": region,
                            "region_id": region,
                            "url": identity_url,
                        }
                        for region in sorted({r for r, _ in self.endpoints} or {"RegionOne"})
                    ],
                },
            ],
        }


def _error(status: int, title: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": {"code": status, "title": title, "message": message}})
    cls = web.HTTPUnauthorized if status == 401 else web.HTTPBadRequest
    return cls(text=body, content_type="application/json")


def _unauthorized() -> web.HTTPException:
    # Keystone says no more than this about which part was wrong.
    return _error(401, "Unauthorized", "The request you have made requires authentication.")


@contextlib.asynccontextmanager
async def serve_keystone(keystone: FakeKeystone) -> AsyncIterator[str]:
    """Serve ``keystone`` on 127.0.0.1 (a free port) for the block; yields its v3 auth URL."""
    runner = web.AppRunner(keystone.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v3"
    finally:
        await runner.cleanup()


@dataclasses.dataclass(frozen=True)
class PasswordCloud:
    """One clouds.yaml entry authenticating by password (``auth_type: password``)."""

    auth_url: str
    username: str
    password: str
    region: str = "RegionOne"

    def lines(self) -> list[str]:
        """The entry's lines under its name."""
        return [
            "    auth_type: password",
            f"    region_name: {self.region}",
            "    auth:",
            f"      auth_url: {self.auth_url}",
            f"      username: {json.dumps(self.username)}",
            f"      password: {json.dumps(self.password)}",
            f"      project_name: {PROJECT_NAME}",
            f"      user_domain_name: {DOMAIN['name']}",
            f"      project_domain_name: {DOMAIN['name']}",
        ]


@dataclasses.dataclass(frozen=True)
class AppCredentialCloud:
    """One clouds.yaml entry authenticating by application credential."""

    auth_url: str
    credential_id: str
    secret: str
    region: str = "RegionOne"

    def lines(self) -> list[str]:
        """The entry's lines under its name."""
        return [
            "    auth_type: v3applicationcredential",
            f"    region_name: {self.region}",
            "    auth:",
            f"      auth_url: {self.auth_url}",
            f"      application_credential_id: {json.dumps(self.credential_id)}",
            f"      application_credential_secret: {json.dumps(self.secret)}",
        ]


def write_keystone_clouds_yaml(path: Path, clouds: Mapping[str, PasswordCloud | AppCredentialCloud]) -> Path:
    """A clouds.yaml naming each entry as a Keystone-authenticated cloud."""
    lines = ["clouds:"]
    for name, cloud in clouds.items():
        lines += [f"  {name}:", *cloud.lines()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclasses.dataclass
class GuardedClouds:
    """A source and a destination Glance behind one Keystone, as clouds 'src' and 'dst'."""

    keystone: FakeKeystone
    src: FakeGlance
    dst: FakeGlance
    src_server: FakeServer
    dst_server: FakeServer
    auth_url: str
    clouds_yaml: Path
    password: str


@contextlib.asynccontextmanager
async def guarded_clouds(
    clouds_yaml: Path,
    *,
    password: str = "password",
    src: FakeGlance | None = None,
    dst: FakeGlance | None = None,
) -> AsyncIterator[GuardedClouds]:
    """Serve ``src`` (region ``RegionOne``, behind ``/image``) and ``dst`` (``RegionTwo``),
    both accepting only tokens of one Keystone whose user ``admin`` has ``password``, and
    write ``clouds_yaml`` naming them 'src' and 'dst'."""
    keystone = FakeKeystone(users={"admin": password})
    src = src or FakeGlance(prefix="/image")
    dst = dst or FakeGlance()
    async with FakeServer(src) as s_srv, FakeServer(dst) as d_srv, serve_keystone(keystone) as auth_url:
        keystone.add_image_endpoint(src, s_srv.url, "RegionOne")
        keystone.add_image_endpoint(dst, d_srv.url, "RegionTwo")
        write_keystone_clouds_yaml(
            clouds_yaml,
            {
                "src": PasswordCloud(auth_url, "admin", password, "RegionOne"),
                "dst": PasswordCloud(auth_url, "admin", password, "RegionTwo"),
            },
        )
        yield GuardedClouds(keystone, src, dst, s_srv, d_srv, auth_url, clouds_yaml, password)
