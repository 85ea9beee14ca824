"""An OLD Glance as an extra source: glance 27.1.1 (OpenStack 2023.2), single-store, plus a blob server.

Stdlib only, like the rest of ``harness/``; ``realglance.py`` calls the pieces here at each step of
``install``/``start``/``status``/``stop``.  What it runs, all on 127.0.0.1 and without Keystone:

* ``glance-api`` "old": the eventlet server glance 27.1.1 ships (``glance-api --config-file``,
  ``workers = 1``: a parent and one worker), in its own venv ``venv-glance27`` installed with
  OpenStack's 2023.2 upper-constraints (``constraints/upper-constraints-2023.2.txt``; without them
  pip picks libraries too new for it).  Database ``glance_old`` in the harness's PostgreSQL,
  recreated on every real start.  Single-store, as clouds of that age run: ``[glance_store] stores =
  file,http``, no ``enabled_backends`` (so ``/v2/info/stores`` answers 404 and images carry no
  ``stores``), ``show_multiple_locations = true`` so location-only images can be made by PATCH.
  Identity: the same ``fakeauth`` paste filter as glance 33 (27.1.1's paste ini has the same
  ``keystone`` pipeline).
* ``blobserver.py``: serves ``$HARNESS_DIR/blobs`` over HTTP (HEAD, GET, Range) for glance's
  ``http`` store, the way old clouds referenced data kept elsewhere.

Layout: ``old/etc``, ``old/data/images`` (the file store), ``old/data/staging`` (node_staging_uri),
``old/locks``, ``blobs/``; logs ``logs/old.log``, ``logs/blob.log``, ``logs/old-db_sync.log``;
pidfiles ``run/old.pid``, ``run/blob.pid``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import realglance as rg  # the generic helpers; realglance imports us too, used only at call time
from glanceconf import ADMIN_PROJECT_ID, HERE, HOST, Instance, Settings, paste_ini

OLD_VERSION = "27.1.1"
OLD_PACKAGES = (f"glance=={OLD_VERSION}", "psycopg2-binary")
CONSTRAINTS = HERE / "constraints" / "upper-constraints-2023.2.txt"
VENV = "venv-glance27"
NAME = "old"
DATABASE = "glance_old"
# Raised from glance's default of 128 (image_property_quota), as operators of old clouds did: the
# legacy set needs an image with more properties than glance 33 accepts by default.
PROPERTY_QUOTA = 256


def instance(cfg: Settings) -> Instance:
    """The old glance as an ``Instance`` (for the shared paste/cloud helpers); stores are single-store names."""
    return Instance(NAME, cfg.old_port, DATABASE, (("file", "file"), ("http", "http")), "file")


def blob_url(cfg: Settings) -> str:
    """Base URL of the blob server (a blob ``name`` is at ``<url>/<name>``)."""
    return f"http://{HOST}:{cfg.blob_port}"


def glance_conf(cfg: Settings) -> str:
    """glance 27.1.1's ``glance-api.conf``: eventlet server, single store ``file`` plus ``http``."""
    inst, root = instance(cfg), cfg.path(NAME)
    return f"""\
[DEFAULT]
bind_host = {HOST}
bind_port = {inst.port}
workers = 1
show_multiple_locations = true
node_staging_uri = file://{root / "data" / "staging"}
enabled_import_methods = [glance-direct,web-download]
image_property_quota = {PROPERTY_QUOTA}
debug = false

[database]
connection = postgresql+psycopg2://{cfg.pg_user}@{HOST}:{cfg.pg_port}/{DATABASE}

[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = {root / "data" / "images"}/

[oslo_concurrency]
lock_path = {root / "locks"}

[paste_deploy]
flavor = harness
config_file = {root / "etc" / "glance-api-paste.ini"}
"""


# ----------------------------------------------------------------------------- install


def install(cfg: Settings) -> bool:
    """Create ``venv-glance27`` with the 2023.2 constraints (idempotent); True if work was done."""
    return rg.ensure_venv(cfg.path(VENV), OLD_PACKAGES, constraints=CONSTRAINTS)


# ----------------------------------------------------------------------------- start


def prepare(cfg: Settings) -> subprocess.Popen[bytes]:
    """Recreate database, data dirs, blobs and config; start ``db_sync`` and return it (see ``finish_db_sync``)."""
    sock = str(cfg.path("pg", "run"))
    psql = [str(cfg.pg_bin / "psql"), "-q", "-h", sock, "-p", str(cfg.pg_port), "-U", cfg.pg_user, "-d", "postgres"]
    psql += ["-v", "ON_ERROR_STOP=1", "-c", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"]
    rg.run(rg.as_pg([*psql, "-c", f"CREATE DATABASE {DATABASE}"]))
    root = cfg.path(NAME)
    for stale in (root, cfg.path("blobs")):
        if stale.exists():
            shutil.rmtree(stale)
    for sub in ("etc", "locks", "data/images", "data/staging"):
        (root / sub).mkdir(parents=True)
    cfg.path("blobs").mkdir()
    packaged = cfg.path(VENV, "etc", "glance", "glance-api-paste.ini").read_text()
    (root / "etc" / "glance-api.conf").write_text(glance_conf(cfg))
    (root / "etc" / "glance-api-paste.ini").write_text(paste_ini(cfg, instance(cfg), packaged))
    log = cfg.path("logs", f"{NAME}-db_sync.log")
    cmd = [str(cfg.path(VENV, "bin", "glance-manage")), "--config-file", str(root / "etc" / "glance-api.conf")]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*cmd, "db_sync"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=rg.child_env()
        )


