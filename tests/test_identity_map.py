"""Identity across clouds, as the pair remembers it: a run with another project map (or none) than
the pair's copies used is refused at once; an owner or member that is not a project in the
destination's Keystone is caught before anything is written; a member left out for want of a
mapping is never silent — refused, or left out by --drop-unmapped-members and still named."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.conftest import Clouds
from tests.fakeglance import ADMIN_PROJECT
from tests.fakekeystone import GuardedClouds, guarded_clouds

PAIR = ("--src-cloud", "src", "--dst-cloud", "dst")
SRC_TEAM, DST_TEAM, FRIEND, DST_FRIEND, STRANGER = "a" * 32, "d" * 32, "b" * 32, "e" * 32, "c" * 32


async def _cli(clouds_yaml: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}
    proc = await anyio.run_process([sys.executable, "-m", "asyncmigrate", *args], check=False, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("asyncmigrate: error:"), err
    return lines[0]


def _shared(clouds: Clouds | GuardedClouds, *members: str) -> str:
    image = clouds.src.add_image(
        os.urandom(2000), name="team-image", disk_format="raw", container_format="bare", owner=SRC_TEAM,
        visibility="shared",
    )  # fmt: skip
    for member in members:
        clouds.src.add_member(image["id"], member, "accepted")
    return str(image["id"])


async def test_a_run_with_another_mapping_than_the_pairs_is_refused(clouds: Clouds, tmp_path: Path) -> None:
    """After a copy with --project-map, plan sync, sync and copy without it (or with another map, or
    --no-owner) exit 2 with one line naming the difference and write nothing; --change-mapping runs."""
    image = _shared(clouds, FRIEND)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({SRC_TEAM: DST_TEAM, FRIEND: DST_FRIEND}))
    code, _, err = await _cli(clouds.clouds_yaml, "copy", *PAIR, "--project-map", str(mapping), "-q")
    assert code == 0, err
    assert clouds.dst.get(image)["owner"] == DST_TEAM
    other = tmp_path / "other.json"
    other.write_text(json.dumps({SRC_TEAM: "f" * 32, FRIEND: DST_FRIEND}))
    before = len(clouds.dst.requests)
    none = "made with --project-map (2 projects); this run has none"
    cases = [
        (("plan", "sync", *PAIR), none),
        (("sync", *PAIR), none),
        (("copy", *PAIR), none),
        (("sync", *PAIR, "--project-map", str(other)), f"{SRC_TEAM} → '{'f' * 32}' (was '{DST_TEAM}')"),
        (("sync", *PAIR, "--project-map", str(mapping), "--no-owner"), "this run has --no-owner"),
    ]
    for args, difference in cases:
        code, _, err = await _cli(clouds.clouds_yaml, *args)
        line = _error_line(err)
        assert code == 2 and difference in line and "--change-mapping" in line, (args, err)
    assert not [r for r in clouds.dst.requests[before:] if r.method != "GET"]
    assert clouds.dst.get(image)["owner"] == DST_TEAM
    code, _, err = await _cli(clouds.clouds_yaml, "sync", *PAIR, "--project-map", str(other), "--change-mapping")
    assert code == 0, err
    assert clouds.dst.get(image)["owner"] == "f" * 32


@pytest.fixture
async def kc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GuardedClouds]:
    """Source and destination behind one fake Keystone that knows the destination's projects."""
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    async with guarded_clouds(tmp_path / "clouds.yaml") as clouds:
        clouds.keystone.projects.update({DST_TEAM: "team", DST_FRIEND: "friend"})
        yield clouds


async def test_an_owner_or_member_unknown_to_the_destinations_keystone_is_caught(
    kc: GuardedClouds, tmp_path: Path
) -> None:
    """A map that names projects the destination's Keystone does not have: plan shows each image blocked
    with the reason, copy refuses them (exit 1) and creates nothing; images it maps to real projects are
    copied; each project is asked about once."""
    wrong_owner, wrong_member = _shared(kc), _shared(kc, STRANGER)
    right = str(
        kc.src.add_image(os.urandom(100), name="mine", disk_format="raw", container_format="bare", owner=FRIEND)["id"]
    )
    kc.src.images[wrong_owner].owner = "0" * 32
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"0" * 32: "9" * 32, SRC_TEAM: DST_TEAM, FRIEND: DST_FRIEND, STRANGER: "8" * 32}))
    flags = ("--project-map", str(mapping), "--journal", str(tmp_path / "j.sqlite"))
    code, out, err = await _cli(kc.clouds_yaml, "plan", "copy", *PAIR, *flags, "--output", "json")
    assert code == 1, err  # a plan with rows that would not arrive exits 1, as the run would
    planned = {e["id"]: e for e in json.loads(out)["images"]}
    assert planned[wrong_owner]["action"] == "blocked" and "9" * 32 in planned[wrong_owner]["reason"]
    assert "not a project at the destination" in planned[wrong_owner]["reason"]
    assert planned[wrong_member]["action"] == "blocked" and "8" * 32 in planned[wrong_member]["reason"]
    assert planned[right]["action"] == "copy"
    report = tmp_path / "r.json"
    since = len(kc.keystone.requests)
    code, _, err = await _cli(kc.clouds_yaml, "copy", *PAIR, *flags, "-q", "--report", str(report))
    assert code == 1, err
    outcomes = {e["id"]: e["outcome"] for e in json.loads(report.read_text())["images"]}
    assert outcomes == {wrong_owner: "blocked", wrong_member: "blocked", right: "copied"}
    assert sorted(kc.dst.images) == [right]
    asked = [r.path for r in kc.keystone.requests[since:] if r.path.startswith("/v3/projects/")]
    assert len(asked) == len(set(asked)) == 4  # each project once in the run


