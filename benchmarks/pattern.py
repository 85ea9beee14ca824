"""The generated image bytes every benchmark moves, and their digests.

An image of ``size`` bytes is the first ``size`` bytes of one endless stream:
a seeded pseudo-random block of :data:`BLOCK` bytes repeated.  The block length
is not a power of two, so chunk boundaries wander through the pattern.  Nothing
big is ever stored: the fake serves memoryview slices of a buffer a little
longer than ``BLOCK + MAX_PIECE`` and checks uploads against it with memcmp.

Digests (md5 and sha512, what Glance records) depend on every byte, so they are
computed once per size — md5 and sha512 in two threads — and cached in
``benchmarks/.cache/digests.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["BLOCK", "MAX_PIECE", "SEED", "Pattern", "digests"]

KiB = 1024
MiB = 1024 * KiB
SEED = 20261124
BLOCK = MiB + 4093  # a prime offset from 1 MiB: pattern and chunks never align
MAX_PIECE = 8 * MiB
CACHE = Path(__file__).resolve().parent / ".cache" / "digests.json"


class Pattern:
    """The endless stream, sliced without copying."""

    def __init__(self) -> None:
        block = random.Random(SEED).randbytes(BLOCK)
        repeats = -(-(BLOCK + MAX_PIECE) // BLOCK)
        self.buffer = block * repeats
        self.view = memoryview(self.buffer)

    def piece(self, offset: int, n: int) -> memoryview:
        """Bytes ``offset .. offset+n`` of the stream (``n <= MAX_PIECE``)."""
        start = offset % BLOCK
        return self.view[start : start + n]

    def pieces(self, start: int, end: int, step: int = MiB) -> Iterator[memoryview]:
        """The stream from ``start`` to ``end`` in pieces of at most ``step`` bytes."""
        step = min(step, MAX_PIECE)
        offset = start
        while offset < end:
            n = min(step, end - offset)
            yield self.piece(offset, n)
            offset += n

    def matches(self, offset: int, data: bytes) -> bool:
        """Whether ``data`` is the stream at ``offset`` (memcmp speed)."""
        if isinstance(data, bytes) and len(data) <= MAX_PIECE:
            start = offset % BLOCK
            return data == self.buffer[start : start + len(data)]
        view = memoryview(data)
        done = 0
        while done < len(view):
            n = min(MAX_PIECE, len(view) - done)
            start = (offset + done) % BLOCK
            # bytes == bytes is a memcmp; slicing the pattern costs one memcpy.
            if view[done : done + n].tobytes() != self.buffer[start : start + n]:
                return False
            done += n
        return True


def _compute(pattern: Pattern, sizes: list[int]) -> dict[int, dict[str, str]]:
    """md5 and sha512 of each prefix size, one pass, one thread per algorithm."""
    out: dict[int, dict[str, str]] = {s: {} for s in sizes}

    def run(name: str) -> None:
        h = hashlib.new(name)
        offset = 0
        for size in sorted(sizes):
            for piece in pattern.pieces(offset, size, MAX_PIECE):
                h.update(piece)
            offset = size
            out[size][name] = h.hexdigest()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("md5", "sha512")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def digests(sizes: Iterable[int], pattern: Pattern | None = None, cache: Path = CACHE) -> dict[int, dict[str, str]]:
    """``{size: {"md5": hex, "sha512": hex}}`` for every size (cached on disk)."""
    wanted = sorted(set(sizes))
    key = f"{SEED}:{BLOCK}"
    try:
        stored = json.loads(cache.read_text()).get(key, {})
    except (OSError, ValueError):
        stored = {}
    missing = [s for s in wanted if str(s) not in stored]
    if missing:
        stored.update({str(s): d for s, d in _compute(pattern or Pattern(), missing).items()})
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({key: stored}, indent=1, sort_keys=True))
        tmp.replace(cache)
    return {s: stored[str(s)] for s in wanted}
