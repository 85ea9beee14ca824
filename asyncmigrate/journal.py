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
That is also why a write that fails mid-run (a full disk, a file removed or
damaged underneath) never stops the run: the journal says so once (a
:class:`~asyncmigrate.progress.JournalFailed` event) and records nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .errors import UsageError
from .progress import Emit, JournalFailed, ignore
from .report import ImageResult

__all__ = ["Journal", "default_journal_path", "state_dir"]

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
        if self.failed is not None:
            return
        try:
            await anyio.to_thread.run_sync(self._db.execute, sql, params, limiter=self._limiter)
        except (OSError, sqlite3.Error) as exc:
            if self.failed is None:  # writes in flight together may fail together: say it once
                self.failed = f"{type(exc).__name__}: {exc}"
                self._emit(JournalFailed(str(self.path), self.failed))

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
