"""An OLD Glance as an extra source: glance 27.1.1 (OpenStack 2023.2), single-store, plus a blob server.

A harness component like ``keystone.py`` and ``swift.py`` (started with ``--old``); stdlib only.
``realglance.py`` composes it: its venv is installed beside the others, its database copied from
a template like every other, its processes started, checked and stopped with the rest.  What it
runs, all on 127.0.0.1 and without Keystone:

* ``glance-api`` "old": the eventlet server glance 27.1.1 ships (``glance-api --config-file``,
  ``workers = 1``: a parent and one worker), in its own venv ``venv-glance27`` installed with
  OpenStack's 2023.2 upper-constraints (``constraints/upper-constraints-2023.2.txt``; without them
  pip picks libraries too new for it).  Database ``glance_old``, copied on every real start from a
  template filled once by glance 27's own ``db_sync`` (its schema is not glance 33's).
  Single-store, as clouds of that age run: ``[glance_store] stores = file,http``, no
  ``enabled_backends`` (so ``/v2/info/stores`` answers 404 and images carry no ``stores``),
  ``show_multiple_locations = true`` so location-only images can be made by PATCH.  Identity: the
  same ``fakeauth`` paste filter as glance 33 (27.1.1's paste ini has the same ``keystone`` pipeline).
* ``blobserver.py``: serves ``$HARNESS_DIR/blobs`` over HTTP (HEAD, GET, Range) for glance's
  ``http`` store, the way old clouds referenced data kept elsewhere.

Layout: ``old/etc``, ``old/data/images`` (the file store), ``old/data/staging`` (node_staging_uri),
``old/locks``, ``blobs/``; logs ``logs/old.log``, ``logs/blob.log``; pidfiles ``run/old.pid``,
``run/blob.pid``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import postgres
from glanceconf import ADMIN_PROJECT_ID, HERE, HOST, Instance, OldSpec, Settings, paste_ini
from procs import Check, VenvSpec, child_env, http_status, pid_alive, spawn

OLD_VERSION = "27.1.1"
VENV = "venv-glance27"
CONSTRAINTS = HERE / "constraints" / "upper-constraints-2023.2.txt"
PACKAGES = VenvSpec((f"glance=={OLD_VERSION}", "psycopg2-binary"), CONSTRAINTS)
NAME = "old"
IMPORT_METHODS = ("glance-direct", "web-download")  # copy-image needs multi-store
# Raised from glance's default of 128 (image_property_quota), as operators of old clouds did: the
# legacy set needs an image with more properties than glance 33 accepts by default.
PROPERTY_QUOTA = 256
# What each pidfile's process has in its command line (realglance.py stops by pidfile).
NEEDLES = {NAME: "glance-api", "blob": "blobserver.py"}


def spec(cfg: Settings) -> OldSpec:
    """The old glance's settings (``cfg`` was made with ``old=True``)."""
    assert cfg.old is not None
    return cfg.old


def instance(cfg: Settings) -> Instance:
    """The old glance as an ``Instance`` (for the shared paste helper); stores are single-store names."""
    old = spec(cfg)
    return Instance(NAME, old.port, old.database, (("file", "file"), ("http", "http")), "file")


def blob_url(cfg: Settings) -> str:
    """Base URL of the blob server (a blob ``name`` is at ``<url>/<name>``)."""
    return f"http://{HOST}:{spec(cfg).blob_port}"


def glance_conf(cfg: Settings) -> str:
    """glance 27.1.1's ``glance-api.conf``: eventlet server, single store ``file`` plus ``http``."""
    old, root = spec(cfg), cfg.path(NAME)
    return f"""\
[DEFAULT]
bind_host = {HOST}
bind_port = {old.port}
workers = 1
show_multiple_locations = true
node_staging_uri = file://{root / "data" / "staging"}
enabled_import_methods = [{",".join(IMPORT_METHODS)}]
image_property_quota = {PROPERTY_QUOTA}
debug = false

[database]
connection = {postgres.url(cfg, old.database)}

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


# ----------------------------------------------------------------------------- database


def template_name() -> str:
    """The PostgreSQL template holding glance 27.1.1's empty schema (changes with the packages or pins)."""
    blob = json.dumps(PACKAGES.packages).encode() + CONSTRAINTS.read_bytes()
    return f"tpl_glance27_{hashlib.sha256(blob).hexdigest()[:10]}"


