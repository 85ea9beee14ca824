"""``report merge``: the reports of a sharded job read back and merged into one summary."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path

import pytest

from asyncmigrate import copy_images
from asyncmigrate.cli import main
from asyncmigrate.report import Report, write_report
from asyncmigrate.selection import Selection, shard_of
from tests.conftest import Clouds, fast_config


def _seed(clouds: Clouds, n: int, shards: int = 4) -> list[str]:
    """``n`` images whose ids fall round-robin into ``shards`` shards: every shard of 4 (or fewer)
    holds one when ``n >= shards``, whatever the random ids would have done."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = str(uuid.uuid4())
        if all(shard_of(candidate, k) == len(ids) % k for k in range(1, shards + 1)):
            ids.append(candidate)
    return [
        clouds.src.add_image(
            os.urandom(3000 + i), id=image_id, name=f"m-{i}", disk_format="raw", container_format="bare"
        )["id"]
        for i, image_id in enumerate(ids)
    ]


async def _shard_report(clouds: Clouds, tmp: Path, k: int, n: int) -> Path:
    config = fast_config(selection=Selection(shard=(k, n)))
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    run.shard = (k, n)  # as the CLI records it
    path = tmp / f"report-{k}.json"
    write_report(path, run, command="copy")
    return path


def _merge(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["report", "merge", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


async def test_report_round_trips_through_its_types(clouds: Clouds, tmp_path: Path) -> None:
    """A written report reads back into the same results, summary and shard."""
    _seed(clouds, 3)
    path = await _shard_report(clouds, tmp_path, 1, 2)
    document = json.loads(path.read_text())
    assert document["summary"]["shard"] == "1/2"
    report = Report.read(path)
    assert report.command == "copy" and report.run.shard == (1, 2)
    again = report.run.summary()
    for key in ("images", "outcomes", "failed", "bytes", "seconds", "exit_code", "shard", "verification"):
        assert again[key] == document["summary"][key], key
    assert [r.to_json() for r in report.run.images] == document["images"]


async def test_every_shard_there_and_clean_exits_zero(
    clouds: Clouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three shards' reports merge into the totals and outcomes of the whole catalog, exit 0;
    the JSON summary has a single report's keys."""
    ids = _seed(clouds, 9)
    paths = [await _shard_report(clouds, tmp_path, k, 3) for k in range(3)]
    code, out, _ = _merge(capsys, *paths)
    assert code == 0, out
    assert "3 of 3 shards (0/3 1/3 2/3)" in out and "done: 9 images (9 copied" in out and "job is complete" in out
    code, out, _ = _merge(capsys, *paths, "--output", "json")
    summary = json.loads(out)
    assert code == 0 and summary["exit_code"] == 0
    assert summary["images"] == 9 and summary["outcomes"] == {"copied": 9} and summary["failed"] == 0
    assert summary["bytes"] == sum(3000 + i for i in range(9))
    single = json.loads(paths[0].read_text())["summary"]
    assert set(single) - {"shard"} <= set(summary)
    assert summary["shards"]["missing"] == [] and summary["claimed_twice"] == {} and summary["failures"] == []
    assert {r.id for p in paths for r in Report.read(p).run.images} == set(ids)


async def test_missing_incomplete_failed_and_twice_claimed_exit_one(
    clouds: Clouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing shard, one that ended incomplete, a failed image and an image in two shards'
    reports are each named, and the merge exits 1."""
    _seed(clouds, 8)
    first = await _shard_report(clouds, tmp_path, 0, 4)
    second = await _shard_report(clouds, tmp_path, 1, 4)
    # Shard 2/4 ended incomplete, with one failure and an image that shard 0/4 reported too.
    report = Report.read(second)
    stolen = dataclasses.replace(Report.read(first).run.images[0])
    failed = dataclasses.replace(report.run.images[0], outcome="failed", reason="HTTP 500 on PUT")
    run = dataclasses.replace(
        report.run, images=[failed, stolen], shard=(2, 4), incomplete="the source listing failed after 3 images"
    )
    third = tmp_path / "report-2.json"
    write_report(third, run, command="copy")
    code, out, _ = _merge(capsys, first, second, third)
    assert code == 1
    assert "missing: shard 3/4 (no report)" in out
    assert "not completed: shard 2/4: incomplete: the source listing failed after 3 images" in out
    assert f"claimed by two shards: {stolen.id} (0/4, 2/4)" in out
    assert f"failed: {failed.id} {failed.name}: HTTP 500 on PUT (shard 2/4)" in out
    assert "NOT complete" in out
    code, out, _ = _merge(capsys, first, second, third, "--output", "json")
    summary = json.loads(out)
    assert code == 1 and summary["exit_code"] == 1 and summary["failed"] == 1
    assert summary["failures"] == [
        {"id": failed.id, "name": failed.name, "outcome": "failed", "reason": "HTTP 500 on PUT", "shard": "2/4"}
    ]
    assert summary["shards"]["missing"] == ["3/4"] and list(summary["shards"]["not_completed"]) == ["2/4"]


async def test_reports_that_are_not_one_job_are_a_usage_error(
    clouds: Clouds, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same shard twice, different shard counts, or a file that is not a report: exit 2, one line."""
    _seed(clouds, 2)
    a = await _shard_report(clouds, tmp_path, 0, 2)
    other = tmp_path / "other"
    other.mkdir()
    b = await _shard_report(clouds, other, 0, 2)
    c = await _shard_report(clouds, other, 1, 3)
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    for args, says in [
        ((a, b), "shard 0/2 has two reports"),
        ((a, c), "split the job differently"),
        ((a, junk), "is not an asyncmigrate report"),
        ((a, tmp_path / "absent.json"), "cannot read the report"),
    ]:
        code, out, err = _merge(capsys, *args)
        assert code == 2 and out == "", (args, out)
        assert len(err.strip().splitlines()) == 1 and says in err, err


async def test_cli_report_records_the_shard(clouds: Clouds, tmp_path: Path) -> None:
    """``copy --shard K/N --report`` writes ``"shard": "K/N"`` in the summary; without --shard it is null."""
    from tests.test_cli import _cli

    _seed(clouds, 2)
    report = tmp_path / "r.json"
    args = ("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--no-journal", "--report", str(report))
    code, _, err = await _cli(*args, "--shard", "1/2", clouds_yaml=clouds.clouds_yaml)
    assert code == 0, err
    assert json.loads(report.read_text())["summary"]["shard"] == "1/2"
    code, _, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 0, err
    assert json.loads(report.read_text())["summary"]["shard"] is None
