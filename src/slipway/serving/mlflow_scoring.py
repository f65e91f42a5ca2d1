"""MLflow's pyfunc scoring protocol: the bodies ``mlflow models serve`` accepts, and its answer.

JSON bodies hold exactly one of ``dataframe_split`` (``{"columns", "data"}``, optional
``index``), ``dataframe_records`` (a list of objects), ``instances`` or ``inputs`` (rows, or an
object of input name → rows), plus optional ``params`` (accepted, not used). ``text/csv`` bodies
have a header row. The answer is ``{"predictions": ...}``: the first output's rows, or an object
of every output when the request named its inputs (``{"inputs": {...}}``) and the model has
several outputs, as MLflow does for tensor models.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import msgspec
import numpy as np

from slipway.errors import InvalidInput, UnsupportedFormat
from slipway.registry.records import VersionRecord
from slipway.serving.codec import TOO_DEEP, refuse_pickle
from slipway.serving.tabular import (
    check_rows,
    columns_to_inputs,
    rows_to_inputs,
    to_array,
    to_builtin,
)

_FIELDS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


@dataclasses.dataclass(frozen=True)
class ScoringRequest:
    """A decoded scoring body: the version's inputs, and whether all outputs should be named."""

    inputs: dict[str, np.ndarray]
    named_outputs: bool = False


def decode_scoring_request(
    body: bytes, content_type: str, record: VersionRecord, *, max_rows: int
) -> ScoringRequest:
    """An MLflow scoring body (JSON or CSV) → the version's input arrays."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        return ScoringRequest(_decode_csv(body, record, max_rows=max_rows))
    if kind not in ("application/json", ""):
        raise UnsupportedFormat(
            f"content type {kind!r} is not accepted; send application/json or text/csv"
        )
    try:
        payload = _decoder.decode(body)
    except RecursionError:
        raise InvalidInput(TOO_DEEP) from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        refuse_pickle(body)
        raise InvalidInput(f"request body is not a JSON object: {exc}") from exc
    present = [key for key in _FIELDS if key in payload]
    if len(present) != 1:
        raise InvalidInput(
            "the body must hold exactly one of "
            + ", ".join(_FIELDS)
            + (f"; got {', '.join(present)}" if present else "")
        )
    field = present[0]
    value = payload[field]
    if field == "dataframe_split":
        return ScoringRequest(_decode_split(value, record, max_rows=max_rows))
    if field == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
            raise InvalidInput("dataframe_records must be a list of objects")
        check_rows(len(value), max_rows, field)
        return ScoringRequest(rows_to_inputs(value, record, what=field))
    if isinstance(value, dict):
        return ScoringRequest(_decode_named(value, record, field, max_rows=max_rows), True)
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of rows or an object of input → rows")
    check_rows(len(value), max_rows, field)
    return ScoringRequest(rows_to_inputs(value, record, what=field))


def _decode_split(value: Any, record: VersionRecord, *, max_rows: int) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InvalidInput('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    data = value["data"]
    check_rows(len(data), max_rows, "dataframe_split")
    if not all(isinstance(row, list) for row in data):
        raise InvalidInput("dataframe_split data must be a list of rows")
    columns = value.get("columns")
    if columns is None:
        return rows_to_inputs(data, record, what="dataframe_split")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput("dataframe_split columns must be a list of names")
    return columns_to_inputs(columns, data, record, what="dataframe_split")


def _decode_named(
    value: dict[str, Any], record: VersionRecord, field: str, *, max_rows: int
) -> dict[str, np.ndarray]:
    specs = {spec.name: spec for spec in record.signature.inputs}
    unknown = [name for name in value if name not in specs]
    if unknown:
        raise InvalidInput(
            f"{field} names unknown input(s) {', '.join(unknown)}; model inputs: {', '.join(specs)}"
        )
    out: dict[str, np.ndarray] = {}
    for name, rows in value.items():
        if not isinstance(rows, list):
            raise InvalidInput(f"{field}[{name!r}] must be a list of rows")
        check_rows(len(rows), max_rows, f"{field}[{name!r}]")
        out[name] = to_array(rows, specs[name], f"{field}[{name!r}]")
    return out


def _decode_csv(body: bytes, record: VersionRecord, *, max_rows: int) -> dict[str, np.ndarray]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the CSV body is not UTF-8") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise InvalidInput("the CSV body has no header row")
    data: list[list[Any]] = []
    try:
        for row in reader:
            if not row:
                continue
            if len(data) >= max_rows:
                check_rows(max_rows + 1, max_rows, "the CSV body")
            data.append([_csv_value(v) for v in row])
    except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a stray NUL, ...
        raise InvalidInput(f"the CSV body is malformed: {exc}") from None
    check_rows(len(data), max_rows, "the CSV body")
    return columns_to_inputs([h.strip() for h in header], data, record, what="the CSV body")


_CSV_BOOLEANS = {"true": True, "false": False}


def _csv_value(text: str) -> Any:
    # Numbers as numbers (whole ones as int, for integer inputs), true/false as booleans (for
    # BOOL inputs, as pandas reads them); anything else stays text.
    try:
        number = float(text)
    except ValueError:
        return _CSV_BOOLEANS.get(text.strip().lower(), text)
    return int(number) if number.is_integer() and text.strip().lstrip("+-").isdigit() else number


def encode_scoring_response(outputs: dict[str, np.ndarray], *, named: bool) -> bytes:
    """``{"predictions": ...}``: the first output, or every output by name when ``named``."""
    if named and len(outputs) > 1:
        return _encoder.encode(
            {"predictions": {name: to_builtin(value) for name, value in outputs.items()}}
        )
    first = next(iter(outputs.values()))
    return _encoder.encode({"predictions": to_builtin(first)})
