"""The quota pre-flight: the destination's unified limits (GET /v2/info/usage) against the plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncmigrate import SyncConfig, copy_images, load_cloud, sync_images
from asyncmigrate.quota import QuotaExceeded
from asyncmigrate.selection import Selection
from tests.conftest import FAST_RETRY, Clouds, fast_config, write_clouds_yaml
from tests.fakeglance import ADMIN_PROJECT, USSURI, FakeGlance, FakeServer
from tests.fakeglance.quota import UnifiedLimits
from tests.fakekeystone import guarded_clouds
from tests.test_cli import _cli, _one_clean_line

MiB = 1024 * 1024
OTHER = "0f0f0f0f0f0f4f0f8f0f0f0f0f0f0f0f"


def _limits(size: int = 1000, count: int = 100, uploading: int = 100) -> UnifiedLimits:
    limits = {"image_size_total": size, "image_stage_total": 1000, "image_count_total": count}
    return UnifiedLimits({**limits, "image_count_uploading": uploading})


def _seed(fake: FakeGlance, n: int, mib: int, **attrs: str) -> list[str]:
    return [
        fake.add_image(os.urandom(mib * MiB), name=f"q{i}", disk_format="raw", container_format="bare", **attrs)["id"]
        for i in range(n)
    ]


async def test_plan_shows_the_quota_beside_the_plan_or_that_none_is_published(clouds: Clouds) -> None:
    """plan prints each published limit, its usage and what the plan needs; where nothing is published
    (an empty answer, or a Glance without the endpoint) it says so."""
    _seed(clouds.src, 2, 1)
    dry = fast_config(keep_owner=False, dry_run=True)
    code, out, _ = await _cli(
        "plan", "copy", "--src-cloud", "src", "--dst-cloud", "dst", clouds_yaml=clouds.clouds_yaml
    )
    assert code == 0 and "\nquota: not published (GET /v2/info/usage is empty" in out and "quota: quota:" not in out
    clouds.dst.unified_limits = _limits(size=10, count=5)
    clouds.dst.add_image(os.urandom(3 * MiB), disk_format="raw", container_format="bare")  # the caller's: used
    quota = (await copy_images(dry, clouds.src_cloud, clouds.dst_cloud)).quota
    assert quota is not None
    checks = {c["name"]: (c["usage"], c["needs"], c["limit"]) for c in quota["checks"]}
    assert checks["image_size_total"] == (3, 5, 10) and checks["image_count_total"] == (1, 3, 5)
    async with FakeServer(FakeGlance(profile=USSURI)) as old:
        write_clouds_yaml(clouds.clouds_yaml, {"src": clouds.src_server.url, "old": old.url})
        quota = (await copy_images(dry, clouds.src_cloud, await load_cloud("old"))).quota
    assert quota is not None and quota["not_checked"][0].startswith(
        "not published (the destination has no GET /v2/info/usage"
    )


async def test_copy_and_sync_refuse_a_plan_the_quota_cannot_hold(clouds: Clouds) -> None:
    """copy and sync exit 2 with one line naming the limit and the shortfall, nothing created; --ignore-quota
    starts, and the image glance refuses (413) fails saying which limit to raise."""
    clouds.dst.unified_limits = _limits(size=5)
    _seed(clouds.src, 3, 2)
    base = ("--src-cloud", "src", "--dst-cloud", "dst", "--no-owner")
    code, _, err = await _cli("copy", *base, clouds_yaml=clouds.clouds_yaml)
    assert code == 2, err
    _one_clean_line(err)
    assert "image_size_total: 0 MiB used of 5 MiB" in err and "short by 1 MiB" in err
    with pytest.raises(QuotaExceeded, match=r"cannot hold this sync: .*short by 1 MiB"):
        await sync_images(SyncConfig(retry=FAST_RETRY, keep_owner=False), clouds.src_cloud, clouds.dst_cloud)
    assert not clouds.dst.images
    code, out, err = await _cli("copy", *base, "--ignore-quota", "--concurrency", "1", clouds_yaml=clouds.clouds_yaml)
    assert code == 1 and "2 copied" in out
    assert "the destination's quota refused the upload: image_size_total" in out + err


async def test_images_owned_by_other_projects_only_have_to_fit_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's own images add up against its limit; images kept for other projects are not counted
    by glance, so a catalog larger than the limit copies, unless one image alone exceeds the room."""
    src, dst = FakeGlance(prefix="/image"), FakeGlance()
    dst.unified_limits = _limits(size=5)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    async with guarded_clouds(tmp_path / "clouds.yaml", src=src, dst=dst) as kc:
        kc.keystone.projects[OTHER] = "other"  # a project the destination's Keystone has: owners are checked
        src_cloud, dst_cloud = await load_cloud("src"), await load_cloud("dst")
        own = _seed(src, 3, 2, owner=ADMIN_PROJECT)  # the token's project
        _seed(src, 3, 2, owner=OTHER)
        with pytest.raises(QuotaExceeded, match=rf"project {ADMIN_PROJECT}'s image_size_total.*needs 6 MiB"):
            await copy_images(fast_config(), src_cloud, dst_cloud)
        others = fast_config(selection=Selection(exclude=frozenset(own)))
        run = await copy_images(others, src_cloud, dst_cloud)
        assert [r.outcome for r in run.images] == ["copied"] * 3
        big = src.add_image(os.urandom(6 * MiB), disk_format="raw", container_format="bare", owner=OTHER)
        with pytest.raises(QuotaExceeded, match="the largest owned by others 6 MiB"):
            await copy_images(fast_config(image_ids=(big["id"],)), src_cloud, dst_cloud)


async def test_image_count_uploading_bounds_the_uploads_at_once(clouds: Clouds) -> None:
    """The caller's uploads count against image_count_uploading while they run: no more than its room run at once."""
    clouds.dst.unified_limits = _limits(uploading=2)
    for image_id in _seed(clouds.src, 4, 1):
        clouds.src.faults.slow_download(image_id, 4 * MiB)  # a quarter second each: the uploads overlap
    run = await copy_images(fast_config(keep_owner=False, concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in run.images] == ["copied"] * 4
    assert clouds.dst.max_uploads_in_flight == 2 and run.quota is not None and run.quota["max_uploads"] == 2


async def test_the_pre_flight_adds_no_request_per_image(clouds: Clouds) -> None:
    """Against enforced limits a re-run plans every image first, yet reads no image or member list more than
    the run itself does: only a second source listing."""
    ids = [clouds.src.add_image(b"x" * 100, name=f"s{i}", disk_format="raw", container_format="bare")["id"]
           for i in range(30)]  # shared, glance's default visibility: the run reads their members  # fmt: skip
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    counts = []
    for limits in (None, _limits()):
        clouds.dst.unified_limits = limits
        clouds.src.requests.clear(), clouds.dst.requests.clear()
        run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
        assert {r.outcome for r in run.images} == {"skipped"}
        per_image = len([r for r in clouds.src.requests if any(i in r.path for i in ids)])
        listing = len([r for r in clouds.src.requests if "member_status=all" in r.query])
        counts.append((per_image, listing, len(clouds.src.requests), len(clouds.dst.requests)))
    (alone, listing_alone, src_alone, dst_alone), (checked, listing_checked, src_checked, dst_checked) = counts
    assert checked == alone == 30 and dst_checked == dst_alone
    assert listing_checked == 2 * listing_alone and src_checked - src_alone == listing_alone
