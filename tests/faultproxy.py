"""A fault-injecting HTTP proxy on 127.0.0.1, to put in front of a real glance-api (or the fake).

Requests are forwarded to one upstream, bodies streamed both ways (an image upload or download
is never held in memory); rules armed by the test act on matching requests instead::

    with FaultProxy.running("http://127.0.0.1:19293") as proxy:    # its own thread and loop
        proxy.answer("POST", r"^/v2/images$", 400, body="The Store URI was malformed: s3://k:s@h/b")
        proxy.answer("GET", r"^/v2/images$", 200, body="<html>maintenance</html>",
                     content_type="text/html")                      # a load balancer's page
        proxy.cut_after("GET", r"/file$", 1_000_000)                # drop the connection mid-body
        proxy.flip("PUT", r"/file$", 123_456, request=True)        # one byte inverted on its way in
        proxy.slice_whole("GET", r"/file$", 300_000)                # 206 with the first part only
        proxy.delay("GET", r"^/v2/images/[^/]+$", 0.5)
        gate = proxy.hold("GET", r"/file$")                          # held until gate.set()
        proxy.before("GET", r"^/v2/images$", unhide, query={"os_hidden": "true"})  # a change meanwhile
        ... point a clouds.yaml at proxy.url and run the CLI ...

Every rule matches a method (or ``"*"``) and a regex searched in the path; ``times`` shots (None:
every matching request), starting at the ``nth`` match. Only loopback upstreams are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "host", "content-length"}
)


@dataclasses.dataclass
class Rule:
    """One armed fault: what to match, what to do, how many shots are left."""

    method: str
    pattern: re.Pattern[str]
    kind: str  # "answer" | "cut" | "delay" | "before" | "hold" | "flip" | "flip-request" | "slice"
    times: int | None
    skip: int
    status: int = 0
    body: str = ""
    content_type: str = "text/plain"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    n_bytes: int = 0
    seconds: float = 0.0
    gate: threading.Event | None = None
    action: Callable[[], object] | None = None
    query: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def take(self, method: str, path: str, query: Mapping[str, str] | None = None) -> bool:
        """Does this request trigger the rule (consuming a shot)?"""
        if self.method not in ("*", method) or not self.pattern.search(path):
            return False
        if not all(_query_has(query or {}, k, v) for k, v in self.query.items()):
            return False
        if self.skip:
            self.skip -= 1
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclasses.dataclass
class Seen:
    """One request that went through the proxy, and what the proxy did to it."""

    method: str
    path: str
    status: int | None = None
    fault: str | None = None
    query: str = ""


class FaultProxy:
    """The proxy's rules and log; serve it with :meth:`running` (a thread) or :meth:`serve` (this loop)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the fault proxy only fronts loopback servers, not {upstream}")
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self.url = ""
        self.limit_max: int | None = None
        """Emulate a deployment whose ``api_limit_max`` is this: listings ask for at most this many."""
        self._lock = threading.Lock()

    # -- arming -------------------------------------------------------------------------------

    def _arm(self, method: str, path_regex: str, kind: str, times: int | None, nth: int, **kw: object) -> None:
        rule = Rule(method.upper(), re.compile(path_regex), kind, times, nth - 1, **kw)  # type: ignore[arg-type]
        with self._lock:
            self.rules.append(rule)

    def answer(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        body: str = "",
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
        times: int | None = 1,
        nth: int = 1,
    ) -> None:
        """Answer ``status`` with ``body`` instead of forwarding (a 200 ``text/html`` is a
        maintenance page; a 4xx/5xx body may echo whatever the test wants echoed)."""
        self._arm(
            method, path_regex, "answer", times, nth,
            status=status, body=body, content_type=content_type, headers=dict(headers or {}),
        )  # fmt: skip

    def cut_after(self, method: str, path_regex: str, n_bytes: int, *, times: int | None = 1, nth: int = 1) -> None:
        """Forward, but drop the connection after ``n_bytes`` of the response body."""
        self._arm(method, path_regex, "cut", times, nth, n_bytes=n_bytes)

    def flip(
        self, method: str, path_regex: str, offset: int, *, request: bool = False, times: int | None = 1, nth: int = 1
    ) -> None:
        """Forward, with the byte at ``offset`` of the response body (``request``: of the request
        body, e.g. an upload) inverted — silent corruption on the wire."""
        self._arm(method, path_regex, "flip-request" if request else "flip", times, nth, n_bytes=offset)

    def slice_whole(self, method: str, path_regex: str, n_bytes: int, *, times: int | None = 1, nth: int = 1) -> None:
        """Answer a request without ``Range`` whose upstream answer is a 200 of known length with
        ``206`` and only its first ``n_bytes`` (``Content-Range: bytes 0-{n-1}/{length}``), as a
        cache that serves in slices does."""
        self._arm(method, path_regex, "slice", times, nth, n_bytes=n_bytes)

    def delay(self, method: str, path_regex: str, seconds: float, *, times: int | None = 1, nth: int = 1) -> None:
        """Hold matching requests ``seconds`` before forwarding them."""
        self._arm(method, path_regex, "delay", times, nth, seconds=seconds)

    def hold(self, method: str, path_regex: str, *, times: int | None = 1, nth: int = 1) -> threading.Event:
        """Hold matching requests until the returned event is set (a window as long as the test wants)."""
        gate = threading.Event()
        self._arm(method, path_regex, "hold", times, nth, gate=gate)
        return gate

    def before(
        self,
        method: str,
        path_regex: str,
        action: Callable[[], object],
        *,
        query: dict[str, str | None] | None = None,
        times: int | None = 1,
        nth: int = 1,
    ) -> None:
        """Run ``action()`` (in a worker thread: someone else's change, e.g. a PATCH straight to
        the server) before forwarding a matching request that carries every ``query`` item (a
        value None: the key with any value, ``""``: the key absent)."""
        self._arm(method, path_regex, "before", times, nth, action=action, query=dict(query or {}))

    def clear(self) -> None:
        """Disarm every rule."""
        with self._lock:
            self.rules.clear()

    def matching(self, method: str, path_regex: str) -> list[Seen]:
        """Logged requests with this method (or ``"*"``) whose path matches."""
        pattern = re.compile(path_regex)
        return [s for s in list(self.seen) if method in ("*", s.method) and pattern.search(s.path)]

    def _take(self, kind: str, method: str, path: str, query: Mapping[str, str] | None = None) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self.rules:
                if rule.kind == kind and rule.take(method, path, query) and chosen is None:
                    chosen = rule
            return chosen

    # -- serving ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free loopback port in the running loop; yields the proxy's URL."""
        async with aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=600)
        ) as session:
            app = web.Application(client_max_size=0)

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._handle(request, session)

            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            try:
                yield self.url
            finally:
                await runner.cleanup()

    @classmethod
    @contextlib.contextmanager
    def running(cls, upstream: str) -> Iterator[FaultProxy]:
        """A proxy in front of ``upstream``, served by its own thread and event loop (for
        synchronous tests that run the CLI as a subprocess)."""
        proxy = cls(upstream)
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        async def main() -> None:
            async with proxy.serve():
                ready.set()
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="fault-proxy", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        try:
            yield proxy
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()

    async def _handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.StreamResponse:
        method, path = request.method, request.path
        seen = Seen(method, path, query=request.query_string)
        self.seen.append(seen)
        before = self._take("before", method, path, request.query)
        if before is not None and before.action is not None:
            await asyncio.to_thread(before.action)
        delay = self._take("delay", method, path)
        if delay is not None:
            await asyncio.sleep(delay.seconds)
        held = self._take("hold", method, path)
        if held is not None and held.gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, held.gate.wait)
        canned = self._take("answer", method, path)
        if canned is not None:
            seen.status, seen.fault = canned.status, "answer"
            await request.read()  # a real front end reads the request before answering
            return web.Response(
                status=canned.status, text=canned.body, content_type=canned.content_type, headers=canned.headers
            )
        cut = self._take("cut", method, path)
        flip = self._take("flip", method, path)
        flip_in = self._take("flip-request", method, path)
        cut_slice = None if "Range" in request.headers else self._take("slice", method, path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        body = _chunks(request, flip_in.n_bytes if flip_in else None, seen) if request.body_exists else None
        url = self.upstream + request.rel_url.raw_path_qs
        if self.limit_max is not None and method == "GET" and path.endswith("/v2/images"):
            query = request.rel_url.query.copy()
            query["limit"] = str(min(int(query.get("limit", self.limit_max)), self.limit_max))
            url = self.upstream + str(request.rel_url.with_query(query))
        async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as upstream:
            length = upstream.content_length
            sliced = cut_slice is not None and upstream.status == 200 and length is not None
            response = web.StreamResponse(status=206 if sliced else upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers[key] = value
            if sliced:
                assert cut_slice is not None and length is not None
                cut = dataclasses.replace(cut_slice, n_bytes=min(cut_slice.n_bytes, length))
                response.headers["Content-Range"] = f"bytes 0-{cut.n_bytes - 1}/{length}"
                response.content_length = cut.n_bytes
                seen.fault = "slice"
            elif length is not None:
                response.content_length = length
            seen.status = response.status
            await response.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                if flip is not None and sent <= flip.n_bytes < sent + len(chunk):
                    chunk = _inverted(chunk, flip.n_bytes - sent)
                    seen.fault = "flip"
                if sliced and cut is not None and sent + len(chunk) >= cut.n_bytes:
                    await response.write(chunk[: cut.n_bytes - sent])
                    await response.write_eof()
                    return response
                if cut is not None and sent + len(chunk) >= cut.n_bytes:
                    await response.write(chunk[: cut.n_bytes - sent])
                    seen.fault = "cut"
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response


def _query_has(query: Mapping[str, str], key: str, value: str | None) -> bool:
    if value is None:
        return key in query
    if value == "":
        return key not in query
    return query.get(key) == value


async def _chunks(request: web.Request, flip_at: int | None, seen: Seen) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        if flip_at is not None and received <= flip_at < received + len(chunk):
            chunk = _inverted(chunk, flip_at - received)
            seen.fault = "flip-request"
        received += len(chunk)
        yield chunk


def _inverted(chunk: bytes, at: int) -> bytes:
    """``chunk`` with its byte at ``at`` inverted."""
    return chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1 :]
