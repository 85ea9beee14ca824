"""Retrying a unit of work: attempt cap AND deadline, exponential backoff with
jitter, honouring ``Retry-After`` — on top of stamina.

stamina (hynek/stamina) gives the backoff loop; what to retry is decided by
behaviour (:attr:`AsyncMigrateError.behaviour`), not by exception type lists.
A server's ``Retry-After`` replaces the computed backoff, capped at
``wait_max`` so tests (``wait_max=0``) never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import stamina

from .config import RetryPolicy
from .errors import AsyncMigrateError, Behaviour, DestinationConflict, HTTPStatusError
from .report import ImageResult, Outcome

__all__ = ["is_retryable", "retrying", "run_unit"]


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a transient failure worth another attempt."""
    return isinstance(exc, AsyncMigrateError) and exc.behaviour is Behaviour.RETRY


def _hook(policy: RetryPolicy):  # type: ignore[no-untyped-def]
    def on(exc: Exception) -> bool | float:
        if not is_retryable(exc):
            return False
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            return min(exc.retry_after, policy.wait_max)
        return True

    return on


def retrying(policy: RetryPolicy) -> Any:
    """``async for attempt in retrying(policy): with attempt: ...``

    Re-raises the last error when attempts or the deadline run out.
    """
    return stamina.retry_context(
        on=_hook(policy),
        attempts=policy.attempts,
        timeout=policy.deadline,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
    )


async def run_unit(policy: RetryPolicy, attempt: Callable[[int], Awaitable[None]], result: ImageResult) -> None:
    """Run ``attempt(number)`` until it succeeds, retrying transient errors.

    A per-image error (or retries running out) is recorded in ``result``
    (``failed``, or ``conflict``); fatal and usage errors propagate and stop
    the run.  ``result.seconds`` covers every attempt.
    """
    started = time.monotonic()

    async def recorded(number: int) -> None:
        try:
            await attempt(number)
        except AsyncMigrateError as exc:
            result.reason = str(exc)  # what the next attempt's Retrying event reports
            raise

    try:
        async for retry in retrying(policy):
            with retry:
                await recorded(retry.num)
    except AsyncMigrateError as exc:
        if exc.behaviour in (Behaviour.FATAL, Behaviour.USAGE):
            raise
        result.outcome = Outcome.CONFLICT if isinstance(exc, DestinationConflict) else Outcome.FAILED
        result.reason = str(exc)
    finally:
        result.seconds = time.monotonic() - started
