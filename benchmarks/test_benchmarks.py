"""Checks of the benchmark machinery itself (run: ``.venv/bin/pytest benchmarks``).

They pin behaviour, never timings: the fake records the digests Glance would,
pages like Glance, serves ranges, and the runner writes its table, JSON and plot;
the real-pair group counts requests from the servers' access logs.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import realsmall, report, startup
from benchmarks.child import main as child_main
from benchmarks.pattern import MiB, Pattern, digests
from benchmarks.real import harness_env
from benchmarks.run import main as run_main
from benchmarks.servers import FakePair, measure

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def pair() -> Iterator[FakePair]:
    with FakePair() as p:
        yield p


def _req(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with HTTP.open(req, timeout=60) as resp:
        return bytes(resp.read())


def test_pattern_digests_match_hashlib() -> None:
    """The cached digests are those of the bytes the fake serves."""
    size = 3 * MiB + 17
    data = b"".join(Pattern().pieces(0, size, 777_777))
    d = digests([size])[size]
    assert d == {"md5": hashlib.md5(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}


def test_upload_records_real_digests_of_other_bytes(pair: FakePair) -> None:
    """Bytes that are not the pattern get their true md5/sha512 recorded, as Glance would."""
    pair.reset()
    dst = pair.urls["dst"]
    image = json.loads(_req("POST", f"{dst}/v2/images", json.dumps({"name": "x"}).encode()))
    data = b"".join(Pattern().pieces(0, 2 * MiB, MiB))
    data = data[:MiB] + b"corrupt" + data[MiB + 7 :]
    _req("PUT", f"{dst}/v2/images/{image['id']}/file", data, {"Content-Type": "application/octet-stream"})
    rec = json.loads(_req("GET", f"{dst}/v2/images/{image['id']}"))
    assert rec["status"] == "active"
    assert rec["size"] == len(data)
    assert rec["checksum"] == hashlib.md5(data).hexdigest()
    assert rec["os_hash_value"] == hashlib.sha512(data).hexdigest()


def test_listing_pages_with_next_links(pair: FakePair) -> None:
    """The default page is 25 images and ``next`` links lead through all of them."""
    pair.reset()
    ids = pair.seed(7, 60, 1024)
    seen: list[str] = []
    path: str | None = "/v2/images?visibility=all&os_hidden=false"
    pages = 0
    while path:
        page = json.loads(_req("GET", pair.urls["src"] + path))
        seen += [i["id"] for i in page["images"]]
        path = page.get("next")
        pages += 1
    assert seen == ids
    assert pages == 3


def test_range_download(pair: FakePair) -> None:
    """``Range: bytes=N-`` answers 206 with the stream from N."""
    pair.reset()
    (iid,) = pair.seed(8, 1, 2 * MiB)
    body = _req("GET", f"{pair.urls['src']}/v2/images/{iid}/file", headers={"Range": "bytes=1000-"})
    assert body == bytes(Pattern().piece(1000, 2 * MiB - 1000))


@pytest.mark.parametrize("kind", ["asyncmigrate", "naive", "pipe"])
def test_each_kind_copies_and_verifies(pair: FakePair, kind: str) -> None:
    """Every measured kind copies the images and the destination records the source's hash."""
    pair.reset()
    ids = pair.seed(9, 2, 3 * MiB + 5)
    result = measure(pair, {"kind": kind, "image_ids": ids, "hash": "sha512" if kind == "pipe" else ["md5"]})
    assert "error" not in result, result
    assert result["bytes"] == 2 * (3 * MiB + 5)
    assert result["dst_active"] == 2
    assert result["hwm_kib"] >= result["rss_before_kib"] > 0


def test_child_reports_errors_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """A failing measurement prints an ``error`` line instead of a traceback."""
    assert child_main(["child", json.dumps({"kind": "nonsense"})]) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "unknown kind" in out["error"]


def test_targets_report_unmeasured_as_none() -> None:
    """Targets without their measurements are 'not measured', never met or missed."""
    rows = report.targets({})
    assert rows and all(r["met"] is None for r in rows)


