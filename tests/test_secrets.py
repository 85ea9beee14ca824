"""Secrets never leak: no password, token or location credential reaches stdout, stderr or the
report, even with -v and on the error, retry and re-authentication paths."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from tests.fakeglance import FakeGlance
from tests.fakekeystone import GuardedClouds, PasswordCloud, guarded_clouds, write_keystone_clouds_yaml
from tests.test_cli import _cli

# Distinctive, so any echo of them is unmistakable.
PASSWORD = f"Pw-{secrets.token_hex(6)}-n0t-f0r-l0gs"
ACCESS_KEY = "AKIAEXAMPLE7Q3ZK"
SECRET_KEY = f"sEcReTkEy-{secrets.token_hex(6)}"


@pytest.fixture
async def kc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GuardedClouds]:
    """Keystone-guarded fakes showing image locations, the user's password being PASSWORD."""
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    src = FakeGlance(prefix="/image", show_multiple_locations=True)
    dst = FakeGlance(show_multiple_locations=True)
    async with guarded_clouds(tmp_path / "clouds.yaml", password=PASSWORD, src=src, dst=dst) as clouds:
        yield clouds


def _seed_with_credentials(fake: FakeGlance, count: int) -> list[str]:
    """Images whose location URL carries S3 credentials, as glance shows an s3 store's."""
    ids = []
    for n in range(count):
        image = fake.add_image(os.urandom(200_000), name=f"img-{n}", disk_format="raw", container_format="bare")
        url = f"s3://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:9/bucket/{image['id']}"
        fake.images[image["id"]].location_urls["fast"] = url
        assert fake.get(image["id"])["locations"][0]["url"] == url
        ids.append(image["id"])
    return ids


def _assert_no_secret(text: str, tokens: Iterable[str]) -> None:
    """Neither the password, nor the S3 key pair, nor any token or 16-character piece of one."""
    for secret in (PASSWORD, ACCESS_KEY, SECRET_KEY):
        assert secret not in text
    for token in tokens:
        pieces = {token[i : i + 16] for i in range(len(token) - 15)}
        leaked = [piece for piece in pieces if piece in text]
        assert not leaked, f"token piece {leaked[0]!r} in output"


async def _copy(kc: GuardedClouds, tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    report = tmp_path / "report.json"
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "-v", "--report", str(report), *extra,
        clouds_yaml=kc.clouds_yaml,
    )  # fmt: skip
    text = out + err + report.read_text()
    return code, text, json.loads(report.read_text())


async def test_no_secret_in_output_or_report(kc: GuardedClouds, tmp_path: Path) -> None:
    """Retries, a re-authentication, a 4xx failure and a conflict with -v: no secret anywhere."""
    ids = _seed_with_credentials(kc.src, 4)
    kc.dst.add_image(b"other", id=ids[3], name="someone else's", disk_format="raw", container_format="bare")
    kc.src.faults.fail_next("GET", r"^/v2/images$", 503, retry_after=0)
    kc.dst.faults.fail_next("PUT", r"/file$", 503, retry_after=0)
    kc.dst.faults.fail_next(
        "POST", r"^/v2/images$", 400, body="400 Bad Request\n\nProvided object does not match schema"
    )
    kc.dst.faults.expire_token_once("GET", r"^/v2/images/[^/]+$", nth=3)
    code, text, report = await _copy(kc, tmp_path, "--concurrency", "1")
    assert code == 1, text
    outcomes = sorted((e["outcome"], e["attempts"]) for e in report["images"])  # type: ignore[index, union-attr]
    assert outcomes == [("conflict", 1), ("copied", 1), ("copied", 2), ("failed", 1)]
    assert "HTTP 400" in text and "retry" in text  # the error and retry paths did print
    assert len(kc.keystone.issued) == 3  # src, dst and one re-authentication
    _assert_no_secret(text, kc.keystone.issued)


async def test_no_password_when_keystone_refuses_it(kc: GuardedClouds, tmp_path: Path) -> None:
    """A refused password is not echoed, even with -v."""
    other = f"{PASSWORD}-but-wrong"
    path = write_keystone_clouds_yaml(
        tmp_path / "bad.yaml",
        {"src": PasswordCloud(kc.auth_url, "admin", other), "dst": PasswordCloud(kc.auth_url, "admin", other)},
    )
    code, out, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", "-v", clouds_yaml=path)
    assert code == 3 and "credentials refused" in err
    assert PASSWORD not in out + err


async def test_no_token_from_an_error_body_echoing_the_request(kc: GuardedClouds, tmp_path: Path) -> None:
    """A 400 whose body echoes the request's headers (X-Auth-Token included) does not leak the token."""
    _seed_with_credentials(kc.src, 1)
    kc.dst.faults.fail_next("POST", r"^/v2/images$", 400, echo=True)
    code, text, _ = await _copy(kc, tmp_path)
    assert code == 1 and "HTTP 400" in text
    _assert_no_secret(text, kc.keystone.issued)
