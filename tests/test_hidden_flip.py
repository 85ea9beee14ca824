"""An image hidden or un-hidden while the listing runs: the ``os_hidden=false`` and
``os_hidden=true`` passes are two queries, not one snapshot, so a change between them can put an
image in neither. The listing re-asks both for the images updated since it began (a fixed two
pages), so a copy never leaves such an image out; a miss now takes three changes of one image
within one listing, and even then ``sync`` confirms with a GET before calling an image removed."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from asyncmigrate import copy_images
from tests.conftest import Clouds, fast_config

PAGE = 25  # the source fake's api_limit_max


def _add(clouds: Clouds, n: int, **attrs: Any) -> list[str]:
    return [
        clouds.src.add_image(
            os.urandom(1000 + i), name=f"img-{i}", disk_format="raw", container_format="bare", **attrs
        )["id"]
        for i in range(n)
    ]


def _setter(clouds: Clouds, image_id: str, hidden: bool) -> Any:
    """An operator's PATCH of os_hidden, as the fake applies it (updated_at moves)."""

    def patch() -> None:
        rec = clouds.src.images[image_id]
        rec.os_hidden = hidden
        rec.updated_at = clouds.src.now()

    return patch


def _before(clouds: Clouds, action: Any, **query: str | None) -> None:
    clouds.src.faults.before_request("GET", r"^/v2/images$", action, query={"limit": "1000", **query})


async def test_an_image_unhidden_between_the_passes_is_copied(clouds: Clouds) -> None:
    """A hidden image un-hidden after the os_hidden=false pass went by and before the
    os_hidden=true pass: it is in neither pass, the re-check lists it, it is copied."""
    ids = _add(clouds, 3)
    (late,) = _add(clouds, 1, os_hidden=True)
    _before(clouds, _setter(clouds, late, hidden=False), os_hidden="true", updated_at="")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert int(run.exit_code) == 0
    assert sorted(r.id for r in run.images if r.outcome == "copied") == sorted([*ids, late])
    assert clouds.dst.data(late) == clouds.src.data(late)


async def test_the_recheck_goes_by_the_servers_clock(clouds: Clouds) -> None:
    """A source whose clock is an hour behind ours (its Date header, its updated_at): the image
    un-hidden between the passes is still found — the re-check reaches back by the server's
    clock, not ours."""
    clouds.src.clock_offset = -dt.timedelta(hours=1)
    ids = _add(clouds, 2)
    (late,) = _add(clouds, 1, os_hidden=True)
    _before(clouds, _setter(clouds, late, hidden=False), os_hidden="true", updated_at="")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert sorted(r.id for r in run.images if r.outcome == "copied") == sorted([*ids, late])


async def test_an_image_hidden_then_unhidden_during_the_listing_is_copied(clouds: Clouds) -> None:
    """Hidden before the os_hidden=false pass reaches its page, un-hidden before the
    os_hidden=true pass: in neither pass, found by the re-check, copied."""
    (oldest,) = _add(clouds, 1)  # the last page of the os_hidden=false pass (newest first)
    ids = _add(clouds, PAGE + 3)
    page_one = list(reversed(ids))[:PAGE]
    _before(clouds, _setter(clouds, oldest, hidden=True), os_hidden="false", marker=page_one[-1])
    _before(clouds, _setter(clouds, oldest, hidden=False), os_hidden="true", updated_at="")
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert int(run.exit_code) == 0
    assert sorted(r.id for r in run.images if r.outcome == "copied") == sorted([oldest, *ids])


async def test_the_recheck_costs_one_page_per_pass_whatever_the_catalog(clouds: Clouds) -> None:
    """With nothing updated lately, the re-check asks each pass once more, for the images updated
    since two minutes before the listing began (by the server's clock): one empty page each."""
    an_hour_ago = clouds.src.now() - dt.timedelta(hours=1)
    _add(clouds, PAGE * 2 + 1, created_at=an_hour_ago, updated_at=an_hour_ago)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert len(run.images) == PAGE * 2 + 1 and int(run.exit_code) == 0
    listings = [r for r in clouds.src.requests if r.path == "/v2/images" and "limit=1000" in r.query]
    rechecks = [r for r in listings if "updated_at=gte:" in r.query]
    assert len(listings) == 3 + 1 + 2  # os_hidden=false: pages of 25, 25, 1; os_hidden=true: 1
    assert [("os_hidden=false" in r.query, "marker=" in r.query) for r in rechecks] == [(True, False), (False, False)]


async def test_sync_never_takes_a_missed_image_for_removed(clouds: Clouds, tmp_path: Path) -> None:
    """Three changes of one image's os_hidden timed against the four queries (the residual case
    the re-check cannot see): sync --delete-removed reads the image by id, finds it at the
    source and leaves it — skipped with the reason, never deleted."""
    from asyncmigrate.sync import sync_images
    from tests.test_sync import sync_config

    ids = _add(clouds, 2)
    (flipper,) = _add(clouds, 1, os_hidden=True)
    await copy_images(fast_config(journal=tmp_path / "pair.sqlite"), clouds.src_cloud, clouds.dst_cloud)
    assert flipper in clouds.dst.images
    # Hidden while os_hidden=false passes, visible while os_hidden=true passes, twice over.
    _before(clouds, _setter(clouds, flipper, hidden=False), os_hidden="true", updated_at="")
    _before(clouds, _setter(clouds, flipper, hidden=True), os_hidden="false", updated_at=None)
    _before(clouds, _setter(clouds, flipper, hidden=False), os_hidden="true", updated_at=None)
    run = await sync_images(sync_config(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    by_id = {r.id: r for r in run.images}
    assert by_id[flipper].outcome == "skipped" and "the source still has it" in by_id[flipper].reason
    assert not clouds.dst.requests_matching("DELETE", ".*") and flipper in clouds.dst.images
    assert {by_id[i].outcome for i in ids} == {"skipped"}
