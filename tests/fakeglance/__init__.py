"""An in-process fake OpenStack Glance (image API v2.17 by default) for tests, with fault injection.

Typical use::

    fake = FakeGlance(prefix="/image")      # glance 33, multi-store
    old = FakeGlance(profile=QUEENS)        # Queens' listing rules and fields, single-store
    image = fake.add_image(b"disk bytes", name="cirros")
    async with serve(fake) as url:          # http://127.0.0.1:PORT/image
        fake.faults.cut_download_after(image["id"], 1000)
        ...

Modules: ``core`` (state, app, middlewares), ``model`` (records and JSON), ``listing``
(GET /v2/images), ``images`` and ``members`` (metadata), ``data`` (upload/download),
``stores`` (discovery, copy-image import, store delete), ``faults``, ``server``, ``profiles``
(the Glance releases the fake can behave as, each taken from Glance's source at that release).
"""

from __future__ import annotations

from .core import FakeGlance, LoggedRequest, token_fingerprint
from .faults import DownloadPlan, Faults
from .model import ADMIN_PROJECT, ADMIN_USER, DEFAULT_STORES, QCOW2_MAGIC, ImageRecord, MemberRecord
from .profiles import GLANCE_27, GLANCE_33, PIKE, PROFILES, QUEENS, ROCKY, STEIN, USSURI, GlanceProfile
from .server import FakeServer, serve

__all__ = [
    "ADMIN_PROJECT",
    "ADMIN_USER",
    "DEFAULT_STORES",
    "GLANCE_27",
    "GLANCE_33",
    "PIKE",
    "PROFILES",
    "QCOW2_MAGIC",
    "QUEENS",
    "ROCKY",
    "STEIN",
    "USSURI",
    "DownloadPlan",
    "FakeGlance",
    "FakeServer",
    "Faults",
    "GlanceProfile",
    "ImageRecord",
    "LoggedRequest",
    "MemberRecord",
    "serve",
    "token_fingerprint",
]
