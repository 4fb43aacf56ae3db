from __future__ import annotations

import grpc
import pytest

from shared import errors, identifiers
from shared.rpc.status import code_for, to_native


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
        (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
        (errors.BerthError, grpc.StatusCode.UNKNOWN),
        (ValueError, grpc.StatusCode.UNKNOWN),
    ],
)
def test_error_codes_round_trip(error: type[Exception], code: grpc.StatusCode) -> None:
    assert code_for(error("x")) == code
    native = to_native(FakeRpcError(code, "what happened"))
    assert str(native) == "what happened"
    if error is not errors.Conflict and issubclass(error, errors.BerthError):
        assert type(native) is error


def test_every_error_class_has_a_code() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is not errors.BerthError:
            assert code_for(cls("x")) != grpc.StatusCode.UNKNOWN, name


@pytest.mark.parametrize("good", ["default", "k8s.io", "a-b_c.d", "x" * 76, "A9"])
def test_valid_identifiers(good: str) -> None:
    assert identifiers.validate(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "a-", "a..b", "a/b", "x" * 77, "ü", "a b"])
def test_invalid_identifiers(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        identifiers.validate(bad)


def test_topics() -> None:
    assert identifiers.validate_topic("/tasks/exit") == "/tasks/exit"
    for bad in ("tasks/exit", "/tasks//exit", "/", "/tasks/ex it"):
        with pytest.raises(errors.InvalidArgument):
            identifiers.validate_topic(bad)
