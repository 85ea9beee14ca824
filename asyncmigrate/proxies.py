"""The proxy a cloud's Glance traffic goes through: the environment's, by requests' rules.

keystoneauth1 talks to Keystone through ``requests``, which honours ``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (lower case first, as every tool reads them).
aiohttp honours them only with ``trust_env``, which also sends ``~/.netrc`` credentials to
whatever host asks; without it, behind a mandatory proxy Keystone answered and every Glance
call failed as "unreachable".  So the proxy of a cloud's image endpoint is chosen once, here,
by requests' own functions (``get_environ_proxies`` — ``NO_PROXY`` hosts, domains, CIDRs,
ports — then ``select_proxy``), which is the answer keystoneauth gets for the same URL, and
every Glance request of that cloud uses it: aiohttp's session (``glance.py``) and the lenient
GET (``rawget.py``).  Every Glance URL of a cloud has the endpoint's host, so one choice per
cloud is exact.
"""

from __future__ import annotations

import base64
import dataclasses
from urllib.parse import unquote, urlsplit

from .errors import UsageError, redact_url

__all__ = ["Proxy", "environment_proxy"]

_SCHEMES = ("http", "https")


@dataclasses.dataclass(frozen=True)
class Proxy:
    """An HTTP or HTTPS proxy: its URL (credentials included, never shown) and address."""

    url: str = dataclasses.field(repr=False)
    scheme: str
    host: str
    port: int
    authorization: str | None = dataclasses.field(default=None, repr=False)
    """The ``Proxy-Authorization`` value of the credentials in the URL (Basic), if any."""

    @property
    def shown(self) -> str:
        """The proxy as messages may show it: no credentials."""
        return redact_url(self.url)


def environment_proxy(url: str) -> Proxy | None:
    """The proxy the environment names for ``url`` (None: connect directly).

    Raises :class:`UsageError` for a proxy aiohttp cannot speak (``socks5://``…).
    """
    import requests.utils

    chosen = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    if not chosen:
        return None
    if "://" not in chosen:  # requests reads "proxy:3128" as http://proxy:3128
        chosen = f"http://{chosen}"
    parts = urlsplit(chosen)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise UsageError(
            f"the proxy the environment names for {redact_url(url)} ({redact_url(chosen)}) is not an http:// or "
            "https:// proxy: Glance traffic cannot go through it"
        )
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UsageError(f"the proxy the environment names ({redact_url(chosen)}) has no valid port") from exc
    return Proxy(url=chosen, scheme=parts.scheme, host=parts.hostname, port=port, authorization=authorization)
