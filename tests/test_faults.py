"""Faults injected by the fake Glance: each ends with every image bit-exact
under its own id, nothing corrupt committed, nothing deleted, nothing left saving."""

from __future__ import annotations

import os

from asyncmigrate import Timeouts, copy_images
from asyncmigrate.progress import Retrying
from tests.conftest import Clouds, fast_config


def _image(clouds: Clouds, size: int = 300_000) -> tuple[str, bytes]:
    data = os.urandom(size)
    image = clouds.src.add_image(data, name="img", disk_format="raw", container_format="bare")
    return str(image["id"]), data


def _assert_intact(clouds: Clouds, image_id: str, data: bytes) -> None:
    assert clouds.dst.get(image_id)["status"] == "active"
    assert clouds.dst.data(image_id) == data
    assert not clouds.dst.requests_matching("DELETE", ".*")


async def test_flipped_byte_in_flight_is_caught_and_retried(clouds: Clouds) -> None:
    """A byte flipped once on the wire: the held-back chunk stops the commit; the retry is exact."""
    image_id, data = _image(clouds)
    clouds.src.faults.flip_byte(image_id, 123_456, times=1)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2
    _assert_intact(clouds, image_id, data)
    puts = clouds.dst.requests_matching("PUT", "/file$")
    assert len(puts) == 2 and puts[0].fault == "client_disconnected"
    # The first attempt sent everything but the held-back last chunk, then rewound.
    (retry,) = [e for e in clouds.events if isinstance(e, Retrying)]
    assert 0 < retry.rewound < len(data)


async def test_source_whose_bytes_never_match_is_reported_corrupt(clouds: Clouds) -> None:
    """Stored bytes that differ from the source's own hash: 'source corrupt', never activated."""
    image_id, _ = _image(clouds)
    clouds.src.faults.flip_byte(image_id, 10)  # every read
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    result = run.images[0]
    assert result.outcome == "failed" and "source data does not match" in result.reason
    assert result.attempts == 2
    assert clouds.dst.get(image_id)["status"] == "queued"
    assert clouds.dst.images[image_id].size is None


async def test_small_corrupt_image_never_touches_the_destination_data(clouds: Clouds) -> None:
    """An image smaller than a chunk is verified before the upload even starts."""
    image_id, _ = _image(clouds, size=1000)
    clouds.src.faults.flip_byte(image_id, 5)
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert not clouds.dst.requests_matching("PUT", "/file$")


async def test_cut_download_resumes_with_range_into_the_same_upload(clouds: Clouds) -> None:
    """A source connection cut mid-stream is reopened at the offset; one attempt, one upload."""
    image_id, data = _image(clouds, size=1_000_000)
    clouds.src.faults.cut_download_after(image_id, 400_000)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 1
    gets = clouds.src.requests_matching("GET", "/file$")
    assert len(gets) == 2 and gets[1].status == 206 and gets[1].headers["Range"].startswith("bytes=")
    assert len(clouds.dst.requests_matching("PUT", "/file$")) == 1
    _assert_intact(clouds, image_id, data)


async def test_a_cut_from_a_store_that_serves_no_ranges_is_retried_whole(clouds: Clouds) -> None:
    """A source image in RBD (glance_store reads rbd, s3 and swift only whole) refuses the resume's
    Range with 400: the cut is healed by copying the image again from byte 0, not failed."""
    image_id, data = _image(clouds, size=1_000_000)
    (store,) = clouds.src.images[image_id].data
    clouds.src.store_types[store] = "rbd"
    clouds.src.faults.cut_download_after(image_id, 400_000)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2, run.images[0].reason
    gets = clouds.src.requests_matching("GET", "/file$")
    assert [g.status for g in gets] == [200, 400, 200] and "Range" not in gets[2].headers
    _assert_intact(clouds, image_id, data)


