"""The one place that knows both berth's error classes and gRPC status codes.

``code_for`` maps an error to the status a server answers with;
``to_native`` maps a failed call back to an error, as containerd's
``errgrpc.ToGRPC`` / ``ToNative`` do.
"""

from __future__ import annotations

import grpc

from shared import errors

# Most specific first: Conflict before FailedPrecondition.
_CODES: tuple[tuple[type[errors.BerthError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Canceled, grpc.StatusCode.CANCELLED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
    (errors.Internal, grpc.StatusCode.INTERNAL),
)

# Back from a code, the general class: FAILED_PRECONDITION is FailedPrecondition, not Conflict.
_ERRORS: dict[grpc.StatusCode, type[errors.BerthError]] = {
    code: cls for cls, code in _CODES if cls.__bases__ == (errors.BerthError,)
}


def code_for(error: BaseException) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def to_native(error: grpc.RpcError) -> errors.BerthError:
    """The berth error for a failed call; UNKNOWN and unmapped codes give BerthError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _ERRORS.get(code, errors.BerthError)
    native = cls(details or code.name.lower())
    native.__cause__ = error
    return native
