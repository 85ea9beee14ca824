"""Clouds named as every OpenStack tool names them, authenticated by keystoneauth1.

``clouds.yaml`` (current dir, ``~/.config/openstack``, ``/etc/openstack``,
``OS_CLIENT_CONFIG_FILE``) and ``OS_*`` variables are read by openstacksdk's
config loader — the same code ``openstack`` CLI uses, so a cloud that works
there works here.  keystoneauth1 does the authentication and finds the image
endpoint.  Both are blocking, so every call into them goes through
``anyio.to_thread.run_sync``; the event loop never waits on Keystone.

Errors from both libraries are translated here and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import logging
import os
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from .errors import AuthenticationError, EndpointError, UsageError
from .proxies import Proxy, environment_proxy

__all__ = ["Cloud", "load_cloud", "same_glance"]

# Re-read the token from keystoneauth at most this often.  keystoneauth itself
# renews a token that is about to expire, so this only bounds the thread hops.
_TOKEN_RECHECK_SECONDS = 60.0
# ... and never hand out a token closer than this to its expiry: a short token
# lifetime (some clouds use minutes) would otherwise cost a 401 and a retry.
_TOKEN_MARGIN_SECONDS = 15.0


@dataclasses.dataclass
class Cloud:
    """One cloud's image endpoint and a way to get fresh auth headers.

    ``auth_headers`` caches keystoneauth's headers and re-asks keystoneauth
    (in a thread) every minute; ``invalidate`` forces re-authentication after a
    401, so every later request carries the new token.
    """

    name: str
    endpoint: str
    ssl: ssl.SSLContext | bool
    insecure: bool
    _session: Any = dataclasses.field(repr=False)
    project: str | None = None  # the token's project id (None: the authentication names none)
    region: str | None = None
    _headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    _projects: dict[str, bool | None] = dataclasses.field(default_factory=dict, repr=False)
    _projects_lock: anyio.Lock = dataclasses.field(default_factory=anyio.Lock, repr=False)
    _fresh_until: float = dataclasses.field(default=0.0, repr=False)
    _lock: anyio.Lock = dataclasses.field(default_factory=anyio.Lock, repr=False)
    proxy: Proxy | None = None
    """The proxy the image endpoint is reached through (the environment's, as keystoneauth's)."""

    async def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (``X-Auth-Token``), renewed as needed:
        re-read from keystoneauth every minute, and before the token's expiry."""
        if self._headers and time.monotonic() < self._fresh_until:
            return self._headers
        async with self._lock:
            if not self._headers or time.monotonic() >= self._fresh_until:
                await self._refresh()
        return self._headers

    async def _refresh(self) -> None:
        headers, lifetime = await anyio.to_thread.run_sync(self._fetch_headers)
        keep = (
            _TOKEN_RECHECK_SECONDS
            if lifetime is None
            else min(_TOKEN_RECHECK_SECONDS, lifetime - _TOKEN_MARGIN_SECONDS)
        )
        self._headers, self._fresh_until = headers, time.monotonic() + max(0.0, keep)

    async def invalidate(self, stale: dict[str, str]) -> None:
        """Drop the token after a 401 so the next request re-authenticates.

        ``stale`` is the header set the refused request carried; when another
        worker already renewed it, nothing more is done (no re-auth stampede).
        """
        async with self._lock:
            # Compare tokens, not dicts: callers pass copies with their own headers added.
            if self._headers and self._headers.get("X-Auth-Token") != stale.get("X-Auth-Token"):
                return
            self._headers = {}  # meanwhile auth_headers() waits on the lock for the new token
            await anyio.to_thread.run_sync(self._session.invalidate)
            await self._refresh()

    async def project_id(self, name: str) -> str:
        """The id of the project called ``name`` in this cloud's Keystone."""
        return await anyio.to_thread.run_sync(self._project_id_blocking, name)

    def _project_id_blocking(self, name: str) -> str:
        from keystoneauth1 import exceptions as ksa_exc

        try:
            resp = self._session.get(
                "/projects",
                params={"name": name},
                endpoint_filter={"service_type": "identity", "interface": "public", "version": (3, 0)},
            )
            projects = resp.json().get("projects", [])
        except (ksa_exc.ClientException, ValueError) as exc:
            raise UsageError(
                f"cannot resolve project name {name!r} in cloud {self.name!r} ({type(exc).__name__}); "
                "use the project id in --project-map"
            ) from exc
        if len(projects) != 1:
            raise UsageError(f"project name {name!r} matches {len(projects)} projects in cloud {self.name!r}")
        return str(projects[0]["id"])

    async def identity(self) -> str | None:
        """What this cloud's Keystone says it is: the id of the image service in the token's
        catalog, and the region (random per Keystone deployment, the same through any proxy
        or tunnel); None without Keystone or without an image service in the catalog."""
        return await anyio.to_thread.run_sync(self._identity_blocking)

    def _identity_blocking(self) -> str | None:
        from keystoneauth1.identity.base import BaseIdentityPlugin

        if not isinstance(self._session.auth, BaseIdentityPlugin):
            return None
        with _keystone_errors(self.name):
            access = self._session.auth.get_access(self._session)
        catalog = access.service_catalog.catalog if access.has_service_catalog() else []
        for service in catalog or []:
            if service.get("type") == "image" and service.get("id"):
                region = self.region or next(
                    (e.get("region_id") or e.get("region") for e in service.get("endpoints", [])
                     if str(e.get("url", "")).rstrip("/") == self.endpoint),
                    None,
                )  # fmt: skip
                return f"image service {service['id']} in region {region or '(any)'}"
        return None

    async def project_exists(self, project_id: str) -> bool | None:
        """Does this cloud's Keystone have the project (``GET /v3/projects/{id}``, once per id
        and run)?  None: it cannot be asked — no Keystone, or not allowed to read projects."""
        if project_id not in self._projects:
            async with self._projects_lock:  # one question per project, however many workers ask
                if project_id not in self._projects:
                    self._projects[project_id] = await anyio.to_thread.run_sync(self._project_blocking, project_id)
        return self._projects[project_id]

    def can_ask_projects(self) -> bool:
        """Is there a Keystone to ask about projects at all (not ``auth_type: none``)?"""
        from keystoneauth1.identity.base import BaseIdentityPlugin

        return isinstance(self._session.auth, BaseIdentityPlugin)

    def _project_blocking(self, project_id: str) -> bool | None:
        from keystoneauth1 import exceptions as ksa_exc

        if not self.can_ask_projects():
            return None
        try:
            with _keystone_errors(self.name):
                resp = self._session.get(
                    f"/projects/{project_id}",
                    endpoint_filter={"service_type": "identity", "interface": "public", "version": (3, 0)},
                    raise_exc=False,
                )
        except ksa_exc.EndpointNotFound:
            return None  # no identity endpoint in the catalog: nobody to ask
        if resp.status_code == 200:
            return True
        return False if resp.status_code == 404 else None  # 403: this caller may not read projects

    def _fetch_headers(self) -> tuple[dict[str, str], float | None]:
        """keystoneauth's headers, and the seconds their token has left (None: unknown)."""
        from keystoneauth1 import exceptions as ksa_exc

        try:
            headers = self._session.get_auth_headers() or {}
            lifetime = _seconds_left(getattr(self._session.auth, "auth_ref", None))
        except ksa_exc.Unauthorized as exc:
            raise AuthenticationError(f"cloud {self.name!r}: credentials refused by Keystone") from exc
        except ksa_exc.ConnectFailure as exc:
            raise EndpointError(f"cloud {self.name!r}: cannot reach Keystone") from exc
        except ksa_exc.ClientException as exc:
            raise AuthenticationError(f"cloud {self.name!r}: authentication failed: {type(exc).__name__}") from exc
        return {str(k): str(v) for k, v in headers.items()}, lifetime


