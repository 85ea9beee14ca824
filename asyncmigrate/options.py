"""The command line's flags (the CLI's parser, kept apart from running); the configs they
describe are built by :mod:`asyncmigrate.runconfig` (re-exported here).

Commands: ``copy``, ``sync``, ``move``, ``plan copy|sync|move`` (the same
flags, a dry run with a table and a time estimate) and ``verify``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from .parser import Parser as _Parser
from .runconfig import copy_config, move_config, preflight_options, selection, sync_config, window

__all__ = ["build_parser", "copy_config", "move_config", "preflight_options", "selection", "sync_config", "window"]

COPY_EXAMPLES = """\
examples:
  asyncmigrate copy --src-cloud old --dst-cloud new --dry-run
  asyncmigrate copy --src-cloud old --dst-cloud new --concurrency 8 --report report.json
  asyncmigrate copy --src-cloud old --dst-cloud new --image 3f1c...e9 --dst-store ceph
  asyncmigrate copy --src-cloud old --dst-cloud new --project-map projects.yaml --shard 0/4
"""
SYNC_EXAMPLES = """\
examples:
  asyncmigrate plan sync --src-cloud old --dst-cloud new
  asyncmigrate sync --src-cloud old --dst-cloud new --report sync.json
  asyncmigrate sync --src-cloud old --dst-cloud new --delete-removed
  asyncmigrate sync --src-cloud old --dst-cloud new --project-map projects.yaml --shard 0/4
"""
MOVE_EXAMPLES = """\
examples:
  asyncmigrate move --cloud prod --from-store file --to-store s3 --dry-run
  asyncmigrate move --cloud prod --from-store file --to-store s3 --report move.json
  asyncmigrate move --cloud prod --from-store file --to-store s3 --keep-source --image 3f1c...e9
  asyncmigrate move --cloud prod --from-store file --to-store s3 --method location
"""
PLAN_EXAMPLES = """\
examples:
  asyncmigrate plan copy --src-cloud old --dst-cloud new --rate 200MiB
  asyncmigrate plan copy --src-cloud old --dst-cloud new --min-size 1G --output json
  asyncmigrate plan sync --src-cloud old --dst-cloud new --delete-removed --output json
  asyncmigrate plan move --cloud prod --from-store file --to-store s3
"""
VERIFY_EXAMPLES = """\
examples:
  asyncmigrate verify --src-cloud old --dst-cloud new
  asyncmigrate verify --src-cloud old --dst-cloud new --project-map projects.yaml --strict
"""
REPORT_EXAMPLES = """\
examples:
  asyncmigrate report merge /state/report-*.json
  asyncmigrate report merge report-0.json report-1.json report-2.json report-3.json --output json
