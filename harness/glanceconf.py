"""What the harness runs, and the files describing it: glance-api.conf, paste ini, clouds.yaml, env.

Pure text generation from a frozen ``Settings``: no processes, no file writes (``realglance.py``
does those).  Stdlib only, like the rest of ``harness/``.

Layout under ``$HARNESS_DIR`` (default ``<repo>/.harness``)::

    venv-glance/                    installed by ``realglance.py install`` (+ Debian's rados/rbd bindings)
    venv-cloud/                     keystone + swift (``keystone.py``, ``swift.py``)
    ceph/ ceph-templates/           the one-node Ceph and the cluster it is copied from (``ceph.py``)
    venv-glance27/                  the old glance 27.1.1 (``oldglance.py``)
    keystone-<cloud>/ swift/        their configs and data (see those modules)
    old/ blobs/                     the old glance's config and data; its http store's blobs
    templates/                      configs used once to fill the database templates (``postgres.py``)
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
# python-swiftclient: glance_store's swift driver (its [swift] extra).
GLANCE_PACKAGES = ("glance==33.0.0", "gunicorn", "psycopg2-binary", "boto3", "python-swiftclient")
ADMIN_PROJECT_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a01"  # same as fakeauth.DEFAULT_PROJECT_ID
ADMIN_USER_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a02"
# RGW's S3 user (``ceph.py``); each s3 store has its own bucket (glance_store refuses a key that exists).
S3_ACCESS_KEY, S3_SECRET_KEY = "harness", "harness-secret"
S3_BUCKETS = {("src", "cold"): "glance-cold", ("dst", "s3"): "glance-dst"}
RGW_SWIFT_STORE = "rgw"  # the dst store whose swift driver talks to RGW's Swift API (not to Swift)
# Its own container: glance 33 files an added location under the FIRST store whose URL prefix
# (scheme://user:key@auth-address/container/) it starts with, whatever metadata.store says; with
# the same Keystone, user and container as "swift", an rgw location would be checked in Swift.
RGW_SWIFT_CONTAINER = "glance-rgw"
REGION = "RegionOne"  # every Keystone's region (keystone.py)
# The dst Keystone lists RGW's Swift API as object-store of this region (real Swift is REGION's).
RGW_REGION = "RegionTwo"
ALL_IMPORT_METHODS = ("glance-direct", "web-download", "copy-image")
# Test-only passwords of loopback servers (like the S3 keys above): the service user that
# glance's authtoken and glance_store's Swift driver log in with, in each Keystone.
GLANCE_SERVICE_USER, GLANCE_SERVICE_PASSWORD = "glance", "glance-service-pw"
# What glance "dst" injects into every image it imports (glance-direct, web-download).
INJECTED = (("x_harness_region", "loopback-1"), ("x_harness_managed_by", "asyncmigrate-harness"))


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
    keystone: str = ""  # the Keystone ("src"/"dst") guarding it through authtoken; "" = fakeauth
    import_methods: tuple[str, ...] = ALL_IMPORT_METHODS
    convert_to: str = ""  # the image_conversion plugin's output_format; "" = no conversion
    inject: tuple[tuple[str, str], ...] = ()  # the inject_image_metadata plugin's properties; () = off
    # Keystone unified limits (use_keystone_limits + [oslo_limit]): quotas registered in its Keystone.
    keystone_limits: bool = False

    @property
    def url(self) -> str:
        """Base URL, also the instance's keystone-less endpoint."""
        return f"http://{HOST}:{self.port}"

    @property
    def store_ids(self) -> list[str]:
        """Store ids in ``enabled_backends`` order."""
        return [s for s, _ in self.stores]

    @property
    def env_name(self) -> str:
        """The name in shell variables: ``ks-src`` → ``KS_SRC``."""
        return self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class KeystoneSpec:
    """One Keystone (one cloud's identity): its name (``src``/``dst``), port and token lifetime."""

    name: str
    port: int
    token_expiration: int  # seconds, keystone.conf [token] expiration

    @property
    def url(self) -> str:
        """Base URL; the identity endpoint is ``url + "/v3"``."""
        return f"http://{HOST}:{self.port}"

    @property
    def auth_url(self) -> str:
        """What clients put in ``auth_url``."""
        return f"{self.url}/v3"

    @property
    def database(self) -> str:
        """Its PostgreSQL database."""
        return f"keystone_{self.name}"


