"""Cross-cloud identity: project ids differ between clouds.

``--project-map FILE`` (YAML or JSON) maps each source project — by id, or by
name resolved through the source cloud's Keystone — to a destination project
id.  The map rewrites ``owner`` and image members.  An image whose owner has
no mapping is reported, or, with ``--unmapped-owner caller``, created without
an owner so it belongs to the caller's project.  A member without a mapping
cannot be shared with at the destination: the image is refused (``copy``,
``sync``) and counted as a difference (``verify``) unless
``--drop-unmapped-members`` says to leave such members out — and then they
are still named.

The pair's record keeps the mapping its copies used (:func:`mapping_of`: the
map's content, ``--no-owner``, ``--unmapped-owner``,
``--drop-unmapped-members``): a run with another mapping, or none, would
re-own or re-share every image it touches, so it is refused at once, naming
the difference (:func:`mapping_difference`), unless ``--change-mapping``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ImageError, UsageError

if TYPE_CHECKING:
    from .clouds import Cloud

__all__ = [
    "ProjectMap",
    "UnmappedOwner",
    "left_out_note",
    "load_mapping",
    "load_project_map",
    "map_members",
    "mapping_difference",
    "mapping_of",
    "unknown_projects",
    "unmapped_members_refused",
]

_PROJECT_ID = re.compile(r"^[0-9a-fA-F]{32}$|^[0-9a-fA-F-]{36}$")


class UnmappedOwner(ImageError):
    """The image's owner has no destination project in the map."""


@dataclasses.dataclass(frozen=True)
class ProjectMap:
    """Source project id → destination project id."""

    mapping: Mapping[str, str]
    unmapped_owner: Literal["fail", "caller"] = "fail"

    def owner(self, image: dict[str, Any]) -> str | None:
        """The destination owner of ``image``; None: leave it to the caller's project."""
        owner = image.get("owner")
        if owner is None:
            return None
        if owner in self.mapping:
            return self.mapping[owner]
        if self.unmapped_owner == "caller":
            return None
        raise UnmappedOwner(f"owner {owner} has no mapping in --project-map (or use --unmapped-owner caller)")

    def member(self, member: str) -> str | None:
        """The destination project of a member, or None when it has no mapping."""
        return self.mapping.get(member)


def map_members(pmap: ProjectMap | None, members: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """({destination member: status}, [source members without a mapping])."""
    if pmap is None:
        return members, []
    mapped: dict[str, str] = {}
    unmapped: list[str] = []
    for member, status in members.items():
        target = pmap.member(member)
        if target is None:
            unmapped.append(member)
        else:
            mapped[target] = status
    return mapped, sorted(unmapped)


def load_mapping(path: Path, flag: str, what: str = "source ids to destination ids") -> dict[str, str]:
    """A YAML (or ``.json``) file of string → string; a one-line usage error otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UsageError(f"{flag} {path} must map {what}")
    return dict(data)


def _yaml(text: str) -> Any:
    import yaml  # PyYAML comes with openstacksdk

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())) from exc


async def load_project_map(
    path: Path,
    *,
    unmapped_owner: Literal["fail", "caller"],
    resolve_name: Callable[[str], Awaitable[str]],
) -> ProjectMap:
    """Read the map; keys that are not ids are project names, resolved by ``resolve_name``."""
    raw = load_mapping(path, "--project-map", "source project ids or names to destination project ids")
    mapping: dict[str, str] = {}
    for key, value in raw.items():
        source = key if _PROJECT_ID.match(key) else await resolve_name(key)
        mapping[source.replace("-", "")] = value
        mapping[source] = value
    return ProjectMap(mapping=mapping, unmapped_owner=unmapped_owner)


def mapping_of(*, keep_owner: bool, project_map: ProjectMap | None, drop_unmapped_members: bool) -> dict[str, Any]:
    """The identity mapping a run uses, as the pair's record keeps it (JSON-able)."""
    table = None
    if project_map is not None:  # names were resolved: ids only, each once (without dashes)
        table = {k.replace("-", ""): v for k, v in sorted(project_map.mapping.items())}
    return {
        "keep_owner": keep_owner,
        "project_map": table,
        "unmapped_owner": None if project_map is None else project_map.unmapped_owner,
        "drop_unmapped_members": drop_unmapped_members,
    }


def mapping_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """How the mapping ``wanted`` differs from the ``stored`` one the pair's copies used,
    in one phrase naming the flag (None: the same)."""
    if bool(stored.get("keep_owner", True)) != bool(wanted.get("keep_owner", True)):
        was = "kept the source owners" if stored.get("keep_owner", True) else "were made with --no-owner"
        now = "has --no-owner" if not wanted.get("keep_owner", True) else "keeps the source owners"
        return f"the pair's copies {was}; this run {now}"
    before, after = stored.get("project_map"), wanted.get("project_map")
    if before is not None and after is None:
        return f"the pair's copies were made with --project-map ({len(before)} projects); this run has none"
    if before is None and after is not None:
        return f"the pair's copies were made without --project-map; this run has one ({len(after)} projects)"
    if before is not None and after is not None and before != after:
        changes = [
            f"{k} → {after[k]!r} (was {before[k]!r})" if k in before and k in after
            else f"{k} no longer mapped (was {before[k]!r})" if k in before
            else f"{k} → {after[k]!r} (new)"
            for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)
        ]  # fmt: skip
        more = f", and {len(changes) - 3} more" if len(changes) > 3 else ""
        return "--project-map differs from the one the pair's copies used: " + ", ".join(changes[:3]) + more
    for key, flag in (("unmapped_owner", "--unmapped-owner"), ("drop_unmapped_members", "--drop-unmapped-members")):
        if stored.get(key) != wanted.get(key):
            return f"{flag} is {wanted.get(key)!r} in this run, {stored.get(key)!r} for the pair's copies"
    return None


def left_out_note(left_out: list[str]) -> str:
    """The words naming the members left out by ``--drop-unmapped-members`` ("" when none)."""
    return f"members left out (no mapping; --drop-unmapped-members): {', '.join(left_out)}" if left_out else ""


def unmapped_members_refused(left_out: list[str], *, drop: bool) -> str | None:
    """Why a shared image cannot be shared as the source shares it (None: it can, or the
    operator chose ``--drop-unmapped-members``)."""
    if not left_out or drop:
        return None
    return (
        f"members without a mapping in --project-map: {', '.join(left_out)}; map them, or "
        "--drop-unmapped-members to share the image without them"
    )


async def unknown_projects(cloud: Cloud, project_ids: Iterable[str | None]) -> str | None:
    """Why these projects cannot own or share an image at the destination: those its Keystone
    says it does not have (None: all known, or it cannot be asked — :meth:`Cloud.project_exists`)."""
    if not cloud.can_ask_projects():
        return None
    unknown = [p for p in dict.fromkeys(filter(None, project_ids)) if await cloud.project_exists(p) is False]
    if not unknown:
        return None
    return (
        f"not a project at the destination (its Keystone has none with that id): {', '.join(unknown)}; "
        "fix --project-map"
    )
