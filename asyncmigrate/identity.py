"""Cross-cloud identity: project ids differ between clouds.

``--project-map FILE`` (YAML or JSON) maps each source project — by id, or by
name resolved through the source cloud's Keystone — to a destination project
id.  The map rewrites ``owner`` and image members.  An image whose owner has
no mapping is reported, or, with ``--unmapped-owner caller``, created without
an owner so it belongs to the caller's project.  Members without a mapping
are left out and named in the image's reason.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from .errors import ImageError, UsageError

__all__ = ["ProjectMap", "UnmappedOwner", "load_mapping", "load_project_map", "map_members"]

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
