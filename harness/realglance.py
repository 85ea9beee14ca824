#!/usr/bin/env python3
"""Run real OpenStack Glance API servers on 127.0.0.1 for asyncmigrate's tests and demos.

Stdlib only (any python3 >= 3.9); it never imports the project.

    realglance.py install                 # every venv (glance, keystone+swift, glance 27) in parallel; apt packages
    realglance.py start [--s3] [--ceph] [--rgw-swift] [--keystone] [--swift] [--convert] [--old] [--all] [--fresh]
    realglance.py status                  # exit 0 iff every glance instance answers
    realglance.py stop

``start`` brings up, all on 127.0.0.1:

* PostgreSQL (``postgres.py``), every database dropped and copied afresh from its template;
* glance-api "src" (stores fast, slow [+ cold on S3]) and "dst" (stores main, archive), each
  one gunicorn serving ``glance.wsgi.api:application`` (glance 33 has no standalone server);
* with ``--s3``, a one-node Ceph (``ceph.py``) whose RGW is the S3 endpoint of the ``cold`` store;
* with ``--ceph``, the same Ceph's RBD pools as stores: ``ceph`` in src, ``ceph`` and ``ceph2`` (and
  ``s3`` on RGW) in dst, and glance-api "rbd", whose default store is RBD and which converts imports
  to raw (as Ceph-backed clouds do);
* with ``--rgw-swift`` (implies ``--keystone``), store ``rgw`` in dst: glance_store's swift driver
  against RGW's Swift API, which validates the dst Keystone's tokens;
* with ``--keystone``, two real Keystones (``keystone.py``) and two glance-api behind
  keystonemiddleware's ``authtoken``, "ks-src" and "ks-dst";
* with ``--swift`` (implies ``--keystone``), real Swift (``swift.py``) behind the dst Keystone,
  and a store ``swift`` in "dst";
* with ``--convert``, glance-api "convert", which converts every import to raw (needs qemu-img:
  installed with apt-get when missing);
* with ``--old``, the old single-store glance 27.1.1 "old" and the blob server of its http store
  (``oldglance.py``).

Identity of src, dst, convert and old comes from ``fakeauth.py``, a paste filter in place of
keystonemiddleware's ``authtoken``, in front of glance's real ``context`` filter.  Config files
come from ``glanceconf.py``; process helpers from ``procs.py``.  A ``start`` that finds
everything healthy with the same fingerprint (settings + this code) returns at once; otherwise
it restarts the servers with fresh databases and data dirs.  Commands on one harness dir are
serialized by a file lock.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import ceph
import keystone
import oldglance
import postgres
import swift
from glanceconf import (
    GLANCE_PACKAGES,
    HERE,
    HOST,
    HarnessError,
    Instance,
    Settings,
    ceph_conf_path,
    clouds_yaml,
    env_info,
    env_sh,
    glance_conf,
    paste_ini,
)
from procs import (
    Check,
    VenvSpec,
    child_env,
    ensure_venvs,
    http_status,
    kill_pidfiles,
    pid_alive,
    port_busy,
    run,
    say,
    spawn,
    wait_ready,
)

# ----------------------------------------------------------------------------- install


def install(cfg: Settings, everything: bool = False) -> None:
    """Install the venvs ``cfg`` needs (all with ``everything``), in parallel, idempotent; print how long."""
    t0 = time.monotonic()
    cfg.harness_dir.mkdir(parents=True, exist_ok=True)
    # The default harness dir lives inside the repo: keep everything generated out of git.
    cfg.path(".gitignore").write_text("*\n")
    venvs = {cfg.path("venv-glance"): VenvSpec(GLANCE_PACKAGES)}
    if everything or cfg.keystones:
        venvs[cfg.path(keystone.CLOUD_VENV)] = VenvSpec(keystone.CLOUD_PACKAGES)
    if everything or cfg.old is not None:
        venvs[cfg.path(oldglance.VENV)] = oldglance.PACKAGES
    did = ensure_venvs(venvs)
    # Every harness runs PostgreSQL (its binaries from Debian's postgresql package).
    did = ensure_debian("PostgreSQL", (cfg.pg_bin / "initdb").exists(), "postgresql") or did
    if everything or any(i.convert_to for i in cfg.instances):
        # glance's image_conversion runs qemu-img (Debian's qemu-utils).
        did = ensure_debian("qemu-img", shutil.which("qemu-img") is not None, "qemu-utils") or did
    if everything or cfg.ceph is not None:
        did = ensure_debian("Ceph", ceph.installed(), *ceph.PACKAGES) or did
        # glance_store's rbd driver imports rados/rbd (RGW's S3 and Swift need neither); a venv shared
        # from another checkout is linked by its owner's install, and checked when RBD stores run.
        venv = cfg.path("venv-glance")
        if (cfg.ceph is not None and cfg.ceph.rbd) or (everything and not venv.is_symlink()):
            did = ceph.link_bindings(venv) or did
    say(f"install {'done' if did else 'already up to date'} in {time.monotonic() - t0:.1f} s")


def ensure_debian(what: str, present: bool, *packages: str) -> bool:
    """Install Debian packages with apt-get when ``what`` is missing; True if they were installed."""
    if present:
        return False
    names = " ".join(packages)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HarnessError(f"{what} is missing: install {names} (Debian: apt-get install {names})")
    t0 = time.monotonic()
    say(f"{what} missing: apt-get install {names}")
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    env = child_env({"DEBIAN_FRONTEND": "noninteractive"})
    try:
        run(apt, env=env)
    except HarnessError:  # no or stale package lists (a fresh container): refresh once, then retry
        run(["apt-get", "update", "-q"], env=env)
        run(apt, env=env)
    say(f"{names} installed in {time.monotonic() - t0:.1f} s")
    return True


# ----------------------------------------------------------------------------- databases


def glance_template() -> str:
    """The template holding glance 33's empty schema (one for every instance: db_sync ignores the rest)."""
    return "tpl_glance_" + hashlib.sha256(json.dumps(GLANCE_PACKAGES).encode()).hexdigest()[:10]


