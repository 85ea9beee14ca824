"""Prometheus metrics (``--metrics-addr``): one more subscriber to the progress events.

:class:`Metrics` sits beside the terminal and JSON renderers on the CLI's
``emit``: it turns the events the core emits anyway into ``prometheus_client``
counters and gauges.  The core knows nothing of Prometheus; this is the only
module that imports ``prometheus_client``.  HTTP requests are counted from
:class:`~asyncmigrate.progress.HttpRequest` events, one per request, which the
one HTTP boundary (``glance.py``) emits; bytes from the per-chunk
:class:`~asyncmigrate.progress.BytesMoved` events (one counter increment each).

:func:`serve` answers ``GET /metrics`` on the run's own event loop (an aiohttp
server in the run's task, no thread); a scrape renders the registry with
``prometheus_client``'s encoder for the format the scraper asks for.  After the run, :meth:`MetricsServer.linger`
keeps answering until one scrape has read the final values (``--metrics-linger``,
for a batch job whose last scrape would otherwise miss its end).

Series (every one labelled ``shard="K/N"`` when ``--shard`` is given), announced
with HELP and TYPE from the first scrape, before they have samples:

==============================================  =======  ==========================================
``asyncmigrate_images_total{command,outcome}``  counter  images that reached an outcome (the report's)
``asyncmigrate_bytes_transferred_total``        counter  bytes sent; a retry's rewind is not subtracted
``asyncmigrate_images_planned``                 gauge    images the listing has handed on so far
``asyncmigrate_bytes_planned``                  gauge    their bytes
``asyncmigrate_listing_complete``               gauge    1 once the listing was read to its end
``asyncmigrate_transfers_in_flight``            gauge    images whose bytes are moving now
``asyncmigrate_retries_total{reason}``          counter  attempts retried, by kind of failure (bounded)
``asyncmigrate_http_requests_total{cloud,method,code}``  counter  requests (cloud: source|destination)
``asyncmigrate_run_start_timestamp_seconds``    gauge    when the run started (Unix time)
``asyncmigrate_last_image_done_timestamp_seconds``  gauge  when the last image reached its outcome
``asyncmigrate_run_end_timestamp_seconds``      gauge    when the run ended (0 while it runs)
==============================================  =======  ==========================================
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder

from .errors import FAILURE_KINDS, UsageError
from .progress import BytesMoved, Event, HttpRequest, ImageDone, ImageQueued, ListingDone, Retrying, TransferStarted

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Metrics", "MetricsServer", "parse_addr", "serve"]

_M = TypeVar("_M", Counter, Gauge)

# A sample per image outcome, kind of failure and answer: counters, never a name or id.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series


class Metrics:
    """The run's metrics, updated from progress events (call it with each event)."""

    def __init__(self, command: str, shard: str | None = None) -> None:
        self.command = command
        self.registry = CollectorRegistry(auto_describe=True)
        base = ["shard"] if shard is not None else []
        self._shard = {"shard": shard} if shard is not None else {}
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, [*base, *labels], registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, base, registry=r)

        def one(metric: _M) -> _M:  # the one series of a metric without event labels
            return metric.labels(**self._shard) if self._shard else metric

        self._images = counter("asyncmigrate_images", "Images that reached an outcome.", "command", "outcome")
        self._retries = counter("asyncmigrate_retries", "Attempts retried, by kind of failure.", "reason")
        self._http = counter("asyncmigrate_http_requests", "HTTP requests to the clouds.", "cloud", "method", "code")
        # The others have one series each, created now: they show 0 from the first scrape (the
        # labelled ones above show their HELP and TYPE until their first sample).
        self._bytes = one(counter("asyncmigrate_bytes_transferred", "Bytes sent (a retry's rewind not subtracted)."))
        self._planned = one(gauge("asyncmigrate_images_planned", "Images the listing has handed on so far."))
        self._planned_bytes = one(gauge("asyncmigrate_bytes_planned", "Bytes of the images listed so far."))
        self._listed = one(gauge("asyncmigrate_listing_complete", "1 once the listing was read to its end."))
        self._in_flight = one(gauge("asyncmigrate_transfers_in_flight", "Images whose bytes are moving now."))
        self._started = one(gauge("asyncmigrate_run_start_timestamp_seconds", "When the run started (Unix time)."))
        self._last_done = one(
            gauge("asyncmigrate_last_image_done_timestamp_seconds", "When the last image reached its outcome.")
        )
        self._ended = one(gauge("asyncmigrate_run_end_timestamp_seconds", "When the run ended (Unix time; 0 before)."))
        self._started.set(time.time())
        self._moving: set[str] = set()
        self._requests: dict[tuple[str, str, str], Counter] = {}  # each labelled series, looked up once
        self._outcomes: dict[str, Counter] = {}

    def __call__(self, event: Event) -> None:
        """Apply one event (on the event loop; cheap: one or two metric updates)."""
        if isinstance(event, BytesMoved):  # the per-chunk event: first, and one increment
            self._bytes.inc(event.n)
        elif isinstance(event, HttpRequest):
            key = (event.cloud, event.method, event.code)
            series = self._requests.get(key)
            if series is None:  # labels() validates and locks: once per (cloud, method, code)
                series = self._requests[key] = self._http.labels(
                    **self._shard, cloud=key[0], method=key[1], code=key[2]
                )
            series.inc()
        elif isinstance(event, ImageQueued):
            self._planned.inc()
            self._planned_bytes.inc(event.size)
        elif isinstance(event, ListingDone):
            self._listed.set(1)
        elif isinstance(event, TransferStarted):
            self._moving.add(event.image_id)
            self._in_flight.set(len(self._moving))
        elif isinstance(event, Retrying):
            reason = event.kind if event.kind in FAILURE_KINDS else "other"
            self._retries.labels(**self._shard, reason=reason).inc()
        elif isinstance(event, ImageDone):
            outcome = event.result.outcome
            if outcome not in self._outcomes:
                self._outcomes[outcome] = self._images.labels(**self._shard, command=self.command, outcome=outcome)
            self._outcomes[outcome].inc()
            self._moving.discard(event.result.id)
            self._in_flight.set(len(self._moving))
            self._last_done.set(time.time())

    def ended(self) -> None:
        """The run is over: its figures are final."""
        self._moving.clear()
        self._in_flight.set(0)
        self._ended.set(time.time())

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every series name this registry exports (``…_total`` for counters), samples or not."""
        names: set[str] = set()
        for family in self.registry.collect():
            names.add(family.name + "_total" if family.type == "counter" else family.name)
        return names


def parse_addr(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9100"`` → ``("127.0.0.1", 9100)``; ``"[::1]:9100"``; ``":9100"`` means every
    interface (for a pod scraped on its IP)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics-addr takes HOST:PORT, e.g. 127.0.0.1:9100 (got {text!r})")
    return host.strip("[]") or "0.0.0.0", int(port)  # ":PORT" asks for every interface


class MetricsServer:
    """``GET /metrics`` served from :class:`Metrics` while the run goes on (see :func:`serve`)."""

    def __init__(self, metrics: Metrics, addr: tuple[str, int]) -> None:
        import anyio

        self.metrics = metrics
        self.addr = addr
        self.scrapes = 0
        self._over: float | None = None  # monotonic time the run ended
        self._final_read = anyio.Event()  # a scrape started after the end was answered

    async def handle(self, request: web.Request) -> web.Response:
        """One scrape."""
        from aiohttp import web

        began = time.monotonic()
        # The format the scraper asks for (Prometheus prefers OpenMetrics; else text 0.0.4).
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encode(self.metrics.registry)
        self.scrapes += 1
        if self._over is not None and began >= self._over:
            self._final_read.set()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def linger(self, seconds: float) -> bool:
        """Mark the run over, then keep serving until a scrape has read the final values, at
        most ``seconds``; True if one did.  A signal (Ctrl-C, SIGTERM) ends the wait at once."""
        import signal

        import anyio

        self.metrics.ended()
        self._over = time.monotonic()
        if seconds <= 0:
            return False
        with anyio.move_on_after(seconds), anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def on_signal() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()

                tg.start_soon(on_signal)
                await self._final_read.wait()
                tg.cancel_scope.cancel()
        return self._final_read.is_set()


@contextlib.asynccontextmanager
async def serve(addr: str, metrics: Metrics) -> AsyncIterator[MetricsServer]:
    """Listen on ``addr`` (HOST:PORT) for ``GET /metrics`` until the block ends.

    The port is bound before the block runs: one in use (or not ours to bind) is
    a :class:`UsageError` before anything is done.
    """
    from aiohttp import web

    host, port = parse_addr(addr)
    server = MetricsServer(metrics, (host, port))
    app = web.Application()
    app.router.add_get("/metrics", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise UsageError(f"--metrics-addr {addr}: cannot listen there ({exc.strerror or exc})") from exc
        yield server
    finally:
        await runner.cleanup()
