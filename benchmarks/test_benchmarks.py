"""Checks of the benchmark machinery itself (run: ``.venv/bin/pytest benchmarks``).

They pin behaviour, never timings: the fake records the digests Glance would,
pages like Glance, serves ranges, and the runner writes its table, JSON and plot.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.child import main as child_main
from benchmarks.pattern import MiB, Pattern, digests
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
