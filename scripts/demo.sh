#!/usr/bin/env bash
# The demo: install everything, start a source and a destination Glance on
# 127.0.0.1, seed a few demo images on the source, copy them all (same ids),
# and show the summary; a second copy shows that nothing is redone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
python3 harness/seed.py demo
echo "--- plan (dry run) ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst --dry-run
echo "--- copy ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst --concurrency 4 --report .harness/demo-report.json
echo "--- copy again (idempotent: everything is skipped) ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst --quiet
echo "report: .harness/demo-report.json"
