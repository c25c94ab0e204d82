"""FakeHelix: a real HTTP server that behaves like Helix, for tests, demos and local trials.

    with FakeHelix() as helix:
        client = HelixClient(helix.url)
        ...
        assert helix.sessions["conv-chat-1"].messages[-1]["content"] == "hi"

It serves ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models`` and ``GET
/health`` on 127.0.0.1 and an ephemeral port, validates like Helix (422 with a FastAPI detail list,
Helix's own 400s, ``Fehler:`` answers), keeps one session per conversation header (overwritten by
each request, as Helix does), records every request, and can be told to fail in the ways real
servers fail (:class:`Fault`). Run it alone with ``python -m helix_pipeline.testing --port 8001``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, ValidationError

from .conversation import helix_session_id

__all__ = [
    "FIRST_CHUNK",
    "MODEL_ID",
    "SEPARATOR",
    "FakeHelix",
    "Fault",
    "HelixSession",
    "RecordedRequest",
    "adr029_stable_session_id",
    "helix_rejection",
    "main",
    "validation_errors",
]

logger = logging.getLogger(__name__)

HeaderMode = Literal["current", "adr029"]
MODEL_ID = "helix-consultant"
FIRST_CHUNK = "[Starte Claude Code...]\n\n"
SEPARATOR = "\n\n---\n\n"
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
VALID_ROLES = ("assistant", "system", "user")
_HEADER_BY_MODE: dict[str, str] = {"current": "X-OpenWebUI-Chat-Id", "adr029": "X-Conversation-ID"}


class Fault(str, Enum):
    """Ways a chat completion can fail (:attr:`FakeHelix.fault`, :meth:`FakeHelix.fail_next`).

    Faults apply to ``POST /v1/chat/completions`` only; stream faults (drop, stall, no [DONE],
    malformed chunk, error in stream) act on stream requests, and drop/stall on plain ones too.
    """

    NONE = "none"
    DISCONNECT = "disconnect"  # close the connection without any answer
    SLOW_FIRST_BYTE = "slow_first_byte"  # wait ``fault_delay`` s, then answer normally
    DROP_MID_STREAM = "drop_mid_stream"  # cut the connection after the first chunks
    STALL_MID_STREAM = "stall_mid_stream"  # go silent for ``fault_delay`` s after the first chunk
    NO_DONE = "no_done"  # end the stream cleanly but without the final chunk and [DONE]
    MALFORMED_CHUNK = "malformed_chunk"  # one chunk that is not JSON, the rest normal
    ERROR_IN_STREAM = "error_in_stream"  # an ``{"error": {...}}`` chunk after the first chunk
    JSON_TO_STREAM = "json_to_stream"  # a plain JSON completion to a stream request
    FEHLER = "fehler"  # a 200 completion whose text is Helix's ``Fehler: ...``
    SERVER_ERROR = "server_error"  # 500 with Helix's flat ``{"error", "type", "message"}``
    RATE_LIMITED = "rate_limited"  # 429 with ``Retry-After: <retry_after>``
    BAD_GATEWAY = "bad_gateway"  # 502, plain text
    UNAVAILABLE = "unavailable"  # 503, ``{"detail": ...}``
    PLAIN_TEXT_ERROR = "plain_text_error"  # 500, ``text/plain``
    HTML_ERROR = "html_error"  # 502 from a proxy, ``text/html``


@dataclass(frozen=True)
class RecordedRequest:
    """One request as FakeHelix received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class HelixSession:
    """What Helix keeps per session: the first user message and the messages of the last request."""

    session_id: str
    original_request: str
    conversation_id: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0


Reply = Callable[[list[dict[str, Any]]], str]