async def test_destination_cut_mid_upload_is_retried_into_the_same_id(clouds: Clouds) -> None:
    """The destination drops the upload: the image returns to queued and is uploaded again."""
    image_id, data = _image(clouds)
    clouds.dst.faults.cut_upload_after(image_id, 100_000)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied" and run.images[0].attempts == 2
    assert run.images[0].bytes == len(data)  # progress rewound, not double counted
    _assert_intact(clouds, image_id, data)


async def test_503_with_retry_after_is_retried(clouds: Clouds) -> None:
    """503 + Retry-After on listing, create and upload: each is retried, the copy completes."""
    image_id, data = _image(clouds)
    clouds.src.faults.fail_next("GET", r"^/v2/images$", status=503, retry_after=0)
    clouds.dst.faults.fail_next("POST", r"^/v2/images$", status=503, retry_after=0)
    clouds.dst.faults.fail_next("PUT", r"/file$", status=503, retry_after=0)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied"
    _assert_intact(clouds, image_id, data)


async def test_4xx_is_not_retried(clouds: Clouds) -> None:
    """A 403 on create is the image's failure at once: one attempt."""
    _image(clouds)
    clouds.dst.faults.fail_next("POST", r"^/v2/images$", status=403)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "failed" and run.images[0].attempts == 1
    assert "403" in run.images[0].reason


async def test_stalled_source_times_out_and_is_retried(clouds: Clouds) -> None:
    """A source that stops sending trips the idle-read timeout; the image is still copied."""
    image_id, data = _image(clouds)
    clouds.src.faults.hang_download_after(image_id, 100_000, times=2)
    config = fast_config(timeouts=Timeouts(connect=5, idle_read=0.3))
    run = await copy_images(config, clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "copied"
    _assert_intact(clouds, image_id, data)


async def test_persistent_failure_exhausts_attempts_and_reports(clouds: Clouds) -> None:
    """A destination that always fails the upload: the image fails after the attempt cap, queued."""
    image_id, _ = _image(clouds)
    clouds.dst.faults.fail_next("PUT", r"/file$", status=500, retry_after=None, times=None)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert run.images[0].outcome == "failed" and run.images[0].attempts == 4
    assert "500" in run.images[0].reason
    assert clouds.dst.get(image_id)["status"] == "queued"


async def test_a_206_to_a_request_for_the_whole_image_is_read_by_its_content_range(clouds: Clouds) -> None:
    """A cache answering the whole-image request with 206 and its first part (Content-Range
    bytes 0-N/size): that part is used and the rest asked for with Range — one attempt, no
    'corrupt source'."""
    image_id, data = _image(clouds, size=1_000_000)
    clouds.src.faults.answer_partially(image_id, 300_000, times=None)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in run.images] == [("copied", 1)], run.images[0].reason
    gets = clouds.src.requests_matching("GET", "/file$")
    assert [g.headers.get("Range") for g in gets] == [None, "bytes=300000-"] and gets[0].status == 206
    _assert_intact(clouds, image_id, data)


async def test_a_resume_answered_from_another_object_is_refused_by_its_total(clouds: Clouds) -> None:
    """After a cut, a Range answer whose Content-Range total is not the image's size (a cache
    serving another object) is never spliced in: the image is read again from its start, and a
    source that can only be read so is reported as not resumable, not as corrupt."""
    image_id, data = _image(clouds, size=1_000_000)
    clouds.src.faults.serve_ranges_from(image_id, os.urandom(1_200_000))
    clouds.src.faults.cut_download_after(image_id, 400_000, times=None)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "corrupt" not in result.reason and "does not match" not in result.reason
    assert "total 1200000, its recorded size is 1000000" in result.reason
    assert clouds.dst.get(image_id)["status"] == "queued"
    clouds.src.faults.clear()
    clouds.src.faults.serve_ranges_from(image_id, os.urandom(1_200_000))
    clouds.src.faults.cut_download_after(image_id, 400_000, times=1)
    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in again.images] == [("copied", 2)]
    _assert_intact(clouds, image_id, data)
