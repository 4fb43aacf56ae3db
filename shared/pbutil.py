"""Small conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def nanos(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.ToNanoseconds())
