"""The pair's record: the images this tool brought from one source cloud to one
destination — bound to the source cloud itself, not to the address it was reached at.

Why it is bound
    ``sync --delete-removed`` deletes at the destination the recorded images the source
    no longer has.  A record keyed by the two endpoint URLs would be inherited by whatever
    answers at the source's URL — an SSH tunnel or a local proxy on ``127.0.0.1:PORT``
    re-pointed, a cloud rebuilt behind the same name — and that source's 404s would
    "confirm" every recorded image gone.

The source's identity, and why these two parts
    * **What it holds.**  Glance image ids are random UUIDs: no other cloud holds this
      one's images, and a Glance rebuilt empty holds none of them either.  So before a run
      uses the record it asks the source for a sample of the images the record says it
      holds (at most :data:`SAMPLE` ids, chosen at random among those not known to be
      gone; one ``GET`` each, once per run).  A source that holds fewer than a quarter of
      them is not the cloud the record was made from — or is seen through credentials
      that see much less (a role removed), which looks the same and is no better: the run
      is refused before anything is done (exit 2).  The sample only has to tell "this
      cloud" from "another cloud" (which holds none): the finer judgement, whether the
      source still holds *most* of what the record says, is made on the whole record
      against the complete listing before anything is deleted
      (:func:`asyncmigrate.removal.protection`).
    * **What its Keystone says**, where it has one: the id of the image service in the
      token's catalog, and the region (random per Keystone deployment, the same through
      any tunnel or proxy, new when the cloud is rebuilt; :meth:`Cloud.identity`).  The
      record is keyed by it, so a cloud of another Keystone never finds this record, and a
      journal that holds a record of another Keystone's cloud at the same address refuses
      the run (exit 2): the way out is a journal of its own (``--journal``).
    * Without a Keystone (``auth_type: none``) the address locates the record and the
      holdings alone bind it.

    ``--confirm-source`` is the operator saying: this is the cloud the record was made
    from, and what it no longer shows is really gone.  The record is then used (re-keyed
    to the new Keystone identity when that changed) and removals are judged without the
    holdings rules.

The destination copy
    Each row notes the destination's copy as last seen at both ends (``created_at``,
    size, checksum, ``os_hash_value``: :func:`copy_of`), refreshed by every run that finds
    it there.  A destination image that is not that copy is never deleted.

Records of an older version (rows keyed by the URLs, with no identity and no copy)
    The first run whose source holds them (the same sample) adopts them; a source that
    does not is refused as above.  An adopted row is noted afresh — copy and all — by any
    run that finds its image at both ends; a row whose image is already gone from the
    source has no copy noted: it is reported and never deleted (check it and delete it by
    hand), so an old record is never taken as strong evidence.

The identity mapping its copies used (the project map's content, ``--no-owner``,
``--unmapped-owner``, ``--drop-unmapped-members``) is kept with the record; a run with
another one is refused (:func:`asyncmigrate.identity.mapping_difference`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from .errors import UsageError
from .identity import mapping_difference

if TYPE_CHECKING:
    from .catalog import Entry
    from .glance import GlanceClient
    from .journal import Journal

__all__ = [
    "RECORD_KEYS",
    "SAMPLE",
    "PairRecord",
    "Recorded",
    "SourceIdentity",
    "copy_of",
    "migrate",
    "open_record",
    "pair_key",
]

T = TypeVar("T")

SAMPLE = 16  # recorded images asked for at the start of a run
RECORD_KEYS = ("id", "name", "owner", "visibility", "status", "tags", "size", "stores")

# ``brought``: one row per recorded image.  ``pair`` is the record's key (record_key(); in
# rows of an older version, pair_key() of the URLs); ``source`` holds the attributes of the
# source image, as last seen, that the selection flags look at (a removed image is judged
# by them); ``copy`` the destination copy last seen (copy_of()); ``gone_at`` when the
# source was found not to have it any more (such rows do not count as held).
# ``records``: one row per record: the source identity it is bound to and the mapping.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS brought (
    pair TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    source TEXT NOT NULL,
    seen_at REAL NOT NULL,
    copy TEXT,
    gone_at REAL,
    PRIMARY KEY (pair, id)
);
CREATE TABLE IF NOT EXISTS records (
    pair TEXT PRIMARY KEY,
    locator TEXT NOT NULL,
    source TEXT NOT NULL,
    mapping TEXT,
    created_at REAL NOT NULL
);
"""
_ADDED = ("copy TEXT", "gone_at REAL")  # columns an older version's brought table lacks


