#!/usr/bin/env bash
# Kubernetes' own remote-command client, for the tests of the CRI streaming server:
# tests/tools/criexec built against client-go's SPDY executor (what kubelet and kubectl
# run), from Debian 13's Go toolchain and client-go sources unpacked into
# /opt/berth/go-trixie. The binary goes to /opt/berth/bin/criexec; nothing is built
# again while its source is unchanged.
set -euo pipefail
source "$(dirname "$0")/lib/trixie.sh"

PREFIX=${BERTH_TOOLS_PREFIX:-/opt/berth}
ROOT=$PREFIX/go-trixie
BIN=$PREFIX/bin
SRC=$(cd "$(dirname "$0")/.." && pwd)/tests/tools/criexec

stamp=$(sha256sum "$SRC/main.go" | cut -d' ' -f1)
if [ -x "$BIN/criexec" ] && [ "$(cat "$BIN/criexec.sha256" 2>/dev/null)" = "$stamp" ]; then
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
mkdir -p "$work/src/criexec" "$BIN"
cp "$SRC/main.go" "$work/src/criexec/"
# Debian lays Go sources out for GOPATH builds: no module downloads, nothing from the net.
(cd "$work/src/criexec" && GO111MODULE=off GOPATH="$work:$ROOT/usr/share/gocode" \
    GOROOT="$(dirname "$(dirname "$go")")" GOCACHE="$work/cache" GOTOOLCHAIN=local \
    CGO_ENABLED=0 "$go" build -o "$BIN/criexec.new" .)
mv "$BIN/criexec.new" "$BIN/criexec"
echo "$stamp" > "$BIN/criexec.sha256"
echo "criexec built with $("$go" version)"
