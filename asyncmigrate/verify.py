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

from .catalog import DestinationIndex, Entry, list_images
from .clouds import Cloud
from .config import CopyConfig
from .containment import Listing
from .drift import is_level
from .errors import AsyncMigrateError, BadCopy, Behaviour
from .glance import GlanceClient, client_options, open_glance
from .identity import map_members
from .integrity import recognised
from .metadata import differences
from .owned import DestinationProperties
from .pairrun import destination_owned, start_run
from .pool import run_pool
from .progress import Emit, ignore
from .report import ImageResult, Outcome, RunResult
from .selection import select
from .transfer import destination_view

__all__ = ["MATCH", "compare_image", "verify_catalogs"]

MATCH, DIFFERS, MISSING, EXTRA = Outcome.MATCH, Outcome.DIFFERS, Outcome.MISSING, Outcome.EXTRA


async def compare_image(
    src: GlanceClient,
    dst: GlanceClient,
    image: dict[str, Any],
    config: CopyConfig,
    index: DestinationIndex | None = None,
    owned: DestinationProperties | None = None,
    result: ImageResult | None = None,
) -> list[str]:
    """Every difference between the source image and the destination's (empty: they match).

    A source member the project map does not map is a difference: the destination cannot
    share the image with it.  With ``config.drop_unmapped_members`` it is not, and it is
    still named (in ``result``, when given: with the owner and members the image should have).

    An image the destination converted on import (another disk format, the
    source's virtual size) matches when everything else does.

    The source image is compared as the destination should hold it (project
    map, ``--certificate-map``/``--strip-signature``: :func:`destination_view`).
    With the run's destination ``index`` an image whose listing entry matches
    costs no request; the others (and shared images' members) are read.  The properties the
    destination sets itself (``owned``) are no difference.  A destination copy an earlier run
    quarantined (:mod:`asyncmigrate.integrity`) raises :class:`~asyncmigrate.errors.BadCopy`:
    it is not a difference to level.
    """
    owned = owned if owned is not None else DestinationProperties()
    view = destination_view(image, config, owned=owned).image
    keep_owner = view.get("owner") is not None
    result = result if result is not None else ImageResult.of(image)
    result.owner = view.get("owner")
    entry = None if index is None else index.get(image["id"])
    if index is not None and entry is None:
        return ["missing at the destination"]
    problems: list[str] = []
    if entry is not None and view.get("status") in ("active", "deactivated"):
        result.verification = entry.compared_by(view)  # what "same data" rests on
    if entry is None or not is_level(view, entry):  # the test sync uses: the two never disagree
        other = await dst.get_image(image["id"])
        if other is None:
            return ["missing at the destination"]
        if (bad := recognised(other)) is not None:
            raise bad
        other = owned.strip(other)
        if view.get("status") != other.get("status"):
            problems.append(f"status {view.get('status')} != {other.get('status')}")
        converted = Entry.of(other).converted_from(view)
        # A converting destination changed the formats and the bytes, nothing else.
        formats = frozenset({"disk_format", "container_format"}) if converted else frozenset()
        diffs = differences(view, other, keep_owner=keep_owner, ignore=formats)
        problems += [f"{key}: {a!r} != {b!r}" for key, (a, b) in diffs.items()]
        if view.get("status") in ("active", "deactivated"):
            result.verification = "converted" if converted else Entry.of(other).compared_by(view)
        if not converted and not Entry.of(other).same_data(view):
            problems.append(
                f"data: size {view.get('size')} / {other.get('size')}, "
                f"checksum {view.get('checksum')} / {other.get('checksum')}"
            )
    if view.get("visibility") == "shared":  # members are not in any listing
        listed = await src.member_statuses(image["id"])
        members, left_out = map_members(config.project_map, listed)
        result.members, result.members_left_out = members, left_out
        if left_out and not config.drop_unmapped_members:
            problems.append(f"members left out (no mapping in --project-map): {', '.join(left_out)}")
        theirs = await dst.member_statuses(image["id"])
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
    async with (
        open_glance(src_cloud, **kw, role="source", emit=emit) as src,
        open_glance(dst_cloud, **kw, role="destination", emit=emit) as dst,
    ):
        run = await start_run(config, src, dst, emit, await destination_owned(config, None, dst_cloud.endpoint))
        index = run.index
        seen: set[str] = set()

        async def handle(image: dict[str, Any]) -> ImageResult:
            seen.add(image["id"])
            result = ImageResult.of(image, "verify")
            try:
                problems = await compare_image(src, dst, image, config, index, run.owned, result)
            except BadCopy as exc:
                result.outcome, result.reason = Outcome.QUARANTINED, str(exc)
                return result
            except AsyncMigrateError as exc:
                if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
                    raise
                problems = [f"could not compare: {exc}"]
            missing = problems == ["missing at the destination"]
            result.outcome = MATCH if not problems else MISSING if missing else DIFFERS
            if not problems and result.members_left_out:  # the operator chose to leave them out: still named
                problems = [f"members left out by --drop-unmapped-members: {', '.join(result.members_left_out)}"]
            result.reason = "; ".join(problems)
            return result

        images = select(list_images(src, run.src_caps, config.image_ids), config.selection)
        source = Listing(images, "source listing", emit)
        results = await run_pool(source, handle, concurrency=config.concurrency, emit=emit)
        incomplete = source.incomplete
        # Extras only make sense against a complete source listing.
        if not config.image_ids and incomplete is None:
            extras = Listing(list_images(dst, run.dst_caps), "destination listing", emit)
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
    return RunResult(
        images=results,
        seconds=time.monotonic() - started,
        incomplete=incomplete,
        clouds=run.clouds(),
    )
