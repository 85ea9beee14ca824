"""The ``asyncmigrate`` command: parses flags, draws progress, prints the
summary, writes the report and maps errors to exit codes.

The only module that prints or exits.  Exit codes (docs/reference.md, "Exit codes"):
0 all done, 1 some images failed or conflicted, 2 bad usage or configuration,
3 fatal (authentication, endpoint, or an internal error outside any one image),
4 incomplete (a listing failed part-way), 130 interrupted.

Tracebacks never reach the console: an internal error's goes to a log file
(:class:`ErrorLog`) whose path is printed once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import parse_size
from .errors import AsyncMigrateError, Behaviour, ExitCode, UsageError, collapse, redact
from .identity import ProjectMap, load_project_map
from .options import build_parser, copy_config, move_config, sync_config
from .progress import Event, InternalError, Stats
from .report import RunResult, check_writable, write_report

# Start-up: what only a running command needs (anyio, aiohttp through the engine,
# rich, keystoneauth1/openstacksdk through clouds, sqlite3 through the journal) is
# imported inside the function that uses it, so --version and --help print in well
# under 0.3 s (tests/test_cli_startup.py pins that none of it is imported for them).
if TYPE_CHECKING:
    import anyio
    from rich.console import Console

    from .clouds import Cloud

__all__ = ["build_parser", "main"]


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


class _Redacting(logging.Filter):
    """Rewrites every log record's message through :func:`redact` (third-party
    libraries log under -v too; a credential must not reach the console that way)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _error_dir(config: Any) -> Path:
    """Where the error log goes: next to the journal, else the state directory."""
    from .journal import state_dir

    journal = getattr(config, "journal", None)
    return journal.parent if journal is not None else state_dir()


def _with_journal(config: Any, args: argparse.Namespace, command: str, *key: str) -> Any:
    from .journal import default_journal_path

    if getattr(args, "no_journal", False):
        if args.journal is not None:
            raise UsageError("--journal and --no-journal contradict each other")
        return config
    default = default_journal_path(command, *key, shard=config.selection.shard)
    return dataclasses.replace(config, journal=args.journal or default)


def _changes_nothing(args: argparse.Namespace) -> str | None:
    """The command's name when it writes nothing anywhere (plan, verify, a dry run)."""
    if args.command in ("plan", "verify") or getattr(args, "dry_run", False):
        return " ".join(filter(None, [args.command, getattr(args, "job", None)]))
    return None


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope, grace: float, readonly: str | None) -> None:
    """First Ctrl-C/SIGTERM: take no new image, give those in flight ``grace``
    seconds, then abort them; a second signal aborts at once.  A command that
    changes nothing (``readonly`` names it) has nothing to finish: it stops at once."""
    import anyio

    async def abort_after_grace() -> None:
        await anyio.sleep(grace)
        print(f"asyncmigrate: grace of {grace:g} s over: aborting images in flight", file=sys.stderr)
        scope.cancel()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            async for _ in signals:
                if readonly is not None:
                    stop.set()
                    print(f"asyncmigrate: {readonly} changes nothing: stopping now", file=sys.stderr)
                    scope.cancel()
                    return
                if stop.is_set():
                    print("asyncmigrate: second signal: aborting now", file=sys.stderr)
                    scope.cancel()
                    return
                stop.set()
                print(
                    f"asyncmigrate: stopping: no new images; finishing those in flight (up to {grace:g} s, "
                    "Ctrl-C again to abort now)",
                    file=sys.stderr,
                )
                tg.start_soon(abort_after_grace)


def _where_it_stopped(stats: Stats, run: RunResult) -> str:
    aborted = len(stats.in_flight)
    not_started = max(0, stats.images_seen - stats.done - aborted)
    listing = "" if stats.listing_done else " (the listing was not finished)"
    return (
        f"asyncmigrate: interrupted after {stats.done} images; {aborted} in flight were aborted "
        f"(left queued at the destination, never deleted), {not_started} listed were not started{listing}; "
        "run the same command again to finish"
    )


def _renderer(args: argparse.Namespace, console: Console, stats: Stats) -> Any:
    from .render import JsonRenderer, LineRenderer, RichRenderer

    if args.log_format == "json":
        return JsonRenderer(sys.stderr, stats, interval=float("inf") if args.quiet else 10.0)
    if args.quiet:
        return LineRenderer(sys.stderr, stats, interval=float("inf"), verbose=args.verbose)
    if console.is_terminal:
        return RichRenderer(console, stats, verbose=args.verbose)
    return LineRenderer(sys.stderr, stats, verbose=args.verbose)


async def _project_map(args: argparse.Namespace, src: Cloud) -> ProjectMap | None:
    if args.project_map is None:
        return None
    return await load_project_map(args.project_map, unmapped_owner=args.unmapped_owner, resolve_name=src.project_id)


