"""Secrets never leak: no password, token or location credential reaches stdout, stderr or the
report, even with -v and on the error, retry and re-authentication paths."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from asyncmigrate import Timeouts
from tests.conftest import Clouds
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


# -- error bodies that echo store URIs: every request kind -------------------------------------

SWIFT_KEY = f"swKey-{secrets.token_hex(6)}"


def _s3_uri(image_id: str) -> str:
    return f"s3://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:9/bucket/{image_id}"


def _swift_uri(image_id: str) -> str:
    return f"swift+http://glance-svc:{SWIFT_KEY}@127.0.0.1:8080/v1/AUTH_glance/images/{image_id}"


def _malformed(image_id: str) -> str:
    return f"400 Bad Request\n\nThe Store URI was malformed: {_s3_uri(image_id)}\n\n"


def _exists(image_id: str) -> str:
    return f"409 Conflict\n\nThe location {_swift_uri(image_id)} already exists\n\n"


def _assert_no_store_secret(text: str) -> None:
    for secret in (ACCESS_KEY, SECRET_KEY, SWIFT_KEY):
        assert secret not in text, f"{secret!r} leaked"


async def _run_cli(clouds: Clouds, tmp_path: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    code, out, err = await _cli(*args, "-v", "--report", str(report), "--no-journal", clouds_yaml=clouds.clouds_yaml)
    doc = json.loads(report.read_text())
    return code, out + err + report.read_text(), doc


async def test_store_uris_in_error_bodies_never_leak_from_copy(clouds: Clouds, tmp_path: Path) -> None:
    """create 400, upload 500 (retried, shown by -v) and PATCH 409, each echoing an S3 or Swift
    URI with its credentials: stdout, stderr and the report keep the message, not the secrets."""
    ids = {}
    for name in ("a-create", "b-upload", "c-patch"):
        attrs = {"disk_format": "raw", "container_format": "bare", "protected": name == "c-patch"}
        ids[name] = clouds.src.add_image(os.urandom(70_000), name=name, **attrs)["id"]
    # Newest first, one at a time: c (POST 1, PUT 1, PATCH), b (POST 2, PUT 2), a (POST 3).
    clouds.dst.faults.fail_next("PATCH", r"^/v2/images/", 409, body=_exists(ids["c-patch"]), retry_after=None)
    clouds.dst.faults.fail_next("PUT", r"/file$", 500, body=_malformed(ids["b-upload"]), retry_after=0, nth=2)
    clouds.dst.faults.fail_next("POST", r"^/v2/images$", 400, body=_malformed(ids["a-create"]), nth=3)
    code, text, doc = await _run_cli(
        clouds, tmp_path, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--concurrency", "1"
    )
    assert code == 1, text
    outcomes = {e["name"]: (e["outcome"], e["attempts"]) for e in doc["images"]}  # type: ignore[index, union-attr]
    assert outcomes == {"a-create": ("failed", 1), "b-upload": ("copied", 2), "c-patch": ("failed", 1)}
    assert "The Store URI was malformed: s3://***@127.0.0.1:9/bucket/" in text  # the message itself survives
    assert "retrying " in text and "already exists" in text
    _assert_no_store_secret(text)


async def test_store_uris_never_leak_from_listing_or_json_logs(clouds: Clouds, tmp_path: Path) -> None:
    """A listing failing for good and a retried upload, both echoing credentials, with
    --log-format json: every JSON line, the summary and the report are clean."""
    image = clouds.src.add_image(os.urandom(70_000), name="x", disk_format="raw", container_format="bare")
    clouds.dst.faults.fail_next("PUT", r"/file$", 503, body=_malformed(image["id"]), retry_after=0)
    # The probe, the first listing pass, then the hidden-images pass, which fails for good.
    clouds.src.faults.fail_next("GET", r"^/v2/images$", 500, body=_exists("x"), retry_after=None, times=None, nth=3)
    code, text, doc = await _run_cli(
        clouds, tmp_path, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--log-format", "json", "--retries", "2"
    )
    assert code == 4, text
    events = [json.loads(line) for line in text.splitlines() if line.startswith('{"time"')]
    assert {e["event"] for e in events} >= {"retrying", "listing-failed", "image"}
    assert "already exists" in doc["summary"]["incomplete"]  # type: ignore[index]
    _assert_no_store_secret(text)


async def test_store_uris_never_leak_from_move(clouds: Clouds, tmp_path: Path) -> None:
    """copy-image import 400 and delete-from-store 409 echoing credentials: clean output and report."""
    imp = clouds.src.add_image(os.urandom(50_000), name="imp", store="fast", disk_format="raw", container_format="bare")
    dele = clouds.src.add_image(
        os.urandom(50_000), name="del", store="fast", disk_format="raw", container_format="bare"
    )
    clouds.src.faults.fail_next("POST", rf"^/v2/images/{imp['id']}/import$", 400, body=_malformed(imp["id"]))
    clouds.src.faults.fail_next("DELETE", rf"^/v2/stores/fast/{dele['id']}$", 409, body=_exists(dele["id"]))
    code, text, doc = await _run_cli(
        clouds, tmp_path, "move", "--cloud", "src", "--from-store", "fast", "--to-store", "slow"
    )
    assert code == 1, text
    assert {e["name"]: e["outcome"] for e in doc["images"]} == {"imp": "failed", "del": "failed"}  # type: ignore[index, union-attr]
    assert "Store URI was malformed" in text and "already exists" in text
    _assert_no_store_secret(text)


async def test_exception_messages_carry_no_store_secret(clouds: Clouds) -> None:
    """The errors the client raises (a 4xx, a 200 maintenance page) hold no credential in their
    message or attributes, whatever the body echoed."""
    from asyncmigrate.errors import HTTPStatusError, UnexpectedResponse
    from asyncmigrate.glance import open_glance
    from tests.conftest import FAST_RETRY

    clouds.dst.faults.fail_next("POST", r"^/v2/images$", 400, body=_malformed("i"))
    page = f"<html>maintenance; backend {_swift_uri('i')} password={SWIFT_KEY}</html>"
    clouds.dst.faults.fail_next("PATCH", r"^/v2/images/", 200, body=page, content_type="text/html", retry_after=None)
    opts = {"chunk_size": 65536, "concurrency": 1, "timeouts": Timeouts(), "retry": FAST_RETRY}
    async with open_glance(clouds.dst_cloud, **opts) as dst:  # type: ignore[arg-type]
        with pytest.raises(HTTPStatusError) as status:
            await dst.create_image({"name": "n"})
        clouds.dst.add_image(
            None, id="6f1d7c5e-1111-4c1e-9a0a-000000000009", disk_format="raw", container_format="bare"
        )
        with pytest.raises(UnexpectedResponse) as unexpected:
            await dst.patch_image("6f1d7c5e-1111-4c1e-9a0a-000000000009", [])
    for exc in (status.value, unexpected.value):
        _assert_no_store_secret(f"{exc} {exc.args} {vars(exc)}")
    assert "Store URI was malformed" in str(status.value) and "maintenance" in str(unexpected.value)


# -- every credential shape on every request kind --------------------------------------------
#
# Two bodies, each short enough that the redacted excerpt an error keeps (200 characters) still
# holds every shape: a shape cut off by the excerpt would pass without being tested.


def _word() -> str:
    return f"Sx{secrets.token_hex(5)}"


BEARER, BASIC, ACCESS_TOKEN, DB_PASSWORD, CLIENT_SECRET, REFRESH_TOKEN = (_word() for _ in range(6))
SPACED = (_word(), _word(), _word())  # one quoted password with spaces
TEMP_URL_SIG, AMZ_SIGNATURE, V2_SIGNATURE = (_word() for _ in range(3))
SHAPE_SECRETS = (
    BEARER, BASIC, ACCESS_TOKEN, DB_PASSWORD, CLIENT_SECRET, REFRESH_TOKEN, *SPACED,
    TEMP_URL_SIG, AMZ_SIGNATURE, V2_SIGNATURE,
)  # fmt: skip
HEADERS_AND_JSON = (
    f"Authorization: Bearer {BEARER}\nAuthorization: Basic {BASIC}\n"
    f'{{"access_token": "{ACCESS_TOKEN}", "db_password": "{DB_PASSWORD}", '
    f'"client_secret": "{CLIENT_SECRET}", "refresh_token": "{REFRESH_TOKEN}"}}'
)
URLS_AND_QUOTED = (
    f'password="{" ".join(SPACED)}" store swift-7 '
    f"https://swift.example:8080/v1/AUTH_g/glance/obj?temp_url_sig={TEMP_URL_SIG}&temp_url_expires=1 "
    f"https://s3.example:9000/glance/obj?X-Amz-Signature={AMZ_SIGNATURE} ?Signature={V2_SIGNATURE}&Expires=1"
)
BODIES = (HEADERS_AND_JSON, URLS_AND_QUOTED)
# What an operator needs from those bodies, which must survive redaction.
KEPT = ("swift-7", "swift.example:8080/v1/AUTH_g/glance/obj", "s3.example:9000/glance/obj", '"access_token": "***"')


def _assert_no_shape_secret(text: str) -> None:
    for secret in SHAPE_SECRETS:
        assert secret not in text, f"{secret!r} leaked"


def test_redact_removes_every_shape_and_keeps_what_operators_need() -> None:
    """Each credential shape goes from a body (as is, JSON-escaped, and in a repr), while the
    store name, the URLs' hosts and paths and an image id stay."""
    from asyncmigrate.errors import error_excerpt, redact

    image_id = "6f1d7c5e-1111-4c1e-9a0a-000000000009"
    for body in BODIES:
        for form in (body, json.dumps({"message": body}), repr(body), f"image {image_id}: {body}"):
            _assert_no_shape_secret(redact(form))
        assert len(error_excerpt(body)) < 200  # the whole body survives the excerpt: every shape is tested
    kept = redact(f"image {image_id}: {HEADERS_AND_JSON} {URLS_AND_QUOTED}")
    assert image_id in kept and all(k in kept for k in KEPT), kept
    assert redact(redact(URLS_AND_QUOTED)) == redact(URLS_AND_QUOTED)


