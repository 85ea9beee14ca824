"""Soak: a thousand small images and a few large ones copied between two fake Glances behind a
fake Keystone, under random faults; at the end nothing may be lost, altered, deleted or left
saving, and a second run must do nothing.

Not in the default run::

    .venv/bin/python -m pytest -m soak tests/test_soak.py -q -s

``ASYNCMIGRATE_SOAK_RATE`` (default 0.05) is the share of images given a fault and
``ASYNCMIGRATE_SOAK_SEED`` (default 1) seeds everything random — sizes, bytes, attributes,
faults — so a failing run can be repeated with the seed it prints.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncmigrate import CopyConfig, RetryPolicy, Timeouts, copy_images, load_cloud
from asyncmigrate.progress import Event, Retrying
from tests.fakeglance import QCOW2_MAGIC, FakeGlance
from tests.fakekeystone import GuardedClouds, guarded_clouds

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

KiB, MiB = 1024, 1024 * 1024
SMALL, SMALL_MAX = 1000, 64 * KiB
LARGE, LARGE_SIZE = 3, 64 * MiB
LISTING_REQUESTS = 40  # the probe and the pages of both listing passes, at 25 images a page
TAGS = ("linux", "windows", "gpu", "legacy", "golden", "test")
PER_IMAGE_FAULTS = ("cut_download", "hang_download", "flip_byte", "cut_upload", "503_upload")
GLOBAL_FAULTS = ("503_create", "503_listing")
# Attributes that legitimately differ between two clouds (as in tests/test_copy.py).
PER_CLOUD = {"created_at", "updated_at", "stores", "locations", "direct_url"}

CONFIG = CopyConfig(
    concurrency=8,
    chunk_size=256 * KiB,
    retry=RetryPolicy(attempts=6, deadline=600, wait_initial=0, wait_max=0, wait_jitter=0),
    # Short, so a hung download costs a second; long enough that the one event loop (both
    # fakes and the client) busy with a 64 MiB image does not trip it.
    timeouts=Timeouts(connect=5, idle_read=1.0),
)


@pytest.fixture
async def kc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GuardedClouds]:
    """Source and destination fakes that accept only tokens of one fake Keystone."""
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    async with guarded_clouds(tmp_path / "clouds.yaml") as clouds:
        # The owners and members of the images are projects the destination's Keystone knows.
        clouds.keystone.projects.update({f"member-{m}": f"member {m}" for m in range(3)})
        clouds.keystone.projects.update({f"project-{p}": f"project {p}" for p in range(1, 21)})
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds.clouds_yaml))
        yield clouds


def _attrs(rng: random.Random, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "name": name,
        "visibility": rng.choices(("private", "public", "shared", "community"), (40, 25, 20, 15))[0],
        "os_hidden": rng.random() < 0.1,
        "protected": rng.random() < 0.05,
        "min_disk": rng.choice((0, 0, 1, 10, 40)),
        "min_ram": rng.choice((0, 0, 512, 2048)),
        "disk_format": rng.choice(("raw", "raw", "qcow2", "iso", "vmdk")),
        "container_format": "bare",
        "tags": sorted(rng.sample(TAGS, rng.randint(0, 3))),
    }
    if rng.random() < 0.1:
        attrs["owner"] = f"project-{rng.randint(1, 20)}"
    for k in range(rng.randint(0, 6)):
        attrs[f"soak_prop_{k}"] = f"{rng.getrandbits(32):08x}"
    return attrs


def _small_bytes(rng: random.Random, disk_format: str) -> bytes:
    size = 0 if rng.random() < 0.02 else rng.randint(1, SMALL_MAX)
    if disk_format == "qcow2":  # the fake checks the magic, as glance's format inspector does
        return QCOW2_MAGIC + rng.randbytes(max(size, 64) - len(QCOW2_MAGIC))
    return rng.randbytes(size)


def _large_bytes(rng: random.Random) -> bytes:
    # Each MiB is a different rotation of one random block: cheap, and every image differs.
    block = rng.randbytes(MiB)
    return b"".join(block[k:] + block[:k] for k in (rng.randrange(MiB) for _ in range(LARGE_SIZE // MiB)))


def _seed(src: FakeGlance, rng: random.Random) -> dict[str, tuple[int | None, str | None]]:
    """Fill the source; returns image id → (size, sha256), both None for a queued image."""
    catalog: dict[str, tuple[int | None, str | None]] = {}
    for n in range(SMALL + LARGE):
        attrs = _attrs(rng, f"soak-{n}")
        if n >= SMALL:
            attrs.update(disk_format="raw", protected=False)
            data: bytes | None = _large_bytes(rng)
        elif rng.random() < 0.05:
            data = None
        else:
            data = _small_bytes(rng, attrs["disk_format"])
            if rng.random() < 0.03:
                attrs["status"] = "deactivated"
        image_id = str(src.add_image(data, **attrs)["id"])
        if attrs["visibility"] == "shared":
            for m in range(rng.randint(0, 3)):
                src.add_member(image_id, f"member-{m}", rng.choice(("accepted", "pending", "rejected")))
        catalog[image_id] = (None, None) if data is None else (len(data), hashlib.sha256(data).hexdigest())
    return catalog


def _arm(kc: GuardedClouds, rng: random.Random, rate: float, catalog: dict[str, Any]) -> collections.Counter[str]:
    """Give about ``rate`` of the images a fault (every large one one, if rate > 0); returns
    how many of each kind were armed."""
    armed: collections.Counter[str] = collections.Counter()
    src, dst = kc.src.faults, kc.dst.faults
    # Global 503s fire on the nth matching request from now: distinct even n, so no request
    # fails twice in a row (its retry is the next, odd, one) and the single lister cannot run
    # out of attempts on injected faults alone; shuffled so they land all along the run.
    slots = {
        kind: rng.sample(range(2, 2 * count + 1, 2), count)
        for kind, count in (("503_create", len(catalog) // 2), ("503_listing", LISTING_REQUESTS // 2))
    }
    for image_id, (size, _) in catalog.items():
        large = bool(size and size >= LARGE_SIZE)
        if not (large and rate > 0) and rng.random() >= rate:
            continue
        # Queued and empty images have no bytes to cut; large ones get a byte fault.
        kinds = PER_IMAGE_FAULTS if large else (PER_IMAGE_FAULTS if size else ()) + GLOBAL_FAULTS
        choices = [k for k in kinds if slots.get(k, True)]
        if not choices:
            continue
        kind = rng.choice(choices)
        at = rng.randrange(size) if size else 0
        if kind == "cut_download":
            src.cut_download_after(image_id, at)
        elif kind == "hang_download":
            src.hang_download_after(image_id, at)
        elif kind == "flip_byte":
            src.flip_byte(image_id, at, times=1)
        elif kind == "cut_upload":
            dst.cut_upload_after(image_id, at)
        elif kind == "503_upload":
            dst.fail_next("PUT", rf"^/v2/images/{image_id}/file$", 503, retry_after=0)
        elif kind == "503_create":  # whichever image's create comes nth
            dst.fail_next("POST", r"^/v2/images$", 503, retry_after=0, nth=slots[kind].pop())
        else:  # a listing page
            src.fail_next("GET", r"^/v2/images$", 503, retry_after=0, nth=slots[kind].pop())
        armed[kind] += 1
    if rate > 0:
        # The fake holds one token expiry at a time: one download's, one upload's.
        src.expire_token_once("GET", r"/file$", nth=rng.randint(1, len(catalog) // 2))
        dst.expire_token_once("PUT", r"/file$", nth=rng.randint(1, len(catalog) // 2))
        armed["token_expired"] += 2
    return armed


def _fired(kc: GuardedClouds) -> collections.Counter[str]:
    """The faults the fakes' request logs show (a flipped byte leaves no trace there)."""
    fired: collections.Counter[str] = collections.Counter()
    for side, fake in (("src", kc.src), ("dst", kc.dst)):
        for r in fake.requests:
            if r.fault == "fail_next":
                fired[{"GET": "503_listing", "POST": "503_create"}.get(r.method, "503_upload")] += 1
            elif r.fault == "client_disconnected":
                fired[f"{side}_disconnect_seen"] += 1
            elif r.fault:
                fired[r.fault] += 1
    return fired


