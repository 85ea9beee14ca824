"""Prometheus metrics (``--metrics-addr``): a subscriber to the progress events whose counters
end equal to the report's figures, served over HTTP for the whole run."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncmigrate import copy_images
from asyncmigrate.metrics import Metrics, parse_addr
from asyncmigrate.progress import Event
from asyncmigrate.report import RunResult
from tests.conftest import Clouds, fast_config
from tests.test_cli import _cli

# The series the issue names (the spec); the tool may export more, never fewer.
SPEC = {
    "asyncmigrate_images_total": "counter",
    "asyncmigrate_bytes_transferred_total": "counter",
    "asyncmigrate_images_planned": "gauge",
    "asyncmigrate_bytes_planned": "gauge",
    "asyncmigrate_transfers_in_flight": "gauge",
    "asyncmigrate_retries_total": "counter",
    "asyncmigrate_http_requests_total": "counter",
    "asyncmigrate_run_start_timestamp_seconds": "gauge",
    "asyncmigrate_last_image_done_timestamp_seconds": "gauge",
}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """{(sample name, labels): value} of an exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def assert_counters_match_report(found: Samples, summary: dict[str, object], images: list[dict[str, object]]) -> None:
    """images_total by outcome, bytes and retries equal the report's figures."""
    outcomes = {dict(ls)["outcome"]: int(v) for (n, ls), v in found.items() if n == "asyncmigrate_images_total"}
    assert outcomes == summary["outcomes"]
    assert total(found, "asyncmigrate_bytes_transferred_total") == summary["bytes"]  # no retry rewound bytes here
    # An image's attempts beyond its first (verify makes none: 0).
    assert total(found, "asyncmigrate_retries_total") == sum(max(int(str(i["attempts"])) - 1, 0) for i in images)
    assert total(found, "asyncmigrate_images_planned") == summary["images"]


