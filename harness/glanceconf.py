"""What the harness runs, and the files describing it: glance-api.conf, paste ini, clouds.yaml, env.

Pure text generation from a frozen ``Settings``: no processes, no file writes (``realglance.py``
does those).  Stdlib only, like the rest of ``harness/``.

Layout under ``$HARNESS_DIR`` (default ``<repo>/.harness``)::

    venv-glance/ venv-moto/         installed by ``realglance.py install``
    pg/data pg/run                  PostgreSQL cluster and its socket dir (owned by postgres)
    <inst>/etc/                     glance-api.conf + glance-api-paste.ini (OS_GLANCE_CONFIG_DIR)
    <inst>/data/<store>/            file stores, plus staging/ and tasks/ (reserved stores)
    <inst>/locks/                   oslo.concurrency lock_path
    logs/ run/                      server logs, pidfiles
    clouds.yaml env.sh env.json     for clients; env.json also holds the config fingerprint
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # the only address this harness ever binds or targets
GLANCE_PACKAGES = ("glance==33.0.0", "gunicorn", "psycopg2-binary", "boto3")
MOTO_PACKAGES = ("moto[server]",)
ADMIN_PROJECT_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a01"  # same as fakeauth.DEFAULT_PROJECT_ID
ADMIN_USER_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a02"
S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET = "harness", "harness-secret", "glance-cold"


class HarnessError(RuntimeError):
    """A failure worth one clear message (plus a log tail) rather than a traceback."""


@dataclass(frozen=True)
class Instance:
    """One glance-api server: its name, port, database and ``(store id, driver)`` pairs."""

    name: str
    port: int
    database: str
    stores: tuple[tuple[str, str], ...]
    default_store: str

    @property
    def url(self) -> str:
        """Base URL, also the instance's keystone-less endpoint."""
        return f"http://{HOST}:{self.port}"

    @property
    def store_ids(self) -> list[str]:
        """Store ids in ``enabled_backends`` order."""
        return [s for s, _ in self.stores]


@dataclass(frozen=True)
class Settings:
    """Everything that decides what ``start`` brings up; its hash is the config fingerprint."""

    harness_dir: Path
    pg_port: int
    pg_bin: Path
    pg_user: str  # the cluster's superuser: "postgres" when we run as root, else our own name
    moto_port: int
    s3: bool
    instances: tuple[Instance, ...]
    old_port: int  # glance 27.1.1, see oldglance.py
    blob_port: int  # its http-store blob server

    @classmethod
    def from_env(cls, s3: bool) -> Settings:
        """Read ports and paths from ``ASYNCMIGRATE_*`` variables, with the documented defaults."""
        env = os.environ.get
        src_stores = (("fast", "file"), ("slow", "file")) + ((("cold", "s3"),) if s3 else ())
        dst_stores = (("main", "file"), ("archive", "file"))
        return cls(
            harness_dir=Path(env("ASYNCMIGRATE_HARNESS_DIR") or HERE.parent / ".harness").resolve(),
            pg_port=int(env("ASYNCMIGRATE_PG_PORT", "55432")),
            pg_bin=Path(env("ASYNCMIGRATE_PG_BIN", "/usr/lib/postgresql/15/bin")),
            pg_user="postgres" if os.geteuid() == 0 else getpass.getuser(),
            moto_port=int(env("ASYNCMIGRATE_MOTO_PORT", "19295")),
            s3=s3,
            instances=(
                Instance("src", int(env("ASYNCMIGRATE_SRC_PORT", "19292")), "glance_src", src_stores, "fast"),
                Instance("dst", int(env("ASYNCMIGRATE_DST_PORT", "19293")), "glance_dst", dst_stores, "main"),
            ),
            old_port=int(env("ASYNCMIGRATE_OLD_PORT", "19320")),
            blob_port=int(env("ASYNCMIGRATE_BLOB_PORT", "19321")),
        )

    def path(self, *parts: str) -> Path:
        """A path inside the harness dir."""
        return self.harness_dir.joinpath(*parts)

    def fingerprint(self) -> str:
        """Hash of the settings, packages and the harness's own code, so any edit forces a restart."""
        blob = json.dumps([asdict(self), GLANCE_PACKAGES, MOTO_PACKAGES], default=str, sort_keys=True).encode()
        for name in (
            "realglance.py",
            "glanceconf.py",
            "fakeauth.py",
            "oldglance.py",
            "blobserver.py",
            "constraints/upper-constraints-2023.2.txt",
        ):
            blob += (HERE / name).read_bytes()
        return hashlib.sha256(blob).hexdigest()[:16]


def _store_section(cfg: Settings, inst: Instance, store: str, driver: str) -> str:
    if driver == "file":
        body = f"filesystem_store_datadir = {cfg.path(inst.name, 'data', store)}/"
    else:  # s3 on moto; the bucket is pre-created (create-on-put sends a LocationConstraint moto rejects)
        body = f"""\
s3_store_host = http://{HOST}:{cfg.moto_port}
s3_store_access_key = {S3_ACCESS_KEY}
s3_store_secret_key = {S3_SECRET_KEY}
s3_store_bucket = {S3_BUCKET}
s3_store_bucket_url_format = path
s3_store_region_name = us-east-1
s3_store_create_bucket_on_put = false"""
    return f"[{store}]\nstore_description = {inst.name} {store} ({driver})\n{body}\n"


