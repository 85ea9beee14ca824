"""How an HTTP answer becomes ours: the one boundary where aiohttp's exceptions and every
non-2xx status are translated (:func:`translating`, :func:`raise_for_status`) into the tree of
:mod:`asyncmigrate.errors`, and where a 2xx is checked for the shape Glance gives it (a JSON
object; a listing page) — a gateway's page answered 200 is an :class:`UnexpectedResponse`, never
data.  Used by :mod:`asyncmigrate.glance`, the only module that sends Glance requests.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from .errors import TransportError, UnexpectedResponse, error_excerpt, parse_retry_after, status_error

__all__ = [
    "REQUEST_ID",
    "Download",
    "excerpt",
    "json_object",
    "not_a_listing",
    "not_glance",
    "raise_for_status",
    "skew_of",
    "translating",
]

REQUEST_ID = "x-openstack-request-id"


# What glance's 413s wrap the cause in (webob's HTTPRequestEntityTooLarge, measured on glance 33):
# dropped, so the excerpt keeps the cause ("Project … is over a limit for [Resource …]").
_BOILERPLATE = re.compile(
    r"The request returned a \d+ [^.]*\.(?: This generally means [^.]*\.)?\s*The response body:\s*"
)


def excerpt(text: str, token: str | None) -> str:
    """A short, tag-free excerpt of a body, without the request's token (a proxy's error
    page may echo the headers) and with credentials redacted (Glance echoes store URIs)."""
    return error_excerpt(_BOILERPLATE.sub("", text.replace(token, "<token>") if token else text))


@contextlib.contextmanager
def translating(method: str, url: str) -> Iterator[None]:
    """Translate aiohttp/OS exceptions raised inside the block (the one boundary)."""
    try:
        yield
    except aiohttp.ClientResponseError as exc:
        raise status_error(exc.status, method=method, url=url, detail=exc.message) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"{type(exc).__name__}", method=method, url=url) from exc
    except TimeoutError as exc:
        raise TransportError("timed out", method=method, url=url) from exc


async def raise_for_status(resp: aiohttp.ClientResponse, method: str) -> None:
    if resp.status < 400:
        return
    with translating(method, str(resp.url)):
        body = await resp.text(errors="replace")
    raise status_error(
        resp.status,
        method=method,
        url=str(resp.url),
        request_id=resp.headers.get(REQUEST_ID),
        detail=excerpt(body, resp.request_info.headers.get("X-Auth-Token")),
        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
    )


def not_glance(resp: aiohttp.ClientResponse, method: str, body: bytes, why: str) -> UnexpectedResponse:
    """A 2xx that Glance would not send (e.g. a maintenance page answering 200 text/html)."""
    text = excerpt(body.decode(errors="replace"), resp.request_info.headers.get("X-Auth-Token"))
    return UnexpectedResponse(
        f"HTTP {resp.status} {resp.content_type}, {why}: {text}", method=method, url=str(resp.url)
    )


def json_object(resp: aiohttp.ClientResponse, method: str, body: bytes) -> dict[str, Any]:
    """The body as the JSON object every Glance v2 answer is, or UnexpectedResponse (retried)."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise not_glance(resp, method, body, "not JSON") from exc
    if not isinstance(value, dict):
        raise not_glance(resp, method, body, "not a JSON object")
    return value


def skew_of(date: str | None) -> float | None:
    """Seconds the clock behind a ``Date`` header is ahead of ours (None without a valid one)."""
    if not date:
        return None
    try:
        then = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        return None
    return then.timestamp() - time.time()


def not_a_listing(value: Any) -> str | None:
    """Why a 2xx answer to ``GET /v2/images`` is not Glance's listing page, or None when it is.

    A gateway's JSON error answered 200 (``{"error": …}``) must never read as the last page:
    the images after it would be silently left out, and ``sync`` would take the listing for
    complete.  Glance's page is ``{"images": [{"id": …}, …], "next": "/v2/images?…"}``
    (``next`` only while there is more).
    """
    if not isinstance(value, dict):
        return "an empty answer, not a listing page"
    images = value.get("images")
    if not isinstance(images, list):
        return "not a listing page (no 'images' list)"
    if not all(isinstance(i, dict) and isinstance(i.get("id"), str) and i["id"] for i in images):
        return "not a listing page (an entry without an image id)"
    if value.get("next") is not None and not isinstance(value["next"], str):
        return "not a listing page ('next' is not a link)"
    return None


class Download:
    """An open ``GET /v2/images/{id}/file`` response, read as chunks.

    ``status`` is 200 (whole image), 206 (from ``offset``) or 204 (no data).
    """

    def __init__(self, resp: aiohttp.ClientResponse, chunk_size: int) -> None:
        self._resp = resp
        self._chunk_size = chunk_size
        self.status = resp.status
        self.content_length = resp.content_length
        self.content_md5 = resp.headers.get("Content-MD5")
        self.content_range = resp.headers.get("Content-Range")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; transport failures become TransportError."""
        url = str(self._resp.url)
        iterator = self._resp.content.iter_chunked(self._chunk_size).__aiter__()
        while True:
            with translating("GET", url):
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield chunk