def _seed(clouds: Clouds, n: int, size: int = 20_000) -> list[str]:
    return [
        clouds.src.add_image(os.urandom(size + i), name=f"p-{i}", disk_format="raw", container_format="bare")["id"]
        for i in range(n)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_series_is_announced_before_it_has_samples() -> None:
    """A fresh registry already announces every series (HELP and TYPE), and shows 0 for the unlabelled ones."""
    text = Metrics("copy").exposition().decode()
    for name, kind in SPEC.items():
        assert f"# HELP {name} " in text and f"# TYPE {name} {kind}\n" in text, name
    found = samples(text)
    assert total(found, "asyncmigrate_bytes_transferred_total") == 0
    assert total(found, "asyncmigrate_run_start_timestamp_seconds") == pytest.approx(time.time(), abs=60)
    assert not any(n.endswith("_created") for n, _ in found)
    assert SPEC.keys() <= Metrics("copy").names()


def test_addresses_parse_and_bad_ones_are_usage_errors() -> None:
    """HOST:PORT, [v6]:PORT and :PORT (every interface) parse; a missing or bad port is refused."""
    from asyncmigrate.errors import UsageError

    assert parse_addr("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_addr("[::1]:9100") == ("::1", 9100) and parse_addr(":9100") == ("0.0.0.0", 9100)
    for bad in ("9100", "host:", "host:http", "127.0.0.1:70000", "127.0.0.1:0"):
        with pytest.raises(UsageError, match="--metrics-addr"):
            parse_addr(bad)


async def test_counters_follow_events_and_count_every_request_once(clouds: Clouds) -> None:
    """Fed a copy's events (one upload refused once with 503): outcomes, retries by bounded reason, bytes
    sent including the rewound attempt, and one HTTP sample per request each cloud's server saw."""
    _seed(clouds, 3)
    clouds.dst.faults.fail_next("PUT", r"/file$", status=503, retry_after=0)
    metrics = Metrics("copy", shard="1/4")
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        metrics(event)

    run: RunResult = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=emit)
    found = samples(metrics.exposition().decode())
    assert all(dict(ls).get("shard") == "1/4" for _, ls in found)  # every series carries the shard
    summary = run.summary()
    outcomes = {dict(ls)["outcome"]: int(v) for (n, ls), v in found.items() if n == "asyncmigrate_images_total"}
    assert outcomes == summary["outcomes"] == {"copied": 3}
    assert total(found, "asyncmigrate_images_total", command="copy") == 3
    assert total(found, "asyncmigrate_retries_total", reason="http_5xx") == 1 == sum(r.attempts - 1 for r in run.images)
    rewound = sum(e.rewound for e in events if type(e).__name__ == "Retrying")
    assert total(found, "asyncmigrate_bytes_transferred_total") == run.bytes + rewound
    for cloud, fake in (("source", clouds.src), ("destination", clouds.dst)):
        seen = Counter((r.method, str(r.status)) for r in fake.requests)
        counted = Counter(
            {
                (dict(ls)["method"], dict(ls)["code"]): int(v)
                for (n, ls), v in found.items()
                if n == "asyncmigrate_http_requests_total" and dict(ls)["cloud"] == cloud
            }
        )
        assert counted == seen, cloud
    assert Counter(dict(ls)["code"] for (n, ls) in found if n == "asyncmigrate_http_requests_total")["503"] == 1
    assert total(found, "asyncmigrate_transfers_in_flight") == 0
    assert total(found, "asyncmigrate_last_image_done_timestamp_seconds") >= total(
        found, "asyncmigrate_run_start_timestamp_seconds"
    )


def _scrape(url: str) -> str:
    with _HTTP.open(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")  # asked for nothing else
        return str(resp.read().decode())


async def test_cli_serves_metrics_during_the_run_and_lingers_for_the_final_scrape(
    clouds: Clouds, tmp_path: Path
) -> None:
    """copy --metrics-addr: a scrape during the run shows it part-way; after the last image the process keeps
    serving until one scrape has read the final values (--metrics-linger), which equal the report's."""
    ids = _seed(clouds, 6, size=60_000)
    for image_id in ids:
        clouds.src.faults.slow_download(image_id, 300_000)  # ~0.2 s each
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    report = tmp_path / "r.json"
    args = [
        "copy",
        "--src-cloud",
        "src",
        "--dst-cloud",
        "dst",
        "--concurrency",
        "2",
        "--chunk-size",
        "8KiB",
        "--no-journal",
    ]
    args += ["--metrics-addr", f"127.0.0.1:{port}", "--metrics-linger", "60", "--report", str(report)]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    during: list[Samples] = []
    async with await anyio.open_process([sys.executable, "-m", "asyncmigrate", *args], env=env) as proc:
        with anyio.fail_after(60):
            while True:  # scrape every 0.1 s until a scrape shows the run ended
                try:
                    found = samples(await anyio.to_thread.run_sync(_scrape, url))
                except OSError:
                    await anyio.sleep(0.1)  # not listening yet
                    continue
                if total(found, "asyncmigrate_run_end_timestamp_seconds") > 0:
                    final = found
                    break
                during.append(found)
                await anyio.sleep(0.1)
            t0 = time.monotonic()
            code = await proc.wait()
            lingered = time.monotonic() - t0
    assert code == 0 and lingered < 30  # the final scrape ended the linger
    part_way = [s for s in during if 0 < total(s, "asyncmigrate_images_total") < len(ids)]
    assert part_way, "no scrape saw the run part-way"
    assert max(total(s, "asyncmigrate_transfers_in_flight") for s in during) >= 1
    document = json.loads(report.read_text())
    assert_counters_match_report(final, document["summary"], document["images"])
    assert total(final, "asyncmigrate_run_end_timestamp_seconds") > 0


async def test_a_port_in_use_is_one_usage_line_before_anything_is_done(clouds: Clouds) -> None:
    """--metrics-addr on a port another process listens on (copy, sync, verify, move): exit 2, one line,
    no request sent to any cloud."""
    _seed(clouds, 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        addr = ["--metrics-addr", f"127.0.0.1:{port}"]
        pair = ["--src-cloud", "src", "--dst-cloud", "dst", *addr]
        commands = [["copy", *pair], ["sync", *pair], ["verify", *pair]]
        commands.append(["move", "--cloud", "src", "--from-store", "a", "--to-store", "b", *addr])
        for command in commands:
            code, _, err = await _cli(*command, clouds_yaml=clouds.clouds_yaml)
            assert code == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"asyncmigrate: error: --metrics-addr 127.0.0.1:{port}")
    assert clouds.src.requests == [] and clouds.dst.requests == []
