"""An in-process fake OpenStack Glance (image API v2.17) for tests, with fault injection.

Typical use::

    fake = FakeGlance(prefix="/image")
    image = fake.add_image(b"disk bytes", name="cirros")
    async with serve(fake) as url:        # http://127.0.0.1:PORT/image
        fake.faults.cut_download_after(image["id"], 1000)
        ...

Modules: ``core`` (state, app, middlewares), ``model`` (records and JSON), ``listing``
(GET /v2/images), ``images`` and ``members`` (metadata), ``data`` (upload/download),
``stores`` (discovery, copy-image import, store delete), ``faults``, ``server``.
"""

from __future__ import annotations

from .core import FakeGlance, LoggedRequest, token_fingerprint
from .faults import DownloadPlan, Faults
from .model import ADMIN_PROJECT, ADMIN_USER, DEFAULT_STORES, QCOW2_MAGIC, ImageRecord, MemberRecord
from .server import FakeServer, serve

__all__ = [
    "ADMIN_PROJECT",
    "ADMIN_USER",
    "DEFAULT_STORES",
    "QCOW2_MAGIC",
    "DownloadPlan",
    "FakeGlance",
    "FakeServer",
    "Faults",
    "ImageRecord",
    "LoggedRequest",
    "MemberRecord",
    "serve",
    "token_fingerprint",
]