@dataclass(frozen=True)
class SwiftSpec:
    """Swift's four servers (behind the ``dst`` Keystone) and the segment sizes glance uses.

    Sizes are in glance_store's "MB", which is 1,024,000 bytes (``units.k * units.Ki``).
    """

    proxy_port: int
    account_port: int
    container_port: int
    object_port: int
    large_object_size_mb: int
    chunk_size_mb: int

    @property
    def url(self) -> str:
        """The proxy's base URL (accounts under ``/v1/AUTH_<project id>``)."""
        return f"http://{HOST}:{self.proxy_port}"


@dataclass(frozen=True)
class OldSpec:
    """The old single-store glance 27.1.1 (``oldglance.py``) and the blob server of its http store."""

    port: int
    blob_port: int
    database: str = "glance_old"

    @property
    def url(self) -> str:
        """Base URL, also its keystone-less endpoint."""
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True)
class CephSpec:
    """The one-node Ceph (``ceph.py``): a mon, a bluestore OSD, RGW; what the glance stores use of it.

    ``rbd``: the RBD pools serve glance stores (``--ceph``); ``rgw_swift``: RGW's Swift API takes
    the dst Keystone's tokens (``--rgw-swift``).  RGW always runs: it is the harness's S3.
    """

    mon_port: int  # messenger v2; v1 listens on the next port
    osd_port_min: int  # the OSD binds 8 ports (public, cluster, two heartbeats; v2 and v1) in this range
    osd_port_max: int
    rgw_port: int
    rbd: bool
    rgw_swift: bool
    fsid: str = "6b1c1a5e-ce9f-4c1a-9e57-a5e0c0de0001"  # fixed: the template's monmap holds it

    @property
    def mon_ports(self) -> tuple[int, int]:
        """(v2, v1) ports of the mon."""
        return self.mon_port, self.mon_port + 1

    @property
    def rgw_url(self) -> str:
        """RGW's S3 endpoint (Swift: ``/swift/v1``)."""
        return f"http://{HOST}:{self.rgw_port}"


