#!/usr/bin/env bash
# The whole test suite: lint, format and type checks, then unit and fault tests
# against the in-process fake Glance, then integration tests against the real
# servers (started by the tests' fixtures); the guide must build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict asyncmigrate
.venv/bin/mkdocs build --strict --quiet   # the operator's guide: a broken link or page fails
# Two workers (this machine has two cores), each real-server half on a harness of its own
# (tests/conftest.py); '-n 0' runs serially.
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
