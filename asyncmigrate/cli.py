"""The ``asyncmigrate`` command: parses flags, draws progress, prints the
summary, writes the report and maps errors to exit codes.

The only module that prints or exits.  Exit codes (README, "Exit codes"):
0 all done, 1 some images failed or conflicted, 2 bad usage or configuration,
3 fatal (authentication, endpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import anyio
from rich.console import Console

from . import __version__
from .clouds import load_cloud
from .config import CopyConfig, RetryPolicy, parse_size
from .engine import copy_images
from .errors import AsyncMigrateError, Behaviour, ExitCode, UsageError
from .progress import Stats
from .render import LineRenderer, RichRenderer, human_bytes
from .report import Outcome, RunResult, check_writable, write_report

__all__ = ["main"]

EXAMPLES = """\
examples:
  asyncmigrate copy --src-cloud old --dst-cloud new --dry-run
  asyncmigrate copy --src-cloud old --dst-cloud new --concurrency 8 --report report.json
  asyncmigrate copy --src-cloud old --dst-cloud new --image 3f1c...e9 --dst-store ceph
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line, no usage dump.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = _Parser(
        prog="asyncmigrate",
        description="Move OpenStack Glance images between clouds, keeping every UUID and attribute.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    copy = sub.add_parser(
        "copy",
        help="copy images from one cloud to another, same ids",
        description="Stream every image (or --image ones) from the source cloud into the destination "
        "cloud with the same id and attributes, verifying size and hash on the fly.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("--src-cloud", required=True, metavar="NAME", help="source cloud (clouds.yaml name)")
    copy.add_argument("--dst-cloud", required=True, metavar="NAME", help="destination cloud (clouds.yaml name)")
    copy.add_argument("--dst-store", metavar="STORE", help="destination store id (multi-store Glance)")
    copy.add_argument("--image", action="append", default=[], metavar="ID", help="copy only this image (repeatable)")
    copy.add_argument("--concurrency", type=int, default=4, metavar="N", help="images in flight at once (default 4)")
    copy.add_argument("--chunk-size", default="1MiB", metavar="SIZE", help="read/write chunk (default 1MiB)")
    copy.add_argument(
        "--verify",
        choices=("full", "server"),
        default="full",
        help="full: hash on the fly and hold the last chunk back (default); server: compare recorded hashes only",
    )
    copy.add_argument("--no-owner", action="store_true", help="do not copy the owner (images belong to the caller)")
    copy.add_argument("--retries", type=int, default=5, metavar="N", help="attempts per image (default 5)")
    copy.add_argument("--retry-deadline", type=float, default=900.0, metavar="SECONDS", help="per image (default 900)")
    copy.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report, one entry per image")
    copy.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    copy.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    copy.add_argument("-q", "--quiet", action="store_true", help="no progress display; summary only")
    copy.add_argument("-v", "--verbose", action="store_true", help="log retries and requests")
    return parser


def _config(args: argparse.Namespace) -> CopyConfig:
    return CopyConfig(
        concurrency=args.concurrency,
        chunk_size=parse_size(args.chunk_size),
        dst_store=args.dst_store,
        image_ids=tuple(args.image),
        dry_run=args.dry_run,
        verify=args.verify,
        keep_owner=not args.no_owner,
        retry=RetryPolicy(attempts=args.retries, deadline=args.retry_deadline),
    )


def _print_plan(console: Console, run: RunResult) -> None:
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
    console.print(f"dry run: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} to copy; nothing changed")


def _print_summary(console: Console, run: RunResult) -> None:
    s = run.summary()
    order = (Outcome.COPIED, Outcome.CREATED, Outcome.FINISHED, Outcome.SKIPPED, Outcome.CONFLICT, Outcome.FAILED)
    parts = ", ".join(f"{run.count(o)} {o}" for o in order if run.count(o) or o in (Outcome.COPIED, Outcome.FAILED))
    console.print(
        f"done: {len(run.images)} images ({parts}); {human_bytes(run.bytes)} in {s['seconds']:.1f} s "
        f"({human_bytes(s['bytes_per_second'])}/s); peak memory {human_bytes(s['peak_rss_bytes'])}",
        markup=False,
    )


async def _copy(args: argparse.Namespace, console: Console) -> RunResult:
    config = _config(args)
    if args.report is not None:
        try:
            check_writable(args.report)
        except OSError as exc:
            raise UsageError(f"cannot write the report: {exc}") from exc
    if args.insecure:
        console.print("warning: --insecure: TLS certificates are NOT verified", style="yellow")
    src = await load_cloud(args.src_cloud, insecure=args.insecure)
    dst = await load_cloud(args.dst_cloud, insecure=args.insecure)
    stats = Stats()
    renderer: Any
    if args.quiet:
        renderer = LineRenderer(sys.stderr, stats, interval=float("inf"))
    elif console.is_terminal:
        renderer = RichRenderer(console, stats)
    else:
        renderer = LineRenderer(sys.stderr, stats)
    with renderer:
        run = await copy_images(config, src, dst, emit=renderer)
    if config.dry_run:
        _print_plan(console, run)
    else:
        _print_summary(console, run)
    if args.report is not None:
        write_report(args.report, run, command="copy")
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    console = Console(stderr=False, highlight=False)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        run = anyio.run(_copy, args, console)
        return int(run.exit_code)
    except AsyncMigrateError as exc:
        print(f"asyncmigrate: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE if exc.behaviour is Behaviour.USAGE else ExitCode.FATAL)
    except KeyboardInterrupt:
        print("asyncmigrate: interrupted; run the same command again to finish", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
