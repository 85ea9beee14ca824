"""The errors a newcomer meets first say what is wrong and what to do (each one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Clouds, write_clouds_yaml
from tests.test_cli import _cli, _one_clean_line


async def _error(*args: str, clouds_yaml: Path, cwd: Path | None = None) -> str:
    code, _, err = await _cli(*args, clouds_yaml=clouds_yaml, cwd=cwd)
    assert code == 2, err
    _one_clean_line(err)
    return err


async def test_an_unknown_cloud_names_the_file_read_its_clouds_and_the_closest(tmp_path: Path) -> None:
    """Which clouds.yaml was read and what it defines, with a "did you mean"; or that OS_CLIENT_CONFIG_FILE
    names a missing file and no clouds.yaml exists anywhere looked."""
    path = write_clouds_yaml(tmp_path / "clouds.yaml", {"prod": "http://127.0.0.1:9", "staging": "http://127.0.0.1:9"})
    err = await _error("copy", "--src-cloud", "prdo", "--dst-cloud", "staging", clouds_yaml=path)
    assert f"cloud 'prdo' not found: {path} was read, which defines prod, staging; did you mean 'prod'?" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = await _error("copy", "--src-cloud", "prod", "--dst-cloud", "x", clouds_yaml=empty / "gone.yaml", cwd=empty)
    assert f"OS_CLIENT_CONFIG_FILE names {empty / 'gone.yaml'}, which does not exist" in err
    assert "no clouds.yaml exists (looked in" in err


async def test_a_mistyped_flag_is_named_with_the_flag_meant_and_a_dashed_shard_says_what_is_wrong(
    clouds: Clouds,
) -> None:
    """--dst-clod: "did you mean --dst-cloud?"; --shard -1/2 and 2/2 say K counts from 0 and below N."""
    err = await _error("copy", "--src-cloud", "src", "--dst-clod", "dst", clouds_yaml=clouds.clouds_yaml)
    assert "unrecognized argument --dst-clod (did you mean --dst-cloud?)" in err
    err = await _error("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--shard", "-1/2",
                       clouds_yaml=clouds.clouds_yaml)  # fmt: skip
    assert "--shard -1/2: K counts from 0 and cannot be negative; the shards of 2 are 0/2 and 1/2" in err
    err = await _error("sync", "--src-cloud", "src", "--dst-cloud", "dst", "--shard", "2/2",
                       clouds_yaml=clouds.clouds_yaml)  # fmt: skip
    assert "K must be below N" in err


async def test_a_copy_from_a_cloud_to_itself_is_refused(clouds: Clouds, tmp_path: Path) -> None:
    """The same cloud name, or one Glance reached by two names (127.0.0.1 and localhost), is refused before
    anything is read from it, pointing at `move` for stores of one cloud."""
    err = await _error("copy", "--src-cloud", "dst", "--dst-cloud", "dst", clouds_yaml=clouds.clouds_yaml)
    assert "are the same cloud" in err and "asyncmigrate move" in err
    url = clouds.dst_server.url
    path = write_clouds_yaml(tmp_path / "two.yaml", {"a": url, "b": url.replace("127.0.0.1", "localhost")})
    before = len(clouds.dst.requests)
    err = await _error("sync", "--src-cloud", "a", "--dst-cloud", "b", clouds_yaml=path)
    assert "sync: --src-cloud a and --dst-cloud b reach the same Glance (http://127.0.0.1:" in err
    assert len(clouds.dst.requests) == before
