"""The storage behind the stores: objects named by their location URL, shared between images,
deleted with a location, pinned by RBD clones; the legacy locations API (``PATCH`` ``add``/
``remove`` ``/locations/…``) and the image cache.

What it follows (glance 33 / glance_store 5.7.0, read in their source and measured on the
harness):

* An image's data in a store is one backend object named by its location URL: ``file://…/{id}``,
  ``rbd://FSID/POOL/{id}/snap`` (the rbd driver names the RBD image after the image and
  protects a snapshot ``snap`` on it), ``swift+http://…/glance/{id}``, ``s3://…/{bucket}/{id}``.
* Two images may share one object (``PATCH add /locations/-`` with another image's URL).
  Removing the location from either one (``PATCH remove``, ``DELETE /v2/stores/S/{id}``,
  deleting the image) deletes the object for both (``location.py`` ``StoreLocations.pop`` →
  ``delete_image_location_from_backend``); the other keeps a location whose object is gone.
  Deleting an object already gone is not an error (204; measured with Swift).
* A download (``location.py`` ``ImageProxy.get_data``) tries the locations in order — stores
  named in ``?prefer=`` first (``image_data.py`` ``_filter_locations_by_stores``) — and falls
  back *silently* to the next when one cannot be opened; when none can: 204.
* A ranged read (any ``Range``: glance passes an offset and a length) is refused by every store
  whose glance_store driver lacks random reads — all but ``file`` and ``cinder``
  (``_CAPABILITIES``; ``capabilities.check`` raises ``StoreRandomGetNotSupported``): Glance then
  tries the next location, silently, and when none serves it answers 400 "Getting images
  randomly from this store is not supported. Offset: O, length: L" (measured on the harness with
  rbd and s3: an image in ``file`` and ``rbd`` asked for ``?prefer=RBD`` with ``Range`` is
  served from ``file``).
* RBD: an object whose snapshot has a clone (Nova, Cinder: ``rbd clone POOL/ID@snap …``) of
  format 1 cannot be deleted: glance_store cannot unprotect the snapshot (``InUseByStore``):
  ``DELETE /v2/stores`` → 409 "The data for Image … could not be deleted because it is in use:
  …", ``DELETE /v2/images`` → 409 "Image … could not be deleted because it is in use: …",
  ``PATCH remove /locations`` → 500 (``_do_remove_locations`` wraps every store error); the
  location and the data stay.  When every clone is of format 2 (RBD clone v2: the cloner's
  ``rbd_default_clone_format = 2``, or ``auto`` on a cluster whose min compat client is mimic or
  later) the snapshot goes to RBD's snapshot trash, the image into the pool's trash
  (``trash_move``) and glance answers 204 / 200: gone for glance, still there for its clones
  (measured with Ceph 16: a v1 and a v2 clone together still give 409).
* The image cache (``glance/api/middleware/cache.py``): a cached image is served from the cache
  to a ``GET …/file`` without ``Range``, whatever ``?prefer=`` says; a ``Range`` request is
  never served from the cache (bug 1664709) and so always reads the stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .model import ImageRecord, fail

if TYPE_CHECKING:
    from .core import FakeGlance

IN_USE = "The image cannot be deleted because it is in use through the backend store outside of Glance."
"""glance_store's ``InUseByStore`` message."""


class InUse(Exception):
    """The object's RBD snapshot has a format-1 clone: glance_store raises ``InUseByStore``."""


class RandomGetRefused(Exception):
    """No location could serve a ranged read: the last one tried refused it (``StoreRandomGetNotSupported``)."""


RANGED_TYPES = frozenset({"file", "cinder"})
"""Store types whose glance_store driver serves byte ranges (``READ_RANDOM``, glance_store 5.7.0)."""


