"""Maintenance windows (``--max-duration``): once the window has passed no new image is started,
those in flight finish (bounded by the grace), the run ends incomplete saying how many are left,
and the same command continues later."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from asyncmigrate import copy_images, sync_images
from asyncmigrate.errors import UsageError
from asyncmigrate.progress import ImageDone, WindowClosed, WindowGraceOver
from asyncmigrate.storemove import move_images
from asyncmigrate.window import Window, format_duration, parse_duration
from tests.conftest import Clouds, fast_config
from tests.test_cli import _cli
from tests.test_move import One, _add, cfg, one  # noqa: F401  (the fixture)
from tests.test_sync import sync_config

SLOW = 500_000  # bytes/s per download: a 100 kB image takes ~0.2 s


def _catalog(clouds: Clouds, n: int) -> dict[str, bytes]:
    images = {}
    for i in range(n):
        data = os.urandom(100_000 + i)
        image = clouds.src.add_image(data, name=f"w-{i:02d}", disk_format="raw", container_format="bare")
        clouds.src.faults.slow_download(image["id"], SLOW)
        images[image["id"]] = data
    return images


def _after_close(events: list[object]) -> list[ImageDone]:
    closed = next(i for i, e in enumerate(events) if isinstance(e, WindowClosed))
    return [e for e in events[closed:] if isinstance(e, ImageDone)]


def test_durations_parse_and_print() -> None:
    """90m, 8h, 1h30m, 45s and bare seconds parse; nonsense and zero are usage errors."""
    assert parse_duration("90m") == 5400 and parse_duration("8h") == 28800 and parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45 and parse_duration("120") == 120 and parse_duration("1.5h") == 5400
    assert format_duration(5400) == "1h30m" and format_duration(0.3) == "0.3s" and format_duration(28800) == "8h"
    for bad in ("", "soon", "10x", "0", "0m", "h"):
        with pytest.raises(UsageError, match="--max-duration"):
            parse_duration(bad)


async def test_window_stops_new_images_and_the_rerun_finishes(clouds: Clouds) -> None:
    """After the window only the images in flight finish (never more than --concurrency), none is left
    half-done, the run is incomplete (exit 4) naming how many are left, and a re-run copies exactly those."""
    images = _catalog(clouds, 16)
    config = fast_config(concurrency=2, window=Window(0.8, grace=30))
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    assert int(run.exit_code) == 4 and run.incomplete is not None
    left = len(images) - len(run.images)
    assert 0 < len(run.images) < len(images) and {r.outcome for r in run.images} == {"copied"}
    assert run.incomplete.startswith(f"the --max-duration of 0.8s passed: {left} image(s)")
    assert "those in flight were finished" in run.incomplete
    assert len(_after_close(clouds.events)) <= 2  # only those already in flight finished
    assert not any(isinstance(e, WindowGraceOver) for e in clouds.events)
    assert {r.status for r in clouds.dst.images.values()} == {"active"}  # nothing started and left behind

    again = await copy_images(fast_config(concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert int(again.exit_code) == 0
    assert len([r for r in again.images if r.outcome == "copied"]) == left
    for image_id, data in images.items():
        assert clouds.dst.data(image_id) == data


async def test_grace_over_aborts_in_flight_never_deletes(clouds: Clouds) -> None:
    """With no grace the images in flight are aborted: they are counted as left, stay queued (never deleted)
    at the destination, and the next run uploads into them."""
    images = _catalog(clouds, 4)
    for image_id in images:
        clouds.src.faults.slow_download(image_id, 20_000)  # 5 s each: in flight when the window closes
    run = await copy_images(
        fast_config(concurrency=2, window=Window(0.2, grace=0)), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit
    )
    assert run.images == [] and int(run.exit_code) == 4 and run.incomplete is not None
    assert "4 image(s)" in run.incomplete and "aborted (left queued, never deleted)" in run.incomplete
    assert any(isinstance(e, WindowGraceOver) for e in clouds.events)
    assert not clouds.dst.requests_matching("DELETE", ".*")
    assert {r.status for r in clouds.dst.images.values()} <= {"queued"}
    for image_id in images:
        clouds.src.faults.slow_download(image_id, None)
    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert int(again.exit_code) == 0 and {r.outcome for r in again.images} == {"copied"}
    for image_id, data in images.items():
        assert clouds.dst.data(image_id) == data


async def test_sync_cut_by_its_window_judges_no_removal(clouds: Clouds, tmp_path: Path) -> None:
    """A sync whose window closed reports no removed image (its listing was cut); the next sync does."""
    gone = clouds.src.add_image(b"g" * 1000, name="gone", disk_format="raw", container_format="bare")["id"]
    for keep in ("kept-1", "kept-2"):  # the source still holds most of what it gave (record.py)
        clouds.src.add_image(b"k" * 1000, name=keep, disk_format="raw", container_format="bare")
    assert (
        await copy_images(fast_config(journal=tmp_path / "pair.sqlite"), clouds.src_cloud, clouds.dst_cloud)
    ).failed == 0
    del clouds.src.images[gone]
    clouds.src.deleted.add(gone)
    _catalog(clouds, 6)
    cut = await sync_images(
        sync_config(tmp_path, concurrency=2, window=Window(0.3, grace=30)), clouds.src_cloud, clouds.dst_cloud
    )
    assert int(cut.exit_code) == 4 and cut.incomplete is not None and "--max-duration" in cut.incomplete
    assert "removed" not in {r.outcome for r in cut.images}
    full = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert int(full.exit_code) == 0 and {r.id: r.outcome for r in full.images}[gone] == "removed"


async def test_move_stops_at_its_window(one: One) -> None:  # noqa: F811
    """move: after the window no new image is moved; the rest stay in the old store, moved by the next run."""
    images = _add(one, 8)
    one.fake.import_delay = 0.2
    run = await move_images(cfg(concurrency=1, window=Window(0.6, grace=30)), one.cloud)
    assert int(run.exit_code) == 4 and run.incomplete is not None and "--max-duration" in run.incomplete
    moved = {r.id for r in run.images if r.outcome == "moved"}
    assert 0 < len(moved) < len(images)
    assert all(one.fake.get(i)["stores"] == "fast" for i in set(images) - moved)
    again = await move_images(cfg(), one.cloud)
    assert {r.id for r in again.images} == set(images) - moved and int(again.exit_code) == 0


async def test_cli_max_duration_exits_four_and_plan_estimates_the_window(clouds: Clouds, tmp_path: Path) -> None:
    """The CLI: --max-duration ends the run with exit 4, one line saying how many are left, the report
    written; a bad duration is one usage line; plan says whether the selection fits the window at --rate."""
    _catalog(clouds, 8)
    report = tmp_path / "r.json"
    base = ("--src-cloud", "src", "--dst-cloud", "dst", "--no-journal")
    code, out, err = await _cli(
        "copy",
        *base,
        "--concurrency",
        "1",
        "--max-duration",
        "0.5s",
        "--report",
        str(report),
        clouds_yaml=clouds.clouds_yaml,
    )
    assert code == 4, out + err
    # The notices go where the log goes (stdout).
    assert "--max-duration of 0.5s passed: starting no new image" in out
    line = next(x for x in out.splitlines() if x.startswith("asyncmigrate: incomplete:"))
    assert "image(s)" in line and "not started" in line and line.endswith("run the same command again to finish")
    assert json.loads(report.read_text())["summary"]["exit_code"] == 4
    code, _, err = await _cli("copy", *base, "--max-duration", "tomorrow", clouds_yaml=clouds.clouds_yaml)
    assert code == 2 and "--max-duration takes a duration" in err and len(err.strip().splitlines()) == 1
    plan = ("plan", "copy", *base[:4], "--rate", "100KiB")
    code, out, err = await _cli(*plan, "--max-duration", "1h", clouds_yaml=clouds.clouds_yaml)
    assert code == 0 and "fits in the --max-duration of 1h" in out, out + err
    code, out, _ = await _cli(*plan, "--max-duration", "2s", "--output", "json", clouds_yaml=clouds.clouds_yaml)
    estimate = json.loads(out)["estimate"]
    assert estimate["fits"] is False and estimate["max_duration_seconds"] == 2 and estimate["windows"] >= 2


async def test_cli_report_lists_the_images_the_grace_aborted(clouds: Clouds, tmp_path: Path) -> None:
    """The report of a run whose window's grace aborted images in flight lists each of them as
    aborted, with what aborted it and the bytes it had sent, and the run exits 4."""
    images = _catalog(clouds, 2)
    for image_id in images:
        clouds.src.faults.slow_download(image_id, 20_000)  # 5 s each: in flight when the grace ends
    report = tmp_path / "r.json"
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--no-journal", "--concurrency", "2",
        "--chunk-size", "16KiB", "--max-duration", "0.5s", "--grace", "0", "--report", str(report),
        clouds_yaml=clouds.clouds_yaml,
    )  # fmt: skip
    assert code == 4, out + err
    document = json.loads(report.read_text())
    entries = {entry["id"]: entry for entry in document["images"]}
    assert set(entries) == set(images)
    for entry in entries.values():
        assert entry["outcome"] == "aborted" and "--max-duration grace" in entry["reason"], entry
    assert document["summary"]["bytes"] == sum(entry["bytes"] for entry in entries.values())
    assert {r.status for r in clouds.dst.images.values()} <= {"queued"}