def _shaped_images(clouds: Clouds, prefix: str) -> dict[str, tuple[str, str]]:
    """Per request kind and body: an image whose request of that kind will echo the body.
    {image id: (kind, body)}."""
    plan: dict[str, tuple[str, str]] = {}
    for kind in ("upload", "patch", "members", "download", "lenient", "check"):
        for n, body in enumerate(BODIES):
            attrs: dict[str, object] = {"disk_format": "raw", "container_format": "bare"}
            if kind == "patch":
                attrs["protected"] = True
            if kind == "members":
                attrs["visibility"] = "shared"
            image = clouds.src.add_image(os.urandom(30_000), name=f"{prefix}-{kind}-{n}", **attrs)
            image_id = image["id"]
            if kind == "members":
                clouds.src.add_member(image_id, "b0b0b0b0b0b04b0b8b0b0b0b0b0b0b01", "accepted")
            if kind == "lenient":  # no recorded size: read by the lenient GET (rawget.py)
                rec = clouds.src.images[image_id]
                rec.size, rec.checksum, rec.os_hash_algo, rec.os_hash_value = None, None, None, None
            faults = {
                "upload": (clouds.dst, "PUT", rf"^/v2/images/{image_id}/file$", 500),
                "patch": (clouds.dst, "PATCH", rf"^/v2/images/{image_id}$", 409),
                "members": (clouds.dst, "POST", rf"^/v2/images/{image_id}/members$", 400),
                "download": (clouds.src, "GET", rf"^/v2/images/{image_id}/file$", 403),
                "lenient": (clouds.src, "GET", rf"^/v2/images/{image_id}/file$", 403),
                "check": (clouds.dst, "GET", rf"^/v2/images/{image_id}$", 500),
            }
            fake, method, path, status = faults[kind]
            fake.faults.fail_next(method, path, status, body=body, retry_after=0 if status >= 500 else None)
            plan[image_id] = (kind, body)
    return plan


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_every_shape_on_every_request_kind_never_leaks(clouds: Clouds, tmp_path: Path, log_format: str) -> None:
    """Upload (retried, -v), PATCH, members, source download, lenient download and the check
    after the upload, each answered with each credential-bearing body: the console (text or
    JSON lines) and the report keep the errors, never a credential."""
    plan = _shaped_images(clouds, "k")
    code, text, doc = await _run_cli(
        clouds, tmp_path, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--log-format", log_format
    )
    assert code == 1, text
    outcomes = {e["id"]: e["outcome"] for e in doc["images"]}  # type: ignore[index, union-attr]
    for image_id, (kind, _body) in plan.items():
        failed = kind in ("patch", "members", "download", "lenient")
        assert (outcomes[image_id] == "failed") == failed, (kind, outcomes[image_id])
    assert text.count("swift-7") >= len(plan) // 2  # every error quoted its body: the test can fail
    _assert_no_shape_secret(text)
    assert all(k in text for k in KEPT[:3])


