"""A one-node Ceph (Debian's ceph 16.2 packages): RBD pools for glance's rbd stores, RGW as S3 and Swift.

A harness component like ``swift.py``; stdlib only.  What runs, all on 127.0.0.1, no systemd, no
ceph-mgr (not needed for RBD or RGW I/O), auth ``none``, everything under ``$HARNESS_DIR/ceph``:

* ``ceph-mon -i a``: messenger v2 on ``mon_port``, v1 on the next port;
* ``ceph-osd -i 0``: bluestore on a sparse file (``osd/0/block``, 10 GiB apparent), pool size 1,
  its 8 messenger ports within ``[osd_port_min, osd_port_max]``;
* ``radosgw -n client.rgw.gw``: beast on ``rgw_port``; S3 user ``glance`` with the harness's keys,
  buckets ``glance-cold`` (src store ``cold``) and ``glance-dst`` (dst store ``s3``); with
  ``--rgw-swift`` its Swift API (``/swift/v1/AUTH_<project>``, the dst Keystone's ``object-store``
  of region ``RGW_REGION``) validates that Keystone's tokens.

Pools (8 PGs each): ``src-ceph``, ``dst-ceph``, ``dst-ceph2`` and ``rbd-ceph``, one per rbd store
(``glanceconf.rbd_pool``), plus RGW's own.

A cluster is made once per settings (``ensure_template``: mon and OSD mkfs, pools, RGW's pools,
user and buckets, then a clean stop; 24 s measured) under ``ceph-templates/<hash>``; every real start
copies it (``cp --sparse=always``: only the blocks in use) into ``ceph/`` and starts the three
daemons on it, so a fresh cluster costs a daemon start, not a bootstrap.  The mon's address is in
its monmap: ports are part of the template's hash.

Install: ``apt-get install ceph-mon ceph-osd ceph-common radosgw python3-rados python3-rbd`` when
missing (as root, like qemu-utils); glance_store's rbd driver imports ``rados`` and ``rbd``, which
Debian ships only for its own Python: :func:`link_bindings` symlinks the two extension modules into
the glance venv's site-packages (same Python minor version, same ABI tag).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from glanceconf import (
    GLANCE_SERVICE_PASSWORD,
    GLANCE_SERVICE_USER,
    HOST,
    RGW_REGION,
    RGW_SWIFT_CONTAINER,
    RGW_SWIFT_STORE,
    S3_ACCESS_KEY,
    S3_BUCKETS,
    S3_SECRET_KEY,
    CephSpec,
    HarnessError,
    Settings,
    ceph_conf_path,
    rbd_pool,
    swift_segment_sizes,
)
from procs import Check, child_env, http_status, kill_pidfiles, pid_alive, say, spawn, wait_ready

PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common", "radosgw", "python3-rados", "python3-rbd")
COMMANDS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "rbd", "monmaptool")
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")  # where Debian puts rados/rbd for its python3
BINDINGS = ("rados", "rbd")
POOLS = ("src-ceph", "dst-ceph", "dst-ceph2", "rbd-ceph")
OSD_UUID = "6b1c1a5e-ce9f-4c1a-9e57-a5e0c0de0002"
BLOCK_SIZE = 10 * 1024**3  # apparent size of the OSD's sparse file
OSD_MEMORY_TARGET = 1024**3  # bluestore's cache autotunes towards it (default 4 GiB)
SNAPSHOT = "snap"  # the protected snapshot glance_store makes (what Nova and Cinder clone)
RGW_NAME = "client.rgw.gw"
DAEMONS = ("mon", "osd", "rgw")
# pidfile stem -> what its command line holds (realglance.py stops servers by pidfile)
NEEDLES = {"ceph-mon": "ceph-mon", "ceph-osd": "ceph-osd", "ceph-rgw": "radosgw"}
TEMPLATE_LAYOUT = 1  # bump when what a template holds changes
CLI_TIMEOUT = 60.0  # a ceph CLI waits for the cluster forever otherwise (and may ignore SIGTERM)


def spec(cfg: Settings) -> CephSpec:
    """The cluster's settings (``cfg`` runs Ceph)."""
    assert cfg.ceph is not None
    return cfg.ceph