def _count_401(fake: FakeGlance) -> dict[str, int]:
    return dict(collections.Counter(r.method for r in fake.requests if r.status == 401))


def _losses(kc: GuardedClouds, catalog: dict[str, tuple[int | None, str | None]]) -> list[str]:
    """Every way the destination differs from the source, one line each (empty: no loss)."""
    problems = [f"{i}: missing at the destination" for i in catalog if i not in kc.dst.images]
    problems += [f"{i}: not on the source" for i in kc.dst.images if i not in catalog]
    for image_id, (_, digest) in catalog.items():
        if image_id not in kc.dst.images:
            continue
        src_view, dst_view = kc.src.get(image_id), kc.dst.get(image_id)
        src_attrs = {k: v for k, v in src_view.items() if k not in PER_CLOUD}
        dst_attrs = {k: v for k, v in dst_view.items() if k not in PER_CLOUD}
        if dst_attrs != src_attrs:
            diff = sorted(k for k in src_attrs.keys() | dst_attrs.keys() if src_attrs.get(k) != dst_attrs.get(k))
            problems.append(f"{image_id}: attributes differ: {diff}")
        if digest is not None and hashlib.sha256(kc.dst.data(image_id)).hexdigest() != digest:
            problems.append(f"{image_id}: bytes differ")
        src_members = {m: r.status for m, r in kc.src.members.get(image_id, {}).items()}
        if {m: r.status for m, r in kc.dst.members.get(image_id, {}).items()} != src_members:
            problems.append(f"{image_id}: members differ")
    problems += [f"{i}: left saving" for i, rec in kc.dst.images.items() if rec.status == "saving"]
    problems += [f"DELETE {r.path}" for r in kc.dst.requests if r.method == "DELETE"]
    return problems