def webob_error(request: web.Request, status: int, explanation: str) -> web.HTTPException:
    """An error with the body webob gives glance's answers: JSON for ``Accept:
    application/json``, HTML for ``text/html`` or ``*/*`` (aiohttp's default), else plain text
    (measured on glance 33)."""
    error = fail(status, explanation)
    title = error.reason
    accept = request.headers.get("Accept", "")
    if "application/json" in accept:
        body = {"message": f"{explanation}<br /><br />\n\n\n", "code": f"{status} {title}", "title": title}
        error.text = json.dumps(body)
        error.content_type = "application/json"
    elif "text/html" in accept or "*/*" in accept:
        error.text = (
            f"<html>\n <head>\n  <title>{status} {title}</title>\n </head>\n <body>\n  <h1>{status} {title}</h1>\n"
            f"  {explanation}<br /><br />\n\n\n\n </body>\n</html>"
        )
        error.content_type = "text/html"
    return error


class Backend:
    """Every store's objects at once, by URL (see the module docstring)."""

    def __init__(self, fake: FakeGlance) -> None:
        self.fake = fake
        self.fsid = "5a4e1e1c-7f5b-4d3c-9a61-0c2d3e4f5a6b"
        self.pools: dict[str, str] = {}
        """RBD pool of each rbd store (default: the store's id)."""
        self.gone: set[str] = set()
        """URLs whose object was deleted (another image may still show the location)."""
        self.clones: dict[str, dict[str, int]] = {}
        """URL → {name of an RBD clone of its snapshot: its clone format, 1 or 2}."""
        self.trash: set[str] = set()
        """URLs moved to RBD's trash (only clones of format 2): gone for glance, kept for their clones."""
        self.cached: dict[str, bytes] = {}
        """Image id → the bytes the image cache serves for it."""

    # -- naming ---------------------------------------------------------------------------

    def url(self, rec: ImageRecord, store: str) -> str:
        """The location URL of ``rec``'s data in ``store``."""
        given = rec.location_urls.get(store)
        if given is not None:
            return given
        kind = self.fake.store_types.get(store, "file")
        if kind == "rbd":
            return f"rbd://{self.fsid}/{self.pools.get(store, store)}/{rec.id}/snap"
        if kind == "swift":
            return f"swift+http://service%3Aglance:swift-key@127.0.0.1:8080/v3/glance/{rec.id}"
        if kind == "s3":
            return f"s3://127.0.0.1:9000/glance/{rec.id}"
        return f"file:///var/lib/glance/{store or 'images'}/{rec.id}"

    def holder(self, url: str) -> str:
        """``POOL/IMAGE@snap`` of an ``rbd://`` URL."""
        _fsid, pool, name, snap = url.removeprefix("rbd://").split("/")
        return f"{pool}/{name}@{snap}"

    # -- reading --------------------------------------------------------------------------

    def readable(self, rec: ImageRecord, prefer: Iterable[str] = (), *, ranged: bool = False) -> bytes | None:
        """What ``GET …/file`` serves: the first location whose object exists (and, ``ranged``,
        whose store serves ranges), ``prefer``'s stores first; None when none has one (glance
        answers 204); :class:`RandomGetRefused` when the last location tried refused the range."""
        wanted = list(prefer)
        order = [s for s in rec.data if s in wanted] + [s for s in rec.data if s not in wanted]
        refused = False  # glance raises the last location's error
        for store in order:
            if self.url(rec, store) in self.gone:
                refused = False
            elif ranged and self.fake.store_types.get(store, "file") not in RANGED_TYPES:
                refused = True
            else:
                return rec.data[store]
        if refused:
            raise RandomGetRefused
        return None

    def holds(self, rec: ImageRecord, store: str) -> bool:
        """Whether ``rec``'s object in ``store`` exists."""
        return store in rec.data and self.url(rec, store) not in self.gone

    def written(self, rec: ImageRecord, stores: Iterable[str]) -> None:
        """New data was written for ``rec`` into ``stores`` (objects under its own name)."""
        for store in stores:
            rec.location_urls.pop(store, None)
            self.gone.discard(self.url(rec, store))

    # -- deleting -------------------------------------------------------------------------

    def delete(self, url: str) -> None:
        """Delete one object; :class:`InUse` when its RBD snapshot has a format-1 clone; an
        object whose clones are all of format 2 goes to the trash instead."""
        children = self.clones.get(url) or {}
        if 1 in children.values():
            raise InUse(url)
        if children:
            self.trash.add(url)
        self.gone.add(url)

    def drop_location(self, rec: ImageRecord, store: str) -> None:
        """Remove ``rec``'s location in ``store``, deleting its object (:class:`InUse` keeps both)."""
        self.delete(self.url(rec, store))
        del rec.data[store]
        rec.location_urls.pop(store, None)

    def delete_image(self, rec: ImageRecord) -> None:
        """Delete every object of an image being deleted (:class:`InUse`: none is, it stays)."""
        urls = [self.url(rec, store) for store in rec.data]
        if any(1 in (self.clones.get(u) or {}).values() for u in urls):
            raise InUse(urls[0])
        for url in urls:
            self.delete(url)

    # -- RBD clones (what Nova and Cinder make) -------------------------------------------

    def clone(self, image_id: str, store: str, child: str = "vms/instance-disk", *, clone_format: int = 1) -> str:
        """``rbd clone POOL/ID@snap CHILD`` (``--rbd-default-clone-format``) of the image's object
        in ``store``; its ``POOL/ID@snap``."""
        rec = self.fake.images[image_id]
        url = self.url(rec, store)
        if not url.startswith("rbd://"):
            raise ValueError(f"store {store!r} is not an rbd store")
        self.clones.setdefault(url, {})[child] = clone_format
        return self.holder(url)

    def flatten(self, child: str) -> None:
        """``rbd flatten CHILD``: the clone no longer needs its parent's snapshot (a trashed
        parent stays in the trash until ``rbd trash purge``)."""
        for children in self.clones.values():
            children.pop(child, None)

    # -- the legacy locations API ---------------------------------------------------------

    def patch(self, rec: ImageRecord, changes: list[dict[str, Any]], *, admin: bool) -> None:
        """Apply ``add``/``remove`` ``/locations/…`` operations (``images.py`` ``_do_*_locations``;
        removing is the admin-only ``delete_image_location`` policy)."""
        for change in changes:
            op, path = change.get("op"), str(change.get("path", ""))
            if not self.fake.show_multiple_locations:
                raise fail(403, f"It's not allowed to {op} locations if locations are invisible.")
            if op == "remove" and not admin:
                raise fail(403, "You are not authorized to complete delete_image_location action.")
            position = path.removeprefix("/locations").removeprefix("/")
            if op == "add":
                self._add(rec, position, change.get("value"))
            elif op == "remove":
                self._remove(rec, position)
            else:
                raise fail(501, f"fakeglance implements only add and remove of locations, not {op}.")
        rec.updated_at = self.fake.now()

    def _add(self, rec: ImageRecord, position: str, value: Any) -> None:
        if rec.status not in ("active", "queued"):
            raise fail(409, f"It's not allowed to add locations if image status is {rec.status}.")
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            raise fail(400, "Invalid location")
        url, store = value["url"], str((value.get("metadata") or {}).get("store") or "")
        # _check_location_uri: a file:// URL, an unknown object or a 0-byte one is "Invalid location".
        found = None if url.startswith("file://") or url in self.gone else self._object(url)
        if found is None or store not in self.fake.stores or not found:
            raise fail(400, "Invalid location")
        if any(self.url(rec, s) == url for s in rec.data):
            raise fail(400, f"The location {url} already exists")
        if position not in ("-", str(len(rec.data))):
            raise fail(501, "fakeglance adds locations only at the end.")
        rec.data[store] = found
        rec.location_urls[store] = url
        if rec.size is None:
            rec.size = len(found)

    def _remove(self, rec: ImageRecord, position: str) -> None:
        if rec.status != "active":
            raise fail(409, f"It's not allowed to remove locations if image status is {rec.status}.")
        if len(rec.data) == 1:
            raise fail(403, "Cannot remove last location in the image.")
        stores = list(rec.data)
        if not position.isdecimal() or int(position) >= len(stores):
            raise fail(400, "Invalid position for removing a location.")
        try:
            self.drop_location(rec, stores[int(position)])
        except InUse:
            raise fail(500, IN_USE) from None

    def _object(self, url: str) -> bytes | None:
        for rec in self.fake.images.values():
            for store in rec.data:
                if self.url(rec, store) == url:
                    return rec.data[store]
        return None
