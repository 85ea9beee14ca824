#!/usr/bin/env bash
# The demo: install everything, start a source and a destination Glance on
# 127.0.0.1 (the destination with a real Swift store behind a real Keystone and
# RBD stores on a one-node Ceph), seed demo images on the source, copy them all
# (same ids), copy again (nothing is redone), then retire the destination's file
# store twice over: one half of the images moves into Swift, the other into RBD.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The demo's journals live with the harness whose clouds they describe, and start empty: a harness
# started afresh (as the tests do) is another cloud at the same address, and the pair's record of
# an earlier demo would rightly refuse it (exit 2).
export XDG_STATE_HOME="$ROOT/.harness/demo-state"
rm -rf "$XDG_STATE_HOME"
python3 harness/realglance.py start ${HARNESS_START_FLAGS:---s3 --swift --ceph}
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
MOVE=(move --cloud harness-dst --from-store main --to-store swift --name 'demo-*-swift-*')
echo "--- plan the store move file -> swift ---"
$AM plan "${MOVE[@]}"
echo "--- move with copy-image (glance_store 5.7.0 cannot do it for images Swift segments: reported) ---"
$AM "${MOVE[@]}" --report .harness/demo-move-report.json || echo "(exit $?: the images above the segment size are still in main, as reported)"
echo "--- move the rest through the tool (--method location: the upload declares no size) ---"
$AM "${MOVE[@]}" --method location --report .harness/demo-move-location-report.json
echo "--- move again (idempotent: everything is already in swift) ---"
$AM "${MOVE[@]}" --quiet

# The same story on Ceph, as most clouds keep their images: the other half moves from "main" into RBD.
RBD=(move --cloud harness-dst --from-store main --to-store ceph --name 'demo-*-ceph-*')
echo "--- plan the store move file -> rbd ---"
$AM plan "${RBD[@]}"
echo "--- move with copy-image (RBD takes every size; each image becomes POOL/ID with snapshot 'snap') ---"
$AM "${RBD[@]}" --report .harness/demo-move-rbd-report.json
echo "--- in Ceph: the pool's RBD images, and the snapshot Nova and Cinder would clone ---"
source .harness/env.sh  # CEPH_CONF: the rbd CLI finds the harness's cluster
POOL=$(python3 -c 'import json; print(json.load(open(".harness/env.json"))["ceph"]["rbd"]["dst"]["ceph"])')
rbd ls -l "$POOL"
echo "--- a copy of them into a Ceph-backed cloud: the not-raw-on-rbd warnings, the clones' fresh start ---"
$AM plan copy --src-cloud harness-dst --dst-cloud harness-rbd --name 'demo-*-ceph-*'
echo "reports: .harness/demo-report.json .harness/demo-move-report.json .harness/demo-move-location-report.json .harness/demo-move-rbd-report.json"
