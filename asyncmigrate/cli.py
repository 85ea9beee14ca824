"""The ``asyncmigrate`` command: parses flags, draws progress, prints the
summary, writes the report and maps errors to exit codes.

The only module that prints or exits.  Exit codes (README, "Exit codes"):
0 all done, 1 some images failed or conflicted, 2 bad usage or configuration,
3 fatal (authentication, endpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import anyio
from rich.console import Console

from . import __version__
from .clouds import load_cloud
from .config import CopyConfig, MoveConfig, RetryPolicy, Timeouts, parse_size
from .engine import copy_images
from .errors import AsyncMigrateError, Behaviour, ExitCode, UsageError, collapse
from .journal import default_journal_path
from .progress import Emit, Stats
from .render import LineRenderer, RichRenderer, human_bytes
from .report import Outcome, RunResult, check_writable, write_report
from .storemove import move_images

__all__ = ["build_parser", "main"]

COPY_EXAMPLES = """\
examples:
  asyncmigrate copy --src-cloud old --dst-cloud new --dry-run
  asyncmigrate copy --src-cloud old --dst-cloud new --concurrency 8 --report report.json
  asyncmigrate copy --src-cloud old --dst-cloud new --image 3f1c...e9 --dst-store ceph
"""
MOVE_EXAMPLES = """\
examples:
  asyncmigrate move --cloud prod --from-store file --to-store s3 --dry-run
  asyncmigrate move --cloud prod --from-store file --to-store s3 --report move.json
  asyncmigrate move --cloud prod --from-store file --to-store s3 --keep-source --image 3f1c...e9
  asyncmigrate move --cloud prod --from-store file --to-store s3 --method location
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line, no usage dump.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser, *, concurrency: int) -> None:
    p.add_argument("--image", action="append", default=[], metavar="ID", help="only this image (repeatable)")
    p.add_argument(
        "--concurrency", type=int, default=concurrency, metavar="N", help=f"images at once (default {concurrency})"
    )
    p.add_argument("--chunk-size", default="1MiB", metavar="SIZE", help="read/write chunk (default 1MiB)")
    p.add_argument("--retries", type=int, default=5, metavar="N", help="attempts per image (default 5)")
    p.add_argument("--retry-deadline", type=float, default=900.0, metavar="SECONDS", help="per image (default 900)")
    p.add_argument(
        "--connect-timeout", type=float, default=30.0, metavar="SECONDS", help="per connection attempt (default 30)"
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest silence while reading an answer (default 300); a whole transfer has no time limit",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report, one entry per image")
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, let images in flight finish this long before aborting them (default 30)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="SQLite journal of progress across runs (default: ~/.local/state/asyncmigrate/<job>.sqlite)",
    )
    p.add_argument("--no-journal", action="store_true", help="keep no journal")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display; summary only")
    p.add_argument("-v", "--verbose", action="store_true", help="log retries")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = _Parser(
        prog="asyncmigrate",
        description="Move OpenStack Glance images between clouds or stores, keeping every UUID and attribute.",
        epilog=COPY_EXAMPLES + MOVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    copy = sub.add_parser(
        "copy",
        help="copy images from one cloud to another, same ids",
        description="Stream every image (or --image ones) from the source cloud into the destination "
        "cloud with the same id and attributes, verifying size and hash on the fly.",
        epilog=COPY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("--src-cloud", required=True, metavar="NAME", help="source cloud (clouds.yaml name)")
    copy.add_argument("--dst-cloud", required=True, metavar="NAME", help="destination cloud (clouds.yaml name)")
    copy.add_argument("--dst-store", metavar="STORE", help="destination store id (multi-store Glance)")
    copy.add_argument(
        "--verify",
        choices=("full", "server"),
        default="full",
        help="full: hash on the fly and hold the last chunk back (default); server: compare recorded hashes only",
    )
    copy.add_argument("--no-owner", action="store_true", help="do not copy the owner (images belong to the caller)")
    _common(copy, concurrency=4)

    move = sub.add_parser(
        "move",
        help="move images between stores of one multi-store cloud, same ids",
        description="Put every image of --from-store (or --image ones) into --to-store and take it off "
        "--from-store, keeping its id and attributes.",
        epilog=MOVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    move.add_argument("--cloud", required=True, metavar="NAME", help="the cloud (clouds.yaml name)")
    move.add_argument("--from-store", required=True, metavar="OLD", help="store to empty")
    move.add_argument("--to-store", required=True, metavar="NEW", help="store to fill")
    move.add_argument(
        "--method",
        choices=("copy-image", "location"),
        default="copy-image",
        help="copy-image: Glance copies server-side (default); location: stream through this tool into a "
        "carrier image and swap locations (needs show_multiple_locations)",
    )
    move.add_argument("--keep-source", action="store_true", help="copy into NEW but keep the data in OLD")
    move.add_argument("--verify-download", action="store_true", help="after the move, read the image back and hash it")
    move.add_argument(
        "--include-deactivated",
        action="store_true",
        help="reactivate deactivated images for the move, then deactivate them again",
    )
    move.add_argument(
        "--import-timeout", type=float, default=3600.0, metavar="SECONDS", help="per copy-image import (default 3600)"
    )
    _common(move, concurrency=2)
    return parser


def _retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(attempts=args.retries, deadline=args.retry_deadline)


def _timeouts(args: argparse.Namespace) -> Timeouts:
    return Timeouts(connect=args.connect_timeout, idle_read=args.read_timeout)


def copy_config(args: argparse.Namespace) -> CopyConfig:
    """The CopyConfig the ``copy`` flags describe."""
    return CopyConfig(
        concurrency=args.concurrency,
        chunk_size=parse_size(args.chunk_size),
        dst_store=args.dst_store,
        image_ids=tuple(args.image),
        dry_run=args.dry_run,
        verify=args.verify,
        keep_owner=not args.no_owner,
        retry=_retry(args),
        timeouts=_timeouts(args),
    )


def move_config(args: argparse.Namespace) -> MoveConfig:
    """The MoveConfig the ``move`` flags describe."""
    return MoveConfig(
        from_store=args.from_store,
        to_store=args.to_store,
        image_ids=tuple(args.image),
        concurrency=args.concurrency,
        method=args.method,
        keep_source=args.keep_source,
        verify_download=args.verify_download,
        include_deactivated=args.include_deactivated,
        dry_run=args.dry_run,
        import_timeout=args.import_timeout,
        chunk_size=parse_size(args.chunk_size),
        retry=_retry(args),
        timeouts=_timeouts(args),
    )


def _print_plan(console: Console, run: RunResult, verb: str) -> None:
    console.print(f"{'action':<12} {'id':<36} {'size':>10}  name / reason")
    for r in sorted(run.images, key=lambda r: (r.action, r.id)):
        detail = r.name or ""
        if r.reason:
            detail = f"{detail} — {r.reason}" if detail else r.reason
        console.print(f"{r.action:<12} {r.id:<36} {human_bytes(r.size):>10}  {detail}", markup=False)
    counts: dict[str, int] = {}
    for r in run.images:
        counts[r.action] = counts.get(r.action, 0) + 1
    parts = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    console.print(f"dry run: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} to {verb}; nothing changed")


def _print_summary(console: Console, run: RunResult) -> None:
    s = run.summary()
    order = (
        Outcome.COPIED,
        Outcome.MOVED,
        Outcome.CREATED,
        Outcome.FINISHED,
        Outcome.SKIPPED,
        Outcome.CONFLICT,
        Outcome.FAILED,
    )
    parts = ", ".join(f"{run.count(o)} {o}" for o in order if run.count(o) or o == Outcome.FAILED)
    console.print(
        f"done: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} in {s['seconds']:.1f} s "
        f"({human_bytes(s['bytes_per_second'])}/s); peak memory {human_bytes(s['peak_rss_bytes'])}",
        markup=False,
    )


def _with_journal(config: Any, args: argparse.Namespace, command: str, *key: str) -> Any:
    if args.no_journal:
        if args.journal is not None:
            raise UsageError("--journal and --no-journal contradict each other")
        return config
    return dataclasses.replace(config, journal=args.journal or default_journal_path(command, *key))


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope, grace: float) -> None:
    """First Ctrl-C/SIGTERM: take no new image, give those in flight ``grace``
    seconds, then abort them; a second signal aborts at once."""

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


async def _run(args: argparse.Namespace, console: Console) -> RunResult:
    job: Callable[[Emit, anyio.Event], Awaitable[RunResult]]
    if args.command == "copy":
        config: Any = copy_config(args)
    else:
        config = move_config(args)
    if args.grace < 0:
        raise UsageError("--grace cannot be negative")
    if args.report is not None:
        try:
            check_writable(args.report)
        except OSError as exc:
            raise UsageError(f"cannot write the report: {exc}") from exc
    if args.insecure:
        console.print("warning: --insecure: TLS certificates are NOT verified", style="yellow")
    if args.command == "copy":
        src = await load_cloud(args.src_cloud, insecure=args.insecure)
        dst = await load_cloud(args.dst_cloud, insecure=args.insecure)
        config = _with_journal(config, args, "copy", src.endpoint, dst.endpoint, config.dst_store or "")

        def job(emit: Emit, stop: anyio.Event) -> Awaitable[RunResult]:
            return copy_images(config, src, dst, emit=emit, stop=stop)
    else:
        cloud = await load_cloud(args.cloud, insecure=args.insecure)
        config = _with_journal(config, args, "move", cloud.endpoint, config.from_store, config.to_store)

        def job(emit: Emit, stop: anyio.Event) -> Awaitable[RunResult]:
            return move_images(config, cloud, emit=emit, stop=stop)

    stats = Stats()
    renderer: Any
    if args.quiet:
        renderer = LineRenderer(sys.stderr, stats, interval=float("inf"))
    elif console.is_terminal:
        renderer = RichRenderer(console, stats)
    else:
        renderer = LineRenderer(sys.stderr, stats)
    stop = anyio.Event()
    run: RunResult | None = None
    with renderer:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_signals, stop, tg.cancel_scope, args.grace)
                run = await job(renderer, stop)
                tg.cancel_scope.cancel()  # the run is over: stop watching signals
        except BaseExceptionGroup as group:
            raise collapse(group) from group
    if run is None:  # aborted: build what is known from the progress events
        run = RunResult(images=list(stats.results), seconds=stats.elapsed, dry_run=config.dry_run, interrupted=True)
    if config.dry_run:
        _print_plan(console, run, "copy" if args.command == "copy" else "move")
    else:
        _print_summary(console, run)
    if run.interrupted:
        print(_where_it_stopped(stats, run), file=sys.stderr)
    if args.report is not None:
        write_report(args.report, run, command=args.command)
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        run = anyio.run(_run, args, console)
        return int(run.exit_code)
    except AsyncMigrateError as exc:
        print(f"asyncmigrate: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE if exc.behaviour is Behaviour.USAGE else ExitCode.FATAL)
    except KeyboardInterrupt:
        print("asyncmigrate: interrupted; run the same command again to finish", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
