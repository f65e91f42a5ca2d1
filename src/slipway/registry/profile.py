"""The reference profile: per-feature distributions of the training data and of the outputs.

Drift monitoring compares live windows with this profile, so its conventions are the contract:

* Numeric columns (int, uint, float dtypes) give a ``NumericProfile``. Missing values — NaN and
  ±inf — are left out of every statistic: ``count`` is the number of finite values, so a
  column's missing count is ``Profile.rows - count``. ``std`` is the population standard
  deviation (ddof=0). ``quantiles`` are at 0, 0.1, ..., 1.0 (numpy's linear interpolation).
* Histogram bins follow ``numpy.histogram``: bin ``i`` counts ``edges[i] <= v < edges[i+1]``,
  the last bin also counts ``v == edges[-1]``. The edges are the column's quantiles at
  ``bins + 1`` evenly spaced levels, deduplicated. When a column has at most ``bins`` distinct
  values, each value gets its own bin instead: the edges are the sorted distinct values with
  the largest repeated, so the last bin is ``[max, max]`` (a constant column has one such bin).
  A column with no finite values has zeros for its statistics and no quantiles or bins.
* Bool, string, bytes and object columns give a ``CategoricalProfile``: ``frequencies`` of the
  ``MAX_CATEGORIES`` most frequent values (``str`` of the value; bytes decoded as UTF-8), the
  rest summed under ``OTHER``. ``None`` and float NaN are missing: not counted in ``count``.

Features given as one 2-D array are named ``x0``, ``x1``, ...; a 2-D array in a dict becomes
columns ``name[0]``, ``name[1]``, ... (as registration names outputs). ``feature_names``, when
given, replaces these names in column order.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from slipway.errors import InvalidInput
from slipway.registry.records import CategoricalProfile, FeatureProfile, NumericProfile, Profile

MAX_CATEGORIES = 100
OTHER = "__other__"
# linspace, not [i / 10]: the same levels as the histogram edges, so with bins=10 the edges
# equal the quantiles bit for bit (0.7 != 7 / 10 in linspace's arithmetic).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 11)


def build_profile(
    features: np.ndarray | dict[str, np.ndarray],
    *,
    feature_names: list[str] | None = None,
    predictions: dict[str, np.ndarray] | None = None,
    bins: int = 10,
) -> Profile:
    """Profile the training rows ``features`` (and the model's ``predictions`` on them).

    ``features`` is a ``[rows, columns]`` array (or one column as a 1-D array) named by
    ``feature_names``, or a dict of columns. Raises ``InvalidInput`` when names and columns
    disagree, columns differ in length, or a column has a dtype that cannot be profiled.
    """
    if bins < 1:
        raise InvalidInput(f"bins must be at least 1, got {bins}")
    if isinstance(features, dict):
        columns = _dict_columns(features)
        if feature_names is not None:
            if len(feature_names) != len(columns):
                raise InvalidInput(
                    f"{len(feature_names)} feature names given for {len(columns)} feature columns"
                )
            columns = [
                (name, values) for name, (_, values) in zip(feature_names, columns, strict=True)
            ]
    else:
        columns = _array_columns(np.asarray(features), feature_names)
    rows = _rows(columns, "features")
    outputs = _dict_columns(predictions) if predictions else []
    if outputs and _rows(outputs, "predictions") != rows:
        raise InvalidInput(f"predictions must have one value per feature row ({rows})")
    return Profile(
        rows=rows,
        features=[profile_column(name, values, bins=bins) for name, values in columns],
        predictions=[profile_column(name, values, bins=bins) for name, values in outputs],
    )


def profile_column(name: str, values: np.ndarray, *, bins: int = 10) -> FeatureProfile:
    """Profile one 1-D column: numeric or categorical by its dtype (see the module docstring)."""
    values = np.asarray(values)
    kind = values.dtype.kind
    if kind in "iuf":
        return _numeric(name, values, bins)
    if kind in "bOSU":
        return _categorical(name, values)
    raise InvalidInput(f"feature {name!r} has dtype {values.dtype}, which cannot be profiled")


def _array_columns(array: np.ndarray, names: list[str] | None) -> list[tuple[str, np.ndarray]]:
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise InvalidInput(
            f"features must be a [rows, columns] array; got shape {list(array.shape)}"
        )
    if names is None:
        names = [f"x{i}" for i in range(array.shape[1])]
    elif len(names) != array.shape[1]:
        raise InvalidInput(f"{len(names)} feature names given for {array.shape[1]} feature columns")
    return [(name, array[:, i]) for i, name in enumerate(names)]


def _dict_columns(columns: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    for name, values in columns.items():
        array = np.asarray(values)
        if array.ndim == 1:
            out.append((name, array))
        elif array.ndim == 2:
            out.extend((f"{name}[{i}]", array[:, i]) for i in range(array.shape[1]))
        else:
            raise InvalidInput(
                f"{name!r} must be 1-D or 2-D to be profiled; got shape {list(array.shape)}"
            )
    return out


def _rows(columns: list[tuple[str, np.ndarray]], what: str) -> int:
    lengths = {len(values) for _, values in columns}
    if len(lengths) > 1:
        raise InvalidInput(f"all {what} columns must have the same length; got {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _numeric(name: str, values: np.ndarray, bins: int) -> NumericProfile:
    data = values.astype(np.float64, copy=False)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return NumericProfile(
            name=name, count=0, mean=0.0, std=0.0, min=0.0, max=0.0,
            quantiles=[], edges=[], counts=[],
        )  # fmt: skip
    quantiles = np.quantile(data, QUANTILE_LEVELS)
    if bins == 10:
        edges = np.unique(quantiles)
    else:
        edges = np.unique(np.quantile(data, np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) <= bins:
        # Few distinct edges usually means few distinct values (binary flags, small integer
        # codes): give each value its own bin so its share can drift on its own.
        distinct = np.unique(data)
        if len(distinct) <= bins:
            edges = np.append(distinct, distinct[-1])
    counts, _ = np.histogram(data, bins=edges)
    return NumericProfile(
        name=name,
        count=int(data.size),
        mean=float(data.mean()),
        std=float(data.std()),
        min=float(data.min()),
        max=float(data.max()),
        quantiles=[float(q) for q in quantiles],
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
    )


def _category(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _categorical(name: str, values: np.ndarray) -> CategoricalProfile:
    counter: Counter[str] = Counter()
    counter.update(key for key in map(_category, values.tolist()) if key is not None)
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    frequencies = dict(ranked[:MAX_CATEGORIES])
    rest = sum(n for _, n in ranked[MAX_CATEGORIES:])
    if rest:
        frequencies[OTHER] = frequencies.get(OTHER, 0) + rest
    return CategoricalProfile(name=name, count=sum(counter.values()), frequencies=frequencies)
