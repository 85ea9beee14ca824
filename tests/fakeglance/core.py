"""FakeGlance: the state of one fake cloud's image service and the aiohttp app serving it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.utils
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import data, images, members, quota, stores
from .backend import Backend
from .faults import Faults
from .listing import can_see
from .model import (
    ADMIN_PROJECT,
    ADMIN_USER,
    DEFAULT_STORES,
    Identity,
    ImageRecord,
    MemberRecord,
    fail,
    parse_time,
    render_image,
)
from .profiles import GLANCE_33, GlanceProfile

if TYPE_CHECKING:
    from .server import FakeServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class LoggedRequest:
    """One request as the fake saw it; ``status`` is None while it is still being handled."""

    method: str
    path: str
    """The path as glance sees it: without the deployment prefix, e.g. ``/v2/images``."""
    query: str
    headers: dict[str, str]
    """Request headers, with ``X-Auth-Token`` removed."""
    request_id: str
    status: int | None = None
    """The status the handler produced; when ``fault`` says the connection was dropped, the
    client never saw it."""
    fault: str | None = None
    """Set when the exchange did not end normally: ``fail_next``, ``cut_download``,
    ``hang_download``, ``cut_upload``, ``token_expired`` or ``client_disconnected``."""
    token: str | None = None
    """:func:`token_fingerprint` of the request's ``X-Auth-Token`` (None without one): which
    token a request carried, without the log holding the token itself."""
    peer_port: int | None = None
    """The client's port of the connection it came on (whether it came through a proxy)."""


