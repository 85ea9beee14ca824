"""Real Swift (PyPI ``swift``) behind the ``dst`` Keystone: the object store of glance's ``swift`` store.

Four eventlet servers on 127.0.0.1, each ``workers = 0`` (one process): account, container and
object servers on one device (``$HARNESS_DIR/swift/node/d1``, ``mount_check = false``; user
xattrs must work there — they do on ext4 and tmpfs) with one replica, and the proxy, whose
pipeline authenticates with keystonemiddleware ``authtoken`` + swift's ``keystoneauth``
against the dst Keystone (roles admin/member operate an account). No memcached: tempauth
would need it, keystoneauth does not (authtoken caches tokens in process).

Everything lives in ``$HARNESS_DIR/swift`` (``swift_dir`` in every config, so nothing reads
``/etc/swift``); rings are rebuilt on every real start (ports are in them).  Logs: ``-v`` sends
them to the server's stdout (``logs/swift-*.log``); there is no ``/dev/log`` here, so swift's
syslog handler falls back to UDP on localhost, which nobody reads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from glanceconf import GLANCE_SERVICE_PASSWORD, GLANCE_SERVICE_USER, HOST, Settings, SwiftSpec
from keystone import CLOUD_VENV, SWIFT_SERVICE_PASSWORD, SWIFT_SERVICE_USER
from procs import Check, child_env, run, spawn

SERVERS = ("account", "container", "object", "proxy")
DEVICE = "d1"

_RINGS = """\
import sys
from swift.common.ring import RingBuilder
swift_dir, host, device = sys.argv[1:4]
for kind, port in zip(("account", "container", "object"), sys.argv[4:7]):
    builder = RingBuilder(6, 1, 1)  # 64 partitions, one replica, min_part_hours 1
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": host, "port": int(port),
                     "device": device, "weight": 100})
    builder.rebalance()
    builder.save(f"{swift_dir}/{kind}.builder")
    builder.get_ring().save(f"{swift_dir}/{kind}.ring.gz")
"""


def root(cfg: Settings) -> Path:
    """Swift's folder in the harness dir (its ``swift_dir``)."""
    return cfg.path("swift")


def ports(spec: SwiftSpec) -> dict[str, int]:
    """Each server's port, by server name."""
    return {
        "account": spec.account_port,
        "container": spec.container_port,
        "object": spec.object_port,
        "proxy": spec.proxy_port,
    }


def _port(spec: SwiftSpec, server: str) -> int:
    return ports(spec)[server]


def _default(cfg: Settings, spec: SwiftSpec, server: str, level: str) -> str:
    return f"""\
[DEFAULT]
bind_ip = {HOST}
bind_port = {_port(spec, server)}
workers = 0
swift_dir = {root(cfg)}
devices = {root(cfg) / "node"}
mount_check = false
log_name = swift-{server}
log_level = {level}
"""


def storage_conf(cfg: Settings, spec: SwiftSpec, server: str) -> str:
    """An account/container/object server's config: healthcheck in front of the server app."""
    return f"""{_default(cfg, spec, server, "WARNING")}
[pipeline:main]
pipeline = healthcheck {server}-server

[app:{server}-server]
use = egg:swift#{server}

[filter:healthcheck]
use = egg:swift#healthcheck
"""


def proxy_conf(cfg: Settings, spec: SwiftSpec) -> str:
    """The proxy's config: Keystone auth against the dst Keystone, DLO/SLO for segmented images."""
    ks = cfg.keystone("dst")
    return f"""{_default(cfg, spec, "proxy", "INFO")}
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats authtoken keystoneauth
    copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# How long the proxy waits for a client's next bytes (default 60): glance_store 5.7.0's
# sized segmented uploads hang on their last segment until it runs out (tests wait for it).
client_timeout = 10

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {ks.auth_url}
auth_url = {ks.auth_url}
auth_type = password
username = {SWIFT_SERVICE_USER}
password = {SWIFT_SERVICE_PASSWORD}
project_name = service
user_domain_id = default
project_domain_id = default
interface = public
delay_auth_decision = true

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


def prepare(cfg: Settings) -> None:
    """Wipe Swift's folder (all objects), write swift.conf and the four configs, build the rings."""
    spec = cfg.swift
    assert spec is not None
    home = root(cfg)
    if home.exists():
        shutil.rmtree(home)
    (home / "node" / DEVICE).mkdir(parents=True)
    (home / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = asyncmigrate-harness\nswift_hash_path_prefix = harness\n\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )
    for server in SERVERS[:3]:
        (home / f"{server}-server.conf").write_text(storage_conf(cfg, spec, server))
    (home / "proxy-server.conf").write_text(proxy_conf(cfg, spec))
    ports = [str(spec.account_port), str(spec.container_port), str(spec.object_port)]
    python = str(cfg.path(CLOUD_VENV, "bin", "python"))
    run([python, "-c", _RINGS, str(home), HOST, DEVICE, *ports], env=child_env())


def pidfile(cfg: Settings, server: str) -> Path:
    """Where :func:`start` records a server's pid."""
    return cfg.path("run", f"swift-{server}.pid")


def start(cfg: Settings) -> dict[str, Check]:
    """Start the four servers; returns their readiness checks (``/healthcheck``)."""
    spec = cfg.swift
    assert spec is not None
    checks: dict[str, Check] = {}
    for server in SERVERS:
        log = cfg.path("logs", f"swift-{server}.log")
        log.unlink(missing_ok=True)
        conf = str(root(cfg) / f"{server}-server.conf")
        cmd = [str(cfg.path(CLOUD_VENV, "bin", f"swift-{server}-server")), conf, "-v"]
        proc: subprocess.Popen[bytes] = spawn(cmd, log, pidfile(cfg, server), child_env())
        checks[f"swift {server}"] = (f"http://{HOST}:{_port(spec, server)}/healthcheck", log, proc)
    return checks


def env_info(cfg: Settings, service_project_id: str) -> dict[str, object]:
    """env.json's ``swift`` entry: where the proxy is and which account holds glance's container."""
    spec = cfg.swift
    assert spec is not None
    return {
        "url": spec.url,
        "account_url": f"{spec.url}/v1/AUTH_{service_project_id}",
        "container": "glance",
        # who glance_store logs in as (project "service" of the dst Keystone): the account's owner
        "service_user": {"name": GLANCE_SERVICE_USER, "password": GLANCE_SERVICE_PASSWORD},
        "large_object_size": spec.large_object_size_mb * 1_024_000,
        "chunk_size": spec.chunk_size_mb * 1_024_000,
        "ports": ports(spec),
        "logs": {s: str(cfg.path("logs", f"swift-{s}.log")) for s in SERVERS},
    }
