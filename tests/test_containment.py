"""One image's surprise never stops the run: a 2xx that is not Glance's answer is retried, an
algorithm this Python cannot compute falls back to md5, a journal that cannot be written is
dropped with one warning, and a bug ends only its image — labelled, its traceback in a log
file, never on the console. In every case the run's other images complete in the same run."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import copy_images
from asyncmigrate.progress import Event, InternalError, JournalFailed, JournalOpened
from asyncmigrate.stream import Digest, expected_digest
from tests.conftest import Clouds, fast_config
from tests.test_cli import _cli
from tests.test_faults import _assert_intact

MAINTENANCE = "<html><body><h1>Down for maintenance</h1></body></html>"


def _images(clouds: Clouds, n: int, size: int = 200_000) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = os.urandom(size + i)
        out[clouds.src.add_image(data, name=f"img-{i}", disk_format="raw", container_format="bare")["id"]] = data
    return out


async def test_maintenance_page_answering_200_is_retried_on_every_request_kind(clouds: Clouds) -> None:
    """A load balancer's 200 text/html page on the listing, a look-up, a create and an upload:
    each is retried as transient and every image arrives bit-exact."""
    images = _images(clouds, 3)
    page = {"status": 200, "retry_after": None, "body": MAINTENANCE, "content_type": "text/html"}
    clouds.src.faults.fail_next("GET", r"^/v2/images$", **page)  # type: ignore[arg-type]
    first = next(iter(images))
    clouds.dst.faults.fail_next("GET", rf"^/v2/images/{first}$", **page)  # type: ignore[arg-type]
    clouds.dst.faults.fail_next("POST", r"^/v2/images$", **page)  # type: ignore[arg-type]
    clouds.dst.faults.fail_next("PUT", r"/file$", **page)  # type: ignore[arg-type]
    run = await copy_images(fast_config(concurrency=1), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"copied"}, [r.reason for r in run.images]
    # Create, upload and the look-up: one retry each (a read inside an attempt is retried by the attempt).
    assert sum(r.attempts for r in run.images) == 6
    for image_id, data in images.items():
        _assert_intact(clouds, image_id, data)


async def test_hash_algorithm_this_python_lacks_falls_back_to_md5(clouds: Clouds) -> None:
    """A source recording a future algorithm is verified with its md5 checksum; another with
    no md5 either is copied on its size alone; the run's other image is unaffected."""
    images = _images(clouds, 3)
    future, bare, _plain = list(images)
    clouds.src.images[future].os_hash_algo = "sha4096"
    clouds.src.images[bare].os_hash_algo = "sha4096"
    clouds.src.images[bare].checksum = None
    assert expected_digest(clouds.src.get(future)) == ("md5", hashlib.md5(images[future]).hexdigest())
    assert expected_digest(clouds.src.get(bare)) == (None, None)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"copied"}, [r.reason for r in run.images]
    for image_id, data in images.items():
        _assert_intact(clouds, image_id, data)


