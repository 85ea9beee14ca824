"""What proves a copy holds the source's bytes — before the commit and after it — and what
happens to a copy that does not.

Before the commit (:func:`stream_check`)
    The stream is hashed with the algorithm the source recorded, and its last chunk is held
    back until size and digest match (:mod:`asyncmigrate.stream`): a mismatch drops the
    upload, Glance returns the image to ``queued``, and the image is tried again.
    ``--verify server`` (the fast path: no hashing in the client) skips that hash only where
    the destination's record can be compared with the source's afterwards: the source
    records an md5 ``checksum``, which every Glance records for what it stores.  Where it
    cannot — the source recorded no md5, only a multihash the destination may not share —
    or where the destination may convert the data on import (``glance-direct``), the stream
    is hashed as under ``full``.  When the source records no md5, the md5 of what is sent is
    computed too, so the destination's record can be held against what it was given.

After the commit (:func:`prove`)
    The destination's record must show the source's size and every digest both record (md5
    ``checksum``; the multihash when both use the same algorithm), or the md5 of what was
    sent.  Bytes changed on the way in (a proxy, a NIC, the destination's store), or under
    ``--verify server`` on the way out, show only here, after Glance made the image active.
    Glance never replaces an image's data and never reuses a deleted id, so such a copy cannot
    be mended under its id: it is deactivated at once (nobody can boot it), marked with
    :data:`QUARANTINE_KEY`, and reported ``quarantined`` with the way out
    (:class:`~asyncmigrate.errors.BadCopy`).  Later runs, ``sync`` and ``verify`` recognise
    the mark (:func:`quarantined`) and say what the image is.

The report's ``verification`` (:func:`label`) names only what was compared: the algorithm
hashed in the stream, else the strongest digest the two records shared, else ``size-only``
(or ``unverified`` when not even a size was recorded).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import AsyncMigrateError, BadCopy, BadCopyActive, Behaviour
from .stream import computable, expected_digest

if TYPE_CHECKING:
    from .glance import GlanceClient

__all__ = [
    "MD5",
    "QUARANTINE_KEY",
    "Hashed",
    "StreamCheck",
    "compare_records",
    "label",
    "prove",
    "quarantined",
    "recognised",
    "stream_check",
]

MD5 = "md5"
QUARANTINE_KEY = "asyncmigrate_quarantined"  # on a bad copy, deactivated: what differed, and when
WAY_OUT = (
    "Glance never replaces an image's data nor reuses a deleted id, so this id cannot hold the source's bytes: "
    "inspect the copy, then delete it at the destination and upload the source's image there under a new id; "
    "until then it stays deactivated and every run reports it"
)


@dataclasses.dataclass(frozen=True)
class StreamCheck:
    """What the stream is hashed with: ``algorithm`` (checked against ``expected`` before the
    last byte is sent; None: not hashed), and whether the md5 of what is sent is computed
    for the destination's record (``md5_sent``)."""

    algorithm: str | None = None
    expected: str | None = None
    md5_sent: bool = False


@dataclasses.dataclass(frozen=True)
class Hashed:
    """What the stream was hashed with (None: nothing), and the md5 of what was sent, if computed."""

    algorithm: str | None = None
    md5: str | None = None


def stream_check(image: Mapping[str, Any], verify: str, *, may_convert: bool = False) -> StreamCheck:
    """How to verify ``image``'s stream under ``--verify`` (see the module docstring)."""
    algorithm, expected = expected_digest(image)
    md5_sent = not image.get("checksum") and algorithm != MD5 and computable(MD5)
    if verify == "server" and image.get("checksum") and not may_convert:
        return StreamCheck()  # the destination's md5 is compared after the commit
    return StreamCheck(algorithm, expected, md5_sent)


def compare_records(
    source: Mapping[str, Any], dest: Mapping[str, Any], sent_md5: str | None = None
) -> tuple[list[str], list[str]]:
    """``(compared, differing)``: the digests of the destination's record held against the
    source's (md5 against ``sent_md5`` when the source has none), and those that differ;
    ``size`` differs too when the source recorded one."""
    compared: list[str] = []
    differing: list[str] = []
    if source.get("size") is not None and source.get("size") != dest.get("size"):
        differing.append("size")
    want_md5 = source.get("checksum") or sent_md5
    if want_md5 and dest.get("checksum"):
        compared.append(MD5)
        if str(want_md5).lower() != str(dest["checksum"]).lower():
            differing.append(MD5)
    algo = source.get("os_hash_algo")
    if algo and source.get("os_hash_value") and dest.get("os_hash_algo") == algo and dest.get("os_hash_value"):
        compared.append(str(algo))
        if str(source["os_hash_value"]).lower() != str(dest["os_hash_value"]).lower():
            differing.append(str(algo))
    return compared, differing


def label(source: Mapping[str, Any], hashed: str | None, compared: list[str]) -> str:
    """The report's ``verification``: what was actually compared (module docstring)."""
    if hashed:
        return hashed
    strong = [c for c in compared if c != MD5]
    if strong:
        return strong[0]
    if MD5 in compared and source.get("checksum"):
        return MD5
    return "size-only" if source.get("size") is not None else "unverified"


def quarantined(image: Mapping[str, Any] | None) -> str | None:
    """The mark of a bad copy an earlier run deactivated (what differed, and when), if any."""
    mark = None if image is None else image.get(QUARANTINE_KEY)
    return None if mark is None else str(mark)


def recognised(image: Mapping[str, Any] | None) -> BadCopy | None:
    """The error to report for a destination image that is a quarantined bad copy, else None."""
    mark = quarantined(image)
    if mark is None:
        return None
    return BadCopy(f"a bad copy quarantined by an earlier run ({mark}); {WAY_OUT}")


async def prove(
    dst: GlanceClient,
    source: Mapping[str, Any],
    dest: Mapping[str, Any],
    hashed: Hashed,
    *,
    server: bool,
) -> str:
    """Hold the destination's record ``dest`` (read after the commit) against the source's;
    return the report's ``verification``.  A copy whose record differs is quarantined at once
    (deactivated, marked) and :class:`~asyncmigrate.errors.BadCopy` raised."""
    compared, differing = compare_records(source, dest, hashed.md5)
    if not differing:
        return label(source, hashed.algorithm, compared)
    what = ", ".join(differing)
    said = (
        f"the destination recorded {what} other than the source's (size {dest.get('size')} / "
        f"{source.get('size')}, checksum {dest.get('checksum')} / {source.get('checksum') or hashed.md5})"
    )
    why = "--verify server does not hash the stream" if server and not hashed.algorithm else "after the client's check"
    image_id = str(dest.get("id") or source["id"])
    try:
        await dst.deactivate(image_id)
    except AsyncMigrateError as exc:
        raise BadCopyActive(
            f"{said}: the bytes changed on the way ({why}); the copy is ACTIVE with the wrong bytes and "
            f"deactivating it failed ({exc}): deactivate it by hand now",
            exc.behaviour if exc.behaviour is Behaviour.RETRY else Behaviour.IMAGE,
        ) from exc
    mark = f"{what} differ from the source's record: deactivated by asyncmigrate at {_now()}"
    marked = ""
    try:
        await dst.patch_image(image_id, [{"op": "add", "path": f"/{QUARANTINE_KEY}", "value": mark}])
    except AsyncMigrateError as exc:
        marked = f" (marking it {QUARANTINE_KEY} failed: {exc})"
    raise BadCopy(f"{said}: the bytes changed on the way ({why}); deactivated at once{marked}; {WAY_OUT}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
