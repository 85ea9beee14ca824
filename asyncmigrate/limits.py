"""Run-wide caps shared by every transfer: a bandwidth cap and an upload cap.

* :class:`Throttle` — ``--max-rate``: the bytes of all transfers together stay
  under a rate.  It is a virtual-clock token bucket (GCRA): each chunk reserves
  its slot on a shared timeline before it sleeps, so concurrent transfers
  share the rate fairly and no lock is needed (nothing awaits between reading
  and advancing the timeline).  Over any interval ``T`` at most
  ``burst + rate × T`` bytes pass.
* ``--max-uploads`` — destinations limit concurrent uploads per project; a
  capacity limiter bounds how many ``PUT …/file`` run at once.  A worker takes
  a slot *before* it opens the source download, so no source connection sits
  idle waiting for an upload slot (it would hit the idle-read timeout).

Neither holds data: memory is unchanged (the pipeline's bound in
:mod:`asyncmigrate.config` still applies).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

__all__ = ["Limits", "Throttle", "throttled"]


class Throttle:
    """At most ``rate`` bytes per second on average, bursts up to ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # "theoretical arrival time": when the timeline is free again

    async def take(self, n: int) -> None:
        """Wait until ``n`` more bytes may pass."""
        now = self._clock()
        start = max(self._tat, now)
        self._tat = start + n / self.rate
        wait = self._tat - self.burst / self.rate - now
        if wait > 0:
            await self._sleep(wait)


async def throttled(chunks: AsyncIterator[bytes], throttle: Throttle) -> AsyncIterator[bytes]:
    """Pass chunks on no faster than ``throttle`` allows (a pipeline stage)."""
    async for chunk in chunks:
        await throttle.take(len(chunk))
        yield chunk


class Limits:
    """The caps of one run, and what the run learned about the destination's limits;
    built inside the run (the limiter needs the event loop)."""

    def __init__(self, *, max_rate: int | None = None, max_uploads: int | None = None, chunk_size: int = 1) -> None:
        # A burst of a quarter second (at least two chunks) keeps the cap smooth
        # without stalling every chunk.
        self.throttle = Throttle(max_rate, burst=max(2 * chunk_size, max_rate // 4)) if max_rate else None
        self._uploads = anyio.CapacityLimiter(max_uploads) if max_uploads else None
        self.max_uploads = max_uploads
        # The destination's image_property_quota once a 413 has told it (Glance
        # does not publish it): later images above it are blocked before creating.
        self.property_quota: int | None = None

    def bound_uploads(self, most: int | None) -> None:
        """Lower the upload cap to ``most`` (the destination's image_count_uploading room),
        before any upload starts; None or a higher number changes nothing."""
        if most is not None and (self.max_uploads is None or most < self.max_uploads):
            self._uploads = anyio.CapacityLimiter(most)
            self.max_uploads = most

    @contextlib.asynccontextmanager
    async def upload_slot(self) -> AsyncIterator[None]:
        """Hold one of ``--max-uploads`` slots (no-op when uncapped)."""
        if self._uploads is None:
            yield
            return
        async with self._uploads:
            yield
