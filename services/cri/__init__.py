"""The CRI service: Kubernetes' ``runtime.v1`` ImageService and RuntimeService.

Like containerd's CRI plugin, it is a client of the rest of the suite: it pulls,
lists and removes images (and will run pods) through berth's own client library
in containerd's ``k8s.io`` namespace, so that ``ctr -n k8s.io`` sees what kubelet
made. Core modules (``images``) know nothing of gRPC; ``servicers`` maps them
onto the wire.
"""
