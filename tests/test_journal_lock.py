"""Two live runs on one journal (a cron'd sync during a long copy share the pair's journal):
the second is refused at once, naming the first; a dead holder never blocks; runs that only
read (plan, --dry-run) are never refused."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
from anyio.abc import Process

from tests.conftest import Clouds

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")


async def _cli(clouds: Clouds, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def _slow_copy(clouds: Clouds, journal: Path, tmp_path: Path) -> tuple[Process, str]:
    """A copy whose only image streams for about 8 s, started and seen uploading."""
    image = clouds.src.add_image(os.urandom(400_000), name="slow", disk_format="raw", container_format="bare")
    clouds.src.faults.slow_download(image["id"], 50_000)
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    cmd = [sys.executable, "-m", "asyncmigrate", "copy", *PAIR, "--journal", str(journal), "--chunk-size", "64KiB"]
    with (tmp_path / "first.log").open("w") as log:  # the log is on stdout, errors on stderr
        proc = await anyio.open_process([*cmd, "-q"], env=env, stdout=log, stderr=subprocess.STDOUT)
    with anyio.fail_after(20):
        while not any(r.status == "saving" for r in clouds.dst.images.values()):
            await anyio.sleep(0.02)
    return proc, str(image["id"])


async def test_a_second_live_run_is_refused_naming_the_first(clouds: Clouds, tmp_path: Path) -> None:
    """While a copy runs on the pair's journal, a sync on the same journal exits 2 with one line naming
    the copy's pid and host, changes nothing and does not touch the journal; plan sync and a dry run
    still read; the copy is never told that a previous run was killed."""
    journal = tmp_path / "pair.sqlite"
    first, slow = await _slow_copy(clouds, journal, tmp_path)
    before = len(clouds.dst.requests)
    code, _, err = await _cli(clouds, "sync", *PAIR, "--journal", str(journal), "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"pid {first.pid}" in lines[0] and socket.gethostname() in lines[0], lines[0]
    assert not [r for r in clouds.dst.requests[before:] if r.method != "GET"]
    runs = sqlite3.connect(journal).execute("SELECT command FROM runs").fetchall()
    assert runs == [("copy",)]  # the refused run never opened a run in it
    for readonly in (["plan", "sync"], ["sync", "--dry-run"]):
        code, out, err = await _cli(clouds, *readonly, *PAIR, "--journal", str(journal))
        assert code == 0, err
        assert slow in out
    clouds.src.faults.slow_download(slow, None)
    with anyio.fail_after(30):
        assert await first.wait() == 0
    assert "previous run was killed" not in (tmp_path / "first.log").read_text()
    assert clouds.dst.get(slow)["status"] == "active"


async def test_a_dead_holder_never_blocks(clouds: Clouds, tmp_path: Path) -> None:
    """A run killed with SIGKILL leaves its lock file behind; the next run takes the journal at once."""
    journal = tmp_path / "pair.sqlite"
    first, slow = await _slow_copy(clouds, journal, tmp_path)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    clouds.src.faults.slow_download(slow, None)
    code, out, err = await _cli(clouds, "copy", *PAIR, "--journal", str(journal), "-q")
    assert code == 0, err
    assert "previous run was killed with 1 image(s) in flight" in out  # the log is on stdout
    assert clouds.dst.get(slow)["status"] == "active"
