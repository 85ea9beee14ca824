"""Fault injection: what a test arms on ``fake.faults``, and how the handlers consume it.

Every fault is explicit and counted: ``times=1`` fires once, ``times=None`` fires on every
matching request until :meth:`Faults.clear`. Faults are consumed when a request *starts*, so
a retry sees the next state of the countdown, as a flaky network would behave.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping


@dataclasses.dataclass
class _Armed:
    """A countdown shared by every fault kind; ``remaining=None`` never runs out."""

    remaining: int | None

    def take(self) -> bool:
        """Fire once if any shots are left."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclasses.dataclass
class HttpFailure:
    """A canned error answered instead of handling a matching request."""

    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: int | None
    body: str
    echo: bool
    armed: _Armed
    skip: int = 0
    """Matching requests still to let through before the first failure."""
    content_type: str = "text/plain"


@dataclasses.dataclass
class _Delay:
    """Hold matching requests this long before handling them."""

    method: str
    pattern: re.Pattern[str]
    seconds: float
    armed: _Armed


@dataclasses.dataclass
class _TokenExpiry:
    """Expire the token of the ``skip + 1``-th matching authenticated request."""

    method: str
    pattern: re.Pattern[str]
    skip: int


@dataclasses.dataclass
class _Action:
    """Someone else's change to the fake's state, made just before a matching request is handled."""

    method: str
    pattern: re.Pattern[str]
    query: dict[str, str | None]
    action: Callable[[], None]
    armed: _Armed


@dataclasses.dataclass(frozen=True)
class DownloadPlan:
    """What to do to one download response, decided when it starts."""

    cut_after: int | None = None
    """Close the connection after this many body bytes."""
    hang_after: int | None = None
    """Stop sending (but keep the connection open) after this many body bytes."""
    bytes_per_sec: float | None = None
    """Throttle the body to this rate."""
    flips: frozenset[int] = frozenset()
    """Absolute image offsets whose byte is served inverted."""


@dataclasses.dataclass
class _ByteFault:
    n_bytes: int
    armed: _Armed


def _check_times(times: int | None) -> _Armed:
    if times is not None and times < 1:
        raise ValueError("times must be >= 1, or None for always")
    return _Armed(times)


