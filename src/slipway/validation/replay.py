"""Stage 5, shadow replay: recorded production requests through the candidate and the
production version side by side, compared with the rollout's shadow comparison."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from slipway.errors import InvalidInput
from slipway.registry.records import Signature
from slipway.registry.store import SqlStore
from slipway.rollout.shadow import compare_outputs
from slipway.runtimes.base import V2_TO_NUMPY
from slipway.validation.checks import Check, at_least, at_most
from slipway.validation.policy import ShadowPolicy
from slipway.validation.wire import decode_predict, decode_v2, is_v2, v2_body


def requests_from_file(path: Path, limit: int) -> list[Any]:
    """Request bodies from a JSON-lines file, one V2 or ``/predict`` body per line."""
    out = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    out.append(msgspec.json.decode(line))
                except msgspec.DecodeError as exc:
                    raise InvalidInput(f"{path}:{number} is not JSON: {exc}") from None
                if len(out) >= limit:
                    break
    except OSError as exc:
        raise InvalidInput(f"cannot read the shadow requests {path}: {exc.strerror}") from None
    return out


def requests_from_audit(
    store: SqlStore, deployment: str, limit: int, signature: Signature
) -> list[Any]:
    """Request bodies rebuilt from ``deployment``'s successful prediction records that keep the
    full payload (its inference policy's ``payload: full``, ``redact`` or ``sample``), the
    newest ``limit``. ``/predict`` records hold the body; V2 records hold the decoded inputs
    by name, sent again as V2 requests in the signature's datatypes."""
    from slipway.governance.audit import iter_records

    found: list[Any] = []
    names = {s.name: s for s in signature.inputs}
    records: Iterator[Any] = iter_records(store, deployment=deployment, kind="prediction")
    for record in records:
        body = record.data.get("input")
        if not isinstance(body, dict) or record.data.get("outcome") != "ok":
            continue
        if "instances" in body or is_v2(body):
            found.append(body)
        elif set(body) == set(names):
            found.append(
                msgspec.json.decode(
                    v2_body(
                        {
                            name: np.asarray(value, dtype=V2_TO_NUMPY[names[name].datatype])
                            for name, value in body.items()
                        }
                    )
                )
            )
    return found[-limit:]


def _named_for(body: Any, name: str | None) -> Any:
    """``body`` with its one V2 input renamed to ``name`` (as it is otherwise)."""
    if name is None or not is_v2(body) or len(body["inputs"]) != 1:
        return body
    (tensor,) = body["inputs"]
    if tensor.get("name") == name:
        return body
    return {**body, "inputs": [{**tensor, "name": name}]}


def replay(
    client: httpx.Client,
    requests: list[Any],
    *,
    candidate: str,
    production: str,
    output_names: list[str],
    policy: ShadowPolicy,
    sole_inputs: dict[str, str] | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """Send each request to both deployments; checks and the data for the report's plots.
    ``sole_inputs``: the input name of each deployment whose version has exactly one; a V2
    request with one input reaches such a deployment under that name (two versions may name
    the same input differently, "input" and "X")."""
    rows = agree = errors = 0
    diffs: list[float] = []
    deltas_ms: list[float] = []
    for body in requests:
        answers: list[tuple[dict[str, np.ndarray], float] | None] = []
        for deployment in (production, candidate):
            encoded = msgspec.json.encode(_named_for(body, (sole_inputs or {}).get(deployment)))
            url = f"/v2/models/{deployment}/infer" if is_v2(body) else f"/predict/{deployment}"
            started = time.perf_counter()
            response = client.post(
                url, content=encoded, headers={"content-type": "application/json"}
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                answers.append(None)
                continue
            outputs = (
                decode_v2(response.content)
                if is_v2(body)
                else decode_predict(response.content, output_names)
            )
            answers.append((outputs, elapsed))
        if answers[0] is None or answers[1] is None:
            errors += 1
            continue
        (ours, t_prod), (theirs, t_cand) = answers[0], answers[1]
        class_rows, same, delta = compare_outputs(ours, theirs)
        rows += class_rows
        agree += same
        diffs.extend(delta)
        deltas_ms.append((t_cand - t_prod) * 1000.0)
    if not requests:
        return [Check("requests replayed", 0, "> 0", "fail", "no recorded requests to replay")], {}
    diff_array = np.asarray(diffs or [0.0])
    delta_array = np.asarray(deltas_ms or [0.0])
    if rows:
        agreement = at_least(
            "agreement", agree / rows, policy.min_agreement, f"{agree} of {rows} rows same class"
        )
    else:  # a regressor answers scores only: agreeing on 0 rows is no evidence either way
        agreement = Check(
            "agreement", None, "", "info", "no class outputs to compare; the scores decide"
        )
    checks = [
        at_most("request errors", errors, 0, f"{errors} of {len(requests)} requests failed"),
        agreement,
        at_most("mean score difference", float(diff_array.mean()), policy.max_mean_diff),
        at_most(
            "p99 latency delta ms",
            float(np.percentile(delta_array, 99)),
            policy.max_p99_latency_delta_ms,
            "candidate minus production, per request",
        ),
    ]
    data = {
        "diffs": [round(float(v), 6) for v in diff_array[:2000]],
        "latency_deltas_ms": [round(float(v), 3) for v in delta_array[:2000]],
        "requests": len(requests),
    }
    return checks, data
