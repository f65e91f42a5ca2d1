"""Small values the registry tests share."""

from __future__ import annotations

from slipway.registry.records import Signature, TensorSpec

SIGNATURE = Signature(
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="y", datatype="INT64", shape=[-1])],
)
DIGEST = "ab" * 32