class Faults:
    """The faults armed on one FakeGlance: tests call the arming methods, handlers ``take_*``."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._http: list[HttpFailure] = []
        self._delays: list[_Delay] = []
        self._actions: list[_Action] = []
        self._cut_download: dict[str, list[_ByteFault]] = {}
        self._hang_download: dict[str, list[_ByteFault]] = {}
        self._cut_upload: dict[str, list[_ByteFault]] = {}
        self._slow: dict[str, float] = {}
        self._flips: dict[str, list[_ByteFault]] = {}
        self._upload_flips: dict[str, list[_ByteFault]] = {}
        self._lost_answers: dict[str, list[_ByteFault]] = {}
        self._partial: dict[str, list[_ByteFault]] = {}
        self._stale_ranges: dict[str, bytes] = {}
        self._import_failures: dict[str, tuple[str, _Armed]] = {}
        self._corrupt_copies: dict[str, tuple[_Armed, bool]] = {}
        self._expire_token: _TokenExpiry | None = None

    # -- arming, for tests --------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 503,
        *,
        retry_after: int | None = 1,
        times: int | None = 1,
        body: str = "",
        echo: bool = False,
        nth: int = 1,
        content_type: str = "text/plain",
    ) -> None:
        """Answer ``status`` (with ``Retry-After`` unless None) to matching requests.

        ``method`` is an HTTP method or ``"*"``; ``path_regex`` is searched (``re.search``) in
        the path as glance sees it, without the deployment prefix, e.g. ``r"/file$"``. This
        runs before authentication, like an overloaded proxy in front of glance would.
        ``echo`` appends the request line and every request header (``X-Auth-Token``
        included) to the body, as a debugging proxy's error page does. ``nth`` makes the
        nth matching request from now the first to fail (e.g. a later page of a listing);
        each armed failure counts matching requests on its own. A 2xx ``status`` with
        ``content_type="text/html"`` is a load balancer's maintenance page.
        """
        if nth < 1:
            raise ValueError("nth must be >= 1")
        self._http.append(
            HttpFailure(
                method=method.upper(),
                pattern=re.compile(path_regex),
                status=status,
                retry_after=retry_after,
                body=body or f"{status} injected by fakeglance",
                echo=echo,
                armed=_check_times(times),
                skip=nth - 1,
                content_type=content_type,
            )
        )

    def before_request(
        self,
        method: str,
        path_regex: str,
        action: Callable[[], None],
        *,
        query: dict[str, str | None] | None = None,
        times: int | None = 1,
    ) -> None:
        """Run ``action()`` — a change someone else makes meanwhile, e.g. an operator's PATCH —
        just before a matching request (as for :meth:`fail_next`, and carrying every ``query``
        item; a value None: the key with any value, ``""``: the key absent) is handled,
        ``times`` times."""
        self._actions.append(
            _Action(method.upper(), re.compile(path_regex), dict(query or {}), action, _check_times(times))
        )

    def delay_next(self, method: str, path_regex: str, seconds: float, *, times: int | None = 1) -> None:
        """Hold matching requests (as for :meth:`fail_next`) ``seconds`` before handling them."""
        self._delays.append(_Delay(method.upper(), re.compile(path_regex), seconds, _check_times(times)))

    def cut_download_after(self, image_id: str, n_bytes: int, times: int | None = 1) -> None:
        """Close the connection after ``n_bytes`` of a download's body (headers already sent)."""
        _arm(self._cut_download, image_id, n_bytes, times)

    def hang_download_after(self, image_id: str, n_bytes: int, times: int | None = 1) -> None:
        """Send ``n_bytes`` of a download's body, then nothing until the client gives up."""
        _arm(self._hang_download, image_id, n_bytes, times)

    def slow_download(self, image_id: str, bytes_per_sec: float | None) -> None:
        """Throttle every download of the image (None removes the throttle)."""
        if bytes_per_sec is None:
            self._slow.pop(image_id, None)
        elif bytes_per_sec <= 0:
            raise ValueError("bytes_per_sec must be positive")
        else:
            self._slow[image_id] = bytes_per_sec

    def flip_byte(self, image_id: str, offset: int, times: int | None = None) -> None:
        """Serve the byte at absolute ``offset`` inverted (silent corruption) in the next
        ``times`` downloads that reach it; ``None`` (default): in every download, as a source
        whose stored bytes are corrupt."""
        _arm(self._flips, image_id, offset, times)

    def flip_upload_byte(self, image_id: str, offset: int, times: int | None = 1) -> None:
        """Store the byte at absolute ``offset`` of the next ``times`` uploads (``PUT …/file`` or
        ``…/stage``) inverted, as a corrupting proxy or NIC in front of glance would: the client
        sent good bytes, glance records (and hashes) bad ones.  ``image_id`` ``"*"``: the next
        uploads of any image (one whose id is not known beforehand, e.g. a move's carrier)."""
        _arm(self._upload_flips, image_id, offset, times)

    def lose_upload_answer(self, image_id: str, times: int | None = 1) -> None:
        """Commit the next ``times`` uploads of the image, then drop the connection before the
        204 (a load balancer timing out a slow answer): the data is in, the client never knows."""
        _arm(self._lost_answers, image_id, 0, times)

    def answer_partially(self, image_id: str, n_bytes: int, times: int | None = 1) -> None:
        """Answer a download that asks for the whole image (no ``Range``) with ``206`` and its first
        ``n_bytes`` (``Content-Range: bytes 0-{n-1}/{size}``), as a cache serving in slices does."""
        _arm(self._partial, image_id, n_bytes, times)

    def serve_ranges_from(self, image_id: str, other: bytes | None) -> None:
        """Serve every ``Range`` request of the image from ``other`` (its own ``Content-Range``
        total), as a cache holding another object under the image's URL; None stops it."""
        if other is None:
            self._stale_ranges.pop(image_id, None)
        else:
            self._stale_ranges[image_id] = other

    def cut_upload_after(self, image_id: str, n_bytes: int, times: int | None = 1) -> None:
        """Close the connection after the server has read ``n_bytes`` of an upload."""
        _arm(self._cut_upload, image_id, n_bytes, times)

    def expire_token_once(self, method: str = "*", path_regex: str = "", *, nth: int = 1) -> None:
        """The next authenticated request gets 401 and its token stops being valid.

        ``method`` and ``path_regex`` (as for :meth:`fail_next`) narrow which request it is;
        ``nth`` picks the nth matching one, e.g. the second page of a listing.
        """
        if nth < 1:
            raise ValueError("nth must be >= 1")
        self._expire_token = _TokenExpiry(method.upper(), re.compile(path_regex), nth - 1)

    def fail_import(self, store: str, *, message: str = "injected copy failure", times: int | None = 1) -> None:
        """Make copy-image imports into ``store`` fail (listed in ``os_glance_failed_import``)."""
        self._import_failures[store] = (message, _check_times(times))

    def corrupt_copy(self, store: str, *, times: int | None = 1, lose: bool = False) -> None:
        """Make copy-image store other bytes in ``store`` than it read (one byte flipped), as a
        backend that damages what it is given would — or, with ``lose``, nothing at all while the
        location is recorded (an object removed behind Glance's back); the record is unchanged."""
        self._corrupt_copies[store] = (_check_times(times), lose)

    def clear(self) -> None:
        """Disarm every fault."""
        self._reset()

    # -- consuming, for handlers ----------------------------------------------------------

    def take_http_failure(self, method: str, path: str) -> HttpFailure | None:
        """The first armed canned error matching this request, consuming one shot; every
        matching failure still waiting for its ``nth`` request counts this one."""
        chosen = None
        for failure in self._http:
            if failure.method not in ("*", method.upper()) or not failure.pattern.search(path):
                continue
            if failure.skip:
                failure.skip -= 1
            elif chosen is None and failure.armed.take():
                chosen = failure
        return chosen

    def take_actions(self, method: str, path: str, query: Mapping[str, str]) -> list[Callable[[], None]]:
        """The changes to make before this request is handled, consuming one shot of each."""
        return [
            a.action
            for a in self._actions
            if a.method in ("*", method.upper())
            and a.pattern.search(path)
            and all(_query_has(query, k, v) for k, v in a.query.items())
            and a.armed.take()
        ]

    def take_delay(self, method: str, path: str) -> float:
        """Seconds to hold this request, consuming one shot of the first matching delay."""
        for delay in self._delays:
            if delay.method in ("*", method.upper()) and delay.pattern.search(path) and delay.armed.take():
                return delay.seconds
        return 0.0

    def take_download_plan(self, image_id: str) -> DownloadPlan:
        """Decide what happens to the download that is starting now."""
        return DownloadPlan(
            cut_after=_take_bytes(self._cut_download.get(image_id, [])),
            hang_after=_take_bytes(self._hang_download.get(image_id, [])),
            bytes_per_sec=self._slow.get(image_id),
            flips=frozenset(f.n_bytes for f in self._flips.get(image_id, []) if f.armed.take()),
        )

    def take_upload_flips(self, image_id: str) -> frozenset[int]:
        """Offsets of the upload starting now whose bytes arrive inverted."""
        armed = [*self._upload_flips.get(image_id, []), *self._upload_flips.get("*", [])]
        return frozenset(f.n_bytes for f in armed if f.armed.take())

    def take_partial(self, image_id: str) -> int | None:
        """How many bytes the whole-image download starting now is cut to (answered 206), if any."""
        return _take_bytes(self._partial.get(image_id, []))

    def stale_ranges(self, image_id: str) -> bytes | None:
        """The other object Range requests of the image are served from, if any."""
        return self._stale_ranges.get(image_id)

    def take_lost_answer(self, image_id: str) -> bool:
        """Whether the upload committed now loses its answer."""
        return _take_bytes(self._lost_answers.get(image_id, [])) is not None

    def take_upload_cut(self, image_id: str) -> int | None:
        """After how many bytes the upload that is starting now gets cut, if at all."""
        return _take_bytes(self._cut_upload.get(image_id, []))

    def take_token_expiry(self, method: str = "GET", path: str = "/") -> bool:
        """Whether this authenticated request is the one whose token expires."""
        armed = self._expire_token
        if armed is None or armed.method not in ("*", method.upper()) or not armed.pattern.search(path):
            return False
        if armed.skip:
            armed.skip -= 1
            return False
        self._expire_token = None
        return True

    def take_corrupt_copy(self, store: str) -> str | None:
        """How the copy into ``store`` finishing now is damaged: "flip", "lose", or None."""
        entry = self._corrupt_copies.get(store)
        if entry is None or not entry[0].take():
            return None
        return "lose" if entry[1] else "flip"

    def take_import_failure(self, store: str) -> str | None:
        """The failure message for a copy into ``store`` that is starting now, if any."""
        entry = self._import_failures.get(store)
        if entry is not None and entry[1].take():
            return entry[0]
        return None


def _query_has(query: Mapping[str, str], key: str, value: str | None) -> bool:
    if value is None:
        return key in query
    if value == "":
        return key not in query
    return query.get(key) == value


def _arm(faults: dict[str, list[_ByteFault]], image_id: str, n_bytes: int, times: int | None) -> None:
    if n_bytes < 0:
        raise ValueError("n_bytes must be >= 0")
    faults.setdefault(image_id, []).append(_ByteFault(n_bytes, _check_times(times)))


def _take_bytes(faults: list[_ByteFault]) -> int | None:
    for fault in faults:
        if fault.armed.take():
            return fault.n_bytes
    return None
