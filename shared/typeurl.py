"""``google.protobuf.Any`` the way containerd writes it.

containerd's type URL for a protobuf message is its bare full name
(``containerd.events.TaskExit``), without the ``type.googleapis.com/`` prefix
that protobuf's ``Any.Pack`` adds; non-protobuf types (the OCI spec) carry
JSON under a registered URL. Decoding accepts either form for messages, as
Go's registry does: only the last path segment names the message.
"""

from __future__ import annotations

import json
from typing import Any as AnyValue
from typing import TypeVar

from google.protobuf import any_pb2, descriptor_pool, message, message_factory

from shared.errors import InvalidArgument, NotFound

OCI_SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
OCI_PROCESS = "types.containerd.io/opencontainers/runtime-spec/1/Process"
OCI_LINUX_RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

M = TypeVar("M", bound=message.Message)


def pack(msg: message.Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def pack_json(type_url: str, value: AnyValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(value).encode())


def unpack_json(any_value: any_pb2.Any, type_url: str) -> AnyValue:
    if any_value.type_url != type_url:
        raise InvalidArgument(f"expected {type_url}, got {any_value.type_url or 'nothing'}")
    try:
        return json.loads(any_value.value)
    except ValueError as e:
        raise InvalidArgument(f"{type_url}: invalid JSON: {e}") from e


def message_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def message_class(type_url: str) -> type[message.Message]:
    """The generated class for ``type_url``; its module must have been imported."""
    name = message_name(type_url)
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        raise NotFound(f"type {type_url!r} is not registered") from None
    return message_factory.GetMessageClass(descriptor)


def unpack(any_value: any_pb2.Any) -> message.Message:
    msg = message_class(any_value.type_url)()
    try:
        msg.ParseFromString(any_value.value)
    except message.DecodeError as e:
        raise InvalidArgument(f"{any_value.type_url}: cannot decode: {e}") from e
    return msg


def unpack_as(any_value: any_pb2.Any, cls: type[M]) -> M:
    if message_name(any_value.type_url) != cls.DESCRIPTOR.full_name:
        raise InvalidArgument(
            f"expected {cls.DESCRIPTOR.full_name}, got {any_value.type_url or 'nothing'}"
        )
    msg = cls()
    try:
        msg.ParseFromString(any_value.value)
    except message.DecodeError as e:
        raise InvalidArgument(f"{any_value.type_url}: cannot decode: {e}") from e
    return msg