"""


def _runtime(p: argparse.ArgumentParser, *, concurrency: int) -> None:
    p.add_argument(
        "--concurrency", type=int, default=concurrency, metavar="N", help=f"images at once (default {concurrency})"
    )
    p.add_argument("--chunk-size", default="1MiB", metavar="SIZE", help="read/write chunk (default 1MiB)")
    p.add_argument("--retries", type=int, default=5, metavar="N", help="attempts per image (default 5)")
    p.add_argument(
        "--retry-deadline",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="per image: time it may spend failing and waiting to retry — waits between attempts (a server's "
        "Retry-After included, honoured up to what is left) and failed attempts' time since their last progress; "
        "time spent transferring or waiting for an upload slot never counts (default 900)",
    )
    p.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS", help="per connection (default 30)")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest silence while reading an answer (default 300); a whole transfer has no time limit",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report, one entry per image")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (prints a warning)")
    p.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="auto: uvloop (with malloc tuning) when installed, else asyncio (default auto)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display; summary only")
    p.add_argument("-v", "--verbose", action="store_true", help="log retries")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the log (stdout) as text, or as one JSON object per line, fatal errors (stderr) too",
    )
    p.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="also append every line of stdout and stderr to FILE (progress as lines, no bars)",
    )


def _metrics_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Prometheus metrics (docs: Kubernetes and metrics)")
    g.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve GET /metrics in the Prometheus text format while the run goes on, e.g. 127.0.0.1:9100 "
        "(:9100: every interface) (default: off)",
    )
    g.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the run, keep serving until one scrape has read the final values, at most this long "
        "(default 0: exit at once)",
    )


def _writing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, let images in flight finish this long before aborting them (default 30)",
    )
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="SQLite journal of progress across runs (default: ~/.local/state/asyncmigrate/<job>.sqlite)",
    )
    p.add_argument("--no-journal", action="store_true", help="keep no journal")
    _max_duration(p)


def _max_duration(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-duration",
        metavar="DURATION",
        help="a maintenance window, e.g. 90m or 8h: after it no new image is started, those in flight finish "
        "(up to --grace), and the run exits 4 saying how many are left; run the same command again to go on",
    )


def _filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which images")
    g.add_argument("--image", action="append", default=[], metavar="ID", help="only this image (repeatable)")
    g.add_argument("--exclude", action="append", default=[], metavar="ID", help="never this image (repeatable)")
    g.add_argument("--project", action="append", default=[], metavar="ID", help="only images owned by this project")
    g.add_argument(
        "--visibility",
        action="append",
        default=[],
        choices=("public", "private", "shared", "community"),
        help="only this visibility (repeatable)",
    )
    g.add_argument("--status", action="append", default=[], metavar="STATUS", help="only this status (repeatable)")
    g.add_argument("--name", action="append", default=[], metavar="GLOB", help="only names matching (repeatable)")
    g.add_argument("--tag", action="append", default=[], metavar="TAG", help="only images with this tag (all given)")
    g.add_argument("--min-size", metavar="SIZE", help="only images at least this large")
    g.add_argument("--max-size", metavar="SIZE", help="only images at most this large")
    g.add_argument("--store", action="append", default=[], metavar="STORE", help="only images in this source store")
    g.add_argument("--shard", metavar="K/N", help="only shard K of N (0 <= K < N), split by image id")
    g.add_argument(
        "--order-by",
        choices=("size", "-size", "name", "-name", "created", "-created"),
        help="process in this order (reads the whole listing first)",
    )


def _caps(p: argparse.ArgumentParser, *, scope: str) -> None:
    p.add_argument(
        "--max-rate",
        metavar="SIZE",
        help=f"bandwidth cap for the whole run, bytes per second, e.g. 200MiB{scope} (default: none)",
    )
    p.add_argument(
        "--max-uploads",
        type=int,
        metavar="N",
        help=f"at most N uploads at once{scope}, for destinations that limit them (default: --concurrency)",
    )


def _copy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src-cloud", required=True, metavar="NAME", help="source cloud (clouds.yaml name)")
    p.add_argument("--dst-cloud", required=True, metavar="NAME", help="destination cloud (clouds.yaml name)")
    p.add_argument("--dst-store", metavar="STORE", help="destination store id (multi-store Glance)")
    p.add_argument(
        "--verify",
        choices=("full", "server"),
        default="full",
        help="full: hash on the fly and hold the last chunk back, so corrupt bytes are never committed (default); "
        "server: faster, compares the destination's recorded hashes after the commit — RISK: a copy corrupted on "
        "the way is then deactivated and reported 'quarantined', and its id can never hold the right bytes",
    )
    p.add_argument(
        "--upload-method",
        choices=("put", "put-unsized", "glance-direct"),
        default="put",
        help="put: PUT the data, declaring its size (without it into Swift stores) (default); put-unsized: "
        "never declare the size; glance-direct: stage and import, for destinations that convert on import",
    )
    p.add_argument(
        "--import-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="per glance-direct import (default 3600)",
    )
    _caps(p, scope="")
    p.add_argument(
        "--ignore-quota",
        action="store_true",
        help="start even when the destination's published quota (GET /v2/info/usage) cannot hold the plan",
    )
    _identity(p)
    _traps(p)
    _filters(p)


def _traps(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("images that need an instruction (see the guide, 'Migrating from older clouds')")
    g.add_argument(
        "--certificate-map",
        type=Path,
        metavar="FILE",
        help="YAML/JSON: signed images' source certificate uuid -> the uuid re-created in the destination's "
        "key manager (rewrites img_signature_certificate_uuid)",
    )
    g.add_argument(
        "--strip-signature",
        action="store_true",
        help="copy signed images without their four img_signature* keys (listed per image in the report)",
    )
    g.add_argument(
        "--include-encrypted",
        action="store_true",
        help="copy encrypted images (cinder_encryption_key_id) as they are; their key must reach the destination",
    )
    g.add_argument(
        "--include-volume-snapshots",
        action="store_true",
        help="copy volume-backed instance snapshots as image records (their data stays in the source's Cinder)",
    )


def _identity(p: argparse.ArgumentParser, *, record: bool = True) -> None:
    p.add_argument("--no-owner", action="store_true", help="do not copy the owner (images belong to the caller)")
    p.add_argument("--project-map", type=Path, metavar="FILE", help="YAML/JSON: source project id or name -> dest id")
    p.add_argument(
        "--unmapped-owner",
        choices=("fail", "caller"),
        default="fail",
        help="an owner missing from --project-map: report the image (default) or give it to the caller",
    )
    p.add_argument(
        "--destination-property",
        action="append",
        default=[],
        metavar="KEY",
        help="a custom property the destination sets itself (an import plugin's): never copied, compared or "
        "removed (repeatable; keys the destination is seen adding are remembered in the journal)",
    )
    p.add_argument(
        "--drop-unmapped-members",
        action="store_true",
        help="share images without their members that --project-map does not map (named in the report); "
        "default: such an image is refused, and verify counts it as a difference",
    )
    if record:
        g = p.add_argument_group("the pair's record (see the guide, 'What protects an image from deletion')")
        g.add_argument(
            "--change-mapping",
            action="store_true",
            help="map identities otherwise than the pair's copies did (else such a run is refused)",
        )
        g.add_argument(
            "--confirm-source",
            action="store_true",
            help="the source is the cloud the pair's record was made from, and what it no longer holds is really "
            "gone (else a source that holds little of its record is refused)",
        )


def _sync_flags(p: argparse.ArgumentParser, *, plan: bool) -> None:
    g = p.add_argument_group("images the source no longer has (those this tool brought from it)")
    g.add_argument(
        "--delete-removed",
        action="store_true",
        help="delete them at the destination (default: report them as removed and keep them)",
    )
    g.add_argument(
        "--force-protected",
        action="store_true",
        help="with --delete-removed: unprotect a protected one and delete it (default: report it, exit 1)",
    )
    if plan:
        _plan_journal(p)


def _plan_journal(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="the journal whose record names what was brought (default: the pair's, as copy and sync use)",
    )


def _move_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", required=True, metavar="NAME", help="the cloud (clouds.yaml name)")
    p.add_argument("--from-store", required=True, metavar="OLD", help="store to empty")
    p.add_argument("--to-store", required=True, metavar="NEW", help="store to fill")
    _caps(p, scope=" (--method location)")
    p.add_argument(
        "--method",
        choices=("copy-image", "location"),
        default="copy-image",
        help="copy-image: Glance copies server-side (default); location: stream through this tool into a "
        "carrier image and swap locations (needs show_multiple_locations)",
    )
    p.add_argument("--keep-source", action="store_true", help="copy into NEW but keep the data in OLD")
    p.add_argument(
        "--verify-download",
        action="store_true",
        help="read NEW's copy back and hash it: before OLD's delete where Glance serves a chosen store "
        "(?prefer=, glance 33), else after it (a bad copy is then deactivated); the report says which",
    )
    p.add_argument(
        "--include-deactivated",
        action="store_true",
        help="reactivate deactivated images for the move, then deactivate them again",
    )
    p.add_argument(
        "--import-timeout", type=float, default=3600.0, metavar="SECONDS", help="per copy-image import (default 3600)"
    )
    _filters(p)


def _plan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate",
        default="100MiB",
        metavar="SIZE",
        help="assumed throughput per second (default 100MiB; --max-rate caps it)",
    )
    p.add_argument("--output", choices=("table", "json"), default="table", help="table (default) or JSON")
    _max_duration(p)  # plan: does the selection fit the window at --rate?


def _sub(sub: argparse._SubParsersAction[_Parser], name: str, help_: str, description: str, epilog: str) -> _Parser:
    return sub.add_parser(
        name, help=help_, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = _Parser(
        prog="asyncmigrate",
        description="Move OpenStack Glance images between clouds or stores, keeping every UUID and attribute.",
        epilog=COPY_EXAMPLES + SYNC_EXAMPLES + MOVE_EXAMPLES + PLAN_EXAMPLES + VERIFY_EXAMPLES + REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    copy = _sub(
        sub,
        "copy",
        "copy images from one cloud to another, same ids",
        "Stream every image (or the selected ones) from the source cloud into the destination cloud with the "
        "same id and attributes, verifying size and hash on the fly.",
        COPY_EXAMPLES,
    )
    _copy_flags(copy)
    _writing(copy)
    _metrics_flags(copy)
    _runtime(copy, concurrency=4)

    sync = _sub(
        sub,
        "sync",
        "make the destination equal the source again: copy what is new, level what drifted, report what is gone",
        "Copy images missing at the destination (as copy does), apply every attribute, member and status change "
        "to images at both ends with the fewest requests, and report (or, with --delete-removed, delete) the images "
        "this tool brought from the source that the source no longer has. Image data never changes under an id: "
        "an image whose data differs is a conflict, never overwritten.",
        SYNC_EXAMPLES,
    )
    _copy_flags(sync)
    _sync_flags(sync, plan=False)
    _writing(sync)
    _metrics_flags(sync)
    _runtime(sync, concurrency=4)

    move = _sub(
        sub,
        "move",
        "move images between stores of one multi-store cloud, same ids",
        "Put every image of --from-store (or the selected ones) into --to-store and take it off --from-store, "
        "keeping its id and attributes.",
        MOVE_EXAMPLES,
    )
    _move_flags(move)
    _writing(move)
    _metrics_flags(move)
    _runtime(move, concurrency=2)

    plan = _sub(
        sub,
        "plan",
        "what copy or move would do, image by image, with totals and a time estimate",
        "A dry run of copy or move: the action for each image (and why), totals, and an estimate.",
        PLAN_EXAMPLES,
    )
    plan_sub = plan.add_subparsers(dest="job", required=True, parser_class=_Parser)
    plan_copy = _sub(plan_sub, "copy", "plan a copy", "Plan a copy (same flags as copy).", PLAN_EXAMPLES)
    _copy_flags(plan_copy)
    _plan_journal(plan_copy)
    _plan_flags(plan_copy)
    _runtime(plan_copy, concurrency=8)
    plan_sync = _sub(plan_sub, "sync", "plan a sync", "Plan a sync (same flags as sync).", PLAN_EXAMPLES)
    _copy_flags(plan_sync)
    _sync_flags(plan_sync, plan=True)
    _plan_flags(plan_sync)
    _runtime(plan_sync, concurrency=8)
    plan_move = _sub(plan_sub, "move", "plan a store move", "Plan a store move (same flags as move).", PLAN_EXAMPLES)
    _move_flags(plan_move)
    _plan_flags(plan_move)
    _runtime(plan_move, concurrency=8)

    verify = _sub(
        sub,
        "verify",
        "compare two catalogs: ids, attributes, hashes, members, status",
        "Compare every source image with the destination's; exit 0 only when they all match.",
        VERIFY_EXAMPLES,
    )
    verify.add_argument("--src-cloud", required=True, metavar="NAME", help="source cloud (clouds.yaml name)")
    verify.add_argument("--dst-cloud", required=True, metavar="NAME", help="destination cloud (clouds.yaml name)")
    verify.add_argument("--strict", action="store_true", help="images only at the destination are differences too")
    _identity(verify, record=False)
    _traps(verify)
    _filters(verify)
    _metrics_flags(verify)
    _runtime(verify, concurrency=8)
    _report_command(sub)
    return parser


def _report_command(sub: argparse._SubParsersAction[_Parser]) -> None:
    report = _sub(sub, "report", "work with the reports --report writes", "Read reports back.", REPORT_EXAMPLES)
    report_sub = report.add_subparsers(dest="job", required=True, parser_class=_Parser)
    merge = _sub(
        report_sub,
        "merge",
        "one summary over the reports of a sharded job",
        "Read the reports of a job's shards (--shard K/N) and print one summary: totals, outcomes, failures, "
        "shards missing or not completed, images claimed by two shards. Exit 0 only when every shard of N is "
        "there and completed and nothing failed, else 1.",
        REPORT_EXAMPLES,
    )
    merge.add_argument("reports", nargs="+", type=Path, metavar="REPORT", help="a shard's --report file")
    merge.add_argument("--output", choices=("table", "json"), default="table", help="text (default) or JSON")