async def test_soak_copies_everything_under_random_faults(kc: GuardedClouds) -> None:
    """~1,000 images with random attributes, sizes and faults all arrive exact; a re-run does nothing."""
    rate = float(os.environ.get("ASYNCMIGRATE_SOAK_RATE", "0.05"))
    seed = int(os.environ.get("ASYNCMIGRATE_SOAK_SEED", "1"))
    assert 0 <= rate <= 1, "ASYNCMIGRATE_SOAK_RATE is a share of the images, 0 to 1"
    rng = random.Random(seed)
    catalog = _seed(kc.src, rng)
    armed = _arm(kc, rng, rate, catalog)
    src_cloud, dst_cloud = await load_cloud("src"), await load_cloud("dst")
    retries: list[Retrying] = []

    def emit(event: Event) -> None:
        if isinstance(event, Retrying):
            retries.append(event)

    started = time.monotonic()
    run = await copy_images(CONFIG, src_cloud, dst_cloud, emit=emit)
    wall = time.monotonic() - started
    outcomes = collections.Counter(r.outcome for r in run.images)
    total_bytes = sum(size or 0 for size, _ in catalog.values())
    print(
        f"\nsoak seed={seed} rate={rate}: {len(catalog)} images, {total_bytes / MiB:.1f} MiB in {wall:.1f} s"
        f"\n  outcomes: {dict(outcomes)}"
        f"\n  faults armed: {dict(sorted(armed.items()))}"
        f"\n  faults seen in the fakes' logs: {dict(sorted(_fired(kc).items()))}"
        f"\n  image retries: {len(retries)} (rewound {sum(r.rewound for r in retries) / MiB:.1f} MiB), "
        f"max attempts {max(r.attempts for r in run.images)}"
        f"\n  401s answered (one token expiry per side; the rest carried the expired token): "
        f"src {_count_401(kc.src)}, dst {_count_401(kc.dst)}"
    )
    failed = [(r.id, r.outcome, r.reason) for r in run.images if r.outcome not in ("copied", "created")]
    assert not failed, failed
    assert len(run.images) == len(catalog)
    problems = _losses(kc, catalog)
    assert not problems, f"{len(problems)} problems, e.g. {problems[:20]}"

    kc.src.faults.clear()
    kc.dst.faults.clear()
    writes = len([r for r in kc.dst.requests if r.method != "GET"])
    started = time.monotonic()
    again = await copy_images(CONFIG, src_cloud, dst_cloud)
    print(
        f"  second run: {dict(collections.Counter(r.outcome for r in again.images))} "
        f"in {time.monotonic() - started:.1f} s"
    )
    assert {r.outcome for r in again.images} == {"skipped"} and len(again.images) == len(catalog)
    assert len([r for r in kc.dst.requests if r.method != "GET"]) == writes
