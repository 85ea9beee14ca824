"""``asyncmigrate verify``: compare two catalogs image by image.

For every source image (after filters, shard and project map): the destination
must hold an image with the same id, the same status, the same settable
attributes, the same size and hashes, and — for shared images — the same
members with the same status.  Images only at the destination are listed as
``extra`` (a difference only with ``strict``).  Nothing is written anywhere.
"""

from __future__ import annotations

import time
from typing import Any

from .clouds import Cloud
from .config import CopyConfig
from .containment import Listing
from .engine import check_endpoint, check_store_filter, list_images, run_pool
from .errors import AsyncMigrateError, Behaviour
from .glance import GlanceClient, client_options, open_glance
from .identity import map_members
from .metadata import differences
from .progress import Emit, ignore
from .report import ImageResult, Outcome, RunResult
from .selection import select
from .transfer import same_data

__all__ = ["MATCH", "compare_image", "verify_catalogs"]

MATCH, DIFFERS, MISSING, EXTRA = Outcome.MATCH, Outcome.DIFFERS, Outcome.MISSING, Outcome.EXTRA


def _view(image: dict[str, Any], config: CopyConfig) -> tuple[dict[str, Any], bool]:
    pmap = config.project_map
    if pmap is None:
        return image, config.keep_owner
    owner = pmap.owner(image)
    if owner is None or not config.keep_owner:
        return {k: v for k, v in image.items() if k != "owner"}, False
    return {**image, "owner": owner}, True


async def compare_image(src: GlanceClient, dst: GlanceClient, image: dict[str, Any], config: CopyConfig) -> list[str]:
    """Every difference between the source image and the destination's (empty: they match)."""
    other = await dst.get_image(image["id"])
    if other is None:
        return ["missing at the destination"]
    problems: list[str] = []
    if image.get("status") != other.get("status"):
        problems.append(f"status {image.get('status')} != {other.get('status')}")
    view, keep_owner = _view(image, config)
    diffs = differences(view, other, keep_owner=keep_owner, ignore=frozenset())
    problems += [f"{key}: {a!r} != {b!r}" for key, (a, b) in diffs.items()]
    if not same_data(image, other):
        problems.append(
            f"data: size {image.get('size')} / {other.get('size')}, "
            f"checksum {image.get('checksum')} / {other.get('checksum')}"
        )
    if image.get("visibility") == "shared":
        listed = {m["member_id"]: m.get("status", "pending") for m in await src.list_members(image["id"])}
        members, _ = map_members(config.project_map, listed)
        theirs = {m["member_id"]: m.get("status") for m in await dst.list_members(image["id"])}
        if members != theirs:
            problems.append(f"members {sorted(members.items())} != {sorted(theirs.items())}")
    return problems


async def verify_catalogs(
    config: CopyConfig,
    src_cloud: Cloud,
    dst_cloud: Cloud,
    *,
    strict: bool = False,
    emit: Emit = ignore,
) -> RunResult:
    """Compare the catalogs; each image's outcome is match, differs, missing or extra."""
    started = time.monotonic()
    kw = client_options(config)
    async with open_glance(src_cloud, **kw) as src, open_glance(dst_cloud, **kw) as dst:
        await check_endpoint(src, "source")
        await check_endpoint(dst, "destination")
        await check_store_filter(src, config.selection)
        seen: set[str] = set()

        async def handle(image: dict[str, Any]) -> ImageResult:
            seen.add(image["id"])
            result = ImageResult(
                id=image["id"], name=image.get("name"), action="verify", outcome="", size=int(image.get("size") or 0)
            )
            try:
                problems = await compare_image(src, dst, image, config)
            except AsyncMigrateError as exc:
                if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
                    raise
                problems = [f"could not compare: {exc}"]
            missing = problems == ["missing at the destination"]
            result.outcome = MATCH if not problems else MISSING if missing else DIFFERS
            result.reason = "; ".join(problems)
            return result

        source = Listing(select(list_images(src, config.image_ids), config.selection), "source listing", emit)
        results = await run_pool(source, handle, concurrency=config.concurrency, emit=emit)
        incomplete = source.incomplete
        # Extras only make sense against a complete source listing.
        if not config.image_ids and incomplete is None:
            extras = Listing(list_images(dst, ()), "destination listing", emit)
            async for other in extras:
                if other["id"] not in seen and config.selection.wants(other):
                    results.append(
                        ImageResult(
                            id=other["id"],
                            name=other.get("name"),
                            action="verify",
                            outcome=EXTRA if strict else "extra-ignored",
                            reason="only at the destination",
                        )
                    )
            incomplete = extras.incomplete
    return RunResult(images=results, seconds=time.monotonic() - started, incomplete=incomplete)
