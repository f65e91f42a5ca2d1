"""Stage 1, contract and unit checks: the holdout fits the version's signature, the model and
the bundle's hooks answer fixture requests with well-formed results, NaN/Inf and out-of-range
inputs are handled as the policy declares."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slipway.errors import InvalidInput
from slipway.registry.records import NumericProfile, Profile, Signature
from slipway.runtimes.base import V2_TO_NUMPY
from slipway.validation.checks import Check, at_most, truth
from slipway.validation.holdout import Holdout
from slipway.validation.policy import ContractPolicy

Arrays = dict[str, np.ndarray]
Predict = Callable[[Arrays], Arrays]

FIXTURE_ROWS = 8


def input_widths(signature: Signature, columns: int) -> list[int] | None:
    """How many holdout columns each input takes, in signature order: a 1-D input (``[-1]``)
    one, a ``[-1, k]`` input ``k``; one input of unknown width takes what the others leave.
    None when the columns cannot be split that way."""
    widths: list[int | None] = []
    for spec in signature.inputs:
        if len(spec.shape) == 1:
            widths.append(1)
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            widths.append(spec.shape[1])
        elif len(spec.shape) == 2:
            widths.append(None)
        else:
            return None  # images, sequences: not a table
    known = sum(w for w in widths if w is not None)
    unknown = widths.count(None)
    if unknown > 1 or known > columns or (unknown == 0 and known != columns):
        return None
    return [columns - known if w is None else w for w in widths]


def model_inputs(signature: Signature, features: np.ndarray) -> Arrays:
    """Holdout rows as the version's inputs, in their datatypes: the columns, in order, are
    split over the inputs in signature order (see :func:`input_widths`)."""
    widths = input_widths(signature, features.shape[1])
    if widths is None:
        shapes = ", ".join(f"{s.name} {s.shape}" for s in signature.inputs)
        raise InvalidInput(
            f"the holdout's {features.shape[1]} feature columns do not split over the model's"
            f" inputs ({shapes}); give one column per value, inputs in signature order"
        )
    out: Arrays = {}
    at = 0
    for spec, width in zip(signature.inputs, widths, strict=True):
        part = features[:, at : at + width]
        at += width
        if len(spec.shape) == 1:
            part = part[:, 0]
        out[spec.name] = part.astype(V2_TO_NUMPY[spec.datatype])
    return out


def holdout_fits(signature: Signature, holdout: Holdout) -> bool:
    """Whether the holdout's columns split over the signature's inputs and parse as their
    datatypes: the later stages can only run when they do."""
    if input_widths(signature, len(holdout.columns)) is None:
        return False
    return not (_numeric(signature) and holdout.non_numeric)


def _numeric(signature: Signature) -> bool:
    return all(s.datatype != "BYTES" for s in signature.inputs)


def check_contract(
    signature: Signature,
    profile: Profile | None,
    holdout: Holdout,
    policy: ContractPolicy,
    predict: Predict,
    *,
    preprocess: Callable[[Arrays], Arrays] | None = None,
    postprocess: Callable[[Arrays], Arrays] | None = None,
) -> list[Check]:
    """The contract checks; ``predict`` runs the model directly (no HTTP, no hooks)."""
    checks = []
    n = len(holdout.columns)
    widths = input_widths(signature, n)
    checks.append(
        truth(
            "columns match the signature",
            widths is not None,
            f"holdout has {n} feature columns; the signature's inputs are "
            + ", ".join(f"{s.name} {s.shape}" for s in signature.inputs),
            value=n,
        )
    )
    numeric = _numeric(signature)
    datatypes = ", ".join(sorted({s.datatype for s in signature.inputs}))
    checks.append(
        truth(
            "dtypes match the signature",
            not (numeric and holdout.non_numeric),
            "text in numeric columns: " + ", ".join(holdout.non_numeric[:8])
            if holdout.non_numeric
            else f"every column parses as {datatypes}",
        )
    )
    if any(c.verdict != "pass" for c in checks):
        return checks
    features = holdout.features
    bad_rows = ~np.all(np.isfinite(features), axis=1)
    count = int(bad_rows.sum())
    if not policy.allow_nan:
        checks.append(
            at_most(
                "rows with NaN/Inf",
                count,
                0,
                "the policy does not allow NaN/Inf inputs (contract.allow_nan: false)",
            )
        )
    elif count:
        outputs = predict(model_inputs(signature, features[bad_rows][:FIXTURE_ROWS]))
        checks.append(
            truth(
                "NaN/Inf rows answered with finite outputs",
                all(_finite(a) for a in outputs.values()),
                f"{count} holdout rows hold NaN/Inf",
                value=count,
            )
        )
    checks.append(_out_of_range(profile, holdout, policy))
    fixture = model_inputs(signature, features[~bad_rows][:FIXTURE_ROWS])
    rows = next(iter(fixture.values())).shape[0]
    if rows:
        checks.append(_well_formed("model answers fixture rows", predict(fixture), signature, rows))
    if preprocess is not None:
        prepared = preprocess(fixture)
        names = sorted(s.name for s in signature.inputs)
        checks.append(
            truth(
                "preprocess returns the signature's inputs",
                sorted(prepared) == names and all(a.shape[0] == rows for a in prepared.values()),
                f"returned {sorted(prepared)}, signature wants {names}",
            )
        )
        fixture = prepared
    if postprocess is not None and rows:
        outputs = postprocess(predict(fixture))
        checks.append(
            truth(
                "postprocess returns one row per request row",
                bool(outputs) and all(a.ndim >= 1 and a.shape[0] == rows for a in outputs.values()),
                "shapes: " + ", ".join(f"{k}{list(a.shape)}" for k, a in outputs.items()),
            )
        )
    return checks


def _well_formed(name: str, outputs: Arrays, signature: Signature, rows: int) -> Check:
    problems = []
    for spec in signature.outputs:
        array = outputs.get(spec.name)
        if array is None:
            problems.append(f"{spec.name} missing")
        elif array.shape[0] != rows:
            problems.append(f"{spec.name} has {array.shape[0]} rows for {rows}")
        elif not _finite(array):
            problems.append(f"{spec.name} holds NaN/Inf")
    return truth(name, not problems, "; ".join(problems) or f"{rows} rows, every output finite")


def _out_of_range(profile: Profile | None, holdout: Holdout, policy: ContractPolicy) -> Check:
    numeric = [f for f in (profile.features if profile else []) if isinstance(f, NumericProfile)]
    if len(numeric) != len(holdout.columns):
        return Check(
            "values outside the training range",
            None,
            "",
            "info",
            "the version has no reference profile of matching width; not checked",
        )
    low = np.array([f.min for f in numeric])
    high = np.array([f.max for f in numeric])
    values = holdout.features
    finite = np.isfinite(values)
    outside = finite & ((values < low) | (values > high))
    fraction = float(outside.sum() / max(int(finite.sum()), 1))
    return at_most(
        "values outside the training range",
        fraction,
        policy.max_out_of_range,
        "fraction of holdout values beyond the reference profile's min/max",
    )


def _finite(array: np.ndarray) -> bool:
    return array.dtype.kind not in "fc" or bool(np.all(np.isfinite(array)))
