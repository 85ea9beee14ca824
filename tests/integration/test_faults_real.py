"""Faults injected in front of the real Glance pair by tests/faultproxy.py: a load balancer's
maintenance pages, a listing that fails part-way, error bodies echoing credential-bearing store
URIs on every request kind — plus records only old tooling makes (owner null, an unknown hash
algorithm), written straight into Glance's database. Each test asserts the final state: the
run's other images complete in the same run, nothing is left queued by an abort, and no secret
reaches stdout, stderr or the report."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import seed

from tests.faultproxy import FaultProxy

from .conftest import CliRun, Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB
S3_SECRET = "s3SeCrEt-" + uuid.uuid4().hex[:10]
ACCESS_KEY = "AKIAREALTEST7Q3ZK"
SWIFT_KEY = "swKey-" + uuid.uuid4().hex[:10]
MAINTENANCE = "<html><head><title>503</title></head><body>Down for maintenance</body></html>"


class Proxied:
    """The real pair behind two fault proxies, named as clouds 'proxy-src' and 'proxy-dst'."""

    def __init__(self, pair: Pair, src: FaultProxy, dst: FaultProxy, clouds_yaml: Path) -> None:
        self.pair, self.src, self.dst, self.clouds_yaml = pair, src, dst, clouds_yaml

    def cli(self, *args: str) -> CliRun:
        """Run the CLI against the proxied clouds."""
        return self.pair.cli(*args, clouds_yaml=str(self.clouds_yaml))


@pytest.fixture
def proxied(pair: Pair, tmp_path: Path) -> Iterator[Proxied]:
    """A fault proxy in front of each real glance-api."""
    urls = (pair.env["instances"]["src"]["url"], pair.env["instances"]["dst"]["url"])
    with FaultProxy.running(urls[0]) as src, FaultProxy.running(urls[1]) as dst:
        clouds = tmp_path / "clouds.yaml"
        lines = ["clouds:"]
        for name, proxy in (("proxy-src", src), ("proxy-dst", dst)):
            lines += [f"  {name}:", "    auth_type: none", "    auth:", f"      endpoint: {proxy.url}"]
        clouds.write_text("\n".join(lines) + "\n")
        yield Proxied(pair, src, dst, clouds)


COPY = ("copy", "--src-cloud", "proxy-src", "--dst-cloud", "proxy-dst")
DIRECT = ("--src-cloud", "harness-src", "--dst-cloud", "harness-dst")


def _seed(pair: Pair, tag: str, n: int, size: int = MiB, **attrs: object) -> dict[str, str]:
    """n raw images named tag-NN; {id: sha512}."""
    out = {}
    for i in range(n):
        data = seed.raw_image(size + i, abs(hash(tag)) % 10_000 + i)
        image = pair.src.create(data, name=f"{tag}-{i:02d}", disk_format="raw", container_format="bare", **attrs)
        out[image["id"]] = hashlib.sha512(data).hexdigest()
    return out


def _assert_arrived(pair: Pair, images: dict[str, str]) -> None:
    for image_id, sha in images.items():
        dst = pair.dst.get(image_id)
        assert dst is not None and dst["status"] == "active", (image_id, dst and dst["status"])
        got = pair.dst.sha512_of_data(image_id)
        assert got is not None and got[1] == sha


def test_maintenance_pages_and_legacy_records_never_stop_a_run(proxied: Proxied) -> None:
    """200 text/html pages on the listing, a create and an upload are retried; an image whose
    os_hash_algo this Python lacks is verified with md5; an owner-null image is copied; all in
    one run, exit 0 — and the re-run and verify are clean."""
    pair = proxied.pair
    tag = f"lb-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 5, size=2 * MiB)
    future, ownerless = list(images)[:2]
    pair.sql("src", f"UPDATE images SET os_hash_algo = 'sha4096' WHERE id = '{future}'")
    pair.sql("src", f"UPDATE images SET owner = NULL WHERE id = '{ownerless}'")
    assert pair.src.get(future)["os_hash_algo"] == "sha4096"  # type: ignore[index]
    assert pair.src.get(ownerless)["owner"] is None  # type: ignore[index]
    page = {"body": MAINTENANCE, "content_type": "text/html"}
    proxied.src.answer("GET", r"^/v2/images$", 200, nth=2, **page)  # the listing's first page (after the probe)
    proxied.dst.answer("POST", r"^/v2/images$", 200, nth=2, **page)
    proxied.dst.answer("PUT", r"/file$", 200, nth=3, **page)
    run = proxied.cli(*COPY, "--name", f"{tag}-*", "--concurrency", "2", "-v")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outcomes() == dict.fromkeys(images, "copied")
    assert [s.fault for s in proxied.dst.matching("POST", r"^/v2/images$")].count("answer") == 1
    assert [s.fault for s in proxied.dst.matching("PUT", r"/file$")].count("answer") == 1
    assert "Traceback" not in run.stdout + run.stderr
    _assert_arrived(pair, images)
    assert pair.dst.get(ownerless)["owner"] == pair.env["admin_project_id"]  # type: ignore[index]
    again = pair.cli("copy", *DIRECT, "--name", f"{tag}-*")
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}, again.stdout + again.stderr
    check = pair.cli("verify", *DIRECT, "--name", f"{tag}-*")
    assert check.returncode == 0, check.stdout


def test_listing_failing_part_way_finishes_in_flight_then_rerun_completes(proxied: Proxied) -> None:
    """The source listing's second page fails for good while copies are in flight: they finish
    (none left queued), exit 4 with the reason; the same command again (fault gone) completes."""
    pair = proxied.pair
    tag = f"lst-{uuid.uuid4().hex[:6]}"
    visible = _seed(pair, tag, 25, size=256 * 1024)
    hidden = _seed(pair, f"{tag}-hidden", 3, size=256 * 1024, os_hidden=True)
    images = visible | hidden
    proxied.src.delay("GET", r"/file$", 0.2, times=None)  # transfers stay in flight a while
    proxied.src.limit_max = 25  # a deployment with api_limit_max = 25: the listing pages
    # Listing requests: the start-up probe, page 1 of the pass over images not hidden (the 25
    # newest: the visible ones), then page 2 — which fails; the hidden ones are never reached.
    proxied.src.answer("GET", r"^/v2/images$", 500, body="backend gone", times=None, nth=3)
    args = (*COPY, "--name", f"{tag}-*", "--concurrency", "4", "--retries", "2")
    run = proxied.cli(*args)
    assert run.returncode == 4, run.stdout + run.stderr
    assert "incomplete: the source listing failed" in run.stdout and "run the same command again" in run.stdout
    assert run.report is not None and "500" in run.report["summary"]["incomplete"]
    copied = [i for i, outcome in run.outcomes().items() if outcome == "copied"]
    assert sorted(copied) == sorted(visible) and set(run.outcomes().values()) == {"copied"}
    statuses = {(pair.dst.get(i) or {}).get("status") for i in images}
    assert statuses <= {"active", None}, statuses  # nothing aborted mid-upload
    _assert_arrived(pair, {i: images[i] for i in copied})
    proxied.src.clear()
    proxied.src.limit_max = None
    again = proxied.cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(i for i, o in again.outcomes().items() if o == "copied") == sorted(set(images) - set(copied))
    _assert_arrived(pair, images)


def _s3(image_id: str) -> str:
    return f"s3://{ACCESS_KEY}:{S3_SECRET}@127.0.0.1:9000/glance/{image_id}"


def _swift(image_id: str) -> str:
    return f"swift+http://glance:{SWIFT_KEY}@127.0.0.1:8080/v1/AUTH_glance/glance/{image_id}"


def _assert_clean(run: CliRun) -> str:
    text = run.stdout + run.stderr + json.dumps(run.report)
    for secret in (ACCESS_KEY, S3_SECRET, SWIFT_KEY):
        assert secret not in text, f"{secret} leaked"
    return text


def test_store_uris_echoed_on_every_request_kind_never_leak(proxied: Proxied) -> None:
    """Errors echoing S3/Swift URIs with credentials on create, upload (retried, -v), PATCH,
    the listing (JSON logs), copy-image import and delete-from-store: the messages reach the
    operator, the credentials reach nothing."""
    pair = proxied.pair
    tag = f"sec-{uuid.uuid4().hex[:6]}"
    a, b = _seed(pair, tag, 2)
    c = pair.src.create(seed.raw_image(MiB, 77), name=f"{tag}-protected", disk_format="raw", container_format="bare",
                        protected=True)["id"]  # fmt: skip
    # One at a time, in --image order: a (POST 1), b (POST 2, PUT 1 + retry), c (POST 3, PUT 3, PATCH 1).
    proxied.dst.answer("POST", r"^/v2/images$", 400, body=f"400 Bad Request\n\nThe Store URI was malformed: {_s3(a)}")
    proxied.dst.answer("PUT", r"/file$", 500, body=f"500 Internal Server Error\n\nfailed writing to {_swift(b)}")
    proxied.dst.answer("PATCH", r"^/v2/images/", 409, body=f"409 Conflict\n\nThe location {_swift(c)} already exists")
    run = proxied.cli(*COPY, "-v", "--concurrency", "1", "--image", a, "--image", b, "--image", c)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outcomes() == {a: "failed", b: "copied", c: "failed"}
    text = _assert_clean(run)
    assert "The Store URI was malformed: s3://***@127.0.0.1:9000/glance/" in text
    assert f"retrying {b}" in text and "already exists" in text

    proxied.dst.clear()
    proxied.src.answer("GET", r"^/v2/images$", 503, body=f"proxy error: upstream {_s3('list')}", times=None, nth=2)
    run = proxied.cli(*COPY, "--name", f"{tag}-*", "--log-format", "json", "--retries", "2")
    assert run.returncode == 4
    text = _assert_clean(run)
    assert any(json.loads(line)["event"] == "listing-failed" for line in run.stdout.splitlines())
    assert "s3://***@" in text

    proxied.src.clear()
    d, e = _seed(pair, f"{tag}-mv", 2)
    proxied.src.answer("POST", rf"^/v2/images/{d}/import$", 400, body=f"The Store URI was malformed: {_s3(d)}")
    proxied.src.answer("DELETE", rf"^/v2/stores/fast/{e}$", 409, body=f"The location {_swift(e)} already exists")
    run = proxied.pair.cli(
        "move", "--cloud", "proxy-src", "--from-store", "fast", "--to-store", "slow", "-v", "--image", d, "--image", e,
        clouds_yaml=str(proxied.clouds_yaml),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outcomes() == {d: "failed", e: "failed"}
    text = _assert_clean(run)
    assert "Store URI was malformed" in text and "already exists" in text