@dataclass(frozen=True)
class Settings:
    """Everything that decides what ``start`` brings up; its hash is the config fingerprint."""

    harness_dir: Path
    pg_port: int
    pg_bin: Path
    pg_user: str  # the cluster's superuser: "postgres" when we run as root, else our own name
    s3: bool
    instances: tuple[Instance, ...]
    keystones: tuple[KeystoneSpec, ...] = ()  # empty unless started with --keystone
    swift: SwiftSpec | None = None  # set with --swift (which implies --keystone)
    old: OldSpec | None = None  # set with --old
    ceph: CephSpec | None = None  # set with --s3 (RGW is the S3), --ceph (RBD stores) or --rgw-swift

    @classmethod
    def from_env(
        cls,
        s3: bool,
        keystone: bool = False,
        swift: bool = False,
        convert: bool = False,
        old: bool = False,
        ceph: bool = False,
        rgw_swift: bool = False,
    ) -> Settings:
        """Read ports and paths from ``ASYNCMIGRATE_*`` variables, with the documented defaults."""
        env = os.environ.get

        # ASYNCMIGRATE_PORT_OFFSET shifts every default port at once: a second harness (another
        # checkout, another dir) runs beside the first without naming each port.
        offset = int(env("ASYNCMIGRATE_PORT_OFFSET", "0"))

        def port(name: str, default: int) -> int:
            return int(env(f"ASYNCMIGRATE_{name}_PORT", str(default + offset)))

        keystone = keystone or swift or rgw_swift  # Swift and RGW's Swift API take the dst Keystone's tokens
        src_stores = (("fast", "file"), ("slow", "file")) + ((("cold", "s3"),) if s3 else ())
        src_stores += (("ceph", "rbd"),) if ceph else ()
        dst_stores = (("main", "file"), ("archive", "file")) + ((("swift", "swift"),) if swift else ())
        # Two RBD pools: the old and the new Ceph-backed store of a cloud; and S3 on RGW.
        dst_stores += (("ceph", "rbd"), ("ceph2", "rbd"), ("s3", "s3")) if ceph else ()
        dst_stores += ((RGW_SWIFT_STORE, "swift"),) if rgw_swift else ()
        extra: tuple[Instance, ...] = ()
        if ceph:  # a Ceph-backed cloud as most run one: its default store is RBD, imports become raw
            extra += (Instance("rbd", port("RBD", 19305), "glance_rbd", (("ceph", "rbd"),), "ceph", convert_to="raw"),)
        if convert:  # Red Hat OpenStack on OpenShift style: converts every import to raw, no copy-image
            methods = ("glance-direct", "web-download")
            extra += (
                Instance(
                    "convert",
                    port("CONVERT", 19304),
                    "glance_convert",
                    (("main", "file"),),
                    "main",
                    import_methods=methods,
                    convert_to="raw",
                ),
            )
        keystones: tuple[KeystoneSpec, ...] = ()
        if keystone:
            expiration = int(env("ASYNCMIGRATE_TOKEN_EXPIRATION", "3600"))
            # The source Keystone's tokens are short-lived, so a test transfer can outlive one
            # (tokens of the dst Keystone also serve glance_store's Swift uploads: kept long).
            src_expiration = int(env("ASYNCMIGRATE_TOKEN_EXPIRATION_SRC", "30"))
            keystones = (
                KeystoneSpec("src", port("KEYSTONE_SRC", 19300), src_expiration),
                KeystoneSpec("dst", port("KEYSTONE_DST", 19301), expiration),
            )
            extra += (
                Instance("ks-src", port("KS_SRC", 19302), "glance_ks_src", (("fast", "file"),), "fast", keystone="src"),
                # Only copy-image, as many production clouds: a client sees "glance-direct not offered".
                Instance(
                    "ks-dst",
                    port("KS_DST", 19303),
                    "glance_ks_dst",
                    (("main", "file"),),
                    "main",
                    keystone="dst",
                    import_methods=("copy-image",),
                    # Quotas from Keystone unified limits, registered high (keystone.REGISTERED_LIMITS):
                    # a test sets a low project limit for a project of its own.
                    keystone_limits=True,
                ),
            )
        swift_spec = None
        if swift:
            swift_spec = SwiftSpec(
                proxy_port=port("SWIFT", 19310),
                account_port=port("SWIFT_ACCOUNT", 19311),
                container_port=port("SWIFT_CONTAINER", 19312),
                object_port=port("SWIFT_OBJECT", 19313),
                large_object_size_mb=swift_segment_sizes()[0],
                chunk_size_mb=swift_segment_sizes()[1],
            )
        ceph_spec = None
        if s3 or ceph or rgw_swift:
            ceph_spec = CephSpec(
                mon_port=port("CEPH_MON", 19330),
                osd_port_min=port("CEPH_OSD_MIN", 19340),
                osd_port_max=port("CEPH_OSD_MAX", 19349),
                rgw_port=port("RGW", 19332),
                rbd=ceph,
                rgw_swift=rgw_swift,
            )
        return cls(
            harness_dir=Path(env("ASYNCMIGRATE_HARNESS_DIR") or HERE.parent / ".harness").resolve(),
            # Below the kernel's ephemeral range (32768-60999): a client socket could hold a port in it.
            pg_port=port("PG", 19390),
            pg_bin=Path(env("ASYNCMIGRATE_PG_BIN", "/usr/lib/postgresql/15/bin")),
            pg_user="postgres" if os.geteuid() == 0 else getpass.getuser(),
            s3=s3,
            instances=(
                Instance("src", port("SRC", 19292), "glance_src", src_stores, "fast"),
                # dst injects properties on glance-direct/web-download imports, an admin's too
                # (no test imports into dst that way but the one about injected properties;
                # copy-image, which move uses, never runs plugins).
                Instance("dst", port("DST", 19293), "glance_dst", dst_stores, "main", inject=INJECTED),
                *extra,
            ),
            keystones=keystones,
            swift=swift_spec,
            old=OldSpec(port("OLD", 19320), port("BLOB", 19321)) if old else None,
            ceph=ceph_spec,
        )

    def path(self, *parts: str) -> Path:
        """A path inside the harness dir."""
        return self.harness_dir.joinpath(*parts)

    def keystone(self, name: str) -> KeystoneSpec:
        """The Keystone of cloud ``name`` (``src``/``dst``)."""
        for ks in self.keystones:
            if ks.name == name:
                return ks
        raise HarnessError(f"no Keystone {name!r} in this harness (start it with --keystone)")

    def databases(self) -> list[str]:
        """Every PostgreSQL database the harness recreates on a real start."""
        old = [self.old.database] if self.old is not None else []
        return [i.database for i in self.instances] + [k.database for k in self.keystones] + old

    def fingerprint(self) -> str:
        """Hash of the settings, packages and the harness's own code, so any edit forces a restart."""
        blob = json.dumps([asdict(self), GLANCE_PACKAGES], default=str, sort_keys=True).encode()
        # Every server module and the old glance's pins; seed.py and legacy.py only talk to the servers.
        for path in sorted(HERE.glob("*.py")) + sorted(HERE.glob("constraints/*.txt")):
            if path.name not in ("seed.py", "legacy.py"):
                blob += path.read_bytes()
        return hashlib.sha256(blob).hexdigest()[:16]


