"""No mode leaves an active destination image whose bytes differ from the source's record: bytes
that changed on the way are caught before the commit where the stream is hashed, and a copy
whose record differs after the commit is deactivated at once and reported ``quarantined`` —
by this run and every later one (copy, sync, verify) — and ``verification`` names only what
was compared."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import pytest

from asyncmigrate import copy_images
from asyncmigrate.sync import sync_images
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config
from tests.test_sync import sync_config

QUARANTINE_KEY = "asyncmigrate_quarantined"  # the mark a bad copy gets (asyncmigrate.integrity)


def _image(clouds: Clouds, size: int = 300_000) -> tuple[str, bytes]:
    data = os.urandom(size)
    return str(clouds.src.add_image(data, name="img", disk_format="raw", container_format="bare")["id"]), data


def _assert_quarantined(clouds: Clouds, image_id: str) -> None:
    dst = clouds.dst.get(image_id)
    assert dst["status"] == "deactivated" and "differ from the source's record" in dst[QUARANTINE_KEY]


async def test_server_mode_bad_copy_is_deactivated_at_once_and_known_to_every_later_run(
    clouds: Clouds, tmp_path: Path
) -> None:
    """--verify server and one byte flipped on the wire: the committed copy's record differs, so it
    is deactivated and marked at once (not left active), reported 'quarantined' with the way out;
    copy, sync and verify afterwards name it, never an eternal generic conflict."""
    image_id, data = _image(clouds)
    clouds.src.faults.flip_byte(image_id, 123_456, times=1)
    run = await copy_images(fast_config(verify="server"), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert (result.outcome, result.attempts, int(run.exit_code)) == ("quarantined", 1, 1)
    assert "recorded md5, sha512 other than the source's" in result.reason
    assert "--verify server does not hash the stream" in result.reason and "deactivated at once" in result.reason
    assert "nor reuses a deleted id" in result.reason and "under a new id" in result.reason
    _assert_quarantined(clouds, image_id)
    assert clouds.dst.data(image_id) != data

    again = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    mark = clouds.dst.get(image_id)[QUARANTINE_KEY]
    assert [r.outcome for r in again.images] == ["quarantined"]
    assert again.images[0].reason.startswith(f"a bad copy quarantined by an earlier run ({mark}); ")
    synced = await sync_images(sync_config(tmp_path), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in synced.images] == ["quarantined"]
    assert clouds.dst.get(image_id)["status"] == "deactivated"  # sync did not "level" it back to active
    checked = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in checked.images] == ["quarantined"] and int(checked.exit_code) == 1
    planned = await copy_images(fast_config(dry_run=True), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.action, r.outcome) for r in planned.images] == [("quarantined", "planned")]


@pytest.mark.parametrize("verify", ["full", "server"])
async def test_bytes_changed_on_the_way_into_the_destination_are_quarantined(clouds: Clouds, verify: str) -> None:
    """Good bytes sent, bad bytes stored (a corrupting proxy in front of the destination): the
    client's own check cannot see it; the destination's record does, so the copy is deactivated."""
    image_id, _ = _image(clouds)
    clouds.dst.faults.flip_upload_byte(image_id, 200_000)
    run = await copy_images(fast_config(verify=verify), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "quarantined", result.reason
    assert ("after the client's check" in result.reason) == (verify == "full")
    _assert_quarantined(clouds, image_id)


def _other_algorithm_no_md5(clouds: Clouds, image_id: str, data: bytes) -> None:
    """The source records sha256 (the destination records sha512) and no md5 checksum."""
    rec = clouds.src.images[image_id]
    rec.os_hash_algo, rec.os_hash_value, rec.checksum = "sha256", hashlib.sha256(data).hexdigest(), None


async def test_server_mode_hashes_the_stream_where_the_record_cannot_be_compared(clouds: Clouds) -> None:
    """Source sha256 without md5, destination sha512: nothing of the two records compares, so
    --verify server hashes the stream itself (a flipped byte is caught before the commit and
    retried), and the report names sha256 because sha256 was checked."""
    image_id, data = _image(clouds)
    _other_algorithm_no_md5(clouds, image_id, data)
    clouds.src.faults.flip_byte(image_id, 123_456, times=1)
    run = await copy_images(fast_config(verify="server"), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts, r.verification) for r in run.images] == [("copied", 2, "sha256")]
    dst = clouds.dst.get(image_id)
    assert dst["status"] == "active" and clouds.dst.data(image_id) == data and dst["os_hash_algo"] == "sha512"


async def test_verification_names_only_what_was_compared(clouds: Clouds) -> None:
    """--verify server on a source recording sha256 and md5, into a sha512 destination: the md5s
    were compared, never a sha256 — the report says md5."""
    image_id, data = _image(clouds)
    rec = clouds.src.images[image_id]
    rec.os_hash_algo, rec.os_hash_value = "sha256", hashlib.sha256(data).hexdigest()
    run = await copy_images(fast_config(verify="server"), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.verification) for r in run.images] == [("copied", "md5")]
    full = await copy_images(fast_config(image_ids=(image_id,)), clouds.src_cloud, clouds.dst_cloud)
    assert [r.outcome for r in full.images] == ["skipped"]


async def test_a_lost_answer_to_a_committed_upload_is_proved_not_taken_for_done(clouds: Clouds) -> None:
    """The upload committed but its answer never arrived: the next attempt proves the data it finds
    against the source's record and reports it copied, with its bytes — not "skipped: already at
    the destination" with none."""
    image_id, data = _image(clouds)
    clouds.dst.faults.lose_upload_answer(image_id)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts, r.bytes, r.verification) for r in run.images] == [
        ("copied", 2, len(data), "sha512")
    ]
    assert clouds.dst.data(image_id) == data
    assert [r.fault for r in clouds.dst.requests_matching("PUT", "/file$")] == ["lost_answer"]


