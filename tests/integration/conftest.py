"""Fixtures for the integration tests: the real servers of the harness and the CLI.

The harness (``harness/realglance.py start --fresh``) is started once per session, with only
what the collected tests ask for: always the Glance pair (``--s3``, or ``HARNESS_START_FLAGS``),
plus ``--keystone`` if a test uses ``keystone_clouds``, ``--swift`` for ``swift_store``,
``--convert`` for ``converting``, ``--old`` for ``old_glance`` (the single-store glance 27.1.1),
``--ceph`` for ``ceph`` (RBD stores, glance "rbd"), ``--rgw-swift`` for ``rgw_swift`` (Swift on RGW).
If it cannot start the tests FAIL — they never skip silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "harness"))

import legacy  # noqa: E402
import seed  # noqa: E402

pytestmark = pytest.mark.realglance

# fixture -> the start flag it needs
NEEDS = {
    "keystone_clouds": "--keystone",
    "swift_store": "--swift",
    "converting": "--convert",
    "old_glance": "--old",
    "ceph": "--ceph",
    "rgw_swift": "--rgw-swift",
}
_FLAGS = pytest.StashKey[list[str]]()


@dataclass
class CliRun:
    """What one CLI run returned."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    seconds: float

    def outcomes(self) -> dict[str, str]:
        """{image id: outcome} from the report."""
        assert self.report is not None
        return {i["id"]: i["outcome"] for i in self.report["images"]}


