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
.venv/bin/python -m pytest "$@"
