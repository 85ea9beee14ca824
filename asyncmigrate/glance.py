"""An asynchronous Glance v2 client on aiohttp — the only module that sends requests.

Every aiohttp exception and every non-2xx answer is translated at one boundary,
:func:`asyncmigrate.answers.translating` and its neighbours, into the tree of
:mod:`asyncmigrate.errors`; no other module imports aiohttp's exceptions.  Byte transfers
are exposed as async iterators (download) and async-iterable bodies (upload) so the caller
can chain stages between them without holding an image in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from .answers import (
    REQUEST_ID,
    Download,
    excerpt,
    json_object,
    not_a_listing,
    not_glance,
    raise_for_status,
    skew_of,
    translating,
)
from .clouds import Cloud
from .config import RetryPolicy, Timeouts
from .errors import (
    AuthenticationError,
    Forbidden,
    HTTPStatusError,
    NotFound,
    Unauthorized,
    UnexpectedResponse,
    parse_retry_after,
    status_error,
)
from .progress import Emit, HttpRequest, ignore
from .rawget import RawDownload, raw_get
from .retry import inside_unit, retried

__all__ = ["Download", "GlanceClient", "client_options", "open_glance"]

_JSON_PATCH = "application/openstack-images-v2.1-json-patch"


class GlanceClient:
    """Glance v2 on one endpoint, authenticated through a :class:`Cloud`.

    Every request, once answered (or failed without an answer), is one
    :class:`~asyncmigrate.progress.HttpRequest` event on ``emit``, labelled with
    the client's ``role`` ("source" or "destination").
    """

    def __init__(
        self,
        cloud: Cloud,
        http: aiohttp.ClientSession,
        *,
        chunk_size: int,
        retry: RetryPolicy,
        timeouts: Timeouts | None = None,
        role: str = "source",
        emit: Emit = ignore,
    ) -> None:
        self.cloud = cloud
        self.role = role
        self._emit = emit
        self._http = http
        self._chunk_size = chunk_size
        self._retry = retry
        self._timeouts = timeouts or Timeouts()
        base = cloud.endpoint.rstrip("/")
        # Catalog entries sometimes carry the version; every path we use has it.
        base = re.sub(r"/v2(\.\d+)?$", "", base)
        self.base = base
        self._skew: float | None = None  # the server's clock minus ours, from its first Date header

    # -- plumbing -----------------------------------------------------------

    def url(self, path: str) -> str:
        """Join an API path (``/v2/...``, as ``next`` links are) to the endpoint.

        The endpoint's own path prefix (e.g. ``/image``) is kept, which a plain
        ``urljoin`` would drop.
        """
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            prefix = urlsplit(self.base).path
            if prefix and path.startswith(prefix + "/"):
                path = path[len(prefix) :]
        return self.base + path

    def server_now(self) -> dt.datetime:
        """The server's clock now, as its first answer's ``Date`` header told it (to the second;
        our own clock until an answer had one)."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._skew or 0.0)

    @contextlib.contextmanager
    def _request(self, method: str) -> Iterator[Callable[[int], None]]:
        """Count one request: call the yielded function with its status when it is answered;
        one that raises before an answer counts with code ``"error"``."""
        answered = False

        def status(code: int) -> None:
            nonlocal answered
            answered = True
            self._emit(HttpRequest(self.role, method, str(code)))

        try:
            yield status
        except Exception:
            if not answered:
                self._emit(HttpRequest(self.role, method, "error"))
            raise

    async def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(await self.cloud.auth_headers())
        if extra:
            headers.update(extra)
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        shape: Callable[[Any], str | None] | None = None,
    ) -> tuple[int, Any]:
        """One small request; a 401 re-authenticates and is tried once more.

        ``shape`` says why a 2xx answer is not what Glance sends for this request (None:
        it is); such an answer is an :class:`UnexpectedResponse`, retried like any other.
        """
        url = self.url(path)
        for attempt in (1, 2):
            auth = await self.cloud.auth_headers()
            hdrs = {**auth, **(headers or {})}
            with self._request(method) as answered, translating(method, url):
                async with self._http.request(method, url, json=json, headers=hdrs, params=params) as resp:
                    answered(resp.status)
                    if resp.status == 401 and attempt == 1:
                        await self.cloud.invalidate(auth)
                        continue
                    await raise_for_status(resp, method)
                    if self._skew is None:
                        self._skew = skew_of(resp.headers.get("Date"))
                    body, value = b"", None
                    if resp.status != 204 and resp.content_length != 0:
                        body = await resp.read()
                        value = json_object(resp, method, body) if body else None
                    why = shape(value) if shape is not None else None
                    if why is not None:
                        raise not_glance(resp, method, body, why)
                    return resp.status, value
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        """A request whose 401-after-reauth is fatal, and whose GETs are retried — unless
        it runs inside a unit whose attempts are retried already (:func:`~asyncmigrate.retry.inside_unit`)."""
        try:
            if method == "GET" and not inside_unit():
                return (await retried(self._retry, lambda _n: self._send(method, path, **kw)))[1]
            return (await self._send(method, path, **kw))[1]
        except Unauthorized as exc:
            raise AuthenticationError(f"cloud {self.cloud.name!r} refused a renewed token ({exc})") from exc

    async def probe(self) -> None:
        """One cheap authenticated request, to fail fast on a bad endpoint or credentials
        (or something answering in Glance's place)."""
        await self.list_page({"limit": "1"})

    # -- discovery (see capabilities.py) --------------------------------------------

    async def versions(self) -> dict[str, Any] | None:
        """The version document (``GET /versions``); None when the endpoint has none."""
        try:
            body = await self._call("GET", "/versions")
        except NotFound:
            return None
        return body if isinstance(body, dict) else None

    async def import_methods(self) -> list[str]:
        """``GET /v2/info/import``'s methods; empty when the cloud has no import API (404)."""
        try:
            body = await self._call("GET", "/v2/info/import")
        except NotFound:
            return []
        methods = ((body or {}).get("import-methods") or {}).get("value") or []
        return [str(m) for m in methods]

    async def stores_detail(self) -> list[dict[str, Any]]:
        """The admin-only ``/v2/info/stores/detail`` entries (with ``type``); [] if refused or absent."""
        try:
            body = await self._call("GET", "/v2/info/stores/detail")
        except HTTPStatusError:
            return []
        return list((body or {}).get("stores", []))

    async def usage(self) -> dict[str, Any] | None:
        """``GET /v2/info/usage``'s ``usage``: the caller's project's quota usage and limits
        (``{}`` when Glance does not use Keystone unified limits); None when the endpoint is
        absent (Glance before Yoga) or refused."""
        try:
            body = await self._call("GET", "/v2/info/usage")
        except (NotFound, Forbidden):
            return None
        usage = (body or {}).get("usage")
        return usage if isinstance(usage, dict) else None

    # -- images -------------------------------------------------------------

    async def list_page(self, params: Mapping[str, str] | None, path: str = "/v2/images") -> dict[str, Any]:
        """One page of a listing: ``{"images": [...], "next": ...}``; any other answer is an
        :class:`UnexpectedResponse` (retried, then the listing's failure)."""
        page: dict[str, Any] = await self._call("GET", path, params=params, shape=not_a_listing)
        return page

    async def list_images(self, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Every image the listing returns for ``params``, following ``next`` links."""
        path: str | None = "/v2/images"
        query: Mapping[str, str] | None = params
        while path:
            page = await self.list_page(query, path)
            for image in page["images"]:
                yield image
            path = page.get("next")
            query = None  # the next link carries the query

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        """The image, or None when it does not exist (or is not visible)."""
        try:
            image: dict[str, Any] = await self._call("GET", f"/v2/images/{image_id}")
        except NotFound:
            return None
        return image

    async def create_image(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/images``; ``body`` may carry the ``id``."""
        image: dict[str, Any] = await self._call("POST", "/v2/images", json=dict(body))
        return image

    async def patch_image(self, image_id: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a JSON-patch to the image."""
        image: dict[str, Any] = await self._call(
            "PATCH", f"/v2/images/{image_id}", json=ops, headers={"Content-Type": _JSON_PATCH}
        )
        return image

    async def deactivate(self, image_id: str) -> None:
        """``POST /v2/images/{id}/actions/deactivate`` (admin)."""
        await self._call("POST", f"/v2/images/{image_id}/actions/deactivate")

    async def member_statuses(self, image_id: str) -> dict[str, str]:
        """{member project: status} of the image (a member without a status counts as pending)."""
        return {str(m["member_id"]): str(m.get("status") or "pending") for m in await self.list_members(image_id)}

    async def list_members(self, image_id: str) -> list[dict[str, Any]]:
        """The image's members with their status."""
        body = await self._call("GET", f"/v2/images/{image_id}/members")
        return list(body.get("members", [])) if body else []

    async def add_member(self, image_id: str, member: str) -> None:
        """Share the image with a project (status ``pending``)."""
        await self._call("POST", f"/v2/images/{image_id}/members", json={"member": member})

    async def set_member_status(self, image_id: str, member: str, status: str) -> None:
        """Set a member's status (an admin may do it for the member)."""
        await self._call("PUT", f"/v2/images/{image_id}/members/{member}", json={"status": status})

    async def reactivate(self, image_id: str) -> None:
        """``POST /v2/images/{id}/actions/reactivate`` (admin)."""
        await self._call("POST", f"/v2/images/{image_id}/actions/reactivate")

    async def remove_member(self, image_id: str, member: str) -> None:
        """Stop sharing the image with a project."""
        await self._call("DELETE", f"/v2/images/{image_id}/members/{member}")

    async def delete_image(self, image_id: str) -> None:
        """``DELETE /v2/images/{id}``: the id can never be used again (403 while ``protected``)."""
        await self._call("DELETE", f"/v2/images/{image_id}")

    # -- stores (multi-store Glance) ------------------------------------------

    async def stores_info(self) -> list[dict[str, Any]] | None:
        """``GET /v2/info/stores``; None when the cloud is not multi-store (404)."""
        try:
            body = await self._call("GET", "/v2/info/stores")
        except NotFound:
            return None
        return list(body.get("stores", [])) if body else []

    async def import_image(self, image_id: str, method: str, stores: list[str] | None) -> None:
        """``POST /v2/images/{id}/import`` (``copy-image`` into ``stores``, ``glance-direct``
        of the staged data); 202.  ``stores`` None: the default store (single-store clouds)."""
        body: dict[str, Any] = {"method": {"name": method}}
        if stores is not None:
            body["stores"] = stores
        await self._call("POST", f"/v2/images/{image_id}/import", json=body)

    async def image_tasks(self, image_id: str) -> list[dict[str, Any]]:
        """The image's import tasks (``GET /v2/images/{id}/tasks``)."""
        body = await self._call("GET", f"/v2/images/{image_id}/tasks")
        return list(body.get("tasks", [])) if body else []

    async def delete_from_store(self, store: str, image_id: str) -> None:
        """``DELETE /v2/stores/{store}/{id}``: drop the image's data from one store."""
        await self._call("DELETE", f"/v2/stores/{store}/{image_id}")

    # -- data ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def download(
        self, image_id: str, offset: int = 0, *, lenient: bool = False, prefer: str | None = None, ranged: bool = False
    ) -> AsyncIterator[Download | RawDownload]:
        """Open the image data, from ``offset`` when it is not 0 (``Range``).

        ``lenient``: read the response by hand (:mod:`asyncmigrate.rawget`), for
        images without a recorded size, which Glance serves with
        ``Content-Length: None``.  ``prefer``: ``?prefer=STORE`` (glance 33 serves
        that store's copy first).  ``ranged``: send ``Range`` even from byte 0 (the
        image cache never serves a ranged request: it reaches the stores).
        """
        url = self.url(f"/v2/images/{image_id}/file" + (f"?prefer={quote(prefer)}" if prefer else ""))
        extra = {"Range": f"bytes={offset}-"} if offset or ranged else {}
        if lenient:
            async with self._download_lenient(url, extra) as raw:
                yield raw
            return
        for attempt in (1, 2):
            auth = await self.cloud.auth_headers()
            with self._request("GET") as answered, translating("GET", url):
                resp = await self._http.get(url, headers={**auth, **extra})
                answered(resp.status)
            try:
                if resp.status == 401 and attempt == 1:
                    await self.cloud.invalidate(auth)
                    continue
                await raise_for_status(resp, "GET")
                if resp.content_type == "text/html":  # image data is never HTML: a proxy's page
                    with translating("GET", url):
                        page = await resp.content.read(4096)
                    raise not_glance(resp, "GET", page, "not image data")
                yield Download(resp, self._chunk_size)
                return
            finally:
                # Never hand a half-read connection back to the pool.
                resp.close()

    @contextlib.asynccontextmanager
    async def _download_lenient(self, url: str, extra: Mapping[str, str]) -> AsyncIterator[RawDownload]:
        for attempt in (1, 2):
            auth = await self.cloud.auth_headers()
            with self._request("GET") as answered:
                async with raw_get(
                    url,
                    {**auth, **extra},
                    ssl_context=self.cloud.ssl,
                    chunk_size=self._chunk_size,
                    connect_timeout=self._timeouts.connect,
                    idle=self._timeouts.idle_read,
                    proxy=self.cloud.proxy,
                ) as raw:
                    answered(raw.status)
                    if raw.status != 401 or attempt == 2:
                        if raw.status >= 400:
                            raise status_error(
                                raw.status,
                                method="GET",
                                url=url,
                                request_id=raw.headers.get(REQUEST_ID),
                                detail=excerpt(await raw.excerpt(), auth.get("X-Auth-Token")),
                                retry_after=parse_retry_after(raw.headers.get("retry-after")),
                            )
                        if raw.headers.get("content-type", "").startswith("text/html"):  # a proxy's page
                            page = excerpt(await raw.excerpt(), auth.get("X-Auth-Token"))
                            raise UnexpectedResponse(f"HTTP {raw.status} text/html, not image data: {page}", url=url)
                        yield raw
                        return
            await self.cloud.invalidate(auth)  # 401: renew the token once

    async def upload(
        self,
        image_id: str,
        body: AsyncIterable[bytes],
        *,
        size: int | None,
        store: str | None = None,
        stage: bool = False,
    ) -> None:
        """Stream ``body`` into ``PUT /v2/images/{id}/file`` (or ``…/stage`` with
        ``stage``): exactly ``size`` bytes, declared in ``Content-Length`` and
        ``x-openstack-image-size``; ``size`` None sends it chunked, declaring no size.

        If ``body`` raises, aiohttp drops the connection before the last byte:
        Glance sees a short body and returns the image to ``queued``.
        """
        url = self.url(f"/v2/images/{image_id}/{'stage' if stage else 'file'}")
        sized = {} if size is None else {"Content-Length": str(size), "x-openstack-image-size": str(size)}
        headers = await self._headers({"Content-Type": "application/octet-stream", **sized})
        if store:
            headers["X-Image-Meta-Store"] = store
        with self._request("PUT") as answered, translating("PUT", url):
            async with self._http.put(url, data=body, headers=headers) as resp:
                answered(resp.status)
                if resp.status == 401:
                    await self.cloud.invalidate(headers)
                await raise_for_status(resp, "PUT")
                answer = await resp.content.read(4096)  # a 204 has none; an odd answer: enough to show
                if answer.strip() and "json" not in resp.content_type:
                    # Glance answers 204; a page means something else took the request.
                    raise not_glance(resp, "PUT", answer, "not Glance's answer to an upload")


def client_options(config: Any) -> dict[str, Any]:
    """The :func:`open_glance` keyword arguments a Copy/MoveConfig describes."""
    return {
        "chunk_size": config.chunk_size,
        "concurrency": config.concurrency,
        "timeouts": config.timeouts,
        "retry": config.retry,
    }


@contextlib.asynccontextmanager
async def open_glance(
    cloud: Cloud,
    *,
    chunk_size: int,
    concurrency: int,
    timeouts: Timeouts,
    retry: RetryPolicy,
    role: str = "source",
    emit: Emit = ignore,
) -> AsyncIterator[GlanceClient]:
    """A :class:`GlanceClient` with its own aiohttp session, closed on exit; its requests
    are counted as ``role``'s on ``emit`` (:class:`~asyncmigrate.progress.HttpRequest`).

    ``read_bufsize = chunk_size`` bounds what aiohttp buffers per download
    (it pauses the socket at twice that); there is no total timeout.  Every
    request goes through the cloud's proxy (:mod:`asyncmigrate.proxies`), if
    the environment names one for its endpoint; ``trust_env`` stays off.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.idle_read)
    connector = aiohttp.TCPConnector(limit=concurrency * 2 + 4, ssl=cloud.ssl)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        read_bufsize=chunk_size,
        auto_decompress=False,
        raise_for_status=False,
        proxy=cloud.proxy.url if cloud.proxy is not None else None,
    ) as http:
        yield GlanceClient(cloud, http, chunk_size=chunk_size, retry=retry, timeouts=timeouts, role=role, emit=emit)
