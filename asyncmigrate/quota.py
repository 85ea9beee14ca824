"""The destination's image quota (Keystone unified limits), and whether a plan fits it.

Where Glance enforces Keystone unified limits (``use_keystone_limits``), ``GET
/v2/info/usage`` publishes four of them; elsewhere it answers ``{"usage": {}}``
(and Glance before Yoga has no such endpoint: 404).  What glance 33 enforces, read
from ``glance/quota/keystone.py`` and its callers (``api/v2/images.py``,
``api/v2/image_data.py``, ``async_/flows/api_image_import.py``), and measured on
the real server with oslo.limit (``tests/integration/test_quota_real.py``):

* every check is made against the **caller's** project (the token's:
  ``context.owner``), and its usage counts the images **owned by** that project,
  whoever owns the image being created or uploaded;
* a create checks ``image_count_total``: usage + 1 ≤ limit;
* ``PUT …/file`` checks ``image_size_total``: usage + the declared size in MiB
  (rounded down; 0 when no size is declared) ≤ limit, then
  ``image_count_uploading``: the caller's images being uploaded (this one among
  them when the caller owns it) ≤ limit;
* ``PUT …/stage`` checks ``image_stage_total`` the same way, then
  ``image_count_uploading``; the glance-direct import checks ``image_size_total``
  with the staged size.

So an admin copying images that keep their owners (other projects) adds nothing to
the usage: each upload must only fit beside it, and creates stop once the caller's
own count is full.  Images the caller's project will own (``--no-owner``, owners
mapped to it, owner-less images) add up.  :func:`judge` computes, per limit, the
least usage the plan must reach whatever the order the images run in, and refuses
only when that is above the limit: a refusal is never a guess.  What it cannot see
(the owners' own limits; the caller's project when the cloud has no Keystone) it
says, in :attr:`Verdict.not_checked`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .errors import UsageError
from .report import Action, ImageResult

__all__ = ["LIMITS", "Limit", "Needs", "Quota", "QuotaExceeded", "Verdict", "judge", "refused_by_quota"]

MiB = 1024 * 1024
SIZE_TOTAL, STAGE_TOTAL = "image_size_total", "image_stage_total"
COUNT_TOTAL, COUNT_UPLOADING = "image_count_total", "image_count_uploading"
LIMITS = (SIZE_TOTAL, STAGE_TOTAL, COUNT_TOTAL, COUNT_UPLOADING)
_SIZES = frozenset({SIZE_TOTAL, STAGE_TOTAL})  # counted in MiB


class QuotaExceeded(UsageError):
    """The destination's quota cannot hold the plan: refused before anything is changed."""


@dataclasses.dataclass(frozen=True)
class Limit:
    """One limit of the caller's project: its usage and limit (negative: unlimited), sizes in MiB."""

    name: str
    usage: int
    limit: int

    @property
    def unit(self) -> str:
        """``"MiB"`` for sizes, ``""`` for counts of images."""
        return "MiB" if self.name in _SIZES else ""

    def amount(self, n: int) -> str:
        """``"3 MiB"``, ``"3"``."""
        return f"{n} {self.unit}".strip()


@dataclasses.dataclass(frozen=True)
class Quota:
    """``GET /v2/info/usage`` as discovered once for the destination.

    ``project`` is the caller's project (the token's), None when the cloud's
    authentication names none; ``limits`` is empty when Glance publishes nothing;
    ``endpoint`` is False when it has no usage endpoint at all.
    """

    project: str | None
    limits: tuple[Limit, ...] = ()
    endpoint: bool = True

    @classmethod
    def parse(cls, usage: Mapping[str, Any] | None, project: str | None) -> Quota:
        """From the answer's ``usage`` object (None: no endpoint)."""
        if usage is None:
            return cls(project, (), endpoint=False)
        limits = []
        for name in LIMITS:
            entry = usage.get(name)
            if isinstance(entry, Mapping) and isinstance(entry.get("limit"), int):
                limits.append(Limit(name, int(entry.get("usage") or 0), int(entry["limit"])))
        return cls(project, tuple(limits))

    def get(self, name: str) -> Limit | None:
        """The named limit, if published."""
        return next((limit for limit in self.limits if limit.name == name), None)

    @property
    def enforced(self) -> bool:
        """Whether any published limit is finite (only then is there something to check)."""
        return any(limit.limit >= 0 for limit in self.limits)

    def describe(self) -> dict[str, Any]:
        """What ``plan``, the summary and the report show."""
        return {
            "project": self.project,
            "endpoint": self.endpoint,
            "limits": {limit.name: {"usage": limit.usage, "limit": limit.limit} for limit in self.limits},
        }


