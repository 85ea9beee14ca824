"""The quota pre-flight against glance 33 enforcing real Keystone unified limits (ks-dst, oslo.limit).

Each test makes a project of its own in the dst Keystone with tight project limits (the
registered ones are high: see harness/keystone.py), and a cloud for the admin scoped to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import seed

from .conftest import KeystoneClouds, KsCloud, Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB


def _project_with_limits(pair: Pair, dst: KsCloud, limits: dict[str, int]) -> tuple[str, str, Path]:
    """A new project with these project limits, the admin a member of it: (id, cloud name, clouds.yaml)."""
    identity = dst.identity
    keystone = seed.Glance(identity["auth_url"], token=dst.token())
    name = f"quota-{os.urandom(3).hex()}"
    project = keystone.ok("POST", "/projects", {"project": {"name": name, "domain_id": "default"}})["project"]["id"]
    roles = {r["name"]: r["id"] for r in keystone.ok("GET", "/roles")["roles"]}
    keystone.ok("PUT", f"/projects/{project}/users/{identity['admin']['user_id']}/roles/{roles['admin']}")
    registered = identity["limits"]
    keystone.ok("POST", "/limits", {"limits": [
        {"service_id": registered["service_id"], "region_id": registered["region_id"], "project_id": project,
         "resource_name": resource, "resource_limit": value}
        for resource, value in limits.items()
    ]})  # fmt: skip
    cloud = f"harness-ks-dst-{name}"
    entry = [
        f"  {cloud}:", "    auth_type: password", "    auth:", f"      auth_url: {identity['auth_url']}",
        "      username: admin", f"      password: {identity['admin']['password']}", f"      project_name: {name}",
        "      user_domain_name: Default", "      project_domain_name: Default",
        f"    region_name: {identity['region']}", "    interface: public", "    identity_api_version: 3",
    ]  # fmt: skip
    path = pair.tmp / f"clouds-{name}.yaml"
    path.write_text(Path(pair.env["clouds_yaml"]).read_text() + "\n".join(entry) + "\n")
    return project, cloud, path


def _usage(dst: KsCloud, project_name: str) -> dict[str, Any]:
    token = seed.keystone_token(dst.identity["auth_url"], "admin", dst.identity["admin"]["password"], project_name)
    return dict(dst.glance(token).ok("GET", "/v2/info/usage")["usage"])


def test_a_plan_past_the_real_unified_limits_is_refused_and_other_owners_are_not_counted(
    pair: Pair, keystone_clouds: KeystoneClouds
) -> None:
    """Against oslo.limit's project limits: plan shows them beside the plan's needs, copy refuses (exit 2,
    nothing created) what the caller's project would own past its image_size_total, copies the same images
    kept for their owners (glance counts them against no one), and with --ignore-quota the real 413 fails
    the one image that does not fit, saying which limit to raise."""
    dst = keystone_clouds.dst
    limits = {"image_size_total": 3, "image_stage_total": 100, "image_count_total": 10, "image_count_uploading": 1}
    project, cloud, clouds_yaml = _project_with_limits(pair, dst, limits)
    tag = os.urandom(3).hex()
    images = [
        pair.src.create(seed.raw_image(2 * MiB, 80 + i), name=f"quota-{tag}-{i}", disk_format="raw",
                        container_format="bare")["id"]
        for i in range(4)
    ]  # fmt: skip
    first, rest = [f"--image={i}" for i in images[:2]], [f"--image={i}" for i in images[2:]]
    args = ("--src-cloud", "harness-src", "--dst-cloud", cloud, "--concurrency", "4")
    plan = pair.cli("plan", "copy", *args, "--no-owner", *first, clouds_yaml=str(clouds_yaml), report=False)
    assert plan.returncode == 0, plan.stderr
    assert f"quota of the destination, project {project}" in plan.stdout
    needs = "image_size_total: 0 MiB used of 3 MiB; uploads 4 MiB owned by the project: needs 4 MiB (short by 1 MiB)"
    assert needs in plan.stdout
    assert "uploads at once: at most 1" in plan.stdout

    refused = pair.cli("copy", *args, "--no-owner", *first, clouds_yaml=str(clouds_yaml))
    assert refused.returncode == 2 and f"project {project}'s image_size_total" in refused.stderr, refused.stderr
    admin = dst.glance()
    assert [admin.get(i) for i in images[:2]] == [None, None]

    # Kept for another project the destination has (an owner its Keystone lacks is blocked), with a
    # journal of its own (the pair remembers the identity mapping its copies used).
    other = pair.tmp / f"owners-{tag}.json"
    other.write_text(f'{{"{pair.env["admin_project_id"]}": "{dst.identity["team"]["project_id"]}"}}')
    own = ("--project-map", str(other), "--journal", str(pair.tmp / f"owners-{tag}.sqlite"))
    kept = pair.cli("copy", *args, *own, *first, clouds_yaml=str(clouds_yaml))
    assert kept.returncode == 0 and set(kept.outcomes().values()) == {"copied"}, kept.stderr
    assert _usage(dst, cloud.removeprefix("harness-ks-dst-"))["image_size_total"]["usage"] == 0

    forced = pair.cli("copy", *args, "--no-owner", "--ignore-quota", *rest, clouds_yaml=str(clouds_yaml))
    assert forced.returncode == 1 and sorted(forced.outcomes().values()) == ["copied", "failed"], forced.stderr
    assert forced.report is not None and forced.report["summary"]["quota"]["max_uploads"] == 1
    (reason,) = [i["reason"] for i in forced.report["images"] if i["outcome"] == "failed"]
    assert reason.startswith(f"the destination's quota refused the upload: image_size_total of project {project}")


def test_a_sync_past_the_real_unified_limits_is_refused_before_anything(
    pair: Pair, keystone_clouds: KeystoneClouds
) -> None:
    """sync runs the same pre-flight as copy against oslo.limit's project limits: the images it would
    bring need more than the project's image_size_total, so it exits 2 with one line naming the
    project and the limit, and nothing is created at the real destination."""
    dst = keystone_clouds.dst
    limits = {"image_size_total": 1, "image_stage_total": 100, "image_count_total": 10, "image_count_uploading": 2}
    project, cloud, clouds_yaml = _project_with_limits(pair, dst, limits)
    tag = os.urandom(3).hex()
    images = [
        pair.src.create(seed.raw_image(MiB, 90 + i), name=f"squota-{tag}-{i}", disk_format="raw",
                        container_format="bare")["id"]
        for i in range(2)
    ]  # fmt: skip
    journal = ("--journal", str(pair.tmp / f"squota-{tag}.sqlite"))
    args = ("sync", "--src-cloud", "harness-src", "--dst-cloud", cloud, "--no-owner", *journal)
    refused = pair.cli(*args, *[f"--image={i}" for i in images], clouds_yaml=str(clouds_yaml))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"project {project}'s image_size_total" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    admin = dst.glance()
    assert [admin.get(i) for i in images] == [None, None]