def glance_conf(cfg: Settings, inst: Instance) -> str:
    """The instance's ``glance-api.conf``."""
    etc, data = cfg.path(inst.name, "etc"), cfg.path(inst.name, "data")
    backends = ", ".join(f"{s}:{d}" for s, d in inst.stores)
    stores = "\n".join(_store_section(cfg, inst, s, d) for s, d in inst.stores)
    return f"""\
[DEFAULT]
bind_host = {HOST}
bind_port = {inst.port}
enabled_backends = {backends}
enabled_import_methods = [glance-direct,web-download,copy-image]
worker_self_reference_url = {inst.url}
show_multiple_locations = true
debug = false

[database]
connection = postgresql+psycopg2://{cfg.pg_user}@{HOST}:{cfg.pg_port}/{inst.database}

[glance_store]
default_backend = {inst.default_store}

{stores}
[os_glance_staging_store]
filesystem_store_datadir = {data / "staging"}/

[os_glance_tasks_store]
filesystem_store_datadir = {data / "tasks"}/

[oslo_concurrency]
lock_path = {cfg.path(inst.name, "locks")}

[paste_deploy]
flavor = harness
config_file = {etc / "glance-api-paste.ini"}
"""


def paste_ini(cfg: Settings, inst: Instance, packaged: str) -> str:
    """glance's packaged paste ini, healthcheck path moved, plus a ``harness`` flavor.

    The flavor is glance's own ``keystone`` pipeline with ``fakeauth`` in place of ``authtoken``:
    glance's ``pipeline_factory`` picks the ``[composite:api]`` key named like the flavor, and
    ``load_paste_app`` looks for ``[composite:glance-api-<flavor>]``.
    """
    text = packaged.replace("/etc/glance/healthcheck_disable", str(cfg.path(inst.name, "etc", "healthcheck_disable")))
    keystone = re.search(r"^keystone = (.*\bauthtoken\b.*)$", text, re.M)
    if keystone is None:
        raise HarnessError("glance-api-paste.ini has no 'keystone = ... authtoken ...' pipeline")
    harness = keystone.group(1).replace("authtoken", "fakeauth")
    text = f"{text[: keystone.end()]}\nharness = {harness}{text[keystone.end() :]}"
    return f"""{text}
# asyncmigrate harness: Keystone-less identity, see harness/fakeauth.py.
[composite:glance-api-harness]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[filter:fakeauth]
paste.filter_factory = fakeauth:filter_factory
project_id = {ADMIN_PROJECT_ID}
user_id = {ADMIN_USER_ID}
roles = admin,member,reader
"""


def clouds_yaml(cfg: Settings) -> str:
    """``harness-<inst>`` clouds for openstacksdk/keystoneauth1: the ``none`` auth plugin."""
    lines = ["clouds:"]
    for i in cfg.instances:
        lines += [f"  harness-{i.name}:", "    auth_type: none", "    auth:", f"      endpoint: {i.url}"]
        lines += ["    region_name: RegionOne"]
    return "\n".join(lines) + "\n"


def env_info(cfg: Settings) -> dict[str, Any]:
    """The content of ``env.json``."""
    moto = {"url": f"http://{HOST}:{cfg.moto_port}", "bucket": S3_BUCKET}
    moto.update(access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)
    return {
        "fingerprint": cfg.fingerprint(),
        "harness_dir": str(cfg.harness_dir),
        "admin_project_id": ADMIN_PROJECT_ID,
        "admin_user_id": ADMIN_USER_ID,
        "clouds_yaml": str(cfg.path("clouds.yaml")),
        "s3": cfg.s3,
        "postgres": {
            "port": cfg.pg_port,
            "user": cfg.pg_user,
            "url": f"postgresql://{cfg.pg_user}@{HOST}:{cfg.pg_port}/",
        },
        "instances": {
            i.name: {
                "url": i.url,
                "port": i.port,
                "cloud": f"harness-{i.name}",
                "database": i.database,
                "stores": i.store_ids,
                "default_store": i.default_store,
                "data_dir": str(cfg.path(i.name, "data")),
                "config_dir": str(cfg.path(i.name, "etc")),
                "log": str(cfg.path("logs", f"{i.name}.log")),
            }
            for i in cfg.instances
        },
        "moto": moto if cfg.s3 else None,
    }


def env_sh(cfg: Settings) -> str:
    """The content of ``env.sh`` (``source`` it in a shell)."""
    lines = [
        f"export ASYNCMIGRATE_HARNESS_DIR={cfg.harness_dir}",
        f"export OS_CLIENT_CONFIG_FILE={cfg.path('clouds.yaml')}",
        f"export HARNESS_ADMIN_PROJECT_ID={ADMIN_PROJECT_ID}",
        f"export HARNESS_PG_PORT={cfg.pg_port}",
        f"export HARNESS_S3={int(cfg.s3)}",
    ]
    for i in cfg.instances:
        up = i.name.upper()
        lines += [f"export HARNESS_{up}_URL={i.url}", f"export HARNESS_{up}_PORT={i.port}"]
        lines += [f"export HARNESS_{up}_DATA_DIR={cfg.path(i.name, 'data')}"]
        lines += [f"export HARNESS_{up}_STORES={','.join(i.store_ids)}"]
    if cfg.s3:
        lines += [f"export HARNESS_MOTO_URL=http://{HOST}:{cfg.moto_port}", f"export HARNESS_S3_BUCKET={S3_BUCKET}"]
    return "\n".join(lines) + "\n"
