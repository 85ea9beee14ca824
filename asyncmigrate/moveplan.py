"""Pure judgements of a store move: what to do with one image (:func:`plan_move`, the dry run's
and every attempt's), whether the cloud's stores allow the move (:func:`check_stores`), and what
the summary says the old store still holds (:func:`left_in_old`)."""

from __future__ import annotations

from typing import Any

from .capabilities import Capabilities, StoreInfo
from .carriers import stores_of
from .config import MoveConfig
from .errors import UsageError
from .rbd import is_rbd, trash_note
from .report import ImageResult, Outcome
from .upload import IMPORT_LOCK

__all__ = ["Action", "check_stores", "left_in_old", "plan_move"]


class Action:
    """What the plan says to do with one image."""

    MOVE = "move"  # copy into NEW, then drop OLD
    COPY = "copy"  # copy into NEW, keep OLD (--keep-source)
    WAIT = "wait"  # an import into NEW is already running: wait for it
    DROP_OLD = "drop-old"  # already in NEW: only the delete from OLD remains
    NONE = "none"  # in NEW only: done
    SKIP = "skip"  # not in OLD, or not movable (reason says why)


def plan_move(image: dict[str, Any], config: MoveConfig) -> tuple[str, str]:
    """(action, reason) for ``image`` — pure, used for the dry run and each attempt."""
    stores = stores_of(image)
    old, new = config.from_store, config.to_store
    if old not in stores:
        if new in stores:
            return Action.NONE, f"already in {new} only"
        return Action.SKIP, f"not in {old} (stores: {','.join(stores) or 'none'})"
    status = image.get("status")
    if status == "deactivated" and not config.include_deactivated:
        return Action.SKIP, (
            "deactivated: copy-image needs an active image; --include-deactivated reactivates it, "
            "moves it and deactivates it again"
        )
    if status not in ("active", "deactivated"):
        return Action.SKIP, f"image is {status!r}: only active images can be moved"
    if new in stores_of(image, "os_glance_importing_to_stores") or (new in stores and image.get(IMPORT_LOCK)):
        return Action.WAIT, f"an import into {new} is already running"
    if new in stores:
        if config.keep_source:
            return Action.NONE, f"in {new}; {old} kept (--keep-source)"
        return Action.DROP_OLD, f"in {old} and {new}: nothing moves, only the delete from {old} remains"
    return (Action.COPY if config.keep_source else Action.MOVE), f"data only in {old}: all of it moves"


def check_stores(caps: Capabilities, config: MoveConfig) -> None:
    """A one-line usage error for a single-store cloud, an unknown store, or a
    location move into a file store (Glance refuses file:// locations)."""
    if not caps.multi_store:
        raise UsageError(
            f"cloud {caps.cloud!r} is not multi-store (GET /v2/info/stores: 404): 'move' needs stores; "
            "configure enabled_backends in glance-api.conf, or use 'asyncmigrate copy' to another cloud"
        )
    caps.require_store(config.from_store, "--from-store")
    target = caps.require_store(config.to_store, "--to-store")
    for store in sorted(config.selection.stores):
        caps.require_store(store, "--store")
    if config.method == "location" and target.type == "file":
        raise UsageError(
            f"--method location cannot move into {config.to_store!r}: it is a file store and Glance refuses "
            "to add file:// locations; use --method copy-image"
        )


def left_in_old(results: list[ImageResult], old: StoreInfo | None, config: MoveConfig) -> list[str]:
    """What the summary says about OLD: how many of these images are still in it, and why."""
    if config.dry_run:
        return []
    kept = [
        r for r in results if r.action not in (Action.NONE, "") and r.outcome not in (Outcome.MOVED, Outcome.RETIRED)
    ]
    # Skipped for not being in OLD, or a carrier retired meanwhile with its image: not there.
    kept = [
        r
        for r in kept
        if not (r.outcome == Outcome.SKIPPED and (r.reason.startswith("not in") or r.action == "retire"))
    ]
    store = config.from_store
    notes = []
    if kept:
        counts: dict[str, int] = {}
        for r in kept:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        why = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        notes.append(f"{store} still holds {len(kept)} of these images ({why}): see the report")
    elif is_rbd(old):  # Glance's view; its pool may keep trashed data (trash_note)
        notes.append(f"{store}: Glance holds none of the images this run took in it any more")
    else:
        notes.append(f"{store}: none of the images this run took is left in it")
    note = trash_note(old, sum(r.outcome == Outcome.MOVED for r in results))
    return [*notes, *([note] if note else [])]
