"""``helix-pipeline demo``: an Open WebUI chat played through the Helix pipe, shown step by step.

The demo builds :class:`~helix_pipeline.pipe.HelixPipe` as ``pipelines/helix.py`` does and calls
its hooks in the order the Pipelines server does for Open WebUI 0.12.4: a title task and the first
turn arrive together, then each turn is ``inlet``, ``pipe`` (the body without ``metadata``) and
``outlet``. Helix is FakeHelix on loopback unless ``--helix-url`` names a real one; either way the
pipe talks to it through a recording relay, so the transcript shows what Helix really received.
Every step is checked, and the first thing that does not hold ends the demo with its reason.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import requests
import urllib3.exceptions

from .cli_sessions import plural, preview
from .client import HelixClient, iter_body
from .conversation import ConversationKey, header_safe, helix_session_id
from .errors import BackendError, BackendUnavailable, ConfigError
from .pipe import HelixPipe, shown_text
from .stores import SessionStore, open_store
from .testing import RecordedRequest
from .testing.openwebui import TITLE_TASK, ChatTurn, OpenWebUIChat, pipe_arguments
from .urls import redact_url
from .valves import DEFAULT_HEADERS, HelixValves

__all__ = ["DEMO_TURNS", "RecordingRelay", "run_demo"]

log = logging.getLogger(__name__)

DEMO_TURNS = (
    "Hello, my name is Ana. What is 2+2?",
    "And what is that number times 10?",
    "Thanks! What was my name again?",
)
_NOTICE_PREFIX = "⚠️"


# ---------------------------------------------------------------------------- the relay


class RecordingRelay:
    """A loopback HTTP relay to Helix that records every request (a context manager).

    Answers, streams included, are passed back as they arrive; an unreachable Helix is a 502.
    """

    def __init__(self, upstream: str, *, timeout: float = 600.0) -> None:
        base = upstream.rstrip("/")
        self.upstream = base[: -len("/v1")] if base.endswith("/v1") else base
        self.timeout = timeout
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self.session = requests.Session()
        self._server = _RelayServer(("127.0.0.1", 0), _RelayHandler)
        self._server.relay = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> RecordingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.session.close()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    relay: RecordingRelay

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("relay: a connection from %s failed", client_address, exc_info=True)


_HOP_BY_HOP = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}


class _RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RelayServer

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("relay %s", format % args)

    def _relay(self, method: str) -> None:
        relay = self.server.relay
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        relay.record(RecordedRequest(method, self.path, dict(self.headers.items()), body))
        self.close_connection = True
        try:
            answer = relay.session.request(
                method,
                relay.upstream + self.path,
                data=raw or None,
                headers=headers,
                stream=True,
                timeout=(5.0, relay.timeout),
            )
        except requests.RequestException as exc:
            detail = json.dumps({"detail": f"relay: Helix unreachable ({type(exc).__name__})"})
            self.send_response(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(detail)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(detail.encode())
            return
        with answer:
            self.send_response(answer.status_code)
            for name in ("Content-Type", "Retry-After"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for chunk in iter_body(answer):
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
                log.debug("relay: Helix's answer was cut off", exc_info=True)
                return  # no final chunk: the client sees the cut, as it would from Helix
            self.wfile.write(b"0\r\n\r\n")


# ------------------------------------------------------------------------------ the demo


@dataclass(frozen=True, slots=True)
class _Seen:
    """What Helix received for one ``pipe()`` call, and the reply the pipe gave back."""

    messages: int
    header: str | None
    reply: str


class _Demo:
    """Plays the chat through the pipe, prints each step and stops at the first that fails."""

    def __init__(
        self,
        out: TextIO,
        pipe: HelixPipe,
        relay: RecordingRelay,
        reader: SessionStore,
        chat: OpenWebUIChat,
    ) -> None:
        self.out = out
        self.pipe = pipe
        self.relay = relay
        self.reader = reader
        self.chat = chat
        self.header_name = DEFAULT_HEADERS.split(",")[0]

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def row(self, label: str, text: str) -> None:
        self.out.write(f"    {label:<19} {text}\n")

    def call_pipe(self, body: dict[str, Any]) -> _Seen:
        """``pipe()`` as the Pipelines server calls it, and the one request Helix got for it."""
        before = len(self.relay.chat_requests())
        result = self.pipe.pipe(**pipe_arguments(body))
        reply = shown_text(result)
        sent = self.relay.chat_requests()[before:]
        if reply.lstrip().startswith(_NOTICE_PREFIX):
            raise BackendError(f"the pipe answered with an error: {' '.join(reply.split())}")
        if not sent:
            raise BackendError("the pipe answered without asking Helix")
        request = sent[-1]
        messages = request.body.get("messages") if isinstance(request.body, dict) else None
        count = len(messages) if isinstance(messages, list) else 0
        return _Seen(count, request.header(self.header_name), reply)

    def stored_roles(self) -> list[str]:
        key = ConversationKey(self.chat.user["id"], self.chat.chat_id)
        return [m.role for m in self.reader.load(key)]

    def title_task(self, turn: ChatTurn, inlet: dict[str, Any]) -> None:
        """The title task Open WebUI starts with the first turn: no header, nothing stored."""
        before = self.stored_roles()
        seen = self.call_pipe(self.chat.pipe_body(inlet))
        self.row("Open WebUI -> pipe", f"1 message: the {TITLE_TASK} task, same chat")
        self.row("pipe -> Helix", f"{_count(seen.messages)}, no conversation header")
        self.row("", "(Helix gives it a throwaway session of its own)")
        self.row("Helix's answer", preview(seen.reply) or "(empty)")
        if seen.header is not None:
            raise BackendError(
                f"the title task reached Helix with {self.header_name}: {seen.header}"
            )
        if self.stored_roles() != before:
            raise BackendError("the title task was recorded in the conversation's history")
        self.row("stored", "nothing: background tasks never touch the history")

    def chat_turn(self, number: int, turn: ChatTurn, inlet: dict[str, Any]) -> str:
        """One chat turn's ``pipe()`` and ``outlet``; the Helix session it went to."""
        seen = self.call_pipe(self.chat.pipe_body(inlet))
        self.chat.finish_turn(turn, seen.reply)
        self.pipe.outlet(self.chat.outlet_body(turn), self.chat.user)
        stored = self.stored_roles()
        sent = len(inlet["messages"])
        self.row("Open WebUI -> pipe", f"{_count(sent)}, chat {self.chat.chat_id}")
        self.row("pipe -> Helix", f"{_count(seen.messages)}, {self.header_name}: {seen.header}")
        session = helix_session_id(seen.header or "")
        self.row("", f"(Helix session {session})")
        self.row("Helix's answer", preview(seen.reply) or "(empty)")
        self.row("stored", f"{_count(len(stored))} in the active branch")
        if seen.header != header_safe(self.chat.chat_id):
            raise BackendError(
                f"turn {number} reached Helix with {self.header_name}: {seen.header!r}, "
                "not the chat id"
            )
        if seen.messages != 2 * number - 1:
            raise BackendError(
                f"turn {number} sent Helix {_count(seen.messages)}, not the {2 * number - 1} "
                "of the whole chat"
            )
        if stored != ["user", "assistant"] * number:
            raise BackendError(f"turn {number} left {_count(len(stored))} stored, not {2 * number}")
        return session

    def play(self, number: int, text: str) -> str:
        """One turn in the Pipelines server's order (the first with its title task)."""
        turn = self.chat.start_turn(text)
        user = self.chat.user
        self.line()
        self.line(f"Turn {number}: the user writes {text!r}")
        title_inlet = None
        if number == 1:
            title_inlet = self.pipe.inlet(self.chat.task_inlet_body(turn), user)
        inlet = self.pipe.inlet(self.chat.inlet_body(turn), user)
        if title_inlet is not None:
            self.line("  The title task, which Open WebUI starts together with turn 1:")
            self.title_task(turn, title_inlet)
            self.line("  The turn itself:")
        return self.chat_turn(number, turn, inlet)


