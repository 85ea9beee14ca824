"""Issue 17 on the real pair, through tests/faultproxy.py: listing pages of the wrong shape,
an image un-hidden between the listing's passes, what the listing costs; and Glance traffic
through a forward proxy (tests/forwardproxy.py) named by the environment."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import seed
import yaml

from tests.faultproxy import FaultProxy
from tests.forwardproxy import ForwardProxy

from .conftest import KeystoneClouds, OldGlance, Pair
from .test_faults_real import COPY, DIRECT, Proxied, _assert_arrived, _seed

pytestmark = pytest.mark.realglance

GATEWAY = json.dumps({"error": {"code": 504, "message": "upstream timed out"}})


@pytest.fixture
def proxied(pair: Pair, tmp_path: Path) -> Iterator[Proxied]:
    """A fault proxy in front of each real glance-api (as clouds proxy-src and proxy-dst)."""
    urls = (pair.env["instances"]["src"]["url"], pair.env["instances"]["dst"]["url"])
    with FaultProxy.running(urls[0]) as src, FaultProxy.running(urls[1]) as dst:
        clouds = tmp_path / "clouds.yaml"
        lines = ["clouds:"]
        for name, proxy in (("proxy-src", src), ("proxy-dst", dst)):
            lines += [f"  {name}:", "    auth_type: none", "    auth:", f"      endpoint: {proxy.url}"]
        clouds.write_text("\n".join(lines) + "\n")
        yield Proxied(pair, src, dst, clouds)


def test_a_gateway_json_page_is_retried_then_a_listing_failure(proxied: Proxied) -> None:
    """Pages of 5 from the real source; page 2 answered once by a JSON error with status 200:
    retried, all 12 copied, exit 0. Answered for good: exit 4 after the first page, no image
    silently left out. The destination's catalog answering it: exit 3, nothing created."""
    tag = f"shape-{uuid.uuid4().hex[:6]}"
    images = _seed(proxied.pair, tag, 12, size=4096)
    proxied.src.limit_max = 5
    page = {"body": GATEWAY, "content_type": "application/json"}
    # Listing requests: the probe, page 1, then page 2.
    proxied.src.answer("GET", r"^/v2/images$", 200, nth=3, **page)
    run = proxied.cli(*COPY, "--name", f"{tag}-0*", "--retries", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outcomes() == {i: "copied" for i in list(images)[:10]}

    proxied.src.clear()
    proxied.src.answer("GET", r"^/v2/images$", 200, nth=3, times=None, **page)
    run = proxied.cli(*COPY, "--name", f"{tag}-*", "--retries", "2")
    assert run.returncode == 4, run.stdout + run.stderr
    log = run.stdout  # the notice goes where the log goes
    assert "not a listing page" in log and "the source listing failed after" in log
    proxied.src.clear()
    proxied.dst.seen.clear()
    proxied.dst.answer("GET", r"^/v2/images$", 200, nth=2, times=None, **page)  # the probe, then the catalog
    fresh = _seed(proxied.pair, f"{tag}-new", 1, size=4096)
    run = proxied.cli(*COPY, "--name", f"{tag}-new-*", "--retries", "2")
    assert run.returncode == 3 and "cannot read the destination's catalog (nothing was done)" in run.stderr
    assert proxied.pair.dst.get(next(iter(fresh))) is None
    assert not proxied.dst.matching("POST", ".*")


def _patch(glance: seed.Glance, image_id: str, hidden: bool) -> None:
    glance.ok(
        "PATCH",
        f"/v2/images/{image_id}",
        [{"op": "replace", "path": "/os_hidden", "value": hidden}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )


def test_an_image_unhidden_between_the_passes_is_copied(proxied: Proxied) -> None:
    """A hidden image un-hidden (PATCH, straight to the real source) after the os_hidden=false
    pass and before the os_hidden=true pass: glance 33 lists it in neither pass, the re-check
    (updated_at=gte:) finds it, it is copied; its updated_at moved with the PATCH."""
    pair = proxied.pair
    tag = f"flip-{uuid.uuid4().hex[:6]}"
    shown = _seed(pair, tag, 2, size=4096)
    (flipper,) = _seed(pair, f"{tag}-h", 1, size=4096, os_hidden=True)
    before = pair.src.get(flipper)
    assert before is not None and before["os_hidden"] is True

    def unhide() -> None:
        _patch(pair.src, flipper, hidden=False)

    proxied.src.before("GET", r"^/v2/images$", unhide, query={"os_hidden": "true", "updated_at": ""})
    run = proxied.cli(*COPY, "--name", f"{tag}*")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outcomes() == dict.fromkeys([*shown, flipper], "copied")
    listed = [s for s in proxied.src.matching("GET", r"^/v2/images$") if "limit=1000" in s.query]
    assert [("os_hidden=true" in s.query, "updated_at=gte" in s.query) for s in listed] == [
        (False, False), (True, False), (False, True), (True, True),
    ]  # fmt: skip
    # The os_hidden=false pass ran while it was hidden; the os_hidden=true pass after the PATCH
    # cannot list it: in neither pass. Glance's updated_at filter (what the fake models) has it.
    after = pair.src.get(flipper)
    assert after is not None and after["os_hidden"] is False and after["updated_at"] >= before["updated_at"]
    query = "/v2/images?visibility=all&member_status=all&limit=1000&os_hidden="
    assert flipper not in {i["id"] for i in pair.src.ok("GET", query + "true")["images"]}
    since = before["updated_at"]
    assert flipper in {i["id"] for i in pair.src.ok("GET", f"{query}false&updated_at=gte:{since}")["images"]}
    later = "2999-01-01T00:00:00Z"
    assert flipper not in {i["id"] for i in pair.src.ok("GET", f"{query}false&updated_at=gte:{later}")["images"]}


def test_a_no_op_rerun_costs_the_destination_a_fixed_number_of_requests(proxied: Proxied) -> None:
    """Measured: a copy re-run with nothing to do sends the destination the version document,
    the stores, the import methods, the usage, one probe, the listing's four queries (two passes
    and their re-check) and, at the end, the two passes again (what was skipped is checked
    against a second read), whatever the number of images."""
    tag = f"cost-{uuid.uuid4().hex[:6]}"
    _seed(proxied.pair, tag, 30, size=1024)
    first = proxied.cli(*COPY, "--name", f"{tag}-*", "--concurrency", "4")
    assert first.returncode == 0, first.stdout + first.stderr
    proxied.dst.seen.clear()
    again = proxied.cli(*COPY, "--name", f"{tag}-*")
    assert again.returncode == 0 and set(again.outcomes().values()) == {"skipped"}
    requests = [(s.method, s.path, s.query) for s in proxied.dst.seen]
    listings = [r for r in requests if r[1] == "/v2/images" and "limit=1000" in r[2]]
    assert len(listings) == 6, requests
    print(f"\nno-op re-run: {len(requests)} destination requests: {[(m, p) for m, p, _ in requests]}")
    assert len(requests) <= 12, requests


def _only_proxy(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy) -> None:
    """HTTP_PROXY names ``proxy``, and no NO_PROXY exempts loopback (the suite's own does)."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)


def test_glance_traffic_goes_through_the_environments_proxy(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY names a forward proxy: every request to both real glance-api servers goes
    through it — discovery, listing, create, upload, download — and the copies arrive; with
    NO_PROXY naming 127.0.0.1, no request does."""
    tag = f"proxy-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 2, size=64 * 1024)
    ports = {name: pair.env["instances"][name]["port"] for name in ("src", "dst")}
    with ForwardProxy.running() as proxy:
        _only_proxy(monkeypatch, proxy)
        run = pair.cli("copy", *DIRECT, "--name", f"{tag}-*")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.outcomes() == dict.fromkeys(images, "copied")
        relayed = {(method, urlsplit(target).port, urlsplit(target).path) for method, target in proxy.seen}
        for image_id in images:
            assert ("GET", ports["src"], f"/v2/images/{image_id}/file") in relayed
            assert ("PUT", ports["dst"], f"/v2/images/{image_id}/file") in relayed
            assert ("GET", ports["dst"], f"/v2/images/{image_id}") in relayed  # the check after the upload
        assert ("POST", ports["dst"], "/v2/images") in relayed
        for port in ports.values():
            assert {("GET", port, "/versions"), ("GET", port, "/v2/images")} <= relayed
        _assert_arrived(pair, images)
        proxy.seen.clear()
        more = _seed(pair, f"{tag}-direct", 1, size=16 * 1024)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        run = pair.cli("copy", *DIRECT, "--name", f"{tag}-direct-*")
        assert run.returncode == 0 and run.outcomes() == dict.fromkeys(more, "copied"), run.stdout + run.stderr
        assert proxy.seen == []


def test_the_lenient_get_goes_through_the_proxy(
    pair: Pair, old_glance: OldGlance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glance 27's image without a recorded size ("Content-Length: None", read by rawget.py's
    own GET) is downloaded through the proxy HTTP_PROXY names, and arrives verified. (glance 33
    under gunicorn cannot serve such an image at all: gunicorn fails on its own "None", 500.)"""
    legacy = old_glance.seed_legacy(size=256 * 1024)
    item = legacy["size_null"]
    with ForwardProxy.running() as proxy:
        _only_proxy(monkeypatch, proxy)
        run = pair.cli("copy", "--src-cloud", old_glance.cloud, "--dst-cloud", "harness-dst", "--image", item.id)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.outcomes() == {item.id: "copied"}
        old_port = urlsplit(old_glance.url).port
        assert ("GET", f"http://127.0.0.1:{old_port}/v2/images/{item.id}/file") in proxy.seen
    got = pair.dst.sha512_of_data(item.id)
    assert item.data is not None and got == (item.data["size"], item.data["sha512"])


def test_properties_the_destination_injects_are_left_alone(pair: Pair) -> None:
    """glance 33 "dst" runs inject_image_metadata (the harness's config): a glance-direct copy
    gets its properties; the re-run skips (no conflict), verify matches, sync leaves them — and
    a property then removed at the source is removed at the destination by sync."""
    injected = pair.env["instances"]["dst"]["inject"]
    assert injected
    tag = f"inject-{uuid.uuid4().hex[:6]}"
    (image_id,) = _seed(pair, tag, 1, size=64 * 1024, os_distro="debian", os_version="12")
    args = (*DIRECT, "--name", f"{tag}-*")
    run = pair.cli("copy", *args, "--upload-method", "glance-direct")
    assert run.returncode == 0 and run.outcomes() == {image_id: "copied"}, run.stdout + run.stderr
    dst = pair.dst.get(image_id)
    assert dst is not None and {k: dst.get(k) for k in injected} == injected
    assert sorted(injected) == sorted(run.report["images"][0]["reason"].split(": ", 1)[1].split(" (")[0].split(", "))  # type: ignore[index]
    again = pair.cli("copy", *args)
    assert again.returncode == 0 and again.outcomes() == {image_id: "skipped"}, again.stdout + again.stderr
    check = pair.cli("verify", *args)
    assert check.returncode == 0 and check.outcomes() == {image_id: "match"}, check.stdout
    pair.src.ok(
        "PATCH",
        f"/v2/images/{image_id}",
        [{"op": "remove", "path": "/os_version"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    level = pair.cli("sync", *args)
    assert level.returncode == 0 and level.outcomes() == {image_id: "updated"}, level.stdout + level.stderr
    dst = pair.dst.get(image_id)
    assert dst is not None and "os_version" not in dst and dst["os_distro"] == "debian"
    assert {k: dst.get(k) for k in injected} == injected
    quiet = pair.cli("sync", *args)
    assert quiet.returncode == 0 and quiet.outcomes() == {image_id: "skipped"}


def test_every_credential_shape_on_every_request_kind_never_leaks(proxied: Proxied) -> None:
    """The real pair behind the fault proxy, whose errors quote each credential shape (bearer and
    basic Authorization, JSON access_token/*_password/*_secret/*_token, a quoted password with
    spaces, Swift temp_url_sig, S3 X-Amz-Signature/Signature): create, upload (retried, -v),
    PATCH, the listing (JSON logs), copy-image import and delete-from-store — each with both
    bodies: the messages reach the operator, the credentials nothing."""
    from tests.test_secrets import BODIES, KEPT, _assert_no_shape_secret

    pair = proxied.pair
    tag = f"shape-{uuid.uuid4().hex[:6]}"
    texts: list[str] = []
    for first, second in (BODIES, BODIES[::-1]):
        a, b = _seed(pair, f"{tag}-{len(texts)}", 2)
        c = pair.src.create(seed.raw_image(4096, 78), name=f"{tag}-p{len(texts)}", disk_format="raw",
                            container_format="bare", protected=True)["id"]  # fmt: skip
        proxied.dst.answer("POST", r"^/v2/images$", 400, body=first)
        proxied.dst.answer("PUT", r"/file$", 500, body=second)
        proxied.dst.answer("PATCH", r"^/v2/images/", 409, body=first)
        run = proxied.cli(*COPY, "-v", "--concurrency", "1", "--image", a, "--image", b, "--image", c)
        assert run.returncode == 1 and run.outcomes() == {a: "failed", b: "copied", c: "failed"}, run.stderr
        proxied.dst.clear()
        proxied.src.answer("GET", r"^/v2/images$", 503, body=second, times=None, nth=2)
        listing = proxied.cli(*COPY, "--name", f"{tag}-*", "--log-format", "json", "--retries", "2")
        assert listing.returncode == 4, listing.stderr
        proxied.src.clear()
        d, e = _seed(pair, f"{tag}-mv{len(texts)}", 2)
        proxied.src.answer("POST", rf"^/v2/images/{d}/import$", 400, body=first)
        proxied.src.answer("DELETE", rf"^/v2/stores/fast/{e}$", 409, body=second)
        move = pair.cli(
            "move", "--cloud", "proxy-src", "--from-store", "fast", "--to-store", "slow", "-v",
            "--image", d, "--image", e, clouds_yaml=str(proxied.clouds_yaml),
        )  # fmt: skip
        assert move.returncode == 1 and move.outcomes() == {d: "failed", e: "failed"}, move.stderr
        proxied.src.clear()
        for done in (run, listing, move):
            texts.append(done.stdout + done.stderr + json.dumps(done.report))
    everything = "\n".join(texts)
    _assert_no_shape_secret(everything)
    assert all(k in everything for k in KEPT[:3]) and everything.count("swift-7") >= 6


def test_glance_27_filters_on_updated_at_as_the_recheck_needs(old_glance: OldGlance) -> None:
    """The re-check's query on the old glance 27.1.1: updated_at=gte: with an ISO time lists the
    images updated since, and an unknown operator is refused (400), as the fake models it."""
    old_glance.seed_legacy(size=4096)
    query = "/v2/images?visibility=all&member_status=all&os_hidden=false&limit=1000&updated_at="
    since = old_glance.glance.ok("GET", query + "gte:2000-01-01T00:00:00Z")["images"]
    assert since and old_glance.glance.ok("GET", query + "gte:2999-01-01T00:00:00Z")["images"] == []
    status, _ = old_glance.glance.request("GET", query + "after:2000-01-01T00:00:00Z")
    assert status == 400


def test_verify_false_on_a_real_keystone_cloud_warns_once_and_names_it(
    pair: Pair, keystone_clouds: KeystoneClouds, tmp_path: Path
) -> None:
    """``verify: false`` in clouds.yaml for the Keystone-guarded destination: keystoneauth
    authenticates and the plan runs, and the log says once, naming that cloud, that its TLS
    certificates are NOT verified — as ``--insecure`` does; the same plan without it says nothing."""
    image = pair.src.create(seed.raw_image(4096, 61), name=f"tls-{uuid.uuid4().hex[:6]}", disk_format="raw",
                            container_format="bare")  # fmt: skip
    dst = keystone_clouds.dst.cloud
    clouds = yaml.safe_load(Path(pair.env["clouds_yaml"]).read_text())
    clouds["clouds"][dst]["verify"] = False
    insecure = tmp_path / "insecure.yaml"
    insecure.write_text(yaml.safe_dump(clouds))
    args = ("plan", "copy", "--src-cloud", "harness-src", "--dst-cloud", dst, "--image", image["id"], "--no-owner")
    run = pair.cli(*args, report=False, clouds_yaml=str(insecure))
    assert run.returncode == 0, run.stdout + run.stderr
    warnings = [line for line in (run.stdout + run.stderr).splitlines() if "NOT verified" in line]
    assert len(warnings) == 1 and repr(dst) in warnings[0] and "verify: false" in warnings[0], warnings
    plain = pair.cli(*args, report=False)
    assert plain.returncode == 0 and "NOT verified" not in plain.stdout + plain.stderr
