"""Shared fixtures: two fake Glances (source, destination) reachable as named
clouds through a real clouds.yaml, and a fast config (retries never sleep)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import Cloud, CopyConfig, RetryPolicy, load_cloud
from asyncmigrate.progress import Event
from tests.fakeglance import FakeGlance, FakeServer

# Retries that never sleep: tests stay fast and deterministic.
FAST_RETRY = RetryPolicy(attempts=4, deadline=60, wait_initial=0, wait_max=0, wait_jitter=0)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``) each worker is a session of its own, so it gets a harness of
    its own: every port shifted by 100 per worker (``ASYNCMIGRATE_PORT_OFFSET``) and a directory
    beside ``.harness`` (``.harness-gw1``, …) whose server venvs — installed once — are links to
    ``.harness``'s. Worker gw0, and a run without xdist, use ``.harness`` as it is."""
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if worker == "gw0":
        return
    base = Path(os.environ.get("ASYNCMIGRATE_HARNESS_DIR") or Path(__file__).resolve().parents[1] / ".harness")
    own = base.parent / f"{base.name}-{worker}"
    own.mkdir(exist_ok=True)
    (own / ".gitignore").write_text("*\n")
    for venv in sorted(base.glob("venv-*")):
        link = own / venv.name
        if not link.exists():
            link.symlink_to(venv.resolve(), target_is_directory=True)
    offset = int(os.environ.get("ASYNCMIGRATE_PORT_OFFSET", "0")) + 100 * int(worker.removeprefix("gw"))
    os.environ["ASYNCMIGRATE_HARNESS_DIR"] = str(own)
    os.environ["ASYNCMIGRATE_PORT_OFFSET"] = str(offset)
    if os.environ.get("OS_CLIENT_CONFIG_FILE") == str(base / "clouds.yaml"):  # test.sh's: the harness's clouds
        os.environ["OS_CLIENT_CONFIG_FILE"] = str(own / "clouds.yaml")


# The real-server test files in two halves, each run in order by one xdist worker on its own
# harness (``--dist loadgroup``): a file sees only what the files before it in its half left on
# the servers, as in a serial run (some copy or sync a whole catalog). The fast tests go to
# whichever worker is free.
_SECOND_HALF = "test_move_real.py"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each real-server test its half's xdist group (see :data:`_SECOND_HALF`)."""
    for item in items:
        if item.get_closest_marker("realglance") is not None:
            half = "real-b" if item.path.name >= _SECOND_HALF or "benchmarks" in item.path.parts else "real-a"
            item.add_marker(pytest.mark.xdist_group(half))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's controller
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under ``--dist loadgroup`` xdist marks a grouped test by suffixing its node id with its
    group. A pytest/xdist pair where that no longer happens would spread the real-server halves
    over both workers without a word, so the run stops instead."""
    if getattr(node.config.option, "dist", "") != "loadgroup":
        return
    ungrouped = [i for i in ids if i.startswith("tests/integration/test_") and "@real-" not in i]
    if ungrouped:
        pytest.exit(
            f"pytest-xdist did not group {len(ungrouped)} real-server test(s), e.g. {ungrouped[0]}: "
            "this pytest and pytest-xdist do not work together (see the pin in pyproject.toml)",
            returncode=3,
        )


@pytest.fixture(autouse=True, scope="session")
def _isolated_state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Journals written by CLI runs under test go to a temp dir, never the user's home."""
    import os

    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))


@pytest.fixture(autouse=True, scope="session")
def _loopback_never_proxied() -> None:
    """Traffic to the servers under test stays on 127.0.0.1 even where the environment names a
    proxy (a CI behind one): Glance's clients follow HTTP(S)_PROXY, so NO_PROXY exempts
    loopback (tests of the proxy set their own environment)."""
    import os

    for name in ("no_proxy", "NO_PROXY"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))


def run_finished(journal: Path) -> bool:
    """Has a run closed itself in this journal yet (read-only; a journal not there yet, or being
    written, reads as not)?"""
    import sqlite3

    if not journal.exists():
        return False
    try:
        db = sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True)
        try:
            return bool(db.execute("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return False


def fast_config(**kw: Any) -> CopyConfig:
    """A CopyConfig whose retries never wait."""
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("chunk_size", 64 * 1024)
    return CopyConfig(**kw)


@dataclasses.dataclass
class Clouds:
    """A running source/destination pair of fakes and their Cloud handles."""

    src: FakeGlance
    dst: FakeGlance
    src_server: FakeServer
    dst_server: FakeServer
    src_cloud: Cloud
    dst_cloud: Cloud
    clouds_yaml: Path
    events: list[Event] = dataclasses.field(default_factory=list)

    def emit(self, event: Event) -> None:
        """Collect progress events."""
        self.events.append(event)


def write_clouds_yaml(path: Path, endpoints: dict[str, str]) -> Path:
    """A clouds.yaml naming each endpoint as a no-Keystone cloud."""
    lines = ["clouds:"]
    for name, url in endpoints.items():
        lines += [f"  {name}:", "    auth_type: none", "    auth:", f"      endpoint: {url}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def clouds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clouds]:
    """Source (behind a /image prefix, pages of at most 25) and destination fakes, as clouds 'src' and 'dst'."""
    src = FakeGlance(prefix="/image")
    src.limit_max = 25  # a server whose api_limit_max is below the asked 1000: listings still page
    dst = FakeGlance(stores={"main": "main store", "archive": "archive store"})
    async with FakeServer(src) as s_srv, FakeServer(dst) as d_srv:
        path = write_clouds_yaml(tmp_path / "clouds.yaml", {"src": s_srv.url, "dst": d_srv.url})
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        for var in ("OS_CLOUD", "OS_AUTH_URL", "OS_AUTH_TYPE"):
            monkeypatch.delenv(var, raising=False)
        yield Clouds(src, dst, s_srv, d_srv, await load_cloud("src"), await load_cloud("dst"), path)
