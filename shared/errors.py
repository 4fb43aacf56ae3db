"""berth's error classes: one small closed hierarchy, free of any transport.

Core code raises these; exactly one module (``shared.rpc.status``) knows how
they map to gRPC status codes and back, as containerd's errdefs does::

    BerthError
    ├── InvalidArgument      bad input from the caller
    ├── NotFound             the named object does not exist
    ├── AlreadyExists        an object with that name/digest exists already
    ├── FailedPrecondition   the system is not in the state the call needs
    │   └── Conflict         the object changed or is busy (e.g. a ref locked by another writer)
    ├── OutOfRange           an offset or size past the valid range
    ├── Unavailable          a peer service or resource cannot be reached right now
    ├── ResourceExhausted    out of disk, memory, or a quota
    ├── PermissionDenied     the caller may not do this
    ├── Unauthenticated      a registry or peer wants credentials
    ├── Unimplemented       this berth does not provide the operation
    ├── Aborted              a concurrent change aborted the operation; retry
    ├── Canceled             the caller went away
    ├── DeadlineExceeded     it took longer than allowed
    ├── DataLoss             stored data is corrupt (e.g. a blob that fails its digest)
    └── Internal             a bug or an invariant broken inside berth

Raise with context ("content sha256:ab..: not found") and chain with ``from``.
"""

from __future__ import annotations

__all__ = [
    "Aborted",
    "AlreadyExists",
    "BerthError",
    "Canceled",
    "Conflict",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class BerthError(Exception):
    """Base of every error berth raises on purpose."""


class InvalidArgument(BerthError):
    pass


class NotFound(BerthError):
    pass


class AlreadyExists(BerthError):
    pass


class FailedPrecondition(BerthError):
    pass


class Conflict(FailedPrecondition):
    pass


class OutOfRange(BerthError):
    pass


class Unavailable(BerthError):
    pass


class ResourceExhausted(BerthError):
    pass


class PermissionDenied(BerthError):
    pass


class Unauthenticated(BerthError):
    pass


class Unimplemented(BerthError):
    pass


class Aborted(BerthError):
    pass


class Canceled(BerthError):
    pass


class DeadlineExceeded(BerthError):
    pass


class DataLoss(BerthError):
    pass


class Internal(BerthError):
    pass
