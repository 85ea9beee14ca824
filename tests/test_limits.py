"""Run-wide caps: ``--max-rate`` (Throttle) and ``--max-uploads``."""

from __future__ import annotations

import os
import time

import anyio
import pytest

from asyncmigrate import copy_images
from asyncmigrate.config import CopyConfig, MoveConfig
from asyncmigrate.errors import UsageError
from asyncmigrate.limits import Throttle
from tests.conftest import Clouds, fast_config


class _Clock:
    """A virtual clock: sleeping advances it, nothing really waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_throttle_keeps_every_interval_under_burst_plus_rate() -> None:
    """Whatever the chunk sizes, bytes passed by time t never exceed burst + rate × t."""
    clock = _Clock()
    throttle = Throttle(1000, burst=300, clock=clock, sleep=clock.sleep)
    passed = 0
    for n in [100, 250, 50, 400, 1, 999, 120] * 20:
        await throttle.take(n)
        passed += n
        assert passed <= 300 + 1000 * clock.now + 1e-6
    # and the rate is reached, not just respected: the last chunk waited only as needed
    assert clock.now == pytest.approx((passed - 300) / 1000, rel=1e-9)


async def test_throttle_is_shared_fairly_by_concurrent_takers() -> None:
    """Two transfers sharing one throttle get the rate between them, not each."""
    clock = _Clock()
    throttle = Throttle(1000, burst=100, clock=clock, sleep=clock.sleep)
    done: dict[str, int] = {"a": 0, "b": 0}

    async def transfer(name: str) -> None:
        for _ in range(50):
            await throttle.take(20)
            done[name] += 20
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(transfer, "a")
        tg.start_soon(transfer, "b")
    assert done == {"a": 1000, "b": 1000}
    assert clock.now >= (2000 - 100) / 1000 - 1e-9


async def test_throttle_idle_time_does_not_bank_more_than_the_burst() -> None:
    clock = _Clock()
    throttle = Throttle(1000, burst=200, clock=clock, sleep=clock.sleep)
    clock.now = 100.0  # a long idle spell
    start = clock.now
    for _ in range(10):
        await throttle.take(100)
    assert clock.now - start == pytest.approx((1000 - 200) / 1000)


async def test_max_rate_caps_a_real_copy(clouds: Clouds) -> None:
    """Two 256 KiB images at 512 KiB/s (burst 128 KiB) cannot finish in under 0.75 s; uncapped they take ~0.1 s."""
    for i in range(2):
        clouds.src.add_image(os.urandom(256 * 1024), name=f"r{i}", disk_format="raw", container_format="bare")
    config = fast_config(concurrency=2, chunk_size=16 * 1024, max_rate=512 * 1024)
    t0 = time.monotonic()
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    elapsed = time.monotonic() - t0
    assert run.count("copied") == 2 and run.failed == 0
    assert elapsed >= (512 - 128) / 512 - 0.01


async def test_max_uploads_bounds_concurrent_puts(clouds: Clouds) -> None:
    """With slow sources, four workers upload four at a time; --max-uploads 1 makes it one."""
    ids = [
        clouds.src.add_image(os.urandom(64 * 1024), name=f"u{i}", disk_format="raw", container_format="bare")["id"]
        for i in range(4)
    ]
    for image_id in ids:
        clouds.src.faults.slow_download(image_id, 512 * 1024)  # ~0.13 s each: they overlap when allowed to

    run = await copy_images(fast_config(concurrency=4, max_uploads=1), clouds.src_cloud, clouds.dst_cloud)
    assert run.count("copied") == 4
    assert clouds.dst.max_uploads_in_flight == 1


async def test_uploads_overlap_without_the_cap(clouds: Clouds) -> None:
    """The control for the test above: the same set-up overlaps uploads when uncapped."""
    ids = [
        clouds.src.add_image(os.urandom(64 * 1024), name=f"u{i}", disk_format="raw", container_format="bare")["id"]
        for i in range(4)
    ]
    for image_id in ids:
        # ~0.5 s each: long enough that four workers overlap however loaded the machine is
        clouds.src.faults.slow_download(image_id, 128 * 1024)
    run = await copy_images(fast_config(concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert run.count("copied") == 4
    assert clouds.dst.max_uploads_in_flight > 1


def test_caps_are_validated() -> None:
    with pytest.raises(UsageError, match="--max-rate"):
        CopyConfig(max_rate=1000)
    with pytest.raises(UsageError, match="--max-uploads"):
        CopyConfig(max_uploads=0)
    with pytest.raises(UsageError, match="--max-uploads"):
        MoveConfig(from_store="a", to_store="b", max_uploads=1000)


def test_flags_reach_the_configs() -> None:
    from asyncmigrate.options import build_parser, copy_config, move_config

    p = build_parser()
    copy = copy_config(
        p.parse_args(["copy", "--src-cloud", "a", "--dst-cloud", "b", "--max-rate", "200MiB", "--max-uploads", "3"])
    )
    assert (copy.max_rate, copy.max_uploads) == (200 * 1024 * 1024, 3)
    move = move_config(
        p.parse_args(
            [
                "move",
                "--cloud",
                "a",
                "--from-store",
                "x",
                "--to-store",
                "y",
                "--method",
                "location",
                "--max-rate",
                "1GiB",
            ]
        )
    )
    assert (move.max_rate, move.max_uploads) == (1024**3, None)
    plain = copy_config(p.parse_args(["copy", "--src-cloud", "a", "--dst-cloud", "b"]))
    assert (plain.max_rate, plain.max_uploads) == (None, None)