async def test_a_bad_copy_that_cannot_be_deactivated_is_reported_as_still_active(clouds: Clouds) -> None:
    """Deactivation refused (403: not an admin): the image fails saying it is ACTIVE with the wrong
    bytes and must be deactivated by hand; refused once with a 503, the next attempt proves the
    copy again and quarantines it."""
    image_id, _ = _image(clouds)
    clouds.dst.faults.flip_upload_byte(image_id, 10)
    clouds.dst.faults.fail_next("POST", r"/actions/deactivate$", 403, retry_after=None)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (result,) = run.images
    assert result.outcome == "failed" and "ACTIVE with the wrong bytes" in result.reason
    assert "deactivate it by hand" in result.reason and clouds.dst.get(image_id)["status"] == "active"

    other, _ = _image(clouds)
    clouds.dst.faults.flip_upload_byte(other, 10)
    clouds.dst.faults.fail_next("POST", r"/actions/deactivate$", 503, retry_after=0)
    run = await copy_images(fast_config(image_ids=(other,)), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.outcome, r.attempts) for r in run.images] == [("quarantined", 2)]
    _assert_quarantined(clouds, other)


def test_the_console_names_quarantined_and_rejudged_images() -> None:
    """A quarantined image, and a result judged again at the end of the run, are printed with their
    reason as they happen; the re-judged image is counted once, under its new outcome."""
    from asyncmigrate.progress import ImageDone, ImageRejudged, Stats
    from asyncmigrate.render import LineRenderer, Log
    from asyncmigrate.report import ImageResult

    out, stats = io.StringIO(), Stats()
    render = LineRenderer(Log("text", out=out, err=io.StringIO()), stats)
    render(ImageDone(ImageResult(id="a", name="bad", action="copy", outcome="quarantined", reason="the way out")))
    skipped = ImageResult(id="b", name="gone", action="none", outcome="skipped", reason="already at the destination")
    render(ImageDone(skipped))
    render(ImageRejudged(dataclasses.replace(skipped, outcome="failed", reason="deleted meanwhile"), "skipped"))
    assert "quarantined: a bad: the way out" in out.getvalue() and "failed: b gone: deleted meanwhile" in out.getvalue()
    assert stats.done == 2 and {k: v for k, v in stats.outcomes.items() if v} == {"quarantined": 1, "failed": 1}


async def test_verify_says_a_match_rests_on_the_size_alone(clouds: Clouds) -> None:
    """Source sha256 without md5, destination sha512: verify can compare only the sizes, so its
    match says so — per image (``verification: size-only``) and in its last line — never a bare
    "catalogs match" as if the hashes had been compared."""
    from rich.console import Console

    from asyncmigrate.output import print_verify, verify_records

    data = os.urandom(150_000)
    image_id = clouds.src.add_image(data, name="sha256-only", disk_format="raw", container_format="bare")["id"]
    _other_algorithm_no_md5(clouds, image_id, data)
    assert (await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)).exit_code == 0
    run = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert [(r.id, r.outcome, r.verification) for r in run.images] == [(image_id, "match", "size-only")]
    console = Console(file=io.StringIO(), width=200)
    print_verify(console, run)
    last = console.file.getvalue().splitlines()[-1]  # type: ignore[attr-defined]
    assert "catalogs match; matched 1 by size only: the two clouds record no hash in common" in last
    assert verify_records(run)[-1][2]["verification"] == {"size-only": 1}
