"""FakeHelix, the object a test holds: its options, lifecycle, records, sessions and faults.

Every option is an attribute a test may change while the server runs. The server and handler
(:mod:`.handler`) call back into it to record requests, take the next fault, open or update a
session (Helix's lookup by conversation header, :mod:`.helix_rules`) and compose the answer.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..conversation import helix_session_id
from .faults import Fault
from .handler import Handler, Server
from .helix_rules import HEADER_BY_MODE, HeaderMode, adr029_stable_session_id
from .records import HelixSession, RecordedRequest

__all__ = ["FakeHelix", "Reply"]

Reply = Callable[[list[dict[str, Any]]], str]


class FakeHelix:
    """A Helix look-alike on a background thread; a context manager (``with FakeHelix() as h``).

    Every option is also an attribute that a test may change while the server runs:
    ``header_mode`` (``"current"`` reads X-OpenWebUI-Chat-Id and starts a random session without
    it; ``"adr029"`` reads X-Conversation-ID and falls back to a hash of the first user message),
    ``proxy_api_key`` (a proxy in front that requires ``Authorization: Bearer <key>``: real
    Helix checks no key), ``reply`` (``messages -> text``, else ``Helix reply #<turn> to: <last
    user message[:60]>`` plus a STEP marker), ``tools`` (tool markers ``\n[Read] `` after the
    first chunk), ``heartbeats`` and ``heartbeat_interval`` (``.`` chunks), ``separator_delay``
    (the least time from the first chunk to the ``---`` separator: at least 1 s in real Helix, 0
    here so that tests stay fast), ``chunk_delay`` (between words), ``fault`` / ``fault_delay`` /
    ``retry_after``, ``error_text`` (the exception text of ``error-mid-stream`` and
    ``claude-error-result``), ``crash_stderr`` (``claude-crash``), ``chunked`` (False: an
    HTTP/1.0-style stream that ends by closing) and ``hold`` (an Event each stream waits for
    after its first chunk, up to 10 s; with ``hold_words`` set, after that many words of the
    answer instead).
    """

    def __init__(
        self,
        *,
        header_mode: HeaderMode = "current",
        proxy_api_key: str | None = None,
        reply: Reply | None = None,
        tools: tuple[str, ...] = (),
        heartbeats: int = 0,
        heartbeat_interval: float = 0.01,
        separator_delay: float = 0.0,
        chunk_delay: float = 0.0,
        fault: Fault = Fault.NONE,
        fault_delay: float = 1.0,
        retry_after: float = 1,
        error_text: str = "name 'logger' is not defined",
        crash_stderr: str = "Error: Claude Code process exited with code 1",
        chunked: bool = True,
        hold: threading.Event | None = None,
        hold_words: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if header_mode not in HEADER_BY_MODE:
            raise ValueError("header_mode must be 'current' or 'adr029'")
        self.header_mode: HeaderMode = header_mode
        self.proxy_api_key = proxy_api_key
        self.reply = reply
        self.tools = tools
        self.heartbeats = heartbeats
        self.heartbeat_interval = heartbeat_interval
        self.separator_delay = separator_delay
        self.chunk_delay = chunk_delay
        self.fault = fault
        self.fault_delay = fault_delay
        self.retry_after = retry_after
        self.error_text = error_text
        self.crash_stderr = crash_stderr
        self.chunked = chunked
        self.hold = hold
        self.hold_words = hold_words
        """When set to an Event, each stream waits after its first chunk until the event is set."""
        self._address = (host, port)
        self._lock = threading.Lock()
        self._next_faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._sessions: dict[str, HelixSession] = {}
        self._streams_completed = 0
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeHelix:
        """Bind and serve on a background thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = Server(self._address, Handler, self)
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
        self._server = Server(self._address, Handler, self)
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
