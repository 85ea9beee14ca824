"""PostgreSQL for every component's databases: one throwaway cluster, and templates to copy from.

The cluster lives in ``$HARNESS_DIR/pg`` and listens on 127.0.0.1:PG_PORT (as the ``postgres``
user when we are root: postgres refuses root).  A database is never migrated at start: it is
copied (``CREATE DATABASE … TEMPLATE``, a fraction of a second) from a template that its
component made once per package set (glance's ``db_sync``, keystone's ``db_sync`` + ``bootstrap``).
A template is only ever connected to while it is made, which is what lets PostgreSQL copy it.
Templates of other package sets stay in the cluster (a few MB each) until it is wiped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from glanceconf import HOST, HarnessError, Settings
from procs import run, say, tail

# Fills a freshly created, empty template database; returns the running process (its log is the Path).
TemplateMaker = Callable[[str, Path], "subprocess.Popen[bytes]"]


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


def psql(cfg: Settings, *sql: str) -> str:
    """Run SQL statements (each its own ``-c``) as the cluster's superuser; their output."""
    cmd = [str(cfg.pg_bin / "psql"), "-q", "-At", "-h", str(cfg.path("pg", "run")), "-p", str(cfg.pg_port)]
    cmd += ["-U", cfg.pg_user, "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
    for statement in sql:
        cmd += ["-c", statement]
    out = subprocess.run(as_pg(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if out.returncode != 0:
        raise HarnessError(f"psql failed: {out.stderr.strip()}")
    return out.stdout


def url(cfg: Settings, database: str) -> str:
    """SQLAlchemy URL of a database of the cluster (psycopg2)."""
    return f"postgresql+psycopg2://{cfg.pg_user}@{HOST}:{cfg.pg_port}/{database}"


def ensure_templates(cfg: Settings, makers: dict[str, TemplateMaker]) -> None:
    """Create and fill the templates of ``makers`` (name -> maker) that do not exist yet, in parallel."""
    have = set(psql(cfg, "SELECT datname FROM pg_database WHERE datname LIKE 'tpl\\_%'").split())
    missing = sorted(set(makers) - have)
    if not missing:
        return
    t0 = time.monotonic()
    psql(cfg, *(f"CREATE DATABASE {tpl}" for tpl in missing))
    procs = [(tpl, cfg.path("logs", f"{tpl}.log")) for tpl in missing]
    running = [(tpl, log, makers[tpl](tpl, log)) for tpl, log in procs]
    failed = [(tpl, log) for tpl, log, proc in running if proc.wait() != 0]
    if failed:
        psql(cfg, *(f"DROP DATABASE IF EXISTS {tpl}" for tpl, _ in failed))  # never keep a half-made one
        tpl, log = failed[0]
        raise HarnessError(f"making template {tpl} failed; {log}:\n{tail(log)}")
    say(f"made database templates {', '.join(missing)} in {time.monotonic() - t0:.1f} s")


def recreate_databases(cfg: Settings, templates: dict[str, str]) -> None:
    """Drop (forcing out any session) each database and copy it afresh from its template."""
    sql = []
    for db, tpl in templates.items():
        sql += [f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", f"CREATE DATABASE {db} TEMPLATE {tpl}"]
    psql(cfg, *sql)