def root(cfg: Settings) -> Path:
    """The running cluster's folder."""
    return cfg.path("ceph")


# ----------------------------------------------------------------------------- install


def installed() -> bool:
    """Are the daemons, CLIs and Python bindings of Debian's ceph packages here?"""
    return all(shutil.which(c) for c in COMMANDS) and all(_binding(m) is not None for m in BINDINGS)


def _binding(module: str, version: str = "") -> Path | None:
    """Debian's extension module ``module`` (for Python ``version`` like ``311``, any when empty)."""
    found = sorted(DIST_PACKAGES.glob(f"{module}.cpython-{version or '*'}-*.so"))
    return found[0] if found else None


def link_bindings(venv: Path) -> bool:
    """Symlink Debian's rados/rbd modules into ``venv``'s site-packages (idempotent); True if it linked.

    A venv shared from another checkout (a symlink) is never written: its owner installs them.
    """
    sites = sorted(venv.glob("lib/python3.*/site-packages"))
    if not sites:
        raise HarnessError(f"{venv}: no site-packages (is the glance venv installed?)")
    site = sites[0]
    version = site.parent.name.removeprefix("python").replace(".", "")
    wanted = {}
    for module in BINDINGS:
        source = _binding(module, version)
        if source is None:
            have = ", ".join(p.name for p in DIST_PACKAGES.glob(f"{module}.cpython-*.so")) or "none"
            raise HarnessError(
                f"Debian's python3-{module} has no module for the glance venv's Python {site.parent.name} "
                f"(it has: {have}); make the venvs with Debian's python3 (ASYNCMIGRATE_HARNESS_PYTHON=/usr/bin/python3)"
            )
        wanted[site / source.name] = source
    missing = [link for link, source in wanted.items() if not (link.is_symlink() and link.resolve() == source)]
    if not missing:
        return False
    if venv.is_symlink():
        raise HarnessError(
            f"{venv} is shared from {venv.resolve()} and lacks Ceph's rados/rbd bindings: run "
            "`python3 harness/realglance.py install` in the checkout that owns it"
        )
    for link in missing:
        link.unlink(missing_ok=True)
        link.symlink_to(wanted[link])
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import rados, rbd"], capture_output=True, text=True)
    if check.returncode != 0:
        raise HarnessError(f"the glance venv cannot import Debian's rados/rbd: {check.stderr.strip()}")
    say(f"linked Debian's rados and rbd bindings into {site}")
    return True


# ----------------------------------------------------------------------------- configuration


def ceph_conf(cfg: Settings, home: Path, *, keystone: bool) -> str:
    """``ceph.conf`` of a cluster living in ``home`` (the running one, or a template being made).

    Admin sockets, logs and data paths are per daemon section: a client ``admin_socket`` in
    ``[global]`` would make every CLI call share one socket file.
    """
    ceph = spec(cfg)
    v2, v1 = ceph.mon_ports
    logs = cfg.path("logs")
    rgw = [
        f"rgw_frontends = beast endpoint={HOST}:{ceph.rgw_port} request_timeout_ms=10000",
        f"rgw_data = {home / 'rgw'}",
        # With auth none RGW loops on "get_initial_auth_request returned -13" without it.
        "ms_mon_client_mode = crc",
        "rgw_enable_usage_log = false",
    ]
    if keystone:
        ks = cfg.keystone("dst")
        rgw += [
            f"rgw_keystone_url = {ks.url}",
            "rgw_keystone_api_version = 3",
            f"rgw_keystone_admin_user = {GLANCE_SERVICE_USER}",
            f"rgw_keystone_admin_password = {GLANCE_SERVICE_PASSWORD}",
            "rgw_keystone_admin_project = service",
            "rgw_keystone_admin_domain = Default",
            "rgw_keystone_accepted_roles = admin,member",
            "rgw_keystone_verify_ssl = false",
            # the dst Keystone's catalog lists .../swift/v1/AUTH_<project id>, as clouds list RGW
            "rgw_swift_account_in_url = true",
            "rgw_s3_auth_use_keystone = false",
        ]
    rgw_lines = "\n".join(rgw)
    return f"""\
[global]
fsid = {ceph.fsid}
mon_host = [v2:{HOST}:{v2},v1:{HOST}:{v1}]
public_addr = {HOST}
cluster_addr = {HOST}
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = {home / "run"}
crash_dir = {home / "crash"}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_cluster_log_to_file = false

[mon.a]
mon_data = {home / "mon" / "a"}
admin_socket = {home / "run" / "mon.a.asok"}
log_file = {logs / "ceph-mon.log"}

[osd.0]
osd_data = {home / "osd" / "0"}
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = {BLOCK_SIZE}
osd_memory_target = {OSD_MEMORY_TARGET}
ms_bind_port_min = {ceph.osd_port_min}
ms_bind_port_max = {ceph.osd_port_max}
admin_socket = {home / "run" / "osd.0.asok"}
log_file = {logs / "ceph-osd.log"}

[{RGW_NAME}]
{rgw_lines}
admin_socket = {home / "run" / "rgw.asok"}
log_file = {logs / "ceph-rgw.log"}
"""


