"""Which images a run takes, and in what order: filters, shards, ordering.

Filters are applied client-side to what the lister returns, so they mean the
same on every Glance version.  ``--shard K/N`` keeps the images whose id
hashes to K modulo N: N processes on N machines share a job with no
coordination, each image in exactly one shard, stable across runs.

Images that refer to others by id (``kernel_id``, ``ramdisk_id``) are held
back until the end of the listing, so the images they point at are copied
first.  ``--order-by`` needs the whole listing before the first image starts
(one small dict per image in memory); without it images stream through.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

from .errors import UsageError
from .metadata import size_of

__all__ = ["REFERENCE_KEYS", "Selection", "parse_shard", "select"]

REFERENCE_KEYS = ("kernel_id", "ramdisk_id")
_ORDERS = {"size", "-size", "name", "-name", "created", "-created"}


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` → ``(2, 8)``; K counts from 0 (Kubernetes' JOB_COMPLETION_INDEX)."""
    match = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard takes K/N, shard K of N counting from 0, e.g. 0/4 (got {text!r})")
    k, n = int(match[1]), int(match[2])
    if n < 1:
        raise UsageError(f"--shard {text}: N, the number of shards, must be at least 1")
    shards = f"the shards of {n} are 0/{n} to {n - 1}/{n}" if n > 2 else f"the shards of {n} are 0/{n} and 1/{n}"
    if n == 1:
        shards = "the only shard of 1 is 0/1"
    if k < 0:
        raise UsageError(f"--shard {text}: K counts from 0 and cannot be negative; {shards}")
    if k >= n:
        raise UsageError(f"--shard {text}: K must be below N (shards count from 0); {shards}")
    return k, n


def shard_of(image_id: str, n: int) -> int:
    """The shard (0..n-1) an image id belongs to, the same on every machine."""
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") % n


@dataclasses.dataclass(frozen=True)
class Selection:
    """Filters, shard and order; the empty Selection takes every image as listed."""

    exclude: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    visibility: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    names: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    min_size: int | None = None
    max_size: int | None = None
    stores: frozenset[str] = frozenset()
    shard: tuple[int, int] | None = None
    order_by: str | None = None

    def __post_init__(self) -> None:
        if self.order_by is not None and self.order_by not in _ORDERS:
            raise UsageError(f"--order-by must be one of {', '.join(sorted(_ORDERS))}")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise UsageError("--min-size is larger than --max-size")

    def wants(self, image: dict[str, Any]) -> bool:
        """Does ``image`` pass every filter and belong to this shard?"""
        if image.get("status") == "missing":  # a named id the source lacks: always reported
            return True
        if image["id"] in self.exclude:
            return False
        if self.projects and image.get("owner") not in self.projects:
            return False
        if self.visibility and image.get("visibility") not in self.visibility:
            return False
        if self.statuses and image.get("status") not in self.statuses:
            return False
        if self.names and not any(fnmatch.fnmatchcase(str(image.get("name") or ""), p) for p in self.names):
            return False
        if self.tags and not self.tags <= set(image.get("tags") or ()):
            return False
        size = size_of(image)
        if self.min_size is not None and size < self.min_size:
            return False
        if self.max_size is not None and size > self.max_size:
            return False
        if self.stores and not self.stores & set(str(image.get("stores") or "").split(",")):
            return False
        return self.shard is None or shard_of(image["id"], self.shard[1]) == self.shard[0]


def _sort_key(order: str) -> Any:
    field = order.lstrip("-")
    if field == "size":
        return size_of
    if field == "name":
        return lambda i: str(i.get("name") or "")
    return lambda i: str(i.get("created_at") or "")


async def select(images: AsyncIterator[dict[str, Any]], selection: Selection) -> AsyncIterator[dict[str, Any]]:
    """The images of ``images`` that ``selection`` wants, referenced images first."""
    if selection.order_by:
        wanted = [image async for image in images if selection.wants(image)]
        wanted.sort(key=_sort_key(selection.order_by), reverse=selection.order_by.startswith("-"))
        # Stable second pass: referring images after everything else.
        wanted.sort(key=lambda i: any(i.get(k) for k in REFERENCE_KEYS))
        for image in wanted:
            yield image
        return
    referring: list[dict[str, Any]] = []
    async for image in images:
        if not selection.wants(image):
            continue
        if any(image.get(k) for k in REFERENCE_KEYS):
            referring.append(image)  # after the images they point at
            continue
        yield image
    for image in referring:
        yield image
