"""A durable journal of every image's progress, across runs and crashes.

One SQLite file per job (source/destination or cloud/stores), written through
one worker thread (``anyio.to_thread`` with a capacity limiter of 1, so the
connection is never used by two threads at once), WAL mode.

What it is for:

* a run that was killed (``kill -9``, power loss) is seen by the next one:
  the images that were in flight are named and reported as ``resumed``;
* operators can watch or audit a long job from outside (``sqlite3 FILE``);
* the *record* of what this tool brought from one source to one destination
  (:mod:`asyncmigrate.record`: bound to the source cloud itself, not to its
  address): ``sync`` reports or deletes the images of that record the source
  no longer has, and nothing else.  It is rebuilt on every run from the images
  found at both ends (Glance ids are random UUIDs: an id in both catalogs was
  copied), so a lost file only forgets the images deleted at the source since
  the last run — those are then never deleted, the safe direction.

One live run at a time: a run that writes takes an exclusive lock on
``<journal>.lock`` (``flock``) for as long as it runs, and writes its pid, host,
command and start time into it.  A second live run on the same journal (a
cron'd ``sync`` during a long ``copy``: they share the pair's journal by
design) is refused at once with one line naming the first; without the lock it
would take the other run's images in flight for a killed run's.  The lock is
the kernel's: it goes when its process goes, however it ends (``kill -9``, a
crash, power loss), so a dead holder never blocks — the file left behind is
only a note, never read as a lock.  Runs that only read (``plan``, ``--dry-run``)
take no lock.

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
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .errors import UsageError
from .progress import Emit, JournalFailed, ignore
from .record import migrate, write_rows
from .report import ImageResult

__all__ = ["Journal", "default_journal_path", "read_destination_properties", "state_dir"]

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
    state TEXT NOT NULL,          -- started | done | aborted (in flight when an interrupted run ended)
    outcome TEXT,
    action TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    updated_at REAL NOT NULL
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
_RECORD_BATCH = 500  # record rows buffered before a write: one thread hop per batch, not per image


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
        lock: int | None = None,
    ) -> None:
        self.path = path
        self._db = connection
        self._lock_fd = lock
        self.run_id = run_id
        # Images a previous run left in flight, with that run's start time.
        self.crashed_in_flight = crashed
        self._limiter = anyio.CapacityLimiter(1)
        self._remembered: list[tuple[str, str, str | None, str, float, str | None]] = []
        self._emit = emit
        self.failed: str | None = None  # why writing stopped, once it did
        # Set by the run when it knows: did a stop cut it short (a signal after the last image did not)?
        self.cut_short: bool | None = None

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
        lock = _take_lock(path, command)
        try:
            return cls._open_locked(path, command, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _open_locked(cls, path: Path, command: str, lock: int) -> Journal:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA + _OWNED_SCHEMA)
        migrate(db)
        crashed = {
            row[0]: row[1]
            for row in db.execute(
                "SELECT images.id, images.name FROM images JOIN runs ON runs.id = images.run_id "
                "WHERE images.state = 'started' AND runs.finished_at IS NULL"
            )
        }
        cur = db.execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, time.time()))
        return cls(path, db, int(cur.lastrowid or 0), crashed, lock=lock)

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
        if self._lock_fd is not None:  # the lock goes last: the run is closed in the file by now
            os.close(self._lock_fd)
            self._lock_fd = None

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
        """Close the run (a run never closed was killed) and the file.

        Images of this run still ``started`` were aborted in flight (an interrupted run):
        they are marked ``aborted``, so the next run does not take them for a killed run's.
        """
        await self.flush_record()
        await self._guarded(self._close_run, interrupted)
        await self._close()

    def _close_run(self, interrupted: bool) -> None:
        now = time.time()
        self._statements(
            ("UPDATE images SET state='aborted', updated_at=? WHERE run_id=? AND state='started'", (now, self.run_id)),
            ("UPDATE runs SET finished_at=?, interrupted=? WHERE id=?", (now, int(interrupted), self.run_id)),
        )

    def _statements(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run ``statements`` in one transaction (the connection is in autocommit mode)."""
        self._db.execute("BEGIN")
        try:
            for sql, params in statements:
                self._db.execute(sql, params)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def abandon(self) -> None:
        """Close the file without closing the run (as a crash would, but cleanly)."""
        await self._close()

    # -- the pair's record (asyncmigrate.record) writes through here ----------

    async def guarded(self, work: Callable[..., T], *args: Any) -> T | None:
        """``work(connection, *args)`` on the journal's thread (None once the journal failed)."""
        return await self._guarded(work, self._db, *args)

    async def buffer_row(self, row: tuple[str, str, str | None, str, float, str | None]) -> None:
        """Buffer one record row (:func:`asyncmigrate.record.write_rows` writes a batch)."""
        self._remembered.append(row)
        if len(self._remembered) >= _RECORD_BATCH:
            await self.flush_record()

    async def flush_record(self) -> None:
        """Write the buffered record rows."""
        rows, self._remembered = self._remembered, []
        if rows:
            await self._guarded(write_rows, self._db, rows)

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

    def _batch(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        # The connection is in autocommit mode: one explicit transaction per batch.
        self._db.execute("BEGIN")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _take_lock(path: Path, command: str) -> int:
    """Lock ``<path>.lock`` for this process (see the module docstring); its descriptor.

    A journal another live run holds is a :class:`~asyncmigrate.errors.UsageError`
    naming that run (nothing has started).
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot open the journal's lock {lock_path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UsageError(
            f"the journal {path} is in use by another live run ({holder}); two runs on one journal would each "
            "take the other's images in flight for a killed run's: wait for it to finish, or give this run its "
            "own --journal"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise UsageError(
            f"cannot lock the journal {path} ({exc.strerror or exc}): put it on a file system that supports "
            "locks (--journal FILE)"
        ) from exc
    note = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started_at": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
    return fd


def _holder(fd: int) -> str:
    """The note the lock's holder wrote, as words ("pid 123 on host h, copy since 12:00:01")."""
    try:
        note = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(note["started_at"])))
        return f"pid {int(note['pid'])} on host {note['host']}, {note['command']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not said which yet"  # it locked the file and is writing its note
