"""The snapshots service: snapshotters (overlayfs, native, btrfs, proxies) and the differ."""
