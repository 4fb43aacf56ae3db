#!/usr/bin/env bash
# Builds a one-layer busybox OCI image archive from Debian's busybox-static, offline.
# `ctr images import` (or `berth images import`) names it localhost/berth/busybox:latest.
#
#   scripts/busybox-image.sh OUT.tar
set -euo pipefail
source "$(dirname "$0")/lib/oci-archive.sh"

out=${1:?usage: $0 OUT.tar}
name=${BERTH_IMAGE_NAME:-localhost/berth/busybox:latest}
busybox=/bin/busybox  # from busybox-static: it must run without the host's libraries
[[ -x $busybox ]] || { echo "busybox-static is not installed (scripts/install.sh)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

oci_archive "$root" "$name" \
    '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}' "$out"
