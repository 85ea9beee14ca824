"""Keystone unified limits as glance 33 enforces them (``use_keystone_limits = True``).

From ``glance/quota/keystone.py`` and its callers, and measured on the real server (glance
33.0.0, oslo.limit 2.12.0, keystone 30): every check is made against the **caller's** project
(``context.owner``: the token's), and its usage counts the images that project **owns**:

* ``image_size_total`` (MiB): non-deleted images with a size, size × live locations, summed,
  rounded down; checked by ``PUT …/file`` with the declared size in MiB (0 when none is
  declared) and by a glance-direct import with the staged size;
* ``image_stage_total`` (MiB): images ``uploading``/``importing``; checked by ``PUT …/stage``;
* ``image_count_total``: images not killed/deleted; checked by a create (delta 1);
* ``image_count_uploading``: images ``saving``/``uploading``/``importing``; checked (delta 0)
  right after an upload or stage set the image's status, so the caller's own image counts itself.

Over a limit is ``usage + delta > limit`` (a negative limit is unlimited); the answer is a 413
whose body reads as oslo.limit's ``ProjectOverLimit``.  ``GET /v2/info/usage`` shows the
caller's project; without limits configured it is ``{"usage": {}}``.  A limit missing from
``limits`` is what oslo.limit makes of an unregistered one: 0.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .model import fail

if TYPE_CHECKING:
    from .core import FakeGlance, Handler

MiB = 1024 * 1024
NAMES = ("image_size_total", "image_stage_total", "image_count_total", "image_count_uploading")
_GONE = ("killed", "deleted", "pending_delete")
_UPLOADING = ("saving", "uploading", "importing")


@dataclasses.dataclass
class UnifiedLimits:
    """Registered limits (``limits``) and per-project overrides (``projects``)."""

    limits: dict[str, int]
    projects: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def limit(self, project: str, name: str) -> int:
        """The limit that applies to ``project``."""
        return self.projects.get(project, {}).get(name, self.limits.get(name, 0))


def routes(fake: FakeGlance) -> list[tuple[str, str, Handler]]:
    """``GET /v2/info/usage`` where the profile has it (Yoga on)."""

    async def info_usage(request: web.Request) -> web.Response:
        project = fake.identity(request).project_id
        if fake.unified_limits is None:
            return web.json_response({"usage": {}})
        usage = usage_of(fake, project)
        return web.json_response(
            {"usage": {n: {"usage": usage[n], "limit": fake.unified_limits.limit(project, n)} for n in NAMES}}
        )

    return [("GET", "/v2/info/usage", info_usage)] if fake.profile.info_usage else []


def usage_of(fake: FakeGlance, project: str) -> dict[str, int]:
    """The project's usage of each limit, as glance's db queries count it."""
    owned = [rec for rec in fake.images.values() if rec.owner == project]
    stored = sum((rec.size or 0) * len(rec.data) for rec in owned if rec.size and rec.status not in _GONE)
    staged = sum(rec.size or 0 for rec in owned if rec.size and rec.status in ("uploading", "importing"))
    return {
        "image_size_total": stored // MiB,
        "image_stage_total": staged // MiB,
        "image_count_total": sum(1 for rec in owned if rec.status not in _GONE),
        "image_count_uploading": sum(1 for rec in owned if rec.status in _UPLOADING),
    }


def enforce(fake: FakeGlance, project: str, name: str, delta: int = 0) -> None:
    """413 when ``project``'s usage plus ``delta`` is over its limit (nothing when limits are off)."""
    if fake.unified_limits is None:
        return
    limit = fake.unified_limits.limit(project, name)
    current = usage_of(fake, project)[name]
    if limit >= 0 and current + delta > limit:
        raise fail(
            413,
            "The request returned a 413 Request Entity Too Large. This generally means that rate limiting or a "
            f"quota threshold was breached.  The response body: Project {project} is over a limit for "
            f"[Resource {name} is over limit of {limit} due to current usage {current} and delta {delta}]",
        )


def declared_mib(size: Any) -> int:
    """The delta glance checks for a declared size in bytes (0 when none)."""
    return int(size) // MiB if size else 0
