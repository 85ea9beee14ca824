"""A listing page that is not Glance's shape (a gateway's JSON error answered 200, a page whose
entries have no id) is an unexpected answer: retried, then a listing failure (exit 4, no removal
judged) — never taken for the last page, which would leave the images after it silently out.
The destination's catalog, read at the start, fails the run before anything is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import Timeouts, copy_images
from asyncmigrate.errors import UnexpectedResponse
from asyncmigrate.glance import open_glance
from tests.conftest import FAST_RETRY, Clouds, fast_config
from tests.test_cli import _cli

PAGE = 25  # the source fake's api_limit_max
GATEWAY = json.dumps({"error": {"code": 504, "message": "upstream timed out"}})  # a JSON error answered 200
WRONG_SHAPES = {
    "no-images": GATEWAY,
    "images-not-a-list": json.dumps({"images": {"id": "x"}}),
    "entry-without-id": json.dumps({"images": [{"name": "x"}]}),
    "entry-not-an-object": json.dumps({"images": ["6f1d7c5e-1111-4c1e-9a0a-000000000009"]}),
    "next-not-a-link": json.dumps({"images": [], "next": 2}),
    "not-an-object": json.dumps([]),
}


def _catalog(clouds: Clouds, n: int) -> list[str]:
    return [
        clouds.src.add_image(os.urandom(2000 + i), name=f"img-{i:02d}", disk_format="raw", container_format="bare")[
            "id"
        ]
        for i in range(n)
    ]


def _answer(fake: Any, body: str, *, nth: int, times: int | None) -> None:
    fake.faults.fail_next(
        "GET", r"^/v2/images$", 200, body=body, content_type="application/json", nth=nth, times=times, retry_after=None
    )


@pytest.mark.parametrize("body", list(WRONG_SHAPES.values()), ids=list(WRONG_SHAPES))
async def test_a_page_of_the_wrong_shape_is_an_unexpected_answer(clouds: Clouds, body: str) -> None:
    """Every shape that is not Glance's listing page raises UnexpectedResponse (after its retries)
    instead of ending the listing; Glance's own pages, an empty last one included, are taken."""
    _catalog(clouds, 3)
    opts = {"chunk_size": 65536, "concurrency": 1, "timeouts": Timeouts(), "retry": FAST_RETRY}
    async with open_glance(clouds.src_cloud, **opts) as src:  # type: ignore[arg-type]
        assert len([i async for i in src.list_images({"limit": "1000"})]) == 3
        _answer(clouds.src, body, nth=1, times=None)
        with pytest.raises(UnexpectedResponse, match=r"not a listing page|not a JSON object"):
            _ = [i async for i in src.list_images({"limit": "1000"})]
    assert len(clouds.src.requests_matching("GET", r"^/v2/images$")) == 1 + FAST_RETRY.attempts


async def test_a_gateway_error_answered_200_is_retried_and_nothing_is_left_out(clouds: Clouds) -> None:
    """60 images, page 2 answered once by a JSON error with status 200: the page is asked again,
    every image is copied, exit 0 (before, 35 of 60 were silently never copied)."""
    ids = _catalog(clouds, 60)
    _answer(clouds.src, GATEWAY, nth=3, times=1)  # the probe, page 1, then page 2
    run = await copy_images(fast_config(concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert run.incomplete is None and int(run.exit_code) == 0
    assert sorted(r.id for r in run.images if r.outcome == "copied") == sorted(ids)
    assert sorted(clouds.dst.images) == sorted(ids)


async def test_a_page_that_stays_wrong_ends_the_run_incomplete(clouds: Clouds, tmp_path: Path) -> None:
    """Page 2 keeps answering the gateway's JSON: exit 4 with the reason, the first page's images
    copied, the report written; the same command again (the gateway fixed) copies the rest."""
    ids = _catalog(clouds, PAGE + 10)
    _answer(clouds.src, GATEWAY, nth=3, times=None)
    report = tmp_path / "r.json"
    args = ("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "2", "--report", str(report))
    code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 4, err
    assert "incomplete: the source listing failed after 25 images" in out and "not a listing page" in out
    summary = json.loads(report.read_text())["summary"]
    assert summary["exit_code"] == 4 and summary["outcomes"] == {"copied": PAGE}
    clouds.src.faults.clear()
    code, _out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 0, err
    assert sorted(clouds.dst.images) == sorted(ids)


async def test_sync_judges_no_removal_after_a_page_of_the_wrong_shape(clouds: Clouds, tmp_path: Path) -> None:
    """sync --delete-removed over a listing whose page 2 is a gateway's JSON error: exit 4, no
    image judged removed (before, the listing counted as complete), nothing deleted."""
    from asyncmigrate.sync import sync_images
    from tests.test_sync import sync_config

    ids = _catalog(clouds, PAGE + 10)
    await copy_images(fast_config(journal=tmp_path / "pair.sqlite"), clouds.src_cloud, clouds.dst_cloud)
    _answer(clouds.src, GATEWAY, nth=3, times=None)
    run = await sync_images(sync_config(tmp_path, delete_removed=True), clouds.src_cloud, clouds.dst_cloud)
    assert run.incomplete is not None and "not a listing page" in run.incomplete and int(run.exit_code) == 4
    assert len(run.images) == PAGE and {r.outcome for r in run.images} == {"skipped"}
    assert not clouds.dst.requests_matching("DELETE", ".*") and sorted(clouds.dst.images) == sorted(ids)


async def test_a_destination_catalog_of_the_wrong_shape_stops_before_anything(clouds: Clouds) -> None:
    """The destination's catalog answering entries without ids (read at the start): fatal, exit 3,
    one line, nothing created."""
    _catalog(clouds, 3)
    _answer(clouds.dst, WRONG_SHAPES["entry-without-id"], nth=2, times=None)  # the probe, then the catalog
    code, _out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "2", clouds_yaml=clouds.clouds_yaml
    )
    assert code == 3, err
    assert "cannot read the destination's catalog (nothing was done)" in err and "without an image id" in err
    assert not clouds.dst.requests_matching("POST", ".*") and not clouds.dst.images
