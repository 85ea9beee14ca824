"""The troubleshooting page (docs/troubleshooting.md) covers every error the CLI can print."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import asyncmigrate
from asyncmigrate.errors import AsyncMigrateError
from asyncmigrate.render import NOTABLE

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "troubleshooting.md").read_text()


def _error_classes() -> set[type[AsyncMigrateError]]:
    for module in pkgutil.iter_modules(asyncmigrate.__path__):
        if module.name != "__main__":
            importlib.import_module(f"asyncmigrate.{module.name}")
    found: set[type[AsyncMigrateError]] = set()
    todo: list[type[AsyncMigrateError]] = [AsyncMigrateError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += [sub for sub in cls.__subclasses__() if sub.__module__.startswith("asyncmigrate")]
    return found


def test_every_error_class_has_an_entry() -> None:
    """Each error class of the package (AsyncMigrateError and every subclass, wherever defined) is named."""
    missing = sorted(cls.__name__ for cls in _error_classes() if f"`{cls.__name__}`" not in PAGE)
    assert not missing, f"docs/troubleshooting.md has no entry for {missing}"


def test_every_fixed_line_the_cli_prints_has_an_entry() -> None:
    """Every line cli.py starts with fixed words ("asyncmigrate: error: …", "asyncmigrate: incomplete: …") and
    every image outcome that gets a line of its own ("failed: ID NAME: …") is quoted on the page."""
    source = (ROOT / "asyncmigrate" / "cli.py").read_text()
    starts = set(re.findall(r'"asyncmigrate: ([a-z][a-z ]*[a-z])', source))
    assert {"error", "incomplete", "internal error", "stopping"} <= starts  # the search still finds them
    missing = sorted(s for s in starts if f"`asyncmigrate: {s}" not in PAGE)
    missing += sorted(o for o in NOTABLE if f"`{o}: ID NAME: " not in PAGE)
    assert not missing, f"docs/troubleshooting.md quotes no line starting {missing}"