@contextlib.contextmanager
def _keystone_errors(name: str) -> Iterator[None]:
    """keystoneauth's errors while talking to Keystone, as ours."""
    from keystoneauth1 import exceptions as ksa_exc

    try:
        yield
    except ksa_exc.Unauthorized as exc:
        raise AuthenticationError(f"cloud {name!r}: credentials refused by Keystone") from exc
    except ksa_exc.ConnectFailure as exc:
        raise EndpointError(f"cloud {name!r}: cannot reach Keystone") from exc
    except ksa_exc.EndpointNotFound:
        raise
    except ksa_exc.ClientException as exc:
        raise AuthenticationError(f"cloud {name!r}: authentication failed: {type(exc).__name__}") from exc


def _seconds_left(auth_ref: Any) -> float | None:
    """Seconds until a keystoneauth ``AccessInfo``'s token expires (None without one)."""
    expires = getattr(auth_ref, "expires", None)
    if expires is None:
        return None
    return float((expires - datetime.datetime.now(datetime.UTC)).total_seconds())


def _ssl_context(verify: Any, cert: Any, insecure: bool) -> ssl.SSLContext | bool:
    """Build what aiohttp's ``ssl=`` takes from keystoneauth's verify/cert."""
    if insecure or verify is False:
        return False
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if cert:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


