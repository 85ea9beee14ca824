"""What an RBD (Ceph) store means for a store move: data held by clones, and what a 204 proves.

Read in glance_store 5.7.0 (``_drivers/rbd.py``) and seen on glance 33 with Ceph 16:

* glance_store writes an image's data as the RBD image ``POOL/IMAGE`` (named after the image
  id; after ``--method location`` after the carrier's) and creates and protects the snapshot
  ``snap`` on it; the location reads ``rbd://FSID/POOL/IMAGE/snap``.  Nova (ephemeral disks on
  RBD) and Cinder clone that snapshot: ``rbd clone POOL/IMAGE@snap …``.
* While the snapshot has clones the data cannot be deleted: ``DELETE /v2/stores/OLD/{id}``
  answers 409 "… in use through the backend store outside of Glance" once the image is in two
  stores (403 while OLD is its only store), and the image stays active in both.  The way out
  is ``rbd children POOL/IMAGE@snap``, then ``rbd flatten`` each child (or delete it), or to
  keep OLD.
* That holds for clones of format 1 (what ``rbd_default_clone_format = auto`` makes on a cluster
  whose min compat client is older than mimic).  When every clone is of format 2 (RBD clone v2)
  glance_store's unprotect succeeds, the snapshot goes to RBD's snapshot trash, the RBD image
  into the pool's trash (``trash_move``) under its own name, and Glance answers 204 (seen with
  Ceph 16: ``rbd trash ls POOL`` lists it, the clone's ``rbd info`` names its parent "in the
  trash", ``rbd children POOL/IMAGE@snap`` cannot open it any more; after the last clone is
  flattened it stays in the trash until ``rbd trash purge POOL``).  So a 204 proves Glance
  dropped the location, not that the pool let go of the data, and this tool does not talk to
  Ceph: the summary says so (:func:`trash_note`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from .capabilities import StoreInfo

__all__ = ["in_use", "in_use_reason", "is_rbd", "location_in", "rbd_snapshot", "trash_note"]


def location_in(image: Mapping[str, Any], store: str) -> str | None:
    """The URL of the image's location in ``store``, when locations are shown."""
    for location in image.get("locations") or []:
        if (location.get("metadata") or {}).get("store") == store:
            return str(location.get("url"))
    return None


def rbd_snapshot(url: str | None) -> str | None:
    """``POOL/IMAGE@SNAP`` of an ``rbd://FSID/POOL/IMAGE/SNAP`` location (None for any other)."""
    if not url or not url.startswith("rbd://"):
        return None
    pieces = [unquote(p) for p in url.removeprefix("rbd://").split("/")]
    if len(pieces) != 4 or not all(pieces):  # the old fsid-less form names no snapshot
        return None
    _fsid, pool, name, snap = pieces
    return f"{pool}/{name}@{snap}"


def in_use(exc: Exception) -> bool:
    """Is this 409 glance_store's "in use" (``InUseByStore``) or "has snapshot(s)" (``HasSnapshot``)?"""
    text = str(exc)
    return "in use" in text or "snapshot" in text


def in_use_reason(image: Mapping[str, Any], old: StoreInfo | None, new: str, detail: str) -> str:
    """Why OLD keeps the image's data, what holds it, and the way out."""
    store = old.id if old is not None else "the old store"
    holder = rbd_snapshot(location_in(image, store))
    if holder is None and old is not None and old.type == "rbd":
        pool = old.properties.get("pool") or "POOL"
        holder = f"{pool}/{image['id']}@snap"
        where = f"its RBD snapshot, presumably {holder} (Glance shows no locations: show_multiple_locations = false)"
    elif holder is not None:
        where = f"its RBD snapshot {holder}"
    else:
        where = f"the backend of {store}"
    snapshot = holder or "POOL/IMAGE@snap"
    return (
        f"in use: kept in both {store} and {new} — Glance refused to delete the copy in {store} ({detail}); "
        f"{where} has clones (Nova ephemeral disks, Cinder volumes). To finish: `rbd children {snapshot}`, "
        f"`rbd flatten` each child (or delete it), then run the move again; or keep {store}"
    )


def trash_note(old: StoreInfo | None, moved: int) -> str | None:
    """For a move out of an rbd store: what Glance's 204s do not prove, and where to look."""
    if not is_rbd(old) or not moved:
        return None
    assert old is not None
    pool = old.properties.get("pool") or "POOL"
    return (
        f"{old.id} is an rbd store: Glance answered 204 for the {moved} images moved, which proves it dropped "
        f"their locations, not that pool {pool} let go of their data — glance_store moves an image whose snapshot "
        f"has clones of format 2 (RBD clone v2) into the pool's trash and reports success. `rbd trash ls {pool}` "
        "lists such images by their image id (`rbd children` no longer finds them; their clones' `rbd info` names "
        f"the parent in the trash); once those clones are flattened or deleted, `rbd trash purge {pool}` frees "
        "them. Check before retiring the pool"
    )


def is_rbd(store: StoreInfo | None) -> bool:
    """Whether ``store`` is known to be an rbd store."""
    return store is not None and store.type == "rbd"