def rbd_pool(inst: Instance, store: str) -> str:
    """The Ceph pool behind an rbd store (``ceph.POOLS`` makes them)."""
    return f"{inst.name}-{store}"


def ceph_conf_path(cfg: Settings) -> Path:
    """The cluster's ``ceph.conf``: daemons, CLIs and glance_store's rbd driver all read it."""
    return cfg.path("ceph", "ceph.conf")


def _store_section(cfg: Settings, inst: Instance, store: str, driver: str) -> str:
    if driver == "file":
        body = f"filesystem_store_datadir = {cfg.path(inst.name, 'data', store)}/"
    elif driver == "swift":
        body = _swift_store(cfg, rgw=store == RGW_SWIFT_STORE)
    elif driver == "rbd":
        # glance_store writes RBD image POOL/<image id> in 8 MiB objects and creates and protects
        # its snapshot "snap" (what Nova and Cinder clone); auth is none, the user only names the client.
        body = f"""\
rbd_store_pool = {rbd_pool(inst, store)}
rbd_store_user = glance
rbd_store_ceph_conf = {ceph_conf_path(cfg)}
rbd_store_chunk_size = 8"""
    else:  # s3 on RGW; the bucket is made with the cluster (ceph.py), not on put
        assert cfg.ceph is not None
        body = f"""\
s3_store_host = {cfg.ceph.rgw_url}
s3_store_access_key = {S3_ACCESS_KEY}
s3_store_secret_key = {S3_SECRET_KEY}
s3_store_bucket = {S3_BUCKETS[(inst.name, store)]}
s3_store_bucket_url_format = path
s3_store_region_name = us-east-1
s3_store_create_bucket_on_put = false"""
    return f"[{store}]\nstore_description = {inst.name} {store} ({driver})\n{body}\n"


def _swift_store(cfg: Settings, rgw: bool = False) -> str:
    """glance_store's swift driver with INLINE credentials (no swift_store_config_file).

    Inline credentials make locations read ``swift+http://service%3Aglance:<key>@host/v3/glance/<id>``,
    which glance accepts in a location PATCH; a config-file reference makes them
    ``swift+config://…``, a scheme glance refuses to ADD ("Invalid location").  Keystone v3 is the
    only auth glance_store 5.7 speaks to Swift: it logs in as ``project:user`` and takes the
    ``object-store`` endpoint from its token's catalog — for the ``rgw`` store, region
    ``RGW_REGION``'s: RGW's Swift API, which validates the same Keystone's tokens.  (Not
    ``swift_store_endpoint``: with it uploads and downloads work, but the size check of a location
    added by PATCH authenticates through swiftclient, which wants the endpoint in the catalog — it
    fails, the size reads 0 and glance answers "400 Invalid location".)
    """
    large, chunk = swift_segment_sizes()  # what --swift's SwiftSpec also holds
    # Each store names its region: with --swift and --rgw-swift the catalog lists two object-stores.
    endpoint = f"\nswift_store_region = {RGW_REGION if rgw else REGION}"
    return f"""\
swift_store_auth_address = {cfg.keystone("dst").auth_url}
swift_store_auth_version = 3
swift_store_user = service:{GLANCE_SERVICE_USER}
swift_store_key = {GLANCE_SERVICE_PASSWORD}
swift_store_container = {RGW_SWIFT_CONTAINER if rgw else "glance"}
swift_store_create_container_on_put = true
swift_store_endpoint_type = publicURL
swift_store_large_object_size = {large}
swift_store_large_object_chunk_size = {chunk}{endpoint}"""


def swift_segment_sizes() -> tuple[int, int]:
    """(large object size, segment size) of glance's swift stores, in glance_store "MB"."""
    env = os.environ.get
    return int(env("ASYNCMIGRATE_SWIFT_LARGE_OBJECT_MB", "16")), int(env("ASYNCMIGRATE_SWIFT_CHUNK_MB", "8"))


