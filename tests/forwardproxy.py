"""A small forward proxy on 127.0.0.1, as a mandatory corporate proxy is: ``HTTP_PROXY`` clients
send it absolute-form requests (``GET http://host:port/path``), ``HTTPS_PROXY`` clients a
``CONNECT host:port`` tunnel. It logs every request it relays and may demand credentials::

    async with ForwardProxy(auth=("user", "pw")).serve() as proxy:     # this loop
        ... HTTP_PROXY=proxy.url_with_credentials ... run the CLI ...
        assert proxy.seen                                               # (method, target) pairs

    with ForwardProxy.running() as proxy:                               # its own thread
        ...

A relayed plain request is forwarded in origin form with ``Connection: close`` (the server then
closes after its answer, so each connection carries one request and every request is logged);
a tunnel is piped both ways untouched. Only loopback targets are relayed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_DROPPED = ("proxy-authorization", "proxy-connection", "connection", "keep-alive")


class ForwardProxy:
    """The proxy's log and settings; serve it with :meth:`serve` or :meth:`running`."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.seen: list[tuple[str, str]] = []
        """(method, target) of every request relayed: ``("GET", "http://127.0.0.1:9/v2/images")``,
        ``("CONNECT", "127.0.0.1:9")``."""
        self.refused: list[tuple[str, str]] = []
        """Requests answered 407 (no or wrong credentials)."""
        self.upstream_ports: set[int] = set()
        """The local ports of the proxy's connections to servers: a server seeing a request come
        from any other port was reached directly."""
        self.port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """The URL with the credentials it demands in its userinfo."""
        if self.auth is None:
            return self.url
        return f"http://{self.auth[0]}:{self.auth[1]}@127.0.0.1:{self.port}"

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.auth is None:
            return True
        expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return headers.get("proxy-authorization") == expected

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[ForwardProxy]:
        """Serve on a free loopback port in the running loop."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    @classmethod
    @contextlib.contextmanager
    def running(cls, auth: tuple[str, str] | None = None) -> Iterator[ForwardProxy]:
        """A proxy served by its own thread and loop (for tests that run the CLI as a subprocess)."""
        proxy = cls(auth)
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        async def main() -> None:
            async with proxy.serve():
                ready.set()
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="forward-proxy", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the forward proxy did not start")
        try:
            yield proxy
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, target, version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        raw_headers: list[tuple[str, str]] = []
        while (line := (await reader.readline()).decode("latin-1")) not in ("\r\n", "\n", ""):
            name, _colon, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
            raw_headers.append((name.strip(), value.strip()))
        if not self._authorized(headers):
            self.refused.append((method, target))
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n")
            writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host, _sep, port = target.rpartition(":")
            if host.strip("[]") not in _LOOPBACK:
                raise ValueError(f"not a loopback target: {target}")
            self.seen.append((method, target))
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            self.upstream_ports.add(up_writer.get_extra_info("sockname")[1])
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
            raise ValueError(f"not an absolute http URL of a loopback server: {target}")
        self.seen.append((method, target))
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        self.upstream_ports.add(up_writer.get_extra_info("sockname")[1])
        origin = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {origin} {version}"]
        head += [f"{k}: {v}" for k, v in raw_headers if k.lower() not in _DROPPED]
        head += ["Connection: close", "", ""]
        up_writer.write("\r\n".join(head).encode("latin-1"))
        await _pipe_both(reader, writer, up_reader, up_writer)


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until the server closes (the client's side then ends too)."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await src.read(64 * 1024):
                dst.write(chunk)
                await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()

    upstream = asyncio.ensure_future(pipe(reader, up_writer))
    try:
        await pipe(up_reader, writer)
    finally:
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upstream
        up_writer.close()
