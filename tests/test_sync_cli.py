"""The sync command as operators meet it: copy and sync share the pair's default
journal, plan sync prints each delta, impossible flag sets exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from tests.conftest import Clouds

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")


async def _cli(clouds: Clouds, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _add(clouds: Clouds, name: str) -> str:
    return str(clouds.src.add_image(os.urandom(2000), name=name, disk_format="raw", container_format="bare")["id"])


async def test_copy_then_sync_share_the_pairs_journal(clouds: Clouds, tmp_path: Path) -> None:
    """Images copied by `copy` (default journal) and deleted at the source are deleted by `sync --delete-removed`."""
    keep, gone = _add(clouds, "keep"), _add(clouds, "gone")
    code, _, err = await _cli(clouds, "copy", *PAIR, "-q")
    assert code == 0, err
    del clouds.src.images[gone]
    clouds.src.images[keep].name = "kept and renamed"
    report = tmp_path / "sync.json"
    code, out, err = await _cli(clouds, "sync", *PAIR, "-q", "--delete-removed", "--report", str(report))
    assert code == 0, err
    assert "1 updated" in out and "1 deleted" in out
    entries = {e["id"]: e for e in json.loads(report.read_text())["images"]}
    assert entries[keep]["outcome"] == "updated" and entries[keep]["changes"] == {"name": ["keep", "kept and renamed"]}
    assert entries[gone]["outcome"] == "deleted" and entries[gone]["name"] == "gone"
    assert list(clouds.dst.images) == [keep]


async def test_plan_sync_prints_each_delta_as_json(clouds: Clouds) -> None:
    """plan sync --output json names each image's action and its changes from what to what."""
    image = _add(clouds, "before")
    assert (await _cli(clouds, "copy", *PAIR, "-q"))[0] == 0
    clouds.src.images[image].tags = ["new"]
    code, out, err = await _cli(clouds, "plan", "sync", *PAIR, "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    (entry,) = doc["images"]
    assert entry["action"] == "update" and entry["changes"] == {"tags": [[], ["new"]]}
    assert doc["totals"]["actions"] == {"update": 1}
    assert clouds.dst.get(image)["tags"] == []


async def test_sync_table_and_exit_codes(clouds: Clouds) -> None:
    """A removed image is reported with exit 0; a protected one under --delete-removed is a conflict, exit 1."""
    gone, _, _ = _add(clouds, "gone"), _add(clouds, "stays-1"), _add(clouds, "stays-2")
    clouds.src.images[gone].protected = True
    assert (await _cli(clouds, "copy", *PAIR, "-q"))[0] == 0
    del clouds.src.images[gone]
    code, out, err = await _cli(clouds, "sync", *PAIR, "-q")
    assert code == 0 and "1 removed" in out, err
    code, out, _ = await _cli(clouds, "sync", *PAIR, "-q", "--delete-removed")
    assert code == 1 and "1 conflict" in out
    code, out, _ = await _cli(clouds, "sync", *PAIR, "--dry-run", "--delete-removed", "--force-protected")
    assert code == 0 and "delete" in out and gone in clouds.dst.images


async def test_impossible_flag_sets_are_usage_errors(clouds: Clouds) -> None:
    """--delete-removed without a journal, or --force-protected alone, exit 2 with one line and change nothing."""
    for flags in (["--delete-removed", "--no-journal"], ["--force-protected"]):
        code, _, err = await _cli(clouds, "sync", *PAIR, *flags)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("asyncmigrate: error:"), err
    assert not clouds.dst.requests


async def test_a_killed_sync_finishes_on_rerun(clouds: Clouds, tmp_path: Path) -> None:
    """kill -9 while sync uploads a new image: nothing removed yet; the re-run levels everything."""
    from asyncmigrate import copy_images
    from tests.conftest import fast_config

    journal = str(tmp_path / "j.sqlite")
    old = [_add(clouds, f"old-{i}") for i in range(4)]
    assert (await copy_images(fast_config(journal=Path(journal)), clouds.src_cloud, clouds.dst_cloud)).failed == 0
    for image_id in old[:3]:
        clouds.src.images[image_id].name += " renamed"
    del clouds.src.images[old[3]]
    data = os.urandom(400_000)
    new = str(clouds.src.add_image(data, name="new", disk_format="raw", container_format="bare")["id"])
    clouds.src.faults.slow_download(new, 100_000)  # about 4 s
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds.clouds_yaml)}
    cmd = [sys.executable, "-m", "asyncmigrate", "sync", *PAIR, "--journal", journal, "--delete-removed", "-q"]
    proc = await anyio.open_process([*cmd, "--chunk-size", "64KiB"], env=env)
    with anyio.fail_after(20):
        while not any(r.status == "saving" for r in clouds.dst.images.values()):
            await anyio.sleep(0.02)
    proc.kill()
    await proc.wait()
    assert old[3] in clouds.dst.images  # removal is judged only after the images: not reached
    clouds.src.faults.slow_download(new, None)
    code, out, err = await _cli(clouds, *cmd[3:])
    assert code == 0, err
    assert "1 deleted" in out and "1 copied" in out
    assert clouds.dst.data(new) == data and old[3] not in clouds.dst.images
    assert all(clouds.dst.get(i)["name"].endswith(" renamed") for i in old[:3])