def test_runner_smoke(tmp_path: Path) -> None:
    """A tiny run writes the JSON with results and targets, and the table names the variants."""
    code = run_main(
        [
            "--quick",
            "--only",
            "single",
            "--variants",
            "single/pipe,single/am-server",
            "--single-size",
            "8",
            "--output",
            str(tmp_path),
            "--retries-on-load",
            "0",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    assert {r["key"] for r in data["results"]} == {"single/pipe", "single/am-server"}
    assert "asyncmigrate verify=server" in data["table"]
    assert any(t["met"] is not None for t in data["targets"])


# -- many small images on the real pair (benchmarks/realsmall.py) ----------------

_LOG = """\
2026-11-29 20:13:52.442 14997 WARNING glance.api.v2.images [None req-c9 - - - - - -] Could not find schema properties
127.0.0.1 - - [29/Nov/2026:20:13:52 +0000] "GET /versions HTTP/1.1" 200 1698 "-" "Python/3.11 aiohttp/3.14.5"
127.0.0.1 - - [29/Nov/2026:20:13:52 +0000] "GET /v2/images?limit=1 HTTP/1.1" 200 1698 "-" "Python/3.11 aiohttp/3.14.5"
127.0.0.1 - - [29/Nov/2026:20:13:52 +0000] "GET /v2/images?visibility=all&member_status=all&os_hidden=false&limit=1000 HTTP/1.1" 200 9 "-" "-"
127.0.0.1 - - [29/Nov/2026:20:13:53 +0000] "POST /v2/images HTTP/1.1" 201 1200 "-" "-"
127.0.0.1 - - [29/Nov/2026:20:13:53 +0000] "PUT /v2/images/0b1e3bde-5b0a-4c47-9d6b-6e1f1f0c2a11/file HTTP/1.1" 204 0 "-" "-"
127.0.0.1 - - [29/Nov/2026:20:13:53 +0000] "GET /v2/images/0b1e3bde-5b0a-4c47-9d6b-6e1f1f0c2a11 HTTP/1.1" 200 1300 "-" "-"
127.0.0.1 - - [29/Nov/2026:20:13:53 +0000] "GET /v2/images/0b1e3bde-5b0a-4c47-9d6b-6e1f1f0c2a11/members HTTP/1.1" 200 9 "-" "-"
127.0.0.1 - - [29/Nov/2026:20:13:53 +0000] "GET /v2/images/0b1e3bde-5b0a-4c47-9d6b-6e1f1f0c2a12 HTTP/1.1" 404 9 "-" "-"
"""  # noqa: E501


def test_access_log_lines_are_parsed_and_classified() -> None:
    """gunicorn access lines become requests by kind (other log lines are skipped); listings keep their limit."""
    requests = [r for r in map(realsmall.parse_line, _LOG.splitlines()) if r is not None]
    assert [realsmall.kind(r) for r in requests] == [
        "discovery", "probe", "listing", "create", "upload", "read", "members", "read",
    ]  # fmt: skip
    counts = realsmall.tally(requests)
    assert counts["total"] == 8 and counts["per_run"] == 3
    assert counts["listing_limits"] == {"1000": 1}
    assert counts["errors"] == {"GET read 404": 1}


def test_access_log_reads_only_what_came_after_the_mark(tmp_path: Path) -> None:
    """Requests logged before the mark are not counted."""
    path = tmp_path / "dst.log"
    lines = _LOG.splitlines(keepends=True)
    path.write_text("".join(lines[:4]))
    log = realsmall.AccessLog(path)
    mark = log.mark()
    with open(path, "a") as f:
        f.writelines(lines[4:])
    assert [realsmall.kind(r) for r in log.since(mark, settle=0.01)][:2] == ["create", "upload"]
    assert len(log.since(mark, settle=0.01)) == 5


def test_seeded_images_never_look_like_a_disk_format() -> None:
    """Seed data has the asked length, an ASCII head and no MBR signature at 510 (Glance refuses those as raw)."""
    for size in (0, 100, 511, 512, 1024, 70_000):
        data = realsmall.payload(size)
        assert len(data) == size
        assert data[510:512] != b"\x55\xaa"
    assert realsmall.payload(1024).startswith(b"asyncmigrate benchmark image")


def test_minimal_client_copies_and_verifies(pair: FakePair) -> None:
    """The minimal client lists by name prefix, copies every image it found and checks the recorded hash."""
    pair.reset()
    pair.seed(11, 5, 1024)
    pair.seed(12, 2, 1024)  # another prefix: not taken
    result = measure(pair, {"kind": "minimal", "prefix": "bench-11-", "concurrency": 3, "count": 5})
    assert "error" not in result, result
    assert result["images"] == 5 and result["bytes"] == 5 * 1024
    assert result["dst_active"] == 5


def test_real_small_table_and_targets() -> None:
    """The table shows both sides, the ratio and the no-op re-run; the no-op target needs 1,000 images."""
    side = {
        "images_s": 10.0, "samples_images_s": [9.0, 11.0], "dst_per_image": 3.0, "src_per_image": 2.0,
        "dst_per_run": 7, "src_per_run": 7, "dst_kinds": {"create": 5}, "src_kinds": {"download": 5},
        "glance_cpu_per_image_ms": 80.0, "client_cpu_s": 0.2, "listing_limits": ["1000"],
    }  # fmt: skip
    noop = {"images": 500, "seconds": 2.0, "dst_requests": 7, "src_requests": 507, "dst_kinds": {"listing": 2}}
    rs = {
        "count": 5, "size": 1024, "concurrency": 8, "rounds": 2, "seed_images_s": 12.0,
        "summary": {"asyncmigrate": side, "minimal": {**side, "images_s": 12.5}, "ratio": 0.8,
                    "noop": {**noop, "src_kinds": {}, "listing_limits": ["1000"]}},
    }  # fmt: skip
    text = report.real_small_table(rs)
    assert "| 0.80 |" in text and "no-op re-run of 500 images" in text and "3.00 + 7" in text
    rows = {r["target"]: r for r in report.real_small_targets(rs)}
    assert rows["(real) fresh copy: destination requests per image"]["met"] is True
    assert rows["(real) no-op re-run of ≥ 1,000 images: destination requests"]["met"] is None
    assert rows["(real) listing pages of 1,000 (smallest limit asked)"]["met"] is True
    assert all(r["met"] is None for r in report.real_small_targets(None))


@pytest.mark.realglance
@pytest.mark.timeout(600)
def test_real_small_counts_requests_on_the_real_pair() -> None:
    """On the real pair, each round's requests are counted from the access logs: per image, asyncmigrate and
    the minimal client each create, upload and read once at the destination; the no-op re-run creates nothing."""
    env = harness_env(start=True, log=lambda _msg: None)
    assert not isinstance(env, str), env
    out = realsmall.run_real_small(env, count=3, rounds=1, concurrency=2, patience=0.0, log=lambda _msg: None)
    am, mini = out["rounds_results"]
    for r in (am, mini, out["noop"]):
        assert "error" not in r, r
    assert (am["side"], mini["side"]) == ("asyncmigrate", "minimal")
    for r in (am, mini):
        assert {k: r["dst"]["kinds"].get(k) for k in ("create", "upload", "read")} == dict.fromkeys(
            ("create", "upload", "read"), 3
        )
        assert r["src"]["kinds"]["download"] == 3
    assert mini["dst"]["total"] == 9
    assert am["dst"]["listing_limits"] and set(am["dst"]["listing_limits"]) == {"1000"}
    noop = out["noop"]
    assert noop["images"] == 6
    assert not {"create", "upload", "read"} & set(noop["dst"]["kinds"])
    assert out["summary"]["noop"]["dst_requests"] == noop["dst"]["total"]


def test_startup_is_measured_per_command() -> None:
    """Each start-up command runs as its own process; the table and the target read its medians."""
    st = startup.measure_startup(repeats=1)
    assert set(startup.COMMANDS) <= set(st)
    for label in startup.COMMANDS:
        assert 0 < st[label]["cpu_min"] <= st[label]["wall_min"] * 2  # CPU of the child, not of this process
    assert "`asyncmigrate --version`" in report.startup_table(st)
    (row,) = report.startup_targets(st)
    assert row["value"] == max(st[label]["wall_median"] for label in startup.COMMANDS)


def test_metrics_benchmark_scrapes_the_on_variant_only(pair: FakePair) -> None:
    """One 'on' run of the metrics benchmark is scraped while it copies; the 'off' run serves nothing."""
    from benchmarks import metrics

    on = metrics.run_once(pair, 3, 4 * MiB, metrics=True)
    off = metrics.run_once(pair, 3, 4 * MiB, metrics=False)
    assert on["images"] == off["images"] == 3 and on["bytes"] == off["bytes"] == 3 * 4 * MiB
    assert "scrapes" in on and "scrapes" not in off
