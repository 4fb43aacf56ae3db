"""HTTP answers and transport failures of a registry as berth errors: the one mapping.

=====================================  ==================================================
registry says                          berth raises
=====================================  ==================================================
404                                    NotFound ("<what> not found in <registry>")
401 (after one authorization retry)    Unauthenticated (naming the registry)
403                                    PermissionDenied
400, 422 (+ the registry's errors)     InvalidArgument ("<code>: <message>")
405, 501                               Unimplemented (e.g. push to a read-only mirror)
416                                    OutOfRange
408, 429, 5xx (after retries)          Unavailable
any other status                       FailedPrecondition
connection error, timeout, TLS         Unavailable (after retries)
=====================================  ==================================================

The body of a distribution-spec error (``{"errors": [{"code", "message",
"detail"}]}``) is quoted in the message; a body that is not that JSON is
quoted as text, shortened.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from shared.errors import (
    BerthError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_ERROR_BODY = 16 << 10


def error_body(response: httpx.Response) -> bytes:
    """At most MAX_ERROR_BODY bytes of the body, whether or not it was streamed."""
    try:
        if not response.is_stream_consumed:
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= MAX_ERROR_BODY:
                    break
            return data[:MAX_ERROR_BODY]
        return response.content[:MAX_ERROR_BODY]
    except httpx.HTTPError:
        return b""
    finally:
        response.close()


def describe_errors(body: bytes) -> str:
    """``"MANIFEST_UNKNOWN: manifest unknown"`` from a registry error body, else its text."""
    try:
        doc: Any = json.loads(body)
        errors = doc["errors"]
        parts = []
        for e in errors:
            text = f"{e.get('code', 'UNKNOWN')}: {e.get('message', '')}".rstrip(": ")
            if e.get("detail"):
                text += f" ({json.dumps(e['detail'], separators=(',', ':'))[:200]})"
            parts.append(text)
        if parts:
            return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:200] + ("..." if len(text) > 200 else "")


def error_for(response: httpx.Response, what: str, registry: str) -> BerthError:
    """The error for a failed answer about ``what`` (e.g. "manifest x:latest") from ``registry``."""
    status = response.status_code
    detail = describe_errors(error_body(response))
    said = f" (registry said: {detail})" if detail else ""
    if status == 404:
        return NotFound(f"{what} not found in {registry}{said}")
    if status == 401:
        return Unauthenticated(f"{registry} wants authentication for {what}{said}")
    if status == 403:
        return PermissionDenied(f"{registry} denied access to {what}{said}")
    if status in (400, 422):
        return InvalidArgument(f"{registry} rejected {what}: HTTP {status}{said}")
    if status in (405, 501):
        return Unimplemented(f"{registry} does not support this request for {what}{said}")
    if status == 416:
        return OutOfRange(f"{registry}: range not satisfiable for {what}{said}")
    if status in RETRY_STATUSES or status >= 500:
        return Unavailable(f"{registry} is unavailable for {what}: HTTP {status}{said}")
    return FailedPrecondition(f"{registry}: unexpected HTTP {status} for {what}{said}")


def transport_error(error: httpx.HTTPError, what: str, registry: str) -> BerthError:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    if cert_error(error):
        kind = "failed TLS verification"
    return Unavailable(f"{registry}: {what} {kind}: {error or type(error).__name__}")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def cert_error(error: BaseException) -> bool:
    """The server's certificate was refused: retrying will not help."""
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(error))


def plain_http_answer(error: BaseException) -> bool:
    """A TLS handshake failed because the server is not speaking TLS (containerd's
    isTLSError: the "record header" was ``HTTP/``), so plain http may work."""
    return isinstance(error, httpx.ConnectError) and any(
        isinstance(e, ssl.SSLError) and getattr(e, "reason", None) in _NOT_TLS
        for e in _chain(error)
    )


# OpenSSL's reasons for a first "record" that is not TLS (e.g. "HTTP/1.1 400 ...").
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)
