"""Faults injected in front of the real Glance pair by tests/faultproxy.py: a load balancer's
maintenance pages, a listing that fails part-way, error bodies echoing credential-bearing store
URIs on every request kind — plus records only old tooling makes (owner null, an unknown hash
algorithm), written straight into Glance's database. Each test asserts the final state: the
run's other images complete in the same run, nothing is left queued by an abort, and no secret
reaches stdout, stderr or the report."""

from __future__ import annotations

import hashlib
import json
import threading
import time
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


QUARANTINE_KEY = "asyncmigrate_quarantined"


def _quarantined(pair: Pair, image_id: str) -> dict[str, object]:
    dst = pair.dst.get(image_id)
    assert dst is not None and dst["status"] == "deactivated", dst and dst["status"]
    assert "differ from the source's record" in str(dst.get(QUARANTINE_KEY)), dst
    return dst


def test_server_mode_bad_copy_is_deactivated_and_known_to_later_runs(proxied: Proxied) -> None:
    """--verify server, one byte flipped on the way from the real source: real glance commits the
    wrong bytes; the tool sees its record differ, deactivates the copy at once (real admin API),
    reports it quarantined (exit 1); copy, sync and verify afterwards say what it is."""
    pair = proxied.pair
    tag = f"qs-{uuid.uuid4().hex[:6]}"
    (image_id,) = _seed(pair, tag, 1, size=2 * MiB)
    proxied.src.flip("GET", rf"/v2/images/{image_id}/file$", MiB + 17)
    run = proxied.cli(*COPY, "--image", image_id, "--verify", "server")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outcomes() == {image_id: "quarantined"} and "1 quarantined" in run.stdout
    assert [s.fault for s in proxied.src.matching("GET", r"/file$")] == ["flip"]
    dst = _quarantined(pair, image_id)
    assert dst["checksum"] != pair.src.get(image_id)["checksum"]  # type: ignore[index]  # glance stored the flip
    for command in ("copy", "sync", "verify"):
        again = pair.cli(command, *DIRECT, "--image", image_id)
        assert again.returncode == 1 and again.outcomes() == {image_id: "quarantined"}, (command, again.stdout)
        assert "quarantined by an earlier run" in again.report["images"][0]["reason"]  # type: ignore[index]
    _quarantined(pair, image_id)  # sync did not level it back to active