def glance_fill_template(cfg: Settings, database: str, log: Path) -> subprocess.Popen[bytes]:
    """``glance-manage db_sync`` into ``database``."""
    conf = cfg.path("templates", f"{database}.conf")
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f"[database]\nconnection = {postgres.url(cfg, database)}\n")
    cmd = [str(cfg.path("venv-glance", "bin", "glance-manage")), "--config-file", str(conf), "db_sync"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=child_env())


def templates(cfg: Settings) -> dict[str, str]:
    """Each database -> the template it is copied from."""
    out = {inst.database: glance_template() for inst in cfg.instances}
    out |= {cfg.old.database: oldglance.template_name()} if cfg.old is not None else {}
    return out | {ks.database: keystone.template_name(ks) for ks in cfg.keystones}


def template_makers(cfg: Settings) -> dict[str, postgres.TemplateMaker]:
    """Each template -> how to fill it (glance's db_sync, glance 27's; each Keystone's db_sync + bootstrap)."""
    makers: dict[str, postgres.TemplateMaker] = {glance_template(): partial(glance_fill_template, cfg)}
    if cfg.old is not None:
        makers[oldglance.template_name()] = partial(oldglance.fill_template, cfg)
    for ks in cfg.keystones:
        makers[keystone.template_name(ks)] = partial(keystone.fill_template, cfg, ks)
    return makers


# ----------------------------------------------------------------------------- servers


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


