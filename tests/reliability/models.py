"""Model files made here for the reliability tests: a genuinely slow ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_slow_onnx(path: Path, products: int = 4, size: int = 1024, width: int = 30) -> Path:
    """An ONNX model that spends real CPU per batch: ``products`` chained ``size``×``size``
    matrix products of a constant that depends on the inputs (``C + 0 * sum(input)``, so
    onnxruntime cannot fold them away at load). About 60 ms per product on one core.

    ``y`` has the input's shape: ``input * 0 + sum(A @ A @ ... @ A)``.
    """
    constant = numpy_helper.from_array(
        np.random.default_rng(0).random((size, size), dtype=np.float32) / size, name="C"
    )
    zero = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), name="zero")
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["C", "nothing"], ["P0"]),
        *[helper.make_node("MatMul", [f"P{i}", "P0"], [f"P{i + 1}"]) for i in range(products)],
        helper.make_node("ReduceSum", [f"P{products}"], ["s"], keepdims=1),
        helper.make_node("Mul", ["input", "zero"], ["z"]),
        helper.make_node("Add", ["z", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        initializer=[constant, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
