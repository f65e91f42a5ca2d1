"""Stage 3, integration: the holdout through the real HTTP path (V2 and ``/predict``) of a
server with the candidate deployed, answers compared row for row with the runtime's own."""

from __future__ import annotations

import httpx
import numpy as np

from slipway.validation.checks import Check, truth
from slipway.validation.wire import Arrays, decode_predict, decode_v2, predict_body, v2_body


def check_integration(
    client: httpx.Client,
    deployment: str,
    inputs: Arrays,
    expected: Arrays,
    *,
    batch: int,
    tolerance: float,
) -> list[Check]:
    """Send ``inputs`` in batches of ``batch`` rows to both routes; every output the model
    declares (the keys of ``expected``, the runtime's direct answer) must come back unchanged
    for every row. Hooks may add outputs, never alter the model's."""
    rows = next(iter(expected.values())).shape[0]
    names = list(expected)
    checks = []
    # /predict takes rows for a single input; V2 carries every tensor of a multi-input model.
    routes = ["v2", "predict"] if len(inputs) == 1 else ["v2"]
    for route in routes:
        mismatched: set[int] = set()
        problems: list[str] = []
        for start in range(0, rows, batch):
            part = {k: v[start : start + batch] for k, v in inputs.items()}
            if route == "v2":
                url, body = f"/v2/models/{deployment}/infer", v2_body(part)
            else:
                url, body = f"/predict/{deployment}", predict_body(next(iter(part.values())))
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            if response.status_code != 200:
                problems.append(f"HTTP {response.status_code}: {response.text[:200]}")
                mismatched.update(range(start, min(start + batch, rows)))
                continue
            served = (
                decode_v2(response.content)
                if route == "v2"
                else decode_predict(response.content, names)
            )
            for name in names:
                want = expected[name][start : start + batch]
                got = served.get(name)
                bad = _mismatched_rows(want, got, tolerance)
                if bad is None:
                    problems.append(f"{name} missing or of the wrong shape")
                    mismatched.update(range(start, start + len(want)))
                else:
                    mismatched.update(start + i for i in bad)
        checks.append(
            truth(
                f"{route} answers equal the runtime's",
                not mismatched and not problems,
                "; ".join(dict.fromkeys(problems))
                or (f"{len(mismatched)} of {rows} rows differ" if mismatched else f"{rows} rows"),
                value=rows - len(mismatched),
            )
        )
    if len(inputs) > 1:
        checks.append(
            Check(
                "predict answers equal the runtime's",
                None,
                "",
                "info",
                "not applicable: /predict serves single-input models; checked over V2",
            )
        )
    return checks


def _mismatched_rows(
    want: np.ndarray, got: np.ndarray | None, tolerance: float
) -> list[int] | None:
    if got is None or got.shape[0] != want.shape[0] or got.size != want.size:
        return None
    got = got.reshape(want.shape)
    if want.dtype.kind == "f":
        a, b = want.astype(np.float64), got.astype(np.float64)
        close = np.isclose(a, b, rtol=0.0, atol=tolerance, equal_nan=True)
    else:
        close = want.astype(str) == got.astype(str) if want.dtype.kind in "OSU" else want == got
    same = close.reshape(close.shape[0], -1).all(axis=1)
    return [int(i) for i in np.flatnonzero(~same)]
