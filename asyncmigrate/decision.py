"""Deciding what to do with one image: pure functions of the source image and what the
destination holds under the same id, shared by every attempt of a copy and by its dry run.

:func:`destination_view` is the source image as the destination should hold it (project
map, pre-flight rewrites); :func:`decide` says what to do with it given the destination's
record — an :class:`~asyncmigrate.catalog.Entry` from the run's destination index, or one
``GET``; :func:`finish_plan` which finishing steps a dry run would still take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .catalog import Entry, fingerprint
from .config import CopyConfig
from .errors import DestinationBusy
from .metadata import differences
from .owned import DestinationProperties
from .preflight import Judgement, judge
from .report import Action

__all__ = [
    "ATTRIBUTES_DIFFER",
    "BUSY",
    "COPYABLE",
    "HAS_DATA",
    "decide",
    "destination_view",
    "finish_plan",
    "keeps_owner",
    "same_data",
]

COPYABLE = frozenset({"active", "deactivated", "queued"})
HAS_DATA = frozenset({"active", "deactivated"})
BUSY = frozenset({"saving", "uploading", "importing"})

# decide()'s reason when only fingerprints were compared: the caller reads the
# destination image in full to say which attributes differ.
ATTRIBUTES_DIFFER = "destination differs in its attributes"


def same_data(src: Mapping[str, Any], dst: Mapping[str, Any]) -> bool:
    """Do the two records describe the same bytes (size and every comparable hash)?"""
    return Entry.of(dst).same_data(src)


def destination_view(
    image: dict[str, Any],
    config: CopyConfig,
    property_quota: int | None = None,
    owned: DestinationProperties | None = None,
) -> Judgement:
    """The source image as the destination should hold it: the project map applied
    (owner), then the pre-flight rewrites and traps (:func:`~asyncmigrate.preflight.judge`);
    without the properties the destination sets itself (``owned``: never sent nor compared).

    A view without ``owner`` means the owner is not kept (``--no-owner``, or a
    project map that leaves the image to the caller's project).
    """
    pmap = config.project_map
    view = owned.strip(image) if owned is not None else image
    if not config.keep_owner:
        view = {k: v for k, v in image.items() if k != "owner"}
    elif pmap is not None:
        owner = pmap.owner(image)
        view = {k: v for k, v in image.items() if k != "owner"} if owner is None else {**image, "owner": owner}
    options = config.preflight
    if property_quota is not None and options.property_quota is None:
        options = dataclasses.replace(options, property_quota=property_quota)
    return judge(view, options)


def keeps_owner(view: Mapping[str, Any]) -> bool:
    # A source image without an owner gets the caller's project at the
    # destination: there is nothing to compare (old tooling makes such images).
    return view.get("owner") is not None


def decide(src: Mapping[str, Any], dst: Entry | Mapping[str, Any] | None) -> tuple[str, str]:
    """What to do with ``src`` (the destination view) given the destination image of the same id.

    The owner is compared when the view has one (:func:`destination_view` drops it
    when it is not kept).  Returns ``(action, reason)``; the reason explains skips
    and conflicts.
    With a full destination record the reason names the attributes that
    differ; with an :class:`Entry` it is :data:`ATTRIBUTES_DIFFER`.
    """
    status = src.get("status")
    if status not in COPYABLE:
        return Action.UNSUPPORTED, f"source image is {status!r}: only active, deactivated and queued images are copied"
    has_data = status in HAS_DATA
    if dst is None:
        return (Action.COPY if has_data else Action.CREATE), ""
    full = dst if isinstance(dst, Mapping) else None
    entry = Entry.of(dst) if isinstance(dst, Mapping) else dst
    if entry.status in BUSY:
        raise DestinationBusy(f"destination image is {entry.status!r}")
    owner_differs = keeps_owner(src) and src.get("owner") != entry.owner
    formats = (src.get("disk_format"), src.get("container_format"))
    # A converting destination changes the formats, size and hashes on import.
    converted = formats != (entry.disk_format, entry.container_format) and has_data and entry.converted_from(src)
    formats_differ = formats != (entry.disk_format, entry.container_format) and not converted
    if owner_differs or formats_differ or fingerprint(src) != entry.attrs:
        if full is None:
            return Action.CONFLICT, ATTRIBUTES_DIFFER
        diffs = differences(src, full, keep_owner=keeps_owner(src))
        return Action.CONFLICT, "destination differs in: " + (", ".join(diffs) or "attributes")
    if entry.protected and not src.get("protected"):
        return Action.CONFLICT, "destination is protected, source is not"
    if entry.status == "queued":
        return (Action.UPLOAD if has_data else Action.FINISH), ""
    if entry.status in HAS_DATA:
        if not has_data:
            return Action.CONFLICT, "destination holds data, the source has none"
        if not converted and not entry.same_data(src):
            return Action.CONFLICT, "destination holds other data (size or hash differ)"
        if entry.status == "deactivated" and status == "active":
            return Action.CONFLICT, "destination is deactivated, source is active"
        return Action.FINISH, ""
    return Action.FAIL, f"destination image is {entry.status!r} and cannot be written"


def finish_plan(src: dict[str, Any], dst: Entry, *, members_differ: bool) -> tuple[str, str]:
    """For a dry run: which finishing steps remain for an image whose data is there."""
    steps = ["sync members"] if members_differ else []
    if src.get("protected") and not dst.protected:
        steps.append("set protected")
    if src.get("status") == "deactivated" and dst.status == "active":
        steps.append("deactivate")
    if not steps:
        return Action.NONE, "already at the destination"
    return Action.FINISH, "data is there; " + ", ".join(steps)
