"""The "bare endpoint" ceiling: an ASGI app that reads the request body and answers a constant.

It runs on exactly the stack Slipway's server uses (uvicorn, uvloop, httptools, no access log,
one process), so the gap between it and Slipway is what Slipway's own code costs per request:
decoding, routing, batching, onnxruntime, encoding, metrics.

    .venv/bin/python bench/serving/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

from stack import serve

# About the size of a V2 response for one row of a binary classifier.
BODY = (
    b'{"model_name":"bare","model_version":"1","outputs":['
    b'{"name":"label","shape":[1],"datatype":"INT64","data":[1]},'
    b'{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[0.01,0.99]}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
READY = b'{"ready":true}'
READY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(READY)).encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": READY_HEADERS})
        await send({"type": "http.response.body", "body": READY})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
