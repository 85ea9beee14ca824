"""Start-up: ``--version`` and ``--help`` import only what they need (no timing asserted).

The heavy dependencies (aiohttp, anyio, rich, keystoneauth1, openstacksdk) cost
about 0.3 s of CPU here before the first line could be printed; the CLI and the
package's ``__init__`` import them when a command runs.  Each check runs in a
fresh interpreter, because this test process has long imported all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import asyncmigrate

HEAVY = ("aiohttp", "anyio", "rich", "keystoneauth1", "openstack", "stamina", "sqlite3", "prometheus_client")

# Run main(argv) in a fresh interpreter; print what it wrote, its exit code and the heavy modules loaded.
_PROBE = """
import contextlib, io, json, sys
from asyncmigrate.cli import main
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        code = exc.code
heavy = json.loads(sys.argv[2])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": loaded}))
"""


def _probe(argv: list[str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_heavy_dependency() -> None:
    """``import asyncmigrate.cli`` leaves aiohttp, anyio, rich, keystoneauth1, openstacksdk, stamina unloaded."""
    code = f"import asyncmigrate.cli, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--version"], f"asyncmigrate {asyncmigrate.__version__}"),
        (["--help"], "usage: asyncmigrate"),
        (["copy", "--help"], "--src-cloud NAME"),
        (["plan", "move", "--help"], "--from-store OLD"),
    ],
)
def test_version_and_help_print_without_heavy_imports(argv: list[str], expected: str) -> None:
    """``--version`` and every ``--help`` print and exit 0 with none of the heavy dependencies imported."""
    result = _probe(argv)
    assert result["code"] == 0
    assert expected in str(result["out"])
    assert result["loaded"] == []


def test_a_command_still_imports_what_it_needs() -> None:
    """A command that runs (here one refused for a missing cloud) gets past the lazy imports to its own error."""
    result = _probe(["verify", "--src-cloud", "no-such-cloud-here", "--dst-cloud", "nor-this-one"])
    assert result["code"] == 2
    assert "anyio" in result["loaded"] and "rich" in result["loaded"]


def test_public_names_resolve_on_first_use() -> None:
    """Every name in ``asyncmigrate.__all__`` resolves, ``dir()`` lists them, an unknown one is an AttributeError."""
    for name in asyncmigrate.__all__:
        assert getattr(asyncmigrate, name) is not None
    assert set(asyncmigrate.__all__) <= set(dir(asyncmigrate))
    from asyncmigrate import CopyConfig, copy_images

    assert CopyConfig.__module__ == "asyncmigrate.config" and copy_images.__module__ == "asyncmigrate.engine"
    with pytest.raises(AttributeError, match="no_such_name"):
        asyncmigrate.no_such_name  # noqa: B018
