"""The router: which version of a deployment serves a request.

Pure functions over plain values. A request has a *position* in [0, 1): a stable hash of its
routing key (so one user always lands on the same arm) or a random draw. The candidate serves
positions below its weight; rules on request headers or fields override the split.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from slipway.registry.records import DeploymentRecord, TrafficPolicy

_SCALE = float(1 << 64)


def position_of(key: str, salt: int | str = "") -> float:
    """A stable position in [0, 1) for routing key ``key``; ``salt`` (the rollout id) makes
    each experiment assign users independently of the last one."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose_version(
    deployment: DeploymentRecord,
    position: float = 0.0,
    headers: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> int:
    """The version number that serves a request at ``position`` with ``headers`` (lower-case
    names) and request ``fields``. Without a traffic policy or candidate, the stable version
    serves everything."""
    policy = deployment.traffic
    if policy is None or policy.candidate is None:
        return deployment.version
    if (headers or fields) and policy.rules:
        for rule in policy.rules:
            if rule.header is not None:
                value = headers.get(rule.header) if headers else None
            else:
                value = fields.get(rule.field) if fields and rule.field else None
            if value == rule.equals:
                return policy.candidate if rule.arm == "candidate" else deployment.version
    if position * 100.0 < policy.weight:
        return policy.candidate
    return deployment.version


def versions_to_load(deployment: DeploymentRecord) -> list[int]:
    """Versions a replica keeps loaded for ``deployment`` beyond its stable and previous ones:
    the rollout's candidate and shadow, so every switch is to a warm model."""
    policy = deployment.traffic
    if policy is None:
        return []
    return [v for v in (policy.candidate, policy.shadow) if v is not None]


def field_names(policy: TrafficPolicy) -> frozenset[str]:
    """The request fields ``policy`` routes on (empty: routing needs no look at the body)."""
    names = {rule.field for rule in policy.rules if rule.field}
    if policy.routing_field:
        names.add(policy.routing_field)
    return frozenset(names)


@functools.lru_cache(maxsize=64)
def _fields_type(names: frozenset[str]) -> type[Any]:
    # A struct of just these keys: msgspec skips the rest of the body (the tensors) unparsed.
    fields = [(name, Any, None) for name in sorted(names)]
    return msgspec.defstruct("RequestFields", [*fields, ("parameters", Any, None)])


def request_fields(body: bytes, names: frozenset[str]) -> dict[str, str]:
    """The values of the fields ``names`` in a JSON request body: top-level keys, else keys of
    V2 ``parameters``; strings as they are, numbers and booleans as JSON text. A body that is
    not a JSON object, or one nested too deeply to decode, gives no fields (its own decoding
    reports the error)."""
    try:
        found = msgspec.json.decode(body, type=_fields_type(names))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return {}
    parameters = found.parameters if isinstance(found.parameters, dict) else {}
    out: dict[str, str] = {}
    for name in names:
        value = getattr(found, name)
        if value is None:
            value = parameters.get(name)
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool | int | float):
            out[name] = msgspec.json.encode(value).decode()
    return out
