# Sourced by the image scripts: one-layer OCI image archives, built offline and
# reproducibly (sorted names, fixed owners and times, no gzip timestamp).
#
#   oci_archive ROOTFS_DIR NAME CONFIG_JSON OUT.tar
#
# CONFIG_JSON is the image config's "config" object ({"Cmd":["sh"]} ...); `ctr images
# import` (or `berth images import`) names the image NAME.

oci_archive() {
    local root=$1 name=$2 config=$3 out=$4 work
    work=$(mktemp -d)
    mkdir -p "$work/oci/blobs/sha256"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$root" -cf "$work/layer.tar" .
    local diff_id
    diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    gzip -n -9 "$work/layer.tar"

    _blob() {  # file -> "digest size", stored under blobs/
        local digest size
        digest=$(sha256sum "$1" | cut -d' ' -f1)
        size=$(stat -c %s "$1")
        mv "$1" "$work/oci/blobs/sha256/$digest"
        echo "$digest $size"
    }

    local layer_digest layer_size config_digest config_size manifest_digest manifest_size arch
    read -r layer_digest layer_size < <(_blob "$work/layer.tar.gz")
    arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
    case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$arch" "$config" "$diff_id" >"$work/config.json"
    read -r config_digest config_size < <(_blob "$work/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
    read -r manifest_digest manifest_size < <(_blob "$work/manifest.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"platform":{"architecture":"%s","os":"linux"}}]}' \
        "$manifest_digest" "$manifest_size" "$name" "${name##*:}" "$arch" >"$work/oci/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"

    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/oci" -cf "$out" .
    rm -rf "$work"
    echo "$name $out"
}
