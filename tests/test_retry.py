"""The retry budget (--retry-deadline) counts time spent failing and waiting, never time
spent transferring or waiting for an upload slot; Retry-After is honoured up to what is
left of it. The loop's own tests run on a fake clock and never sleep."""

from __future__ import annotations

import os

import pytest

from asyncmigrate import RetryPolicy, copy_images
from asyncmigrate.errors import ServerStatusError, TransportError
from asyncmigrate.retry import Budget, retried
from tests.conftest import Clouds, fast_config
from tests.test_faults import _assert_intact

MiB = 1 << 20


class FakeTime:
    """A clock that only moves when something sleeps on it (or a test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _policy(time: FakeTime, **kw: float) -> RetryPolicy:
    values = {"attempts": 5, "deadline": 10, "wait_initial": 1, "wait_max": 4, "wait_jitter": 0, **kw}
    return RetryPolicy(sleep=time.sleep, clock=time.clock, **values)  # type: ignore[arg-type]


async def test_an_attempt_that_keeps_progressing_is_not_charged_for_its_length() -> None:
    """Three attempts of 100 s each, all moving bytes until a cut at the end, fit a 10 s budget."""
    time = FakeTime()
    policy = _policy(time)
    budget = Budget(policy)

    async def attempt(number: int) -> str:
        for _ in range(100):  # a chunk a second for 100 s
            time.now += 1
            budget.progress()
        if number < 3:
            raise TransportError("cut near the end")
        return "done"

    assert await retried(policy, attempt, budget=budget) == "done"
    assert time.slept == [1, 2]  # exponential backoff
    assert budget.spent == 3  # only the waits


async def test_an_attempt_that_moves_nothing_is_charged_in_full() -> None:
    """An attempt that fails after 8 s without progress, plus its backoff, spends a 10 s budget."""
    time = FakeTime()
    policy = _policy(time)
    calls = 0

    async def attempt(number: int) -> None:
        nonlocal calls
        calls += 1
        time.now += 8
        raise TransportError("refused")

    with pytest.raises(TransportError):
        await retried(policy, attempt)
    # 8 (first) + 1 (backoff) = 9 < 10: one more; 9 + 8 = 17: spent.
    assert calls == 2 and time.slept == [1]


async def test_time_before_progress_is_not_charged() -> None:
    """Waiting for an upload slot (marked as progress once obtained) is not failing."""
    time = FakeTime()
    policy = _policy(time, deadline=5)
    budget = Budget(policy)

    async def attempt(number: int) -> None:
        time.now += 600  # queued behind --max-uploads
        budget.progress()  # slot obtained
        time.now += 1
        if number == 1:
            raise TransportError("reset at the first byte")

    await retried(policy, attempt, budget=budget)
    assert budget.spent == 2  # 1 s failing + 1 s backoff


async def test_retry_after_is_honoured_beyond_wait_max_up_to_the_budget() -> None:
    """Retry-After: 45 is waited in full (not capped at wait_max); 3600 is cut to what is left."""
    for asked, expected in ((45, [45.0]), (3600, [100.0])):
        time = FakeTime()
        policy = _policy(time, deadline=100, wait_max=30)

        async def attempt(number: int, asked: float = asked) -> None:
            if number == 1:
                raise ServerStatusError(503, method="GET", url="http://x/v2/images", retry_after=asked)

        await retried(policy, attempt)
        assert time.slept == expected


async def test_long_transfer_cut_near_the_end_is_retried(clouds: Clouds) -> None:
    """An 8 MiB image throttled to 4 MiB/s (2 s) with a 1 s --retry-deadline, its upload cut
    near the end: it is retried (the transfer's length is not failing) and arrives bit-exact."""
    data = os.urandom(8 * MiB)
    image_id = clouds.src.add_image(data, name="long", disk_format="raw", container_format="bare")["id"]
    clouds.dst.faults.cut_upload_after(image_id, 8 * MiB - 256 * 1024)
    policy = RetryPolicy(attempts=3, deadline=1, wait_initial=0, wait_max=0, wait_jitter=0)
    config = fast_config(retry=policy, max_rate=4 * MiB, chunk_size=256 * 1024)
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    result = run.images[0]
    assert (result.outcome, result.attempts) == ("copied", 2), result.reason
    assert run.seconds > 3  # two throttled transfers really ran, each longer than the deadline
    _assert_intact(clouds, image_id, data)


async def test_waiting_for_an_upload_slot_does_not_spend_the_budget(clouds: Clouds) -> None:
    """With --max-uploads 1, an image that waited ~1 s for its slot (longer than the 0.6 s
    --retry-deadline) and is then cut at once is still retried and copied."""
    first = os.urandom(4 * MiB)
    second = os.urandom(1 * MiB)
    a = clouds.src.add_image(first, name="a", disk_format="raw", container_format="bare")["id"]
    clouds.src.faults.slow_download(a, 4 * MiB)  # ~1 s holding the only slot
    b = clouds.src.add_image(second, name="b", disk_format="raw", container_format="bare")["id"]
    clouds.dst.faults.delay_next("GET", rf"^/v2/images/{b}$", 0.3)  # so a takes the slot first
    clouds.dst.faults.cut_upload_after(b, 64 * 1024)
    policy = RetryPolicy(attempts=3, deadline=0.6, wait_initial=0, wait_max=0, wait_jitter=0)
    config = fast_config(retry=policy, max_uploads=1, concurrency=2)
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    by_id = {r.id: r for r in run.images}
    assert by_id[a].outcome == "copied"
    assert (by_id[b].outcome, by_id[b].attempts) == ("copied", 2), by_id[b].reason
    assert clouds.dst.max_uploads_in_flight == 1
    _assert_intact(clouds, b, second)


async def test_retry_after_beyond_wait_max_is_honoured_end_to_end(clouds: Clouds) -> None:
    """A 503 with Retry-After: 3600 on the destination look-up is waited up to the whole
    --retry-deadline (120 s here, through the injected sleep: the test never waits)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    data = os.urandom(100_000)
    image_id = clouds.src.add_image(data, name="ra", disk_format="raw", container_format="bare")["id"]
    clouds.dst.faults.fail_next("GET", rf"^/v2/images/{image_id}$", status=503, retry_after=3600)
    policy = RetryPolicy(attempts=3, deadline=120, wait_initial=0, wait_max=30, wait_jitter=0, sleep=sleep)
    run = await copy_images(fast_config(retry=policy), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied"
    (wait,) = waits
    assert 119 < wait <= 120
    _assert_intact(clouds, image_id, data)


async def test_a_failing_read_inside_an_image_costs_attempts_not_attempts_squared(clouds: Clouds) -> None:
    """A read that always fails inside an image's attempt is tried once per attempt (the image's
    --retries is the one loop), while a listing page that fails is still retried on its own."""
    data = os.urandom(1000)
    image = clouds.src.add_image(data, name="img", disk_format="raw", container_format="bare")
    path = rf"^/v2/images/{image['id']}$"
    clouds.dst.faults.fail_next("GET", path, 503, retry_after=0, times=None)
    run = await copy_images(fast_config(image_ids=(image["id"],)), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert (result.outcome, result.attempts) == ("failed", 4) and "503" in result.reason
    assert len(clouds.dst.requests_matching("GET", path)) == 4  # was 16: four GETs in each of four attempts
    clouds.dst.faults.clear()
    clouds.src.faults.fail_next("GET", r"^/v2/images$", 503, retry_after=0, times=2, nth=2)  # listing pages
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in run.images] == [("copied", 1)] and run.incomplete is None
    _assert_intact(clouds, image["id"], data)
