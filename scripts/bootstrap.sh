#!/usr/bin/env bash
# Create the project venv (.venv) with asyncmigrate and its test tools, and
# install the harness's servers (glance, keystone + swift and glance 27 venvs, in
# parallel; Debian's qemu-utils and Ceph packages when missing). Nothing is started:
# the integration tests start what they need, demo.sh starts the pair.
# Sourced by demo.sh and test.sh.
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
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test,dev,docs,bench,fast]'
    touch "$STAMP"
fi
python3 harness/realglance.py install
export OS_CLIENT_CONFIG_FILE="$ROOT/.harness/clouds.yaml"
