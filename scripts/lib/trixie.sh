# Sourced by the install scripts: Debian 13 (trixie) packages with every library and
# file they need, unpacked into a private root without touching the system's packages.
#
#   trixie_unpack ROOT PACKAGE...

trixie_unpack() {
    local root=$1 work
    shift
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc"
    echo "deb http://deb.debian.org/debian trixie main" > "$work/etc/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$work/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
        -o APT::Sandbox::User=root
    )
    apt-get "${apt_opts[@]}" -q update >/dev/null
    # The packages and everything they depend on, all from trixie (libc and loader included).
    local closure
    mapfile -t closure < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends \
        --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends \
        "$@" | grep -v '^ ' | grep -v '<' | sort -u)
    (cd "$work/cache/archives" && apt-get "${apt_opts[@]}" -q download "${closure[@]}" >/dev/null)
    rm -rf "$root.new"
    mkdir -p "$root.new"
    local deb
    for deb in "$work"/cache/archives/*.deb; do
        dpkg-deb -x "$deb" "$root.new"
    done
    rm -rf "$root" "$work"
    mv "$root.new" "$root"
}
