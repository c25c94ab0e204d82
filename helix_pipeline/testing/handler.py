"""The HTTP side of FakeHelix: a threading server and the request handler that answers like Helix.

The handler records each request, checks the API key, routes ``/v1/models``, ``/health`` and
``/v1/chat/completions``, applies the pending :class:`~.faults.Fault`, validates with
:mod:`.helix_rules`, opens the session on :class:`~.server.FakeHelix` and writes the completion
or the stream (:mod:`.events`), chunked or HTTP/1.0-style. The server tracks open connections so
that :meth:`FakeHelix.stop <helix_pipeline.testing.FakeHelix.stop>` can cut them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .events import (
    SEPARATOR,
    SERVER_ERROR_MESSAGE,
    SERVER_ERROR_TYPE,
    answer_text,
    completion,
    is_final,
    server_error_body,
    stream_events,
)
from .faults import Fault
from .helix_rules import HEADER_BY_MODE, MODEL_ID, helix_rejection, validation_errors
from .records import RecordedRequest

if TYPE_CHECKING:
    from .server import FakeHelix

__all__: list[str] = []  # package-internal: FakeHelix starts these

logger = logging.getLogger(__name__)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops connects under load: a 1 s SYN retry each

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], helix: FakeHelix
    ) -> None:
        self.helix = helix
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            (self._connections.add if active else self._connections.discard)(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug(
            "FakeHelix: connection from %s ended with an error", client_address, exc_info=True
        )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHelix"
    sys_version = ""
    timeout = 60
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms ACK stall
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("FakeHelix %s - %s", self.address_string(), format % args)

    @property
    def helix(self) -> FakeHelix:
        return self.server.helix

    # ------------------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
            bad_json: json.JSONDecodeError | None = None
        except json.JSONDecodeError as exc:
            body, bad_json = raw.decode("utf-8", "replace"), exc
        except ValueError as exc:  # not UTF-8 at all
            body = raw.decode("utf-8", "replace")
            bad_json = json.JSONDecodeError(str(exc), body, 0)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        self.helix._record(RecordedRequest(method, path, dict(self.headers.items()), body))
        if not self._authorised():
            return
        routes: dict[str, tuple[str, Callable[[], None]]] = {
            "/v1/models": ("GET", self._models),
            "/health": ("GET", lambda: self._json(200, {"status": "healthy"})),
            "/v1/chat/completions": ("POST", lambda: self._chat(body, bad_json)),
        }
        if path not in routes:
            self._json(404, {"detail": "Not Found"})
        elif routes[path][0] != method:
            self._json(405, {"detail": "Method Not Allowed"})
        else:
            try:
                routes[path][1]()
            except (BrokenPipeError, ConnectionResetError):
                logger.debug("FakeHelix: the client went away during %s %s", method, path)
                self.close_connection = True

    def _authorised(self) -> bool:
        """A proxy's key check (real Helix checks none): only with ``proxy_api_key`` set."""
        key = self.helix.proxy_api_key
        if not key:
            return True
        sent = self.headers.get("Authorization", "")
        if sent == f"Bearer {key}":
            return True
        shown = sent.removeprefix("Bearer ") or "none"
        self._json(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {shown}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
        return False

    def _models(self) -> None:
        model = {
            "id": MODEL_ID,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "helix",
        }
        self._json(200, {"object": "list", "data": [model]})

    def _chat(self, body: Any, bad_json: json.JSONDecodeError | None) -> None:
        helix = self.helix
        fault = helix._take_fault()
        if self._network_or_proxy_fault(fault):
            return
        if bad_json is not None:  # FastAPI's answer to a body that is not JSON
            issue = {
                "type": "json_invalid",
                "loc": ["body", bad_json.pos],
                "msg": "JSON decode error",
            }
            self._json(422, {"detail": [{**issue, "input": {}, "ctx": {"error": bad_json.msg}}]})
            return
        errors = validation_errors(body)
        if errors:
            self._json(422, {"detail": errors})
            return
        messages: list[dict[str, Any]] = [
            {"role": m["role"], "content": m["content"]} for m in body["messages"]
        ]
        rejection = helix_rejection(messages)
        if rejection is not None:
            self._json(400, {"detail": rejection})
            return
        model = body.get("model", MODEL_ID)
        streaming = bool(body.get("stream", False))
        if not messages:
            self._json(200, completion(model, "Fehler: No messages provided"))
            return
        if not any(m["role"] == "user" for m in messages):
            self._json(200, completion(model, "Fehler: No user message found"))
            return
        header = self.headers.get(HEADER_BY_MODE[helix.header_mode]) or None
        session_id = helix._open_session(header, messages)
        if fault is Fault.SERVER_ERROR or (
            fault is Fault.ERROR_BEFORE_FIRST_CHUNK and not streaming
        ):
            self._server_error(SERVER_ERROR_TYPE, SERVER_ERROR_MESSAGE.format(session=session_id))
            return
        try:
            text = helix._answer(session_id, messages)
        except Exception as exc:  # a test's reply callable failed: answer like Helix's 500
            logger.debug("FakeHelix: the reply callable raised", exc_info=True)
            self._server_error(type(exc).__name__, str(exc))
            return
        if not streaming:
            self._complete(model, answer_text(text, fault, helix), fault)
        elif fault is Fault.JSON_TO_STREAM:
            self._json(200, completion(model, text))
        else:
            self._stream(model, text, fault)

    def _network_or_proxy_fault(self, fault: Fault) -> bool:
        """Answer with a fault that comes before Helix sees the request; ``True`` if sent."""
        helix = self.helix
        if fault is Fault.SLOW_FIRST_BYTE:
            helix._sleep(helix.fault_delay)
        elif fault is Fault.DISCONNECT:
            self._cut()
        elif fault is Fault.PROXY_RATE_LIMITED:
            body = {"error": "Rate limit exceeded: 10 per 1 minute"}
            self._json(429, body, {"Retry-After": f"{helix.retry_after:g}"})
        elif fault is Fault.PROXY_BAD_GATEWAY:
            self._text(502, "text/plain; charset=utf-8", "Bad Gateway")
        elif fault is Fault.PROXY_UNAVAILABLE:
            self._json(
                503, {"detail": "Helix is restarting"}, {"Retry-After": f"{helix.retry_after:g}"}
            )
        elif fault is Fault.PROXY_PLAIN_TEXT_ERROR:
            self._text(500, "text/plain; charset=utf-8", "Internal Server Error")
        elif fault is Fault.PROXY_HTML_ERROR:
            page = (
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            self._text(502, "text/html", page)
        else:
            return False
        return fault is not Fault.SLOW_FIRST_BYTE

    # ----------------------------------------------------------------------------- answers

    def _complete(self, model: str, text: str, fault: Fault) -> None:
        payload = _compact(completion(model, text))
        if fault is Fault.STALL_MID_STREAM:
            self.helix._sleep(self.helix.fault_delay)
        if fault is not Fault.DROP_MID_STREAM:
            self._send(200, "application/json", payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload) + 100))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self._cut()

    def _stream(self, model: str, text: str, fault: Fault) -> None:
        helix = self.helix
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if helix.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        events = stream_events(model, text, helix, fault)
        first = next(events, None)
        if first is None:  # Helix's generator raised before its first chunk: an empty stream
            self._end_stream()
            return
        self._event(first[1])
        if not helix.hold_words:
            self._wait_for_hold()
        if fault is Fault.MALFORMED_CHUNK:
            self._write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
        event: Any = None
        words = -1  # answer chunks sent: drop, stall and error strike after the first one
        for pause, event in events:
            if words == 1 and fault is Fault.DROP_MID_STREAM:
                self._cut()
                return
            if words == 1 and fault is Fault.OPENAI_COMPATIBLE_ERROR_CHUNK:
                helix._stream_completed()
                self._event({"error": {"message": "Claude Code crashed", "type": "server_error"}})
                self._end_stream(counted=True)
                return
            if helix.hold_words and words == helix.hold_words:
                self._wait_for_hold()
            if words == 1 and fault is Fault.STALL_MID_STREAM:
                helix._sleep(helix.fault_delay)
            if fault is Fault.NO_DONE and (event == "[DONE]" or is_final(event)):
                break
            words += 1 if words >= 0 else int(_content(event) == SEPARATOR)
            helix._sleep(pause)
            if event == "[DONE]":
                helix._stream_completed()
            self._event(event)
        self._end_stream(counted=event == "[DONE]")

    def _wait_for_hold(self) -> None:
        hold, deadline = self.helix.hold, time.monotonic() + 10
        while hold is not None and not hold.wait(0.05) and time.monotonic() < deadline:
            if self.helix._stopping.is_set():
                return

    def _end_stream(self, counted: bool = False) -> None:
        if not counted:  # counted before the last bytes go out, so a client never sees it lag
            self.helix._stream_completed()
        if self.helix.chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _event(self, event: object) -> None:
        data = event if isinstance(event, str) else json.dumps(event)
        self._write(f"data: {data}\n\n".encode())

    def _write(self, data: bytes) -> None:
        if self.helix.chunked:
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        self.wfile.write(data)
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection at once, mid-answer (no chunk terminator, no full body)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _server_error(self, kind: str, message: str) -> None:
        """Helix's global exception handler: 500 with its compact five-key body."""
        self._json(500, server_error_body(kind, message, self.path.split("?", 1)[0]))

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        """JSON the way FastAPI's JSONResponse writes it: compact, non-ASCII as UTF-8."""
        self._send(status, "application/json", _compact(payload), headers)

    def _text(self, status: int, content_type: str, text: str) -> None:
        self._send(status, content_type, text.encode())

    def _send(
        self, status: int, content_type: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""


def _compact(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _content(event: object) -> str | None:
    if not isinstance(event, dict):
        return None
    content = event["choices"][0]["delta"]["content"]
    return content if isinstance(content, str) else None
