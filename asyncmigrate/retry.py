"""Retrying a unit of work: an attempt cap and a time budget, exponential backoff
with jitter, honouring ``Retry-After``.

What to retry is decided by behaviour (:attr:`AsyncMigrateError.behaviour`), not
by lists of exception types.

What the budget (``--retry-deadline``) counts
----------------------------------------------
Time spent *failing and waiting*, never time spent working:

* every wait between attempts (the backoff, or a server's ``Retry-After``);
* for a failed attempt, the time since it last made progress.  Progress is
  marked by the caller through :meth:`Budget.progress`: each chunk handed to the
  destination, the moment an upload slot (``--max-uploads``) is obtained, each
  poll that finds a server-side import still running.

So a 90 GB transfer cut after three hours is charged the seconds between its
last byte and the error, not three hours; an attempt that fails without moving
a byte (a refused connection, a 503) is charged in full; waiting for an upload
slot is never charged.  When the budget is spent, or ``attempts`` have been
made, the last error stands.

A server's ``Retry-After`` replaces the computed backoff and is honoured as
asked, up to what is left of the budget (a wait the budget cannot cover is cut
to the remainder; one more attempt follows it).  Sleeping and reading the clock
go through the policy (:attr:`RetryPolicy.sleep`, :attr:`RetryPolicy.clock`),
so tests never wait.

One loop per unit
-----------------
Inside a unit (:func:`run_unit`, in the task running it and the tasks it
starts) a read is tried once: the unit's own loop is the retry, so an image
given ``--retries N`` costs at most N tries of any request, never N × N.
Reads outside any unit — the listing's pages, discovery, ``verify``'s
comparisons — are retried on their own (:func:`inside_unit` tells which).
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .config import RetryPolicy
from .errors import (
    AsyncMigrateError,
    BadCopy,
    Behaviour,
    DestinationConflict,
    HTTPStatusError,
    failure_kind,
    redact,
)
from .report import ImageResult, Outcome

__all__ = ["Budget", "backoff", "inside_unit", "is_retryable", "retried", "run_unit"]

T = TypeVar("T")

# Set while a unit runs: its reads leave the retrying to the unit's loop (module docstring).
_IN_UNIT: contextvars.ContextVar[bool] = contextvars.ContextVar("asyncmigrate_in_unit", default=False)


def inside_unit() -> bool:
    """Is the caller running inside a unit whose attempts are retried as a whole?"""
    return _IN_UNIT.get()


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a transient failure worth another attempt."""
    return isinstance(exc, AsyncMigrateError) and exc.behaviour is Behaviour.RETRY


class Budget:
    """The time one unit may spend failing and waiting (see the module docstring), and
    the kind of its last failure (:func:`~asyncmigrate.errors.failure_kind`)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.limit = policy.deadline
        self.spent = 0.0
        self.last_failure = "other"
        self._clock = policy.clock
        self._since: float | None = None  # start of the current attempt, or its last progress

    @property
    def remaining(self) -> float:
        """Seconds of failing and waiting still allowed."""
        return max(0.0, self.limit - self.spent)

    def attempt_started(self) -> None:
        """An attempt begins: from now on its time counts, until it makes progress."""
        self._since = self._clock()

    def progress(self) -> None:
        """The attempt is getting somewhere: the time until now is not failing."""
        self._since = self._clock()

    def attempt_failed(self, exc: BaseException | None = None) -> None:
        """Charge the failed attempt's time since its last progress (and note why it failed)."""
        if exc is not None:
            self.last_failure = failure_kind(exc)
        if self._since is not None:
            self.spent += max(0.0, self._clock() - self._since)
            self._since = None

    def waited(self, seconds: float) -> None:
        """Charge a wait between attempts."""
        self.spent += seconds


def backoff(policy: RetryPolicy, failures: int, exc: BaseException, remaining: float) -> float:
    """How long to wait after the ``failures``-th failure: the server's ``Retry-After``
    if it sent one, else exponential backoff with jitter; never more than ``remaining``."""
    if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
        wait = exc.retry_after
    else:
        computed = policy.wait_initial * 2 ** (failures - 1) + random.uniform(0, policy.wait_jitter)
        wait = min(policy.wait_max, computed)
    return max(0.0, min(wait, remaining))


async def retried(
    policy: RetryPolicy,
    attempt: Callable[[int], Awaitable[T]],
    *,
    budget: Budget | None = None,
    on_failure: Callable[[AsyncMigrateError], None] | None = None,
) -> T:
    """``await attempt(number)`` until it succeeds; retry transient errors.

    Gives up — re-raising the last error — on a non-transient error, after
    ``policy.attempts`` attempts, or when ``budget`` (a fresh one by default) is
    spent.  ``on_failure`` sees every error of ours before the decision.
    """
    budget = budget or Budget(policy)
    number = 0
    while True:
        number += 1
        budget.attempt_started()
        try:
            return await attempt(number)
        except AsyncMigrateError as exc:
            budget.attempt_failed(exc)
            if on_failure is not None:
                on_failure(exc)
            if not is_retryable(exc) or number >= policy.attempts or budget.remaining <= 0:
                raise
            wait = backoff(policy, number, exc, budget.remaining)
            budget.waited(wait)
            await policy.sleep(wait)


async def run_unit(
    policy: RetryPolicy,
    attempt: Callable[[int], Awaitable[None]],
    result: ImageResult,
    *,
    budget: Budget | None = None,
) -> None:
    """Run ``attempt(number)`` until it succeeds, retrying transient errors.

    A per-image error (or retries running out) is recorded in ``result``
    (``failed``, or ``conflict``); fatal and usage errors propagate and stop
    the run.  ``result.seconds`` covers every attempt.  Pass the ``budget`` the
    attempts mark their progress on (:meth:`Budget.progress`).
    """
    budget = budget or Budget(policy)
    started = policy.clock()

    def failed(exc: AsyncMigrateError) -> None:
        result.reason = redact(str(exc))  # what the next attempt's Retrying event reports

    entered = _IN_UNIT.set(True)
    try:
        await retried(policy, attempt, budget=budget, on_failure=failed)
    except AsyncMigrateError as exc:
        if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
            raise
        result.outcome = next((o for kind, o in _OUTCOMES if isinstance(exc, kind)), Outcome.FAILED)
        result.reason = redact(str(exc)) + _given_up(exc, result.attempts, budget, policy)
    finally:
        _IN_UNIT.reset(entered)
        result.seconds = policy.clock() - started


# Per-image errors with an outcome of their own (the rest are "failed").
_OUTCOMES: tuple[tuple[type[AsyncMigrateError], str], ...] = (
    (DestinationConflict, Outcome.CONFLICT),
    (BadCopy, Outcome.QUARANTINED),
)


def _given_up(exc: AsyncMigrateError, attempts: int, budget: Budget, policy: RetryPolicy) -> str:
    """Why a transient error was not retried again, for the image's reason."""
    if not is_retryable(exc):
        return ""
    if budget.remaining <= 0:
        return f" (gave up after {attempts} attempts: --retry-deadline of {policy.deadline:g} s spent failing)"
    return f" (gave up after {attempts} attempts)"