async def _prepare(args: argparse.Namespace, console: Console) -> tuple[Any, Callable[..., Awaitable[RunResult]]]:
    """Validate flags, load the clouds and build the job to run (nothing is changed yet)."""
    from .clouds import load_cloud
    from .engine import copy_images
    from .storemove import move_images
    from .sync import sync_images
    from .verify import verify_catalogs

    kind = args.job if args.command == "plan" else args.command
    dry = args.command == "plan"
    configs = {"move": move_config, "sync": sync_config}
    config: Any = configs.get(kind, copy_config)(args, dry_run=dry)
    if getattr(args, "grace", 0) < 0:
        raise UsageError("--grace cannot be negative")
    if args.command == "plan":
        parse_size(args.rate)
    if args.report is not None:
        try:
            check_writable(args.report)
        except OSError as exc:
            raise UsageError(f"cannot write the report: {exc}") from exc
    if args.insecure:
        print("warning: --insecure: TLS certificates are NOT verified", file=sys.stderr)
    if kind == "move":
        cloud = await load_cloud(args.cloud, insecure=args.insecure)
        if args.command == "move":
            config = _with_journal(config, args, "move", cloud.endpoint, config.from_store, config.to_store)
        return config, lambda emit, stop: move_images(config, cloud, emit=emit, stop=stop)
    src = await load_cloud(args.src_cloud, insecure=args.insecure)
    dst = await load_cloud(args.dst_cloud, insecure=args.insecure)
    config = dataclasses.replace(config, project_map=await _project_map(args, src))
    if args.command == "verify":
        return config, lambda emit, stop: verify_catalogs(config, src, dst, strict=args.strict, emit=emit)
    if args.command == "copy" or kind == "sync":  # plan sync reads the record (read only)
        # One journal per (source, destination) pair: copy and sync share the record of what was brought.
        config = _with_journal(config, args, "pair", src.endpoint, dst.endpoint)
    if kind == "sync":
        return config, lambda emit, stop: sync_images(config, src, dst, emit=emit, stop=stop)
    return config, lambda emit, stop: copy_images(config, src, dst, emit=emit, stop=stop)


async def _run(args: argparse.Namespace, console: Console) -> RunResult:
    import anyio

    config, job = await _prepare(args, console)
    stats = Stats()
    renderer = _renderer(args, console, stats)
    errors = ErrorLog(_error_dir(config))

    def emit(event: Event) -> None:
        errors(event)
        renderer(event)

    stop = anyio.Event()
    run: RunResult | None = None
    with renderer:
        try:
            async with anyio.create_task_group() as tg:
                grace = getattr(args, "grace", 0.0)
                tg.start_soon(_watch_signals, stop, tg.cancel_scope, grace, _changes_nothing(args))
                run = await job(emit, stop)
                tg.cancel_scope.cancel()  # the run is over: stop watching signals
        except BaseExceptionGroup as group:
            raise collapse(group) from group
    if run is None:  # aborted: build what is known from the progress events
        run = RunResult(images=list(stats.results), seconds=stats.elapsed, dry_run=config.dry_run, interrupted=True)
    _output(args, console, run)
    if run.interrupted and _changes_nothing(args):
        _notice(
            args,
            "interrupted",
            f"asyncmigrate: interrupted after {stats.done} images; nothing was changed; run the same command "
            "again for all of them",
        )
    elif run.interrupted:
        _notice(args, "interrupted", _where_it_stopped(stats, run))
    elif run.incomplete is not None:
        _notice(
            args,
            "incomplete",
            f"asyncmigrate: incomplete: {redact(run.incomplete)}; the images in flight were finished; "
            "run the same command again to finish",
        )
    if args.report is not None:
        write_report(args.report, run, command=" ".join(filter(None, [args.command, getattr(args, "job", None)])))
    note = errors.note()
    if note is not None:
        _notice(args, "internal-errors", note, log=str(errors.path) if errors.path else None)
    return run


def _notice(args: argparse.Namespace, event: str, text: str, **fields: Any) -> None:
    """An end-of-run line on stderr: plain text, or one JSON object with --log-format json."""
    if args.log_format == "json":
        line = {"event": event, "message": text.removeprefix("asyncmigrate: "), **fields}
        print(json.dumps(line), file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _output(args: argparse.Namespace, console: Console, run: RunResult) -> None:
    from .output import print_plan, print_summary, print_verify

    if args.command == "plan":
        rate = parse_size(args.rate)
        if getattr(args, "max_rate", None):  # the cap bounds the estimate too
            rate = min(rate, parse_size(args.max_rate))
        print_plan(console, run, rate=rate, as_json=args.output == "json", verb=args.job)
    elif args.command == "verify":
        print_verify(console, run, as_json=args.log_format == "json")
    elif run.dry_run:
        print_plan(console, run, rate=None, as_json=args.log_format == "json", verb=args.command)
    elif args.log_format == "json":
        print(json.dumps({"event": "summary", **run.summary()}))
    else:
        print_summary(console, run)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)  # --version and --help print and exit here
        import anyio
        from rich.console import Console

        from .tuning import loop_options

        console = Console(stderr=False, highlight=False, soft_wrap=True)
        if args.command == "plan" and args.output == "json":
            args.quiet = True  # stdout carries the JSON document only
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(_Redacting())
        # keystoneauth warns (e.g. "Failed to discover available identity versions") right
        # before raising what we report anyway, in one line.
        logging.getLogger("keystoneauth").setLevel(logging.INFO if args.verbose else logging.ERROR)
        try:
            loop_name, backend_options = loop_options(args.event_loop)
        except ModuleNotFoundError:
            raise UsageError(
                "--event-loop uvloop: uvloop is not installed (pip install 'asyncmigrate[fast]')"
            ) from None
        logging.getLogger("asyncmigrate").info("event loop: %s", loop_name)
        run = anyio.run(_run, args, console, backend="asyncio", backend_options=backend_options)
        return int(run.exit_code)
    except AsyncMigrateError as exc:
        print(f"asyncmigrate: error: {redact(str(exc))}", file=sys.stderr)
        return int(ExitCode.USAGE if exc.behaviour is Behaviour.USAGE else ExitCode.FATAL)
    except KeyboardInterrupt:
        print("asyncmigrate: interrupted; run the same command again to finish", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug outside any one image: one line here, the traceback in a file
        from .journal import state_dir

        log = ErrorLog(state_dir())
        log.count = 1
        log.write(f"the run: {type(exc).__name__}", redact("".join(traceback.format_exception(exc))))
        print(f"asyncmigrate: internal error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        print(log.note(), file=sys.stderr)
        return int(ExitCode.FATAL)