@dataclasses.dataclass
class Needs:
    """What a plan asks of the caller's quota, image by image (counts and maxima only: bounded).

    ``caller`` is the caller's project (None: unknown); an image's destination owner
    None means the caller's project gets it.  ``declares`` says whether the upload
    declares its size (glance checks a size only then), ``stages`` whether it goes
    through the staging area (glance-direct).
    """

    caller: str | None
    stages: bool = False
    creates_own: int = 0
    creates_other: int = 0
    own_mib: int = 0  # the caller's images' uploads, summed
    own_unsized_max: int = 0  # the largest of those declaring no size (its own check counts 0)
    other_max_mib: int = 0  # the largest sized upload of an image another project owns
    staged_max_mib: int = 0
    uploads_own: int = 0
    uploads_other: int = 0
    unsized: int = 0  # uploads glance cannot check (no declared size)
    others: int = 0  # images another project will own
    owner_unknown: int = 0  # images with an owner while the caller's project is unknown

    def add(self, result: ImageResult, owner: str | None, *, declares: bool) -> None:
        """Count one planned image (``owner``: its owner at the destination)."""
        creates = result.action in (Action.COPY, Action.CREATE)
        uploads = result.action in (Action.COPY, Action.UPLOAD)
        if not (creates or uploads):
            return
        own = owner is None or owner == self.caller
        if not own:
            self.others += 1
            if self.caller is None:
                self.owner_unknown += 1  # perhaps the caller's: counted as another's (never over-counted)
        mib = result.size // MiB
        if creates:
            if own:
                self.creates_own += 1
            else:
                self.creates_other += 1
        if not uploads:
            return
        if own:
            self.uploads_own += 1
            self.own_mib += mib
        else:
            self.uploads_other += 1
        if not declares:
            self.unsized += 1
            if own:
                self.own_unsized_max = max(self.own_unsized_max, mib)
        elif not own:
            self.other_max_mib = max(self.other_max_mib, mib)
        if self.stages:
            self.staged_max_mib = max(self.staged_max_mib, mib)


@dataclasses.dataclass(frozen=True)
class Check:
    """One limit against the plan: ``needs`` is the least usage the plan must reach."""

    limit: Limit
    needs: int
    adds: str  # what the plan adds, in words

    @property
    def short(self) -> int:
        """By how much the plan exceeds the limit (0: it fits, or unlimited)."""
        return 0 if self.limit.limit < 0 else max(0, self.needs - self.limit.limit)

    def sentence(self) -> str:
        """``image_size_total: 2 MiB used of 3 MiB; uploads 2 MiB …: needs 4 MiB (short by 1 MiB)``."""
        lim = self.limit
        cap = "unlimited" if lim.limit < 0 else lim.amount(lim.limit)
        text = f"{lim.name}: {lim.amount(lim.usage)} used of {cap}; {self.adds}: needs {lim.amount(self.needs)}"
        return text + (f" (short by {lim.amount(self.short)})" if self.short else "")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the plan fits the destination's quota, and what was not checked."""

    quota: Quota
    checks: tuple[Check, ...] = ()
    max_uploads: int | None = None  # image_count_uploading's bound on uploads at once
    not_checked: tuple[str, ...] = ()
    ignored: bool = False  # --ignore-quota: judged, not enforced

    @property
    def shortfalls(self) -> list[Check]:
        """The limits the plan cannot fit."""
        return [check for check in self.checks if check.short]

    def refusal(self, verb: str) -> str | None:
        """The one line that refuses the run, or None when it fits."""
        short = self.shortfalls
        if not short:
            return None
        project = f"project {self.quota.project}'s" if self.quota.project else "the caller's project's"
        return (
            f"the destination's quota cannot hold this {verb}: {project} "
            + "; ".join(check.sentence() for check in short)
            + f"; nothing was changed (plan {verb} shows the whole quota; raise the limit, narrow the "
            "selection, or --ignore-quota to start anyway)"
        )

    def describe(self) -> dict[str, Any]:
        """What ``plan``, the summary and the report show."""
        return {
            **self.quota.describe(),
            "checks": [
                {
                    "name": c.limit.name,
                    "unit": c.limit.unit,
                    "usage": c.limit.usage,
                    "limit": c.limit.limit,
                    "needs": c.needs,
                    "short": c.short,
                    "adds": c.adds,
                    "text": c.sentence(),
                }
                for c in self.checks
            ],
            "max_uploads": self.max_uploads,
            "not_checked": list(self.not_checked),
            "ignored": self.ignored,
        }


