"""Serving a FakeGlance on loopback, with a stop/start that keeps the port."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .core import FakeGlance

# Handlers still running at shutdown (a hung download) get this long to notice.
_SHUTDOWN_TIMEOUT = 1.0


class FakeServer:
    """Runs a FakeGlance on ``host``; :meth:`stop` refuses connections, :meth:`start` resumes.

    The port is chosen on the first start (``port=0`` means a free one) and kept afterwards,
    so a client holding the URL sees the same endpoint come back. :meth:`listen` ends the
    refusals synchronously, for a restart timed from a callback (e.g. a retry hook).
    """

    def __init__(
        self, fake: FakeGlance, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.fake = fake
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # serve HTTPS with this context
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._listening: socket.socket | None = None

    @property
    def url(self) -> str:
        """The image endpoint, prefix included, e.g. ``http://127.0.0.1:PORT/image``."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{self.fake.prefix}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._site is not None

    async def start(self) -> str:
        """Start (or resume) listening; returns :attr:`url`."""
        if self._runner is None:
            self._runner = web.AppRunner(self.fake.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
            await self._runner.setup()
        if self._site is None:
            site: web.BaseSite
            if self._listening is not None:
                site = web.SockSite(self._runner, self._listening, ssl_context=self.ssl_context)
                self._listening = None
            else:
                site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
            await site.start()
            self._site = site
            self.port = self._runner.addresses[0][1]
        self.fake.server = self
        return self.url

    def listen(self) -> None:
        """Stop refusing connections now, without awaiting: bind and listen on the port.

        Connections then wait in the kernel's backlog until :meth:`start` (which must follow)
        serves them, so a synchronous callback can end an outage at an exact moment.
        """
        if self._site is None and self._listening is None:
            # socket.create_server sets SO_REUSEADDR, as TCPSite(reuse_address=True) does.
            self._listening = socket.create_server((self.host, self.port))

    async def stop(self) -> None:
        """Stop listening and drop every open connection, as if the server had died."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()

    async def close(self) -> None:
        """Stop for good: also run the app's cleanup (cancelling background imports)."""
        await self.stop()
        if self._listening is not None:
            self._listening.close()
            self._listening = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.fake.server is self:
            self.fake.server = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def serve(fake: FakeGlance, *, port: int = 0) -> AsyncIterator[str]:
    """Serve ``fake`` on 127.0.0.1 for the duration of the block; yields the base URL.

    ``fake.server`` is the running :class:`FakeServer`, for tests that stop and restart it.
    """
    async with FakeServer(fake, port=port) as server:
        yield server.url