def migrate(db: sqlite3.Connection) -> None:
    """Create the record's tables, or bring an older version's up to date (blocking)."""
    db.executescript(_SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(brought)")}
    for column in _ADDED:
        if column.split()[0] not in have:
            db.execute(f"ALTER TABLE brought ADD COLUMN {column}")


def pair_key(source_endpoint: str, destination_endpoint: str) -> str:
    """The two endpoint URLs' key: where an older version kept the record, and the locator
    the records of this pair of addresses are found by."""
    return hashlib.sha256(f"{source_endpoint}\n{destination_endpoint}".encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class SourceIdentity:
    """Who the source is: its Keystone's word where it has one (see the module docstring)."""

    endpoint: str
    keystone: str | None  # "image service <id> in <region>"; None: no Keystone

    def key(self) -> str:
        """The JSON the record stores and compares."""
        return json.dumps({"keystone": self.keystone} if self.keystone else {"endpoint": self.endpoint})

    def describe(self) -> str:
        """For messages."""
        return f"Keystone's {self.keystone}" if self.keystone else f"no Keystone, at {self.endpoint}"


def _described(stored: str) -> str:
    data = json.loads(stored)
    return f"Keystone's {data['keystone']}" if data.get("keystone") else f"no Keystone, at {data.get('endpoint')}"


def record_key(identity: SourceIdentity, destination: str) -> str:
    """The record's key: the source's identity and the destination's endpoint."""
    return hashlib.sha256(f"{identity.key()}\n{destination}".encode()).hexdigest()[:16]


def copy_of(entry: Entry) -> str:
    """What identifies a destination copy: it is never re-made under its id, so a
    destination image that does not match this is not the copy the record saw."""
    parts = {
        "created_at": entry.created_at,
        "size": entry.size,
        "checksum": entry.checksum.hex() if entry.checksum else None,
        "os_hash_value": entry.hash_value.hex() if entry.hash_value else None,
    }
    return json.dumps(parts, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One recorded image: the source attributes last seen, the copy last seen, gone or not."""

    source: dict[str, Any]
    copy: str | None  # None: a row of an older version, which did not note the copy
    gone: bool


# -- the journal file, read-write (a live run) or read only (a dry run) ----------------------


class _File:
    """Runs blocking functions of a sqlite connection on the right thread."""

    writable = False

    async def call(self, work: Callable[..., T], *args: Any) -> T | None:
        raise NotImplementedError


class _JournalFile(_File):
    writable = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def call(self, work: Callable[..., T], *args: Any) -> T | None:
        # A journal that failed gives None: nothing is then recorded or judged removed.
        return await self.journal.guarded(work, *args)


class _ReadOnlyFile(_File):
    def __init__(self, path: Path | None) -> None:
        self.path = path

    async def call(self, work: Callable[..., T], *args: Any) -> T | None:
        if self.path is None or not self.path.exists():
            return None
        return await anyio.to_thread.run_sync(self._blocking, work, args)

    def _blocking(self, work: Callable[..., T], args: tuple[Any, ...]) -> T | None:
        assert self.path is not None
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                if not _has_table(db, "brought"):
                    return None
                return work(_ReadView(db), *args)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot read the journal {self.path}: {exc}") from exc


class _ReadView:
    """A read-only connection that answers for the columns and tables an older version lacks."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        columns = {row[1] for row in db.execute("PRAGMA table_info(brought)")}
        self.old = not {"copy", "gone_at"} <= columns
        self.records = _has_table(db, "records")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if self.old:
            sql = sql.replace("copy", "NULL").replace("gone_at IS NULL", "1").replace("gone_at", "NULL")
        if not self.records and "FROM records" in sql:
            return self.db.execute("SELECT NULL WHERE 0")
        return self.db.execute(sql, params)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


# -- the blocking queries ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Found:
    mine: tuple[str | None] | None  # the record bound to this identity: (its mapping,); None: none
    others: list[tuple[str, str, str | None]]  # records of other identities at this address: (key, source, map)
    legacy: int  # rows of an older version at this address


def _find(db: Any, key: str, locator: str) -> _Found:
    mine = db.execute("SELECT mapping FROM records WHERE pair=?", (key,)).fetchone()
    others = db.execute(
        "SELECT pair, source, mapping FROM records WHERE locator=? AND pair<>? ORDER BY created_at DESC",
        (locator, key),
    ).fetchall()
    legacy = db.execute("SELECT count(*) FROM brought WHERE pair=?", (locator,)).fetchone()[0]
    return _Found(None if mine is None else (mine[0],), [tuple(r) for r in others], int(legacy))


def _live_ids(db: Any, pair: str) -> list[str]:
    return [row[0] for row in db.execute("SELECT id FROM brought WHERE pair=? AND gone_at IS NULL", (pair,))]


def _any_row(db: Any, pair: str) -> bool:
    return db.execute("SELECT 1 FROM brought WHERE pair=? LIMIT 1", (pair,)).fetchone() is not None


def _rows(db: Any, pair: str) -> dict[str, Recorded]:
    rows = db.execute("SELECT id, source, copy, gone_at FROM brought WHERE pair=?", (pair,))
    return {r[0]: Recorded(dict(json.loads(r[1])), r[2], r[3] is not None) for r in rows}


def _statements(db: sqlite3.Connection, *statements: tuple[str, tuple[Any, ...]]) -> None:
    db.execute("BEGIN")
    try:
        for sql, params in statements:
            db.execute(sql, params)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _bind(db: sqlite3.Connection, key: str, locator: str, source: str, mapping: str, adopt: str | None) -> None:
    """Write the record's binding (and mapping); move the rows of ``adopt`` (an older
    version's, or another identity's the operator confirmed) under it."""
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (
            "INSERT INTO records (pair, locator, source, mapping, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(pair) DO UPDATE SET source=excluded.source, mapping=excluded.mapping",
            (key, locator, source, mapping, time.time()),
        )
    ]
    if adopt is not None:
        statements += [
            (
                "INSERT OR IGNORE INTO brought (pair, id, name, source, seen_at, copy, gone_at) "
                "SELECT ?, id, name, source, seen_at, copy, gone_at FROM brought WHERE pair=?",
                (key, adopt),
            ),
            ("DELETE FROM brought WHERE pair=?", (adopt,)),
            ("DELETE FROM records WHERE pair=?", (adopt,)),
        ]
    _statements(db, *statements)


def write_rows(db: sqlite3.Connection, rows: list[tuple[str, str, str | None, str, float, str | None]]) -> None:
    """Upsert remembered rows (pair, id, name, source, seen_at, copy): seen at both ends, so not gone."""
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT INTO brought (pair, id, name, source, seen_at, copy) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(pair, id) DO UPDATE SET name=excluded.name, source=excluded.source, "
            "seen_at=excluded.seen_at, copy=COALESCE(excluded.copy, brought.copy), gone_at=NULL",
            rows,
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _mark_gone(db: sqlite3.Connection, pair: str, ids: list[str]) -> None:
    now = time.time()
    _statements(db, *[("UPDATE brought SET gone_at=? WHERE pair=? AND id=?", (now, pair, i)) for i in ids])


def _forget(db: sqlite3.Connection, pair: str, ids: list[str]) -> None:
    _statements(db, *[("DELETE FROM brought WHERE pair=? AND id=?", (pair, i)) for i in ids])


# -- the record of one run -----------------------------------------------------------------------


class PairRecord:
    """This run's view of the pair's record (:func:`open_record` builds it)."""

    def __init__(self, file: _File, key: str, prior: frozenset[str], journal: Journal | None) -> None:
        self._file, self.key, self._journal = file, key, journal
        self.prior_live = prior  # recorded images not known to be gone, before this run wrote any
        self.confirmed = False  # --confirm-source: the operator vouched for the source

    async def remember(self, image: dict[str, Any], copy: Entry | None) -> None:
        """Note that the source image ``image`` is at the destination as ``copy`` (buffered)."""
        if self._journal is not None:
            source = json.dumps({k: image.get(k) for k in RECORD_KEYS}, separators=(",", ":"))
            noted = None if copy is None else copy_of(copy)
            await self._journal.buffer_row((self.key, image["id"], image.get("name"), source, time.time(), noted))

    async def rows(self) -> dict[str, Recorded]:
        """Every recorded image ({} when the journal failed or there is none)."""
        if self._journal is not None:
            await self._journal.flush_record()
        return await self._file.call(_rows, self.key) or {}

    async def mark_gone(self, image_ids: list[str]) -> None:
        """The source no longer has these (they stay recorded, no longer counted as held)."""
        if image_ids and self._file.writable:
            await self._file.call(_mark_gone, self.key, image_ids)

    async def forget(self, image_ids: list[str]) -> None:
        """Drop these from the record (gone from both ends, or deleted now)."""
        if image_ids and self._file.writable:
            await self._file.call(_forget, self.key, image_ids)


async def open_record(
    journal: Journal | None,
    path: Path | None,
    src: GlanceClient,
    identity: SourceIdentity,
    destination: str,
    mapping: dict[str, Any],
    *,
    confirm_source: bool = False,
    change_mapping: bool = False,
) -> PairRecord:
    """Find this source's record in the journal, check that the source is the one it was
    made from and that this run maps identities as its copies did, and (a live run, with
    ``journal``) bind it; a dry run reads ``path`` only.

    Raises :class:`~asyncmigrate.errors.UsageError` (exit 2, nothing done) when the
    source is not the record's (see the module docstring) or the mapping differs.
    """
    file: _File = _JournalFile(journal) if journal is not None else _ReadOnlyFile(path)
    key = record_key(identity, destination)
    locator = pair_key(identity.endpoint, destination)
    where = journal.path if journal is not None else path
    found = await file.call(_find, key, locator) or _Found(None, [], 0)
    adopt: str | None = None
    stored_mapping: str | None = None
    if found.mine is not None:
        used = key
        stored_mapping = found.mine[0]
    elif found.others:
        other_key, other_source, stored_mapping = found.others[0]
        if not confirm_source:
            raise UsageError(
                f"the journal {where} holds the record of another source at this address ({_described(other_source)}; "
                f"this one: {identity.describe()}): refusing, nothing done; give this source its own --journal, or, "
                "if it is the same cloud, --confirm-source"
            )
        used = adopt = other_key
    elif found.legacy:
        used = adopt = locator
    else:
        used = key
    live = await file.call(_live_ids, used) or []
    if not confirm_source:
        await _check_holdings(src, live, where, identity, old=used == locator)
    wanted = json.dumps(mapping, sort_keys=True)
    # A mapping matters once copies were made with it; a record that names none may change it.
    copies = bool(await file.call(_any_row, used))
    if stored_mapping is not None and copies and not change_mapping:
        difference = mapping_difference(json.loads(stored_mapping), mapping)
        if difference is not None:
            raise UsageError(
                f"{difference}: the pair's copies were made with another identity mapping, and this run would "
                "re-own or re-share them; run with the same flags, or --change-mapping to change it"
            )
    if journal is not None:
        await file.call(_bind, key, locator, identity.key(), wanted, adopt)
    record = PairRecord(file, key if journal is not None else used, frozenset(live), journal)
    record.confirmed = confirm_source
    return record


async def _check_holdings(
    src: GlanceClient, live: list[str], where: Path | None, identity: SourceIdentity, *, old: bool
) -> None:
    """Refuse a source that holds fewer than a quarter of a sample of the record's images."""
    if not live:
        return
    sample = random.sample(live, min(SAMPLE, len(live)))
    held = 0
    for image_id in sample:
        if await src.get_image(image_id) is not None:
            held += 1
    if held * 4 < len(sample):
        made = "an older asyncmigrate's record" if old else "its record"
        raise UsageError(
            f"the source ({identity.describe()}) holds {held} of {len(sample)} images sampled from {made} in the "
            f"journal {where}: it is not the cloud the record was made from, or these credentials see much less; "
            "refusing, nothing done; give another cloud its own --journal, or, if the images are really gone, "
            "--confirm-source"
        )
