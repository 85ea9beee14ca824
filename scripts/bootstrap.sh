#!/usr/bin/env bash
# Create the project venv (.venv) with asyncmigrate and its test tools, and
# start the real Glance pair on 127.0.0.1 (harness/realglance.py installs
# glance into its own venv the first time). Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
STAMP=.venv/.asyncmigrate-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test,dev,bench,fast]'
    touch "$STAMP"
fi
python3 harness/realglance.py start ${HARNESS_START_FLAGS:---s3}
export OS_CLIENT_CONFIG_FILE="$ROOT/.harness/clouds.yaml"
