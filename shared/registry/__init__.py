"""An OCI Distribution client (pull and push) with containerd's host configuration.

* :mod:`~shared.registry.reference` - ``parse`` (strict, as ctr) and ``normalize`` (docker names);
* :mod:`~shared.registry.hosts` - ``certs.d/<host>/hosts.toml`` -> ordered ``RegistryHost`` list;
* :mod:`~shared.registry.auth` - docker ``config.json`` credentials, Bearer/Basic challenges;
* :mod:`~shared.registry.client` - ``RegistryClient``: resolve, fetch, push (thread-safe);
* :mod:`~shared.registry.status` - the one mapping of HTTP answers to berth errors.
"""

from shared.registry.auth import (
    Authorizer,
    Challenge,
    Credentials,
    DockerConfig,
    default_docker_config,
    parse_challenges,
)
from shared.registry.client import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    PushResult,
    RegistryClient,
    digest_of,
    verify_digest,
)
from shared.registry.hosts import (
    ALL_CAPABILITIES,
    Capability,
    RegistryHost,
    host_dir,
    is_localhost,
    registry_hosts,
)
from shared.registry.reference import Reference, normalize, parse

__all__ = [
    "ALL_CAPABILITIES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Authorizer",
    "Capability",
    "Challenge",
    "Credentials",
    "DockerConfig",
    "PushResult",
    "Reference",
    "RegistryClient",
    "RegistryHost",
    "default_docker_config",
    "digest_of",
    "host_dir",
    "is_localhost",
    "normalize",
    "parse",
    "parse_challenges",
    "registry_hosts",
    "verify_digest",
]