def token_fingerprint(token: str) -> str:
    """A short, stable name for a token, as :attr:`LoggedRequest.token` records it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


LOG_ENTRY = web.RequestKey("fakeglance_log_entry", LoggedRequest)


class _FromProfile(enum.Enum):
    """Marker for "as the profile's default deployment" (a type distinct from None)."""

    DEFAULT = enum.auto()


FROM_PROFILE = _FromProfile.DEFAULT
"""``stores`` default of FakeGlance: DEFAULT_STORES for a multi-store profile, else None."""


class FakeGlance:
    """An in-process Glance v2 that enforces one release's rules and injects faults on demand.

    Serve it with :func:`tests.fakeglance.serve` (or :class:`FakeServer` to stop and restart
    it). ``profile`` is the Glance release it behaves as (:mod:`tests.fakeglance.profiles`;
    glance 33 by default). The API lives under ``prefix`` (``""`` or e.g. ``"/image"``) while
    every link glance returns (``next``, ``self``, ``file``) stays a bare ``/v2/...`` path, as
    real glance does. ``stores`` maps store ids to descriptions (multi-store mode); ``None``
    means a single-store glance without ``stores`` on images nor ``/v2/info/stores``; left out,
    it is the profile's default deployment (DEFAULT_STORES or None). ``import_methods`` left
    out is the release's default ``enabled_import_methods``.
    """

    def __init__(
        self,
        *,
        prefix: str = "",
        profile: GlanceProfile = GLANCE_33,
        stores: Mapping[str, str] | _FromProfile | None = FROM_PROFILE,
        default_store: str | None = None,
        show_multiple_locations: bool = False,
        import_methods: Iterable[str] | None = None,
        chunk_size: int = 65536,
        store_types: Mapping[str, str] | None = None,
    ) -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.profile = profile
        """The Glance release this fake behaves as."""
        if stores is FROM_PROFILE:
            stores = DEFAULT_STORES if profile.multi_store_by_default else None
        self.stores: dict[str, str] = dict(stores or {})
        if self.stores and profile.multi_store_versions is None:
            raise ValueError(f"glance {profile.glance_version} ({profile.name}) has no multi-store support")
        self.store_types: dict[str, str] = dict(store_types or {})
        """Driver type per store as ``/v2/info/stores/detail`` shows it (default ``file``)."""
        self.default_store = default_store or next(iter(self.stores), None)
        if self.stores and self.default_store not in self.stores:
            raise ValueError(f"default store {default_store!r} is not one of {list(self.stores)}")
        self.show_multiple_locations = show_multiple_locations
        if import_methods is not None and profile.import_methods is None:
            raise ValueError(f"glance {profile.glance_version} ({profile.name}) offers no image import by default")
        self.import_methods = tuple((profile.import_methods or ()) if import_methods is None else import_methods)
        """What ``/v2/info/import`` lists (and the ``OpenStack-image-import-methods`` header)."""
        self.chunk_size = chunk_size
        """Size of the pieces downloads are written in (glance's file store uses 64 KiB)."""
        self.certificates: set[str] = set()
        """Certificate ids in this cloud's key manager: a signed image's upload is verified against
        its ``img_signature_certificate_uuid`` (the signature itself is taken as good)."""
        self.swift_segment_size: int | None = None
        """glance_store 5.7.0's Swift regression: an upload into a ``swift`` store whose size
        is known (``x-openstack-image-size``, else ``Content-Length``) and at least this fails
        (500), as does a copy-image (it always knows the size); a chunked upload works."""
        self.convert_to: str | None = None
        """glance-direct imports run ``image_conversion`` into this disk format (None: no plugin)."""
        self.inject_properties: dict[str, str] = {}
        """The ``inject_image_metadata`` import plugin's ``inject`` (empty: the plugin is off):
        merged into an image's properties by every glance-direct import whose user has none of
        :attr:`inject_ignore_roles`."""
        self.inject_ignore_roles: frozenset[str] = frozenset({"admin"})
        """``[inject_metadata_properties] ignore_user_roles`` (glance's default: admin)."""
        self.property_quota = 128
        """Glance's ``image_property_quota`` (default 128; negative: unlimited)."""
        self.unified_limits: quota.UnifiedLimits | None = None
        """Keystone unified limits (``use_keystone_limits``; see :mod:`.quota`); None: off."""
        self.limit_max: int | None = None
        """This deployment's ``api_limit_max`` (None: the profile's default, 1000): the largest
        page served, whatever ``limit`` asks for."""
        self.download_from_store = True
        """Glance 33's ``download_from_store`` policy (``?prefer=``) allows downloads; False: 403."""
        self.honour_range = True
        """Whether downloads honour ``Range`` (206 from the offset); False models a source
        behind a proxy or store that ignores it and answers 200 with the whole body."""
        self.import_delay = 0.0
        # Time between a copy-image's new store appearing in ``stores`` and the task's final
        # save (lock released). Real glance 33 saves the image record it loaded earlier at that
        # point, so a store deleted in this window comes back (a lost update, seen on glance 33).
        self.import_finish_delay = 0.0
        """Seconds each store copy of a copy-image import takes."""
        self.images: dict[str, ImageRecord] = {}
        self.deleted: set[str] = set()
        """Ids of deleted images: glance never lets an id be used again."""
        self.members: dict[str, dict[str, MemberRecord]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[LoggedRequest] = []
        self.uploads_in_flight = 0  # PUT …/file being received now
        self.max_uploads_in_flight = 0  # the most seen at once
        self.faults = Faults()
        self.backend = Backend(self)
        """The objects behind the stores: shared, deleted, pinned by RBD clones, cached."""
        self.valid_tokens: set[str] | None = None
        """Tokens accepted in ``X-Auth-Token``; None turns authentication off."""
        self.server: FakeServer | None = None
        """The server currently running this fake, set by FakeServer."""
        self._background: set[asyncio.Task[None]] = set()
        self._last_now = dt.datetime.min.replace(tzinfo=dt.UTC)
        self.clock_offset = dt.timedelta()
        """How far the server's clock (timestamps, the ``Date`` header) is from the real time."""
        self._token_count = 0
        self.app = self._build_app()

    # -- configuration helpers for tests --------------------------------------------------

    @property
    def require_token(self) -> str | None:
        """The one token accepted, if exactly one is; set it to require it (None: no auth)."""
        if self.valid_tokens and len(self.valid_tokens) == 1:
            return next(iter(self.valid_tokens))
        return None

    @require_token.setter
    def require_token(self, token: str | None) -> None:
        self.valid_tokens = None if token is None else {token}

    def issue_token(self) -> str:
        """Mint a new valid token (turning authentication on), as Keystone would on re-auth."""
        self._token_count += 1
        token = f"fake-token-{self._token_count}"
        self.valid_tokens = (self.valid_tokens or set()) | {token}
        return token

    # -- seeding and inspecting state ------------------------------------------------------

    def add_image(self, data: bytes | None = None, **attrs: Any) -> dict[str, Any]:
        """Put an image straight into the fake's state and return its JSON.

        With ``data`` the image is ``active`` with size and hashes computed; without, it is
        ``queued``. ``status`` overrides (e.g. ``"deactivated"``, ``"killed"``, ``"saving"``);
        ``store="slow"`` or ``stores=["fast", "slow"]`` choose where the data lives (default
        store otherwise); ``id``, base attributes, ``tags``, ``created_at`` and ``updated_at``
        are taken as given; any other keyword becomes a custom property. On a release without
        ``os_hidden`` or multihash (see ``profile.missing_attrs``) those keys are custom
        properties too, so they must be strings.
        """
        image_id = str(attrs.pop("id", None) or uuid.uuid4())
        if image_id in self.images or image_id in self.deleted:
            raise ValueError(f"image id {image_id} is already used")
        now = self.now()
        created = parse_time(attrs.pop("created_at")) if "created_at" in attrs else now
        rec = ImageRecord(
            id=image_id,
            owner=ADMIN_PROJECT,
            created_at=created,
            updated_at=parse_time(attrs.pop("updated_at")) if "updated_at" in attrs else created,
            status=attrs.pop("status", "active" if data is not None else "queued"),
            tags=list(attrs.pop("tags", [])),
        )
        many, one = attrs.pop("stores", None), attrs.pop("store", None)
        where = many or one or self.default_store or ""
        where_list = where.split(",") if isinstance(where, str) else list(where)
        unknown = [s for s in where_list if self.stores and s not in self.stores]
        if unknown:
            raise ValueError(f"unknown stores {unknown}; configured: {list(self.stores)}")
        missing = self.profile.missing_attrs
        for key in missing:
            if key in attrs and not isinstance(attrs[key], str):
                raise ValueError(f"glance {self.profile.glance_version} images have no {key} attribute")
        for key in images.SETTABLE:  # tags were taken above
            if key in attrs and key not in missing:
                setattr(rec, key, attrs.pop(key))
        rec.properties = {key: str(value) for key, value in attrs.items()}
        if data is not None:
            rec.store_bytes(data, where_list if self.stores else [""])
            self.backend.written(rec, rec.data)
        self.images[image_id] = rec
        return self.get(image_id)

    def swift_fails_known_size(self, store: str, size: int | None) -> bool:
        """Whether an upload of ``size`` (None/0: unknown) into ``store`` hits the Swift regression."""
        limit = self.swift_segment_size
        return limit is not None and self.store_types.get(store) == "swift" and bool(size) and size >= limit

    def add_member(self, image_id: str, member_id: str, status: str = "pending") -> dict[str, Any]:
        """Share an image with a project directly in state, and return the member JSON."""
        now = self.now()
        member = MemberRecord(image_id, member_id, status, now, now)
        self.members.setdefault(image_id, {})[member_id] = member
        return member.render()

    def get(self, image_id: str) -> dict[str, Any]:
        """The image's JSON as ``GET /v2/images/{id}`` returns it (KeyError if there is none)."""
        return self.render(self.images[image_id])

    def data(self, image_id: str, store: str | None = None) -> bytes:
        """The image's bytes, from ``store`` or any store holding them (KeyError if none)."""
        rec = self.images[image_id]
        if store is not None:
            return rec.data[store]
        content = rec.content()
        if content is None:
            raise KeyError(f"image {image_id} holds no data")
        return content

    def requests_matching(self, method: str, path_regex: str) -> list[LoggedRequest]:
        """Logged requests with this method (or ``"*"``) whose path matches (``re.search``)."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if method in ("*", r.method) and pattern.search(r.path)]

    async def drain(self) -> None:
        """Wait until background work (copy-image imports) has finished."""
        while self._background:
            await asyncio.wait(set(self._background))

    # -- helpers for the handlers ----------------------------------------------------------

    @property
    def multi_store(self) -> bool:
        """Whether stores are configured (glance's ``enabled_backends``)."""
        return bool(self.stores)

    def now(self) -> dt.datetime:
        """The current time, strictly increasing so creation order is also sort order."""
        moment = dt.datetime.now(dt.UTC) + self.clock_offset
        if moment <= self._last_now:
            moment = self._last_now + dt.timedelta(microseconds=1)
        self._last_now = moment
        return moment

    def render(self, rec: ImageRecord) -> dict[str, Any]:
        """The image's JSON under this fake's configuration."""
        return render_image(
            rec,
            multi_store=self.multi_store,
            show_locations=self.show_multiple_locations,
            missing_attrs=self.profile.missing_attrs,
            url_of=self.backend.url,
        )

    def identity(self, request: web.Request) -> Identity:
        """The caller: ``X-Project-Id``/``X-Roles``/``X-User-Id``, else the admin of ADMIN_PROJECT.

        A request naming its own project without ``X-Roles`` is a plain member of it.
        """
        project = request.headers.get("X-Project-Id")
        default_roles = "admin,member,reader" if project is None else "member,reader"
        roles = request.headers.get("X-Roles", default_roles)
        return Identity(
            project_id=project or ADMIN_PROJECT,
            user_id=request.headers.get("X-User-Id", ADMIN_USER if project is None else f"user-{project}"),
            roles=frozenset(r.strip().lower() for r in roles.split(",") if r.strip()),
        )

    def lookup(self, image_id: str, identity: Identity) -> ImageRecord:
        """The image if the caller may see it; otherwise 404, as glance hides what you can't see."""
        rec = self.images.get(image_id)
        if rec is None or not can_see(rec, identity, self.members):
            raise fail(404, f"No image found with ID {image_id}")
        return rec

    def require_owner(self, rec: ImageRecord, identity: Identity, action: str = "modify") -> None:
        """403 unless the caller is an admin or a member of the owning project."""
        if not (identity.is_admin or (rec.owner == identity.project_id and "member" in identity.roles)):
            raise fail(403, f"You are not authorized to {action} image {rec.id}.")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run background work the way glance's task pool does, owned by the app.

        A bare task is deliberate: it models work that outlives the request, and the app's
        cleanup cancels and awaits whatever is left, so nothing escapes the test.
        """
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def log_entry(self, request: web.Request) -> LoggedRequest:
        """The log entry of the request being handled."""
        return request[LOG_ENTRY]

    def relative_path(self, request: web.Request) -> str:
        """The request path without the deployment prefix."""
        path = request.path
        return path[len(self.prefix) :] if path.startswith(self.prefix) else path

    # -- the app -----------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._log_middleware, self._fault_middleware, self._auth_middleware])
        for module in (stores, images, members, data, quota):
            for method, path, handler in module.routes(self):
                app.router.add_route(method, self.prefix + path, handler)
        app.on_response_prepare.append(self._add_request_id)
        app.on_cleanup.append(self._cancel_background)
        return app

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "x-auth-token"}
        token = request.headers.get("X-Auth-Token")
        entry = LoggedRequest(
            request.method,
            self.relative_path(request),
            request.query_string,
            headers,
            f"req-{uuid.uuid4()}",
            token=None if token is None else token_fingerprint(token),
        )
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        entry.peer_port = peer[1] if peer else None
        self.requests.append(entry)
        request[LOG_ENTRY] = entry
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            entry.status = exc.status
            raise
        entry.status = response.status
        return response

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for action in self.faults.take_actions(request.method, self.relative_path(request), request.query):
            action()
        delay = self.faults.take_delay(request.method, self.relative_path(request))
        if delay:
            await asyncio.sleep(delay)
        failure = self.faults.take_http_failure(request.method, self.relative_path(request))
        if failure is None:
            return await handler(request)
        self.log_entry(request).fault = "fail_next"
        headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
        body = failure.body
        if failure.echo:
            lines = [f"{request.method} {request.url}", *(f"{k}: {v}" for k, v in request.headers.items())]
            body = "\n".join([body, "", *lines])
        return web.Response(status=failure.status, text=body, headers=headers, content_type=failure.content_type)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Version discovery is outside glance's auth pipeline, as in a real deployment.
        if not self.relative_path(request).startswith("/v2"):
            return await handler(request)
        token = request.headers.get("X-Auth-Token")
        if self.faults.take_token_expiry(request.method, self.relative_path(request)):
            if self.valid_tokens is not None and token is not None:
                self.valid_tokens.discard(token)
            self.log_entry(request).fault = "token_expired"
            raise _unauthorized()
        if self.valid_tokens is not None and token not in self.valid_tokens:
            raise _unauthorized()
        return await handler(request)

    async def _add_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        entry = request.get(LOG_ENTRY)
        if entry is not None:
            response.headers["x-openstack-request-id"] = entry.request_id
        if self.clock_offset:
            response.headers["Date"] = email.utils.format_datetime(self.now(), usegmt=True)

    async def _cancel_background(self, _app: web.Application) -> None:
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background))


def _unauthorized() -> web.HTTPUnauthorized:
    # What keystonemiddleware answers for a missing or expired token.
    body = {
        "error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}
    }
    return web.HTTPUnauthorized(
        text=json.dumps(body),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Keystone uri="http://127.0.0.1:5000"'},
    )
