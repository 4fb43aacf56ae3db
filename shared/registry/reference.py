"""Image references: containerd's strict ``host/path[:tag][@digest]`` and docker's short names.

Two readings of one grammar (distribution's ``reference`` regular expressions):

* :func:`parse` is what ``ctr`` accepts: the first ``/``-separated component is
  always the registry host, so ``alpine`` and ``alpine:3.19`` are rejected
  (there is no host to talk to) and ``docker.io/alpine`` means the repository
  ``alpine``, not ``library/alpine``. Tag and digest are optional here; the
  registry client asks for one when it needs it (containerd's "object required").
* :func:`normalize` is what docker, the CRI and nerdctl accept: the first
  component is a host only if it contains ``.`` or ``:`` or is ``localhost``;
  otherwise the host is ``docker.io``, a single-component name gets ``library/``,
  and a name without tag or digest gets ``:latest``. Its result always parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.content import parse_digest
from shared.errors import InvalidArgument

DOCKER_HOST = "docker.io"
LEGACY_DOCKER_HOST = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255  # host + "/" + repository, as distribution's NameTotalLengthMax

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?\Z"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_HEX_IDENTIFIER = re.compile(r"[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    host: str  # registry host as written, with its port: "127.0.0.1:5000", "docker.io"
    repository: str  # path inside the registry: "library/alpine"
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``host/repository``: what containerd calls the locator."""
        return f"{self.host}/{self.repository}"

    @property
    def object(self) -> str:
        """The manifest to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse(ref: str) -> Reference:
    """Split a fully qualified reference, validating every part; InvalidArgument if bad."""
    return _parse(ref, ref)


def _parse(ref: str, shown: str) -> Reference:
    """``shown`` is what the caller wrote, named in errors (normalize expands it first)."""
    if not ref or ref != ref.strip() or any(c.isspace() or ord(c) < 0x20 for c in ref):
        raise InvalidArgument(f"invalid reference {shown!r}: empty or contains whitespace")
    if "://" in ref:
        raise InvalidArgument(f"invalid reference {shown!r}: must not contain a URL scheme")
    rest, _, digest = ref.partition("@")
    if digest:
        try:
            parse_digest(digest)
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid reference {shown!r}: {e}") from None
    elif ref.endswith("@"):
        raise InvalidArgument(f"invalid reference {shown!r}: empty digest after '@'")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidArgument(
                f"invalid reference {shown!r}: tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]"
                "{0,127}"
            )
    host, slash, repository = name.partition("/")
    if not slash:
        raise InvalidArgument(
            f"invalid reference {shown!r}: no registry host (want host/repository[:tag], "
            f"e.g. docker.io/library/{name or 'alpine'}:latest)"
        )
    if not _HOST.match(host):
        raise InvalidArgument(f"invalid reference {shown!r}: {host!r} is not a valid registry host")
    _check_repository(shown, repository)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"invalid reference {shown[:64]!r}...: name longer than {MAX_NAME_LENGTH} characters"
        )
    return Reference(host, repository, tag, digest)


def _check_repository(shown: str, repository: str) -> None:
    if _REPOSITORY.match(repository):
        return
    if repository.lower() != repository and _REPOSITORY.match(repository.lower()):
        raise InvalidArgument(f"invalid reference {shown!r}: repository name must be lowercase")
    raise InvalidArgument(
        f"invalid reference {shown!r}: repository {repository!r} must be '/'-separated components "
        "of lowercase letters and digits joined by '.', '_', '__' or '-'"
    )


def normalize(name: str) -> str:
    """The fully qualified form of a docker-style name: ``alpine`` ->
    ``docker.io/library/alpine:latest`` (docker's ParseNormalizedNamed + TagNameOnly)."""
    if not name:
        raise InvalidArgument("invalid reference '': empty")
    if _HEX_IDENTIFIER.match(name):
        raise InvalidArgument(
            f"invalid reference {name!r}: a 64-character hex string is an image ID, not a name"
        )
    first, slash, remainder = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        host, remainder = DOCKER_HOST, name
    else:
        host = first
    if host == LEGACY_DOCKER_HOST:
        host = DOCKER_HOST
    if host == DOCKER_HOST and "/" not in remainder.partition("@")[0].partition(":")[0]:
        remainder = OFFICIAL_PREFIX + remainder
    reference = _parse(f"{host}/{remainder}", name)
    if not reference.tag and not reference.digest:
        reference = Reference(reference.host, reference.repository, DEFAULT_TAG)
    return str(reference)