async def test_every_shape_on_create_and_a_maintenance_page(clouds: Clouds, tmp_path: Path) -> None:
    """A create refused with each body, and a 200 text/html page (retried) quoting each: clean."""
    for n in range(4):
        clouds.src.add_image(os.urandom(20_000), name=f"c-{n}", disk_format="raw", container_format="bare")
    # One at a time, newest first: c-3 (POST 1), c-2 (POST 2), c-1 (POST 3 page, 4), c-0 (POST 5 page, 6).
    for nth, body in ((1, HEADERS_AND_JSON), (2, URLS_AND_QUOTED)):
        clouds.dst.faults.fail_next("POST", r"^/v2/images$", 400, body=body, nth=nth, retry_after=None)
    for nth, body in ((3, HEADERS_AND_JSON), (5, URLS_AND_QUOTED)):
        page = f"<html><body>{body}</body></html>"
        clouds.dst.faults.fail_next("POST", r"^/v2/images$", 200, body=page, nth=nth, content_type="text/html")
    code, text, doc = await _run_cli(
        clouds, tmp_path, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--concurrency", "1"
    )
    assert code == 1, text
    assert sorted(e["outcome"] for e in doc["images"]) == ["copied", "copied", "failed", "failed"]  # type: ignore[index, union-attr]
    assert text.count("swift-7") >= 2 and "unexpected answer" in text
    _assert_no_shape_secret(text)


