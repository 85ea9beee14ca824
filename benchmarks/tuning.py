"""Process-level tuning a measurement may switch on before its event loop starts.

``install_uvloop()`` is what ``--uvloop`` does in a benchmark child (and in the
fake servers when asked): uvloop's event loop policy plus two glibc ``mallopt``
settings.  Without them, CPython's 1 MiB ``bytes`` objects are ``mmap``-ed and
unmapped one by one (glibc's dynamic mmap threshold), and every chunk costs
page faults; with ``M_MMAP_THRESHOLD = 32 MiB`` they come from the heap, and
``M_TRIM_THRESHOLD = 256 MiB`` stops the heap being given back after each one.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

__all__ = ["M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "install_uvloop", "mallopt"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MiB = 1024 * 1024


def mallopt(mmap_threshold: int = 32 * MiB, trim_threshold: int = 256 * MiB) -> bool:
    """Set glibc's malloc thresholds; False when libc is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        return bool(ok and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1)
    except (OSError, AttributeError):
        return False


def install_uvloop(*, with_mallopt: bool = True) -> None:
    """uvloop's policy for every later ``asyncio.run``/``anyio.run``, plus :func:`mallopt`."""
    import uvloop

    if with_mallopt:
        mallopt()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
