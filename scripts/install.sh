#!/usr/bin/env bash
# Install everything berth needs on a fresh Debian 12/13 or Ubuntu machine, as root:
# system packages (runc, crun, criu, CNI plugins, nginx, registry and image tools,
# containerd for its ctr client), the Python virtual environment in .venv, and
# the generated gRPC stubs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs system packages)" >&2
    exit 1
fi

packages=(
    # runtime
    runc crun criu catatonit containernetworking-plugins iptables iproute2 btrfs-progs
    # the gateway routes with nginx's grpc_pass
    nginx-light
    # tests: a local OCI registry, image tools, busybox for test images, the real ctr
    docker-registry skopeo umoci busybox-static containerd
    # test image builder and helpers
    tar gzip zstd pigz openssl util-linux procps
    # Python
    python3 python3-venv python3-dev gcc
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Debian packages try to start their daemons; berth starts its own copies.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# criu and crun that work on this kernel and cgroup layout (Debian 13's, privately).
./scripts/install-trixie-tools.sh
# For the tests: Kubernetes' remote-command client (client-go), built from Debian 13.
./scripts/install-test-clients.sh

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: berth needs Python 3.11 or newer ($python is $("$python" --version))" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/python -m shared.api.generate
echo "berth installed: .venv ready; start the suite with: .venv/bin/berthd"