def test_bytes_changed_into_the_real_destination_are_quarantined(proxied: Proxied) -> None:
    """--verify full: good bytes leave the tool, a proxy in front of the real destination flips one
    on the PUT; glance records the hash of what it stored, so the copy is caught and deactivated."""
    pair = proxied.pair
    (image_id,) = _seed(pair, f"qf-{uuid.uuid4().hex[:6]}", 1, size=2 * MiB)
    proxied.dst.flip("PUT", rf"/v2/images/{image_id}/file$", 3 * MiB // 2, request=True)
    run = proxied.cli(*COPY, "--image", image_id)
    assert run.returncode == 1 and run.outcomes() == {image_id: "quarantined"}, run.stdout + run.stderr
    assert [s.fault for s in proxied.dst.matching("PUT", r"/file$")] == ["flip-request"]
    assert "after the client's check" in run.report["images"][0]["reason"]  # type: ignore[index]
    _quarantined(pair, image_id)


def test_server_mode_hashes_what_the_destination_record_cannot_prove(proxied: Proxied) -> None:
    """A source recording sha256 and no md5 (a database edit), into glance 33's sha512: --verify
    server hashes the stream itself, so a byte flipped on the way is caught before the commit and
    retried, and the report says sha256 because sha256 was checked."""
    pair = proxied.pair
    data = seed.raw_image(2 * MiB, 4242)
    name = f"alg-{uuid.uuid4().hex[:6]}"
    image_id = pair.src.create(data, name=name, disk_format="raw", container_format="bare")["id"]
    sha256 = hashlib.sha256(data).hexdigest()
    pair.sql("src", f"UPDATE images SET os_hash_algo = 'sha256', os_hash_value = '{sha256}', checksum = NULL "
                    f"WHERE id = '{image_id}'")  # fmt: skip
    assert pair.src.get(image_id)["checksum"] is None  # type: ignore[index]
    proxied.src.flip("GET", rf"/v2/images/{image_id}/file$", MiB + 5)
    run = proxied.cli(*COPY, "--image", image_id, "--verify", "server")
    assert run.returncode == 0, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert (entry["outcome"], entry["attempts"], entry["verification"]) == ("copied", 2, "sha256")
    _assert_arrived(pair, {image_id: hashlib.sha512(data).hexdigest()})


def test_range_answers_of_the_real_source_are_read_by_their_content_range(proxied: Proxied) -> None:
    """A download cut mid-way resumes with glance 33's real 206 (start and total checked), and a
    whole-image answer sliced to a 206 by a proxy is completed with a Range request: one
    attempt and one upload each."""
    pair = proxied.pair
    images = _seed(pair, f"rng-{uuid.uuid4().hex[:6]}", 2, size=3 * MiB)
    cut, sliced = images
    proxied.src.cut_after("GET", rf"/v2/images/{cut}/file$", MiB)
    proxied.src.slice_whole("GET", rf"/v2/images/{sliced}/file$", MiB + 1)
    run = proxied.cli(*COPY, "--image", cut, "--image", sliced)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {i["id"]: (i["outcome"], i["attempts"]) for i in run.report["images"]} == {  # type: ignore[index]
        cut: ("copied", 1),
        sliced: ("copied", 1),
    }
    assert [(s.fault, s.status) for s in proxied.src.matching("GET", rf"/{cut}/file$")] == [("cut", 200), (None, 206)]
    assert [(s.fault, s.status) for s in proxied.src.matching("GET", rf"/{sliced}/file$")] == [
        ("slice", 206),
        (None, 206),
    ]
    assert len(proxied.dst.matching("PUT", r"/file$")) == 2
    _assert_arrived(pair, images)


def test_an_image_deleted_at_the_real_destination_during_a_run_is_reported(proxied: Proxied) -> None:
    """A re-run skips an image at the start (the catalog read once), a person deletes it at the
    real destination while another image streams: the end's listing catches it — failed, with
    why it cannot be re-created (glance 33 refuses the id: checked) — exit 1, not 'skipped'."""
    pair = proxied.pair
    tag = f"del-{uuid.uuid4().hex[:6]}"
    (there,) = _seed(pair, tag, 1)
    assert proxied.cli(*COPY, "--name", f"{tag}-*").returncode == 0
    (slow,) = _seed(pair, f"{tag}-slow", 1)
    proxied.src.delay("GET", rf"/v2/images/{slow}/file$", 3.0)

    def delete_while_streaming() -> None:
        deadline = time.monotonic() + 60
        while not proxied.src.matching("GET", rf"/v2/images/{slow}/file$") and time.monotonic() < deadline:
            time.sleep(0.02)
        pair.dst.ok("DELETE", f"/v2/images/{there}")

    listed_before = len(proxied.dst.matching("GET", r"^/v2/images$"))
    deleter = threading.Thread(target=delete_while_streaming)
    deleter.start()
    run = proxied.cli(*COPY, "--name", f"{tag}-*")
    deleter.join()
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outcomes() == {there: "failed", slow: "copied"}
    reason = next(i["reason"] for i in run.report["images"] if i["id"] == there)  # type: ignore[index]
    assert reason.startswith("deleted at the destination during this run") and "never reuses" in reason
    # The probe, the listing's two passes (os_hidden false, true) and their re-check for images
    # updated meanwhile at the start, the two passes again at the end.
    assert len(proxied.dst.matching("GET", r"^/v2/images$")) - listed_before == 1 + 4 + 2
    status, _ = pair.dst.request("POST", "/v2/images", {"id": there, "name": "again", "disk_format": "raw",
                                                         "container_format": "bare"})  # fmt: skip
    assert status == 409  # the reason's claim, on the real server: a deleted id is never reused


def test_retries_is_one_loop_per_image_on_the_real_pair(proxied: Proxied) -> None:
    """The real destination's answer to the image's own look-up is a gateway's 503 every time:
    ``--retries 3`` costs that look-up three requests in all (one per attempt, not three inside
    each of three), the image fails with the 503 named, exit 1; the source is read not at all."""
    pair = proxied.pair
    tag = f"nest-{uuid.uuid4().hex[:6]}"
    (image_id,) = _seed(pair, tag, 1)
    lookup = rf"^/v2/images/{image_id}$"
    proxied.dst.answer("GET", lookup, 503, body="Service Unavailable", headers={"Retry-After": "0"}, times=None)
    run = proxied.cli(*COPY, "--image", image_id, "--retries", "3")
    assert run.returncode == 1, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert (entry["outcome"], entry["attempts"]) == ("failed", 3) and "503" in entry["reason"], entry
    assert len(proxied.dst.matching("GET", lookup)) == 3
    assert not proxied.src.matching("GET", rf"/v2/images/{image_id}/file$")
    assert pair.dst.get(image_id) is None


def test_a_carrier_whose_bytes_changed_into_the_real_store_is_never_lent(proxied: Proxied) -> None:
    """move --method location through a proxy that flips one byte of the carrier's PUT (good bytes
    leave the tool; real glance 33 records the hash of what it stored): the carrier is deleted
    unused, the image tried again and moved with a good carrier, its bytes the source's."""
    pair = proxied.pair
    data = seed.raw_image(2 * MiB, 77)
    image = pair.src.create(
        data, store="slow", name=f"cf-{uuid.uuid4().hex[:6]}", disk_format="raw", container_format="bare"
    )
    image_id = image["id"]
    proxied.src.flip("PUT", r"/v2/images/[^/]+/file$", MiB + 3, request=True)
    move = ("move", "--cloud", "proxy-src", "--from-store", "slow", "--to-store", "cold", "--method", "location")
    run = proxied.cli(*move, "--image", image_id)
    assert run.returncode == 0 and run.outcomes() == {image_id: "moved"}, run.stdout + run.stderr
    assert [s.fault for s in proxied.src.matching("PUT", r"/file$")] == ["flip-request", None]
    (result,) = run.report["images"]  # type: ignore[index]
    carriers = [i for i in pair.src.all_images() if i.get("asyncmigrate_carrier_for") == image_id]
    assert [c["id"] for c in carriers] == [result["carrier"]] and result["attempts"] == 2
    assert "after the upload (bytes changed on the way in): deleted" in result["reason"]
    assert carriers[0]["checksum"] == image["checksum"] and carriers[0]["status"] == "active"
    now = pair.src.get(image_id)
    assert now is not None and now["stores"] == "cold"
    got = pair.src.sha512_of_data(image_id)
    assert got is not None and got[1] == hashlib.sha512(data).hexdigest()
