"""Process-level tuning a measurement may switch on before its event loop starts.

``install_uvloop()`` is what ``--uvloop`` does in a benchmark child (and in the
fake servers when asked): uvloop's event loop policy plus the glibc ``mallopt``
settings of :mod:`asyncmigrate.tuning` — the same the CLI applies with
``--event-loop auto`` when uvloop is installed (see that module for why).
"""

from __future__ import annotations

import asyncio

from asyncmigrate.tuning import mallopt

__all__ = ["install_uvloop", "mallopt"]


def install_uvloop(*, with_mallopt: bool = True) -> None:
    """uvloop's policy for every later ``asyncio.run``/``anyio.run``, plus :func:`mallopt`."""
    import uvloop

    if with_mallopt:
        mallopt()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
