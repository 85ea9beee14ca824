"""Start-up time of the ``asyncmigrate`` command: ``--version``, ``--help``, ``copy --help``.

Each is run ``repeats`` times as a fresh process (the installed console script
next to this interpreter, else ``python -m asyncmigrate``); reported are the
minimum and median wall time and the child's CPU seconds (user + system, from
``RUSAGE_CHILDREN``), which other processes on the machine do not inflate the
way they inflate wall time.  The other processes' load during the measurement
is recorded too.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .servers import ROOT, cpu_sample

__all__ = ["COMMANDS", "command", "measure_startup"]

COMMANDS = {"--version": ["--version"], "--help": ["--help"], "copy --help": ["copy", "--help"]}


def command() -> list[str]:
    """How a user starts the tool from this environment."""
    script = Path(sys.executable).parent / "asyncmigrate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "asyncmigrate"]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure_startup(repeats: int = 10) -> dict[str, Any]:
    """Min and median wall and CPU seconds of each command, round-robin over ``repeats`` rounds."""
    base = command()
    walls: dict[str, list[float]] = {label: [] for label in COMMANDS}
    cpus: dict[str, list[float]] = {label: [] for label in COMMANDS}
    machine0, t0 = cpu_sample(), time.perf_counter()
    children0 = _children_cpu()
    for _ in range(repeats):
        for label, args in COMMANDS.items():
            cpu = _children_cpu()
            started = time.perf_counter()
            subprocess.run([*base, *args], cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
            walls[label].append(time.perf_counter() - started)
            cpus[label].append(_children_cpu() - cpu)
    wall, machine1 = time.perf_counter() - t0, cpu_sample()
    ours = _children_cpu() - children0
    out: dict[str, Any] = {
        "command": "asyncmigrate" if len(base) == 1 else "python -m asyncmigrate",
        "repeats": repeats,
        "others_cores": max(0.0, (machine1[1] - machine0[1]) - ours) / max(wall, 1e-9),
    }
    for label in COMMANDS:
        out[label] = {
            "wall_min": min(walls[label]),
            "wall_median": statistics.median(walls[label]),
            "cpu_min": min(cpus[label]),
            "cpu_median": statistics.median(cpus[label]),
        }
    return out