@dataclass
class Pair:
    """The running harness: clients for both ends and a way to run the CLI."""

    env: dict[str, Any]
    src: seed.Glance
    dst: seed.Glance
    tmp: Path

    def cli(self, *args: str, report: bool = True, timeout: float = 900, clouds_yaml: str | None = None) -> CliRun:
        """Run ``asyncmigrate`` as a subprocess against the pair (or the clouds ``clouds_yaml`` names)."""
        path = self.tmp / f"report-{time.monotonic_ns()}.json"
        cmd = [sys.executable, "-m", "asyncmigrate", *args]
        if report:
            cmd += ["--report", str(path)]
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": clouds_yaml or self.env["clouds_yaml"]}
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=self.tmp)
        seconds = time.monotonic() - t0
        data = json.loads(path.read_text()) if report and path.exists() else None
        return CliRun(proc.returncode, proc.stdout, proc.stderr, data, seconds)

    def sql(self, instance: str, statement: str) -> None:
        """Run one SQL statement on an instance's database (legacy records Glance's API cannot make)."""
        psql = Path(os.environ.get("ASYNCMIGRATE_PG_BIN", "/usr/lib/postgresql/15/bin")) / "psql"
        pg = self.env["postgres"]
        database = self.env["instances"][instance]["database"]
        cmd = [str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"]]
        subprocess.run([*cmd, "-d", database, "-c", statement], check=True, capture_output=True)


@dataclass
class OldGlance:
    """The harness's old glance (27.1.1, single-store): a client, its cloud name, and legacy seeding."""

    env: dict[str, Any]
    glance: seed.Glance
    cloud: str
    url: str

    def seed_legacy(self, **kwargs: Any) -> dict[str, legacy.Legacy]:
        """Seed one image of every legacy kind (see ``harness/legacy.py``); ``{kind: Legacy}``."""
        return legacy.seed_legacy(self.env, **kwargs)


@dataclass
class KsCloud:
    """One Keystone-guarded cloud: its identity (env.json ``keystone.<name>``) and glance."""

    name: str  # "src" or "dst"
    identity: dict[str, Any]
    glance_url: str

    @property
    def cloud(self) -> str:
        """clouds.yaml name: admin of the admin project, password auth."""
        return str(self.identity["clouds"]["admin"])

    @property
    def appcred_cloud(self) -> str:
        """clouds.yaml name: the admin's application credential."""
        return str(self.identity["clouds"]["appcred"])

    @property
    def alice_cloud(self) -> str:
        """clouds.yaml name: a non-admin member of the team project."""
        return str(self.identity["clouds"]["alice"])

    def token(self, user: str = "admin", project: str | None = None) -> str:
        """A fresh project-scoped token (admin of the admin project, or alice of the team project)."""
        if user == "alice":
            return seed.keystone_token(
                self.identity["auth_url"],
                "alice",
                self.identity["alice"]["password"],
                project or self.identity["team"]["project_name"],
            )
        admin = self.identity["admin"]
        project = project or admin["project_name"]
        return seed.keystone_token(self.identity["auth_url"], "admin", admin["password"], project)

    def glance(self, token: str | None = None) -> seed.Glance:
        """A client of this cloud's glance with ``token`` (a fresh admin token by default)."""
        return seed.Glance(self.glance_url, token=token or self.token())

    def revoke(self, token: str) -> int:
        """``DELETE /v3/auth/tokens`` of ``token`` (by an admin); the status (204)."""
        status, _ = seed.Glance(self.identity["auth_url"], token=self.token()).request(
            "DELETE", "/auth/tokens", headers={"X-Subject-Token": token}
        )
        return status


@dataclass
class KeystoneClouds:
    """Both Keystone-guarded clouds (``--keystone``)."""

    env: dict[str, Any]
    src: KsCloud
    dst: KsCloud


@dataclass
class SwiftStore:
    """A swift-driver store of the keystone-less "dst" glance: ``swift`` on real Swift (``--swift``),
    or ``rgw`` on RGW's Swift API (``--rgw-swift``), and the object store behind it."""

    env: dict[str, Any]
    dst: seed.Glance
    store: str
    large_object_size: int  # bytes: images this big or bigger are segmented
    chunk_size: int  # bytes per segment
    account_url: str
    service_user: dict[str, str]  # who glance_store logs in as (the dst Keystone's service:glance)
    container: str

    def objects(self, image_id: str) -> list[dict[str, Any]]:
        """The Swift objects of an image (manifest and segments), as the glance service user sees them."""
        user = self.service_user
        token = seed.keystone_token(self.env["keystone"]["dst"]["auth_url"], user["name"], user["password"], "service")
        status, data = seed.Glance(self.account_url, token=token).request(
            "GET", f"/{self.container}?format=json&prefix={image_id}"
        )
        assert status == 200, (status, data)
        return list(data)


@dataclass
class Ceph:
    """The harness's one-node Ceph (``--ceph``) and the glance stores on it.

    RBD stores: src ``ceph``, dst ``ceph`` and ``ceph2`` (two pools: a cloud's old and new
    Ceph-backed stores), glance "rbd" (cloud ``harness-rbd``) whose default store ``ceph`` is RBD and
    which converts imports to raw; S3 on RGW: src ``cold``, dst ``s3``.  The CLIs (``rbd``, ``ceph``,
    ``radosgw-admin``) run against the cluster's config.
    """

    env: dict[str, Any]
    src: seed.Glance
    dst: seed.Glance
    rbd_glance: seed.Glance  # glance "rbd": default store "ceph" (rbd)
    rbd_cloud: str  # its clouds.yaml name

    @property
    def conf(self) -> str:
        """The cluster's ceph.conf."""
        return str(self.env["ceph"]["conf"])

    @property
    def fsid(self) -> str:
        """The cluster's fsid (the first part of every ``rbd://`` location)."""
        return str(self.env["ceph"]["fsid"])

    def pool(self, instance: str, store: str = "ceph") -> str:
        """The pool behind ``instance``'s rbd store ``store``."""
        return str(self.env["ceph"]["rbd"][instance][store])

    def cli(self, *args: str, timeout: float = 60) -> str:
        """Run a ceph CLI (``rbd``, ``ceph``, ``radosgw-admin``) against the cluster; its stdout."""
        cmd = [args[0], "-c", self.conf, *args[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
        return proc.stdout

    def rbd_json(self, *args: str) -> Any:
        """``rbd ARGS --format json``, parsed."""
        return json.loads(self.cli("rbd", *args, "--format", "json"))

    def snapshot(self, image: dict[str, Any], store: str) -> str:
        """``POOL/IMAGE@SNAP`` of the image's location in ``store``, read from its ``rbd://`` URL."""
        (url,) = [loc["url"] for loc in image["locations"] if loc["metadata"].get("store") == store]
        fsid, pool, name, snap = url.removeprefix("rbd://").split("/")
        assert fsid == self.fsid, url
        return f"{pool}/{name}@{snap}"

    def exported(self, spec: str) -> tuple[int, str]:
        """(size, sha512) of what ``rbd export SPEC -`` streams: the bytes as Ceph holds them."""
        cmd = ["rbd", "-c", self.conf, "export", "--no-progress", spec, "-"]
        digest, size = hashlib.sha512(), 0
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            while block := proc.stdout.read(1 << 20):
                digest.update(block)
                size += len(block)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else spec
        return size, digest.hexdigest()

    def bucket(self, bucket: str) -> dict[str, int]:
        """``{object name: size}`` of an RGW bucket (``radosgw-admin bucket list``)."""
        listed = json.loads(self.cli("radosgw-admin", "bucket", "list", "--bucket", bucket))
        return {o["name"]: int(o["meta"]["size"]) for o in listed}


@dataclass
class Converting:
    """glance "convert" (``--convert``): glance-direct/web-download only, imports converted to raw."""

    env: dict[str, Any]
    glance: seed.Glance
    cloud: str


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the harness with the flags the collected tests need (see the module docstring)."""
    flags = os.environ.get("HARNESS_START_FLAGS", "--s3").split()
    for fixture, flag in NEEDS.items():
        if flag not in flags and any(fixture in getattr(i, "fixturenames", ()) for i in items):
            flags.append(flag)
    config.stash[_FLAGS] = flags


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The harness started fresh (empty databases and stores) for this session; its env.json."""
    flags = request.config.stash.get(_FLAGS, ["--s3"])
    subprocess.run([sys.executable, str(ROOT / "harness" / "realglance.py"), "start", "--fresh", *flags], check=True)
    return seed.load_env()


@pytest.fixture(scope="session")
def pair(harness: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """The real Glance pair (keystone-less src and dst)."""
    return Pair(
        env=harness,
        src=seed.Glance(harness["instances"]["src"]["url"]),
        dst=seed.Glance(harness["instances"]["dst"]["url"]),
        tmp=tmp_path_factory.mktemp("cli"),
    )


@pytest.fixture(scope="session")
def keystone_clouds(harness: dict[str, Any]) -> KeystoneClouds:
    """Two Keystones and their glance (ks-src, ks-dst); clouds.yaml names in each ``KsCloud``."""
    clouds = {
        name: KsCloud(name, harness["keystone"][name], harness["instances"][f"ks-{name}"]["url"])
        for name in ("src", "dst")
    }
    return KeystoneClouds(harness, clouds["src"], clouds["dst"])


@pytest.fixture(scope="session")
def swift_store(harness: dict[str, Any]) -> SwiftStore:
    """The dst glance's Swift store and the segment sizes it was configured with."""
    swift = harness["swift"]
    return SwiftStore(
        env=harness,
        dst=seed.Glance(harness["instances"]["dst"]["url"]),
        store="swift",
        large_object_size=swift["large_object_size"],
        chunk_size=swift["chunk_size"],
        account_url=swift["account_url"],
        service_user=swift["service_user"],
        container=swift["container"],
    )


@pytest.fixture(scope="session")
def ceph(harness: dict[str, Any]) -> Ceph:
    """The one-node Ceph (``--ceph``): RBD stores in src, dst and glance "rbd"; S3 on RGW."""
    inst = harness["instances"]
    return Ceph(
        env=harness,
        src=seed.Glance(inst["src"]["url"]),
        dst=seed.Glance(inst["dst"]["url"]),
        rbd_glance=seed.Glance(inst["rbd"]["url"]),
        rbd_cloud=inst["rbd"]["cloud"],
    )


@pytest.fixture(scope="session")
def rgw_swift(harness: dict[str, Any]) -> SwiftStore:
    """dst's store ``rgw``: glance_store's swift driver against RGW's Swift API (dst Keystone tokens)."""
    rgw = harness["ceph"]["rgw"]
    return SwiftStore(
        env=harness,
        dst=seed.Glance(harness["instances"]["dst"]["url"]),
        store=rgw["swift_store"],
        large_object_size=rgw["large_object_size"],
        chunk_size=rgw["chunk_size"],
        account_url=rgw["swift_url"],
        service_user=rgw["swift_user"],
        container=rgw["swift_container"],
    )


@pytest.fixture(scope="session")
def converting(harness: dict[str, Any]) -> Converting:
    """The converting glance (qcow2 → raw on import)."""
    inst = harness["instances"]["convert"]
    return Converting(env=harness, glance=seed.Glance(inst["url"]), cloud=inst["cloud"])


@pytest.fixture(scope="session")
def old_glance(harness: dict[str, Any]) -> OldGlance:
    """The old glance (``--old``), started fresh by the session's harness start."""
    old = harness["instances"]["old"]
    return OldGlance(env=harness, glance=seed.Glance(old["url"]), cloud=old["cloud"], url=old["url"])
