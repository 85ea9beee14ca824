"""Immutable, validated configuration for a run.

Every value is checked when the object is built (``__post_init__``) and the
object is passed explicitly to whatever needs it: there is no global config.

Memory bound
------------
Each transfer holds at most:

* the download buffer aiohttp fills before it pauses the socket: ``2 × chunk_size``
  (the client session is built with ``read_bufsize = chunk_size``);
* the chunks queued to the transfer's hashing thread: ``2 × chunk_size``
  (one being hashed, one waiting: measured 5–8 % faster than one);
* the chunk held back until the digest is checked: ``1 × chunk_size``;
* the chunk being written to the upload socket: ``1 × chunk_size``.

So the worst case for the byte buffers of a run is::

    concurrency × 6 × chunk_size        (default 4 × 6 × 1 MiB = 24 MiB)

whatever the image sizes.  Image records queued between the lister and the
workers add ``concurrency`` small dicts (the stream is bounded to that size).

What grows with the catalogs, not with the images' sizes: the destination
index (about 600 bytes per destination image, read once per run unless
``--image`` names the images: :mod:`asyncmigrate.catalog`), the ids the
listing has handed on (about 100 bytes per source image), one result per
image for the report, and for ``sync`` the per-pair record.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from .errors import UsageError
from .identity import ProjectMap
from .preflight import PreflightOptions
from .selection import Selection
from .window import Window

__all__ = ["CopyConfig", "MoveConfig", "RetryPolicy", "SyncConfig", "Timeouts", "parse_size"]

KiB = 1024
MiB = 1024 * KiB


async def _sleep(seconds: float) -> None:
    # anyio is imported when a run first sleeps, not when the CLI parses its flags.
    import anyio

    await anyio.sleep(seconds)


GiB = 1024 * MiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}


def parse_size(text: str) -> int:
    """Parse ``"1MiB"``, ``"256k"``, ``"1048576"`` into bytes (binary units)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"not a size: {text!r} (use e.g. 256KiB, 1MiB, 4M)")
    number, unit, _suffix = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How one unit of work (an image, a request) is retried.

    At most ``attempts`` attempts.  Between them, exponential backoff with
    jitter (``wait_initial × 2ⁿ`` plus up to ``wait_jitter``, at most
    ``wait_max``), or the server's ``Retry-After`` when it sends one.
    ``deadline`` is a budget of time spent *failing and waiting* — the waits,
    and each failed attempt's time since its last progress — not the unit's
    total time: a long transfer that keeps moving bytes never spends it
    (``--retry-deadline``; :mod:`asyncmigrate.retry` says exactly what counts).
    ``sleep`` and ``clock`` are injectable so tests never wait.
    """

    attempts: int = 5
    deadline: float = 900.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = dataclasses.field(default=_sleep, repr=False, compare=False)
    clock: Callable[[], float] = dataclasses.field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError("--retries must allow at least 1 attempt")
        if self.deadline <= 0:
            raise UsageError("--retry-deadline must be positive")
        if min(self.wait_initial, self.wait_max, self.wait_jitter) < 0:
            raise UsageError("retry waits cannot be negative")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Per-request timeouts.  There is deliberately no total timeout: a
    multi-GB transfer may take hours; only connecting and idle reads are bounded."""

    connect: float = 30.0
    idle_read: float = 300.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.idle_read <= 0:
            raise UsageError("timeouts must be positive")


def _check_image_id(image_id: str) -> str:
    try:
        return str(uuid.UUID(image_id))
    except ValueError:
        raise UsageError(f"malformed image id: {image_id!r} (expected a UUID)") from None


