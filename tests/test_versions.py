"""Old clouds as sources: every image listed on every Glance from Queens (API 2.6) on,
older ones refused by name, single-store clouds copied from and to.

The sources are the fake's release profiles (tests/fakeglance/profiles.py), each taken from
Glance's own source at that release's tag: Queens 16.x (queens-eol: no os_hidden, an unknown
query key is a property filter, no visibility=all), Rocky 17.x (rocky-eol: os_hidden, still
no visibility=all), Stein 18.x (stein-eol: visibility=all, API still 2.7), Ussuri 20.x
multi-store (ussuri-eol: 2.10 rendered "v2.1"), glance 27.1.1 single-store and Pike 15.x
(pike-eol, API 2.5: refused).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import copy_images, load_cloud
from asyncmigrate.capabilities import UnsupportedVersion
from asyncmigrate.errors import UsageError
from asyncmigrate.selection import Selection
from asyncmigrate.verify import verify_catalogs
from tests.conftest import fast_config, write_clouds_yaml
from tests.fakeglance import GLANCE_27, PIKE, QUEENS, ROCKY, STEIN, USSURI, FakeGlance, FakeServer, GlanceProfile

OTHER = "b1b1b1b1b1b14b1b8b1b1b1b1b1b1b01"
# The API version each release's version document names CURRENT (single-store; Ussuri multi-store).
API = {"queens": "2.6", "rocky": "2.7", "stein": "2.7", "ussuri": "2.10", "glance-27": "2.15"}

Pair = tuple[FakeGlance, FakeGlance, Callable[[str], Any]]


@pytest.fixture
async def pair_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """Start a source fake of a given profile and a glance 33 destination, as clouds 'old' and 'new'."""
    servers: list[FakeServer] = []

    async def start(profile: GlanceProfile, *, dst_stores: Any = "default") -> tuple[FakeGlance, FakeGlance]:
        src = FakeGlance(profile=profile, prefix="/image")
        dst = FakeGlance() if dst_stores == "default" else FakeGlance(stores=dst_stores)
        for fake in (src, dst):
            server = FakeServer(fake)
            await server.__aenter__()
            servers.append(server)
        urls = {"old": servers[-2].url, "new": servers[-1].url}
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "clouds.yaml", urls)))
        return src, dst

    yield start
    for server in reversed(servers):
        await server.__aexit__(None, None, None)


def _seed(src: FakeGlance) -> dict[str, bytes | None]:
    """A catalog an admin can only list completely with the right queries."""
    catalog: dict[str, bytes | None] = {}

    def add(data: bytes | None, **attrs: Any) -> None:
        image = src.add_image(data, disk_format="raw", container_format="bare", **attrs)
        catalog[image["id"]] = data

    add(os.urandom(3000), name="public", visibility="public")
    add(os.urandom(3000), name="private-other", visibility="private", owner=OTHER)
    add(os.urandom(3000), name="community-other", visibility="community", owner=OTHER)
    add(os.urandom(3000), name="community-own", visibility="community")
    add(os.urandom(3000), name="shared", visibility="shared")
    add(None, name="queued")
    if src.profile.os_hidden:
        add(os.urandom(3000), name="hidden", os_hidden=True)
        add(os.urandom(3000), name="hidden-community-other", os_hidden=True, visibility="community", owner=OTHER)
    for i in range(30):  # more than a page when the deployment caps pages at 25
        add(os.urandom(100 + i), name=f"small-{i}")
    return catalog


@pytest.mark.parametrize("profile", [QUEENS, ROCKY, STEIN, USSURI, GLANCE_27], ids=lambda p: p.name)
async def test_every_image_of_an_old_cloud_is_copied(pair_of: Callable[..., Any], profile: GlanceProfile) -> None:
    """Hidden, community (others' too), private and queued images all arrive; verify compares them all;
    a re-run is clean (a source without os_hidden compares as Glance's default, false)."""
    src, dst = await pair_of(profile)
    src.limit_max = 25
    catalog = _seed(src)
    old, new = await load_cloud("old"), await load_cloud("new")
    run = await copy_images(fast_config(concurrency=3), old, new)
    assert run.failed == 0, [(r.name, r.reason) for r in run.images if r.reason]
    assert sorted(r.id for r in run.images) == sorted(catalog)
    for image_id, data in catalog.items():
        assert image_id in dst.images
        if data is not None:
            assert dst.data(image_id) == data
    assert run.clouds["source"]["api_version"] == API[profile.name]
    listings = [r.query for r in src.requests if r.path == "/v2/images" and "limit=1000" in r.query]
    assert all(("os_hidden" in q) == profile.os_hidden for q in listings), listings
    assert all(("visibility=all" in q) == profile.visibility_all for q in listings), listings
    checked = await verify_catalogs(fast_config(), old, new)
    assert len(checked.images) == len(catalog) and {r.outcome for r in checked.images} == {"match"}
    again = await copy_images(fast_config(concurrency=3), old, new)
    assert {r.outcome for r in again.images} == {"skipped"} and int(again.exit_code) == 0


async def test_rocky_is_probed_for_visibility_all_and_falls_back(pair_of: Callable[..., Any]) -> None:
    """Rocky and Stein both say 2.7: one probe tells them apart (400 on Rocky), then the listing adapts."""
    src, _ = await pair_of(ROCKY)
    _seed(src)
    run = await copy_images(fast_config(), await load_cloud("old"), await load_cloud("new"))
    assert run.failed == 0
    probes = [r for r in src.requests if r.path == "/v2/images" and "visibility=all" in r.query]
    assert [(r.query, r.status) for r in probes] == [("visibility=all&limit=1", 400)]


async def test_pike_is_refused_naming_its_version(pair_of: Callable[..., Any]) -> None:
    """A Glance too old to list completely is a fatal error naming the version; nothing is listed or created."""
    src, dst = await pair_of(PIKE)
    _seed(src)
    with pytest.raises(UnsupportedVersion, match=r"API v2\.5 .*oldest supported is v2\.6"):
        await copy_images(fast_config(), await load_cloud("old"), await load_cloud("new"))
    assert not [r for r in src.requests if r.path == "/v2/images" and "member_status" in r.query]
    assert not dst.requests_matching("POST", ".*")


async def test_ussuri_float_version_is_read_as_2_10(pair_of: Callable[..., Any]) -> None:
    """Ussuri's "v2.1" CURRENT beside "v2.9" SUPPORTED is API 2.10, not 2.1."""
    src, _ = await pair_of(USSURI)
    src.add_image(os.urandom(10), name="x", disk_format="raw", container_format="bare")
    run = await copy_images(fast_config(), await load_cloud("old"), await load_cloud("new"))
    assert run.clouds["source"]["api_version"] == "2.10" and run.failed == 0


async def test_single_store_clouds_copy_both_ways_and_refuse_store_flags(pair_of: Callable[..., Any]) -> None:
    """glance 27 single-store to a single-store destination works; --store/--dst-store are one-line usage errors."""
    src, dst = await pair_of(GLANCE_27, dst_stores=None)
    data = os.urandom(5000)
    image = src.add_image(data, name="one", disk_format="raw", container_format="bare")
    old, new = await load_cloud("old"), await load_cloud("new")
    run = await copy_images(fast_config(), old, new)
    assert [r.outcome for r in run.images] == ["copied"] and dst.data(image["id"]) == data
    assert run.clouds["source"]["multi_store"] is False and run.clouds["destination"]["multi_store"] is False
    with pytest.raises(UsageError, match="--store fast: cloud 'old' is not multi-store"):
        await copy_images(fast_config(selection=Selection(stores=frozenset({"fast"}))), old, new)
    with pytest.raises(UsageError, match="--dst-store main: cloud 'new' is not multi-store"):
        await copy_images(fast_config(dst_store="main"), old, new)
    assert len(dst.requests_matching("POST", ".*")) == 1
