"""The event loop the CLI runs on: uvloop plus two glibc malloc settings when
uvloop is installed (``pip install asyncmigrate[fast]``), stock asyncio otherwise.

Measured by ``benchmarks/`` on 2 cores (medians of 3; docs/performance.md):
uvloop alone is *slower* than asyncio here (0.55×, perf-ceiling): CPython's
1 MiB chunks are ``bytes`` objects above glibc's dynamic mmap threshold, so
each one is ``mmap``-ed and unmapped and every chunk costs page faults.  With
``M_MMAP_THRESHOLD = 32 MiB`` they come from the heap, and
``M_TRIM_THRESHOLD = 256 MiB`` stops the heap being returned after each one;
then uvloop is faster (verified copy about +8 %, unverified about +20 %) for
about 30 MiB more peak RSS at concurrency 8.

Only the CLI calls :func:`loop_options` (it owns the process); the library
never changes the loop or malloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from typing import Any

__all__ = ["M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "loop_options", "mallopt"]

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


def uvloop_available() -> bool:
    """Whether uvloop can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def loop_options(choice: str) -> tuple[str, dict[str, Any]]:
    """``(name, anyio backend_options)`` for ``--event-loop auto|asyncio|uvloop``.

    ``auto`` picks uvloop (with :func:`mallopt`) when installed.  Asking for
    ``uvloop`` when it is not installed raises ``ModuleNotFoundError``.
    """
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return "asyncio", {}
    import uvloop  # noqa: F401  (fails clearly when asked for and missing)

    mallopt()
    return "uvloop", {"use_uvloop": True}
