"""Open Inference Protocol V2 tensors over gRPC: protobuf messages ↔ numpy arrays.

Inputs come as typed ``contents`` or as ``raw_input_contents`` (little-endian bytes; BYTES
elements each prefixed by a 4-byte little-endian length). As with the REST codec, everything a
client controls is checked before use: datatype, shape, element count, row limit.
Responses use the form of the request: raw outputs for raw inputs, typed contents otherwise.
"""

from __future__ import annotations

import struct

import numpy as np

from slipway.errors import InvalidInput, PayloadTooLarge
from slipway.runtimes.base import V2_TO_NUMPY, v2_datatype
from slipway.serving.codec import check_finite, check_requested
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

# The typed contents field that holds each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _check_shape(name: str, shape: list[int], max_rows: int) -> int:
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input {name!r}: shape {shape} has a negative dimension")
        count *= dim
    if shape and shape[0] > max_rows:
        raise PayloadTooLarge(f"input {name!r} rows ({shape[0]})", max_rows)
    return count


def _decode_raw_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: raw BYTES contents end before element {i}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"input {name!r}: raw BYTES element {i} overruns the contents")
        out[i] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise InvalidInput(f"input {name!r}: raw BYTES contents hold more than {count} elements")
    return out


def decode_tensor(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, *, max_rows: int
) -> np.ndarray:
    """One input tensor (with its raw bytes, if the request sent raw contents) as an array."""
    name, datatype = tensor.name, tensor.datatype
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r};"
            f" expected one of {', '.join(V2_TO_NUMPY)}"
        )
    shape = list(tensor.shape)
    count = _check_shape(name, shape, max_rows)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(
                f"input {name!r}: both raw_input_contents and contents; send one or the other"
            )
        if datatype == "BYTES":
            return _decode_raw_bytes(name, raw, count).reshape(shape)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize}"
                f" raw bytes, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        check_finite(array, f"input {name!r}")
        return array.reshape(shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} can only be sent as raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: shape {shape} needs {count} values, got {len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        # As the field's own type first: numpy casts a repeated field to a narrower dtype
        # by wrapping (1000 in int_contents as INT8 became -24), so the range is checked here.
        array = np.array(values)
        if array.dtype != dtype:
            if dtype.kind in "iu" and array.size:
                info = np.iinfo(dtype)
                if array.min() < info.min or array.max() > info.max:
                    raise InvalidInput(f"input {name!r}: values do not fit {datatype}")
            array = array.astype(dtype)
        check_finite(array, f"input {name!r}")
    return array.reshape(shape)


def decode_infer_request(request: pb.ModelInferRequest, *, max_rows: int) -> dict[str, np.ndarray]:
    """All input tensors of a ModelInfer request, by name."""
    if not request.inputs:
        raise InvalidInput("inference request has no inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidInput(f"input {tensor.name!r} given twice")
        arrays[tensor.name] = decode_tensor(tensor, raw[i] if raw else None, max_rows=max_rows)
    return arrays


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == object or array.dtype.kind in "SU":
        parts = []
        for value in array.ravel():
            data = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_infer_response(
    request: pb.ModelInferRequest,
    *,
    model_version: str,
    outputs: dict[str, np.ndarray],
) -> pb.ModelInferResponse:
    """The response with the requested outputs (all when none are named), raw or typed."""
    names = [o.name for o in request.outputs] or list(outputs)
    check_requested(names)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise InvalidInput(
            f"unknown output(s) {', '.join(missing)}; model outputs: {', '.join(outputs)}"
        )
    # Raw contents are all-or-nothing per response; FP16 has no typed field, so it forces raw.
    raw = bool(request.raw_input_contents) or any(outputs[n].dtype == np.float16 for n in names)
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=model_version, id=request.id
    )
    for name in names:
        array = outputs[name]
        datatype = v2_datatype(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(_raw(array))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return response