def _check_caps(max_rate: int | None, max_uploads: int | None) -> None:
    if max_rate is not None and max_rate < 64 * KiB:
        raise UsageError("--max-rate must be at least 64KiB (bytes per second)")
    if max_uploads is not None and not 1 <= max_uploads <= 256:
        raise UsageError("--max-uploads must be between 1 and 256")


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    """What ``asyncmigrate copy`` does.

    Worst-case buffer memory: ``concurrency × 6 × chunk_size`` (see the module
    docstring for where each chunk lives); default 24 MiB.
    """

    concurrency: int = 4
    chunk_size: int = 1 * MiB
    dst_store: str | None = None
    image_ids: tuple[str, ...] = ()
    dry_run: bool = False
    verify: Literal["full", "server"] = "full"
    keep_owner: bool = True
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    journal: Path | None = None  # durable progress record; None: no journal
    selection: Selection = dataclasses.field(default_factory=Selection)
    project_map: ProjectMap | None = None
    max_rate: int | None = None  # bytes/s for the whole run; None: uncapped
    max_uploads: int | None = None  # concurrent uploads at once; None: up to concurrency
    preflight: PreflightOptions = dataclasses.field(default_factory=PreflightOptions)
    upload_method: Literal["put", "put-unsized", "glance-direct"] = "put"  # see upload.py
    import_timeout: float = 3600.0  # per glance-direct import
    # Custom properties the destination sets itself (asyncmigrate/owned.py): never sent or compared.
    destination_properties: tuple[str, ...] = ()
    ignore_quota: bool = False  # start even when the destination's quota cannot hold the plan (quota.py)
    # Members with no mapping in project_map: left out (True) or the image refused (identity.py).
    drop_unmapped_members: bool = False
    # The pair's record (record.py): use it although the source's identity or holdings say it
    # is another cloud's (confirm_source); accept another identity mapping (change_mapping).
    confirm_source: bool = False
    change_mapping: bool = False
    window: Window | None = None  # --max-duration: no new image after it (see window.py)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise UsageError("--concurrency must be between 1 and 256")
        _check_caps(self.max_rate, self.max_uploads)
        if not 4 * KiB <= self.chunk_size <= 64 * MiB:
            raise UsageError("--chunk-size must be between 4KiB and 64MiB")
        if self.verify not in ("full", "server"):
            raise UsageError("--verify must be 'full' or 'server'")
        if self.upload_method not in ("put", "put-unsized", "glance-direct"):
            raise UsageError("--upload-method must be put, put-unsized or glance-direct")
        if self.import_timeout <= 0:
            raise UsageError("--import-timeout must be positive")
        if self.dst_store is not None and not self.dst_store.strip():
            raise UsageError("--dst-store cannot be empty")
        ids = tuple(dict.fromkeys(_check_image_id(i) for i in self.image_ids))
        object.__setattr__(self, "image_ids", ids)

    @property
    def max_buffer_bytes(self) -> int:
        """The worst-case bytes held in transfer buffers at once."""
        return self.concurrency * 6 * self.chunk_size


@dataclasses.dataclass(frozen=True)
class SyncConfig(CopyConfig):
    """What ``asyncmigrate sync`` does: everything ``copy`` does for missing images,
    plus levelling the drift of images at both ends and handling removed ones.

    ``delete_removed``: delete at the destination the images this tool brought
    from this source that the source no longer has (else they are reported);
    ``force_protected``: unprotect such an image first (else it is reported).
    Memory as for :class:`CopyConfig`.
    """

    delete_removed: bool = False
    force_protected: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.force_protected and not self.delete_removed:
            raise UsageError("--force-protected only applies with --delete-removed")


@dataclasses.dataclass(frozen=True)
class MoveConfig:
    """What ``asyncmigrate move`` does: every image in ``from_store`` ends up in
    ``to_store`` only, keeping its id.

    With ``method="copy-image"`` Glance copies server-side: it stages a full copy
    of each image on the API node's disk, so ``concurrency`` (default 2) bounds
    that staging space (``concurrency × largest image``), not client memory.
    With ``method="location"`` the bytes stream through this process, bounded as
    for ``copy``: ``concurrency × 6 × chunk_size``.
    """

    from_store: str
    to_store: str
    image_ids: tuple[str, ...] = ()
    concurrency: int = 2
    method: Literal["copy-image", "location"] = "copy-image"
    keep_source: bool = False
    verify_download: bool = False
    include_deactivated: bool = False
    dry_run: bool = False
    import_timeout: float = 3600.0
    poll_initial: float = 0.5
    poll_max: float = 15.0
    chunk_size: int = 1 * MiB
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    journal: Path | None = None  # durable progress record; None: no journal
    selection: Selection = dataclasses.field(default_factory=Selection)
    max_rate: int | None = None  # bytes/s, --method location only (copy-image moves no bytes here)
    max_uploads: int | None = None  # carrier uploads at once, --method location only
    window: Window | None = None  # --max-duration: no new image after it (see window.py)

    def __post_init__(self) -> None:
        if not self.from_store.strip() or not self.to_store.strip():
            raise UsageError("--from-store and --to-store are required")
        _check_caps(self.max_rate, self.max_uploads)
        if self.from_store == self.to_store:
            raise UsageError("--from-store and --to-store must differ")
        if not 1 <= self.concurrency <= 64:
            raise UsageError("--concurrency must be between 1 and 64")
        if self.method not in ("copy-image", "location"):
            raise UsageError("--method must be 'copy-image' or 'location'")
        if self.method == "location" and self.keep_source:
            raise UsageError("--keep-source only applies to --method copy-image")
        if self.import_timeout <= 0 or self.poll_initial < 0 or self.poll_max < self.poll_initial:
            raise UsageError("bad polling settings")
        if not 4 * KiB <= self.chunk_size <= 64 * MiB:
            raise UsageError("--chunk-size must be between 4KiB and 64MiB")
        ids = tuple(dict.fromkeys(_check_image_id(i) for i in self.image_ids))
        object.__setattr__(self, "image_ids", ids)
