"""asyncmigrate: move OpenStack Glance images between clouds and stores,
keeping every image's UUID and attributes, streaming and verifying on the fly.

Library use::

    import anyio
    from asyncmigrate import CopyConfig, copy_images, load_cloud

    async def main():
        src = await load_cloud("old")
        dst = await load_cloud("new")
        run = await copy_images(CopyConfig(concurrency=8), src, dst)
        print(run.summary())

    anyio.run(main)

The public names are imported on first use (a module ``__getattr__``), so that
``asyncmigrate --version`` or ``--help`` does not pay for aiohttp, anyio,
keystoneauth1 and openstacksdk (about 0.6 s here) before it prints one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .clouds import Cloud, load_cloud
    from .config import CopyConfig, RetryPolicy, SyncConfig, Timeouts
    from .engine import copy_images
    from .errors import AsyncMigrateError, ExitCode
    from .report import ImageResult, RunResult
    from .sync import sync_images

# public name -> the module that defines it
_LAZY = {
    "AsyncMigrateError": "errors",
    "Cloud": "clouds",
    "CopyConfig": "config",
    "ExitCode": "errors",
    "ImageResult": "report",
    "RetryPolicy": "config",
    "RunResult": "report",
    "SyncConfig": "config",
    "Timeouts": "config",
    "copy_images": "engine",
    "load_cloud": "clouds",
    "sync_images": "sync",
}

__all__ = [
    "AsyncMigrateError",
    "Cloud",
    "CopyConfig",
    "ExitCode",
    "ImageResult",
    "RetryPolicy",
    "RunResult",
    "SyncConfig",
    "Timeouts",
    "__version__",
    "copy_images",
    "load_cloud",
    "sync_images",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
