"""No outcome states a destination fact older than the run without checking it: an image skipped
on the strength of the catalog read at the start, then deleted or changed at the destination
while the run went on, is judged again against a second listing at the end."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import anyio
import pytest

from asyncmigrate import RunResult, copy_images
from asyncmigrate.progress import Event, ImageDone, ImageRejudged
from asyncmigrate.sync import sync_images
from tests.conftest import Clouds, fast_config
from tests.test_sync import sync_config


def _image(clouds: Clouds, name: str, size: int = 200_000) -> str:
    data = os.urandom(size)
    return str(clouds.src.add_image(data, name=name, disk_format="raw", container_format="bare")["id"])


async def _while_running(
    clouds: Clouds, run: Callable[[], Awaitable[RunResult]], done_first: str, meanwhile: Callable[[], Awaitable[None]]
) -> RunResult:
    """Run ``run``; once ``done_first`` has its result and another image is still streaming, do
    ``meanwhile`` to the destination (as a person or another tool would)."""
    result: list[RunResult] = []

    async def act() -> None:
        while not any(isinstance(e, ImageDone) and e.result.id == done_first for e in clouds.events):
            await anyio.sleep(0.005)
        await meanwhile()
        clouds.src.faults.clear()  # let the slow image finish now

    async with anyio.create_task_group() as tg:
        tg.start_soon(act)
        result.append(await run())
    return result[0]


async def _delete_at_destination(clouds: Clouds, image_id: str) -> None:
    async with aiohttp.ClientSession(clouds.dst_server.url) as http, http.delete(f"/v2/images/{image_id}") as resp:
        assert resp.status == 204


async def test_copy_reports_an_image_deleted_at_the_destination_during_the_run(clouds: Clouds, tmp_path: Path) -> None:
    """Skipped at the start ("already at the destination"), deleted there while another image
    streams: reported failed with why it cannot be re-created, exit 1, not recorded as brought."""
    there = _image(clouds, "there")
    journal = tmp_path / "pair.sqlite"
    assert (await copy_images(fast_config(journal=journal), clouds.src_cloud, clouds.dst_cloud)).exit_code == 0
    slow = _image(clouds, "slow")
    clouds.src.faults.slow_download(slow, 100_000)
    run = await _while_running(
        clouds,
        lambda: copy_images(fast_config(journal=journal), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit),
        there,
        lambda: _delete_at_destination(clouds, there),
    )
    outcomes = {r.id: (r.outcome, r.reason) for r in run.images}
    assert outcomes[slow][0] == "copied" and int(run.exit_code) == 1
    outcome, reason = outcomes[there]
    assert outcome == "failed" and reason.startswith("deleted at the destination during this run")
    assert "already at the destination" in reason and "never reuses a deleted image's id" in reason
    rejudged = [(e.result.id, e.was, e.result.outcome) for e in clouds.events if isinstance(e, ImageRejudged)]
    assert rejudged == [(there, "skipped", "failed")]  # the console prints it; counted once
    with sqlite3.connect(journal) as db:  # the pair's record: the only pair this journal holds
        record = {row[0] for row in db.execute("SELECT id FROM brought")}
    assert there not in record and slow in record
    # The end's check costs one listing of the destination, and one GET confirming the image gone.
    assert [r.status for r in clouds.dst.requests_matching("GET", rf"^/v2/images/{there}$")] == [200, 404]


async def test_copy_judges_again_an_image_changed_at_the_destination_during_the_run(clouds: Clouds) -> None:
    """Skipped at the start, changed at the destination meanwhile: handled again from a fresh read,
    so the report says what the destination holds now (here: a conflict), not "skipped"."""
    there = _image(clouds, "there")
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    slow = _image(clouds, "slow")
    clouds.src.faults.slow_download(slow, 100_000)

    async def change() -> None:
        clouds.dst.images[there].min_ram = 2048

    run = await _while_running(
        clouds, lambda: copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit), there, change
    )
    outcomes = {r.id: (r.outcome, r.reason) for r in run.images}
    assert outcomes[there] == ("conflict", "destination differs in: min_ram") and outcomes[slow][0] == "copied"


async def test_sync_judges_again_what_changed_or_vanished_at_the_destination(clouds: Clouds, tmp_path: Path) -> None:
    """sync: an image level at the start, renamed at the destination meanwhile, is levelled
    again in the same run; one deleted there meanwhile is reported, not "already level"."""
    renamed, deleted = _image(clouds, "renamed"), _image(clouds, "deleted")
    await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    slow = _image(clouds, "slow")
    clouds.src.faults.slow_download(slow, 100_000)

    async def meddle() -> None:
        clouds.dst.images[renamed].name = "someone else's name"
        await _delete_at_destination(clouds, deleted)

    run = await _while_running(
        clouds,
        lambda: sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit),
        deleted,
        meddle,
    )
    outcomes = {r.id: r for r in run.images}
    assert outcomes[renamed].outcome == "updated" and outcomes[renamed].changes == {
        "name": ["someone else's name", "renamed"]
    }
    assert outcomes[deleted].outcome == "failed" and "deleted at the destination during this run" in (
        outcomes[deleted].reason
    )
    assert clouds.dst.get(renamed)["name"] == "renamed" and outcomes[slow].outcome == "copied"


@pytest.mark.parametrize("command", ["copy", "sync"])
async def test_a_stop_after_the_last_image_still_checks_the_first_read(
    clouds: Clouds, tmp_path: Path, command: str
) -> None:
    """A stop (Ctrl-C, SIGTERM) that comes once every image is done cuts nothing short, so the run
    still ends as complete — and then its end-of-run check must still run: an image deleted at the
    destination meanwhile is reported, exit 1, never "skipped" with exit 0 on a first-read fact."""
    there = _image(clouds, "there")
    assert (await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)).exit_code == 0
    fresh = _image(clouds, "fresh")
    stop = anyio.Event()

    def emit(event: Event) -> None:
        clouds.emit(event)
        done = {e.result.id for e in clouds.events if isinstance(e, ImageDone)}
        if {there, fresh} <= done and not stop.is_set():
            stop.set()  # the signal after the last image ...
            # ... and, meanwhile, someone deletes the image the run found there at its start.
            rec = clouds.dst.images.pop(there)
            clouds.dst.backend.delete_image(rec)
            clouds.dst.deleted.add(there)

    if command == "copy":
        run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=emit, stop=stop)
    else:  # no journal: no removed images left to judge, so the stop cut nothing short
        config = sync_config(tmp_path, journal=None)
        run = await sync_images(config, clouds.src_cloud, clouds.dst_cloud, emit=emit, stop=stop)
    outcomes = {r.id: r.outcome for r in run.images}
    assert stop.is_set() and not run.interrupted
    assert outcomes == {there: "failed", fresh: "copied"} and int(run.exit_code) == 1


@pytest.mark.parametrize("command", ["copy", "sync"])
async def test_a_run_cut_short_says_its_first_read_was_not_checked_again(
    clouds: Clouds, tmp_path: Path, command: str
) -> None:
    """A stop while images are still to do cuts the run short and checks nothing more (new work
    after the door closed); each result resting on the first read says so, none states it as
    checked."""
    there = _image(clouds, "there")
    assert (await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)).exit_code == 0
    later = [
        str(clouds.src.add_image(os.urandom(50_000), name=f"later-{i}", created_at="2001-01-01T00:00:00Z")["id"])
        for i in range(6)
    ]
    stop = anyio.Event()

    def emit(event: Event) -> None:
        clouds.emit(event)
        if isinstance(event, ImageDone) and event.result.id == there:
            stop.set()

    config = fast_config(concurrency=1) if command == "copy" else sync_config(tmp_path, journal=None, concurrency=1)
    runner = copy_images if command == "copy" else sync_images
    run = await runner(config, clouds.src_cloud, clouds.dst_cloud, emit=emit, stop=stop)  # type: ignore[operator]
    assert run.interrupted and len(run.images) < 1 + len(later), run.images
    (skipped,) = [r for r in run.images if r.id == there]
    assert skipped.outcome == "skipped" and "not checked again: the run was cut short" in skipped.reason
    assert all("not checked again" not in r.reason for r in run.images if r.id != there)
