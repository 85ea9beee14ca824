#!/usr/bin/env bash
# The demo: install everything, start a source and a destination Glance on
# 127.0.0.1 (the destination with a real Swift store behind a real Keystone),
# seed a few demo images on the source, copy them all (same ids), copy again
# (nothing is redone), then retire the destination's file store into Swift.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
python3 harness/realglance.py start ${HARNESS_START_FLAGS:---s3 --swift}
python3 harness/seed.py demo
AM=.venv/bin/asyncmigrate
# Only the demo images: the pair may also hold what the integration tests left behind.
DEMO=(--name 'demo-*')
echo "--- plan (dry run) ---"
$AM copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --dry-run
echo "--- copy ---"
$AM copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --concurrency 4 --report .harness/demo-report.json
echo "--- copy again (idempotent: everything is skipped) ---"
$AM copy --src-cloud harness-src --dst-cloud harness-dst "${DEMO[@]}" --quiet

# The seed's story: the destination's images sit on the file store "main"; move them to Swift.
MOVE=(move --cloud harness-dst --from-store main --to-store swift "${DEMO[@]}")
echo "--- plan the store move file -> swift ---"
$AM plan "${MOVE[@]}"
echo "--- move with copy-image (glance_store 5.7.0 cannot do it for images Swift segments: reported) ---"
$AM "${MOVE[@]}" --report .harness/demo-move-report.json || echo "(exit $?: the images above the segment size are still in main, as reported)"
echo "--- move the rest through the tool (--method location: the upload declares no size) ---"
$AM "${MOVE[@]}" --method location --report .harness/demo-move-location-report.json
echo "--- move again (idempotent: everything is already in swift) ---"
$AM "${MOVE[@]}" --quiet
echo "reports: .harness/demo-report.json .harness/demo-move-report.json .harness/demo-move-location-report.json"
