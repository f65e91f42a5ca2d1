"""Properties of the V2 codec (Hypothesis): any valid tensor round-trips through decode and
encode unchanged; anything else is refused with an error that maps to a 4xx, never a crash."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipway.errors import SlipwayError
from slipway.serving import codec
from slipway.serving.errors import status_for

pytestmark = pytest.mark.reliability

MAX_ROWS = 64
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_INTS = {
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}  # fmt: skip
_FLOAT_WIDTHS = {"FP16": 16, "FP32": 32, "FP64": 64}


def _values(datatype: str) -> st.SearchStrategy[Any]:
    if datatype in _INTS:
        info = np.iinfo(_INTS[datatype])
        return st.integers(int(info.min), int(info.max))
    if datatype in _FLOAT_WIDTHS:
        return st.floats(width=_FLOAT_WIDTHS[datatype], allow_nan=False, allow_infinity=False)
    if datatype == "BOOL":
        return st.booleans()
    return st.text(max_size=8)  # BYTES


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    datatype = draw(st.sampled_from([*_INTS, *_FLOAT_WIDTHS, "BOOL", "BYTES"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    size = int(np.prod(shape))
    data = draw(st.lists(_values(datatype), min_size=size, max_size=size))
    if draw(st.booleans()) and len(shape) > 1 and size:  # V2 allows row-major nesting too
        nested: Any = data
        for dim in reversed(shape[1:]):
            nested = [nested[i : i + dim] for i in range(0, len(nested), dim)]
        data = nested
    name = draw(st.text(min_size=1, max_size=10))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@EXAMPLES
@given(tensor=tensors(), request_id=st.none() | st.text(max_size=10))
def test_any_valid_tensor_round_trips(tensor: dict[str, Any], request_id: str | None) -> None:
    body = msgspec.json.encode({"id": request_id, "inputs": [tensor]})
    request, arrays = codec.decode_infer_request(body, max_rows=MAX_ROWS)
    array = arrays[tensor["name"]]
    assert list(array.shape) == tensor["shape"]
    flat = np.array(tensor["data"], dtype=object).ravel().tolist() if array.size else []
    if tensor["datatype"] == "BYTES":
        assert [v.decode() for v in array.ravel()] == flat
    else:
        assert array.dtype == codec.V2_TO_NUMPY[tensor["datatype"]]
        assert array.ravel().tolist() == flat
    encoded = codec.encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=request.id,
        outputs={"out": array},
        requested=None,
    )
    response = json.loads(encoded)
    assert response.get("id") == request_id
    (out,) = response["outputs"]
    assert out["datatype"] == tensor["datatype"] and out["shape"] == tensor["shape"]
    assert out["data"] == flat


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=6)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=30,
    )


@st.composite
def broken_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A valid tensor with one field replaced by something arbitrary."""
    tensor = draw(tensors())
    field = draw(st.sampled_from(["shape", "datatype", "data", "name", "parameters", "extra"]))
    tensor[field] = draw(_json_values())
    return tensor


def _assert_refused_with_4xx_or_decoded(body: bytes) -> None:
    try:
        codec.decode_infer_request(body, max_rows=MAX_ROWS)
    except SlipwayError as exc:
        assert 400 <= status_for(exc) < 500, exc


@EXAMPLES
@given(tensor=broken_tensors())
def test_a_broken_tensor_is_a_4xx_never_a_crash(tensor: dict[str, Any]) -> None:
    _assert_refused_with_4xx_or_decoded(msgspec.json.encode({"inputs": [tensor]}))


@EXAMPLES
@given(value=_json_values())
def test_any_json_body_is_a_4xx_never_a_crash(value: Any) -> None:
    _assert_refused_with_4xx_or_decoded(msgspec.json.encode(value))
    _assert_refused_with_4xx_or_decoded(msgspec.json.encode({"inputs": value}))


@EXAMPLES
@given(body=st.binary(max_size=200))
def test_any_bytes_are_a_4xx_never_a_crash(body: bytes) -> None:
    _assert_refused_with_4xx_or_decoded(body)


@EXAMPLES
@given(
    shape=st.lists(st.integers(-(2**40), 2**62), min_size=1, max_size=5),
    data=st.lists(st.floats(-1e6, 1e6), max_size=8),
)
def test_a_shape_that_lies_is_refused_before_allocating(
    shape: list[int], data: list[float]
) -> None:
    body = msgspec.json.encode(
        {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}
    )
    expected = int(np.prod(shape, dtype=object))
    if expected == len(data) and min(shape) >= 0 and shape[0] <= MAX_ROWS:
        return  # an honest shape: covered by the round trip
    with pytest.raises(SlipwayError) as caught:
        codec.decode_infer_request(body, max_rows=MAX_ROWS)
    assert status_for(caught.value) in (400, 413)
