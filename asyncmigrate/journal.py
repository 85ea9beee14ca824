"""A durable journal of every image's progress, across runs and crashes.

One SQLite file per job (source/destination or cloud/stores), written through
one worker thread (``anyio.to_thread`` with a capacity limiter of 1, so the
connection is never used by two threads at once), WAL mode.

What it is for:

* a run that was killed (``kill -9``, power loss) is seen by the next one:
  the images that were in flight are named and reported as ``resumed``;
* operators can watch or audit a long job from outside (``sqlite3 FILE``);
* the *record* of what this tool brought from one source to one destination
  (table ``brought``, keyed by the pair): ``sync`` reports or deletes the
  images of that record the source no longer has, and nothing else.  It is
  rebuilt on every run from the images found at both ends (Glance ids are
  random UUIDs: an id in both catalogs was copied), so a lost file only
  forgets the images deleted at the source since the last run — those are
  then never deleted, the safe direction.

What it is not: the truth.  Every image is re-decided from the destination's
real state on every run (the destination wins), so a journal that lost its
last entries (``synchronous=NORMAL`` may drop the last commits on power loss,
never corrupt the file) or that was deleted costs nothing but the history.
That is also why a write that fails mid-run (a full disk, a file removed or
damaged underneath) never stops the run: the journal says so once (a
:class:`~asyncmigrate.progress.JournalFailed` event) and records nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .errors import UsageError
from .progress import Emit, JournalFailed, ignore
from .report import ImageResult

__all__ = [
    "RECORD_KEYS",
    "Journal",
    "default_journal_path",
    "pair_key",
    "read_destination_properties",
    "read_record",
    "state_dir",
]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT,
    run_id INTEGER NOT NULL,
    state TEXT NOT NULL,          -- started | done
    outcome TEXT,
    action TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    updated_at REAL NOT NULL
);
"""

# The record of images brought from a source to a destination ("pair" is
# pair_key()).  ``source`` holds the attributes of the source image, as last
# seen, that the selection flags look at: a removed image is judged by them.
_RECORD_SCHEMA = """
CREATE TABLE IF NOT EXISTS brought (
    pair TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    source TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (pair, id)
);
"""
# The custom properties a destination was seen setting itself (asyncmigrate/owned.py), by
# destination endpoint: later runs leave them alone.
_OWNED_SCHEMA = """
CREATE TABLE IF NOT EXISTS destination_properties (
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    learned_at REAL NOT NULL,
    PRIMARY KEY (destination, key)
);
"""
RECORD_KEYS = ("id", "name", "owner", "visibility", "status", "tags", "size", "stores")
_RECORD_BATCH = 500  # rows buffered before a write: one thread hop per batch, not per image


def pair_key(source_endpoint: str, destination_endpoint: str) -> str:
    """The record's key for one (source, destination) pair of image endpoints."""
    return hashlib.sha256(f"{source_endpoint}\n{destination_endpoint}".encode()).hexdigest()[:16]


async def read_record(path: Path, pair: str) -> dict[str, dict[str, Any]]:
    """The record of ``pair`` in the journal at ``path``, read only ({} when there is none).

    For dry runs: opens nothing for writing and creates no file.
    """
    return await anyio.to_thread.run_sync(_read_record_blocking, path, pair)


def _read_record_blocking(path: Path, pair: str) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _select_record(db, pair)
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return {}
        raise UsageError(f"cannot read the journal {path}: {exc}") from exc


def _select_record(db: sqlite3.Connection, pair: str) -> dict[str, dict[str, Any]]:
    rows = db.execute("SELECT id, source FROM brought WHERE pair = ?", (pair,))
    return {row[0]: dict(json.loads(row[1])) for row in rows}


async def read_destination_properties(path: Path, destination: str) -> list[str]:
    """The properties the journal at ``path`` remembers ``destination`` setting itself, read
    only ([] when there is no such journal): for dry runs and ``verify``."""
    return await anyio.to_thread.run_sync(_read_owned_blocking, path, destination)


def _read_owned_blocking(path: Path, destination: str) -> list[str]:
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _select_owned(db, destination)
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return []
        raise UsageError(f"cannot read the journal {path}: {exc}") from exc


def _select_owned(db: sqlite3.Connection, destination: str) -> list[str]:
    rows = db.execute("SELECT key FROM destination_properties WHERE destination = ? ORDER BY key", (destination,))
    return [str(row[0]) for row in rows]


