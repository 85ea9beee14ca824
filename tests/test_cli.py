"""The command line as operators meet it: exit codes, one-line errors, the report."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import anyio

from tests.conftest import Clouds, write_clouds_yaml


async def _cli(*args: str, clouds_yaml: Path, cwd: Path | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env, cwd=cwd)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _one_clean_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("asyncmigrate: error:")


async def test_copy_with_report_exits_zero(clouds: Clouds, tmp_path: Path) -> None:
    """A good run exits 0, prints a summary and writes one report entry per image."""
    image = clouds.src.add_image(os.urandom(5000), name="n", disk_format="raw", container_format="bare")
    report = tmp_path / "r.json"
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--report", str(report), clouds_yaml=clouds.clouds_yaml
    )
    assert code == 0, err
    assert "1 copied" in out
    data = json.loads(report.read_text())
    assert data["summary"]["exit_code"] == 0
    (entry,) = data["images"]
    assert entry["id"] == image["id"] and entry["outcome"] == "copied" and entry["bytes"] == 5000
    assert {"name", "action", "seconds", "reason", "left_out"} <= set(entry)


async def test_failed_images_exit_one(clouds: Clouds) -> None:
    """An image that conflicts makes the run exit 1."""
    image = clouds.src.add_image(b"a" * 100, name="a", disk_format="raw", container_format="bare")
    clouds.dst.add_image(b"b" * 100, id=image["id"], name="a", disk_format="raw", container_format="bare")
    code, out, _ = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", clouds_yaml=clouds.clouds_yaml)
    assert code == 1 and "1 conflict" in out


async def test_usage_errors_exit_two_with_one_line(clouds: Clouds, tmp_path: Path) -> None:
    """Bad flags, unknown clouds, malformed ids, bad sizes, unwritable reports: exit 2, one line."""
    cases = [
        ["copy", "--src-cloud", "src"],
        ["copy", "--src-cloud", "nope", "--dst-cloud", "dst"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--image", "12345"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--chunk-size", "huge"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--concurrency", "0"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--max-rate", "10"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--max-uploads", "0"],
        ["copy", "--src-cloud", "src", "--dst-cloud", "dst", "--report", str(tmp_path / "no" / "r.json")],
    ]
    clouds.src.add_image(b"x", disk_format="raw", container_format="bare")
    for args in cases:
        code, _, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
        assert code == 2, (args, err)
        _one_clean_line(err)
    assert not clouds.dst.images


async def test_broken_clouds_yaml_exits_two(tmp_path: Path) -> None:
    """A clouds.yaml that is not YAML is a configuration error, not a crash."""
    bad = tmp_path / "clouds.yaml"
    bad.write_text("clouds: [unclosed\n  - : :\n")
    code, _, err = await _cli("copy", "--src-cloud", "a", "--dst-cloud", "b", clouds_yaml=bad)
    assert code == 2, err
    _one_clean_line(err)


async def test_unreachable_endpoint_exits_three(clouds: Clouds, tmp_path: Path) -> None:
    """A cloud whose endpoint refuses connections is fatal: exit 3, one line, nothing changed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    path = write_clouds_yaml(tmp_path / "c.yaml", {"src": clouds.src_server.url, "dst": f"http://127.0.0.1:{dead}"})
    clouds.src.add_image(b"x", disk_format="raw", container_format="bare")
    code, _, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "1", clouds_yaml=path)
    assert code == 3, err
    _one_clean_line(err)


async def test_dry_run_prints_the_plan(clouds: Clouds) -> None:
    """--dry-run lists each image with its action and the bytes to copy."""
    image = clouds.src.add_image(os.urandom(2048), name="plan-me", disk_format="raw", container_format="bare")
    code, out, _ = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--dry-run", clouds_yaml=clouds.clouds_yaml
    )
    assert code == 0
    assert image["id"] in out and "plan-me" in out and "copy" in out and "nothing changed" in out
    assert not clouds.dst.images


async def test_insecure_warns(clouds: Clouds) -> None:
    """--insecure says loudly that TLS is not verified."""
    _, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--insecure", "-q", clouds_yaml=clouds.clouds_yaml
    )
    assert "NOT verified" in out + err


