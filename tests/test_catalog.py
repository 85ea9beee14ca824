"""Per-image cost: listings in pages of 1,000, the destination decided from one
listing, at most three destination requests for a fresh copy, re-runs in O(pages)."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from asyncmigrate import copy_images
from asyncmigrate.capabilities import Capabilities, StoreInfo, parse_versions
from asyncmigrate.progress import Event, ImageQueued
from asyncmigrate.verify import verify_catalogs
from tests.conftest import Clouds, fast_config

_IMAGE_PATH = re.compile(r"^/v2/images/([0-9a-f-]{36})(/.*)?$")


def _seed(clouds: Clouds, n: int, size: int = 1024) -> list[str]:
    return [
        clouds.src.add_image(os.urandom(size), name=f"img-{i}", disk_format="raw", container_format="bare")["id"]
        for i in range(n)
    ]


def _per_image(requests: list) -> Counter[tuple[str, str]]:  # type: ignore[type-arg]
    """(method, path kind) counts of requests naming one image (create is counted by its body's id)."""
    kinds: Counter[tuple[str, str]] = Counter()
    for r in requests:
        if r.method == "POST" and r.path == "/v2/images":
            kinds[("POST", "create")] += 1
        elif match := _IMAGE_PATH.match(r.path):
            kinds[(r.method, match[2] or "image")] += 1
    return kinds


def test_parse_versions_reads_current_and_the_float_quirk() -> None:
    """The CURRENT v2 version wins; Ussuri-Wallaby's "v2.1" CURRENT beside "v2.9" SUPPORTED is 2.10."""
    doc = {"versions": [{"id": "v2.17", "status": "CURRENT"}, {"id": "v2.15", "status": "SUPPORTED"}]}
    assert parse_versions(doc) == (2, 17)
    quirk = {"versions": [{"id": "v2.1", "status": "CURRENT"}, {"id": "v2.9", "status": "SUPPORTED"}]}
    assert parse_versions(quirk) == (2, 10)
    assert parse_versions({"versions": [{"id": "v2.6", "status": "CURRENT"}, {"id": "v1.1", "status": "SUPPORTED"}]})
    assert parse_versions({"versions": [{"id": "v1.1", "status": "CURRENT"}]}) is None


@pytest.mark.parametrize(
    ("version", "visibility_all", "expected"),
    [
        ((2, 17), True, [{"visibility": "all", "os_hidden": "false"}, {"visibility": "all", "os_hidden": "true"}]),
        (
            (2, 7),
            False,
            [
                {"os_hidden": "false"},
                {"os_hidden": "true"},
                {"visibility": "community", "os_hidden": "false"},
                {"visibility": "community", "os_hidden": "true"},
            ],
        ),
        ((2, 6), False, [{}, {"visibility": "community"}]),
    ],
)
def test_listing_queries_follow_the_api_version(
    version: tuple[int, int], visibility_all: bool, expected: list[dict[str, str]]
) -> None:
    """Every version gets the queries that list all of its images, in pages of 1,000, never os_hidden before 2.7."""
    caps = Capabilities(cloud="c", api_version=version, stores=None, visibility_all=visibility_all)
    assert list(caps.listing_queries()) == [{**q, "member_status": "all", "limit": "1000"} for q in expected]


def test_single_store_capabilities_refuse_store_flags() -> None:
    """A single-store cloud has no stores to name: --store/--dst-store are usage errors naming the cause."""
    from asyncmigrate.errors import UsageError

    single = Capabilities(cloud="old", api_version=(2, 15), stores=None)
    with pytest.raises(UsageError, match="not multi-store"):
        single.require_store("file", "--store")
    multi = Capabilities(cloud="new", api_version=(2, 17), stores=(StoreInfo("a", default=True), StoreInfo("b")))
    assert multi.default_store == "a" and multi.require_store("b", "--dst-store").id == "b"


async def test_listing_uses_pages_of_1000(clouds: Clouds) -> None:
    """With a server serving 1,000 a page, 60 images are one page per listing pass on both sides,
    and one page per pass of the re-check of images updated while the listing ran."""
    clouds.src.limit_max = 1000
    _seed(clouds, 60)
    run = await copy_images(fast_config(concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert run.failed == 0 and len(run.images) == 60
    for fake in (clouds.src, clouds.dst):
        listings = [
            r for r in fake.requests if r.method == "GET" and r.path == "/v2/images" and "limit=1000" in r.query
        ]
        # os_hidden=false, os_hidden=true, then the same with updated_at=gte:<the listing's start>
        assert len(listings) == 4, [r.query for r in listings]
        assert ["updated_at=gte:" in r.query for r in listings] == [False, False, True, True]
        assert all("marker=" not in r.query for r in listings)


async def test_fresh_copy_sends_three_requests_per_image(clouds: Clouds) -> None:
    """A fresh copy sends the destination create, upload and one read per image: no look-up before the create."""
    ids = _seed(clouds, 40)
    run = await copy_images(fast_config(concurrency=4), clouds.src_cloud, clouds.dst_cloud)
    assert run.failed == 0 and run.count("copied") == 40
    per_image = _per_image(clouds.dst.requests)
    assert per_image == Counter({("POST", "create"): 40, ("PUT", "/file"): 40, ("GET", "image"): 40})
    for image_id in ids:  # the read comes after the upload, never before the create
        mine = [r for r in clouds.dst.requests if image_id in r.path]
        assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in mine] == [("PUT", "file"), ("GET", image_id)]
    constant = [r for r in clouds.dst.requests if not _IMAGE_PATH.match(r.path) and r.path != "/v2/images"]
    assert len(constant) <= 5, [(r.method, r.path) for r in constant]  # discovery, done once


async def test_noop_rerun_costs_listing_pages_not_requests_per_image(clouds: Clouds) -> None:
    """A re-run with nothing to do reads the destination's listing and nothing per image."""
    _seed(clouds, 300, size=64)
    first = await copy_images(fast_config(concurrency=8), clouds.src_cloud, clouds.dst_cloud)
    assert first.failed == 0
    before = len(clouds.dst.requests)
    again = await copy_images(fast_config(concurrency=8), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in again.images} == {"skipped"} and len(again.images) == 300
    rerun = clouds.dst.requests[before:]
    assert not _per_image(rerun), _per_image(rerun)
    assert len(rerun) < 15, [(r.method, r.path, r.query) for r in rerun]


async def test_rerun_reads_in_full_only_the_image_that_differs(clouds: Clouds) -> None:
    """Only an image whose listing entry differs is read in full, and the conflict names the attribute."""
    ids = _seed(clouds, 20)
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    clouds.dst.images[ids[3]].name = "renamed at the destination"
    before = len(clouds.dst.requests)
    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    (conflict,) = [r for r in run.images if r.outcome == "conflict"]
    assert conflict.id == ids[3] and "name" in conflict.reason
    reads = [r.path for r in clouds.dst.requests[before:] if _IMAGE_PATH.match(r.path)]
    assert reads == [f"/v2/images/{ids[3]}"]


async def test_verify_of_matching_catalogs_reads_only_members(clouds: Clouds) -> None:
    """verify decides matching images from the destination's listing; only shared images' members are read."""
    ids = _seed(clouds, 50)  # glance's default visibility: shared
    for image_id in ids[:40]:
        clouds.src.images[image_id].visibility = "private"
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    before = len(clouds.dst.requests)
    run = await verify_catalogs(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    assert {r.outcome for r in run.images} == {"match"} and len(run.images) == 50
    assert _per_image(clouds.dst.requests[before:]) == Counter({("GET", "/members"): 10})


async def test_image_created_by_someone_else_after_the_listing_is_uploaded_into(clouds: Clouds) -> None:
    """The index said absent, the create answers 409: the image is read and, still queued, uploaded into."""
    data = os.urandom(200_000)
    image = clouds.src.add_image(data, name="raced", disk_format="raw", container_format="bare")

    def race(event: Event) -> None:
        # The destination catalog was read before the first image was queued.
        if isinstance(event, ImageQueued):
            clouds.dst.add_image(None, id=image["id"], name="raced", disk_format="raw", container_format="bare")

    run = await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud, emit=race)
    assert [(r.action, r.outcome) for r in run.images] == [("copy", "copied")]
    assert clouds.dst.data(image["id"]) == data
    assert [r.status for r in clouds.dst.requests_matching("POST", r"^/v2/images$")] == [409]


async def test_plan_of_a_copied_catalog_sends_nothing_per_image(clouds: Clouds) -> None:
    """plan over copied shared images without members reads the destination's listing only, as a re-run does."""
    ids = _seed(clouds, 30)  # glance's default visibility: shared, no members
    clouds.src.add_member(ids[0], "b" * 32)  # one image that has a member: its members are compared
    await copy_images(fast_config(), clouds.src_cloud, clouds.dst_cloud)
    before = len(clouds.dst.requests)
    plan = await copy_images(fast_config(dry_run=True), clouds.src_cloud, clouds.dst_cloud)
    assert {r.action for r in plan.images} == {"none"} and len(plan.images) == 30
    assert _per_image(clouds.dst.requests[before:]) == Counter({("GET", "/members"): 1})
