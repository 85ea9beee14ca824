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
"""

from __future__ import annotations

__version__ = "0.1.0"

from .clouds import Cloud, load_cloud
from .config import CopyConfig, RetryPolicy, SyncConfig, Timeouts
from .engine import copy_images
from .errors import AsyncMigrateError, ExitCode
from .report import ImageResult, RunResult
from .sync import sync_images

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