def fill_template(cfg: Settings, database: str, log: Path) -> subprocess.Popen[bytes]:
    """glance 27.1.1's ``glance-manage db_sync`` into ``database``."""
    conf = cfg.path("templates", f"{database}.conf")
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f"[database]\nconnection = {postgres.url(cfg, database)}\n")
    cmd = [str(cfg.path(VENV, "bin", "glance-manage")), "--config-file", str(conf), "db_sync"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=child_env())


# ----------------------------------------------------------------------------- servers


def prepare(cfg: Settings) -> None:
    """Wipe and recreate data dirs and blobs; write the config and paste ini."""
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


def pidfile(cfg: Settings, name: str) -> Path:
    """The pidfile of ``old`` or ``blob``."""
    return cfg.path("run", f"{name}.pid")


def start(cfg: Settings) -> dict[str, Check]:
    """Start glance-api (eventlet) and the blob server; return their readiness checks."""
    log, blog = cfg.path("logs", f"{NAME}.log"), cfg.path("logs", "blob.log")
    for old_log in (log, blog):
        old_log.unlink(missing_ok=True)
    conf = str(cfg.path(NAME, "etc", "glance-api.conf"))
    # PYTHONPATH: paste imports fakeauth from this folder.
    env = child_env({"PYTHONPATH": str(HERE)})
    api = spawn([str(cfg.path(VENV, "bin", "glance-api")), "--config-file", conf], log, pidfile(cfg, NAME), env)
    cmd = [sys.executable, str(HERE / "blobserver.py"), "--port", str(spec(cfg).blob_port)]
    blob = spawn([*cmd, "--dir", str(cfg.path("blobs"))], blog, pidfile(cfg, "blob"), child_env())
    return {
        f"glance {NAME} ({OLD_VERSION})": (f"{spec(cfg).url}/versions", log, api),
        "blob server": (f"{blob_url(cfg)}/", blog, blob),
    }


def state(cfg: Settings) -> dict[str, bool]:
    """``{"old": up, "blob": up}``: our process alive and answering."""
    urls = {NAME: f"{spec(cfg).url}/versions", "blob": f"{blob_url(cfg)}/"}
    return {
        name: bool(pid_alive(pidfile(cfg, name), NEEDLES[name])) and http_status(urls[name]) == 200 for name in NEEDLES
    }


def ports(cfg: Settings) -> dict[str, int]:
    """The ports it listens on, by server name."""
    return {NAME: spec(cfg).port, "blob": spec(cfg).blob_port}


# ----------------------------------------------------------------------------- env files


def env_info(cfg: Settings) -> dict[str, Any]:
    """The ``instances.old`` entry of ``env.json``: like the others', plus what the legacy seeding needs."""
    old, inst, root = spec(cfg), instance(cfg), cfg.path(NAME)
    return {
        "url": old.url,
        "port": old.port,
        "cloud": f"harness-{NAME}",
        "glance_version": OLD_VERSION,
        "multi_store": False,
        "database": old.database,
        "database_url": f"postgresql://{cfg.pg_user}@{HOST}:{cfg.pg_port}/{old.database}",
        "psql": str(cfg.pg_bin / "psql"),
        "stores": inst.store_ids,  # glance_store's single-store names, not multi-store ids
        "default_store": inst.default_store,
        "keystone": None,
        "import_methods": list(IMPORT_METHODS),
        "convert_to": None,
        "data_dir": str(root / "data"),
        "config_dir": str(root / "etc"),
        "log": str(cfg.path("logs", f"{NAME}.log")),
        "admin_project_id": ADMIN_PROJECT_ID,
        "blob": {"url": blob_url(cfg), "dir": str(cfg.path("blobs")), "log": str(cfg.path("logs", "blob.log"))},
    }


def clouds_entries(cfg: Settings) -> list[str]:
    """clouds.yaml lines: the ``harness-old`` cloud (auth ``none``, like src and dst)."""
    lines = [f"  harness-{NAME}:", "    auth_type: none", "    auth:", f"      endpoint: {spec(cfg).url}"]
    return [*lines, "    region_name: RegionOne"]


def env_lines(cfg: Settings) -> list[str]:
    """env.sh lines."""
    return [
        f"export HARNESS_OLD_URL={spec(cfg).url}",
        f"export HARNESS_OLD_PORT={spec(cfg).port}",
        f"export HARNESS_OLD_DATA_DIR={cfg.path(NAME, 'data')}",
        f"export HARNESS_OLD_VERSION={OLD_VERSION}",
        f"export HARNESS_BLOB_URL={blob_url(cfg)}",
        f"export HARNESS_BLOB_DIR={cfg.path('blobs')}",
    ]
