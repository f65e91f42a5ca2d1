"""Request bodies and response decoding for the two inference routes the stages call."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from slipway.runtimes.base import V2_TO_NUMPY, v2_datatype

Arrays = dict[str, np.ndarray]


def v2_body(inputs: Arrays) -> bytes:
    """An Open Inference Protocol V2 request for ``inputs``."""
    return msgspec.json.encode(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": v2_datatype(array.dtype),
                    "data": array.reshape(-1).tolist(),
                }
                for name, array in inputs.items()
            ]
        }
    )


def predict_body(rows: np.ndarray) -> bytes:
    return msgspec.json.encode({"instances": rows.tolist()})


def decode_v2(body: bytes) -> Arrays:
    """The outputs of a V2 response as arrays of their declared datatype and shape."""
    response = msgspec.json.decode(body)
    out = {}
    for item in response["outputs"]:
        dtype = V2_TO_NUMPY.get(item["datatype"], np.dtype(object))
        out[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
    return out


def decode_predict(body: bytes, names: list[str]) -> Arrays:
    """``/predict`` answers the first output as ``predictions`` and the rest under ``outputs``."""
    response: dict[str, Any] = msgspec.json.decode(body)
    out = {names[0]: np.asarray(response["predictions"])}
    for name, value in (response.get("outputs") or {}).items():
        out[name] = np.asarray(value)
    return out


def is_v2(request: Any) -> bool:
    inputs = request.get("inputs") if isinstance(request, dict) else None
    return isinstance(inputs, list) and all(isinstance(i, dict) for i in inputs)
