"""Validation of names that appear in API paths and keys (containerd's identifiers).

Namespaces, container IDs, lease IDs and topic components share one grammar:
alphanumerics joined by single separators from ``._-``, at most 76 characters.
"""

from __future__ import annotations

import re

from shared.errors import InvalidArgument

MAX_LENGTH = 76
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")


def validate(value: str, *, what: str = "identifier") -> str:
    """Return ``value`` unchanged if it is a valid identifier, else raise InvalidArgument."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > MAX_LENGTH:
        raise InvalidArgument(
            f"{what} {value[:MAX_LENGTH]!r}...: longer than {MAX_LENGTH} characters"
        )
    if not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{what} {value!r}: must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*")
    return value


def validate_topic(topic: str) -> str:
    """Event topics are ``/``-separated identifiers with a leading ``/``."""
    if not topic.startswith("/"):
        raise InvalidArgument(f"topic {topic!r}: must start with '/'")
    parts = topic[1:].split("/")
    for part in parts:
        validate(part, what=f"topic {topic!r} component")
    return topic