class FakeHelix:
    """A Helix look-alike on a background thread; a context manager (``with FakeHelix() as h``).

    Every option is also an attribute that a test may change while the server runs:
    ``header_mode`` (``"current"`` reads X-OpenWebUI-Chat-Id and starts a random session without
    it; ``"adr029"`` reads X-Conversation-ID and falls back to a hash of the first user message),
    ``api_key`` (require ``Authorization: Bearer <key>``), ``reply`` (``messages -> text``, else
    ``Helix reply #<turn> to: <last user message[:60]>`` plus a STEP marker), ``heartbeats`` and
    ``heartbeat_interval`` (``.`` chunks after the first), ``chunk_delay`` (between words),
    ``fault`` / ``fault_delay`` / ``retry_after`` / ``fehler_text``, ``chunked`` (False: an
    HTTP/1.0-style stream that ends by closing) and ``hold`` (an Event each stream waits for
    after its first chunk, up to 10 s).
    """

    def __init__(
        self,
        *,
        header_mode: HeaderMode = "current",
        api_key: str | None = None,
        reply: Reply | None = None,
        heartbeats: int = 0,
        heartbeat_interval: float = 0.01,
        chunk_delay: float = 0.0,
        fault: Fault = Fault.NONE,
        fault_delay: float = 1.0,
        retry_after: float = 1,
        fehler_text: str = "Fehler: Claude Code ist nicht verfuegbar.",
        chunked: bool = True,
        hold: threading.Event | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if header_mode not in _HEADER_BY_MODE:
            raise ValueError("header_mode must be 'current' or 'adr029'")
        self.header_mode: HeaderMode = header_mode
        self.api_key = api_key
        self.reply = reply
        self.heartbeats = heartbeats
        self.heartbeat_interval = heartbeat_interval
        self.chunk_delay = chunk_delay
        self.fault = fault
        self.fault_delay = fault_delay
        self.retry_after = retry_after
        self.fehler_text = fehler_text
        self.chunked = chunked
        self.hold = hold
        """When set to an Event, each stream waits after its first chunk until the event is set."""
        self._address = (host, port)
        self._lock = threading.Lock()
        self._next_faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._sessions: dict[str, HelixSession] = {}
        self._streams_completed = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeHelix:
        """Bind and serve on a background thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self._address, _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"FakeHelix:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by :func:`main`)."""
        self._server = _Server(self._address, _Handler, self)
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, cut open connections and release the port."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHelix:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHelix is not running: call start() or use it in a with block")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>`` (append ``/v1`` for OpenAI clients)."""
        return f"http://{self._address[0]}:{self.port}"

    # ------------------------------------------------------------------------ records, faults

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` chat completions (before :attr:`fault`)."""
        with self._lock:
            self._next_faults.extend([fault] * times)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/chat/completions`` requests so far."""
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("FakeHelix has received no request yet")
            return self._requests[-1]

    @property
    def sessions(self) -> dict[str, HelixSession]:
        """A snapshot of the sessions by id (``conv-<chat id>``, ``session-<hex>``, ...)."""
        with self._lock:
            return {
                sid: dataclasses.replace(s, messages=[dict(m) for m in s.messages])
                for sid, s in self._sessions.items()
            }

    @property
    def streams_completed(self) -> int:
        """How many streams were sent to their end ([DONE] or the planned end of a fault)."""
        with self._lock:
            return self._streams_completed

    def reset(self) -> None:
        """Forget requests, sessions and pending faults (the configuration stays)."""
        with self._lock:
            self._requests.clear()
            self._sessions.clear()
            self._next_faults.clear()
            self._streams_completed = 0
            self.fault = Fault.NONE

    # ---------------------------------------------------------------- used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_fault(self) -> Fault:
        with self._lock:
            return self._next_faults.popleft() if self._next_faults else self.fault

    def _stream_completed(self) -> None:
        with self._lock:
            self._streams_completed += 1

    def _open_session(self, header_value: str | None, messages: list[dict[str, Any]]) -> str:
        """Helix's session lookup: the header's normalised id, else a hash (ADR-029) or random."""
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        if header_value:
            session_id = helix_session_id(header_value)
        elif self.header_mode == "adr029":
            session_id = adr029_stable_session_id(first_user)
        else:
            session_id = f"session-{uuid.uuid4().hex}"
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = HelixSession(session_id, first_user, header_value)
                self._sessions[session_id] = session
            session.messages = [dict(m) for m in messages]
            session.turns += 1
        return session_id

    def _answer(self, session_id: str, messages: list[dict[str, Any]]) -> str:
        if self.reply is not None:
            return self.reply([dict(m) for m in messages])
        with self._lock:
            turn = self._sessions[session_id].turns
        last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return f"Helix reply #{turn} to: {last_user[:60]}\n\n<!-- STEP: what -->"

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


def adr029_stable_session_id(first_message: str) -> str:
    """The ADR-029 build's session id without a header: three words and a hash of the message."""
    words = re.sub(r"[^a-zA-Z0-9\s]", "", first_message.lower()).split()[:3]
    prefix = "-".join(words) if words else "session"
    digest = hashlib.sha256(f"helix-session:{first_message[:200]}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


class _ChatMessage(BaseModel):
    role: str
    content: str


class _ChatRequest(BaseModel):
    """The request model Helix validates (pydantic gives the same 422 details as FastAPI)."""

    model: str = MODEL_ID
    messages: list[_ChatMessage]
    stream: bool = False
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)