def finish_db_sync(cfg: Settings, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the ``db_sync`` that ``prepare`` started; raise with its log tail on failure."""
    if proc.wait() != 0:
        log = cfg.path("logs", f"{NAME}-db_sync.log")
        raise rg.HarnessError(f"db_sync for {NAME} failed; {log}:\n{rg.tail(log)}")


def spawn(cfg: Settings) -> dict[str, rg.Check]:
    """Start glance-api (eventlet) and the blob server; return their readiness checks for ``wait_ready``."""
    log, blog = cfg.path("logs", f"{NAME}.log"), cfg.path("logs", "blob.log")
    for old_log in (log, blog):
        old_log.unlink(missing_ok=True)
    conf = str(cfg.path(NAME, "etc", "glance-api.conf"))
    # PYTHONPATH: paste imports fakeauth from this folder.
    env = rg.child_env({"PYTHONPATH": str(HERE)})
    api = rg.spawn([str(cfg.path(VENV, "bin", "glance-api")), "--config-file", conf], log, pidfile(cfg, NAME), env)
    cmd = [sys.executable, str(HERE / "blobserver.py"), "--port", str(cfg.blob_port), "--dir", str(cfg.path("blobs"))]
    blob = rg.spawn(cmd, blog, pidfile(cfg, "blob"), rg.child_env())
    return {
        f"glance {NAME} ({OLD_VERSION})": (f"{instance(cfg).url}/versions", log, api),
        "blob server": (f"{blob_url(cfg)}/", blog, blob),
    }


# ----------------------------------------------------------------------------- status, stop


def pidfile(cfg: Settings, name: str) -> Path:
    """The pidfile of ``old`` or ``blob``."""
    return cfg.path("run", f"{name}.pid")


NEEDLES = {NAME: "glance-api", "blob": "blobserver.py"}  # what each process's command line contains


def state(cfg: Settings) -> dict[str, bool]:
    """``{"old": up, "blob": up}``: our process alive and answering."""
    urls = {NAME: f"{instance(cfg).url}/versions", "blob": f"{blob_url(cfg)}/"}
    return {
        name: bool(rg.pid_alive(pidfile(cfg, name), NEEDLES[name])) and rg.http_status(urls[name]) == 200
        for name in NEEDLES
    }


def stop(cfg: Settings) -> list[str]:
    """Stop glance-api and the blob server; the names of those that were running."""
    return [name for name, needle in NEEDLES.items() if rg.kill_pidfile(pidfile(cfg, name), needle)]


def ports(cfg: Settings) -> dict[str, int]:
    """The ports ``start`` needs free."""
    return {NAME: cfg.old_port, "blob": cfg.blob_port}


# ----------------------------------------------------------------------------- env files


def env_info(cfg: Settings) -> dict[str, Any]:
    """The ``instances.old`` entry of ``env.json``: like src/dst's, plus what the legacy seeding needs."""
    inst, root = instance(cfg), cfg.path(NAME)
    return {
        "url": inst.url,
        "port": inst.port,
        "cloud": f"harness-{NAME}",
        "glance_version": OLD_VERSION,
        "multi_store": False,
        "database": DATABASE,
        "database_url": f"postgresql://{cfg.pg_user}@{HOST}:{cfg.pg_port}/{DATABASE}",
        "psql": str(cfg.pg_bin / "psql"),
        "stores": inst.store_ids,  # glance_store's single-store names, not multi-store ids
        "default_store": inst.default_store,
        "data_dir": str(root / "data"),
        "config_dir": str(root / "etc"),
        "log": str(cfg.path("logs", f"{NAME}.log")),
        "admin_project_id": ADMIN_PROJECT_ID,
        "blob": {"url": blob_url(cfg), "dir": str(cfg.path("blobs")), "log": str(cfg.path("logs", "blob.log"))},
    }


def clouds_yaml(cfg: Settings) -> str:
    """The ``harness-old`` cloud, to append under ``clouds:``."""
    url = instance(cfg).url
    return f"  harness-{NAME}:\n    auth_type: none\n    auth:\n      endpoint: {url}\n    region_name: RegionOne\n"


def env_sh(cfg: Settings) -> str:
    """Lines for ``env.sh``."""
    return (
        f"export HARNESS_OLD_URL={instance(cfg).url}\n"
        f"export HARNESS_OLD_PORT={cfg.old_port}\n"
        f"export HARNESS_OLD_DATA_DIR={cfg.path(NAME, 'data')}\n"
        f"export HARNESS_OLD_VERSION={OLD_VERSION}\n"
        f"export HARNESS_BLOB_URL={blob_url(cfg)}\n"
        f"export HARNESS_BLOB_DIR={cfg.path('blobs')}\n"
    )
