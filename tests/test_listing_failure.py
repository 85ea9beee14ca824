"""A listing that fails part-way (after its retries) stops the intake of new images, never the
images in flight: they finish, the run ends 'incomplete' (exit 4) with the report written, and
running the same command again completes the job."""

from __future__ import annotations

import json
import os
from pathlib import Path

from asyncmigrate import copy_images
from asyncmigrate.progress import ListingFailed
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config
from tests.test_cli import _cli

PAGE = 25  # the fake's default page size


def _catalog(clouds: Clouds, n: int) -> dict[str, bytes]:
    images = {}
    for i in range(n):
        data = os.urandom(100_000 + i)
        image = clouds.src.add_image(data, name=f"img-{i:02d}", disk_format="raw", container_format="bare")
        clouds.src.faults.slow_download(image["id"], 2_000_000)  # ~50 ms: always some in flight
        images[image["id"]] = data
    return images


def _assert_nothing_left_half_done(clouds: Clouds) -> None:
    assert {r.status for r in clouds.dst.images.values()} <= {"active"}
    assert not clouds.dst.requests_matching("DELETE", ".*")


async def test_listing_failure_lets_images_in_flight_finish(clouds: Clouds) -> None:
    """The second page fails for good: the first page's images all arrive (none aborted, none
    left queued), the run says why it is incomplete, and a re-run copies the rest."""
    images = _catalog(clouds, PAGE + 5)
    # Listing requests: the start-up probe, page 1, then page 2 — which fails from then on.
    clouds.src.faults.fail_next("GET", r"^/v2/images$", status=500, retry_after=None, times=None, nth=3)
    run = await copy_images(fast_config(concurrency=3), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    assert run.incomplete is not None and "source listing failed" in run.incomplete and "500" in run.incomplete
    assert int(run.exit_code) == 4
    assert len(run.images) == PAGE and {r.outcome for r in run.images} == {"copied"}
    assert [e.reason for e in clouds.events if isinstance(e, ListingFailed)] == [run.incomplete]
    _assert_nothing_left_half_done(clouds)

    clouds.src.faults.clear()
    again = await copy_images(fast_config(concurrency=3), clouds.src_cloud, clouds.dst_cloud)
    assert again.incomplete is None and int(again.exit_code) == 0
    assert sorted(r.id for r in again.images if r.outcome == "copied") == sorted(
        set(images) - {r.id for r in run.images}
    )
    for image_id, data in images.items():
        assert clouds.dst.data(image_id) == data
    _assert_nothing_left_half_done(clouds)


async def test_cli_exits_four_with_the_report_written(clouds: Clouds, tmp_path: Path) -> None:
    """Through the CLI: exit 4, one clear line saying to run the command again, the report
    written with the reason; the re-run exits 0."""
    _catalog(clouds, PAGE + 3)
    clouds.src.faults.fail_next("GET", r"^/v2/images$", status=503, retry_after=0, times=None, nth=3)  # page 2
    report = tmp_path / "r.json"
    args = ("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "2", "--report", str(report))
    code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 4, err
    assert "Traceback" not in out + err
    assert "incomplete: the source listing failed" in out and "run the same command again" in out
    summary = json.loads(report.read_text())["summary"]
    assert summary["exit_code"] == 4 and "503" in summary["incomplete"] and summary["outcomes"] == {"copied": PAGE}
    clouds.src.faults.clear()
    code, out, err = await _cli(*args, clouds_yaml=clouds.clouds_yaml)
    assert code == 0, err
    assert json.loads(report.read_text())["summary"]["outcomes"] == {"copied": 3, "skipped": PAGE}


async def test_verify_destination_listing_failure_is_incomplete(clouds: Clouds) -> None:
    """verify lists the destination for extras: when that listing fails, every source image is
    still compared and reported, and the run is incomplete rather than aborted."""
    images = _catalog(clouds, 3)
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    # Listing requests: the start-up probe, the destination index (two passes and their
    # re-check of images updated meanwhile), then the listing for extras.
    clouds.dst.faults.fail_next("GET", r"^/v2/images$", status=500, retry_after=None, times=None, nth=6)
    run = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert sorted(r.id for r in run.images) == sorted(images)
    assert {r.outcome for r in run.images} == {"match"}
    assert run.incomplete is not None and "destination listing failed" in run.incomplete
    assert int(run.exit_code) == 4


async def test_json_logs_stay_one_object_per_line_when_incomplete(clouds: Clouds) -> None:
    """--log-format json: the listing failure and the incomplete end are JSON lines like the rest."""
    _catalog(clouds, 2)
    clouds.src.faults.fail_next("GET", r"^/v2/images$", status=500, retry_after=None, times=None, nth=2)
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--log-format", "json", "--retries", "1",
        clouds_yaml=clouds.clouds_yaml,
    )  # fmt: skip
    assert code == 4, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [e["event"] for e in events if e["event"] in ("listing-failed", "incomplete")] == [
        "listing-failed",
        "incomplete",
    ]
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["incomplete"].startswith("the source listing failed")


async def test_destination_index_failure_stops_before_anything(clouds: Clouds) -> None:
    """The destination catalog is read before any image starts: when it cannot be read the run
    stops at once (fatal, exit 3) and nothing is created."""
    _catalog(clouds, 3)
    clouds.dst.faults.fail_next("GET", r"^/v2/images$", status=500, retry_after=None, times=None, nth=2)
    code, _, err = await _cli("copy", "--src-cloud", "src", "--dst-cloud", "dst", "--retries", "1",
                              clouds_yaml=clouds.clouds_yaml)  # fmt: skip
    assert code == 3 and "cannot read the destination's catalog (nothing was done)" in err
    assert not clouds.dst.requests_matching("POST", ".*") and not clouds.dst.images


async def test_sync_listing_failure_finishes_in_flight_and_judges_no_removal(clouds: Clouds, tmp_path: Path) -> None:
    """sync: a listing failing part-way ends the intake, the images in flight finish, and no image
    is judged removed (the source was not read to the end); the re-run completes."""
    from asyncmigrate.sync import sync_images
    from tests.test_sync import sync_config

    images = _catalog(clouds, PAGE + 5)
    await copy_images(fast_config(image_ids=tuple(images)[:3]), clouds.src_cloud, clouds.dst_cloud)
    clouds.src.faults.fail_next("GET", r"^/v2/images$", status=500, retry_after=None, times=None, nth=3)
    run = await sync_images(sync_config(tmp_path, concurrency=3), clouds.src_cloud, clouds.dst_cloud)
    assert run.incomplete is not None and int(run.exit_code) == 4
    assert len(run.images) == PAGE and not {r.outcome for r in run.images} & {"removed", "deleted"}
    _assert_nothing_left_half_done(clouds)
    clouds.src.faults.clear()
    again = await sync_images(sync_config(tmp_path, concurrency=3), clouds.src_cloud, clouds.dst_cloud)
    assert again.incomplete is None and int(again.exit_code) == 0
    assert all(clouds.dst.data(i) == data for i, data in images.items())
