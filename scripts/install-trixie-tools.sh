#!/usr/bin/env bash
# criu and crun from Debian 13 (trixie), unpacked with their own libraries into
# /opt/berth/trixie and run through trixie's own loader, without touching the
# system's packages. Measured here: Debian 12's criu 3.17 cannot parse this
# kernel's vDSO and its crun 1.8 rejects this hybrid cgroup layout, while
# trixie's criu 4.1.1 and crun 1.21 work. Wrappers go to /opt/berth/bin.
set -euo pipefail
source "$(dirname "$0")/lib/trixie.sh"

PREFIX=${BERTH_TOOLS_PREFIX:-/opt/berth}
ROOT=$PREFIX/trixie
BIN=$PREFIX/bin
PACKAGES=(criu crun)

unpacked() {
    [ -x "$ROOT/usr/sbin/criu" ] && [ -x "$ROOT/usr/bin/crun" ]
}

if ! unpacked; then
    trixie_unpack "$ROOT" "${PACKAGES[@]}"
fi

mkdir -p "$BIN"
libs="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu"
loader=
for candidate in "$ROOT"/usr/lib64/ld-linux-*.so.* "$ROOT"/usr/lib/*/ld-linux-*.so.*; do
    if [ -e "$candidate" ]; then
        loader=$candidate
        break
    fi
done
[ -n "$loader" ] || { echo "install-trixie-tools.sh: no loader in $ROOT" >&2; exit 1; }
cat > "$BIN/criu.new" <<WRAP
#!/bin/sh
# Debian trixie's criu with its own libraries (scripts/install-trixie-tools.sh).
exec "$loader" --library-path "$libs" "$ROOT/usr/sbin/criu" "\$@"
WRAP
# crun refuses a v1/v2 hybrid host whose v2 hierarchy has controllers (here: hugetlb).
# In a mount namespace without that hierarchy it sees a v1 host and manages v1 cgroups.
cat > "$BIN/crun.new" <<WRAP
#!/bin/sh
# Debian trixie's crun with its own libraries (scripts/install-trixie-tools.sh).
if [ -z "\$BERTH_CRUN_PRIVATE_NS" ] && [ -n "\$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
    BERTH_CRUN_PRIVATE_NS=1 exec unshare --mount --propagation private \\
        sh -c 'umount -l /sys/fs/cgroup/unified && exec "\$0" "\$@"' "\$0" "\$@"
fi
exec "$loader" --library-path "$libs" "$ROOT/usr/bin/crun" "\$@"
WRAP
chmod 755 "$BIN/criu.new" "$BIN/crun.new"
mv "$BIN/criu.new" "$BIN/criu"
mv "$BIN/crun.new" "$BIN/crun"
"$BIN/criu" --version | head -n 1
"$BIN/crun" --version | head -n 1
