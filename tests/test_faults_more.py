"""More faults: a source that cannot resume, 429 + Retry-After, a destination that refuses
connections for a while, and a throttled source. Each ends bit-exact under the same id,
nothing corrupt committed, nothing deleted; no test sleeps on a retry."""

from __future__ import annotations

import time

import anyio
import pytest

from asyncmigrate import RetryPolicy, Timeouts, copy_images
from asyncmigrate.progress import Retrying
from tests.conftest import FAST_RETRY, Clouds, fast_config
from tests.test_faults import _assert_intact, _image


class Waits:
    """An injected retry sleep that records each wait it is asked for and returns at once."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)


async def test_cut_source_that_ignores_range_restarts_the_image(clouds: Clouds) -> None:
    """A cut source that answers a resume with 200 (Range ignored) aborts the upload (the
    destination is queued again, nothing committed) and the image is copied again from byte 0."""
    image_id, data = _image(clouds, size=1_000_000)
    clouds.src.honour_range = False
    clouds.src.faults.cut_download_after(image_id, 400_000)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    result = run.images[0]
    assert result.outcome == "copied" and result.attempts == 2
    # The retry found the destination queued again: it uploaded into it, not finished it.
    assert result.action == "upload"
    assert result.bytes == len(data)
    gets = clouds.src.requests_matching("GET", "/file$")
    # The cut read, the resume answered 200 from byte 0 (refused, not spliced in), the fresh read.
    assert [(g.status, "Range" in g.headers) for g in gets] == [(200, False), (200, True), (200, False)]
    assert gets[0].fault == "cut_download"
    puts = clouds.dst.requests_matching("PUT", "/file$")
    assert [p.fault for p in puts] == ["client_disconnected", None] and puts[1].status == 204
    (retry,) = [e for e in clouds.events if isinstance(e, Retrying)]
    assert 0 < retry.rewound <= 400_000
    _assert_intact(clouds, image_id, data)


async def test_429_retry_after_replaces_the_backoff(clouds: Clouds) -> None:
    """429 + ``Retry-After: 0`` on the upload is retried after the server's wait, not the policy's 2 s."""
    image_id, data = _image(clouds)
    clouds.dst.faults.fail_next("PUT", r"/file$", status=429, retry_after=0)
    waits = Waits()
    policy = RetryPolicy(attempts=3, deadline=60, wait_initial=2, wait_max=2, wait_jitter=0, sleep=waits)
    run = await copy_images(fast_config(retry=policy), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2
    assert waits.seen == [0]
    _assert_intact(clouds, image_id, data)


@pytest.mark.timeout(20)
async def test_429_on_a_get_is_retried_by_the_image_attempt(clouds: Clouds) -> None:
    """A 429 on the destination look-up is retried by the image's attempt (one retry loop, not one
    per request: a second attempt), after the server's ``Retry-After`` (an hour, cut to the 60 s
    deadline; never slept)."""
    image_id, data = _image(clouds)
    clouds.dst.faults.fail_next("GET", rf"^/v2/images/{image_id}$", status=429, retry_after=3600)
    waits = Waits()
    policy = RetryPolicy(attempts=4, deadline=60, wait_initial=0, wait_max=0, wait_jitter=0, sleep=waits)
    run = await copy_images(fast_config(retry=policy), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2
    (wait,) = waits.seen
    assert 59 < wait <= 60
    _assert_intact(clouds, image_id, data)


async def test_destination_refusing_connections_for_a_while(clouds: Clouds) -> None:
    """The destination dies mid-upload and refuses connections; the run keeps retrying (no
    waits) and, once it is back after three retries while it is down, the image arrives bit-exact."""
    image_id, data = _image(clouds)
    clouds.src.faults.slow_download(image_id, 1_500_000)  # keeps the upload in flight ~0.2 s
    back = anyio.Event()
    refused = 0

    async def sleep(seconds: float) -> None:
        # Called before each retry, in the retrying task: listen() makes the very next
        # connection attempt succeed, so the count of refused retries is exact.
        nonlocal refused
        refused += 1
        if refused == 3:
            clouds.dst_server.listen()
            back.set()

    async def outage() -> None:
        while not clouds.dst.requests_matching("PUT", "/file$"):  # the upload has reached it
            await anyio.sleep(0.005)
        await clouds.dst_server.stop()
        clouds.src.faults.slow_download(image_id, None)
        await back.wait()
        await clouds.dst_server.start()

    policy = RetryPolicy(attempts=FAST_RETRY.attempts, deadline=60, wait_initial=0, wait_max=0, sleep=sleep)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outage)
        run = await copy_images(fast_config(retry=policy), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
        if not back.is_set():
            tg.cancel_scope.cancel()  # the run gave up: don't wait for a restart that never comes
    result = run.images[0]
    assert result.outcome == "copied", result.reason
    assert refused == 3 and clouds.dst_server.running
    # The cut upload, then two attempts refused at their first request: each refusal is an attempt.
    assert result.attempts == 4 and result.bytes == len(data)
    puts = clouds.dst.requests_matching("PUT", "/file$")
    assert len(puts) == 2 and puts[0].fault == "client_disconnected" and puts[1].status == 204
    assert len([e for e in clouds.events if isinstance(e, Retrying)]) == 3
    _assert_intact(clouds, image_id, data)


async def test_throttled_source_is_read_patiently(clouds: Clouds) -> None:
    """A source trickling its bytes for longer than the idle-read timeout, but never idle that
    long, is read in one attempt and one request: the timeout is per read, not per transfer."""
    image_id, data = _image(clouds, size=300_000)
    clouds.src.faults.slow_download(image_id, 400_000)  # ~0.75 s, a write every 0.1 s
    config = fast_config(timeouts=Timeouts(connect=5, idle_read=0.4))
    started = time.monotonic()
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert time.monotonic() - started >= 0.7  # it really was throttled, past the idle timeout
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 1
    assert len(clouds.src.requests_matching("GET", "/file$")) == 1
    _assert_intact(clouds, image_id, data)


async def test_retrying_event_says_why(clouds: Clouds) -> None:
    """The Retrying event names the error that failed the previous attempt."""
    image_id, _ = _image(clouds)
    clouds.dst.faults.cut_upload_after(image_id, 100_000)
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    (retry,) = [e for e in clouds.events if isinstance(e, Retrying)]
    assert "PUT" in retry.reason
