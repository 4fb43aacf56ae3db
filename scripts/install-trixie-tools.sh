#!/usr/bin/env bash
# criu and crun from Debian 13 (trixie), unpacked with their own libraries into
# /opt/berth/trixie and run through trixie's own loader, without touching the
# system's packages. Measured here: Debian 12's criu 3.17 cannot parse this
# kernel's vDSO and its crun 1.8 rejects this hybrid cgroup layout, while
# trixie's criu 4.1.1 and crun 1.21 work. Wrappers go to /opt/berth/bin.
set -euo pipefail

PREFIX=${BERTH_TOOLS_PREFIX:-/opt/berth}
ROOT=$PREFIX/trixie
BIN=$PREFIX/bin
PACKAGES=(criu crun)

unpacked() {
    [ -x "$ROOT/usr/sbin/criu" ] && [ -x "$ROOT/usr/bin/crun" ]
}

if ! unpacked; then
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc"
echo "deb http://deb.debian.org/debian trixie main" > "$work/etc/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$work/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -q update >/dev/null
# The packages and every library they need, all from trixie (its libc and loader included).
mapfile -t closure < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends "${PACKAGES[@]}" \
    | grep -v '^ ' | grep -v '<' | sort -u)
(cd "$work/cache/archives" && apt-get "${apt_opts[@]}" -q download "${closure[@]}" >/dev/null)

rm -rf "$ROOT.new"
mkdir -p "$ROOT.new"
for deb in "$work"/cache/archives/*.deb; do
    dpkg-deb -x "$deb" "$ROOT.new"
done
rm -rf "$ROOT"
mv "$ROOT.new" "$ROOT"
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
