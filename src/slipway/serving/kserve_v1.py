"""KServe's V1 prediction protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

``instances`` (or ``inputs``, which KServe accepts too) holds rows: lists of values, or objects
of column → value. Predictions are the model's first output, one entry per row, as KServe's
scikit-learn and XGBoost servers answer.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from slipway.errors import InvalidInput
from slipway.registry.records import VersionRecord
from slipway.serving.codec import TOO_DEEP, refuse_pickle
from slipway.serving.tabular import check_rows, rows_to_inputs, to_builtin

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def decode_v1_request(
    body: bytes, record: VersionRecord, *, max_rows: int
) -> dict[str, np.ndarray]:
    """A V1 predict body → the version's input arrays."""
    try:
        payload = _decoder.decode(body)
    except RecursionError:
        raise InvalidInput(TOO_DEEP) from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        refuse_pickle(body)
        raise InvalidInput(f'expected a JSON object {{"instances": [...]}}: {exc}') from exc
    field = "instances" if "instances" in payload else "inputs"
    rows = payload.get(field)
    if not isinstance(rows, list):
        raise InvalidInput(f'expected {{"{field}": [...]}}: a list of rows')
    check_rows(len(rows), max_rows, field)
    return rows_to_inputs(rows, record, what=field)


def encode_v1_response(outputs: dict[str, np.ndarray]) -> bytes:
    """``{"predictions": [...]}`` from the first output."""
    return _encoder.encode({"predictions": to_builtin(next(iter(outputs.values())))})
