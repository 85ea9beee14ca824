#!/usr/bin/env bash
# The whole test suite: unit and fault tests against the in-process fake
# Glance, then integration tests against the real Glance pair (started here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
.venv/bin/python -m pytest "$@"
