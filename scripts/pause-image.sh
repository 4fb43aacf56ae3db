#!/usr/bin/env bash
# Builds the pod sandbox ("pause") image offline from Debian's static catatonit, whose
# pause mode (-P) does what Kubernetes' pause does: hold the pod's namespaces, reap,
# and exit on SIGTERM or SIGINT. Named as the CRI service's default sandbox_image, so
# importing it into the k8s.io namespace is all an offline node needs:
#
#   scripts/pause-image.sh OUT.tar && ctr -n k8s.io images import OUT.tar
set -euo pipefail
source "$(dirname "$0")/lib/oci-archive.sh"

out=${1:?usage: $0 OUT.tar}
name=${BERTH_IMAGE_NAME:-registry.k8s.io/pause:3.8}
catatonit=/usr/bin/catatonit
[[ -x $catatonit ]] || { echo "catatonit is not installed (scripts/install.sh)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"
cp "$catatonit" "$root/pause"
chmod 0755 "$root/pause"

oci_archive "$root" "$name" '{"User":"65535:65535","Entrypoint":["/pause","-P"]}' "$out"