def glance_start(cfg: Settings, inst: Instance) -> subprocess.Popen[bytes]:
    """Start one glance-api under gunicorn; returns at once (see ``wait_ready``)."""
    log = cfg.path("logs", f"{inst.name}.log")
    log.unlink(missing_ok=True)
    # No control socket: gunicorn 27 would share one in $HOME among every gunicorn on the machine.
    cmd = [str(cfg.path("venv-glance", "bin", "gunicorn")), "--bind", f"{HOST}:{inst.port}", "--no-control-socket"]
    cmd += ["--workers", "1", "--threads", "8", "--timeout", "600", "--graceful-timeout", "5", "--access-logfile", "-"]
    cmd += ["--name", f"glance-{inst.name}", "glance.wsgi.api:application"]
    # PYTHONPATH: paste imports fakeauth from this folder.
    env = child_env({"OS_GLANCE_CONFIG_DIR": str(cfg.path(inst.name, "etc")), "PYTHONPATH": str(HERE)})
    return spawn(cmd, log, cfg.path("run", f"{inst.name}.pid"), env)


# ----------------------------------------------------------------------------- commands

# What a pidfile in run/ belongs to, by name prefix: the needle its command line must contain
# (first match wins; the glance 33 instances and the Keystones are gunicorns).
# ("moto", ...): a moto_server left by a harness from before RGW was its S3.
NEEDLES = (("swift-", "swift-"), *ceph.NEEDLES.items(), *oldglance.NEEDLES.items(), ("moto", "moto_server"))
NEEDLES += (("", "gunicorn"),)


def running_state(cfg: Settings) -> dict[str, bool]:
    """What of the harness answers right now, by component (only those ``cfg`` runs)."""
    state = {"postgres": postgres.pg_ready(cfg)}
    for ks in cfg.keystones:
        alive = pid_alive(keystone.pidfile(cfg, ks), "gunicorn")
        state[f"keystone-{ks.name}"] = bool(alive) and http_status(ks.auth_url) == 200
    if cfg.swift is not None:
        for server, port in swift.ports(cfg.swift).items():
            alive = pid_alive(swift.pidfile(cfg, server), "swift-")
            state[f"swift-{server}"] = bool(alive) and http_status(f"http://{HOST}:{port}/healthcheck") == 200
    for inst in cfg.instances:
        alive = pid_alive(cfg.path("run", f"{inst.name}.pid"), "gunicorn")
        state[inst.name] = bool(alive) and http_status(f"{inst.url}/versions") == 200
    if cfg.old is not None:
        state |= oldglance.state(cfg)
    if cfg.ceph is not None:
        state |= ceph.state(cfg)
    return state


