"""The exception tree of asyncmigrate, classified by behaviour.

Every failure the core raises is an :class:`AsyncMigrateError`.  Third-party
exceptions (aiohttp, keystoneauth1, openstacksdk's config loader) are translated
into this tree at exactly one boundary each (``glance.py`` for HTTP, ``clouds.py``
for configuration and authentication) and chained with ``raise ... from exc``.

::

    AsyncMigrateError                      behaviour     exit code
    ├── UsageError                         USAGE         2  bad flags, clouds.yaml, unknown cloud
    ├── FatalError                         FATAL         3  the run cannot go on
    │   ├── AuthenticationError                             credentials refused, token not renewable
    │   └── EndpointError                                   no image endpoint, endpoint unreachable
    ├── TransportError                     RETRY            connection refused/reset, idle timeout
    ├── UnexpectedResponse                 RETRY            a 2xx that is not Glance's (a proxy's HTML page)
    ├── HTTPStatusError                    (by status)      any non-2xx answer
    │   ├── Unauthorized          401      RETRY            token expired: re-authenticate, retry
    │   ├── Forbidden             403      IMAGE
    │   ├── NotFound              404      IMAGE
    │   ├── ConflictStatus        409      IMAGE
    │   ├── ClientStatusError     4xx      IMAGE
    │   └── ServerStatusError     5xx/429  RETRY            honours Retry-After
    └── ImageError                         IMAGE            recorded for the image, the run goes on
        ├── StreamCorrupted                RETRY            in-flight digest/size mismatch, retried
        ├── DestinationBusy                RETRY            destination image is 'saving'
        ├── SourceCorrupt                  IMAGE            source bytes do not match its own hash
        ├── DestinationConflict            IMAGE            same id, other content or attributes
        ├── VerificationError              IMAGE            the record after an upload or a move is wrong
        ├── BadCopy                        IMAGE            destination committed other bytes: deactivated
        └── BadCopyActive                  (as its cause)   … and deactivating it failed: still active

``RETRY`` errors are retried with backoff within an attempt cap and a deadline;
when retries run out they are recorded against the image like ``IMAGE`` errors.
``FATAL`` errors stop the whole run.  Anything else raised while one image
is handled (a bug) ends that image as an *internal error*; the run goes on.

Messages never contain a token or a secret: URLs are reduced to scheme, host,
port and path, and every text that comes from a server (error bodies, task
messages) goes through :func:`redact` at the boundary that reads it.
"""

from __future__ import annotations

import enum
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AsyncMigrateError",
    "AuthenticationError",
    "BadCopy",
    "BadCopyActive",
    "Behaviour",
    "ClientStatusError",
    "ConflictStatus",
    "DestinationBusy",
    "DestinationConflict",
    "EndpointError",
    "ExitCode",
    "FatalError",
    "Forbidden",
    "HTTPStatusError",
    "ImageError",
    "NotFound",
    "ServerStatusError",
    "SourceCorrupt",
    "StreamCorrupted",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "UsageError",
    "VerificationError",
    "collapse",
    "error_excerpt",
    "failure_kind",
    "parse_retry_after",
    "redact",
    "redact_url",
    "status_error",
]


class Behaviour(enum.Enum):
    """What the engine does when an error reaches it."""

    RETRY = "retry"  # transient: retry the unit with backoff
    IMAGE = "image"  # record against this image, go on with the others
    FATAL = "fatal"  # stop the run
    USAGE = "usage"  # stop before doing anything: bad input


class ExitCode(enum.IntEnum):
    """Documented process exit codes (docs/reference.md, "Exit codes")."""

    OK = 0
    IMAGES_FAILED = 1
    USAGE = 2
    FATAL = 3
    INCOMPLETE = 4  # a listing failed part-way: run the same command again
    INTERRUPTED = 130


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group's ``ExceptionGroup`` stands for.

    Workers fail independently, so a group may hold several errors; the most
    severe of ours wins (usage, then fatal), else the first leaf.  Callers of
    the library and the CLI then see a plain ``AsyncMigrateError``.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    ours = [e for e in leaves if isinstance(e, AsyncMigrateError)]
    for behaviour in (Behaviour.USAGE, Behaviour.FATAL):
        for exc in ours:
            if exc.behaviour is behaviour:
                return exc
    return ours[0] if ours else leaves[0] if leaves else group


