"""A lenient ``GET`` for image data Glance serves with a broken header.

Glance writes ``str(image.size)`` into the download's ``Content-Length``; for
an image whose size was never recorded (old clouds hold such active images)
that is the literal ``Content-Length: None`` (glance 27.1.1 and 33 alike; glance 33
under gunicorn never sends it: gunicorn fails on the header itself and answers 500).
Every strict HTTP client refuses the response — aiohttp with 400 "Invalid
character in Content-Length", curl by aborting — so those images could never
be read.  This module reads one such response itself: it asks for
``Connection: close``, takes a header it cannot parse as "no length", and
reads the body by chunked encoding or until the server closes, which is how
HTTP/1.1 delimits a body without a valid length.

Only :meth:`asyncmigrate.glance.GlanceClient.download` uses it, for images
without a recorded size; every other request goes through aiohttp.  It goes
through the cloud's proxy as aiohttp does (:mod:`asyncmigrate.proxies`).  Transport
errors are translated here; the status is judged by ``glance.py``, as for
aiohttp's answers.
Memory: the stream reader holds at most ``2 × chunk_size`` before it pauses
the socket, like aiohttp's download buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from urllib.parse import urlsplit

import anyio

from .errors import TransportError, status_error
from .proxies import Proxy

__all__ = ["RawDownload", "raw_get"]

_MAX_HEAD = 64 * 1024  # status line + headers


class RawDownload:
    """An open response read by hand; the same reading interface as ``glance.Download``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        status: int,
        headers: Mapping[str, str],
        *,
        url: str,
        chunk_size: int,
        idle: float,
    ) -> None:
        self._reader = reader
        self._url = url
        self._chunk_size = chunk_size
        self._idle = idle
        self.status = status
        self.headers = headers
        length = headers.get("content-length", "").strip()
        self.content_length = int(length) if length.isdecimal() else None
        self.content_md5 = headers.get("content-md5")
        self.content_range = headers.get("content-range")
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()

    async def excerpt(self) -> str:
        """The start of the body (an error page's text), at most 4 KiB."""
        with self._translating():
            return (await self._read(4096)).decode("utf-8", "replace")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body: by chunked encoding, by a valid length, or until the server closes."""
        if self._chunked:
            async for piece in self._dechunked():
                yield piece
            return
        left = self.content_length
        while left is None or left > 0:
            want = self._chunk_size if left is None else min(self._chunk_size, left)
            with self._translating():
                piece = await self._read(want)
            if not piece:
                if left:
                    raise TransportError(f"connection closed {left} bytes before the end", method="GET", url=self._url)
                return
            if left is not None:
                left -= len(piece)
            yield piece

    async def _dechunked(self) -> AsyncIterator[bytes]:
        while True:
            with self._translating():
                line = await self._readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return
                left = size
                while left:
                    piece = await self._read(min(self._chunk_size, left))
                    if not piece:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(piece)
                    yield piece
                await self._readline()  # the CRLF after the chunk

    async def _read(self, n: int) -> bytes:
        with anyio.fail_after(self._idle):
            return await self._reader.read(n)

    async def _readline(self) -> bytes:
        with anyio.fail_after(self._idle):
            return await self._reader.readline()

    @contextlib.contextmanager
    def _translating(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError as exc:
            raise TransportError("timed out", method="GET", url=self._url) from exc
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise TransportError(type(exc).__name__, method="GET", url=self._url) from exc


@contextlib.asynccontextmanager
async def raw_get(
    url: str,
    headers: Mapping[str, str],
    *,
    ssl_context: ssl.SSLContext | bool,
    chunk_size: int,
    connect_timeout: float,
    idle: float,
    proxy: Proxy | None = None,
) -> AsyncIterator[RawDownload]:
    """``GET url`` with ``headers`` over a connection of its own, closed on exit — however
    the exit comes (a cancellation included).

    Through ``proxy`` when given, as aiohttp goes through it: an ``http://`` URL is asked of
    the proxy in absolute form, an ``https://`` one through a ``CONNECT`` tunnel.  Any status
    is handed back (``glance.py`` judges it, as it does aiohttp's answers); a proxy refusing
    the tunnel is that status; transport failures while connecting or reading the head are
    :class:`TransportError`.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname or ""
    authority = parts.netloc.rpartition("@")[2]
    context: ssl.SSLContext | None = None
    if tls:
        context = ssl_context if isinstance(ssl_context, ssl.SSLContext) else ssl.create_default_context()
        if ssl_context is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if proxy is not None and not tls:
        target = f"{parts.scheme}://{authority}{target}"  # absolute form: the proxy forwards it
    lines = [f"GET {target} HTTP/1.1", f"Host: {authority}", "Connection: close"]
    if proxy is not None and not tls and proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    lines += ["Accept-Encoding: identity", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer: asyncio.StreamWriter | None = None
    limit = max(chunk_size, _MAX_HEAD)
    try:
        try:
            with anyio.fail_after(connect_timeout):
                if proxy is None:
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=context, server_hostname=host if tls else None, limit=limit
                    )
                else:
                    reader, writer = await _via(proxy, authority, context if tls else None, host, limit)
            writer.write("\r\n".join(lines).encode("latin-1"))
            with anyio.fail_after(idle):
                await writer.drain()
                status, head = await _read_head(reader)
        except TimeoutError as exc:
            raise TransportError("timed out", method="GET", url=url) from exc
        except _TunnelRefused as exc:
            assert proxy is not None
            raise status_error(exc.status, method="CONNECT", url=proxy.shown, detail=str(exc)) from exc
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise TransportError(type(exc).__name__, method="GET", url=url) from exc
        yield RawDownload(reader, status, head, url=url, chunk_size=chunk_size, idle=idle)
    finally:
        if writer is not None:
            writer.close()


async def _via(
    proxy: Proxy, authority: str, context: ssl.SSLContext | None, host: str, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the proxy; for a TLS target, tunnelled (``CONNECT``) and then TLS to it."""
    proxy_tls = ssl.create_default_context() if proxy.scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        proxy.host, proxy.port, ssl=proxy_tls, server_hostname=proxy.host if proxy_tls else None, limit=limit
    )
    if context is None:
        return reader, writer
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    writer.write("\r\n".join([*lines, "", ""]).encode("latin-1"))
    await writer.drain()
    status, _head = await _read_head(reader)
    if status != 200:
        writer.close()
        raise _TunnelRefused(status)
    await writer.start_tls(context, server_hostname=host)
    return reader, writer


class _TunnelRefused(Exception):
    """The proxy answered ``CONNECT`` with another status than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the proxy refused the tunnel: HTTP {status}")
        self.status = status


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and headers (names lower-cased; a repeated header keeps its last value)."""
    status_line = (await reader.readline()).decode("latin-1")
    _version, _sep, rest = status_line.partition(" ")
    code = rest[:3]
    if not code.isdecimal():
        raise ValueError(f"not an HTTP status line: {status_line.strip()[:60]!r}")
    head: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            return int(code), head
        name, _colon, value = line.partition(":")
        head[name.strip().lower()] = value.strip()
