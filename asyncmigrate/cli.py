"""The ``asyncmigrate`` command: parses flags, draws progress, prints the
summary, writes the report and maps errors to exit codes.

The only module that prints or exits.  Exit codes (README, "Exit codes"):
0 all done, 1 some images failed or conflicted, 2 bad usage or configuration,
3 fatal (authentication, endpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .config import parse_size
from .errors import AsyncMigrateError, Behaviour, ExitCode, UsageError, collapse
from .identity import ProjectMap, load_project_map
from .options import build_parser, copy_config, move_config
from .progress import Stats
from .report import RunResult, check_writable, write_report

# Start-up: what only a running command needs (anyio, aiohttp through the
# engine, rich, keystoneauth1/openstacksdk through clouds) is imported inside
# the function that uses it, so --version and --help print in well under 0.3 s
# (tests/test_cli_startup.py pins that none of it is imported for them).
if TYPE_CHECKING:
    import anyio
    from rich.console import Console

    from .clouds import Cloud

__all__ = ["build_parser", "main"]


def _with_journal(config: Any, args: argparse.Namespace, command: str, *key: str) -> Any:
    from .journal import default_journal_path

    if args.no_journal:
        if args.journal is not None:
            raise UsageError("--journal and --no-journal contradict each other")
        return config
    return dataclasses.replace(config, journal=args.journal or default_journal_path(command, *key))


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope, grace: float) -> None:
    """First Ctrl-C/SIGTERM: take no new image, give those in flight ``grace``
    seconds, then abort them; a second signal aborts at once."""
    import anyio

    async def abort_after_grace() -> None:
        await anyio.sleep(grace)
        print(f"asyncmigrate: grace of {grace:g} s over: aborting images in flight", file=sys.stderr)
        scope.cancel()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            async for _ in signals:
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
    from .verify import verify_catalogs

    kind = args.job if args.command == "plan" else args.command
    dry = args.command == "plan"
    config: Any = move_config(args, dry_run=dry) if kind == "move" else copy_config(args, dry_run=dry)
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
    if args.command == "copy":
        config = _with_journal(config, args, "copy", src.endpoint, dst.endpoint, config.dst_store or "")
    return config, lambda emit, stop: copy_images(config, src, dst, emit=emit, stop=stop)


async def _run(args: argparse.Namespace, console: Console) -> RunResult:
    import anyio

    config, job = await _prepare(args, console)
    stats = Stats()
    renderer = _renderer(args, console, stats)
    stop = anyio.Event()
    run: RunResult | None = None
    with renderer:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_signals, stop, tg.cancel_scope, getattr(args, "grace", 0.0))
                run = await job(renderer, stop)
                tg.cancel_scope.cancel()  # the run is over: stop watching signals
        except BaseExceptionGroup as group:
            raise collapse(group) from group
    if run is None:  # aborted: build what is known from the progress events
        run = RunResult(images=list(stats.results), seconds=stats.elapsed, dry_run=config.dry_run, interrupted=True)
    _output(args, console, run)
    if run.interrupted:
        print(_where_it_stopped(stats, run), file=sys.stderr)
    if args.report is not None:
        write_report(args.report, run, command=" ".join(filter(None, [args.command, getattr(args, "job", None)])))
    return run


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
        # keystoneauth warns (e.g. "Failed to discover available identity versions") right
        # before raising what we report anyway, in one line.
        logging.getLogger("keystoneauth").setLevel(logging.INFO if args.verbose else logging.ERROR)
        # Retries are shown from our own events (with the reason) under -v; stamina's
        # bare "stamina.retry_scheduled" lines would only add noise.
        logging.getLogger("stamina").setLevel(logging.ERROR)
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
        print(f"asyncmigrate: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE if exc.behaviour is Behaviour.USAGE else ExitCode.FATAL)
    except KeyboardInterrupt:
        print("asyncmigrate: interrupted; run the same command again to finish", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