def cli(conf: Path, *args: str, timeout: float = CLI_TIMEOUT) -> str:
    """Run a ceph CLI (``ceph``, ``rbd``, ``radosgw-admin``, ...) against the cluster of ``conf``; its stdout."""
    cmd = [args[0], "-c", str(conf), *args[1:]]
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills it (SIGKILL) on the way out
        raise HarnessError(f"no answer in {timeout:.0f} s: {' '.join(cmd)}") from exc
    if out.returncode != 0:
        raise HarnessError(f"command failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr.strip()[-2000:]}")
    return out.stdout


# ----------------------------------------------------------------------------- the template


def ceph_version() -> str:
    """``ceph-mon --version`` (a template is made per Ceph version)."""
    out = subprocess.run(["ceph-mon", "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return out.stdout.strip()


def template_dir(cfg: Settings) -> Path:
    """Where the cluster of these settings is kept (its name hashes what the cluster's data holds)."""
    ceph = spec(cfg)
    held = [TEMPLATE_LAYOUT, ceph.fsid, ceph.mon_ports, POOLS, sorted(S3_BUCKETS.values()), S3_ACCESS_KEY]
    held += [S3_SECRET_KEY, OSD_UUID, BLOCK_SIZE, ceph_version()]
    digest = hashlib.sha256(json.dumps(held).encode()).hexdigest()[:10]
    return cfg.path("ceph-templates", f"cluster-{digest}")


def ensure_template(cfg: Settings) -> bool:
    """Make the cluster template unless it exists (other templates are removed); True if made."""
    final = template_dir(cfg)
    if final.is_dir():
        return False
    t0 = time.monotonic()
    making = final.with_name(final.name + ".making")
    for old in final.parent.glob("*") if final.parent.exists() else []:
        shutil.rmtree(old)  # another version's, or a half-made one
    making.mkdir(parents=True)
    try:
        _make_cluster(cfg, making)
    finally:
        kill_pidfiles({pidfile(cfg, d, "template"): NEEDLES[f"ceph-{d}"] for d in DAEMONS}, timeout=30)
    shutil.rmtree(making / "run")
    making.rename(final)
    say(f"made the Ceph cluster template {final.name} in {time.monotonic() - t0:.1f} s")
    return True


def _make_cluster(cfg: Settings, home: Path) -> None:
    """mon and OSD mkfs, pools, RGW's pools, user and buckets; the daemons are left running."""
    for sub in ("mon/a", "osd/0", "run", "crash", "rgw"):
        (home / sub).mkdir(parents=True)
    conf = home / "ceph.conf"
    conf.write_text(ceph_conf(cfg, home, keystone=False))
    ceph = spec(cfg)
    v2, v1 = ceph.mon_ports
    monmap = str(home / "monmap")
    cli(conf, "monmaptool", "--create", "--fsid", ceph.fsid, "--addv", "a", f"[v2:{HOST}:{v2},v1:{HOST}:{v1}]", monmap)
    cli(conf, "ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
    procs = {"mon": _spawn(cfg, conf, "mon", "template")}
    osd_id = cli(conf, "ceph", "osd", "new", OSD_UUID).strip()
    if osd_id != "0":
        raise HarnessError(f"ceph osd new gave id {osd_id!r}, expected 0")
    cli(conf, "ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", OSD_UUID, timeout=120)
    procs["osd"] = _spawn(cfg, conf, "osd", "template")
    for pool in POOLS:
        cli(conf, "ceph", "osd", "pool", "create", pool, "8", "8")
    inits = [_popen(conf, "rbd", "pool", "init", pool) for pool in POOLS]  # slow each: all at once
    for pool, proc in zip(POOLS, inits, strict=True):
        _wait(proc, f"rbd pool init {pool}")
    procs["rgw"] = _spawn(cfg, conf, "rgw", "template")
    # RGW makes its own pools on a new cluster; every daemon's exit fails the wait at once.
    wait_ready({f"ceph {d}": (f"{ceph.rgw_url}/", _log(cfg, d), proc) for d, proc in procs.items()})
    user = ["radosgw-admin", "user", "create", "--uid", "glance", "--display-name", "glance"]
    cli(conf, *user, "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY)
    script = (
        "import boto3, sys; s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
        " aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])\n"
        "for bucket in sys.argv[4:]: s3.create_bucket(Bucket=bucket)"
    )
    python = str(cfg.path("venv-glance", "bin", "python"))
    buckets = sorted(S3_BUCKETS.values())
    _wait(
        subprocess.Popen(
            [python, "-c", script, ceph.rgw_url, S3_ACCESS_KEY, S3_SECRET_KEY, *buckets],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(),
        ),
        "creating the S3 buckets",
    )
    # A clean stop, RGW first: a radosgw killed with -9 leaves watchers that stall radosgw-admin.
    for daemon in ("rgw", "osd", "mon"):
        kill_pidfiles({pidfile(cfg, daemon, "template"): NEEDLES[f"ceph-{daemon}"]}, timeout=30)


def _popen(conf: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [args[0], "-c", str(conf), *args[1:]]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen[bytes], what: str) -> None:
    try:
        out, _ = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        raise HarnessError(f"{what}: no answer in {CLI_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed ({proc.returncode}):\n{out.decode(errors='replace')[-2000:]}")


# ----------------------------------------------------------------------------- the running cluster


def pidfile(cfg: Settings, daemon: str, suffix: str = "") -> Path:
    """Where :func:`start` records a daemon's pid (``mon``, ``osd``, ``rgw``; ``suffix``: the template's)."""
    return cfg.path("run", f"ceph-{daemon}{'-' + suffix if suffix else ''}.pid")


def _log(cfg: Settings, daemon: str) -> Path:
    return cfg.path("logs", f"ceph-{daemon}.log")


def _command(conf: Path, daemon: str) -> list[str]:
    """The daemon in the foreground (``-f``: logs to its file, pid is ours to keep)."""
    if daemon == "mon":
        return ["ceph-mon", "-f", "-c", str(conf), "-i", "a"]
    if daemon == "osd":
        return ["ceph-osd", "-f", "-c", str(conf), "-i", "0"]
    return ["radosgw", "-f", "-c", str(conf), "-n", RGW_NAME]


def _spawn(cfg: Settings, conf: Path, daemon: str, suffix: str = "") -> subprocess.Popen[bytes]:
    log = _log(cfg, daemon)
    log.unlink(missing_ok=True)
    # Its log_file and stdout/stderr in one file; stdin closed: a daemon holding a caller's pipe keeps it open.
    return spawn(_command(conf, daemon), log, pidfile(cfg, daemon, suffix), child_env())


def prepare(cfg: Settings) -> None:
    """Replace ``ceph/`` by a copy of the template (sparse: only the blocks in use) and write its config."""
    home = root(cfg)
    if home.exists():
        shutil.rmtree(home)
    template = template_dir(cfg)
    copy = subprocess.run(
        ["cp", "-a", "--sparse=always", str(template), str(home)], stdin=subprocess.DEVNULL, capture_output=True
    )
    if copy.returncode != 0:
        raise HarnessError(f"copying the Ceph template failed: {copy.stderr.decode(errors='replace')}")
    for sub in ("run", "crash"):
        (home / sub).mkdir(exist_ok=True)
    ceph_conf_path(cfg).write_text(ceph_conf(cfg, home, keystone=spec(cfg).rgw_swift))


def start(cfg: Settings) -> dict[str, Check]:
    """Start mon, OSD and RGW at once; their readiness checks.

    RGW answers only once it reached the mon and read its pools from the OSD, so its answer is
    every daemon's check; each check also fails fast when its own daemon exits.
    """
    conf = ceph_conf_path(cfg)
    url = f"{spec(cfg).rgw_url}/"
    return {f"ceph {d}": (url, _log(cfg, d), _spawn(cfg, conf, d)) for d in DAEMONS}


def state(cfg: Settings) -> dict[str, bool]:
    """Each daemon alive (RGW: answering)."""
    out = {f"ceph-{d}": bool(pid_alive(pidfile(cfg, d), NEEDLES[f"ceph-{d}"])) for d in DAEMONS}
    out["ceph-rgw"] = out["ceph-rgw"] and http_status(f"{spec(cfg).rgw_url}/") == 200
    return out


def ports(cfg: Settings) -> dict[str, int]:
    """Every port the cluster listens on, by name (the OSD's: any of its range)."""
    ceph = spec(cfg)
    v2, v1 = ceph.mon_ports
    out = {"ceph-mon": v2, "ceph-mon-v1": v1, "ceph-rgw": ceph.rgw_port}
    return out | {f"ceph-osd-{p}": p for p in range(ceph.osd_port_min, ceph.osd_port_max + 1)}


def rbd_stores(cfg: Settings) -> dict[str, dict[str, str]]:
    """``{instance: {store: pool}}`` of every rbd store (each pool must be one the template made)."""
    out: dict[str, dict[str, str]] = {}
    for inst in cfg.instances:
        for store, driver in inst.stores:
            if driver == "rbd":
                pool = rbd_pool(inst, store)
                if pool not in POOLS:
                    raise HarnessError(f"rbd store {inst.name}/{store}: pool {pool} is not in ceph.POOLS")
                out.setdefault(inst.name, {})[store] = pool
    return out


def swift_url(cfg: Settings) -> str:
    """RGW's Swift API as the dst Keystone's catalog lists it (region ``RGW_REGION``)."""
    return f"{spec(cfg).rgw_url}/swift/v1/AUTH_$(project_id)s"


def env_info(cfg: Settings, service_project_id: str | None = None) -> dict[str, Any]:
    """env.json's ``ceph`` entry: the config to point CLIs at, pools, RGW's S3 and Swift (the
    account of the dst Keystone's project ``service``, whose user glance_store logs in as)."""
    ceph = spec(cfg)
    account = f"{ceph.rgw_url}/swift/v1/AUTH_{service_project_id}" if ceph.rgw_swift and service_project_id else None
    return {
        "fsid": ceph.fsid,
        "conf": str(ceph_conf_path(cfg)),
        "snapshot": SNAPSHOT,
        "rbd": rbd_stores(cfg),
        "pools": list(POOLS),
        "rgw": {
            "url": ceph.rgw_url,
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "region": "us-east-1",
            "buckets": {f"{inst}/{store}": bucket for (inst, store), bucket in S3_BUCKETS.items()},
            "swift_url": account,
            "swift_region": RGW_REGION if ceph.rgw_swift else None,
            "swift_store": RGW_SWIFT_STORE if ceph.rgw_swift else None,
            # who glance_store logs in as (the dst Keystone's service:glance; RGW's account is that project)
            "swift_user": {"name": GLANCE_SERVICE_USER, "password": GLANCE_SERVICE_PASSWORD},
            "swift_container": RGW_SWIFT_CONTAINER,
            # the rgw store's segmenting, in bytes (glance_store "MB" = 1,024,000 bytes)
            "large_object_size": swift_segment_sizes()[0] * 1_024_000,
            "chunk_size": swift_segment_sizes()[1] * 1_024_000,
        },
        "ports": ports(cfg),
        "logs": {d: str(_log(cfg, d)) for d in DAEMONS},
        "pids": {d: str(pidfile(cfg, d)) for d in DAEMONS},
    }


def env_lines(cfg: Settings) -> list[str]:
    """env.sh lines: ``CEPH_CONF`` (what the ceph CLIs read) and RGW's endpoint."""
    return [f"export CEPH_CONF={ceph_conf_path(cfg)}", f"export HARNESS_RGW_URL={spec(cfg).rgw_url}"]
