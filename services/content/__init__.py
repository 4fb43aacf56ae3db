"""The content service: containerd's content store as its own process."""
