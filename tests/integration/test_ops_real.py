"""Hours-long runs on the real Glance pair: Prometheus metrics scraped from a real run, a maintenance
window cut mid-run and resumed, and the reports of a real sharded run merged into one."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import seed

from tests.test_metrics import Samples, assert_counters_match_report, samples, total

from .conftest import Pair

pytestmark = pytest.mark.realglance

COPY = ["--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--no-journal"]
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _seed(pair: Pair, tag: str, n: int, size: int) -> dict[str, str]:
    """``n`` raw images named ``tag-i``; {id: sha512 of the data}."""
    out = {}
    for i in range(n):
        data = seed.raw_image(size + i, abs(hash(tag)) % 1000 + i)
        image = pair.src.create(data, name=f"{tag}-{i}", disk_format="raw", container_format="bare")
        out[image["id"]] = hashlib.sha512(data).hexdigest()
    return out


def _arrived(pair: Pair, images: dict[str, str]) -> None:
    for image_id, digest in images.items():
        assert pair.dst.sha512_of_data(image_id) == (pair.src.get(image_id)["size"], digest)  # type: ignore[index]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scraped(pair: Pair, *args: str) -> tuple[list[Samples], Samples, dict[str, Any]]:
    """Run the CLI with ``--metrics-addr`` (lingering for the last scrape), scraped every 0.2 s:
    the scrapes during the run, the one that saw it end, and its report."""
    port = _free_port()
    report = pair.tmp / f"metrics-{uuid.uuid4().hex[:6]}.json"
    cmd = [sys.executable, "-m", "asyncmigrate", *args, "--report", str(report)]
    cmd += ["--metrics-addr", f"127.0.0.1:{port}", "--metrics-linger", "60"]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": pair.env["clouds_yaml"]}
    during: list[Samples] = []
    final: Samples | None = None
    with subprocess.Popen(cmd, env=env, cwd=pair.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 120
        while final is None and time.monotonic() < deadline:
            try:
                with _HTTP.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    found = samples(resp.read().decode())
            except OSError:
                time.sleep(0.2)
                continue
            if total(found, "asyncmigrate_run_end_timestamp_seconds") > 0:
                final = found
            else:
                during.append(found)
                time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert final is not None, "no scrape saw the end of the run"
    return during, final, json.loads(report.read_text())


def test_metrics_scraped_during_a_real_run_end_equal_to_its_report(pair: Pair) -> None:
    """A copy between the real glance servers, scraped every 0.2 s: part-way scrapes show it moving, and
    the final scrape (the run lingers for it) equals the report; each upload is one PUT answered 204."""
    tag = f"met-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 4, 512 * 1024)
    during, final, document = _scraped(
        pair, "copy", *COPY, "--name", f"{tag}-*", "--concurrency", "2", "--max-rate", "512KiB", "--chunk-size", "64KiB"
    )
    assert any(
        0 < total(s, "asyncmigrate_bytes_transferred_total") < sum(512 * 1024 + i for i in range(4)) for s in during
    )
    assert max(total(s, "asyncmigrate_transfers_in_flight") for s in during) >= 1
    assert document["summary"]["outcomes"] == {"copied": 4}
    assert_counters_match_report(final, document["summary"], document["images"])
    puts = total(final, "asyncmigrate_http_requests_total", cloud="destination", method="PUT", code="204")
    assert puts == 4
    assert total(final, "asyncmigrate_http_requests_total", cloud="source", method="GET", code="200") >= 4
    _arrived(pair, images)


def test_metrics_of_real_sync_move_and_verify_runs_end_equal_to_their_reports(pair: Pair) -> None:
    """``--metrics-addr`` on sync, verify and move against the real servers: each run's final scrape
    equals its report (images by outcome, bytes, retries, planned) and names its command."""
    tag = f"mets-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 3, 256 * 1024)
    journal = ("--journal", str(pair.tmp / f"{tag}.sqlite"))
    runs = {
        "sync": ("sync", *COPY[:4], *journal, "--name", f"{tag}-*"),
        "verify": ("verify", *COPY[:4], "--name", f"{tag}-*"),
        "move": (
            "move",
            "--cloud",
            "harness-dst",
            "--from-store",
            "main",
            "--to-store",
            "archive",
            "--name",
            f"{tag}-*",
        ),
    }
    expected = {"sync": {"copied": 3}, "verify": {"match": 3}, "move": {"moved": 3}}
    for command, args in runs.items():
        _, final, document = _scraped(pair, *args)
        assert document["summary"]["outcomes"] == expected[command], (command, document["summary"])
        assert_counters_match_report(final, document["summary"], document["images"])
        assert any(dict(labels).get("command") == command for (name, labels) in final), (command, list(final)[:5])
    _arrived(pair, images)


def test_window_cut_mid_run_then_the_same_command_continues(pair: Pair) -> None:
    """--max-duration passes mid-run: exit 4 saying how many images are left, the images in flight finished
    (none left half-done); the same command in a longer window copies exactly the rest."""
    tag = f"win-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 8, 512 * 1024)
    args = ["copy", *COPY, "--name", f"{tag}-*", "--concurrency", "2", "--max-rate", "1MiB", "--chunk-size", "64KiB"]
    cut = pair.cli(*args, "--max-duration", "2s")
    assert cut.returncode == 4, cut.stdout + cut.stderr
    assert "--max-duration of 2s passed: starting no new image" in cut.stdout  # where the log goes
    assert cut.report is not None
    copied = [i for i, outcome in cut.outcomes().items() if outcome == "copied"]
    left = len(images) - len(copied)
    assert 0 < len(copied) < len(images) and set(cut.outcomes().values()) == {"copied"}
    assert f"{left} image(s)" in cut.report["summary"]["incomplete"]
    statuses = {(pair.dst.get(i) or {}).get("status") for i in images}
    assert statuses <= {"active", None}, statuses  # nothing aborted mid-upload
    rest = pair.cli(*args, "--max-duration", "10m")
    assert rest.returncode == 0, rest.stderr
    again = {i for i, outcome in rest.outcomes().items() if outcome == "copied"}
    assert again == set(images) - set(copied)
    _arrived(pair, images)


def test_a_sync_cut_by_its_window_deletes_nothing_and_the_next_one_does(pair: Pair) -> None:
    """``sync --delete-removed`` whose window passes mid-run: exit 4, its listing cut, so no removal
    is judged — the image the source deleted stays at the real destination; the same sync in a
    longer window copies the rest and deletes it (the source still holds most of the record)."""
    tag = f"swin-{uuid.uuid4().hex[:6]}"
    first = _seed(pair, f"{tag}-a", 3, 4096)
    journal = ("--journal", str(pair.tmp / f"{tag}.sqlite"))
    sync = ["sync", *COPY[:4], *journal, "--name", f"{tag}-*", "--delete-removed"]
    assert pair.cli(*sync).returncode == 0
    gone = next(iter(first))
    pair.src.ok("DELETE", f"/v2/images/{gone}")
    later = _seed(pair, f"{tag}-b", 8, 512 * 1024)
    slow = ["--concurrency", "2", "--max-rate", "1MiB", "--chunk-size", "64KiB"]
    cut = pair.cli(*sync, *slow, "--max-duration", "2s")
    assert cut.returncode == 4, cut.stdout + cut.stderr
    assert "--max-duration of 2s passed: starting no new image" in cut.stdout
    outcomes = cut.outcomes()
    assert not {"removed", "deleted"} & set(outcomes.values()) and gone not in outcomes, outcomes
    assert 0 < sum(o == "copied" for o in outcomes.values()) < len(later)
    assert (pair.dst.get(gone) or {}).get("status") == "active"  # not deleted on a cut listing
    rest = pair.cli(*sync, *slow, "--max-duration", "10m")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert rest.outcomes()[gone] == "deleted" and pair.dst.get(gone) is None
    _arrived(pair, {**later, **{i: d for i, d in first.items() if i != gone}})


def test_a_move_cut_by_its_window_leaves_the_rest_in_the_old_store_for_the_next_run(pair: Pair) -> None:
    """``move --max-duration`` on the real glance 33: exit 4, the images it started are moved (none
    left in two stores or half-imported), the rest still only in the old store; the same move in
    a longer window moves exactly the rest."""
    tag = f"mwin-{uuid.uuid4().hex[:6]}"
    ids = [
        pair.src.create(seed.raw_image(256 * 1024 + i, 77 + i), store="fast", name=f"{tag}-{i}",
                        disk_format="raw", container_format="bare")["id"]
        for i in range(10)
    ]  # fmt: skip
    move = ["move", "--cloud", "harness-src", "--from-store", "fast", "--to-store", "slow", "--name", f"{tag}-*"]
    cut = pair.cli(*move, "--concurrency", "1", "--max-duration", "1s")
    assert cut.returncode == 4, cut.stdout + cut.stderr
    moved = {i for i, outcome in cut.outcomes().items() if outcome == "moved"}
    assert 0 < len(moved) < len(ids) and set(cut.outcomes().values()) == {"moved"}, cut.outcomes()
    stores = {i: (pair.src.get(i) or {}).get("stores") for i in ids}
    assert {stores[i] for i in moved} == {"slow"} and {stores[i] for i in set(ids) - moved} == {"fast"}, stores
    rest = pair.cli(*move, "--max-duration", "10m")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert set(rest.outcomes()) == set(ids) - moved and set(rest.outcomes().values()) == {"moved"}
    assert {(pair.src.get(i) or {}).get("stores") for i in ids} == {"slow"}


def test_a_real_sharded_run_merges_into_one_report(pair: Pair) -> None:
    """Three shards of a real copy write their reports; report merge gives the whole job's totals (exit 0),
    and names the shard whose report is missing (exit 1)."""
    tag = f"mrg-{uuid.uuid4().hex[:6]}"
    images = _seed(pair, tag, 9, 100_000)
    reports: list[Path] = []
    for k in range(3):
        path = pair.tmp / f"{tag}-{k}.json"
        run = pair.cli("copy", *COPY, "--name", f"{tag}-*", "--shard", f"{k}/3", "--report", str(path), report=False)
        assert run.returncode == 0, run.stderr
        assert json.loads(path.read_text())["summary"]["shard"] == f"{k}/3"
        reports.append(path)
    merged = pair.cli("report", "merge", *map(str, reports), "--output", "json", report=False)
    assert merged.returncode == 0, merged.stderr
    summary = json.loads(merged.stdout)
    assert summary["images"] == 9 and summary["outcomes"] == {"copied": 9} and summary["failed"] == 0
    assert summary["bytes"] == sum(100_000 + i for i in range(9)) and summary["shards"]["missing"] == []
    partial = pair.cli("report", "merge", *map(str, reports[:2]), report=False)
    assert partial.returncode == 1 and "missing: shard 2/3 (no report)" in partial.stdout
    _arrived(pair, images)