def run_demo(
    out: TextIO,
    *,
    helix_url: str | None = None,
    store_url: str | None = None,
    stream: bool = True,
) -> int:
    """Play three turns and a title task through the Helix pipe, printing what happened.

    Returns 0 when everything held; raises a :class:`~helix_pipeline.errors.HelixPipelineError`
    that says what did not (Helix unreachable, a header missing, history not stored, ...).
    """
    if store_url is not None and store_url.startswith("memory:"):
        raise ConfigError(
            "the demo reads what was stored through its own connection, and a memory:// store "
            "lives only inside the pipe: pass a sqlite://, redis:// or postgresql:// URL",
            setting="--store",
        )
    with ExitStack() as stack:
        if helix_url is None:
            from .testing import FakeHelix

            helix_url = stack.enter_context(FakeHelix()).url
            helix_shown = f"FakeHelix at {helix_url} (built in; --helix-url for a real one)"
        else:
            helix_shown = f"Helix at {redact_url(helix_url)}"
        _check_reachable(helix_url)
        relay = stack.enter_context(RecordingRelay(helix_url))
        temporary = store_url is None
        if store_url is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="helix-demo-"))
            store_url = f"sqlite:///{folder}/sessions.db"
        valves = HelixValves(
            HELIX_BASE_URL=relay.url,
            SESSION_STORE_URL=store_url,
            CONVERSATION_HEADERS=DEFAULT_HEADERS,
            HISTORY_ENABLED=True,
            MAX_HISTORY_MESSAGES=100,
            MAX_MESSAGE_CHARS=100_000,
            MAX_HISTORY_CHARS=500_000,
            STORE_TEMPORARY_CHATS=False,
            SESSION_TTL_DAYS=0,
            TASKS="forward",
            MAX_RETRIES=0,
        )
        pipe = HelixPipe(lambda: valves)
        pipe.startup()
        stack.callback(pipe.shutdown)
        reader = open_store(store_url)
        stack.callback(reader.close)
        model_id = pipe.models()[0]["id"]
        chat = OpenWebUIChat(model=f"helix.{model_id}", stream=stream)
        demo = _Demo(out, pipe, relay, reader, chat)
        demo.line("helix-pipeline demo: an Open WebUI 0.12.4 chat through the Helix pipe")
        demo.row("Helix", helix_shown)
        demo.row("store", f"{redact_url(store_url)}{' (temporary)' if temporary else ''}")
        demo.row("chat", chat.chat_id)
        demo.row("user", f"{chat.user['id']} ({chat.user['name']})")
        demo.row("model", f"{chat.model}, {'streaming' if stream else 'not streaming'}")
        sessions = [demo.play(number, text) for number, text in enumerate(DEMO_TURNS, 1)]
        if len(set(sessions)) != 1:
            raise BackendError(f"Helix saw the chat as several sessions: {', '.join(sessions)}")
        demo.line()
        demo.line(f"All held: one Helix session for all {len(DEMO_TURNS)} turns ({sessions[0]}),")
        demo.line("the whole chat sent to Helix every turn and stored once, and the title task")
        demo.line("sent without the conversation header and not stored.")
        if not temporary:
            demo.line(
                f"See it: helix-pipeline sessions --store '{redact_url(store_url)}' show "
                f"--user {chat.user['id']} {chat.chat_id}"
            )
    return 0


def _count(number: int) -> str:
    return plural(number, "message")


def _check_reachable(url: str) -> None:
    try:
        with HelixClient(url, connect_timeout=3.0, read_timeout=10.0, max_retries=0) as client:
            client.health()
    except BackendError as exc:
        raise BackendUnavailable(
            f"{exc} (For the demo: start Helix, or leave out --helix-url to use the built-in "
            "FakeHelix.)"
        ) from exc