async def test_sync_refuses_a_change_that_names_a_project_the_destination_lacks(
    kc: GuardedClouds, tmp_path: Path
) -> None:
    """An image already copied gains a source member whose mapped project the destination's Keystone
    does not have: sync blocks that image with the reason (exit 1) and writes nothing to it."""
    image = _shared(kc, FRIEND)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({SRC_TEAM: DST_TEAM, FRIEND: DST_FRIEND, STRANGER: "8" * 32}))
    flags = ("--project-map", str(mapping), "--journal", str(tmp_path / "j.sqlite"), "-q")
    code, _, err = await _cli(kc.clouds_yaml, "copy", *PAIR, *flags)
    assert code == 0, err
    kc.src.add_member(image, STRANGER, "accepted")
    kc.src.images[image].properties["note"] = "changed at the source"
    since = len(kc.dst.requests)
    report = tmp_path / "r.json"
    code, _, err = await _cli(kc.clouds_yaml, "sync", *PAIR, *flags, "--report", str(report))
    assert code == 1, err
    (row,) = json.loads(report.read_text())["images"]
    assert row["outcome"] == "blocked" and "8" * 32 in row["reason"], row
    assert "not a project at the destination" in row["reason"]
    assert not [r for r in kc.dst.requests[since:] if r.method != "GET"]
    assert "note" not in kc.dst.get(image)


async def test_plan_says_when_the_destination_cannot_be_asked(clouds: Clouds, tmp_path: Path) -> None:
    """A destination without Keystone (auth_type none) cannot say which projects exist: plan says so
    instead of pretending it checked."""
    _shared(clouds, FRIEND)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({SRC_TEAM: DST_TEAM, FRIEND: DST_FRIEND}))
    code, out, err = await _cli(clouds.clouds_yaml, "plan", "copy", *PAIR, "--project-map", str(mapping))
    assert code == 0, err
    assert "projects not checked: the destination 'dst' has no Keystone to ask" in out


async def test_a_member_left_out_is_never_silent(clouds: Clouds, tmp_path: Path) -> None:
    """A shared image with a member the map lacks: copy refuses it (exit 1, nothing created) unless
    --drop-unmapped-members; verify then counts the left-out member as a difference (exit 1) unless the
    same flag, and still names it; plan sync does not call the image 'already level'; plan and the report
    show the owner and members it gets."""
    image = _shared(clouds, FRIEND, STRANGER)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({SRC_TEAM: DST_TEAM, FRIEND: DST_FRIEND}))
    flags = ("--project-map", str(mapping))
    code, out, err = await _cli(clouds.clouds_yaml, "copy", *PAIR, *flags, "-q")
    assert code == 1 and "1 blocked" in out, out + err
    assert image not in clouds.dst.images
    report = tmp_path / "r.json"
    code, _, err = await _cli(
        clouds.clouds_yaml, "copy", *PAIR, *flags, "--drop-unmapped-members", "-q", "--report", str(report)
    )
    assert code == 0, err
    (entry,) = json.loads(report.read_text())["images"]
    assert entry["owner"] == DST_TEAM and entry["members"] == {DST_FRIEND: "accepted"}
    assert entry["members_left_out"] == [STRANGER] and STRANGER in entry["reason"]
    code, out, _ = await _cli(clouds.clouds_yaml, "verify", *PAIR, *flags)
    assert code == 1 and STRANGER in out and "catalogs differ" in out, out
    code, out, _ = await _cli(clouds.clouds_yaml, "verify", *PAIR, *flags, "--drop-unmapped-members")
    assert code == 0 and STRANGER in out and "catalogs match" in out, out
    code, out, err = await _cli(
        clouds.clouds_yaml, "plan", "sync", *PAIR, *flags, "--drop-unmapped-members", "--output", "json"
    )
    assert code == 0, err
    (planned,) = json.loads(out)["images"]
    assert planned["action"] == "none" and STRANGER in planned["reason"] and planned["reason"] != "already level"
    assert planned["owner"] == DST_TEAM and planned["members"] == {DST_FRIEND: "accepted"}
    assert clouds.dst.get(image)["owner"] == DST_TEAM and ADMIN_PROJECT != DST_TEAM