def is_current(cfg: Settings) -> bool:
    """True if everything runs healthy with exactly this configuration."""
    try:
        recorded = json.loads(cfg.path("env.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return False
    return recorded == cfg.fingerprint() and all(running_state(cfg).values())


def stop_servers(cfg: Settings) -> list[str]:
    """Stop every server with a pidfile in run/ (whatever flags started it), all at once; their names."""
    pidfiles = {
        pidfile: next(n for prefix, n in NEEDLES if pidfile.stem.startswith(prefix))
        for pidfile in sorted(cfg.path("run").glob("*.pid"))
    }
    return [pidfile.stem for pidfile in kill_pidfiles(pidfiles)]


def all_ports(cfg: Settings) -> dict[str, int]:
    """Every port this configuration listens on, by server name."""
    ports = {i.name: i.port for i in cfg.instances} | (ceph.ports(cfg) if cfg.ceph is not None else {})
    ports |= {f"keystone-{ks.name}": ks.port for ks in cfg.keystones}
    if cfg.swift is not None:
        ports |= {f"swift-{s}": p for s, p in swift.ports(cfg.swift).items()}
    return ports | (oldglance.ports(cfg) if cfg.old is not None else {})


def cmd_start(cfg: Settings, fresh: bool) -> None:
    """Bring everything up (see the module docstring); a no-op when already current."""
    t0 = time.monotonic()
    if not fresh and is_current(cfg):
        say(f"already running ({time.monotonic() - t0:.2f} s); env: {cfg.path('env.sh')}")
        return
    install(cfg)
    t1 = time.monotonic()
    cfg.path("env.json").unlink(missing_ok=True)  # no stale fingerprint if this start fails
    cfg.path("run").mkdir(exist_ok=True)
    stop_servers(cfg)
    # A server just killed can hold its ports a moment longer (a zombie's sockets close after its
    # memory is gone, which is what pid_alive watches): wait a little before calling them taken.
    deadline = time.monotonic() + 10
    while (
        busy := [f"{p} ({name})" for name, p in all_ports(cfg).items() if port_busy(p)]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    if busy:
        raise HarnessError(f"port(s) already in use by something else: {', '.join(busy)}")
    try:
        start_all(cfg)
    except BaseException:
        stop_servers(cfg)  # no half-started harness left behind
        raise
    for ks in cfg.keystones:
        say(f"keystone-{ks.name}: {ks.auth_url}")
    if cfg.swift is not None:
        say(f"swift: {cfg.swift.url}")
    if cfg.ceph is not None:
        say(f"ceph: conf {ceph_conf_path(cfg)}, RGW {cfg.ceph.rgw_url}")
    for inst in cfg.instances:
        say(f"{inst.name}: {inst.url} stores={','.join(inst.store_ids)} default={inst.default_store}")
    if cfg.old is not None:
        old, blobs = cfg.old.url, oldglance.blob_url(cfg)
        say(f"old: {old} glance {oldglance.OLD_VERSION}, single-store (file, http); blobs: {blobs}")
    say(f"started in {time.monotonic() - t1:.1f} s (total {time.monotonic() - t0:.1f} s); env: {cfg.path('env.sh')}")


def start_all(cfg: Settings) -> None:
    """PostgreSQL, databases from templates, data dirs; Ceph, Keystones (filled in), Swift, glance-api; env files."""
    t1 = time.monotonic()
    for d in ("logs", "run"):
        cfg.path(d).mkdir(exist_ok=True)
    postgres.pg_start(cfg)
    postgres.ensure_templates(cfg, template_makers(cfg))
    postgres.recreate_databases(cfg, templates(cfg))
    if cfg.ceph is not None:
        ceph.ensure_template(cfg)  # once per settings; then every start copies it
        ceph.prepare(cfg)
    for inst in cfg.instances:
        prepare_instance(cfg, inst)
    for ks in cfg.keystones:
        keystone.prepare(cfg, ks)
    if cfg.swift is not None:
        swift.prepare(cfg)
    if cfg.old is not None:
        oldglance.prepare(cfg)
    say(f"postgres, databases, configs: {time.monotonic() - t1:.1f} s")
    # The old glance is the slowest to answer (eventlet, about 10 s under load): spawn it first.
    checks: dict[str, Check] = oldglance.start(cfg) if cfg.old is not None else {}
    checks |= ceph.start(cfg) if cfg.ceph is not None else {}
    # Everything starts at once; glance's authtoken and Swift reach Keystone only on their first request.
    keystones = {f"keystone {ks.name}": keystone.start(cfg, ks) for ks in cfg.keystones}
    checks |= swift.start(cfg) if cfg.swift is not None else {}
    for inst in cfg.instances:
        proc = glance_start(cfg, inst)
        checks[f"glance {inst.name}"] = (f"{inst.url}/versions", cfg.path("logs", f"{inst.name}.log"), proc)
    wait_ready(keystones)
    identities = {ks.name: keystone.populate(cfg, ks) for ks in cfg.keystones}
    wait_ready(checks)
    extra: dict[str, Any] = {"keystone": identities}
    extra["swift"] = swift.env_info(cfg, identities["dst"]["service_project_id"]) if cfg.swift is not None else None
    service = identities["dst"]["service_project_id"] if "dst" in identities else None
    extra["ceph"] = ceph.env_info(cfg, service) if cfg.ceph is not None else None
    clouds = oldglance.clouds_entries(cfg) if cfg.old is not None else []
    clouds += [line for i in identities.values() for line in keystone.clouds_entries(i)]
    cfg.path("clouds.yaml").write_text(clouds_yaml(cfg) + "".join(f"{line}\n" for line in clouds))
    env = oldglance.env_lines(cfg) if cfg.old is not None else []
    env += [line for i in identities.values() for line in keystone.env_lines(i)]
    env += ceph.env_lines(cfg) if cfg.ceph is not None else []
    cfg.path("env.sh").write_text(env_sh(cfg) + "".join(f"{line}\n" for line in env))
    info = env_info(cfg) | extra
    if cfg.old is not None:
        info["instances"]["old"] = oldglance.env_info(cfg)
    cfg.path("env.json").write_text(json.dumps(info, indent=2) + "\n")  # last: marks success


def cmd_stop(cfg: Settings) -> None:
    """Stop every server and PostgreSQL, tolerating any that are not running."""
    cfg.path("run").mkdir(exist_ok=True)
    stopped = stop_servers(cfg)
    if postgres.pg_stop(cfg):
        stopped.append("postgres")
    cfg.path("env.json").unlink(missing_ok=True)
    say(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def cmd_status(cfg: Settings) -> int:
    """Print each component's state; 0 only if every glance instance (and Keystone, Swift) answers."""
    state = running_state(cfg)
    print(f"harness dir: {cfg.harness_dir}")
    where = {"postgres": f"{HOST}:{cfg.pg_port}"}
    where |= {name: f"http://{HOST}:{port}" for name, port in all_ports(cfg).items()}
    for name, up in state.items():
        print(f"{name:<16} {where.get(name, ''):<24} {'up' if up else 'down'}")
    return 0 if all(up for name, up in state.items() if name != "postgres") else 1


def run_command(cfg: Settings, args: argparse.Namespace) -> int:
    """Dispatch one subcommand; a ``HarnessError`` becomes one message and exit status 1."""
    try:
        if args.command == "install":
            install(cfg, everything=True)
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
    sub.add_parser("install", help="create every venv (glance, keystone+swift, glance 27), install qemu-img and Ceph")
    start = sub.add_parser("start", help="start postgres + two glance-api (+ what the flags add)")
    start.add_argument("--s3", action="store_true", help="add store 'cold' (S3 on Ceph's RGW) to src")
    start.add_argument(
        "--ceph", action="store_true", help="RBD stores in src and dst, glance 'rbd' (default store rbd)"
    )
    start.add_argument("--rgw-swift", action="store_true", help="store 'rgw' in dst: Swift on RGW (implies --keystone)")
    start.add_argument("--keystone", action="store_true", help="two Keystones + glance 'ks-src', 'ks-dst'")
    start.add_argument("--swift", action="store_true", help="Swift + store 'swift' in dst (implies --keystone)")
    start.add_argument("--convert", action="store_true", help="glance 'convert': imports converted to raw")
    start.add_argument("--old", action="store_true", help="glance 27.1.1 'old' (single-store) + its blob server")
    start.add_argument("--all", action="store_true", help="all of the above")
    start.add_argument("--fresh", action="store_true", help="wipe and restart even if running")
    status = sub.add_parser("status", help="print what is running")
    for p in (status,):  # status reports on the same configuration as start
        for flag in ("--s3", "--ceph", "--rgw-swift", "--keystone", "--swift", "--convert", "--old", "--all"):
            p.add_argument(flag, action="store_true")
    sub.add_parser("stop", help="stop everything the harness started")
    args = parser.parse_args(argv)
    every = getattr(args, "all", False)
    cfg = Settings.from_env(
        s3=every or getattr(args, "s3", False),
        keystone=every or getattr(args, "keystone", False),
        swift=every or getattr(args, "swift", False),
        convert=every or getattr(args, "convert", False),
        old=every or getattr(args, "old", False),
        ceph=every or getattr(args, "ceph", False),
        rgw_swift=every or getattr(args, "rgw_swift", False),
    )
    cfg.harness_dir.mkdir(parents=True, exist_ok=True)
    # One command at a time per harness dir (parallel test workers may all call start).
    with open(cfg.path(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run_command(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
