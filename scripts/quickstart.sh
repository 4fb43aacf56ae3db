#!/usr/bin/env bash
# The README's quick start as one script: start the embedded suite (SQLite + a private
# NATS) in the background, import a busybox image built offline, run a container with
# the berth command. BERTH_ROOT / BERTH_STATE move it away from /var/lib/berth and
# /run/berth.
set -euo pipefail

cd "$(dirname "$0")/.."
state=${BERTH_STATE:-/run/berth}
export PATH=$PWD/.venv/bin:$PATH
export BERTH_ADDRESS=$state/berth.sock         # where berth finds the suite
export CONTAINERD_ADDRESS=$state/berth.sock    # and ctr, which works too

berthd --detach
scripts/busybox-image.sh "$state/busybox.tar"
berth images import "$state/busybox.tar"
berth run --rm localhost/berth/busybox:latest hello echo hello from berth
