"""Stopping a run: Ctrl-C/SIGTERM (graceful, then abort), SIGKILL, and the
journal that lets the next run say what was in flight. Each ends, after a
re-run, with every image bit-exact, none deleted, none left saving."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
from anyio.abc import Process

from asyncmigrate import copy_images
from asyncmigrate.progress import JournalOpened
from tests.conftest import Clouds, fast_config

SIZE = 400_000


def _seed(clouds: Clouds, n: int = 3, slow: float | None = 400_000) -> dict[str, bytes]:
    images = {}
    for i in range(n):
        data = os.urandom(SIZE + i)
        image = clouds.src.add_image(data, name=f"i{i}", disk_format="raw", container_format="bare")
        if slow:
            clouds.src.faults.slow_download(image["id"], slow)  # about a second per image
        images[image["id"]] = data
    return images


async def _start(clouds: Clouds, tmp: Path, *extra: str) -> Process:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    with (tmp / "stderr.txt").open("w") as err:
        return await anyio.open_process(
            [
                sys.executable,
                "-m",
                "asyncmigrate",
                "copy",
                "--src-cloud",
                "src",
                "--dst-cloud",
                "dst",
                "--journal",
                str(tmp / "j.sqlite"),
                "--report",
                str(tmp / "r.json"),
                "--chunk-size",
                "64KiB",
                *extra,
            ],
            env=env,
            stdout=err,  # the log: notices go where the summary goes
            stderr=subprocess.STDOUT,
        )


async def _wait_for_upload(clouds: Clouds) -> None:
    with anyio.fail_after(20):
        while not any(r.status == "saving" for r in clouds.dst.images.values()):
            await anyio.sleep(0.02)


async def _finish(proc: Process, tmp: Path) -> tuple[int, str]:
    with anyio.fail_after(30):
        code = await proc.wait()
    return code, (tmp / "stderr.txt").read_text()


async def _rerun_and_check(clouds: Clouds, tmp: Path, images: dict[str, bytes]) -> str:
    for image_id in images:
        clouds.src.faults.slow_download(image_id, None)
    proc = await _start(clouds, tmp)
    code, err = await _finish(proc, tmp)
    assert code == 0, err
    for image_id, data in images.items():
        assert clouds.dst.get(image_id)["status"] == "active"
        assert clouds.dst.data(image_id) == data
    assert not clouds.dst.requests_matching("DELETE", ".*")
    return err


async def test_sigterm_finishes_in_flight_and_starts_nothing_new(clouds: Clouds, tmp_path: Path) -> None:
    """First SIGTERM: the image in flight completes, no new one starts, exit 130, the re-run finishes."""
    images = _seed(clouds)
    proc = await _start(clouds, tmp_path, "--concurrency", "1")
    await _wait_for_upload(clouds)
    proc.send_signal(signal.SIGTERM)
    code, err = await _finish(proc, tmp_path)
    assert code == 130, err
    assert "no new images" in err and "interrupted after 1 images" in err
    states = sorted(r.status for r in clouds.dst.images.values())
    assert states == ["active"]  # one finished, none started after the signal
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["interrupted"] is True
    await _rerun_and_check(clouds, tmp_path, images)


async def test_second_signal_aborts_at_once_leaving_queued(clouds: Clouds, tmp_path: Path) -> None:
    """Two Ctrl-C: in-flight uploads are dropped at once; the destination is queued, not saving."""
    images = _seed(clouds, slow=100_000)  # ~4 s per image: the abort must come long before
    proc = await _start(clouds, tmp_path, "--concurrency", "2")
    await _wait_for_upload(clouds)
    proc.send_signal(signal.SIGINT)
    await anyio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    with anyio.fail_after(3):
        code, err = await _finish(proc, tmp_path)
    assert code == 130 and "aborting now" in err
    await anyio.sleep(0.2)  # the fake notices the dropped connections
    assert {r.status for r in clouds.dst.images.values()} <= {"queued"}
    await _rerun_and_check(clouds, tmp_path, images)


async def test_grace_period_bounds_the_wait(clouds: Clouds, tmp_path: Path) -> None:
    """With --grace 0.5, a slow image in flight is aborted after half a second."""
    _seed(clouds, n=1, slow=50_000)  # 8 s for the image
    proc = await _start(clouds, tmp_path, "--grace", "0.5")
    await _wait_for_upload(clouds)
    proc.send_signal(signal.SIGINT)
    with anyio.fail_after(4):
        code, err = await _finish(proc, tmp_path)
    assert code == 130, err
    assert "grace of 0.5 s over: aborting" in err


async def test_sigkill_is_resumed_and_reported_by_the_journal(clouds: Clouds, tmp_path: Path) -> None:
    """kill -9 mid-upload: the next run names the images that were in flight and completes them."""
    images = _seed(clouds, n=2)
    proc = await _start(clouds, tmp_path, "--concurrency", "2")
    await _wait_for_upload(clouds)
    proc.kill()
    await proc.wait()
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("SELECT count(*) FROM images WHERE state='started'").fetchone()[0] >= 1
    assert db.execute("SELECT finished_at FROM runs").fetchall() == [(None,)]
    db.close()
    err = await _rerun_and_check(clouds, tmp_path, images)
    assert "previous run was killed with" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert any(entry["resumed"] for entry in report["images"])


async def test_journal_records_every_image_and_closes_the_run(clouds: Clouds, tmp_path: Path) -> None:
    """A normal run leaves one 'done' row per image with its outcome, and a finished run."""
    images = _seed(clouds, slow=None)
    events = []
    run = await copy_images(
        fast_config(journal=tmp_path / "j.sqlite"), clouds.src_cloud, clouds.dst_cloud, emit=events.append
    )
    assert run.failed == 0
    assert [e.crashed_in_flight for e in events if isinstance(e, JournalOpened)] == [0]
    db = sqlite3.connect(tmp_path / "j.sqlite")
    rows = dict(db.execute("SELECT id, outcome FROM images WHERE state='done'").fetchall())
    assert rows == dict.fromkeys(images, "copied")
    (finished,) = db.execute("SELECT finished_at FROM runs").fetchone()
    assert finished is not None
    db.close()


async def test_verify_stops_at_the_first_signal(clouds: Clouds, tmp_path: Path) -> None:
    """verify writes nothing: the first Ctrl-C stops it at once (no grace period, no talk of
    images left queued), exit 130."""
    for i in range(30):
        image = clouds.src.add_image(b"v" * 100, name=f"v{i}", disk_format="raw", container_format="bare")
        # Another name: the listing entry does not match, so each comparison reads the image.
        clouds.dst.add_image(b"v" * 100, id=image["id"], name=f"w{i}", disk_format="raw", container_format="bare")
    clouds.dst.faults.delay_next("GET", r"^/v2/images/[^/]+$", 5.0, times=None)  # every comparison hangs
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = await anyio.open_process(
            [sys.executable, "-m", "asyncmigrate", "verify", "--src-cloud", "src", "--dst-cloud", "dst"],
            env=env,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    with anyio.fail_after(20):
        while len(clouds.dst.requests_matching("GET", r"^/v2/images/[^/]+$")) < 8:  # comparisons in flight
            await anyio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    with anyio.fail_after(3):  # far less than one delayed comparison
        code, err_text = await _finish(proc, tmp_path)
    assert code == 130, err_text
    assert "verify changes nothing: stopping now" in err_text
    assert "in flight" not in err_text and "queued" not in err_text


async def test_an_aborted_run_reports_what_it_did(clouds: Clouds, tmp_path: Path) -> None:
    """Ctrl-C twice mid-upload: the report lists the image in flight as aborted with the bytes it
    sent and the summary counts them; the destination image is left queued; the journal records a
    clean interrupt, so the next run does not say a previous run was killed, and finishes."""
    images = _seed(clouds, n=2, slow=100_000)  # ~4 s per image: the abort comes long before
    proc = await _start(clouds, tmp_path, "--concurrency", "1")
    with anyio.fail_after(20):
        while not any(r.receiving >= 150_000 for r in clouds.dst.images.values()):
            await anyio.sleep(0.02)
    (aborted,) = [i for i, r in clouds.dst.images.items() if r.status == "saving"]
    proc.send_signal(signal.SIGINT)
    await anyio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code, err = await _finish(proc, tmp_path)
    assert code == 130, err
    report = json.loads((tmp_path / "r.json").read_text())
    (entry,) = [e for e in report["images"] if e["id"] == aborted]
    assert entry["outcome"] == "aborted" and entry["bytes"] >= 150_000, entry
    assert "queued" in entry["reason"]
    assert report["summary"]["bytes"] >= 150_000 and report["summary"]["interrupted"] is True
    await anyio.sleep(0.2)  # the fake notices the dropped connection
    assert clouds.dst.get(aborted)["status"] == "queued"
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("SELECT interrupted FROM runs WHERE finished_at IS NOT NULL").fetchall() == [(1,)]
    assert db.execute("SELECT state FROM images WHERE id = ?", (aborted,)).fetchall() == [("aborted",)]
    db.close()
    err = await _rerun_and_check(clouds, tmp_path, images)
    assert "previous run was killed" not in err