@pytest.mark.parametrize("body", BODIES, ids=["headers-json", "urls-quoted"])
async def test_every_shape_from_a_failing_listing_or_catalog(clouds: Clouds, tmp_path: Path, body: str) -> None:
    """The source listing failing for good (exit 4, JSON logs) and the destination's catalog
    answering a page that is not Glance's (fatal): neither message carries a credential."""
    clouds.src.add_image(os.urandom(20_000), name="x", disk_format="raw", container_format="bare")
    clouds.src.faults.fail_next("GET", r"^/v2/images$", 500, body=body, retry_after=None, times=None, nth=2)
    code, text, _doc = await _run_cli(
        clouds, tmp_path, "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--log-format", "json", "--retries", "2"
    )
    assert code == 4 and ("swift-7" in text or "access_token" in text), text
    _assert_no_shape_secret(text)
    clouds.src.faults.clear()
    shaped = json.dumps({"error": {"message": body}})
    clouds.dst.faults.fail_next("GET", r"^/v2/images$", 200, body=shaped, content_type="application/json", times=None)
    args = ("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "2", "--log-format", "json")
    code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 3 and "not a listing page" in err, out + err
    _assert_no_shape_secret(out + err)


@pytest.mark.parametrize("body", BODIES, ids=["headers-json", "urls-quoted"])
async def test_every_shape_from_a_move(clouds: Clouds, tmp_path: Path, body: str) -> None:
    """copy-image import refused, a failed import task's message, delete-from-store refused,
    each quoting the body: clean output and report."""
    refused, failing, kept = (
        clouds.src.add_image(os.urandom(20_000), name=f"m-{n}", store="fast", disk_format="raw",
                             container_format="bare")["id"]
        for n in range(3)
    )  # fmt: skip
    clouds.src.faults.fail_next("POST", rf"^/v2/images/{refused}/import$", 400, body=body)
    clouds.src.faults.fail_import("slow", message=body)  # the first import that runs: failing's
    clouds.src.faults.fail_next("DELETE", rf"^/v2/stores/fast/{kept}$", 409, body=body)
    code, text, doc = await _run_cli(
        clouds, tmp_path, "move", "--cloud", "src", "--from-store", "fast", "--to-store", "slow",
        "--concurrency", "1", "--retries", "1", "--image", failing, "--image", kept, "--image", refused,
    )  # fmt: skip
    assert code == 1, text
    assert {e["id"]: e["outcome"] for e in doc["images"]} == dict.fromkeys((refused, failing, kept), "failed")  # type: ignore[index, union-attr]
    assert text.count("swift-7") >= 3 or text.count('"access_token": "***"') >= 3, text
    _assert_no_shape_secret(text)


async def test_every_shape_in_the_error_log(clouds: Clouds, tmp_path: Path) -> None:
    """A bug whose exception quotes each body (an image record the code cannot read) writes
    a traceback to the error log without any credential, and the console names only the file."""
    for n, body in enumerate(BODIES):
        odd = clouds.src.add_image(b"odd", name=f"odd-{n}", disk_format="raw", container_format="bare")["id"]
        clouds.src.images[odd].size = body  # type: ignore[assignment]
    journal = tmp_path / "state" / "j.sqlite"
    report = tmp_path / "r.json"
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--journal", str(journal), "--report", str(report),
        clouds_yaml=clouds.clouds_yaml,
    )  # fmt: skip
    assert code == 1, err
    (line,) = [line for line in out.splitlines() if "tracebacks written to" in line]
    log = Path(line.split("tracebacks written to ", 1)[1].split()[0]).read_text()
    assert log.count("ValueError") >= 2 and "swift-7" in log
    _assert_no_shape_secret(out + err + report.read_text() + log)


