"""The validated configs the parsed command-line flags describe (:mod:`asyncmigrate.options`
parses them): ``copy``, ``sync``, ``move``, and ``plan``/``verify`` through the same functions.
"""

from __future__ import annotations

import argparse
import dataclasses

from .config import CopyConfig, MoveConfig, RetryPolicy, SyncConfig, Timeouts, parse_size
from .errors import UsageError
from .identity import load_mapping
from .preflight import PreflightOptions
from .selection import Selection, parse_shard
from .window import Window, parse_duration

__all__ = ["copy_config", "move_config", "preflight_options", "selection", "sync_config", "window"]


def selection(args: argparse.Namespace) -> Selection:
    """The filters, shard and order the flags describe."""
    return Selection(
        exclude=frozenset(args.exclude),
        projects=frozenset(args.project),
        visibility=frozenset(args.visibility),
        statuses=frozenset(args.status),
        names=tuple(args.name),
        tags=frozenset(args.tag),
        min_size=parse_size(args.min_size) if args.min_size else None,
        max_size=parse_size(args.max_size) if args.max_size else None,
        stores=frozenset(args.store),
        shard=parse_shard(args.shard) if args.shard else None,
        order_by=args.order_by,
    )


def _retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(attempts=args.retries, deadline=args.retry_deadline)


def _timeouts(args: argparse.Namespace) -> Timeouts:
    return Timeouts(connect=args.connect_timeout, idle_read=args.read_timeout)


def copy_config(args: argparse.Namespace, *, dry_run: bool = False) -> CopyConfig:
    """The CopyConfig the flags describe (``copy``, ``plan copy``, ``verify``)."""
    return CopyConfig(
        concurrency=args.concurrency,
        chunk_size=parse_size(args.chunk_size),
        dst_store=getattr(args, "dst_store", None),
        image_ids=tuple(args.image),
        dry_run=dry_run or getattr(args, "dry_run", False),
        verify=getattr(args, "verify", "full") if args.command != "verify" else "full",
        keep_owner=not args.no_owner,
        retry=_retry(args),
        timeouts=_timeouts(args),
        selection=selection(args),
        max_rate=_max_rate(args),
        max_uploads=getattr(args, "max_uploads", None),
        preflight=preflight_options(args),
        upload_method=getattr(args, "upload_method", "put"),
        import_timeout=getattr(args, "import_timeout", 3600.0),
        destination_properties=tuple(getattr(args, "destination_property", ())),
        ignore_quota=getattr(args, "ignore_quota", False),
        drop_unmapped_members=args.drop_unmapped_members,
        confirm_source=getattr(args, "confirm_source", False),
        change_mapping=getattr(args, "change_mapping", False),
        window=window(args, dry_run=dry_run),
    )


def window(args: argparse.Namespace, *, dry_run: bool = False) -> Window | None:
    """The maintenance window ``--max-duration`` (and ``--grace``) give a run that changes
    things; a dry run has none (``plan`` only compares its estimate with it)."""
    text = getattr(args, "max_duration", None)
    if text is None:
        return None
    seconds = parse_duration(text)  # checked even where unused: a typo fails now
    if dry_run or getattr(args, "dry_run", False):
        return None
    return Window(seconds, grace=getattr(args, "grace", 30.0))


def sync_config(args: argparse.Namespace, *, dry_run: bool = False) -> SyncConfig:
    """The SyncConfig the flags describe (``sync``, ``plan sync``)."""
    if args.delete_removed and getattr(args, "no_journal", False):
        raise UsageError(
            "--delete-removed needs the journal: its record names the images this tool brought (drop --no-journal)"
        )
    base = copy_config(args, dry_run=dry_run)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return SyncConfig(**fields, delete_removed=args.delete_removed, force_protected=args.force_protected)


def preflight_options(args: argparse.Namespace) -> PreflightOptions:
    """The trap instructions the flags give (``--certificate-map`` is read here: bad input fails now)."""
    path = getattr(args, "certificate_map", None)
    return PreflightOptions(
        certificate_map=load_mapping(path, "--certificate-map") if path is not None else {},
        strip_signature=getattr(args, "strip_signature", False),
        include_encrypted=getattr(args, "include_encrypted", False),
        include_volume_snapshots=getattr(args, "include_volume_snapshots", False),
    )


def _max_rate(args: argparse.Namespace) -> int | None:
    rate = getattr(args, "max_rate", None)
    return parse_size(rate) if rate else None


def move_config(args: argparse.Namespace, *, dry_run: bool = False) -> MoveConfig:
    """The MoveConfig the flags describe (``move``, ``plan move``)."""
    return MoveConfig(
        from_store=args.from_store,
        to_store=args.to_store,
        image_ids=tuple(args.image),
        concurrency=args.concurrency,
        method=args.method,
        keep_source=args.keep_source,
        verify_download=args.verify_download,
        include_deactivated=args.include_deactivated,
        dry_run=dry_run or getattr(args, "dry_run", False),
        import_timeout=args.import_timeout,
        chunk_size=parse_size(args.chunk_size),
        retry=_retry(args),
        timeouts=_timeouts(args),
        selection=selection(args),
        max_rate=_max_rate(args),
        max_uploads=getattr(args, "max_uploads", None),
        window=window(args, dry_run=dry_run),
    )
