"""A durable journal of every image's progress, across runs and crashes.

One SQLite file per job (source/destination or cloud/stores), written through
one worker thread (``anyio.to_thread`` with a capacity limiter of 1, so the
connection is never used by two threads at once), WAL mode.

What it is for:

* a run that was killed (``kill -9``, power loss) is seen by the next one:
  the images that were in flight are named and reported as ``resumed``;
* operators can watch or audit a long job from outside (``sqlite3 FILE``).

What it is not: the truth.  Every image is re-decided from the destination's
real state on every run (the destination wins), so a journal that lost its
last entries (``synchronous=NORMAL`` may drop the last commits on power loss,
never corrupt the file) or that was deleted costs nothing but the history.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .errors import UsageError
from .report import ImageResult

__all__ = ["Journal", "default_journal_path"]

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


def default_journal_path(command: str, *endpoints: str) -> Path:
    """``$XDG_STATE_HOME/asyncmigrate/<command>-<hash of the endpoints>.sqlite``."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha256("\n".join(endpoints).encode()).hexdigest()[:16]
    return base / "asyncmigrate" / f"{command}-{key}.sqlite"


class Journal:
    """The journal file of one job; use :meth:`open` and ``async with``."""

    def __init__(self, path: Path, connection: sqlite3.Connection, run_id: int, crashed: dict[str, str]) -> None:
        self.path = path
        self._db = connection
        self.run_id = run_id
        # Images a previous run left in flight, with that run's start time.
        self.crashed_in_flight = crashed
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path, command: str) -> Journal:
        """Open (creating) the journal and start a run in it."""
        try:
            return await anyio.to_thread.run_sync(cls._open_blocking, path, command)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open the journal {path}: {exc}") from exc

    @classmethod
    def _open_blocking(cls, path: Path, command: str) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        crashed = {
            row[0]: row[1]
            for row in db.execute(
                "SELECT images.id, images.name FROM images JOIN runs ON runs.id = images.run_id "
                "WHERE images.state = 'started' AND runs.finished_at IS NULL"
            )
        }
        cur = db.execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, time.time()))
        return cls(path, db, int(cur.lastrowid or 0), crashed)

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        await anyio.to_thread.run_sync(self._db.execute, sql, params, limiter=self._limiter)

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
        await anyio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    async def abandon(self) -> None:
        """Close the file without closing the run (as a crash would, but cleanly)."""
        await anyio.to_thread.run_sync(self._db.close, limiter=self._limiter)