def judge(quota: Quota, needs: Needs, *, ignored: bool = False) -> Verdict:
    """Each published limit against ``needs`` (see the module docstring)."""
    if not quota.limits:
        why = (
            "GET /v2/info/usage is empty: the destination does not enforce Keystone unified limits"
            if quota.endpoint
            else "the destination has no GET /v2/info/usage (Glance before Yoga)"
        )
        return Verdict(quota, not_checked=(f"not published ({why}); nothing was checked",), ignored=ignored)
    checks: list[Check] = []
    max_uploads = None
    for limit in quota.limits:
        check = _check(limit, needs)
        if check is not None:
            checks.append(check)
        if limit.name == COUNT_UPLOADING and limit.limit >= 0 and needs.uploads_own + needs.owner_unknown:
            # The caller's own uploads count themselves: no more at once than the room left.
            max_uploads = max(1, limit.limit - limit.usage)
    return Verdict(quota, tuple(checks), max_uploads, _not_checked(quota, needs), ignored)


def _check(limit: Limit, needs: Needs) -> Check | None:
    if limit.name == COUNT_TOTAL:
        # Each create needs a free count; only the caller's own images use one up.
        first = needs.creates_own or (1 if needs.creates_other else 0)
        adds = f"creates {needs.creates_own} owned by the project"
        if needs.creates_other:
            adds += f" and {needs.creates_other} owned by others (not counted, each needs room for one)"
        return Check(limit, limit.usage + first, adds)
    if limit.name == SIZE_TOTAL:
        # The caller's images add up (the last one's check counts 0 when it declares no size);
        # another project's upload only has to fit beside the usage.
        own = needs.own_mib - needs.own_unsized_max
        adds = f"uploads {needs.own_mib} MiB owned by the project"
        if needs.uploads_other:
            adds += f", the largest owned by others {needs.other_max_mib} MiB (not counted, must fit beside)"
        return Check(limit, limit.usage + max(own, needs.other_max_mib), adds)
    if limit.name == STAGE_TOTAL:
        if not needs.stages:
            return None  # only glance-direct stages
        return Check(limit, limit.usage + needs.staged_max_mib, f"stages {needs.staged_max_mib} MiB at most at once")
    if limit.name == COUNT_UPLOADING:
        if not needs.uploads_own + needs.uploads_other:
            return None
        own = 1 if needs.uploads_own else 0
        adds = f"uploads {needs.uploads_own} owned by the project (each counts itself while it runs)"
        return Check(limit, limit.usage + own, adds)
    return None  # pragma: no cover


def _not_checked(quota: Quota, needs: Needs) -> tuple[str, ...]:
    notes = []
    if needs.others:
        notes.append(
            f"the limits of the images' own projects: {needs.others} images owned by "
            "other projects count against their owners, whose usage glance shows only to them, when those "
            "projects next create or upload"
        )
    if needs.owner_unknown:
        notes.append(
            f"the caller's project is unknown (the cloud's authentication names none): {needs.owner_unknown} "
            "images with an owner were counted as another project's"
        )
    if needs.unsized:
        notes.append(
            f"{needs.unsized} uploads declare no size (put-unsized, Swift stores): glance checks "
            f"{SIZE_TOTAL} for them only against the usage before, so the project may end above it"
        )
    return tuple(notes)


# oslo.limit's ProjectOverLimit, as glance puts it in a 413's body.
_OVER = re.compile(
    r"Project (?P<project>\S+) is over a limit for \[Resource (?P<name>\w+) is over limit of (?P<limit>-?\d+) "
    r"due to current usage (?P<usage>\d+) and delta (?P<delta>\d+)"
)


def refused_by_quota(detail: str, what: str) -> str | None:
    """The reason for an image whose ``what`` (create, upload) a 413 of the unified limits
    refused, saying what to do; None when the 413 was about something else."""
    match = _OVER.search(detail)
    if match is None:
        return None
    limit = Limit(match["name"], int(match["usage"]), int(match["limit"]))
    return (
        f"the destination's quota refused the {what}: {limit.name} of project {match['project']} (the caller's) "
        f"is {limit.amount(limit.usage)} of {limit.amount(limit.limit)} and this needs "
        f"{limit.amount(int(match['delta']))} more; raise "
        "that project's limit (or free room in it), then run this again"
    )
