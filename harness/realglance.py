#!/usr/bin/env python3
"""Run real OpenStack Glance API servers on 127.0.0.1 for asyncmigrate's tests and demos.

Stdlib only (any python3 >= 3.9); it never imports the project.

    realglance.py install                 # venv-glance (glance, gunicorn, psycopg2, boto3), venv-moto
    realglance.py start [--s3] [--fresh]  # installs first if needed
    realglance.py status                  # exit 0 iff both glance instances answer
    realglance.py stop

``start`` brings up, all on 127.0.0.1 and without Keystone:

* PostgreSQL (cluster in ``$HARNESS_DIR/pg``; as the ``postgres`` user when we are root, since
  postgres refuses root), databases ``glance_src``/``glance_dst`` dropped and recreated;
* glance-api "src" (stores fast, slow [+ cold on S3]) and "dst" (stores main, archive), each
  one gunicorn serving ``glance.wsgi.api:application`` (glance 33 has no standalone server);
* with ``--s3``, moto_server as the S3 endpoint of the ``cold`` store.

Identity comes from ``fakeauth.py``, a paste filter in place of keystonemiddleware's
``authtoken``, in front of glance's real ``context`` filter.  Config files come from
``glanceconf.py``.  A ``start`` that finds everything healthy with the same fingerprint
(settings + this code) returns at once; otherwise it restarts the servers with fresh databases
and data dirs.  Commands on one harness dir are serialized by a file lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glanceconf import (
    GLANCE_PACKAGES,
    HERE,
    HOST,
    MOTO_PACKAGES,
    S3_ACCESS_KEY,
    S3_BUCKET,
    S3_SECRET_KEY,
    HarnessError,
    Instance,
    Settings,
    clouds_yaml,
    env_info,
    env_sh,
    glance_conf,
    paste_ini,
)

# oldglance (glance 27.1.1) calls our helpers back; as a script we are __main__, so let its
# ``import realglance`` find this module instead of loading a second copy.
sys.modules.setdefault("realglance", sys.modules[__name__])
import oldglance  # noqa: E402

READY_TIMEOUT = 60.0
# Loopback only: never route the harness's own checks through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Check = tuple[str, Path, "subprocess.Popen[bytes] | None"]  # url, log, process (None: not ours)


def say(msg: str) -> None:
    """One progress line on stdout."""
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


# ----------------------------------------------------------------------------- install


def ensure_venv(venv: Path, packages: tuple[str, ...], constraints: Path | None = None) -> bool:
    """Create ``venv`` and pip-install ``packages`` (``-c constraints``) unless its marker says so.

    True if work was done.  The marker holds the packages and the constraints' hash.
    """
    marker = venv / ".harness-installed"
    pins = ["-c", str(constraints)] if constraints else []
    pinned = [hashlib.sha256(constraints.read_bytes()).hexdigest()] if constraints else []
    want = json.dumps(sorted(packages) + pinned)
    if marker.exists() and marker.read_text() == want and (venv / "bin" / "python").exists():
        return False
    t0 = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    python = os.environ.get("ASYNCMIGRATE_HARNESS_PYTHON", sys.executable)
    say(f"creating {venv.name}: pip install {' '.join(packages)} (about half a minute)")
    run([python, "-m", "venv", str(venv)])
    pip = str(venv / "bin" / "pip")
    run([pip, "install", "-q", "--upgrade", "pip"], env=child_env())
    run([pip, "install", "-q", *pins, *packages], log=venv / "pip-install.log", env=child_env())
    marker.write_text(want)
    say(f"{venv.name} installed in {time.monotonic() - t0:.1f} s")
    return True


def install(cfg: Settings) -> None:
    """Install the venvs (idempotent), in parallel (pip is mostly waiting on I/O), and print how long it took."""
    t0 = time.monotonic()
    cfg.harness_dir.mkdir(parents=True, exist_ok=True)
    # The default harness dir lives inside the repo: keep everything generated out of git.
    cfg.path(".gitignore").write_text("*\n")
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = [
            pool.submit(ensure_venv, cfg.path("venv-glance"), GLANCE_PACKAGES),
            pool.submit(ensure_venv, cfg.path("venv-moto"), MOTO_PACKAGES),
            pool.submit(oldglance.install, cfg),
        ]
        did = [job.result() for job in jobs]  # re-raises the first failure
    say(f"install {'done' if any(did) else 'already up to date'} in {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- postgres


def as_pg(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def pg_ready(cfg: Settings) -> bool:
    """True if a PostgreSQL accepts connections on 127.0.0.1:PG_PORT."""
    cmd = [str(cfg.pg_bin / "pg_isready"), "-q", "-h", HOST, "-p", str(cfg.pg_port)]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True).returncode == 0


def pg_start(cfg: Settings) -> None:
    """initdb once, then start the cluster on 127.0.0.1:PG_PORT unless it already answers."""
    data, sock, log = cfg.path("pg", "data"), cfg.path("pg", "run"), cfg.path("logs", "postgres.log")
    if (data / "PG_VERSION").exists() and pg_ready(cfg):
        return
    pg_stop(cfg)  # up on another port, or half-started: start it cleanly
    for d in (data, sock):
        d.mkdir(parents=True, exist_ok=True)
    log.touch()
    if os.geteuid() == 0:
        for p in (cfg.path("pg"), data, sock, log):
            shutil.chown(p, "postgres")
        if subprocess.run(as_pg(["test", "-w", str(sock)]), stdin=subprocess.DEVNULL).returncode != 0:
            raise HarnessError(f"user postgres cannot write {sock}: every parent of the harness dir must be o+x")
    if not (data / "PG_VERSION").exists():
        run(as_pg([str(cfg.pg_bin / "initdb"), "-A", "trust", "-U", cfg.pg_user, "-E", "UTF8", "-D", str(data)]))
    # A throwaway test cluster: durability traded for speed.
    opts = f"-p {cfg.pg_port} -k {sock} -c listen_addresses={HOST} -c max_connections=200"
    opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    ctl = [str(cfg.pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", opts, "start"]
    # pg_ctl leaves the postmaster running detached; its own session keeps it off our signals.
    proc = subprocess.run(as_pg(ctl), stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True)
    if proc.returncode != 0 or not pg_ready(cfg):
        raise HarnessError(f"PostgreSQL did not start on {HOST}:{cfg.pg_port}\n{proc.stdout!r}\n{tail(log)}")


def pg_stop(cfg: Settings) -> bool:
    """Stop the cluster if it runs (``pg_ctl stop -m fast``); True if one was stopped."""
    data = cfg.path("pg", "data")
    if not (data / "postmaster.pid").exists():
        return False
    ctl = [str(cfg.pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
    return subprocess.run(as_pg(ctl), stdin=subprocess.DEVNULL, capture_output=True).returncode == 0


def recreate_databases(cfg: Settings) -> None:
    """Drop (forcing out any session) and create one database per glance instance."""
    sock = str(cfg.path("pg", "run"))
    cmd = [str(cfg.pg_bin / "psql"), "-q", "-h", sock, "-p", str(cfg.pg_port), "-U", cfg.pg_user, "-d", "postgres"]
    cmd += ["-v", "ON_ERROR_STOP=1"]
    for inst in cfg.instances:
        cmd += ["-c", f"DROP DATABASE IF EXISTS {inst.database} WITH (FORCE)", "-c", f"CREATE DATABASE {inst.database}"]
    run(as_pg(cmd))


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
    """SIGINT (quick shutdown for gunicorn and moto), then SIGKILL its process group; True if it ran."""
    pid = pid_alive(pidfile, needle)
    if pid:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pidfile, needle) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Started with start_new_session, so the group is the server's own (workers included).
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return bool(pid)


def wait_ready(checks: dict[str, Check]) -> None:
    """Poll each ``name -> (url, log, proc)`` until it answers 200; fail fast with the log tail."""
    deadline = time.monotonic() + READY_TIMEOUT
    pending = dict(checks)
    while pending:
        for name, (url, log, proc) in list(pending.items()):
            if http_status(url) == 200:
                del pending[name]
            elif proc is not None and proc.poll() is not None:
                raise HarnessError(f"{name} exited ({proc.returncode}) before answering {url}; {log}:\n{tail(log)}")
        if pending and time.monotonic() > deadline:
            name, (url, log, _) = next(iter(pending.items()))
            raise HarnessError(f"{name}: no 200 from {url} in {READY_TIMEOUT:.0f} s; {log}:\n{tail(log)}")
        if pending:
            time.sleep(0.2)


# ----------------------------------------------------------------------------- servers


def moto_start(cfg: Settings) -> None:
    """Start moto_server and pre-create the bucket (glance_store's create-on-put fails on moto)."""
    log, url = cfg.path("logs", "moto.log"), f"http://{HOST}:{cfg.moto_port}"
    log.unlink(missing_ok=True)
    cmd = [str(cfg.path("venv-moto", "bin", "moto_server")), "-H", HOST, "-p", str(cfg.moto_port)]
    proc = spawn(cmd, log, cfg.path("run", "moto.pid"), child_env())
    wait_ready({"moto": (f"{url}/moto-api/", log, proc)})
    script = (
        "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
        " aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3]).create_bucket(Bucket=sys.argv[4])"
    )
    python = str(cfg.path("venv-glance", "bin", "python"))
    run([python, "-c", script, url, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET], env=child_env())


def prepare_instance(cfg: Settings, inst: Instance) -> None:
    """Wipe and recreate the instance's data dirs and write its two config files."""
    root = cfg.path(inst.name)
    if root.exists():
        shutil.rmtree(root)
    file_stores = [s for s, driver in inst.stores if driver == "file"]
    for sub in ["etc", "locks", "data/staging", "data/tasks"] + [f"data/{s}" for s in file_stores]:
        (root / sub).mkdir(parents=True)
    packaged = cfg.path("venv-glance", "etc", "glance", "glance-api-paste.ini").read_text()
    (root / "etc" / "glance-api.conf").write_text(glance_conf(cfg, inst))
    (root / "etc" / "glance-api-paste.ini").write_text(paste_ini(cfg, inst, packaged))


def db_sync_all(cfg: Settings) -> None:
    """Run ``glance-manage db_sync`` for every instance, in parallel."""
    manage = str(cfg.path("venv-glance", "bin", "glance-manage"))
    procs = []
    for inst in cfg.instances:
        log = cfg.path("logs", f"{inst.name}-db_sync.log")
        cmd = [manage, "--config-file", str(cfg.path(inst.name, "etc", "glance-api.conf")), "db_sync"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=child_env()
            )
        procs.append((inst, log, proc))
    for inst, log, proc in procs:
        if proc.wait() != 0:
            raise HarnessError(f"db_sync for {inst.name} failed; {log}:\n{tail(log)}")


def glance_start(cfg: Settings, inst: Instance) -> subprocess.Popen[bytes]:
    """Start one glance-api under gunicorn; returns at once (see ``wait_ready``)."""
    log = cfg.path("logs", f"{inst.name}.log")
    log.unlink(missing_ok=True)
    cmd = [str(cfg.path("venv-glance", "bin", "gunicorn")), "--bind", f"{HOST}:{inst.port}"]
    cmd += ["--workers", "1", "--threads", "8", "--timeout", "600", "--graceful-timeout", "5", "--access-logfile", "-"]
    cmd += ["--name", f"glance-{inst.name}", "glance.wsgi.api:application"]
    # PYTHONPATH: paste imports fakeauth from this folder.
    env = child_env({"OS_GLANCE_CONFIG_DIR": str(cfg.path(inst.name, "etc")), "PYTHONPATH": str(HERE)})
    return spawn(cmd, log, cfg.path("run", f"{inst.name}.pid"), env)


# ----------------------------------------------------------------------------- commands


def running_state(cfg: Settings) -> dict[str, bool]:
    """What of the harness answers right now, by component."""
    state = {"postgres": pg_ready(cfg)}
    for inst in cfg.instances:
        alive = pid_alive(cfg.path("run", f"{inst.name}.pid"), "gunicorn")
        state[inst.name] = bool(alive) and http_status(f"{inst.url}/versions") == 200
    state["moto"] = bool(pid_alive(cfg.path("run", "moto.pid"), "moto_server"))
    return state | oldglance.state(cfg)


def is_current(cfg: Settings) -> bool:
    """True if everything runs healthy with exactly this configuration."""
    try:
        recorded = json.loads(cfg.path("env.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return False
    state = running_state(cfg)
    if not cfg.s3:
        del state["moto"]
    return recorded == cfg.fingerprint() and all(state.values())


def stop_servers(cfg: Settings) -> list[str]:
    """Stop the glance instances and moto; return the names of those that were running."""
    stopped = [i.name for i in cfg.instances if kill_pidfile(cfg.path("run", f"{i.name}.pid"), "gunicorn")]
    if kill_pidfile(cfg.path("run", "moto.pid"), "moto_server"):
        stopped.append("moto")
    return stopped + oldglance.stop(cfg)


def cmd_start(cfg: Settings, fresh: bool) -> None:
    """Bring everything up (see the module docstring); a no-op when already current."""
    t0 = time.monotonic()
    if not fresh and is_current(cfg):
        say(f"already running ({time.monotonic() - t0:.2f} s); env: {cfg.path('env.sh')}")
        return
    install(cfg)
    t1 = time.monotonic()
    cfg.path("env.json").unlink(missing_ok=True)  # no stale fingerprint if this start fails
    stop_servers(cfg)
    ports = {i.name: i.port for i in cfg.instances} | ({"moto": cfg.moto_port} if cfg.s3 else {})
    ports |= oldglance.ports(cfg)
    busy = [f"{port} ({name})" for name, port in ports.items() if port_busy(port)]
    if busy:
        raise HarnessError(f"port(s) already in use by something else: {', '.join(busy)}")
    try:
        start_all(cfg)
    except BaseException:
        stop_servers(cfg)  # no half-started harness left behind
        raise
    for inst in cfg.instances:
        say(f"{inst.name}: {inst.url} stores={','.join(inst.store_ids)} default={inst.default_store}")
    old, blobs = oldglance.instance(cfg).url, oldglance.blob_url(cfg)
    say(f"old: {old} glance {oldglance.OLD_VERSION}, single-store (file, http); blobs: {blobs}")
    say(f"started in {time.monotonic() - t1:.1f} s (total {time.monotonic() - t0:.1f} s); env: {cfg.path('env.sh')}")


def start_all(cfg: Settings) -> None:
    """PostgreSQL, fresh databases and data, db_sync, moto, both glance-api; then the env files."""
    t1 = time.monotonic()
    for d in ("logs", "run"):
        cfg.path(d).mkdir(exist_ok=True)
    pg_start(cfg)
    recreate_databases(cfg)
    for inst in cfg.instances:
        prepare_instance(cfg, inst)
    old_sync = oldglance.prepare(cfg)  # its db_sync runs beside the others'
    db_sync_all(cfg)
    oldglance.finish_db_sync(cfg, old_sync)
    say(f"postgres, databases, db_sync: {time.monotonic() - t1:.1f} s")
    checks: dict[str, Check] = oldglance.spawn(cfg)  # the slowest to come up: start it first
    if cfg.s3:
        moto_start(cfg)
    for inst in cfg.instances:
        proc = glance_start(cfg, inst)
        checks[f"glance {inst.name}"] = (f"{inst.url}/versions", cfg.path("logs", f"{inst.name}.log"), proc)
    wait_ready(checks)
    cfg.path("clouds.yaml").write_text(clouds_yaml(cfg) + oldglance.clouds_yaml(cfg))
    cfg.path("env.sh").write_text(env_sh(cfg) + oldglance.env_sh(cfg))
    info = env_info(cfg)
    info["instances"]["old"] = oldglance.env_info(cfg)
    cfg.path("env.json").write_text(json.dumps(info, indent=2) + "\n")  # last: marks success


def cmd_stop(cfg: Settings) -> None:
    """Stop gunicorns, moto and PostgreSQL, tolerating any that are not running."""
    stopped = stop_servers(cfg)
    if pg_stop(cfg):
        stopped.append("postgres")
    cfg.path("env.json").unlink(missing_ok=True)
    say(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def cmd_status(cfg: Settings) -> int:
    """Print each component's state; 0 only if both glance instances answer."""
    state = running_state(cfg)
    print(f"harness dir: {cfg.harness_dir}")
    rows = [("postgres", f"{HOST}:{cfg.pg_port}", state["postgres"])]
    rows += [(i.name, i.url, state[i.name]) for i in cfg.instances]
    rows += [("moto", f"http://{HOST}:{cfg.moto_port}", state["moto"])]
    rows += [("old", oldglance.instance(cfg).url, state["old"]), ("blob", oldglance.blob_url(cfg), state["blob"])]
    for name, where, up in rows:
        print(f"{name:<9} {where:<24} {'up' if up else 'down'}")
    return 0 if all(state[name] for name in [i.name for i in cfg.instances] + ["old"]) else 1


def run_command(cfg: Settings, args: argparse.Namespace) -> int:
    """Dispatch one subcommand; a ``HarnessError`` becomes one message and exit status 1."""
    try:
        if args.command == "install":
            install(cfg)
        elif args.command == "start":
            cmd_start(cfg, args.fresh)
        elif args.command == "stop":
            cmd_stop(cfg)
        else:
            return cmd_status(cfg)
    except HarnessError as exc:
        print(f"[realglance] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, take the harness dir's lock, run the subcommand."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="create the glance and moto venvs")
    start = sub.add_parser("start", help="start postgres + two glance-api (+ moto with --s3)")
    start.add_argument("--s3", action="store_true", help="add store 'cold' (S3 on moto) to src")
    start.add_argument("--fresh", action="store_true", help="wipe and restart even if running")
    sub.add_parser("stop", help="stop everything the harness started")
    sub.add_parser("status", help="print what is running")
    args = parser.parse_args(argv)
    cfg = Settings.from_env(s3=getattr(args, "s3", False))
    cfg.harness_dir.mkdir(parents=True, exist_ok=True)
    # One command at a time per harness dir (parallel test workers may all call start).
    with open(cfg.path(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run_command(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
