"""The REST endpoint's transport: aiohttp's event-driven HTTP/1.1 server on its own thread, models on a pool.

Connections cost a socket and a coroutine, not a thread: an idle or slow client holds nothing that another client
needs. A request reaches the worker pool (`num_threads`, the model runs) only once its headers and whole body
are in, and each phase has a deadline that counts from its start and does not move when a byte arrives:

- headers: `header_timeout_seconds` from the connection's opening (or the end of its previous response), else
  the connection is closed (a slowloris client sending one byte a second is cut off like an idle one);
- body, queue and run: `timeout_seconds` from the end of the headers (TF Serving's `--rest_api_timeout_in_ms`):
  a body still arriving then answers 408; a request still queued for a worker then answers 504
  (DEADLINE_EXCEEDED) without running.

HTTP framing is aiohttp's (llhttp): a Content-Length with a Transfer-Encoding, a repeated or negative
Content-Length, HTTP/0.9 and malformed lines are refused with 400. Every answer, including those of the HTTP
layer, has TF Serving's `{"error": "..."}` JSON body.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from aiohttp import web, web_protocol, web_server

from mssl_tf.serving.admission import MemoryBudget, json_parse_cost
from mssl_tf.serving.errors import ServingError
from mssl_tf.serving.tensors import dumps_json

logger = logging.getLogger("mssl_tf.serving")

LINGER_SECONDS = 5.0  # after an early answer (413), the client's remaining body is read and discarded this long
READ_CHUNK_BYTES = 1 << 16


def json_response(status: int, document: dict, close: bool = False) -> web.Response:
    """A response with a JSON body (TF Serving's REST answers are always JSON)."""
    response = web.Response(status=status, body=dumps_json(document).encode("utf-8"),
                            content_type="application/json")
    if close:
        response.force_close()
    return response


def default_max_connections() -> int:
    """Half the process's soft file descriptor limit, between 64 and 4096."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 4096
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(64, min(4096, soft // 2))


class _Connection(web_protocol.RequestHandler):
    """aiohttp's connection handler with a header deadline and JSON bodies for HTTP-layer errors."""

    def __init__(self, manager, *, header_timeout_seconds: float, max_connections: int, **kwargs):
        super().__init__(manager, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self.max_connections = max_connections
        self._header_deadline = None
        self._refused = False
        self.began_request = False  # bytes arrived since the connection opened or its last answer

    def connection_made(self, transport) -> None:
        if len(self._manager.connections) >= self.max_connections:
            logger.warning("REST: %d connections open (--rest_api_max_connections); closing a new one",
                           self.max_connections)
            self._refused = True
            transport.abort()
            return
        super().connection_made(transport)
        self.arm_header_deadline()

    def connection_lost(self, exc) -> None:
        self.disarm_header_deadline()
        if not self._refused:  # a refused connection was never registered with the server
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.began_request = True
        super().data_received(data)

    def eof_received(self) -> bool:
        """When the client stops sending: keeps the connection open for the answer if bytes of a request came since
        the last answer (a client may half-close after its request), closes an idle one."""
        return self.began_request

    def arm_header_deadline(self) -> None:
        """Starts the time the next request's headers must arrive in (not reset by bytes arriving)."""
        self.disarm_header_deadline()
        self.began_request = False
        self._header_deadline = asyncio.get_running_loop().call_later(
            self.header_timeout_seconds, self._header_deadline_passed)

    def disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport is not None:
            logger.debug("REST: closing a connection that sent no complete request headers within %.1f s",
                         self.header_timeout_seconds)
            self.force_close()  # closes the transport

    def handle_error(self, request, status: int = 500, exc=None, message=None):
        """aiohttp's answer to a request it could not parse (400, 413, ...), with a JSON body instead of text."""
        logger.debug("REST: HTTP-level error %d from %s: %s", status, request.remote, exc or message)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; cannot send an error after it")
        reason = str(getattr(exc, "message", "") or message or exc or "").strip() or HTTPStatus(status).phrase
        return json_response(status, {"error": f"Malformed request: {reason}"}, close=True)


class _Server(web_server.Server):
    def __init__(self, handler, *, header_timeout_seconds: float, max_connections: int, **kwargs):
        super().__init__(handler, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self.max_connections = max_connections

    def __call__(self) -> _Connection:
        return _Connection(self, loop=self._loop, header_timeout_seconds=self.header_timeout_seconds,
                           max_connections=self.max_connections, **self._kwargs)


class RestServer:
    """TF Serving's REST API (a `RestApi`) served by aiohttp on a background event-loop thread.

    Args:
        address: `(host, port)`; port 0 binds an ephemeral port (see `server_port`).
        rest_api: routes a request `(method, path, body, deadline)` to `(status, document)`.
        num_threads: requests run at once (the model calls); connections are not limited by it.
        timeout_seconds: per request, from its headers: body read, wait for a worker (`--rest_api_timeout_in_ms`).
        header_timeout_seconds: a connection's time to send complete headers (from its opening or last answer).
        tls: serve HTTPS with this certificate (and verify client certificates if it says so).
        budget: the server-wide memory budget; a body's JSON parsing is admitted against it before it is read.
        max_connections: open connections at most; more are closed as they arrive (default: half the process's
            file descriptor limit, at most 4096), so idle sockets cannot take every descriptor of the process.

    Example:
        >>> server = RestServer(("127.0.0.1", 0), RestApi(manager)).start()
        >>> server.server_port
        >>> server.stop()
    """

    def __init__(self, address, rest_api, num_threads: int = 16, timeout_seconds: float = 30.0,
                 header_timeout_seconds: float = 10.0, tls=None, budget: MemoryBudget | None = None,
                 max_connections: int | None = None):
        from mssl_tf.serving.tls import server_ssl_context

        self.api = rest_api
        self.timeout_seconds = timeout_seconds
        self.header_timeout_seconds = header_timeout_seconds
        self.ssl_context = server_ssl_context(tls) if tls is not None else None
        self.budget = budget
        self.max_connections = max_connections or default_max_connections()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._socket = socket.create_server(address, family=family, backlog=1024)  # raises OSError if in use
        self.server_port = self._socket.getsockname()[1]
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="rest")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest-loop", daemon=True)
        self._web_server = None
        self._listener = None

    def start(self) -> "RestServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()
        return self

    async def _open(self) -> None:
        self._web_server = _Server(
            self._handle, header_timeout_seconds=self.header_timeout_seconds, max_connections=self.max_connections,
            loop=self._loop,
            keepalive_timeout=self.header_timeout_seconds, lingering_time=LINGER_SECONDS, access_log=None,
        )
        self._listener = await self._loop.create_server(
            self._web_server, sock=self._socket, ssl=self.ssl_context,
            ssl_handshake_timeout=self.header_timeout_seconds if self.ssl_context else None,
        )

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops listening, lets running requests finish (up to `grace_seconds`), closes every connection."""
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(grace_seconds), self._loop)
            try:
                future.result(grace_seconds + 5)
            except Exception:  # noqa: BLE001 - stopping goes on whatever a connection did
                logger.exception("REST: closing the server failed")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()
        self._socket.close()

    async def _close(self, grace_seconds: float) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._web_server is not None:
            self._web_server.pre_shutdown()
            await self._web_server.shutdown(grace_seconds)

    # --- one request ---

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        connection.disarm_header_deadline()
        deadline = time.monotonic() + self.timeout_seconds
        try:
            return await self._answer(request, deadline)
        finally:
            connection.arm_header_deadline()

    async def _answer(self, request: web.BaseRequest, deadline: float) -> web.StreamResponse:
        if request.version < (1, 0):
            return json_response(400, {"error": "Malformed request: HTTP/0.9 is not served; send HTTP/1.0 or "
                                                "HTTP/1.1 (a request line ending in HTTP/1.1)"}, close=True)
        limit = self.api.limits.max_request_bytes
        length = request.content_length
        if length is not None and length > limit:
            return json_response(413, {"error": f"the request body has {length} bytes, more than this server's "
                                                f"limit of {limit} (--max_request_bytes)"})
        if not request.path.lower().startswith("/v1/"):
            return json_response(404, {"error": f"no such endpoint: {request.path}; the API lives under /v1/models/"})
        if request.headers.get("Expect", "").lower() == "100-continue":  # curl's large bodies: no 1 s wait
            await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
        reservation = None
        try:
            if length and self.budget is not None and request.method == "POST":
                reservation = self.budget.reserve(json_parse_cost(length), "parsing this JSON body")
            try:
                body = await asyncio.wait_for(self._read_body(request, limit), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                return json_response(408, {"error": f"the request body did not arrive within {self.timeout_seconds:g} "
                                                    "s of its headers (--rest_api_timeout_in_ms)"}, close=True)
            if body is None:
                return json_response(413, {"error": f"the request body is longer than this server's limit of "
                                                    f"{limit} bytes (--max_request_bytes)"}, close=True)
            if reservation is None and body and self.budget is not None and request.method == "POST":
                reservation = self.budget.reserve(json_parse_cost(len(body)), "parsing this JSON body")
            status, document = await self._loop.run_in_executor(
                self._pool, self.api.handle, request.method, request.path_qs, body, deadline)
        except ServingError as error:
            status, document = error.http_status, {"error": error.message}
        finally:
            if reservation is not None:
                reservation.release()
        return json_response(status, document)

    @staticmethod
    async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
        """The whole body (Content-Length or chunked), or None once it passes `limit` bytes."""
        chunks, size = [], 0
        while True:
            chunk = await request.content.read(READ_CHUNK_BYTES)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
