"""Operator commands end to end on the real Glance pair: plan, verify, a copy
with --project-map (the destination playing another cloud with other project
ids), and two shards that together copy everything exactly once."""

from __future__ import annotations

import json
import uuid

import pytest
import seed

from .conftest import Pair

pytestmark = pytest.mark.realglance

SRC_TEAM = "e4e4e4e4e4e44e4e8e4e4e4e4e4e4e01"
SRC_FRIEND = "e4e4e4e4e4e44e4e8e4e4e4e4e4e4e02"
DST_TEAM = "f5f5f5f5f5f54f5f8f5f5f5f5f5f5f01"
DST_FRIEND = "f5f5f5f5f5f54f5f8f5f5f5f5f5f5f02"
COPY = ["--src-cloud", "harness-src", "--dst-cloud", "harness-dst"]


def _seed(pair: Pair, prefix: str, n: int, **attrs: object) -> list[str]:
    return [
        pair.src.create(
            seed.raw_image(200_000 + i, hash(prefix) % 1000 + i),
            name=f"{prefix}-{i}",
            disk_format="raw",
            container_format="bare",
            **attrs,
        )["id"]
        for i in range(n)
    ]


def test_plan_then_copy_then_verify(pair: Pair) -> None:
    """plan lists what copy will do; after the copy verify says the catalogs match; a change is caught."""
    ids = _seed(pair, f"op-{uuid.uuid4().hex[:6]}", 4)
    name = pair.src.get(ids[0])["name"].rsplit("-", 1)[0] + "-*"  # type: ignore[index]
    plan = pair.cli("plan", "copy", *COPY, "--name", name, "--output", "json", report=False)
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert sorted(i["id"] for i in doc["images"]) == sorted(ids)
    assert {i["action"] for i in doc["images"]} == {"copy"}
    assert all(pair.dst.get(i) is None for i in ids)

    assert pair.cli("copy", *COPY, "--name", name).returncode == 0
    check = pair.cli("verify", *COPY, "--name", name)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "catalogs match" in check.stdout

    pair.dst.ok(
        "PATCH",
        f"/v2/images/{ids[1]}",
        [{"op": "add", "path": "/hw_disk_bus", "value": "ide"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    check = pair.cli("verify", *COPY, "--name", name)
    assert check.returncode == 1
    assert check.outcomes()[ids[1]] == "differs" and "hw_disk_bus" in check.stdout


def test_project_map_copy(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Owners and members are rewritten to the destination's project ids; verify agrees with the map."""
    tag = f"pm-{uuid.uuid4().hex[:6]}"
    (image_id,) = _seed(pair, tag, 1, owner=SRC_TEAM, visibility="shared")
    pair.src.ok("POST", f"/v2/images/{image_id}/members", {"member": SRC_FRIEND})
    pair.src.ok("PUT", f"/v2/images/{image_id}/members/{SRC_FRIEND}", {"status": "accepted"})
    mapping = tmp_path_factory.mktemp("map") / "projects.json"
    mapping.write_text(json.dumps({SRC_TEAM: DST_TEAM, SRC_FRIEND: DST_FRIEND}))
    # The pair's record remembers the mapping its copies used: this map gets a journal of its own.
    journal = str(mapping.with_suffix(".sqlite"))
    run = pair.cli("copy", *COPY, "--image", image_id, "--project-map", str(mapping), "--journal", journal)
    assert run.returncode == 0, run.stdout + run.stderr
    dst = pair.dst.get(image_id)
    assert dst is not None and dst["owner"] == DST_TEAM
    assert pair.dst.members(image_id) == {DST_FRIEND: "accepted"}
    assert pair.cli("verify", *COPY, "--image", image_id, "--project-map", str(mapping)).returncode == 0
    assert pair.cli("verify", *COPY, "--image", image_id).returncode == 1  # without the map, owners differ


def test_two_shards_copy_everything_exactly_once(pair: Pair) -> None:
    """--shard 0/2 and --shard 1/2 (two 'machines') together copy each image once."""
    tag = f"shard-{uuid.uuid4().hex[:6]}"
    ids = _seed(pair, tag, 12)
    copied: list[str] = []
    for k in (0, 1):
        run = pair.cli("copy", *COPY, "--name", f"{tag}-*", "--shard", f"{k}/2", "--concurrency", "3")
        assert run.returncode == 0, run.stderr
        copied += [i for i, outcome in run.outcomes().items() if outcome == "copied"]
    assert sorted(copied) == sorted(ids)
    assert all((pair.dst.get(i) or {}).get("status") == "active" for i in ids)