async def test_exception_text_carries_no_shape(clouds: Clouds) -> None:
    """The errors the client raises for a 4xx, a 200 text/html page and a page of the wrong
    shape hold no credential in their message, args or attributes."""
    from asyncmigrate.errors import HTTPStatusError, UnexpectedResponse
    from asyncmigrate.glance import open_glance
    from tests.conftest import FAST_RETRY

    opts = {"chunk_size": 65536, "concurrency": 1, "timeouts": Timeouts(), "retry": FAST_RETRY}
    for body in BODIES:
        clouds.dst.faults.clear()
        clouds.dst.faults.fail_next("POST", r"^/v2/images$", 400, body=body)
        clouds.dst.faults.fail_next("GET", r"^/v2/images/", 200, body=f"<p>{body}</p>", content_type="text/html",
                                    times=None)  # fmt: skip
        shaped = json.dumps({"message": body})
        clouds.dst.faults.fail_next("GET", r"^/v2/images$", 200, body=shaped, content_type="application/json",
                                    times=None)  # fmt: skip
        raised: list[BaseException] = []
        async with open_glance(clouds.dst_cloud, **opts) as dst:  # type: ignore[arg-type]
            with pytest.raises(HTTPStatusError) as status:
                await dst.create_image({"name": "n"})
            with pytest.raises(UnexpectedResponse) as page:
                await dst.get_image("6f1d7c5e-1111-4c1e-9a0a-000000000009")
            with pytest.raises(UnexpectedResponse) as shape:
                await dst.list_page({"limit": "5"})
            raised += [status.value, page.value, shape.value]
        for exc in raised:
            _assert_no_shape_secret(f"{exc} {exc.args} {vars(exc)}")
            assert "swift-7" in str(exc) or "***" in str(exc)
