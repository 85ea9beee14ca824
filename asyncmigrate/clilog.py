"""The CLI's log plumbing: the run's :class:`~asyncmigrate.render.Log` opened from
``--log-format``/``--log-file``, Python's logging routed into it (credentials redacted), and
the file internal errors' tracebacks go to (:class:`ErrorLog`) — never the console.

Part of the CLI (the only layer that prints): the core emits events and never logs to a stream.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError, redact
from .progress import Event, InternalError

if TYPE_CHECKING:
    from .render import Log

__all__ = ["ErrorLog", "Redacting", "ToLog", "configure_logging", "log_flags", "open_log"]


class ErrorLog:
    """Writes the tracebacks of internal errors to a file in ``directory`` (created at
    the first one) — never to the console; the CLI names the file once at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.count = 0
        self.unwritable: str | None = None

    def __call__(self, event: Event) -> None:
        """Record ``event`` if it is an :class:`InternalError`."""
        if isinstance(event, InternalError):
            self.count += 1
            where = f"image {event.image_id}" if event.image_id else "the run"
            self.write(f"{where}: {event.summary}", event.traceback)

    def write(self, title: str, text: str) -> None:
        """Append one entry (a title line and a traceback)."""
        try:
            if self.path is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
                self.path = self.directory / f"errors-{stamp}-{os.getpid()}.log"
            with self.path.open("a") as fh:
                fh.write(f"=== {dt.datetime.now().isoformat(timespec='seconds')} {title}\n{text}\n")
        except OSError as exc:
            self.unwritable = str(exc)

    def note(self) -> str | None:
        """The line naming the file, if anything was written (or could not be)."""
        if not self.count:
            return None
        what = f"{self.count} internal error(s) — bugs, please report them"
        if self.unwritable is not None or self.path is None:
            return f"asyncmigrate: {what}; their tracebacks could not be written ({self.unwritable})"
        return f"asyncmigrate: {what}; tracebacks written to {self.path}"


class Redacting(logging.Filter):
    """Rewrites every log record's message through :func:`redact` (third-party
    libraries log under -v too; a credential must not reach the console that way)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def log_flags(argv: list[str]) -> tuple[str, str | None]:
    """--log-format and --log-file as written, for an error the parser itself reports."""
    fmt, path = "text", None
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        value = value or (argv[i + 1] if i + 1 < len(argv) else "")
        if name == "--log-format":
            fmt = value
        elif name == "--log-file":
            path = value or None
    return fmt, path


def open_log(fmt: str, path: str | Path | None, *, document: bool = False) -> Log:
    """The run's log: stdout (stderr when stdout carries a document), stderr for fatal errors,
    and ``path`` appended to (a usage error when it cannot be)."""
    from .render import Log

    try:
        file = None if path is None else open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by main)
    except OSError as exc:
        raise UsageError(f"--log-file: cannot write {path}: {exc.strerror or exc}") from exc
    return Log(fmt, out=sys.stderr if document else sys.stdout, err=sys.stderr, file=file)


class ToLog(logging.Handler):
    """Python's logging (``-v``, third-party warnings) into the run's log, on stderr."""

    def __init__(self, log: Log, level: int) -> None:
        super().__init__(level)
        self.log = log
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record) if not self.log.json else record.getMessage()
        self.log.error(text, level=record.levelname.lower(), event="log", logger=record.name)


def configure_logging(args: argparse.Namespace, log: Log) -> None:
    """Python's logging into the run's log: ``-v`` shows INFO, credentials redacted."""
    level = logging.INFO if args.verbose else logging.WARNING
    handler = ToLog(log, level)
    handler.addFilter(Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    # keystoneauth warns (e.g. "Failed to discover available identity versions") right
    # before raising what we report anyway, in one line.
    logging.getLogger("keystoneauth").setLevel(logging.INFO if args.verbose else logging.ERROR)