def test_verification_hashing_works_where_md5_is_refused_for_security(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a FIPS host md5 is refused unless declared not for security: the digest declares it."""
    real_new = hashlib.new

    def fips_new(name: str, data: bytes = b"", **kw: Any) -> Any:
        if name.lower() == "md5" and kw.get("usedforsecurity", True):
            raise ValueError("[digital envelope routines] unsupported")
        return real_new(name, data, **kw)

    monkeypatch.setattr(hashlib, "new", fips_new)
    digest = Digest("md5")
    digest.close()
    assert expected_digest({"checksum": "c" * 32}) == ("md5", "c" * 32)


async def test_journal_that_cannot_be_written_is_dropped_with_one_warning(clouds: Clouds, tmp_path: Path) -> None:
    """The journal's table vanishes under the run (as a full or broken disk would fail writes):
    one JournalFailed event, journaling stops, every image is copied."""
    images = _images(clouds, 4)
    path = tmp_path / "j.sqlite"
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, JournalOpened):  # break it from outside, as soon as it is open
            with sqlite3.connect(path) as other:
                other.execute("DROP TABLE images")

    run = await copy_images(fast_config(journal=path, concurrency=2), clouds.src_cloud, clouds.dst_cloud, emit=emit)
    assert {r.outcome for r in run.images} == {"copied"}
    (failed,) = [e for e in events if isinstance(e, JournalFailed)]
    assert failed.path == str(path) and "images" in failed.reason
    for image_id, data in images.items():
        _assert_intact(clouds, image_id, data)


async def test_journal_record_that_cannot_be_written_never_fails_an_image(clouds: Clouds, tmp_path: Path) -> None:
    """The record of what was brought (sync's) cannot be written at the end of a copy: one
    JournalFailed event, every image still copied, the run not ended by it."""
    images = _images(clouds, 3)
    path = tmp_path / "j.sqlite"
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, JournalOpened):
            with sqlite3.connect(path) as other:
                other.execute("DROP TABLE brought")

    run = await copy_images(fast_config(journal=path), clouds.src_cloud, clouds.dst_cloud, emit=emit)
    assert {r.outcome for r in run.images} == {"copied"} and int(run.exit_code) == 0
    (failed,) = [e for e in events if isinstance(e, JournalFailed)]
    assert "brought" in failed.reason
    for image_id, data in images.items():
        _assert_intact(clouds, image_id, data)


async def test_a_bug_fails_only_its_image_labelled_with_its_traceback(clouds: Clouds) -> None:
    """An image record the code cannot handle (a size that is not a number) ends that image as
    an internal error carrying its traceback; the run's other images are copied."""
    images = _images(clouds, 3)
    odd = clouds.src.add_image(b"odd", name="odd", disk_format="raw", container_format="bare")["id"]
    clouds.src.images[odd].size = "twelve"  # type: ignore[assignment]
    run = await copy_images(fast_config(concurrency=2), clouds.src_cloud, clouds.dst_cloud, emit=clouds.emit)
    by_id = {r.id: r for r in run.images}
    assert by_id[odd].outcome == "failed" and by_id[odd].reason.startswith("internal error: ValueError")
    (bug,) = [e for e in clouds.events if isinstance(e, InternalError)]
    assert bug.image_id == odd and "Traceback" in bug.traceback and "ValueError" in bug.traceback
    assert int(run.exit_code) == 1
    for image_id, data in images.items():
        _assert_intact(clouds, image_id, data)


async def test_internal_error_goes_to_a_log_file_never_the_console(clouds: Clouds, tmp_path: Path) -> None:
    """Through the CLI: exit 1, the report written, one line naming the log file, the traceback
    in that file and nowhere on stdout or stderr."""
    images = _images(clouds, 2)
    odd = clouds.src.add_image(b"odd", name="odd", disk_format="raw", container_format="bare")["id"]
    clouds.src.images[odd].size = "twelve"  # type: ignore[assignment]
    report = tmp_path / "r.json"
    journal = tmp_path / "state" / "j.sqlite"
    code, out, err = await _cli(
        "copy", "--src-cloud", "src", "--dst-cloud", "dst", "--report", str(report), "--journal", str(journal),
        clouds_yaml=clouds.clouds_yaml,
    )  # fmt: skip
    assert code == 1, err
    assert "Traceback" not in out + err
    (line,) = [line for line in out.splitlines() if "tracebacks written to" in line]
    log = Path(line.split("tracebacks written to ", 1)[1].split()[0])
    assert log.parent == journal.parent and "ValueError" in log.read_text() and odd in log.read_text()
    entries = {e["id"]: e for e in json.loads(report.read_text())["images"]}
    assert entries[odd]["outcome"] == "failed" and "internal error" in entries[odd]["reason"]
    assert all(entries[i]["outcome"] == "copied" for i in images)
