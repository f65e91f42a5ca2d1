"""Names of models and deployments, and ``model@version`` references.

Names end up in URLs, file names, Kubernetes objects and log lines, so they are kept to a small,
boring alphabet: 1-64 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or digit, and
never containing ``..``.
"""

from __future__ import annotations

import re

from slipway.errors import InvalidInput, InvalidName

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
MAX_VERSION = 2**31 - 1  # versions.number is a 32-bit integer column
MAX_ID = 2**31 - 1  # row ids (promotion requests, tokens) are 32-bit integer columns too
MAX_REQUEST_ID = 128  # the request_id columns (audit records, served requests, feedback)


def check_name(kind: str, name: str) -> str:
    """Return ``name`` unchanged if it is a valid ``kind`` name ("model", "deployment"), else raise
    :class:`~slipway.errors.InvalidName`."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or ".." in name:
        raise InvalidName(kind, name if isinstance(name, str) else repr(name))
    return name


def check_version(number: object) -> int:
    """Return ``number`` if it is a version number (1 to ``MAX_VERSION``), else raise
    :class:`~slipway.errors.InvalidInput`: a larger one cannot exist, and the database would
    refuse to compare against it (an overflow, not an answer)."""
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_VERSION:
        raise InvalidInput(
            f"version must be a whole number from 1 to {MAX_VERSION}, got {number!r}"
        )
    return number


def storable_request_id(request_id: str) -> str:
    """A client's request id as every backend can store it: NUL, which PostgreSQL text cannot
    hold, becomes U+FFFD, and the id is cut to ``MAX_REQUEST_ID`` characters. Writers and
    lookups of request ids both go through this, so the id a client sent finds its records."""
    return request_id.replace("\x00", "\ufffd")[:MAX_REQUEST_ID]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split ``"churn@3"`` into ``("churn", 3)``; ``"churn"`` and ``"churn@latest"`` give
    ``("churn", None)``, meaning the latest version.

    Raises :class:`~slipway.errors.InvalidName` for a bad model name and
    :class:`~slipway.errors.InvalidInput` for anything else that is not a reference.
    """
    if not isinstance(ref, str):
        raise InvalidInput(f"model reference must be a string like 'churn@3', got {ref!r}")
    model, sep, version = ref.partition("@")
    check_name("model", model)
    if not sep or version == "latest":
        return model, None
    if _NUMBER.fullmatch(version) is None or int(version) > MAX_VERSION:
        raise InvalidInput(
            f"invalid model reference {ref!r}: write MODEL, MODEL@latest or MODEL@N"
            " with N a version number from 1"
        )
    return model, int(version)
