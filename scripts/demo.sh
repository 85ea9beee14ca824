#!/usr/bin/env bash
# The demo: install everything, start a source and a destination Glance on
# 127.0.0.1, seed a few demo images on the source, copy them all (same ids),
# and show the summary; a second copy shows that nothing is redone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
python3 harness/realglance.py start ${HARNESS_START_FLAGS:---s3}
python3 harness/seed.py demo
# Only the demo images: the pair may also hold what the integration tests left behind.
DEMO=(--name 'demo-*')
echo "--- plan (dry run) ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --dry-run
echo "--- copy ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --concurrency 4 --report .harness/demo-report.json
echo "--- copy again (idempotent: everything is skipped) ---"
.venv/bin/asyncmigrate copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --quiet
echo "report: .harness/demo-report.json"
