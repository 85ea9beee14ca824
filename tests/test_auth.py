"""Clouds that authenticate through Keystone: password and application-credential auth end to
end, a token that expires mid-run, refused credentials and an unreachable Keystone."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from asyncmigrate import copy_images, load_cloud
from asyncmigrate.errors import AuthenticationError
from tests.conftest import fast_config
from tests.fakeglance import FakeGlance, LoggedRequest, token_fingerprint
from tests.fakekeystone import (
    AppCredentialCloud,
    GuardedClouds,
    PasswordCloud,
    guarded_clouds,
    write_keystone_clouds_yaml,
)
from tests.test_cli import _cli, _one_clean_line


@pytest.fixture
async def kc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GuardedClouds]:
    """Source and destination fakes that accept only tokens of one fake Keystone."""
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    async with guarded_clouds(tmp_path / "clouds.yaml") as clouds:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds.clouds_yaml))
        yield clouds


def _seed(fake: FakeGlance, count: int, size: int = 300_000) -> dict[str, bytes]:
    images = {}
    for n in range(count):
        data = os.urandom(size)
        image = fake.add_image(data, name=f"img-{n}", disk_format="raw", container_format="bare")
        images[image["id"]] = data
    return images


def _assert_copied(kc: GuardedClouds, images: dict[str, bytes]) -> None:
    """Every image active and bit-exact under its own id; nothing deleted, nothing saving."""
    for image_id, data in images.items():
        assert kc.dst.get(image_id)["status"] == "active"
        assert kc.dst.data(image_id) == data
    assert set(kc.dst.images) == set(images)
    assert not kc.dst.requests_matching("DELETE", ".*") and not kc.src.requests_matching("DELETE", ".*")


def _expired(fake: FakeGlance) -> tuple[int, LoggedRequest]:
    (hit,) = [(n, r) for n, r in enumerate(fake.requests) if r.fault == "token_expired"]
    return hit


def _renewed_token(kc: GuardedClouds) -> str:
    """The fingerprint of the one token issued by re-authentication (after src's and dst's)."""
    assert len(kc.keystone.token_requests()) == 3, kc.keystone.requests
    return token_fingerprint(kc.keystone.issued[2])


async def test_password_auth_copies_every_image(kc: GuardedClouds) -> None:
    """Endpoints come from the catalog by region; every request carries a Keystone token; all copied."""
    images = _seed(kc.src, 3)
    src, dst = await load_cloud("src"), await load_cloud("dst")
    assert (src.endpoint, dst.endpoint) == (kc.src_server.url, kc.dst_server.url)
    run = await copy_images(fast_config(), src, dst)
    assert {r.outcome for r in run.images} == {"copied"}
    _assert_copied(kc, images)
    issued = {token_fingerprint(t) for t in kc.keystone.issued}
    assert len(issued) == 2  # one per cloud, no re-authentication
    for fake in (kc.src, kc.dst):
        assert fake.requests and all(r.token in issued and r.status != 401 for r in fake.requests)


async def test_application_credential_auth(kc: GuardedClouds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A v3applicationcredential cloud authenticates, finds its endpoint and copies."""
    kc.keystone.app_credentials["cred-1"] = "app-secret"
    path = write_keystone_clouds_yaml(
        tmp_path / "app.yaml",
        {
            "src": PasswordCloud(kc.auth_url, "admin", kc.password, "RegionOne"),
            "dst": AppCredentialCloud(kc.auth_url, "cred-1", "app-secret", "RegionTwo"),
        },
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    images = _seed(kc.src, 1)
    run = await copy_images(fast_config(), await load_cloud("src"), await load_cloud("dst"))
    assert run.images[0].outcome == "copied"
    _assert_copied(kc, images)


async def test_token_expiry_during_listing_reauthenticates(kc: GuardedClouds) -> None:
    """A 401 on a later listing page: one new token, the page is fetched again, nothing lost."""
    kc.src.limit_max = 25  # the second page is the 3rd GET of /v2/images (after the probe)
    images = _seed(kc.src, 30, size=2000)
    kc.src.faults.expire_token_once("GET", r"^/v2/images$", nth=3)
    concurrency = 2
    src, dst = await load_cloud("src"), await load_cloud("dst")
    run = await copy_images(fast_config(concurrency=concurrency), src, dst)
    assert len(run.images) == 30 and {(r.outcome, r.attempts) for r in run.images} == {("copied", 1)}
    _assert_copied(kc, images)
    at, expired = _expired(kc.src)
    assert "marker=" in expired.query
    new = _renewed_token(kc)
    after = kc.src.requests[at + 1 :]
    # Workers may already hold the old token when the listing re-authenticates: such a
    # request is refused once and repeated with the new token, never re-authenticating again.
    stale = [r for r in after if r.token != new]
    assert all(r.token == expired.token and r.status == 401 for r in stale) and len(stale) <= concurrency
    assert all(r.status != 401 for r in after if r.token == new)
    (page,) = [r for r in after if r.path == "/v2/images" and r.query == expired.query and r.token == new]
    assert page.status == 200
    assert token_fingerprint(kc.keystone.issued[0]) not in {token_fingerprint(t) for t in kc.keystone.valid}


async def test_token_expiry_during_create_reauthenticates(kc: GuardedClouds) -> None:
    """A 401 on the create: re-authenticate, create again; every later request has the new token."""
    images = _seed(kc.src, 1)
    kc.dst.faults.expire_token_once("POST", r"^/v2/images$")
    run = await copy_images(fast_config(), await load_cloud("src"), await load_cloud("dst"))
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 1
    _assert_copied(kc, images)
    at, _ = _expired(kc.dst)
    new = _renewed_token(kc)
    after = kc.dst.requests[at + 1 :]
    assert after[0].method == "POST" and after[0].status == 201
    assert all(r.token == new and r.status != 401 for r in after)
    assert len(kc.dst.requests_matching("POST", r"^/v2/images$")) == 2


async def test_token_expiry_during_upload_retries_into_the_same_id(kc: GuardedClouds) -> None:
    """A 401 on the upload (not replayable): the image is uploaded again into the same queued id."""
    ((image_id, data),) = _seed(kc.src, 1).items()
    kc.dst.faults.expire_token_once("PUT", r"/file$")
    run = await copy_images(fast_config(), await load_cloud("src"), await load_cloud("dst"))
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2
    assert run.images[0].bytes == len(data)
    _assert_copied(kc, {image_id: data})
    assert len(kc.dst.requests_matching("POST", r"^/v2/images$")) == 1  # created once, never re-created
    puts = kc.dst.requests_matching("PUT", r"/file$")
    assert [p.status for p in puts] == [401, 204]
    assert puts[1].token == _renewed_token(kc)


async def test_reauthentication_refused_mid_run_is_fatal(kc: GuardedClouds) -> None:
    """A token expires and Keystone now refuses the password: the run stops (fatal), nothing left saving."""
    _seed(kc.src, 2)
    src, dst = await load_cloud("src"), await load_cloud("dst")
    kc.keystone.users["admin"] = "changed meanwhile"
    kc.dst.faults.expire_token_once("POST", r"^/v2/images$")
    with pytest.raises(AuthenticationError, match="'dst': credentials refused"):
        await copy_images(fast_config(), src, dst)
    assert [r.status for r in kc.keystone.token_requests()] == [201, 201, 401]
    assert not kc.dst.images and not kc.dst.requests_matching("PUT", ".*")


async def test_token_expiry_during_upload_renews_before_the_next_request(kc: GuardedClouds) -> None:
    """After a 401 on the upload, the very next request already carries the new token."""
    _seed(kc.src, 1)
    kc.dst.faults.expire_token_once("PUT", r"/file$")
    await copy_images(fast_config(), await load_cloud("src"), await load_cloud("dst"))
    at, _ = _expired(kc.dst)
    new = _renewed_token(kc)
    assert all(r.token == new and r.status != 401 for r in kc.dst.requests[at + 1 :])


async def test_wrong_password_exits_three_and_changes_nothing(kc: GuardedClouds, tmp_path: Path) -> None:
    """Keystone refuses the destination's password: exit 3, one clean line, no request to either Glance
    changes anything."""
    _seed(kc.src, 1, size=1000)
    before = {image_id: kc.src.get(image_id) for image_id in kc.src.images}
    path = write_keystone_clouds_yaml(
        tmp_path / "bad.yaml",
        {
            "src": PasswordCloud(kc.auth_url, "admin", kc.password, "RegionOne"),
            "dst": PasswordCloud(kc.auth_url, "admin", "not-the-password", "RegionTwo"),
        },
    )
    code, _, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", clouds_yaml=path)
    assert code == 3, err
    _one_clean_line(err)
    assert "'dst'" in err and "credentials refused" in err
    assert [r.status for r in kc.keystone.token_requests()] == [201, 401]
    assert not kc.dst.images and {i: kc.src.get(i) for i in kc.src.images} == before
    for fake in (kc.src, kc.dst):
        assert all(r.method == "GET" for r in fake.requests)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("path", ["/v3", ""])
async def test_unreachable_keystone_exits_three(kc: GuardedClouds, tmp_path: Path, path: str) -> None:
    """A Keystone refusing connections (versioned or bare auth_url) is fatal: exit 3, no traceback."""
    _seed(kc.src, 1, size=1000)
    dead = f"http://127.0.0.1:{_dead_port()}{path}"
    yaml = write_keystone_clouds_yaml(
        tmp_path / "dead.yaml",
        {"src": PasswordCloud(dead, "admin", kc.password), "dst": PasswordCloud(kc.auth_url, "admin", kc.password)},
    )
    code, _, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", clouds_yaml=yaml)
    assert code == 3, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("asyncmigrate: error: cloud 'src': ")
    assert not kc.dst.images and not kc.keystone.requests


@pytest.mark.parametrize("path", ["/v3", ""])
async def test_unreachable_keystone_prints_one_line(kc: GuardedClouds, tmp_path: Path, path: str) -> None:
    """An unreachable Keystone is reported in exactly one clean stderr line saying so."""
    dead = f"http://127.0.0.1:{_dead_port()}{path}"
    yaml = write_keystone_clouds_yaml(
        tmp_path / "dead.yaml",
        {"src": PasswordCloud(dead, "admin", kc.password), "dst": PasswordCloud(kc.auth_url, "admin", kc.password)},
    )
    code, _, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", clouds_yaml=yaml)
    assert code == 3
    _one_clean_line(err)
    assert "cloud 'src': cannot reach Keystone" in err


async def test_glances_accept_only_issued_tokens(kc: GuardedClouds) -> None:
    """The guard is real: no token or a made-up one is 401; a token Keystone issued is accepted."""
    cloud = await load_cloud("src")  # authenticates: Keystone issues a token
    (token,) = kc.keystone.issued
    async with aiohttp.ClientSession() as http:
        for headers, status in [({}, 401), ({"X-Auth-Token": "made-up"}, 401), ({"X-Auth-Token": token}, 200)]:
            async with http.get(f"{cloud.endpoint}/v2/images", headers=headers) as resp:
                assert resp.status == status
