"""Proving the new store's bytes, ideally before the old copy is deleted (``move --verify-download``).

copy-image keeps the image's record (size, checksum, ``os_hash_value``): comparing it before and
after proves nothing about the bytes in NEW.  glance 33 itself hashes what it sends to NEW and
compares that with the record (``location.py`` ``_verify_uploaded_data``), but what the store
then returns is only proven by reading it back.  What Glance offers for that (read in glance's
source, measured on the harness):

``?prefer=STORE`` (glance 33.0.0 on, blueprint download-from-specific-store; policy
``download_from_store``, by default anyone who may download)
    ``GET /v2/images/{id}/file?prefer=NEW`` tries NEW's copy first.  Older Glance ignores the
    parameter and serves its first location.  One probe per run tells which: a ``prefer``
    naming no store answers 400 "Store '…' is not configured." on glance 33, the image on
    older ones, 403 where the policy forbids it.  Where it is honoured the check reads NEW
    **before** OLD is deleted.  It cannot see one case: when NEW's copy cannot be *opened* at
    all, Glance silently serves OLD's (``location.py`` ``get_data`` tries each location in
    turn; measured with a Swift object removed behind Glance's back) — so once OLD is gone one
    byte is read from the image, now only in NEW, which proves NEW's copy opens.
``Range: bytes=0-``, where NEW's store serves ranges
    The image cache (``glance/api/middleware/cache.py``) serves a cached image to a plain GET,
    ignoring ``prefer``, but never serves a ranged request, so a ranged read reaches the stores.
    Only file and cinder stores serve ranges (:attr:`~asyncmigrate.capabilities.StoreInfo.serves_ranges`):
    rbd, s3 and swift refuse any, and Glance then serves the *next* location without a word —
    with ``?prefer=NEW`` that is OLD's copy, a proof of nothing (seen on glance 33: file → rbd).
    NEW's copy in such a store is read whole, and the report says that an image cache holding
    the image would have answered in its place.
the carrier (``--method location``)
    The carrier's only location is NEW: reading it proves NEW's own copy, strictly, before the
    original's locations are swapped.
no ``prefer``
    The check can only run after the delete, when NEW is the image's only location: it proves
    NEW's copy, but OLD's is already gone; a mismatch then deactivates the image at once.

The report's ``download_check`` says which of these ran (:data:`PROOF` words what each proves).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio

from .errors import (
    AsyncMigrateError,
    ClientStatusError,
    Forbidden,
    HTTPStatusError,
    ImageError,
    StreamCorrupted,
    VerificationError,
)
from .glance import GlanceClient
from .stream import Digest, expected_digest, pipeline
from .upload import ImportFailed

__all__ = ["PROOF", "DownloadCheck", "NewCopyCheck", "StoreReads", "opens", "read_back"]

PROOF = {
    "prefer": "read through ?prefer={new} before {old} was deleted; Glance would have served {old}'s "
    "copy instead had {new}'s been unopenable, which the read of {new} alone after the delete rules out",
    "carrier": "read from the carrier, whose only location is {new}, before the swap: {new}'s own copy",
    "only-location": "read after {old} was deleted, from {new}, the image's only location: {new}'s own copy, "
    "but {old}'s was already gone ({why})",
    "empty": "0 bytes: nothing to read",
}
READ = {
    True: "read with Range, which no image cache serves",
    False: "read whole: {new} serves no byte ranges (Glance would have served another store's copy to a ranged "
    "read), so an image cache holding this image would have answered in its place",
}


@dataclasses.dataclass
class DownloadCheck:
    """What one download check read: the report's ``download_check``."""

    store: str  # the store whose copy was read
    how: str  # a key of PROOF
    algorithm: str  # "sha512", "md5", or "size-only"
    bytes: int
    proves: str

    def to_json(self) -> dict[str, Any]:
        """The report's form."""
        return dataclasses.asdict(self)


def describe(how: str, *, old: str, new: str, why: str = "", ranged: bool = True) -> str:
    """PROOF[how] for these stores, and how it was read (READ)."""
    proof = PROOF[how].format(old=old, new=new, why=why)
    return proof if how == "empty" else f"{proof}; {READ[ranged].format(new=new)}"


class StoreReads:
    """Whether the cloud serves a chosen store's copy (``?prefer=``), asked once per run."""

    def __init__(self, client: GlanceClient, stores: list[str]) -> None:
        self._client = client
        probe = "asyncmigrate-no-such-store"
        while probe in stores:
            probe += "-x"
        self._probe = probe
        self._answer: str | None = None  # "" honoured, else why not
        self._lock = anyio.Lock()

    async def why_not(self, image_id: str) -> str:
        """ "" when ``?prefer=`` is honoured, else why not (probed once, on ``image_id``)."""
        async with self._lock:
            if self._answer is None:
                self._answer = await self._ask(image_id)
            return self._answer

    async def _ask(self, image_id: str) -> str:
        try:
            async with self._client.download(image_id, prefer=self._probe, ranged=True):
                pass  # opened: the parameter was ignored (closed unread)
        except Forbidden:
            return "the download_from_store policy refuses ?prefer="
        except ClientStatusError as exc:
            if exc.status == 400 and self._probe in exc.detail:
                return ""  # glance 33: the unknown store was refused, so prefer is read
            # 400 naming no store: a Glance that ignored prefer, and a first location that
            # serves no ranges; 416: a 0-byte image, ranged, on a Glance that ignored prefer.
            if exc.status not in (400, 416):
                raise
        return "this Glance ignores ?prefer= (it came with glance 33.0.0)"


