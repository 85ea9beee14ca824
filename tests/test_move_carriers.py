"""Carriers of ``move --method location`` leave with their image: a later move never leaves any
image without its data, and the report names every carrier (against the fake Glance)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import load_cloud
from asyncmigrate.carriers import CARRIER_KEY
from asyncmigrate.config import MoveConfig
from asyncmigrate.report import RunResult
from asyncmigrate.storemove import move_images
from tests.conftest import FAST_RETRY, write_clouds_yaml
from tests.fakeglance import FakeGlance, FakeServer


@pytest.fixture
async def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeGlance]:
    """A cloud 'c' showing locations: fast (file), cold and ice (s3), ceph (rbd)."""
    fake = FakeGlance(
        stores={"fast": "", "cold": "", "ice": "", "ceph": ""},
        store_types={"cold": "s3", "ice": "s3", "ceph": "rbd"},
        show_multiple_locations=True,
    )
    async with FakeServer(fake) as server:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds_yaml(tmp_path / "c.yaml", {"c": server.url})))
        yield fake


async def move(old: str, new: str, **kw: Any) -> RunResult:
    """One move of cloud 'c' whose polls and retries never wait."""
    config = MoveConfig(from_store=old, to_store=new, retry=FAST_RETRY, poll_initial=0, poll_max=0, **kw)
    return await move_images(config, await load_cloud("c"))


def dataless(fake: FakeGlance) -> list[str]:
    """Active images none of whose locations serves data."""
    return [i for i, rec in fake.images.items() if rec.status == "active" and fake.backend.readable(rec) is None]


def carriers(fake: FakeGlance, image_id: str) -> list[str]:
    """Ids of the carriers of ``image_id`` that exist."""
    return [i for i, rec in fake.images.items() if rec.properties.get(CARRIER_KEY) == image_id]


def _image(fake: FakeGlance, size: int = 30_000, store: str = "fast") -> tuple[str, bytes]:
    data = os.urandom(size)
    return fake.add_image(data, name="disk", store=store, disk_format="raw", container_format="bare")["id"], data


async def test_moving_on_by_copy_image_retires_the_carrier(fake: FakeGlance) -> None:
    """After a location move into cold, a copy-image move cold → fast retires the carrier
    (deleted, with the data they shared) instead of leaving it active without data."""
    image_id, data = _image(fake)
    first = await move("fast", "cold", method="location")
    (carrier,) = carriers(fake, image_id)
    second = await move("cold", "fast")
    assert dataless(fake) == []
    (result,) = second.images
    assert first.images[0].carrier == carrier and carrier in first.images[0].reason
    assert result.outcome == "moved" and result.retired_carriers == [carrier], result.reason
    assert carrier in result.reason and carrier in fake.deleted
    assert fake.get(image_id)["stores"] == "fast" and fake.backend.readable(fake.images[image_id]) == data
    assert dataless(fake) == []


async def test_moving_on_by_location_retires_the_old_carrier_and_names_the_new(fake: FakeGlance) -> None:
    """cold → ice by location: a new carrier in ice holds the data, the one in cold is retired;
    the report's JSON names both."""
    image_id, data = _image(fake)
    await move("fast", "cold", method="location")
    (old_carrier,) = carriers(fake, image_id)
    run = await move("cold", "ice", method="location")
    (result,) = run.images
    (new_carrier,) = carriers(fake, image_id)
    entry = result.to_json()
    assert result.outcome == "moved" and entry["carrier"] == new_carrier != old_carrier
    assert entry["retired_carriers"] == [old_carrier]
    assert fake.get(new_carrier)["stores"] == "ice" and fake.get(new_carrier)["protected"]
    assert fake.get(image_id)["stores"] == "ice" and fake.backend.readable(fake.images[image_id]) == data
    assert dataless(fake) == []


async def test_a_carrier_holding_other_data_is_left_alone(fake: FakeGlance) -> None:
    """A carrier that also holds data in another store is not ours to delete: the move of its
    image stops with the reason, both stores kept, nothing deleted."""
    image_id, _ = _image(fake)
    await move("fast", "cold", method="location")
    (carrier,) = carriers(fake, image_id)
    fake.images[carrier].data["ice"] = b"other"
    run = await move("cold", "fast")
    (result,) = run.images
    assert result.outcome == "failed" and f"carrier {carrier} holds data in cold,ice" in result.reason
    assert carrier not in fake.deleted and set(fake.get(image_id)["stores"].split(",")) == {"cold", "fast"}
    assert dataless(fake) == []


async def test_a_carrier_whose_bytes_changed_on_the_way_in_is_never_lent(fake: FakeGlance) -> None:
    """One byte flipped on the way into cold (a corrupting proxy: the client sent good bytes,
    Glance hashed bad ones): the carrier's record differs from the image's, so it is deleted —
    unused, this upload's own — and the image tried again; it never gets the bad location."""
    image_id, data = _image(fake)
    fake.faults.flip_upload_byte("*", 1_000, times=1)
    run = await move("fast", "cold", method="location")
    (result,) = run.images
    assert result.outcome == "moved" and result.attempts == 2, result.reason
    (carrier,) = carriers(fake, image_id)
    (bad,) = [i for i in fake.deleted if i != image_id]
    assert result.carrier == carrier and f"carrier {bad} in cold recorded" in result.reason
    assert fake.backend.readable(fake.images[image_id]) == data
    assert fake.backend.readable(fake.images[carrier]) == data and dataless(fake) == []


