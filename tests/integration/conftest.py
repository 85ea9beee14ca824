"""Fixtures for the integration tests: the real Glance pair, the old Glance and the CLI.

The pair is started once per session by the project's own harness
(``harness/realglance.py start --fresh``): two glance-api servers on
127.0.0.1 on PostgreSQL, no Keystone — and, in the same start, the old
single-store glance 27.1.1 (``old_glance``).  If it cannot start the tests
FAIL — they never skip silently.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """The real Glance pair, started fresh (empty databases and stores) for this session."""
    # The S3 store (moto) is part of the default harness: the store-move tests need it.
    flags = os.environ.get("HARNESS_START_FLAGS", "--s3").split()
    subprocess.run([sys.executable, str(ROOT / "harness" / "realglance.py"), "start", "--fresh", *flags], check=True)
    env = seed.load_env()
    return Pair(
        env=env,
        src=seed.Glance(env["instances"]["src"]["url"]),
        dst=seed.Glance(env["instances"]["dst"]["url"]),
        tmp=tmp_path_factory.mktemp("cli"),
    )


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


@pytest.fixture(scope="session")
def old_glance(pair: Pair) -> OldGlance:
    """The old glance, started (fresh) by the same harness start as the pair."""
    old = pair.env["instances"]["old"]
    return OldGlance(env=pair.env, glance=seed.Glance(old["url"]), cloud=old["cloud"], url=old["url"])
