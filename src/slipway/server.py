"""Running the ASGI app under uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
import weakref
from collections.abc import Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from slipway import web
from slipway.errors import SlipwayError
from slipway.serving.app import SlipwayApp
from slipway.settings import Settings

_INVALID_HTTP = (
    b'{"error":"invalid HTTP request: its request line, headers or body framing could not be'
    b' parsed"}'
)
_BODY_STALLED = (
    b'{"error":"the request body stopped arriving for longer than the server waits'
    b' (SLIPWAY_HEAD_TIMEOUT_S); send the body without pauses"}'
)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head (request line and
    headers): a client that has not sent the whole head within ``head_timeout_s`` of
    connecting, or of starting the request, is disconnected. Without it, slowloris clients
    that trickle header lines hold a connection and a file descriptor each for ever; uvicorn
    only times out idle connections between requests. The body has a limit on each pause
    instead (a large body may take long, but must keep arriving): a body that stops for
    ``head_timeout_s`` gets a 408 and the connection is closed.

    A request only stamps when its head began and when its body last moved; one sweep per
    second (per subclass, that is per server) closes the connections past the deadline: a
    timer per request cost more than the rest of the protocol's work on it.
    """

    head_timeout_s = 10.0
    _open: weakref.WeakSet[HeadTimeoutProtocol]
    _sweeping = False
    _head_since: float | None = None
    _body_since: float | None = None  # the body's last progress, while one is expected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._head_since = self.loop.time()
        kind = type(self)
        kind._open.add(self)
        if not kind._sweeping:
            kind._sweeping = True
            self.loop.call_later(kind._interval(), kind._sweep, self.loop)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._body_since = self.loop.time()  # cleared at once when there is no body
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_since = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_since = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser refused the request (uvicorn answers text/plain): every error is JSON.
        self._send_and_close(400, _INVALID_HTTP)

    def _send_and_close(self, status: int, body: bytes) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    def _stall(self) -> None:
        """The body stopped arriving: 408 when nothing was answered yet, then close."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.response_started = True  # the app's own answer, if any, goes nowhere
            self._send_and_close(408, _BODY_STALLED)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        type(self)._open.discard(self)
        super().connection_lost(exc)

    @classmethod
    def _interval(cls) -> float:
        return min(1.0, max(0.05, cls.head_timeout_s / 4))

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        deadline = now - cls.head_timeout_s
        for protocol in list(cls._open):
            if protocol.transport.is_closing():
                continue
            since = protocol._head_since
            if since is not None and since <= deadline:
                protocol.transport.close()
                continue
            since = protocol._body_since
            if since is None or since > deadline:
                continue
            if protocol.flow.read_paused:  # the server is not reading (pipelining, a full
                protocol._body_since = now  # buffer): not the client's pause
            else:
                protocol._stall()
        if cls._open:
            loop.call_later(cls._interval(), cls._sweep, loop)
        else:
            cls._sweeping = False


def uvicorn_config(app: SlipwayApp, settings: Settings, log_level: str) -> uvicorn.Config:
    protocol = type(
        "HeadTimeoutProtocol",
        (HeadTimeoutProtocol,),
        {"head_timeout_s": settings.head_timeout_s, "_open": weakref.WeakSet()},
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        # No X-Forwarded-* rewriting: nothing here reads the client address, and the
        # middleware cost a few µs a request.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.drain_s,
    )


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def check_auth_for_host(settings: Settings) -> None:
    """Refuse to serve without authentication anywhere but on the loopback interface."""
    if not settings.auth and settings.host not in _LOOPBACK:
        raise SlipwayError(
            f"refusing to listen on {settings.host} with authentication off (SLIPWAY_AUTH=0):"
            " anyone who can reach it could change the registry. Turn authentication on, or"
            " bind to 127.0.0.1"
        )


def check_port_free(host: str, port: int, hint: str = "--port") -> None:
    bind_socket(host, port, hint).close()


def bind_socket(host: str, port: int, hint: str = "--port") -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), or a one-line error that names
    ``hint``, where another port is chosen."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says it is TCP, and without it Nagle's algorithm plus the client's
    # delayed ACK hold every response's second write back by ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SlipwayError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another with {hint}"
        ) from None
    return sock


def run(
    settings: Settings,
    *,
    log_level: str = "info",
    app: SlipwayApp | None = None,
    listening: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (``app``: one built by the caller).
    ``listening(url)`` is called once the port is bound (port 0: the one the system chose)."""
    check_auth_for_host(settings)
    with bind_socket(settings.host, settings.port) as sock:  # a busy port fails here, in one line
        port = sock.getsockname()[1]
    # uvicorn binds the port itself (and logs "Uvicorn running on ...", which scripts read).
    settings = dataclasses.replace(settings, port=port)
    app = web.mount(app or SlipwayApp(settings))  # a bad rules file fails here, before the line
    if listening is not None:
        listening(f"http://{settings.host}:{port}")
    app.freeze_gc = True  # this process is the server's alone
    uvicorn.Server(uvicorn_config(app, settings, log_level)).run()


class BackgroundServer:
    """A real server on a thread, for the demo, notebooks and tests.

    ``port=0`` in the settings picks a free port; ``url`` tells which.
    """

    def __init__(
        self, settings: Settings, *, app: SlipwayApp | None = None, log_level: str = "warning"
    ) -> None:
        check_auth_for_host(settings)
        self.app = web.mount(app or SlipwayApp(settings))
        self.settings = settings
        self._sock = bind_socket(settings.host, settings.port)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{settings.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level))
        self._thread = threading.Thread(target=self._run, name="slipway-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self._sock]))

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise SlipwayError("the server failed to start; see the log above")
            if time.monotonic() > deadline:
                raise SlipwayError(f"the server did not start within {timeout:g}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
