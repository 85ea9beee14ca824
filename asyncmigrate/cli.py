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
import contextlib
import dataclasses
import logging
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clilog import ErrorLog, configure_logging, log_flags, open_log
from .config import parse_size
from .errors import AsyncMigrateError, Behaviour, ExitCode, UsageError, collapse, redact, redact_url
from .identity import ProjectMap, load_project_map
from .options import build_parser, copy_config, move_config, sync_config
from .progress import Event, Stats
from .report import ImageResult, Outcome, RunResult, check_writable, format_shard, write_report
from .selection import parse_shard
from .window import parse_duration

# Start-up: what only a running command needs (anyio, aiohttp through the engine,
# rich, keystoneauth1/openstacksdk through clouds, sqlite3 through the journal) is
# imported inside the function that uses it, so --version and --help print in well
# under 0.3 s (tests/test_cli_startup.py pins that none of it is imported for them).
if TYPE_CHECKING:
    import anyio
    from rich.console import Console

    from .clouds import Cloud
    from .metrics import MetricsServer
    from .render import Log

__all__ = ["build_parser", "main"]


def _error_dir(config: Any) -> Path:
    """Where the error log goes: next to the journal, else the state directory."""
    from .journal import state_dir

    journal = getattr(config, "journal", None)
    return journal.parent if journal is not None else state_dir()


def _with_journal(config: Any, args: argparse.Namespace, command: str, *key: str) -> Any:
    from .journal import default_journal_path

    if getattr(args, "no_journal", False):
        if getattr(args, "journal", None) is not None:
            raise UsageError("--journal and --no-journal contradict each other")
        return config
    default = default_journal_path(command, *key, shard=config.selection.shard)
    return dataclasses.replace(config, journal=getattr(args, "journal", None) or default)


def _changes_nothing(args: argparse.Namespace) -> str | None:
    """The command's name when it writes nothing anywhere (plan, verify, a dry run)."""
    if args.command in ("plan", "verify") or getattr(args, "dry_run", False):
        return " ".join(filter(None, [args.command, getattr(args, "job", None)]))
    return None


class _Signals:
    """What Ctrl-C/SIGTERM do, from the first image to the exit code.

    While the job runs: the first signal takes no new image and gives those in
    flight ``grace`` seconds, then aborts them (cancels ``job``); a second one
    aborts at once.  A command that changes nothing (``readonly`` names it) has
    nothing to finish: it stops at once.  Once the job is over (``over``) a
    signal changes nothing: the summary, the report and the exit code are
    those of the run that happened (the receiver stays open until then, so
    neither SIGINT's KeyboardInterrupt nor SIGTERM's default kill can cut the
    report short; see :func:`_run`).
    """

    def __init__(self, stop: anyio.Event, job: anyio.CancelScope, grace: float, readonly: str | None, log: Log) -> None:
        self.stop, self.job, self.grace, self.readonly, self.log = stop, job, grace, readonly, log
        self.over = False

    def _say(self, text: str, event: str) -> None:
        self.log.write(text, level="warning", event=event)

    async def watch(self, signals: AsyncIterator[int]) -> None:
        """Handle every signal ``signals`` receives (run it in the task group around the job)."""
        import anyio

        async def abort_after_grace() -> None:
            await anyio.sleep(self.grace)
            if not self.over:
                self._say(f"asyncmigrate: grace of {self.grace:g} s over: aborting images in flight", "aborting")
                self.job.cancel()

        async with anyio.create_task_group() as tg:
            async for _ in signals:
                if self.over or self.job.cancel_called:
                    self._say("asyncmigrate: signal ignored: the run is over, finishing its report", "signal-ignored")
                elif self.readonly is not None:
                    self.stop.set()
                    self._say(f"asyncmigrate: {self.readonly} changes nothing: stopping now", "stopping")
                    self.job.cancel()
                elif self.stop.is_set():
                    self._say("asyncmigrate: second signal: aborting now", "aborting")
                    self.job.cancel()
                else:
                    self.stop.set()
                    self._say(
                        f"asyncmigrate: stopping: no new images; finishing those in flight (up to {self.grace:g} s, "
                        "Ctrl-C again to abort now)",
                        "stopping",
                    )
                    tg.start_soon(abort_after_grace)


def _where_it_stopped(stats: Stats, run: RunResult) -> str:
    aborted = len(stats.taken)
    not_started = max(0, stats.images_seen - stats.done - aborted)
    listing = "" if stats.listing_done else " (the listing was not finished)"
    return (
        f"asyncmigrate: interrupted after {stats.done} images; {aborted} in flight were aborted "
        f"(left queued at the destination, never deleted), {not_started} listed were not started{listing}; "
        "run the same command again to finish"
    )


