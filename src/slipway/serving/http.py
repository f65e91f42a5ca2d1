"""Minimal ASGI plumbing shared by the data plane and the management API.

Hand-written rather than a framework because it is the hot path: one request costs a header
scan, a bounded body read and one ``send`` of a prebuilt header list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from slipway.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientDisconnected(Exception):
    """The client went away before sending its whole body."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with ``PayloadTooLarge`` as soon as it passes ``limit`` bytes."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            declared = 0
        if declared > limit:
            raise PayloadTooLarge("request body", limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if len(body) > limit:  # also when more is to come: answer now, read no further
        raise PayloadTooLarge("request body", limit)
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("request body", limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] = JSON_HEADERS,
) -> None:
    # An explicit content-length keeps uvicorn from chunking the response: a chunked answer goes
    # out in two writes, and Nagle's algorithm plus the client's delayed ACK stall the second one
    # for ~40 ms on a kept-alive connection.
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def method_not_allowed(send: Send, method: str, allowed: str) -> Awaitable[None]:
    """405 for a route that exists but not for ``method``, with the ``Allow`` header."""
    body = msgspec.json.encode({"error": f"method {method} not allowed here; use {allowed}"})
    return send_bytes(send, 405, body, [*JSON_HEADERS, (b"allow", allowed.encode())])
