#!/usr/bin/env bash
# The benchmark suite (README "Performance"): fake Glance in its own process, then the real pair.
#   bash scripts/bench.sh            # full run, about 10 minutes on a quiet 2-core machine
#   bash scripts/bench.sh --quick    # smoke run, about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[bench]'
exec .venv/bin/python -m benchmarks "$@"