def _renderer(args: argparse.Namespace, console: Console, stats: Stats, log: Log) -> Any:
    from .render import JsonRenderer, LineRenderer, RichRenderer

    if args.log_format == "json":
        return JsonRenderer(log, stats, interval=float("inf") if args.quiet else 10.0)
    if args.quiet:
        return LineRenderer(log, stats, interval=float("inf"), verbose=args.verbose)
    if console.is_terminal and log.out is console.file:
        return RichRenderer(console, stats, log, verbose=args.verbose)
    return LineRenderer(log, stats, verbose=args.verbose)


async def _project_map(args: argparse.Namespace, src: Cloud) -> ProjectMap | None:
    if args.project_map is None:
        return None
    return await load_project_map(args.project_map, unmapped_owner=args.unmapped_owner, resolve_name=src.project_id)


def _warn_if_insecure(args: argparse.Namespace, cloud: Cloud, log: Log) -> None:
    """The same warning as --insecure when the cloud's own configuration turns TLS checking off
    (``verify: false`` or ``insecure: true`` in clouds.yaml, ``OS_INSECURE``)."""
    if cloud.insecure and not args.insecure:
        log.write(
            f"warning: cloud {cloud.name!r} is configured with verify: false (or insecure): "
            "TLS certificates are NOT verified",
            level="warning",
            event="insecure",
        )


def _itself(args: argparse.Namespace, endpoint: str | None) -> str:
    """Why a command between a cloud and itself is refused."""
    verb = " ".join(filter(None, [args.command, getattr(args, "job", None)]))
    same = f"reach the same Glance ({redact_url(endpoint)})" if endpoint else "are the same cloud"
    return (
        f"{verb}: --src-cloud {args.src_cloud} and --dst-cloud {args.dst_cloud} {same}: a Glance holds each image id "
        "once, so there is nothing to copy; to move images between stores of one cloud use 'asyncmigrate move'"
    )


async def _prepare(args: argparse.Namespace, log: Log) -> tuple[Any, Callable[..., Awaitable[RunResult]]]:
    """Validate flags, load the clouds and build the job to run (nothing is changed yet)."""
    from .clouds import load_cloud, same_glance
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
        log.write("warning: --insecure: TLS certificates are NOT verified", level="warning", event="insecure")
    if kind == "move":
        cloud = await load_cloud(args.cloud, insecure=args.insecure)
        _warn_if_insecure(args, cloud, log)
        if args.command == "move":
            config = _with_journal(config, args, "move", cloud.endpoint, config.from_store, config.to_store)
        return config, lambda emit, stop: move_images(config, cloud, emit=emit, stop=stop)
    if args.src_cloud == args.dst_cloud:
        raise UsageError(_itself(args, None))
    src = await load_cloud(args.src_cloud, insecure=args.insecure)
    dst = await load_cloud(args.dst_cloud, insecure=args.insecure)
    for cloud in (src, dst):
        _warn_if_insecure(args, cloud, log)
    if await same_glance(src, dst):
        raise UsageError(_itself(args, src.endpoint))
    config = dataclasses.replace(config, project_map=await _project_map(args, src))
    # One journal per (source, destination) pair: copy and sync share the record of what was brought
    # and of the properties the destination sets itself; plan and verify only read it.
    config = _with_journal(config, args, "pair", src.endpoint, dst.endpoint)
    if args.command == "verify":
        return config, lambda emit, stop: verify_catalogs(config, src, dst, strict=args.strict, emit=emit)
    if kind == "sync":
        return config, lambda emit, stop: sync_images(config, src, dst, emit=emit, stop=stop)
    return config, lambda emit, stop: copy_images(config, src, dst, emit=emit, stop=stop)


