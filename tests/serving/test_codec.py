"""V2 codec on plain values."""

from __future__ import annotations

import numpy as np
import pytest

from slipway.errors import InvalidInput, PayloadTooLarge
from slipway.serving import codec


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        pytest.param("FP32", [1.5, 2.5], np.float32, id="fp32"),
        pytest.param("FP64", [1.5, 2.5], np.float64, id="fp64"),
        pytest.param("INT32", [1, 2], np.int32, id="int32"),
        pytest.param("INT64", [1, 2], np.int64, id="int64"),
        pytest.param("BOOL", [True, False], np.bool_, id="bool"),
    ],
)
def test_decode_types(datatype, data, dtype) -> None:
    body = codec.encode_json(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}
    )
    _, arrays = codec.decode_infer_request(body, max_rows=10)
    assert arrays["x"].dtype == dtype and arrays["x"].shape == (1, 2)
    assert arrays["x"].ravel().tolist() == data


def test_bytes_roundtrip() -> None:
    body = codec.encode_json(
        {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["hi", "yo"]}]}
    )
    _, arrays = codec.decode_infer_request(body, max_rows=10)
    assert arrays["t"].tolist() == [b"hi", b"yo"]
    out = codec.encode_infer_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"t": arrays["t"]},
        requested=None,
    )
    assert b'"data":["hi","yo"]' in out and b'"datatype":"BYTES"' in out


def test_nested_equals_flat() -> None:
    nested = codec.encode_json(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 2, 2],
                    "datatype": "INT64",
                    "data": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
                }
            ]
        }
    )
    _, arrays = codec.decode_infer_request(nested, max_rows=10)
    np.testing.assert_array_equal(arrays["x"], np.arange(1, 9).reshape(2, 2, 2))


def test_shape_promising_more_is_refused_without_allocating() -> None:
    body = b'{"inputs":[{"name":"x","shape":[9,99999999999],"datatype":"FP32","data":[1]}]}'
    with pytest.raises(InvalidInput, match="needs"):
        codec.decode_infer_request(body, max_rows=10)
    with pytest.raises(PayloadTooLarge):
        codec.decode_infer_request(
            b'{"inputs":[{"name":"x","shape":[11,1],"datatype":"FP32","data":[1]}]}', max_rows=10
        )
    with pytest.raises(InvalidInput, match="negative"):
        codec.decode_infer_request(
            b'{"inputs":[{"name":"x","shape":[-1,1],"datatype":"FP32","data":[1]}]}', max_rows=10
        )


def test_duplicate_input_refused() -> None:
    tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    with pytest.raises(InvalidInput, match="twice"):
        codec.decode_infer_request(codec.encode_json({"inputs": [tensor, tensor]}), max_rows=10)


def test_out_of_range_number_is_a_clear_input_error() -> None:
    # JSON has no infinity; a literal that overflows a double is refused, not turned into inf.
    body = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1e999,-1e999]}]}'
    with pytest.raises(InvalidInput, match="out of range"):
        codec.decode_infer_request(body, max_rows=10)


def test_floating_point_data_reads_numbers_sent_as_text_and_refuses_other_text() -> None:
    def decode(data: list[object]) -> np.ndarray:
        tensor = {"name": "x", "shape": [len(data)], "datatype": "FP32", "data": data}
        _, arrays = codec.decode_infer_request(codec.encode_json({"inputs": [tensor]}), max_rows=9)
        return arrays["x"]

    assert decode(["1.5", True, 2]).tolist() == [1.5, 1.0, 2.0]  # as documented: numpy's reading
    with pytest.raises(InvalidInput, match="does not fit datatype FP32"):
        decode(["1.5", "abc"])
