"""Carrier images: where ``move --method location`` puts an image's data, and how they leave with it.

A *carrier* is a hidden, protected image (``os_hidden: true``, ``protected: true``, property
:data:`CARRIER_KEY` naming the original, :data:`STORE_KEY` the store it was made for) that the
data is streamed into — verified on the fly, as ``copy`` does — because Glance only lets a
location be *added* to an image, not its data be written a second time.  The original then
gets the carrier's location in NEW: one backend object, two images.

Sharing has one consequence (glance 33, ``location.py`` ``StoreLocations.pop``; measured on the
harness with Swift): removing that location from *either* image — ``PATCH remove``,
``DELETE /v2/stores/…``, deleting the image — deletes the object for both.  Moving the
original on once deleted the carrier's data and left it ``active`` with nothing behind it.  So:

* a carrier is never deleted while its original uses its object, and never by anyone but its
  original's move;
* when the original leaves the carrier's store (any later move), the carrier is **retired
  first**: unprotected and deleted, which deletes the shared object while the original still
  reads — Glance falls back to its next location, the copy in NEW already verified (measured) —
  and only then is the original's dangling OLD location dropped (Glance answers 204 for an
  object already gone: measured).  No image is left active without its data at any moment; a
  crash in between leaves the original with an OLD location the next run drops;
* a carrier that holds data in another store too, or is not hidden, is not touched: the
  image's move stops there, OLD kept, with the reason;
* a carrier found in OLD whose image has left OLD (a move by an earlier version, which left the
  carrier without its data; or an interrupted one) is a *leftover* (:func:`leftover`): retired
  when its image still holds its data elsewhere — the carrier then shares nothing with it — and
  reported, never deleted, when its image no longer exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import AsyncMigrateError, ConflictStatus, ImageError, StreamCorrupted, UsageError, VerificationError
from .glance import GlanceClient
from .integrity import QUARANTINE_KEY, quarantined
from .limits import Limits
from .metadata import carrier_body
from .rbd import location_in
from .report import ImageResult, Outcome
from .retry import Budget
from .transfer import same_data
from .upload import Uploader, stream_data

__all__ = [
    "CARRIER_KEY",
    "STORE_KEY",
    "adopt",
    "carrier_in",
    "carriers_of",
    "leftover_of",
    "retire",
    "retire_leftover",
    "stores_of",
]

CARRIER_KEY = "asyncmigrate_carrier_for"  # property naming the image a carrier serves
STORE_KEY = "asyncmigrate_carrier_store"  # the store it was made for (carriers made before: absent)


def stores_of(image: dict[str, Any], key: str = "stores") -> list[str]:
    """A comma-separated store list from the image (``stores`` or an ``os_glance_*`` key)."""
    return [s for s in str(image.get(key) or "").split(",") if s]


async def carriers_of(client: GlanceClient, image_id: str) -> list[dict[str, Any]]:
    """Every carrier made for ``image_id`` (one listing request)."""
    query = {CARRIER_KEY: image_id, "os_hidden": "true", "visibility": "all"}
    return [image async for image in client.list_images(query)]


def _made_for(carrier: dict[str, Any], store: str) -> bool:
    if carrier.get(STORE_KEY):
        return str(carrier[STORE_KEY]) == store
    # Made before STORE_KEY existed: it is for the store it holds data in; a queued one for any.
    return store in stores_of(carrier) or carrier.get("status") == "queued"


async def carrier_in(
    client: GlanceClient,
    image: dict[str, Any],
    store: str,
    carriers: list[dict[str, Any]],
    *,
    limits: Limits,
    uploader: Uploader | None,
    budget: Budget,
    bad_digests: set[str],
    on_bytes: Callable[[int], None] = lambda n: None,
    on_note: Callable[[str], None] = lambda note: None,
) -> dict[str, Any]:
    """The carrier holding ``image``'s data in ``store``: the one of ``carriers`` made for it,
    else a new one; filled (verified on the fly) if it is still queued, then protected.

    A carrier whose record does not show the image's bytes never lends its location:
    one this call filled is deleted (it is hidden, unprotected and holds only what this
    upload wrote — bytes changed on the way into ``store``) and the image is tried again; one
    found holding data already (an earlier run's) is deactivated, marked
    :data:`~asyncmigrate.integrity.QUARANTINE_KEY`, named through ``on_note`` and passed
    over for a new one, never deleted (it may share its object with something)."""
    found = [c for c in carriers if _made_for(c, store) and quarantined(c) is None]
    for carrier in found:
        if carrier.get("status") in ("active", "deactivated") and not _good(image, carrier):
            on_note(await _quarantine(client, image, carrier, store))
        elif carrier.get("status") not in ("queued", "active"):
            on_note(f"carrier {carrier['id']} in {store} is {carrier.get('status')}: passed over for a new one")
    found = [c for c in found if c.get("status") == "queued" or _good(image, c)]
    carrier = found[0] if found else await client.create_image({**carrier_body(image, CARRIER_KEY), STORE_KEY: store})
    if carrier.get("status") == "queued":
        async with limits.upload_slot():
            budget.progress()

            def moved(n: int) -> None:
                budget.progress()
                on_bytes(n)

            await stream_data(
                client,
                client,
                image,
                dest_id=carrier["id"],
                store=store,
                verify="full",
                on_started=lambda: None,
                on_bytes=moved,
                bad_digests=bad_digests,
                throttle=limits.throttle,
                uploader=uploader,
            )
        fresh = await client.get_image(carrier["id"])
        if fresh is None:
            raise ImageError(f"carrier {carrier['id']} disappeared after its upload")
        carrier = fresh
        if not _good(image, carrier):
            said = _differs(image, carrier)
            try:
                await client.delete_image(str(carrier["id"]))
            except AsyncMigrateError as exc:
                raise VerificationError(
                    f"carrier {carrier['id']} in {store} recorded {said} after the upload (bytes changed on the way "
                    f"in) and deleting it failed ({exc}): it is hidden and unprotected and the image does not use "
                    "it; delete it by hand"
                ) from exc
            why = (
                f"carrier {carrier['id']} in {store} recorded {said} after the upload (bytes changed on the way "
                "in): deleted — it was this upload's own, unused — and the image tried again"
            )
            on_note(why)
            raise StreamCorrupted(why)
    if not carrier.get("protected"):
        await client.patch_image(carrier["id"], [{"op": "replace", "path": "/protected", "value": True}])
    return carrier


def _good(image: dict[str, Any], carrier: dict[str, Any]) -> bool:
    return carrier.get("status") == "active" and same_data(image, carrier)


def _differs(image: dict[str, Any], carrier: dict[str, Any]) -> str:
    return (
        f"status {carrier.get('status')}, size {carrier.get('size')}, checksum {carrier.get('checksum')} "
        f"(the image: size {image.get('size')}, checksum {image.get('checksum')})"
    )


async def _quarantine(client: GlanceClient, image: dict[str, Any], carrier: dict[str, Any], store: str) -> str:
    """Deactivate and mark a carrier found holding other bytes than ``image``; what the report says."""
    carrier_id = str(carrier["id"])
    said = _differs(image, carrier)
    if carrier.get("status") == "active":
        try:
            await client.deactivate(carrier_id)
        except AsyncMigrateError as exc:
            raise VerificationError(
                f"carrier {carrier_id} in {store} records {said}, and deactivating it failed ({exc}): not used; "
                "deactivate it by hand"
            ) from exc
    mark = f"its record differs from image {image['id']}'s: {said}; deactivated by asyncmigrate, not used"
    await client.patch_image(carrier_id, [{"op": "add", "path": f"/{QUARANTINE_KEY}", "value": mark}])
    return (
        f"carrier {carrier_id} in {store} (an earlier run's) records {said}: deactivated, marked {QUARANTINE_KEY} and "
        f"passed over for a new one; it may share its object with another image, so it was not deleted — inspect it"
    )


async def adopt(client: GlanceClient, image: dict[str, Any], carrier: dict[str, Any], store: str) -> dict[str, Any]:
    """Give ``image`` the carrier's location in ``store`` (unless it has one there); the image now."""
    url = location_in(carrier, store)
    if url is None:
        raise ImageError(f"carrier {carrier['id']} has no location in {store}")
    if url.startswith("file://"):
        raise UsageError(f"{store} is a file store: Glance refuses to add file:// locations; use --method copy-image")
    if location_in(image, store) is None:
        value = {"url": url, "metadata": {"store": store}}
        await client.patch_image(str(image["id"]), [{"op": "add", "path": "/locations/-", "value": value}])
    fresh = await client.get_image(str(image["id"]))
    if fresh is None:
        raise ImageError("image disappeared while its location was added")
    return fresh


async def retire(client: GlanceClient, image: dict[str, Any], carrier: dict[str, Any], old: str) -> str:
    """Delete a carrier of ``image`` that lives in ``old``, which the image is leaving (its data
    is in another store already): unprotect, delete.  A 409 (the data is in use, e.g. RBD
    clones) re-protects it and is raised.  Returns what the report says about it."""
    carrier_id = str(carrier["id"])
    if carrier.get(CARRIER_KEY) != image["id"] or not carrier.get("os_hidden"):
        raise ImageError(f"image {carrier_id} in {old} does not look like this image's carrier: left alone")
    if stores_of(carrier) != [old]:
        raise ImageError(
            f"carrier {carrier_id} holds data in {','.join(stores_of(carrier))}, not only in {old}: left alone, "
            f"{old} kept; look at it before deleting anything"
        )
    shared = location_in(carrier, old) is not None and location_in(carrier, old) == location_in(image, old)
    if carrier.get("protected"):
        await client.patch_image(carrier_id, [{"op": "replace", "path": "/protected", "value": False}])
    try:
        await client.delete_image(carrier_id)
    except ConflictStatus:
        await client.patch_image(carrier_id, [{"op": "replace", "path": "/protected", "value": True}])
        raise
    what = "whose data the image shared there" if shared else "a copy of the image's data"
    return f"carrier {carrier_id} in {old} ({what}) retired: deleted with the image's copy in {old}"


async def leftover_of(client: GlanceClient, carrier: dict[str, Any], old: str) -> bool:
    """Is this carrier, listed in ``old``, a leftover (still there, its image not in ``old``)?
    Two reads, only for carriers: a carrier whose image is in ``old`` moves with it."""
    fresh = await client.get_image(str(carrier["id"]))
    if fresh is None or old not in stores_of(fresh):
        return False
    image = await client.get_image(str(carrier.get(CARRIER_KEY)))
    return image is None or old not in stores_of(image)


async def retire_leftover(
    client: GlanceClient, carrier: dict[str, Any], old: str, result: ImageResult, attempt: int
) -> None:
    """One attempt at a leftover carrier in ``old``: retired when its image holds its data
    elsewhere; reported, never deleted, when its image is gone (its data may be the last copy)."""
    result.attempts = attempt
    image_id = str(carrier.get(CARRIER_KEY))
    image = await client.get_image(image_id)
    fresh = await client.get_image(str(carrier["id"]))
    if fresh is None or old not in stores_of(fresh):
        result.outcome, result.reason = Outcome.SKIPPED, "carrier already retired"
    elif image is None:
        result.outcome = Outcome.FAILED
        result.reason = (
            f"carrier of image {image_id}, which no longer exists: kept in {old} — its data may be the last copy "
            f"of that image; if nobody needs it, unprotect and delete it (openstack image set --unprotected "
            f"{carrier['id']}; openstack image delete {carrier['id']})"
        )
    elif not stores_of(image) or old in stores_of(image) or location_in(image, old) is not None:
        result.outcome, result.reason = Outcome.SKIPPED, f"carrier of image {image_id}: moves with it"
    else:
        await retire(client, image, fresh, old)
        result.outcome = Outcome.RETIRED
        result.reason = (
            f"leftover carrier of image {image_id}, which holds its data in {','.join(stores_of(image))} and "
            f"shared nothing with it: retired (deleted from {old})"
        )