def _authtoken(cfg: Settings, inst: Instance) -> str:
    """keystonemiddleware's section: a revoked token is refused at once (no token cache)."""
    if not inst.keystone:
        return ""
    ks = cfg.keystone(inst.keystone)
    return f"""
[keystone_authtoken]
www_authenticate_uri = {ks.auth_url}
auth_url = {ks.auth_url}
auth_type = password
username = {GLANCE_SERVICE_USER}
password = {GLANCE_SERVICE_PASSWORD}
project_name = service
user_domain_name = Default
project_domain_name = Default
interface = public
# -1: no cache at all, every request is validated by Keystone (a revoked token fails at once).
token_cache_time = -1
"""


def _oslo_limit(cfg: Settings, inst: Instance) -> str:
    """oslo.limit's section: glance reads the image service's limits from its Keystone as the glance
    service user, system-scoped (it needs ``reader`` on the system: ``keystone.populate`` grants it)."""
    if not inst.keystone_limits:
        return ""
    ks = cfg.keystone(inst.keystone)
    return f"""
[oslo_limit]
auth_url = {ks.auth_url}
auth_type = password
username = {GLANCE_SERVICE_USER}
password = {GLANCE_SERVICE_PASSWORD}
user_domain_id = default
system_scope = all
endpoint_service_type = image
endpoint_region_name = RegionOne
endpoint_interface = public
"""


def _plugins(inst: Instance) -> str:
    """The import plugins: image_conversion (needs qemu-img on the PATH), inject_image_metadata
    (for every user: ``ignore_user_roles`` names a role the harness's admin lacks; glance's
    default, admin, would leave an admin's imports alone)."""
    plugins = (["image_conversion"] if inst.convert_to else []) + (["inject_image_metadata"] if inst.inject else [])
    if not plugins:
        return ""
    text = f"\n[image_import_opts]\nimage_import_plugins = {plugins!r}\n"
    if inst.convert_to:
        text += f"\n[image_conversion]\noutput_format = {inst.convert_to}\n"
    if inst.inject:
        pairs = ",".join(f"{k}:{v}" for k, v in inst.inject)
        text += f"\n[inject_metadata_properties]\ninject = {pairs}\nignore_user_roles = service\n"
    return text


def glance_conf(cfg: Settings, inst: Instance) -> str:
    """The instance's ``glance-api.conf``."""
    etc, data = cfg.path(inst.name, "etc"), cfg.path(inst.name, "data")
    backends = ", ".join(f"{s}:{d}" for s, d in inst.stores)
    stores = "\n".join(_store_section(cfg, inst, s, d) for s, d in inst.stores)
    flavor = "keystone" if inst.keystone else "harness"
    return f"""\
[DEFAULT]
bind_host = {HOST}
bind_port = {inst.port}
enabled_backends = {backends}
enabled_import_methods = [{",".join(inst.import_methods)}]
worker_self_reference_url = {inst.url}
show_multiple_locations = true
use_keystone_limits = {inst.keystone_limits}
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
flavor = {flavor}
config_file = {etc / "glance-api-paste.ini"}
{_authtoken(cfg, inst)}{_oslo_limit(cfg, inst)}{_plugins(inst)}"""


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
    """``harness-<inst>`` clouds for openstacksdk/keystoneauth1: the ``none`` auth plugin.

    Instances behind a Keystone get their clouds from ``keystone.clouds_entries`` instead.
    """
    lines = ["clouds:"]
    for i in cfg.instances:
        if i.keystone:
            continue
        lines += [f"  harness-{i.name}:", "    auth_type: none", "    auth:", f"      endpoint: {i.url}"]
        lines += ["    region_name: RegionOne"]
    return "\n".join(lines) + "\n"


def env_info(cfg: Settings) -> dict[str, Any]:
    """The content of ``env.json`` (``ceph.env_info`` adds the cluster's entry)."""
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
                "keystone": i.keystone or None,
                "import_methods": list(i.import_methods),
                "convert_to": i.convert_to or None,
                "inject": dict(i.inject),
                "keystone_limits": i.keystone_limits,
                "data_dir": str(cfg.path(i.name, "data")),
                "config_dir": str(cfg.path(i.name, "etc")),
                "log": str(cfg.path("logs", f"{i.name}.log")),
            }
            for i in cfg.instances
        },
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
        up = i.env_name
        lines += [f"export HARNESS_{up}_URL={i.url}", f"export HARNESS_{up}_PORT={i.port}"]
        lines += [f"export HARNESS_{up}_DATA_DIR={cfg.path(i.name, 'data')}"]
        lines += [f"export HARNESS_{up}_STORES={','.join(i.store_ids)}"]
    return "\n".join(lines) + "\n"
