"""An OCI Distribution client for pull and push, with containerd's resolver semantics.

Every operation parses the reference strictly (:func:`~shared.registry.reference.parse`:
a host is required; normalize docker-style names first), reads the host
configuration afresh (``hosts.toml`` edits need no restart) and tries the
endpoints that have the capability the operation needs, in order:

* ``resolve``: RESOLVE for a tag, PULL for a digest; a 404 or a failure moves
  on to the next endpoint, and the first non-404 error is raised if none
  answers (all 404: NotFound).
* ``fetch_manifest``/``fetch_blob``: PULL, the same way.
* push: the first endpoint with PUSH only, as containerd.

A request to an endpoint that is not the reference's own registry (a mirror)
carries ``?ns=<registry host>``. The client is safe to share between threads
(parallel layer downloads); :meth:`RegistryClient.close` closes its pools.
"""

from __future__ import annotations

from shared.registry.pull import Puller
from shared.registry.push import Pusher
from shared.registry.session import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    PushResult,
    digest_of,
    verify_digest,
)

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_MANIFEST",
    "PushResult",
    "RegistryClient",
    "digest_of",
    "verify_digest",
]


class RegistryClient(Puller, Pusher):
    """resolve / fetch_manifest / fetch_blob (:class:`~shared.registry.pull.Puller`) and
    blob_exists / push_blob / push_manifest (:class:`~shared.registry.push.Pusher`)."""