def validation_errors(body: object) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` items for a chat completion body (empty when valid)."""
    try:
        _ChatRequest.model_validate(body)
    except ValidationError as exc:
        details = exc.errors(include_url=False)
        return [
            {**e, "loc": ["body", *e["loc"]]} for e in json.loads(json.dumps(details, default=str))
        ]
    return []


def helix_rejection(messages: Sequence[Mapping[str, str]]) -> str | None:
    """Helix's own input check (a 400 ``detail``), or ``None`` when the messages pass."""
    if len(messages) > MAX_MESSAGES:
        return f"Too many messages: {len(messages)}. Maximum allowed: {MAX_MESSAGES}"
    for index, message in enumerate(messages):
        if message["role"] not in VALID_ROLES:
            return (
                f"Invalid role '{message['role']}' in message {index}. "
                f"Valid roles: {', '.join(VALID_ROLES)}"
            )
        if len(message["content"]) > MAX_MESSAGE_CHARS:
            return (
                f"Message {index} too long: {len(message['content'])} characters. "
                f"Maximum allowed: {MAX_MESSAGE_CHARS}"
            )
    return None


# ---------------------------------------------------------------------------- the HTTP side


class _Server(ThreadingHTTPServer):
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHelix"
    sys_version = ""
    timeout = 60
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms ACK stall
    server: _Server

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
            bad_json: str | None = None
        except ValueError as exc:
            body, bad_json = raw.decode("utf-8", "replace"), str(exc)
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
        key = self.helix.api_key
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

    def _chat(self, body: Any, bad_json: str | None) -> None:
        helix = self.helix
        fault = helix._take_fault()
        if self._status_fault(fault):
            return
        if bad_json is not None:
            issue = {"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}
            self._json(422, {"detail": [{**issue, "input": {}, "ctx": {"error": bad_json}}]})
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
            self._json(200, _completion(model, "Fehler: No messages provided"))
            return
        if not any(m["role"] == "user" for m in messages):
            self._json(200, _completion(model, "Fehler: No user message found"))
            return
        header = self.headers.get(_HEADER_BY_MODE[helix.header_mode]) or None
        session_id = helix._open_session(header, messages)
        try:
            text = helix._answer(session_id, messages)
        except Exception as exc:  # a test's reply callable failed: answer like Helix's 500
            logger.debug("FakeHelix: the reply callable raised", exc_info=True)
            self._flat_500(type(exc).__name__, str(exc))
            return
        if fault is Fault.FEHLER:
            self._json(200, _completion(model, helix.fehler_text))
        elif not streaming:
            self._complete(model, text, fault)
        elif fault is Fault.JSON_TO_STREAM:
            self._json(200, _completion(model, text))
        else:
            self._stream(model, text, fault)

    def _status_fault(self, fault: Fault) -> bool:
        """Answer with a fault that comes before Helix looks at the request; ``True`` if sent."""
        helix = self.helix
        if fault is Fault.SLOW_FIRST_BYTE:
            helix._sleep(helix.fault_delay)
        elif fault is Fault.DISCONNECT:
            self._cut()
        elif fault is Fault.SERVER_ERROR:
            self._flat_500("RuntimeError", "Claude Code crashed")
        elif fault is Fault.RATE_LIMITED:
            body = {"error": "Rate limit exceeded: 10 per 1 minute"}
            self._json(429, body, {"Retry-After": f"{helix.retry_after:g}"})
        elif fault is Fault.BAD_GATEWAY:
            self._text(502, "text/plain; charset=utf-8", "Bad Gateway")
        elif fault is Fault.UNAVAILABLE:
            self._json(
                503, {"detail": "Helix is restarting"}, {"Retry-After": f"{helix.retry_after:g}"}
            )
        elif fault is Fault.PLAIN_TEXT_ERROR:
            self._text(500, "text/plain; charset=utf-8", "Internal Server Error")
        elif fault is Fault.HTML_ERROR:
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
        payload = json.dumps(_completion(model, text)).encode()
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
        events = _stream_events(model, text, helix)
        self._event(next(events)[1])
        self._wait_for_hold()
        if fault is Fault.STALL_MID_STREAM:
            helix._sleep(helix.fault_delay)
        elif fault is Fault.ERROR_IN_STREAM:
            helix._stream_completed()
            self._event({"error": {"message": "Claude Code crashed", "type": "server_error"}})
            self._end_stream(counted=True)
            return
        elif fault is Fault.MALFORMED_CHUNK:
            self._write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
        for sent, (pause, event) in enumerate(events):
            if fault is Fault.DROP_MID_STREAM and sent == 2:
                self._cut()
                return
            if fault is Fault.NO_DONE and (event == "[DONE]" or _is_final(event)):
                break
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

    def _flat_500(self, kind: str, message: str) -> None:
        self._json(500, {"error": "Internal server error", "type": kind, "message": message})

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), headers)

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


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _stream_events(model: str, text: str, helix: FakeHelix) -> Iterator[tuple[float, Any]]:
    """Helix's stream as (pause before it, event): status chunk, heartbeats, separator, the
    answer word by word, the final chunk with explicit nulls, ``[DONE]``."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:8]}"
    created = int(time.time())

    def chunk(content: str | None, role: str | None = None, end: bool = False) -> dict[str, Any]:
        delta = {"role": role, "content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if end else None}
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    yield 0.0, chunk(FIRST_CHUNK, role="assistant")
    for _ in range(helix.heartbeats):
        yield helix.heartbeat_interval, chunk(".")
    yield helix.chunk_delay, chunk(SEPARATOR)
    words = text.split(" ")
    for index, word in enumerate(words):
        yield helix.chunk_delay, chunk(word if index == len(words) - 1 else word + " ")
    yield 0.0, chunk(None, end=True)
    yield 0.0, "[DONE]"


def _is_final(event: object) -> bool:
    if not isinstance(event, dict):
        return False
    choices = cast(list[dict[str, Any]], event.get("choices") or [{}])
    return choices[0].get("finish_reason") == "stop"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m helix_pipeline.testing``: run FakeHelix in the foreground, logging requests."""
    parser = argparse.ArgumentParser(description="Run FakeHelix, a Helix look-alike for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--header-mode", choices=sorted(_HEADER_BY_MODE), default="current")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--heartbeats", type=int, default=1, help="'.' heartbeats per stream")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="seconds between words")
    parser.add_argument("--fault", choices=[f.value for f in Fault], default=Fault.NONE.value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    helix = FakeHelix(
        header_mode=args.header_mode,
        api_key=args.api_key,
        heartbeats=args.heartbeats,
        heartbeat_interval=args.heartbeat_interval,
        chunk_delay=args.chunk_delay,
        fault=Fault(args.fault),
        host=args.host,
        port=args.port,
    )
    logger.info(
        "FakeHelix on http://%s:%d (header mode %s)", args.host, args.port, args.header_mode
    )
    try:
        helix.serve_forever()
    except KeyboardInterrupt:
        logger.info("FakeHelix stopped")


if __name__ == "__main__":
    main()
