#!/usr/bin/env bash
# The README's quick start as one script: start the embedded suite (SQLite + a private
# NATS) in the background, import a busybox image built offline, run a container.
# BERTH_ROOT / BERTH_STATE move it away from /var/lib/berth and /run/berth.
set -euo pipefail

cd "$(dirname "$0")/.."
state=${BERTH_STATE:-/run/berth}
export CONTAINERD_ADDRESS=$state/berth.sock   # where ctr finds berth

.venv/bin/berthd --detach
scripts/busybox-image.sh "$state/busybox.tar"
ctr images import "$state/busybox.tar"
ctr run --rm localhost/berth/busybox:latest hello echo hello from berth