async def test_an_earlier_runs_carrier_with_other_bytes_is_quarantined_not_used(fake: FakeGlance) -> None:
    """A carrier found in cold whose record is not the image's (an earlier version's bad
    copy): deactivated, marked and named, never deleted (it may share its object) nor lent;
    a new carrier carries the image."""
    image_id, data = _image(fake)
    bad = fake.add_image(
        b"other bytes",
        store="cold",
        os_hidden=True,
        protected=True,
        asyncmigrate_carrier_for=image_id,
        asyncmigrate_carrier_store="cold",
    )["id"]
    run = await move("fast", "cold", method="location")
    (result,) = run.images
    assert result.outcome == "moved", result.reason
    assert f"carrier {bad} in cold (an earlier run's)" in result.reason and "deactivated" in result.reason
    assert fake.get(bad)["status"] == "deactivated" and "asyncmigrate_quarantined" in fake.get(bad)
    new = [c for c in carriers(fake, image_id) if c != bad]
    assert result.carrier == new[0] and bad not in fake.deleted
    cold = [loc["url"] for loc in fake.get(image_id)["locations"] if loc["metadata"].get("store") == "cold"]
    assert cold == [loc["url"] for loc in fake.get(new[0])["locations"]]
    assert fake.backend.readable(fake.images[image_id]) == data


async def test_a_carrier_whose_data_is_in_use_keeps_both(fake: FakeGlance) -> None:
    """An RBD clone of the carrier's snapshot (Nova booted from the moved image): the carrier
    cannot be deleted, so it is protected again and the image is kept in both stores, in use."""
    image_id, data = _image(fake)
    await move("fast", "ceph", method="location")
    (carrier,) = carriers(fake, image_id)
    holder = fake.backend.clone(carrier, "ceph")
    run = await move("ceph", "fast")
    (result,) = run.images
    assert result.outcome == "in-use" and holder in result.reason and "rbd flatten" in result.reason
    assert fake.get(carrier)["protected"] and fake.get(carrier)["status"] == "active"
    assert set(fake.get(image_id)["stores"].split(",")) == {"ceph", "fast"}
    assert dataless(fake) == [] and run.exit_code == 1
    fake.backend.flatten("vms/instance-disk")
    again = await move("ceph", "fast")
    assert again.images[0].outcome == "moved" and again.images[0].retired_carriers == [carrier]
    assert fake.backend.readable(fake.images[image_id]) == data and dataless(fake) == []


async def test_a_failed_copy_image_mark_that_stays_is_reported(fake: FakeGlance) -> None:
    """copy-image into Swift fails above the segment size (os_glance_failed_import names the
    store); --method location then moves it, and the report says the mark stays and why."""
    fake.store_types["cold"] = "swift"
    fake.swift_segment_size = 20_000
    image_id, _ = _image(fake, 30_000)
    first = await move("fast", "cold")
    assert first.images[0].outcome == "failed" and fake.get(image_id)["os_glance_failed_import"] == "cold"
    second = await move("fast", "cold", method="location")
    (result,) = second.images
    assert result.outcome == "moved" and fake.get(image_id)["os_glance_failed_import"] == "cold"
    assert "os_glance_failed_import still names cold" in result.reason and "it stays" in result.reason


async def test_a_leftover_carrier_is_retired_or_reported(fake: FakeGlance) -> None:
    """Carriers an earlier version left in cold (their image moved away, their data deleted with
    it) are found when cold is emptied: retired when their image holds its data elsewhere,
    reported and kept when their image no longer exists; the run then says cold is not empty."""
    moved_on, data = _image(fake)
    gone, _ = _image(fake)
    await move("fast", "cold", method="location")
    left = {i: carriers(fake, i)[0] for i in (moved_on, gone)}
    for image_id in (moved_on, gone):  # what the earlier version did: copy back, drop cold under the carrier
        fake.images[image_id].data["fast"] = data if image_id == moved_on else b"x"
        fake.backend.written(fake.images[image_id], ["fast"])
        fake.backend.drop_location(fake.images[image_id], "cold")
    del fake.images[gone]
    assert sorted(dataless(fake)) == sorted(left.values())
    plan = await move("cold", "ice", dry_run=True)
    assert {(r.id, r.action) for r in plan.images} == {(c, "retire") for c in left.values()}
    run = await move("cold", "ice")
    results = {r.id: r for r in run.images}
    assert results[left[moved_on]].outcome == "retired" and left[moved_on] in fake.deleted
    kept = results[left[gone]]
    assert kept.outcome == "failed" and "no longer exists" in kept.reason and left[gone] in fake.images
    assert run.exit_code == 1 and run.notes[0].startswith("cold still holds 1 of these images")
    assert fake.backend.readable(fake.images[moved_on]) == data
