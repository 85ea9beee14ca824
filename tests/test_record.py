"""The pair's record is bound to the source cloud, not to its address: another cloud reached at
the same URL (a tunnel or proxy re-pointed), a source that lost most of what it held, a
destination image that is not the copy the record saw, a record of another Keystone, and a
journal written by an older version — none of them deletes anything without the operator's word."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncmigrate.config import SyncConfig
from asyncmigrate.record import pair_key
from asyncmigrate.report import RunResult
from asyncmigrate.sync import sync_images
from tests.conftest import FAST_RETRY, Clouds, write_clouds_yaml
from tests.fakeglance import FakeGlance, FakeServer
from tests.fakekeystone import GuardedClouds, guarded_clouds
from tests.faultproxy import FaultProxy

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")


def _add(fake: FakeGlance, name: str, **attrs: Any) -> str:
    data = os.urandom(3000)
    return str(fake.add_image(data, name=name, disk_format="raw", container_format="bare", **attrs)["id"])


async def _cli(clouds_yaml: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("asyncmigrate: error:"), err
    return lines[0]


def _sync(tmp_path: Path, **kw: Any) -> SyncConfig:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("journal", tmp_path / "pair.sqlite")
    return SyncConfig(**kw)


def _outcomes(run: RunResult) -> dict[str, str]:
    return {r.id: r.outcome for r in run.images}


@pytest.fixture
async def tunnel(tmp_path: Path) -> AsyncIterator[tuple[FaultProxy, FakeGlance, FakeGlance, FakeGlance, Path]]:
    """Cloud A reached through a local proxy (as clouds.yaml's 'src'), a destination, and a cloud B."""
    a, b, dst = FakeGlance(), FakeGlance(), FakeGlance()
    async with FakeServer(a) as a_srv, FakeServer(b) as b_srv, FakeServer(dst) as d_srv:
        proxy = FaultProxy(a_srv.url)
        async with proxy.serve() as url:
            proxy.b_url = b_srv.url  # type: ignore[attr-defined]
            yield proxy, a, b, dst, write_clouds_yaml(tmp_path / "clouds.yaml", {"src": url, "dst": d_srv.url})


async def test_another_cloud_at_the_same_address_deletes_nothing(
    tunnel: tuple[FaultProxy, FakeGlance, FakeGlance, FakeGlance, Path],
) -> None:
    """A copy from cloud A through a local proxy, then the proxy re-pointed at cloud B (which holds none of
    A's images): sync --delete-removed and its plan refuse at once with one line, exit 2, and nothing is
    deleted or copied at the destination."""
    proxy, a, b, dst, clouds_yaml = tunnel
    ids = [_add(a, f"a-{i}") for i in range(5)]
    _add(b, "b-own")
    code, _, err = await _cli(clouds_yaml, "copy", *PAIR, "-q")
    assert code == 0, err
    proxy.upstream = proxy.b_url  # type: ignore[attr-defined]
    before = len(dst.requests)
    for command in (["plan", "sync"], ["sync"]):
        code, _, err = await _cli(clouds_yaml, *command, *PAIR, "--delete-removed")
        line = _one_line(err)
        assert code == 2 and "holds 0 of 5 images sampled from its record" in line, err
    assert sorted(dst.images) == sorted(ids)
    assert not [r for r in dst.requests[before:] if r.method != "GET"]


async def test_a_source_that_lost_most_of_its_images_deletes_only_when_confirmed(
    clouds: Clouds, tmp_path: Path
) -> None:
    """The same source deleted 3 of its 4 recorded images: sync --delete-removed deletes none, keeps them
    as removed with the reason, one line, exit 1; with --confirm-source the three are deleted."""
    ids = [_add(clouds.src, f"i-{i}") for i in range(4)]
    code, _, err = await _cli(clouds.clouds_yaml, "copy", *PAIR, "--journal", str(tmp_path / "pair.sqlite"), "-q")
    assert code == 0, err
    for image_id in ids[1:]:
        del clouds.src.images[image_id]
    journal = ("--journal", str(tmp_path / "pair.sqlite"))
    report = tmp_path / "r.json"
    code, out, err = await _cli(
        clouds.clouds_yaml, "sync", *PAIR, *journal, "--delete-removed", "-q", "--report", str(report)
    )
    assert code == 1, out + err
    lines = [line for line in out.splitlines() if line.startswith("asyncmigrate:")]  # the log is on stdout
    assert lines == [
        "asyncmigrate: refusing to delete: the source lists only 1 of the 4 images its record names: another "
        "cloud, or credentials that see less (--confirm-source if they are really gone); nothing was deleted"
    ], err
    assert sorted(clouds.dst.images) == sorted(ids)
    entries = {e["id"]: e for e in json.loads(report.read_text())["images"]}
    assert {entries[i]["outcome"] for i in ids[1:]} == {"removed"} and "kept:" in entries[ids[1]]["reason"]
    code, out, err = await _cli(clouds.clouds_yaml, "sync", *PAIR, *journal, "--delete-removed", "--confirm-source")
    assert code == 0, err
    assert "3 deleted" in out and sorted(clouds.dst.images) == [ids[0]]


async def test_a_destination_image_that_is_not_the_recorded_copy_is_kept(clouds: Clouds, tmp_path: Path) -> None:
    """A recorded image gone from the source whose destination image is not the copy the record saw
    (another created_at and data under its id) is a conflict, never deleted; the others are deleted."""
    ids = [_add(clouds.src, f"i-{i}") for i in range(4)]
    assert (await sync_images(_sync(tmp_path), clouds.src_cloud, clouds.dst_cloud)).failed == 0
    changed, plain = ids[0], ids[1]
    for image_id in (changed, plain):
        del clouds.src.images[image_id]
    record = clouds.dst.images[changed]
    record.created_at = record.created_at.replace(year=2031)
    record.checksum = "0" * 32
    run = await sync_images(_sync(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    outcomes = _outcomes(run)
    assert outcomes[changed] == "conflict" and outcomes[plain] == "deleted", run.images
    why = next(r.reason for r in run.images if r.id == changed)
    assert "not the copy the record saw" in why and "created_at" in why
    assert changed in clouds.dst.images and plain not in clouds.dst.images


async def test_a_destination_copy_changed_after_the_first_read_is_kept(clouds: Clouds, tmp_path: Path) -> None:
    """The destination copy is judged as it is just before the delete, not as the run's first
    listing showed it: one replaced meanwhile (its row purged, its id used again) is a conflict."""
    ids = [_add(clouds.src, f"i-{i}") for i in range(4)]
    assert (await sync_images(_sync(tmp_path), clouds.src_cloud, clouds.dst_cloud)).failed == 0
    changed = ids[0]
    del clouds.src.images[changed]

    def replace() -> None:
        record = clouds.dst.images[changed]
        record.created_at = record.created_at.replace(year=2031)
        record.checksum = "0" * 32

    # The source's 404 for the image is the last request before the destination is read again.
    clouds.src.faults.before_request("GET", rf"/v2/images/{changed}$", replace)
    run = await sync_images(_sync(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(run)[changed] == "conflict", run.images
    assert "not the copy the record saw" in next(r.reason for r in run.images if r.id == changed)
    assert changed in clouds.dst.images


async def test_an_older_versions_record_is_never_strong_evidence(clouds: Clouds, tmp_path: Path) -> None:
    """A journal written by the previous version (rows keyed by the URLs, no copy noted): the first sync
    adopts it; a recorded image already gone from the source is reported and kept, never deleted; the
    images at both ends are noted afresh, so one deleted at the source later is deleted."""
    ids = [_add(clouds.src, f"i-{i}") for i in range(4)]
    for image_id in ids:
        clouds.dst.add_image(
            clouds.src.data(image_id), id=image_id, name=clouds.src.get(image_id)["name"],
            disk_format="raw", container_format="bare",
        )  # fmt: skip
    journal = tmp_path / "pair.sqlite"
    old = sqlite3.connect(journal)
    old.executescript(
        "CREATE TABLE brought (pair TEXT NOT NULL, id TEXT NOT NULL, name TEXT, source TEXT NOT NULL, "
        "seen_at REAL NOT NULL, PRIMARY KEY (pair, id));"
    )
    key = pair_key(clouds.src_cloud.endpoint, clouds.dst_cloud.endpoint)
    for image_id in ids:
        source = json.dumps({"id": image_id, "name": clouds.src.get(image_id)["name"], "status": "active"})
        old.execute("INSERT INTO brought VALUES (?, ?, ?, ?, 0)", (key, image_id, "x", source))
    old.commit()
    old.close()
    del clouds.src.images[ids[0]]
    first = await sync_images(_sync(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(first)[ids[0]] == "conflict" and ids[0] in clouds.dst.images
    assert "older asyncmigrate" in next(r.reason for r in first.images if r.id == ids[0])
    del clouds.src.images[ids[1]]
    second = await sync_images(_sync(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert _outcomes(second)[ids[1]] == "deleted" and ids[1] not in clouds.dst.images
    assert ids[0] in clouds.dst.images


async def test_a_record_of_another_keystone_refuses_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source behind Keystone is known by its catalog's image service: the same address answered by a
    cloud of another Keystone (another service id) is refused, exit 2, nothing deleted."""
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    async with guarded_clouds(tmp_path / "clouds.yaml") as kc:
        ids = [_add(kc.src, f"i-{i}") for i in range(3)]
        journal = ("--journal", str(tmp_path / "pair.sqlite"))
        code, _, err = await _cli(kc.clouds_yaml, "copy", *PAIR, *journal, "-q")
        assert code == 0, err
        _rebuilt(kc)
        code, _, err = await _cli(kc.clouds_yaml, "sync", *PAIR, *journal, "--delete-removed")
        line = _one_line(err)
        assert code == 2 and "another source at this address" in line and "image-service" in line, err
        assert sorted(kc.dst.images) == sorted(ids)


def _rebuilt(kc: GuardedClouds) -> None:
    """The cloud at the source's address is now another one: another Keystone (its image service has
    another id), another Glance that holds none of the old images."""
    kc.keystone.image_service_id = "rebuilt-image-service"
    kc.src.images.clear()