class NewCopyCheck:
    """One image's ``--verify-download``: NEW's copy read back before OLD's delete where that is
    possible, and after it; a mismatch never leaves NEW's bytes in service."""

    def __init__(self, client: GlanceClient, reads: StoreReads, old: str, new: str, *, ranged: bool) -> None:
        self.client, self.reads, self.old, self.new = client, reads, old, new
        self.ranged = ranged  # NEW serves byte ranges: read with Range (past any image cache)
        self.done: DownloadCheck | None = None
        self.waits = ""  # why the check must wait for OLD's delete ("" while it need not)
        self._bad: set[str] = set()  # wrong digests read from NEW

    async def before_delete(self, image: dict[str, Any], carrier: dict[str, Any] | None = None) -> None:
        """Read NEW's copy: the carrier (its only location), else through ``?prefer=NEW``
        where Glance offers it; else leave it to :meth:`after_delete`."""
        size = int(image.get("size") or 0)
        if not size:
            self._record("empty", "size-only", 0)
            return
        self.waits = "" if carrier is not None else await self.reads.why_not(str(image["id"]))
        if self.waits:
            return
        try:
            read = str(carrier["id"]) if carrier else None
            prefer = None if carrier else self.new
            algorithm = await read_back(self.client, image, read_id=read, prefer=prefer, ranged=self.ranged)
        except StreamCorrupted as exc:
            await self._differs(image, exc, carrier)
            raise
        self._record("carrier" if carrier else "prefer", algorithm, size)

    async def _differs(self, image: dict[str, Any], exc: StreamCorrupted, carrier: dict[str, Any] | None) -> None:
        """Once may be the wire (retried); the same digest twice is NEW's stored bytes, never
        kept: copy-image's copy is dropped (OLD still holds the image)."""
        seen = exc.actual in self._bad
        self._bad.add(exc.actual or "")
        if not seen:
            return
        if carrier is not None:
            raise ImageError(
                f"carrier {carrier['id']}'s bytes in {self.new} differ from the record (read twice): {self.old} kept"
            )
        await self.client.delete_from_store(self.new, str(image["id"]))
        raise ImportFailed(f"{self.new}'s copy differs from the image's record (read twice): dropped, {self.old} kept")

    async def after_delete(self, image: dict[str, Any]) -> None:
        """Once OLD is gone: prove NEW's copy opens (what ``?prefer=`` cannot see), or — where the
        check had to wait — read it whole.  A copy that fails is deactivated at once."""
        if self.done is not None and self.done.how in ("carrier", "empty"):
            return
        try:
            if self.done is not None:
                await opens(self.client, str(image["id"]), ranged=self.ranged)
                return
            algorithm = await read_back(self.client, image, ranged=self.ranged)
        except (StreamCorrupted, ImageError) as exc:
            state = "DEACTIVATED so nobody boots it"
            try:
                await self.client.deactivate(str(image["id"]))
            except AsyncMigrateError as failure:
                state = f"NOT deactivated ({failure}): deactivate it now"
            raise VerificationError(
                f"{self.new}'s copy is not the image's bytes ({exc}) and {self.old}'s is deleted: the image is "
                f"{state}; restore its data from a copy elsewhere (Glance takes no new data for an image that had some)"
            ) from exc
        self._record("only-location", algorithm, int(image.get("size") or 0))

    def _record(self, how: str, algorithm: str, size: int) -> None:
        proves = describe(how, old=self.old, new=self.new, why=self.waits, ranged=self.ranged)
        self.done = DownloadCheck(self.new, how, algorithm, size, proves)


async def read_back(
    client: GlanceClient,
    image: dict[str, Any],
    *,
    read_id: str | None = None,
    prefer: str | None = None,
    ranged: bool = True,
) -> str:
    """Read the image's data (or ``read_id``'s, a carrier) — with ``Range`` when ``ranged``, else
    whole, never resumed — and check it against ``image``'s record; the algorithm compared
    ("size-only" when no hash is recorded).  Raises :class:`StreamCorrupted` (with the digest
    read) on a mismatch."""
    algo, expected = expected_digest(image)
    digest = Digest(algo) if algo else None
    target = read_id or str(image["id"])
    pipe = pipeline(
        lambda offset: client.download(target, offset, prefer=prefer, ranged=ranged),
        size=int(image.get("size") or 0),
        digest=digest,
        expected=expected,
        on_bytes=lambda n: None,
        max_resumes=3 if ranged else 0,  # a resume is a Range: a cut is retried whole
    )
    try:
        async for _ in pipe:
            pass
    finally:
        await pipe.aclose()
        if digest is not None:
            digest.close()
    return algo or "size-only"


async def opens(client: GlanceClient, image_id: str, *, ranged: bool = True) -> None:
    """Read the first chunk of the image (after OLD's delete: from NEW alone; with ``Range``
    where NEW serves ranges); ImageError when it has none to give (Glance answers 204 when no
    location can be opened)."""
    try:
        async with client.download(image_id, ranged=ranged) as download:
            if download.status == 204:
                raise ImageError("it serves no data")
            async for _ in download.chunks():
                break
    except HTTPStatusError as exc:
        raise ImageError(f"reading it fails ({exc})") from exc