class _Capture(logging.Handler):
    """Collects openstacksdk's config warnings (e.g. a clouds.yaml it skipped
    as unparseable) so they become part of our one-line error, not stray logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _capturing_config_warnings() -> Iterator[_Capture]:
    logger = logging.getLogger("openstack.config")
    capture = _Capture()
    propagate = logger.propagate
    logger.addHandler(capture)
    logger.propagate = False
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.propagate = propagate


def _load_blocking(name: str | None, insecure: bool) -> Cloud:
    import keystoneauth1.exceptions as ksa_exc
    import openstack.config
    import openstack.exceptions

    config: Any = None
    try:
        with warnings.catch_warnings(), _capturing_config_warnings() as capture:
            # openstacksdk warns about its own deprecated metrics options even
            # when none are configured; nothing an operator can act on.
            warnings.filterwarnings("ignore", module=r"openstack\.")
            config = openstack.config.OpenStackConfig(load_envvars=True)
            region = config.get_one(cloud=name) if name else config.get_one()
            session = region.get_session()
    except openstack.exceptions.ConfigException as exc:
        if name and "was not found" in str(exc):
            raise UsageError(_not_found(name, config)) from exc
        why = "; ".join(capture.messages)
        raise UsageError(f"cloud {name or '(from OS_* variables)'}: {exc}" + (f" ({why})" if why else "")) from exc
    except ksa_exc.ClientException as exc:
        raise UsageError(f"cloud {name!r}: bad auth configuration: {exc}") from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed clouds.yaml
        raise UsageError(f"cannot read cloud configuration: {exc}") from exc
    label = name or "envvars"
    try:
        endpoint = region.get_endpoint("image") or session.get_endpoint(
            service_type="image",
            interface=region.get_interface(),
            region_name=region.get_region_name("image"),
        )
    except ksa_exc.Unauthorized as exc:
        raise AuthenticationError(f"cloud {label!r}: credentials refused by Keystone") from exc
    except ksa_exc.ConnectFailure as exc:
        raise EndpointError(f"cloud {label!r}: cannot reach Keystone") from exc
    except ksa_exc.DiscoveryFailure as exc:
        # keystoneauth reports an unreachable unversioned auth_url this way.
        raise EndpointError(f"cloud {label!r}: cannot reach Keystone (no identity API at its auth_url)") from exc
    except ksa_exc.ClientException as exc:
        raise EndpointError(f"cloud {label!r}: no image endpoint: {type(exc).__name__}") from exc
    if not endpoint:
        raise EndpointError(f"cloud {label!r}: the catalog has no image endpoint")
    try:
        ssl_ctx = _ssl_context(session.verify, session.cert, insecure)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cloud {label!r}: cannot load TLS files: {exc}") from exc
    endpoint = str(endpoint).rstrip("/")
    try:
        project = session.get_project_id()  # the token is there already: the endpoint came from it
    except ksa_exc.ClientException:
        project = None
    return Cloud(
        name=label,
        endpoint=endpoint,
        ssl=ssl_ctx,
        insecure=ssl_ctx is False,
        _session=session,
        proxy=environment_proxy(endpoint),
        project=str(project) if project else None,
        region=region.get_region_name("image"),
    )


def _not_found(name: str, config: Any) -> str:
    """Which file was read (or that none was, or that OS_CLIENT_CONFIG_FILE names a missing one),
    the clouds it defines, and the closest name."""
    named = os.environ.get("OS_CLIENT_CONFIG_FILE")
    missing = (
        f"OS_CLIENT_CONFIG_FILE names {named}, which does not exist; " if named and not Path(named).exists() else ""
    )
    path = getattr(config, "config_filename", None)
    if path is None:
        looked = [str(Path(f).parent) for f in getattr(config, "_config_files", []) if f != named]
        folders = ", ".join(dict.fromkeys(looked)) or "the current directory, ~/.config/openstack, /etc/openstack"
        return f"cloud {name!r} not found: {missing}no clouds.yaml exists (looked in {folders})"
    clouds = sorted(str(c) for c in (getattr(config, "cloud_config", None) or {}).get("clouds", {}) or {})
    close = difflib.get_close_matches(name, clouds, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    defines = ", ".join(clouds) if clouds else "no clouds"
    return f"cloud {name!r} not found: {missing}{path} was read, which defines {defines}{hint}"


def _endpoint(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an image endpoint, as comparable as a URL allows."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    path = path[: -len("/v2")] if path.endswith("/v2") else path
    return (parts.hostname or "").lower(), port, path


def _addresses(host: str, port: int) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return set()  # unresolvable: nothing to compare (and nothing will be reached)


async def same_glance(a: Cloud, b: Cloud) -> bool:
    """Are two clouds one Glance: the same name, or image endpoints with the same port and
    path whose hosts are one name or share an address?  (Two URLs of one Glance this cannot
    tell apart, say through another port, only make every image already there: nothing is written.)"""
    if a.name == b.name:
        return True
    (host_a, port_a, path_a), (host_b, port_b, path_b) = _endpoint(a.endpoint), _endpoint(b.endpoint)
    if (port_a, path_a) != (port_b, path_b):
        return False
    if host_a == host_b:
        return True
    found_a = await anyio.to_thread.run_sync(_addresses, host_a, port_a)
    found_b = await anyio.to_thread.run_sync(_addresses, host_b, port_b)
    return bool(found_a & found_b)


async def load_cloud(name: str | None, *, insecure: bool = False) -> Cloud:
    """Load a cloud by name (or from ``OS_*`` variables when ``name`` is None).

    Raises :class:`UsageError` for configuration problems and
    :class:`AuthenticationError`/:class:`EndpointError` when Keystone refuses
    or cannot be reached.
    """
    return await anyio.to_thread.run_sync(_load_blocking, name, insecure)
