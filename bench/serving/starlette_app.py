"""The "obvious endpoint" reference: a hand-written Starlette endpoint that parses the V2 JSON
request with the standard library, calls onnxruntime inline and answers a V2 JSON response.

The throughput target was scaled against such an endpoint (said to reach about 57% of the bare
ceiling on this machine), so the benchmark measures it in the same run as Slipway and the bare
app, on the same uvicorn stack (uvloop, httptools, no access log, one process). No batching, no
limits, no metrics, no audit: it is what the shortest obvious handler costs.

    .venv/bin/python bench/serving/starlette_app.py --model lr.onnx --port 8002
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from stack import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def make_app(model: str) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as Slipway runs it
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]

    async def infer(request: Request) -> JSONResponse:
        body = await request.json()
        feed = {
            tensor["name"]: np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            for tensor in body["inputs"]
        }
        results = session.run(None, feed)
        outputs = [
            {
                "name": name,
                "shape": list(result.shape),
                "datatype": DATATYPES.get(result.dtype, "FP64"),
                "data": result.ravel().tolist(),
            }
            for name, result in zip(output_names, results, strict=True)
        ]
        return JSONResponse({"model_name": "lr", "model_version": "1", "outputs": outputs})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/v2/models/lr/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(make_app(args.model), args.host, args.port)


if __name__ == "__main__":
    main()
