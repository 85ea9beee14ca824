"""The log an operator reads after the fact: one stream (or --log-file) with a line for every
image that needs a look; with --log-format json one object a line, on every stream."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Clouds
from tests.test_cli import _cli
from tests.test_preflight import SIGNED

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")


def _add(clouds: Clouds, name: str, **attrs: str) -> str:
    image = clouds.src.add_image(os.urandom(3000), name=name, disk_format="raw", container_format="bare", **attrs)
    return str(image["id"])


async def test_every_image_needing_a_look_has_a_line_where_the_summary_is(clouds: Clouds, tmp_path: Path) -> None:
    """Text mode: each image failed, conflicted, blocked, removed or deleted gets one line with id, name and
    reason on stdout beside the summary; --log-file holds every line of both streams, fatal errors too."""
    removed, deleted = _add(clouds, "old-one"), _add(clouds, "old-two")
    _add(clouds, "stays-1"), _add(clouds, "stays-2")  # the source still holds most of what it gave (record.py)
    assert (await _cli("copy", *PAIR, "-q", clouds_yaml=clouds.clouds_yaml))[0] == 0
    del clouds.src.images[removed], clouds.src.images[deleted]
    conflict, blocked = _add(clouds, "clash"), _add(clouds, "signed", **SIGNED)
    clouds.dst.add_image(b"other", id=conflict, name="clash", disk_format="raw", container_format="bare")
    log = tmp_path / "migration.log"
    code, out, err = await _cli(
        "sync", *PAIR, "--exclude", deleted, "--log-file", str(log), clouds_yaml=clouds.clouds_yaml
    )
    assert code == 1, err
    lines = out.splitlines()
    for outcome, image_id, name in [("conflict", conflict, "clash"), ("blocked", blocked, "signed"),
                                    ("removed", removed, "old-one")]:  # fmt: skip
        (line,) = [line for line in lines if line.startswith(f"{outcome}: {image_id} {name}: ")]
        assert len(line) > len(f"{outcome}: {image_id} {name}: ")  # a reason
    code, out, err = await _cli(
        "sync", *PAIR, "--image", deleted, "--delete-removed", "--log-file", str(log), clouds_yaml=clouds.clouds_yaml
    )
    assert code == 0 and f"deleted: {deleted} old-two: " in out, out + err
    code, _, err = await _cli("copy", "--src-cloud", "nope", "--dst-cloud", "dst", "--log-file", str(log),
                              clouds_yaml=clouds.clouds_yaml)  # fmt: skip
    assert code == 2
    written = log.read_text()
    assert f"deleted: {deleted} old-two: " in written and f"conflict: {conflict} clash: " in written
    assert written.count("done: ") == 2 and err.strip() in written


async def test_json_mode_every_line_of_every_stream_is_an_object_with_time_and_level(clouds: Clouds) -> None:
    """--log-format json: runs, diagnostics (-v), a dry run, verify and fatal errors (a bad flag too) print
    only JSON objects, one a line, each with a time and a level; plan and --dry-run exit 1 on a conflict."""
    clash = _add(clouds, "clash")
    clouds.dst.add_image(b"other", id=clash, name="clash", disk_format="raw", container_format="bare")
    _add(clouds, "fine")
    runs = [
        ("copy", *PAIR, "--log-format", "json", "-v", "--no-journal"),
        ("copy", *PAIR, "--log-format", "json", "--dry-run"),
        ("verify", *PAIR, "--log-format", "json"),
        ("copy", "--src-cloud", "nope", "--dst-cloud", "dst", "--log-format", "json"),
        ("copy", *PAIR, "--log-format", "json", "--bogus"),
    ]
    events: list[dict[str, object]] = []
    for args in runs:
        code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
        assert code in (1, 2), (args, code, out, err)
        lines = [json.loads(line) for line in (out + err).splitlines() if line.strip()]
        assert lines and all({"time", "level", "event"} <= set(line) for line in lines), (args, out, err)
        events += lines
    plans = [e for e in events if e["event"] == "plan"]
    assert {(e["id"], e["action"], e["level"]) for e in plans if e["id"] == clash} == {(clash, "conflict", "error")}
    assert any(e["event"] == "log" and "event loop" in str(e["message"]) for e in events)
    assert [e["level"] for e in events if e["event"] == "error"] == ["error", "error"]
