"""A Keystone-less identity filter for the harness's glance-api (paste filter).

It stands where ``authtoken`` stands in glance's ``keystone`` pipeline, right in
front of glance's real ``context`` filter, and fills in the headers that
keystonemiddleware would have set for a validated token.  Every header the
request already carries wins, so a test can act as another project or as a
non-admin by sending e.g. ``X-Project-Id: <other>`` and ``X-Roles: member``.

Loaded by paste from ``glance-api-paste.ini``::

    [filter:fakeauth]
    paste.filter_factory = fakeauth:filter_factory
    project_id = <hex>
    user_id = <hex>
    roles = admin,member,reader

Stdlib only: it runs inside glance's venv with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_PROJECT_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a01"
DEFAULT_USER_ID = "a0a0a0a0a0a04a0a8a0a0a0a0a0a0a02"
DEFAULT_ROLES = "admin,member,reader"


class FakeAuth:
    """WSGI middleware marking every request as carrying a confirmed identity."""

    def __init__(self, app: Callable[..., Iterable[bytes]], conf: dict[str, str]) -> None:
        self.app = app
        project = conf.get("project_id", DEFAULT_PROJECT_ID)
        user = conf.get("user_id", DEFAULT_USER_ID)
        # WSGI environ keys -> defaults; only set when the client sent none.
        self.defaults = {
            "HTTP_X_IDENTITY_STATUS": "Confirmed",
            "HTTP_X_PROJECT_ID": project,
            "HTTP_X_TENANT_ID": project,
            "HTTP_X_PROJECT_NAME": conf.get("project_name", "harness"),
            "HTTP_X_PROJECT_DOMAIN_ID": "default",
            "HTTP_X_USER_ID": user,
            "HTTP_X_USER_NAME": conf.get("user_name", "harness-admin"),
            "HTTP_X_USER_DOMAIN_ID": "default",
            "HTTP_X_ROLES": conf.get("roles", DEFAULT_ROLES),
            "HTTP_X_SERVICE_CATALOG": "[]",
            "HTTP_X_AUTH_TOKEN": "harness-fake-token",
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # A client naming its own project keeps its tenant header consistent.
        if "HTTP_X_PROJECT_ID" in environ and "HTTP_X_TENANT_ID" not in environ:
            environ["HTTP_X_TENANT_ID"] = environ["HTTP_X_PROJECT_ID"]
        for key, value in self.defaults.items():
            environ.setdefault(key, value)
        return self.app(environ, start_response)


def filter_factory(global_conf: dict[str, str], **local_conf: str) -> Callable[..., FakeAuth]:
    """Paste entry point: ``paste.filter_factory = fakeauth:filter_factory``."""
    conf = {**global_conf, **local_conf}

    def _filter(app: Callable[..., Iterable[bytes]]) -> FakeAuth:
        return FakeAuth(app, conf)

    return _filter
