"""Signals at the end of a run, sent to a real CLI process: one that arrives while the last image
takes its last step, and ones that arrive while the CLI prints its summary and writes the report,
change neither the exit code nor the report. The windows are made deterministic by faults: a
delayed last request, and a stdout pipe that is full until the test reads it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio

from tests.conftest import Clouds, run_finished

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")


def _command(tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "asyncmigrate", "copy", *PAIR,
        "--journal", str(tmp / "j.sqlite"), "--report", str(tmp / "r.json"), *extra,
    ]  # fmt: skip


def _env(clouds: Clouds) -> dict[str, str]:
    return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}


async def test_a_signal_during_the_last_step_changes_nothing(clouds: Clouds, tmp_path: Path) -> None:
    """SIGTERM while the last image's final check is held by the destination: the image completes,
    nothing was left undone, so the run exits 0 and its report and journal say it was not interrupted."""
    image = clouds.src.add_image(os.urandom(300_000), name="last", disk_format="raw", container_format="bare")
    image_id = str(image["id"])
    clouds.dst.faults.delay_next("GET", rf"^/v2/images/{image_id}$", 2.0)  # the check after the upload
    with (tmp_path / "err.txt").open("w") as err:
        proc = await anyio.open_process(_command(tmp_path), env=_env(clouds), stdout=subprocess.DEVNULL, stderr=err)
    with anyio.fail_after(20):
        # The whole listing has been read (its last pass is the hidden one) and the last step has begun.
        while not (
            clouds.src.requests_matching("GET", r"^/v2/images$")
            and any("os_hidden=true" in r.query for r in clouds.src.requests_matching("GET", r"^/v2/images$"))
            and clouds.dst.requests_matching("GET", rf"^/v2/images/{image_id}$")
        ):
            await anyio.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(30):
        code = await proc.wait()
    stderr = (tmp_path / "err.txt").read_text()
    assert code == 0, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["interrupted"] is False and report["summary"]["exit_code"] == 0
    assert [(e["id"], e["outcome"]) for e in report["images"]] == [(image_id, "copied")]
    assert "interrupted" not in stderr
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("SELECT interrupted FROM runs").fetchall() == [(0,)]  # the journal agrees
    db.close()


async def test_signals_while_the_report_is_written_change_nothing(clouds: Clouds, tmp_path: Path) -> None:
    """SIGTERM and SIGINT after the run is over, while the CLI is blocked printing its summary: the
    process is not killed (no 143), does not turn into 130, and writes the report; exit 0."""
    clouds.src.add_image(os.urandom(5000), name="one", disk_format="raw", container_format="bare")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:  # fill the pipe: the CLI's first write to stdout (the summary) blocks until the test reads
        while True:
            os.write(write_end, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    with (tmp_path / "err.txt").open("w") as err:
        proc = await anyio.open_process(_command(tmp_path), env=_env(clouds), stdout=write_end, stderr=err)
    os.close(write_end)
    try:
        with anyio.fail_after(20):  # the run is closed in its journal: only the summary and the report remain
            while not run_finished(tmp_path / "j.sqlite"):
                await anyio.sleep(0.02)
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc.send_signal(sig)
            await anyio.sleep(0.3)
        assert proc.returncode is None  # still blocked on stdout: the signals were not fatal
        out = await anyio.to_thread.run_sync(_drain, read_end)
    finally:
        os.close(read_end)
    with anyio.fail_after(20):
        code = await proc.wait()
    stderr = (tmp_path / "err.txt").read_text()
    assert code == 0, stderr
    assert "done: 1 images (1 copied" in out.decode(errors="replace")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["exit_code"] == 0 and report["summary"]["interrupted"] is False


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
