"""Rows and named columns → a version's input arrays, shared by the MLflow and KServe V1 codecs.

Both protocols send tables rather than named tensors. A model with one 2-D input takes the rows
as they come, with columns put in the order of the features recorded at registration (the
reference profile) when the client names them. A model with several inputs takes one column per
input, matched by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slipway.errors import InvalidInput, PayloadTooLarge, SchemaMismatch
from slipway.registry.records import TensorSpec, VersionRecord
from slipway.runtimes.base import V2_TO_NUMPY
from slipway.serving.codec import check_finite, check_text, check_whole_rows


def feature_order(record: VersionRecord) -> list[str] | None:
    """Feature names in column order, when the version was registered with a reference profile."""
    if record.profile is None or len(record.signature.inputs) != 1:
        return None
    names = [feature.name for feature in record.profile.features]
    width = record.signature.inputs[0].shape[1:]
    if len(width) == 1 and width[0] not in (-1, len(names)):
        return None
    return names


def to_array(values: Any, spec: TensorSpec, what: str) -> np.ndarray:
    """``values`` (rows, or one column) as an array of the input's datatype. Values that do not
    fit it (text in a number, 1e39 in FP32), NaN and infinity are a 400, as on V2."""
    dtype = V2_TO_NUMPY.get(spec.datatype, np.dtype(np.float32))
    try:
        if dtype == np.dtype(object):
            array = np.array(
                [v.encode() if isinstance(v, str) else v for v in values], dtype=object
            )
        else:
            with np.errstate(over="raise"):  # 1e39 as FP32 is a client error, not inf
                array = np.array(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError, FloatingPointError) as exc:
        raise InvalidInput(
            f"{what} must hold {spec.datatype} values (numbers within its range) in rows of"
            " equal length"
        ) from exc
    check_finite(array, what)
    check_whole_rows(array, values, spec.datatype, what)
    check_text(array, what)
    return array


def check_rows(rows: int, max_rows: int, what: str) -> None:
    if rows == 0:
        raise InvalidInput(f"{what} is empty")
    if rows > max_rows:
        raise PayloadTooLarge(f"{what} ({rows} rows)", max_rows)


def rows_to_inputs(rows: list[Any], record: VersionRecord, *, what: str) -> dict[str, np.ndarray]:
    """A list of rows (lists of values, or dicts of column → value) → the version's inputs."""
    if isinstance(rows[0], dict):
        columns = list(rows[0])
        try:
            data = [[row[c] for c in columns] for row in rows]
        except KeyError as exc:
            raise InvalidInput(
                f"every row of {what} must have the same fields: missing {exc}"
            ) from exc
        except TypeError as exc:
            raise InvalidInput(
                f"every row of {what} must be an object of column → value, like the first"
            ) from exc
        for row in rows:  # a field only some rows have would be dropped without a word
            if len(row) != len(columns):
                extra = next(c for c in row if c not in rows[0])  # fewer fields: a KeyError
                raise InvalidInput(
                    f"every row of {what} must have the same fields: {extra!r} is not in the"
                    " first row"
                )
        return columns_to_inputs(columns, data, record, what=what)
    inputs = record.signature.inputs
    if len(inputs) != 1:
        raise SchemaMismatch(
            f"this model takes several inputs ({', '.join(s.name for s in inputs)}); name them:"
            " send rows as objects keyed by input name"
        )
    spec = inputs[0]
    array = to_array(rows, spec, what)
    if array.ndim != len(spec.shape):
        raise SchemaMismatch(
            f"{what} must be rows with shape {spec.shape[1:]} each; got an array of shape"
            f" {list(array.shape)}"
        )
    return {spec.name: array}


def columns_to_inputs(
    columns: list[str], data: list[list[Any]], record: VersionRecord, *, what: str
) -> dict[str, np.ndarray]:
    """Named columns with row-major ``data`` → the version's inputs.

    One 2-D input: the columns are its features, reordered to the registered feature order when
    every registered name is present. Several inputs: each column feeds the input of its name.
    """
    if len(set(columns)) != len(columns):
        raise InvalidInput(f"{what} names a column twice")
    if any(len(row) != len(columns) for row in data):
        raise InvalidInput(f"every row of {what} must have {len(columns)} values")
    inputs = record.signature.inputs
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        spec = inputs[0]
        order = feature_order(record)
        if order is not None and set(order) <= set(columns) and order != columns:
            index = [columns.index(name) for name in order]
            data = [[row[i] for i in index] for row in data]
        return {spec.name: to_array(data, spec, what)}
    by_name = {spec.name: spec for spec in inputs}
    missing = [name for name in by_name if name not in columns]
    if missing:
        raise SchemaMismatch(
            f"model expects columns [{', '.join(by_name)}], missing [{', '.join(missing)}]"
        )
    out: dict[str, np.ndarray] = {}
    for name, spec in by_name.items():
        i = columns.index(name)
        column = to_array([row[i] for row in data], spec, f"column {name!r}")
        if len(spec.shape) == 2 and column.ndim == 1:
            column = column.reshape(-1, 1)
        out[name] = column
    return out


def to_builtin(array: np.ndarray) -> list[Any]:
    """An output array as JSON-ready nested lists (bytes decoded as UTF-8)."""
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return list(array.tolist())
