#!/usr/bin/env bash
# Kubernetes' own streaming clients, for the tests of the CRI streaming server:
# tests/tools/criexec (client-go's SPDY remote command executor, what kubelet and
# kubectl run for exec) and tests/tools/criportforward (its port forwarder), built
# from Debian 13's Go toolchain and client-go sources unpacked into
# /opt/berth/go-trixie for the build and removed after. The binaries go to
# /opt/berth/bin; nothing is fetched or built again while their sources are unchanged.
set -euo pipefail
source "$(dirname "$0")/lib/trixie.sh"

PREFIX=${BERTH_TOOLS_PREFIX:-/opt/berth}
ROOT=$PREFIX/go-trixie
BIN=$PREFIX/bin
SRC=$(cd "$(dirname "$0")/.." && pwd)/tests/tools
TOOLS=(criexec criportforward)

sources=()
for tool in "${TOOLS[@]}"; do
    sources+=("$SRC/$tool/main.go")
done
stamp=$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)
if [ -x "$BIN/criexec" ] && [ -x "$BIN/criportforward" ] \
    && [ "$(cat "$BIN/cri-tools.sha256" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
go_binary() {
    ls -d "$ROOT"/usr/lib/go-1.*/bin/go 2>/dev/null | sort -V | tail -n 1
}
if [ -z "$(go_binary)" ] || [ ! -d "$ROOT/usr/share/gocode/src/k8s.io/client-go" ]; then
    trixie_unpack "$ROOT" golang-go golang-k8s-client-go-dev
fi
go=$(go_binary)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/out" "$BIN"
for tool in "${TOOLS[@]}"; do
    cp -r "$SRC/$tool" "$work/src/"
done
# Debian lays Go sources out for GOPATH builds: no module downloads, nothing from the net.
(cd "$work/src" && GO111MODULE=off GOPATH="$work:$ROOT/usr/share/gocode" \
    GOROOT="$(dirname "$(dirname "$go")")" GOCACHE="$work/cache" GOTOOLCHAIN=local \
    CGO_ENABLED=0 "$go" build -o "$work/out/" "${TOOLS[@]}")
for tool in "${TOOLS[@]}"; do
    mv "$work/out/$tool" "$BIN/$tool"
done
echo "$stamp" > "$BIN/cri-tools.sha256"
rm -f "$BIN/criexec.sha256"
echo "${TOOLS[*]} built with $("$go" version)"
# The binaries are static: the toolchain and sources (~600 MB) need not stay.
rm -rf "$ROOT"