async def _metrics(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> MetricsServer | None:
    """``--metrics-addr``: bind it now (a port in use is a usage error before anything is done)."""
    if getattr(args, "metrics_addr", None) is None:
        return None
    from .metrics import Metrics, serve

    shard = None if args.shard is None else format_shard(parse_shard(args.shard))
    return await stack.enter_async_context(serve(args.metrics_addr, Metrics(args.command, shard)))


async def _run(args: argparse.Namespace, console: Console, log: Log) -> RunResult:
    async with contextlib.AsyncExitStack() as stack:
        server = await _metrics(args, stack)
        run = await _run_job(args, console, log, server)
        if server is not None:
            await server.linger(args.metrics_linger)  # until the final values are scraped
            _ignore_signals()  # its own receiver put back the default handlers
        return run


def _ignore_signals() -> None:
    """From here to the process's exit a signal must change nothing: the exit code is decided
    (leaving a signal receiver puts back the default handlers: SIGINT raises, SIGTERM kills)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def _run_job(args: argparse.Namespace, console: Console, log: Log, server: MetricsServer | None) -> RunResult:
    import anyio

    config, job = await _prepare(args, log)
    stats = Stats()
    renderer = _renderer(args, console, stats, log)
    errors = ErrorLog(_error_dir(config))

    def emit(event: Event) -> None:
        errors(event)
        renderer(event)
        if server is not None:
            server.metrics(event)

    stop = anyio.Event()
    run: RunResult | None = None
    scope = anyio.CancelScope()
    signals = _Signals(stop, scope, getattr(args, "grace", 0.0), _changes_nothing(args), log)
    # Signals are handled from the first image until the exit code is decided: the receiver
    # stays open through the summary and the report (its handlers never raise, never kill).
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(signals.watch, received)
                with renderer, scope:
                    run = await job(emit, stop)
                signals.over = True
                run = _end(args, console, log, config, stats, run, errors)
                tg.cancel_scope.cancel()  # the report is written: stop watching signals
        except BaseExceptionGroup as group:
            raise collapse(group) from group
    _ignore_signals()
    assert run is not None  # _end always builds one
    return run


def _aborted(stats: Stats, by: str = "by the signal") -> list[ImageResult]:
    """The images an aborted run was handling, with what was sent (the job was cancelled:
    only the progress events tell); ``by`` says what aborted them."""
    from .progress import human_bytes

    results = []
    for image_id, (name, size, sent) in stats.taken.items():
        if image_id in stats.in_flight:
            action = "copy"
            what = (
                f"aborted {by} after {human_bytes(sent)} of {human_bytes(size)} were sent: the upload was "
                "dropped, Glance returns the image to queued at the destination (never deleted)"
            )
        else:
            action = ""
            what = f"aborted {by} before its data was sent (a destination image it created stays queued)"
        reason = f"{what}; run the same command again to finish it"
        results.append(ImageResult(image_id, name, action, Outcome.ABORTED, bytes=sent, size=size, reason=reason))
    return results


def _end(
    args: argparse.Namespace,
    console: Console,
    log: Log,
    config: Any,
    stats: Stats,
    run: RunResult | None,
    errors: ErrorLog,
) -> RunResult:
    """The summary, the end-of-run lines and the report (signals change nothing any more)."""
    if run is None:  # aborted: build what is known from the progress events
        # A command that writes reports what it was doing to each image in flight; one that
        # only reads did nothing to them.
        images = [*stats.results, *([] if _changes_nothing(args) else _aborted(stats))]
        run = RunResult(images=images, seconds=stats.elapsed, dry_run=config.dry_run, interrupted=True)
    elif stats.taken and not _changes_nothing(args):
        # The run ended, yet images it took never ended: a maintenance window's grace aborted them.
        run.images.extend(_aborted(stats, "at the end of the --max-duration grace"))
    run.shard = config.selection.shard  # the report says which shard it is (report merge reads it)
    _output(args, console, log, run)
    if run.interrupted and _changes_nothing(args):
        log.write(
            f"asyncmigrate: interrupted after {stats.done} images; nothing was changed; run the same command "
            "again for all of them",
            level="warning",
            event="interrupted",
        )
    elif run.interrupted:
        log.write(_where_it_stopped(stats, run), level="warning", event="interrupted")
    elif run.incomplete is not None:
        log.write(
            f"asyncmigrate: incomplete: {redact(run.incomplete)}; run the same command again to finish",
            level="error",
            event="incomplete",
        )
    if run.refused is not None:
        log.write(
            f"asyncmigrate: refusing to delete: {run.refused}; nothing was deleted", level="error", event="refused"
        )
    if args.report is not None:
        write_report(args.report, run, command=" ".join(filter(None, [args.command, getattr(args, "job", None)])))
    note = errors.note()
    if note is not None:
        where = str(errors.path) if errors.path else None
        log.write(note, level="error", event="internal-errors", log=where)
    return run


def _output(args: argparse.Namespace, console: Console, log: Log, run: RunResult) -> None:
    """The end of the run: the summary, the plan or the differences (text on the console and in
    --log-file; with --log-format json one object per line; plan --output json one document)."""
    from rich.console import Console

    from .output import plan_records, print_plan, print_summary, print_verify, verify_records

    verb = args.job if args.command == "plan" else args.command
    rate = None
    if args.command == "plan":
        rate = parse_size(args.rate)
        if getattr(args, "max_rate", None):  # the cap bounds the estimate too
            rate = min(rate, parse_size(args.max_rate))
    window = parse_duration(args.max_duration) if getattr(args, "max_duration", None) else None
    document = args.command == "plan" and args.output == "json"
    if log.json and not document:
        if args.command == "verify":
            records = verify_records(run)
        elif run.dry_run:
            records = plan_records(run, rate=rate, verb=verb, window=window)
        else:
            records = [("summary", "info", run.summary())]
        for event, level, fields in records:
            log.record(event, level=level, **fields)
        return
    consoles = [console]
    if log.file is not None:  # the file gets the plain rendering: what a pipe gets
        consoles.append(Console(file=log.file, highlight=False, soft_wrap=True, force_terminal=False))
    for target in consoles:
        if args.command == "verify":
            print_verify(target, run)
        elif run.dry_run:
            print_plan(target, run, rate=rate, as_json=document, verb=verb, window=window)
        else:
            print_summary(target, run)


def _report_merge(args: argparse.Namespace, log: Log) -> int:
    """``report merge``: the shards' reports as one summary; 0 only for a whole, clean job."""
    from rich.console import Console

    from .merge import merge_reports
    from .output import print_merge
    from .report import Report

    merged = merge_reports([Report.read(path) for path in args.reports])
    print_merge(Console(file=log.out, highlight=False, soft_wrap=True), merged, as_json=args.output == "json")
    return int(merged.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    Called with ``argv`` (in-process, by a test or a wrapper), it gives back the signal
    handlers it found; as the process's entry point (``argv`` None) a run leaves SIGINT
    and SIGTERM ignored until the process exits: the exit code is decided.
    """
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    entry = argv is None
    try:
        return _entry(sys.argv[1:] if argv is None else list(argv))
    finally:
        if not entry:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)


def _entry(argv: list[str]) -> int:
    log: Log | None = None
    try:
        args = build_parser().parse_args(argv)  # --version and --help print and exit here
        document = args.command == "plan" and args.output == "json"
        log = open_log(getattr(args, "log_format", "text"), getattr(args, "log_file", None), document=document)
        if args.command == "report":
            return _report_merge(args, log)
        return _main(args, log)
    except AsyncMigrateError as exc:
        if log is None:  # the flags themselves were wrong: log the error as they asked, if they can be read
            fmt, path = log_flags(argv)
            fmt = "json" if fmt == "json" else "text"
            try:
                log = open_log(fmt, path)
            except UsageError:
                log = open_log(fmt, None)
        log.error(f"asyncmigrate: error: {redact(str(exc))}")
        return int(ExitCode.USAGE if exc.behaviour is Behaviour.USAGE else ExitCode.FATAL)
    finally:
        if log is not None and log.file is not None:
            log.file.close()


def _main(args: argparse.Namespace, log: Log) -> int:
    try:
        import anyio
        from rich.console import Console

        from .tuning import loop_options

        console = Console(stderr=False, highlight=False, soft_wrap=True)
        if args.command == "plan" and args.output == "json":
            args.quiet = True  # stdout carries the JSON document only
        configure_logging(args, log)
        try:
            loop_name, backend_options = loop_options(args.event_loop)
        except ModuleNotFoundError:
            raise UsageError(
                "--event-loop uvloop: uvloop is not installed (pip install 'asyncmigrate[fast]')"
            ) from None
        logging.getLogger("asyncmigrate").info("event loop: %s", loop_name)
        run = anyio.run(_run, args, console, log, backend="asyncio", backend_options=backend_options)
        return int(run.exit_code)
    except AsyncMigrateError:
        raise
    except KeyboardInterrupt:
        log.error(
            "asyncmigrate: interrupted; run the same command again to finish", level="warning", event="interrupted"
        )
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug outside any one image: one line here, the traceback in a file
        from .journal import state_dir

        errors = ErrorLog(state_dir())
        errors.count = 1
        errors.write(f"the run: {type(exc).__name__}", redact("".join(traceback.format_exception(exc))))
        log.error(f"asyncmigrate: internal error: {type(exc).__name__}: {redact(str(exc))}", event="internal-error")
        log.error(errors.note() or "", event="internal-errors")
        return int(ExitCode.FATAL)