def state_dir() -> Path:
    """``$XDG_STATE_HOME/asyncmigrate`` (default ``~/.local/state/asyncmigrate``)."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "asyncmigrate"


def default_journal_path(command: str, *endpoints: str, shard: tuple[int, int] | None = None) -> Path:
    """``<state dir>/<command>-<hash of the endpoints>[-shardKofN].sqlite``.

    Each shard has its own: shards of one job often run on one host, and a
    journal shared by two live runs would show each one the other's images in
    flight as a killed run's leftovers.
    """
    key = hashlib.sha256("\n".join(endpoints).encode()).hexdigest()[:16]
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return state_dir() / f"{command}-{key}{suffix}.sqlite"


class Journal:
    """The journal file of one job; use :meth:`open` and ``async with``."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        run_id: int,
        crashed: dict[str, str],
        emit: Emit = ignore,
    ) -> None:
        self.path = path
        self._db = connection
        self.run_id = run_id
        # Images a previous run left in flight, with that run's start time.
        self.crashed_in_flight = crashed
        self._limiter = anyio.CapacityLimiter(1)
        self._remembered: list[tuple[str, str, str | None, str, float]] = []
        self._emit = emit
        self.failed: str | None = None  # why writing stopped, once it did

    @classmethod
    async def open(cls, path: Path, command: str, emit: Emit = ignore) -> Journal:
        """Open (creating) the journal and start a run in it.

        A journal that cannot be opened is a usage error (nothing has started);
        one that fails later is dropped with one ``JournalFailed`` event.
        """
        try:
            journal = await anyio.to_thread.run_sync(cls._open_blocking, path, command)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open the journal {path}: {exc}") from exc
        journal._emit = emit
        return journal

    @classmethod
    def _open_blocking(cls, path: Path, command: str) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA + _RECORD_SCHEMA + _OWNED_SCHEMA)
        crashed = {
            row[0]: row[1]
            for row in db.execute(
                "SELECT images.id, images.name FROM images JOIN runs ON runs.id = images.run_id "
                "WHERE images.state = 'started' AND runs.finished_at IS NULL"
            )
        }
        cur = db.execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, time.time()))
        return cls(path, db, int(cur.lastrowid or 0), crashed)

    async def _guarded(self, work: Callable[..., T], *args: Any) -> T | None:
        """Run ``work(*args)`` on the journal's thread; once anything fails, the journal is
        dropped (one ``JournalFailed`` event) and every later call is a no-op returning None:
        the journal is a record, never a reason for an image or the run to fail."""
        if self.failed is not None:
            return None
        try:
            return await anyio.to_thread.run_sync(work, *args, limiter=self._limiter)
        except (OSError, sqlite3.Error) as exc:
            if self.failed is None:  # writes in flight together may fail together: say it once
                self.failed = f"{type(exc).__name__}: {exc}"
                self._emit(JournalFailed(str(self.path), self.failed))
            return None

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._guarded(self._db.execute, sql, params)

    async def _close(self) -> None:
        # Nothing left to lose if this fails: the run's outcome does not depend on it.
        with contextlib.suppress(OSError, sqlite3.Error):
            await anyio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    async def started(self, image: dict[str, Any]) -> None:
        """Record that a worker took the image."""
        await self._write(
            "INSERT INTO images (id, name, run_id, state, updated_at) VALUES (?, ?, ?, 'started', ?) "
            "ON CONFLICT(id) DO UPDATE SET run_id=excluded.run_id, state='started', updated_at=excluded.updated_at",
            (image["id"], image.get("name"), self.run_id, time.time()),
        )

    async def done(self, result: ImageResult) -> None:
        """Record the image's outcome."""
        await self._write(
            "UPDATE images SET state='done', outcome=?, action=?, bytes=?, attempts=?, reason=?, updated_at=? "
            "WHERE id=?",
            (result.outcome, result.action, result.bytes, result.attempts, result.reason, time.time(), result.id),
        )

    async def finish(self, *, interrupted: bool) -> None:
        """Close the run (a run never closed was killed) and the file."""
        await self._write(
            "UPDATE runs SET finished_at=?, interrupted=? WHERE id=?", (time.time(), int(interrupted), self.run_id)
        )
        await self._close()

    async def abandon(self) -> None:
        """Close the file without closing the run (as a crash would, but cleanly)."""
        await self._close()

    # -- the record of images brought from a source (``sync`` reads it) ------

    async def remember(self, pair: str, image: dict[str, Any]) -> None:
        """Record that the source image ``image`` is at the destination too (buffered)."""
        source = json.dumps({k: image.get(k) for k in RECORD_KEYS}, separators=(",", ":"))
        self._remembered.append((pair, image["id"], image.get("name"), source, time.time()))
        if len(self._remembered) >= _RECORD_BATCH:
            await self.flush_record()

    async def flush_record(self) -> None:
        """Write the buffered :meth:`remember` rows."""
        rows, self._remembered = self._remembered, []
        if rows:
            await self._guarded(self._write_record, rows)

    def _write_record(self, rows: list[tuple[str, str, str | None, str, float]]) -> None:
        self._batch(
            "INSERT INTO brought (pair, id, name, source, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(pair, id) DO UPDATE SET name=excluded.name, source=excluded.source, seen_at=excluded.seen_at",
            rows,
        )

    def _batch(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        # The connection is in autocommit mode: one explicit transaction per batch.
        self._db.execute("BEGIN")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def record(self, pair: str) -> dict[str, dict[str, Any]]:
        """Every image of ``pair``'s record: {id: the source attributes last seen}."""
        await self.flush_record()
        # A journal that failed has no record to offer: nothing is then judged removed.
        return await self._guarded(_select_record, self._db, pair) or {}

    async def forget(self, pair: str, image_ids: list[str]) -> None:
        """Drop images from ``pair``'s record (deleted at the destination too)."""
        if image_ids:
            await self._guarded(self._forget, pair, image_ids)

    # -- the properties a destination sets itself (asyncmigrate/owned.py) ---

    async def destination_properties(self, destination: str) -> list[str]:
        """The keys ``destination`` was seen setting itself ([] when the journal failed)."""
        return await self._guarded(_select_owned, self._db, destination) or []

    async def remember_destination_properties(self, destination: str, keys: list[str]) -> None:
        """Record keys ``destination`` sets itself."""
        if keys:
            rows = [(destination, key, time.time()) for key in keys]
            sql = "INSERT OR IGNORE INTO destination_properties (destination, key, learned_at) VALUES (?, ?, ?)"
            await self._guarded(self._batch, sql, rows)

    def _forget(self, pair: str, image_ids: list[str]) -> None:
        self._batch("DELETE FROM brought WHERE pair = ? AND id = ?", [(pair, i) for i in image_ids])