# URL userinfo: scheme://user:password@host → scheme://***@host.  Greedy up to the
# last "@" of the token: S3 secret keys may contain "/" and "+".
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s\"'<>]*@")
# Where a name starts: a word boundary, or right after an escaped newline or tab ("\nAuthorization"
# in a JSON-escaped body has no boundary between the n and the A).
_START = r"(?:(?<=\\[nrt])|\b)"
# A credential's value: quoted (escapes honoured, so a password with spaces goes whole; also
# the backslash-quoted forms of JSON inside a JSON string and of a repr()), or a bare word.
_QUOTED = r"""\\"(?:(?!\\").)*\\"|\\'(?:(?!\\').)*\\'|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
_VALUE = rf"""(?P<value>{_QUOTED}|[^\s"'&;,{{}}\[\]\\]+)"""
# name=value, name: value, "name": "value", where the name says it holds a credential: any
# *password, *secret, *token (access_token, X-Auth-Token, X-Amz-Security-Token), *_key,
# credentials, and signatures (S3's Signature / X-Amz-Signature, Swift's temp_url_sig).
_CREDENTIAL = re.compile(
    r"(?P<name>\b[\w.\-]*(?:password|passwd|passphrase|secret|token|credentials?|access_key|access_key_id|_key|"
    r"api_key|apikey|signature|sig)\b(?:\\?[\"'])?)(?P<sep>\s*[=:]\s*)" + _VALUE,
    re.IGNORECASE,
)
# Authorization headers: the scheme and the credentials after it (Bearer, Basic, AWS4-HMAC-SHA256
# Credential=…, Signature=…) go, up to the end of the line or of the quoted value.
_AUTHORIZATION = re.compile(
    rf"(?P<name>{_START}(?:proxy-)?authorization(?:\\?[\"'])?)(?P<sep>\s*[=:]\s*)"
    rf"""(?P<value>{_QUOTED}|[^\r\n"'}}\\]+)""",
    re.IGNORECASE,
)
# A bearer token wherever it stands.
_BEARER = re.compile(rf"(?P<scheme>{_START}Bearer\s+)[\w\-.~+/]+=*", re.IGNORECASE)
# AWS access key ids anywhere (AKIA… long-term, ASIA… temporary).
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")


def _hidden(match: re.Match[str]) -> str:
    """The name and separator kept, the value replaced (its quotes kept)."""
    value = match["value"]
    quote = next((q for q in ('\\"', "\\'", '"', "'") if value.startswith(q) and len(value) > len(q)), "")
    trailing = value[len(value.rstrip()) :]  # an unquoted Authorization value ends at the line's end
    return f"{match['name']}{match['sep']}{quote}***{quote}{trailing}"


def redact(text: str) -> str:
    """``text`` without credentials: URL userinfo, ``name=value``, ``Name: value`` and JSON
    ``"name": "value"`` credentials (quoted values whole), ``Authorization`` header values,
    bearer tokens, signatures of pre-signed URLs, AWS access key ids.

    Applied to everything a server sends back that we show (error bodies, task
    messages) at the boundary that reads it, and again to every reason the
    report, the console or a log receives.  It over-redacts rather than under;
    image ids, store names and URLs' hosts and paths stay.
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    text = _AUTHORIZATION.sub(_hidden, text)
    text = _CREDENTIAL.sub(_hidden, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']}***", text)
    return _AWS_KEY_ID.sub("***", text)


_TAG = re.compile(r"<[^>]+>")


def error_excerpt(body: str) -> str:
    """What an error message keeps of a server's answer: tag-free, one line, 200
    characters at most, credentials redacted (Glance echoes store URIs)."""
    return " ".join(_TAG.sub(" ", redact(body)).split())[:200]


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (None: absent, or an HTTP-date — our own backoff then)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """Drop credentials, query and fragment from a URL so it is safe to show."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class AsyncMigrateError(Exception):
    """Base of every error asyncmigrate raises."""

    behaviour: Behaviour = Behaviour.IMAGE


class UsageError(AsyncMigrateError):
    """Bad flags or configuration: nothing was done."""

    behaviour = Behaviour.USAGE


class FatalError(AsyncMigrateError):
    """The run cannot go on (authentication, endpoint)."""

    behaviour = Behaviour.FATAL


class AuthenticationError(FatalError):
    """Credentials were refused or a token could not be renewed."""


class EndpointError(FatalError):
    """No usable image endpoint: missing from the catalog, or unreachable."""


class TransportError(AsyncMigrateError):
    """The connection failed: refused, reset, cut mid-stream, or idle too long."""

    behaviour = Behaviour.RETRY

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        self.method = method
        self.url = redact_url(url) if url else ""
        where = f" ({method} {self.url})" if url else ""
        super().__init__(f"{redact(message)}{where}")


class UnexpectedResponse(AsyncMigrateError):
    """A 2xx answer that is not what Glance sends: a body that is not JSON (a load
    balancer's maintenance page answering 200 text/html), or JSON of the wrong shape.

    Transient: whatever stands in front of Glance will usually step aside.
    """

    behaviour = Behaviour.RETRY

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        self.method = method
        self.url = redact_url(url) if url else ""
        where = f" on {method} {self.url}" if url else ""
        super().__init__(f"unexpected answer{where}: {redact(message)}")


class HTTPStatusError(AsyncMigrateError):
    """Glance answered with a non-2xx status.

    Carries the status, the ``x-openstack-request-id`` (to find the request in
    the server's logs) and the redacted URL; never a token.
    """

    def __init__(
        self,
        status: int,
        *,
        method: str,
        url: str,
        request_id: str | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = redact_url(url)
        self.request_id = request_id
        self.detail = redact(detail)
        self.retry_after = retry_after
        rid = f" [request-id {request_id}]" if request_id else ""
        det = f": {self.detail}" if detail else ""
        super().__init__(f"HTTP {status} on {method} {self.url}{rid}{det}")


class Unauthorized(HTTPStatusError):
    """401: the token expired or was revoked; re-authenticate and retry."""

    behaviour = Behaviour.RETRY


class Forbidden(HTTPStatusError):
    """403: policy refuses this request."""


class NotFound(HTTPStatusError):
    """404: no such image (or not visible to the caller)."""


class ConflictStatus(HTTPStatusError):
    """409: the request conflicts with the image's state."""


class ClientStatusError(HTTPStatusError):
    """Any other 4xx: the request itself is wrong; retrying will not help."""


class ServerStatusError(HTTPStatusError):
    """5xx or 429: the server is failing or busy; retry, honouring Retry-After."""

    behaviour = Behaviour.RETRY


def status_error(
    status: int,
    *,
    method: str,
    url: str,
    request_id: str | None = None,
    detail: str = "",
    retry_after: float | None = None,
) -> HTTPStatusError:
    """Build the :class:`HTTPStatusError` subclass that fits ``status``."""
    cls: type[HTTPStatusError]
    if status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = Forbidden
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = ConflictStatus
    elif status == 429 or status >= 500:
        cls = ServerStatusError
    else:
        cls = ClientStatusError
    return cls(
        status,
        method=method,
        url=url,
        request_id=request_id,
        detail=detail,
        retry_after=retry_after,
    )


class ImageError(AsyncMigrateError):
    """A failure that belongs to one image; the run goes on with the others."""


class StreamCorrupted(ImageError):
    """The bytes read did not match the source's size or hash: nothing was committed.

    Transient (a flipped bit on the wire, a truncated read): the image is retried.
    ``actual`` is the digest computed, so the same wrong digest seen twice can be
    recognised as a corrupt source rather than a bad wire.
    """

    behaviour = Behaviour.RETRY

    def __init__(self, message: str, *, actual: str | None = None) -> None:
        super().__init__(message)
        self.actual = actual


class DestinationBusy(ImageError):
    """The destination image is being written (``saving``): wait and try again."""

    behaviour = Behaviour.RETRY


class SourceCorrupt(ImageError):
    """The source's data does not match its own recorded hash, every time it is read."""


class DestinationConflict(ImageError):
    """The destination holds an image with this id but other content or attributes."""


class VerificationError(ImageError):
    """After an upload or a store move, the record is not what a good copy leaves (the image not
    ``active``; a store move's carrier or original with other hashes)."""


class BadCopy(ImageError):
    """The destination's copy holds bytes other than the source recorded, and was deactivated
    (quarantined) so nobody boots it: Glance can neither replace its data nor reuse its id."""


class BadCopyActive(ImageError):
    """A bad copy whose deactivation failed: it is still active, and the message says so.

    Retried when the failure was (a 503): the next attempt proves the copy again and deactivates
    it; else an operator must deactivate it by hand.
    """

    def __init__(self, message: str, behaviour: Behaviour) -> None:
        super().__init__(message)
        self.behaviour = behaviour


FAILURE_KINDS = (
    "transport",
    "unexpected_response",
    "unauthorized",
    "http_429",
    "http_5xx",
    "http_4xx",
    "stream_corrupted",
    "destination_busy",
    "other",
)


def failure_kind(exc: BaseException) -> str:
    """Why an attempt failed, as one of :data:`FAILURE_KINDS` — a bounded label (a metric's
    label must never be free text: every distinct value is a new time series)."""
    if isinstance(exc, TransportError):
        return "transport"
    if isinstance(exc, UnexpectedResponse):
        return "unexpected_response"
    if isinstance(exc, Unauthorized):
        return "unauthorized"
    if isinstance(exc, HTTPStatusError):
        if exc.status == 429:
            return "http_429"
        return "http_5xx" if exc.status >= 500 else "http_4xx"
    if isinstance(exc, StreamCorrupted):
        return "stream_corrupted"
    if isinstance(exc, DestinationBusy):
        return "destination_busy"
    return "other"
