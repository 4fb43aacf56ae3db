"""berth: containerd, rebuilt in Python as a suite of gRPC services.

This package is the public Python API; ``shared`` and ``services`` are internal.
"""

from shared.errors import (
    AlreadyExists,
    BerthError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from shared.version import BERTH_VERSION as __version__

__all__ = [
    "AlreadyExists",
    "BerthError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
    "__version__",
]
