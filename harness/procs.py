"""Process, venv and HTTP helpers shared by every harness component (stdlib only).

Each server kind (``glanceconf.py`` + ``realglance.py`` for glance, ``keystone.py``, ``swift.py``,
``oldglance.py``)
starts its processes with :func:`spawn`, waits for them with :func:`wait_ready` and stops them
with :func:`kill_pidfile`; venvs come from :func:`ensure_venvs`, which installs several at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glanceconf import HOST, HarnessError

READY_TIMEOUT = 60.0
# Loopback only: never route the harness's own checks through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Check = tuple[str, Path, "subprocess.Popen[bytes] | None"]  # url, log, process (None: not ours)
_SAY = threading.Lock()


def say(msg: str) -> None:
    """One progress line on stdout (whole lines, even from the parallel installers)."""
    with _SAY:
        print(f"[realglance] {msg}", flush=True)


def run(cmd: list[str], *, log: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a command to completion, no stdin; on failure raise with the tail of its output."""
    out = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    if log is not None:
        log.write_text(out.stdout)
    if out.returncode != 0:
        last = "\n".join(out.stdout.splitlines()[-25:])
        raise HarnessError(f"command failed ({out.returncode}): {' '.join(cmd)}\n{last}")


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_status(url: str, timeout: float = 2.0) -> int:
    """Status code of a GET, 0 when nothing answers."""
    try:
        with HTTP.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One JSON request: (status, response headers, parsed body or None); raises only on transport errors."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with HTTP.open(req, timeout=30) as resp:
            text = resp.read()
            return resp.status, dict(resp.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, dict(exc.headers), json.loads(text) if text else None
        except ValueError:
            return exc.code, dict(exc.headers), text.decode(errors="replace")


def port_busy(port: int) -> bool:
    """True if something already listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment, plus no proxy for loopback and a quiet pip."""
    loop = f"{HOST},localhost"
    env = dict(os.environ, NO_PROXY=loop, no_proxy=loop, PIP_ROOT_USER_ACTION="ignore")
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **(extra or {}))
    return env


# ----------------------------------------------------------------------------- venvs


@dataclass(frozen=True)
class VenvSpec:
    """What goes into one venv: pip requirements, and a constraints file (``pip -c``) if any."""

    packages: tuple[str, ...]
    constraints: Path | None = None


def ensure_venv(venv: Path, spec: VenvSpec) -> bool:
    """Create ``venv`` and pip-install ``spec`` unless its marker says so; True if work was done.

    The marker holds the packages and the constraints' hash, so editing either reinstalls.
    """
    marker = venv / ".harness-installed"
    packages, constraints = spec.packages, spec.constraints
    pins = ["-c", str(constraints)] if constraints else []
    pinned = [hashlib.sha256(constraints.read_bytes()).hexdigest()] if constraints else []
    want = json.dumps(sorted(packages) + pinned)
    if marker.exists() and marker.read_text() == want and (venv / "bin" / "python").exists():
        return False
    t0 = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    python = os.environ.get("ASYNCMIGRATE_HARNESS_PYTHON", sys.executable)
    say(f"creating {venv.name}: pip install {' '.join(pins + list(packages))}")
    run([python, "-m", "venv", str(venv)])
    pip = str(venv / "bin" / "pip")
    run([pip, "install", "-q", "--upgrade", "pip"], env=child_env())
    run([pip, "install", "-q", *pins, *packages], log=venv / "pip-install.log", env=child_env())
    marker.write_text(want)
    say(f"{venv.name} installed in {time.monotonic() - t0:.1f} s")
    return True


def ensure_venvs(venvs: dict[Path, VenvSpec]) -> bool:
    """:func:`ensure_venv` for each, in parallel threads (pip waits mostly on the network); True if any worked."""
    results: dict[Path, bool | BaseException] = {}

    def one(venv: Path, spec: VenvSpec) -> None:
        try:
            results[venv] = ensure_venv(venv, spec)
        except BaseException as exc:
            results[venv] = exc

    threads = [threading.Thread(target=one, args=item) for item in venvs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for outcome in results.values():
        if isinstance(outcome, BaseException):
            raise outcome
    return any(results.values())


# ----------------------------------------------------------------------------- processes


def pid_alive(pidfile: Path, needle: str) -> int:
    """The pid in ``pidfile`` if that process lives and its command line contains ``needle``."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return 0
    return pid if needle in cmdline else 0  # a zombie's cmdline is empty: counts as dead


def spawn(cmd: list[str], log: Path, pidfile: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a server in its own session: no terminal signals, no inherited pipes, no stdin."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    pidfile.write_text(str(proc.pid))
    return proc


def kill_pidfile(pidfile: Path, needle: str, timeout: float = 10.0) -> bool:
    """SIGINT (quick shutdown for gunicorn, swift and ceph), then SIGKILL its process group; True if it ran."""
    return bool(kill_pidfiles({pidfile: needle}, timeout))


def kill_pidfiles(pidfiles: dict[Path, str], timeout: float = 10.0) -> list[Path]:
    """:func:`kill_pidfile` for many servers at once (each takes 0.3-3 s to stop); those that ran."""
    running = {pidfile: pid for pidfile, needle in pidfiles.items() if (pid := pid_alive(pidfile, needle))}
    for pid in running.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(f, pidfiles[f]) for f in running):
        time.sleep(0.1)
    for pid in running.values():
        # Started with start_new_session, so the group is the server's own (workers included).
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    for pidfile in pidfiles:
        pidfile.unlink(missing_ok=True)
    return list(running)


def wait_ready(checks: dict[str, Check], ok: tuple[int, ...] = (200,)) -> None:
    """Poll each ``name -> (url, log, proc)`` until it answers a status in ``ok``; fail fast with the log tail."""
    deadline = time.monotonic() + READY_TIMEOUT
    pending = dict(checks)
    while pending:
        for name, (url, log, proc) in list(pending.items()):
            if http_status(url) in ok:
                del pending[name]
            elif proc is not None and proc.poll() is not None:
                raise HarnessError(f"{name} exited ({proc.returncode}) before answering {url}; {log}:\n{tail(log)}")
        if pending and time.monotonic() > deadline:
            name, (url, log, _) = next(iter(pending.items()))
            raise HarnessError(f"{name}: no answer from {url} in {READY_TIMEOUT:.0f} s; {log}:\n{tail(log)}")
        if pending:
            time.sleep(0.2)
