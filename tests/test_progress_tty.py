"""The progress display as a person sees it: the CLI runs in a pseudo-terminal
and we read what it draws."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import anyio

from tests.conftest import Clouds

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def test_progress_bars_are_drawn_on_a_terminal(clouds: Clouds) -> None:
    """On a tty: an overall line (images, bytes, rate in MiB/s) and a line per active transfer, then the summary."""
    for i in range(2):
        image = clouds.src.add_image(
            os.urandom(600_000), name=f"ubuntu-{i}", disk_format="raw", container_format="bare"
        )
        clouds.src.faults.slow_download(image["id"], 600_000)  # about a second each: several frames
    master, slave = pty.openpty()
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "30",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncmigrate",
            "copy",
            "--src-cloud",
            "src",
            "--dst-cloud",
            "dst",
            "--chunk-size",
            "64KiB",
            "--no-journal",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(read_all)
        code = await anyio.to_thread.run_sync(proc.wait)
    os.close(master)
    raw = b"".join(chunks).decode(errors="replace")
    screen = ANSI.sub("", raw)
    assert code == 0, screen
    assert "\x1b[" in raw  # really drawn with terminal control sequences, not plain lines
    assert re.search(r"images \d/2", screen)
    assert "ubuntu-0" in screen and "ubuntu-1" in screen  # one line per active transfer
    assert re.search(r"\d+(\.\d)? ?[KM]iB/s", screen)  # a rate
    assert not re.search(r"\d ?[kMG]B/s", screen)  # in binary units, as every size the tool prints
    assert "done: 2 images (2 copied, 0 failed)" in screen