async def test_verify_false_in_clouds_yaml_warns_like_insecure(clouds: Clouds, tmp_path: Path) -> None:
    """A cloud whose clouds.yaml entry says verify: false gets the same warning as --insecure,
    naming that cloud only."""
    text = clouds.clouds_yaml.read_text().replace("  dst:\n", "  dst:\n    verify: false\n")
    path = tmp_path / "insecure.yaml"
    path.write_text(text)
    code, out, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", "-q", clouds_yaml=path)
    assert code == 0, err
    # Warnings go where the log goes (stdout, as every notice: `| tee` keeps them).
    warnings = [line for line in out.splitlines() if "NOT verified" in line]
    assert len(warnings) == 1 and "'dst'" in warnings[0] and "verify: false" in warnings[0], err
    args = ("copy", "--src-cloud", "src", "--dst-cloud", "dst", "-q")
    code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 0 and "NOT verified" not in out + err


async def test_every_event_loop_copies_bit_exact(clouds: Clouds) -> None:
    """--event-loop asyncio and uvloop (the default when installed) both copy, verified, bit-exact."""
    import importlib.util

    choices = ["asyncio"] + (["uvloop", "auto"] if importlib.util.find_spec("uvloop") else ["auto"])
    for choice in choices:
        data = os.urandom(300_000)
        image = clouds.src.add_image(data, name=choice, disk_format="raw", container_format="bare")
        code, _, err = await _cli(
            "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--image", image["id"],
            "--event-loop", choice, "-v", "--chunk-size", "64KiB", clouds_yaml=clouds.clouds_yaml,
        )  # fmt: skip
        assert code == 0, err
        expected = "uvloop" if choice == "auto" and len(choices) == 3 else choice.replace("auto", "asyncio")
        assert f"event loop: {expected}" in err
        assert clouds.dst.data(image["id"]) == data


async def test_store_filter_on_a_single_store_source_is_a_usage_error(tmp_path: Path) -> None:
    """--store on a cloud without stores (GET /v2/info/stores 404) is exit 2 with one clear line,
    for copy (plan copy runs the same check) and verify, and nothing is done; an unknown store of
    a multi-store cloud too."""
    from tests.fakeglance import FakeGlance, FakeServer

    src, dst = FakeGlance(stores=None), FakeGlance()
    src.add_image(b"x" * 100, disk_format="raw", container_format="bare")
    async with FakeServer(src) as s_srv, FakeServer(dst) as d_srv:
        path = write_clouds_yaml(tmp_path / "c.yaml", {"src": s_srv.url, "dst": d_srv.url})
        pair = ("--src-cloud", "src", "--dst-cloud", "dst")
        for command in (["copy", *pair], ["verify", *pair]):
            code, _, err = await _cli(*command, "--store", "fast", clouds_yaml=path)
            assert code == 2, (command, err)
            _one_clean_line(err)
            assert "--store" in err and "not multi-store" in err
        code, _, err = await _cli(
            "copy", "--src-cloud", "dst", "--dst-cloud", "src", "--store", "nope", clouds_yaml=path
        )
        assert code == 2 and "unknown store 'nope'" in err and "fast" in err, err
    assert not dst.images and all(r.method == "GET" for r in dst.requests + src.requests)


async def test_each_shard_has_its_own_default_journal(clouds: Clouds, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two shards of one job on one host keep separate default journals, each recording only
    its own images (so neither reads the other's images in flight as a crash's leftovers)."""
    import sqlite3

    from asyncmigrate.selection import shard_of

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    ids = [clouds.src.add_image(os.urandom(100), disk_format="raw", container_format="bare")["id"] for _ in range(8)]
    for k in (0, 1):
        code, _, err = await _cli(
            "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--shard", f"{k}/2", clouds_yaml=clouds.clouds_yaml
        )
        assert code == 0, err
    journals = sorted((tmp_path / "state" / "asyncmigrate").glob("*.sqlite"))
    assert len(journals) == 2, journals
    for journal in journals:
        with sqlite3.connect(journal) as db:
            recorded = {row[0] for row in db.execute("SELECT id FROM images")}
        assert len({shard_of(i, 2) for i in recorded}) == 1
    assert sorted(clouds.dst.images) == sorted(ids)
