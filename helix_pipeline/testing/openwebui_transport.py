"""Open WebUI 0.12.4 playing a chat against our pipe: in process, or over HTTP to a Pipelines server.

    chat = Chat(InProcess(pipe))                      # or OverHTTP(server.url, api_key)
    reply = chat.turn("hello")                        # inlet -> pipe -> outlet
    assert "Helix" in reply.content

A :class:`Transport` is how the Pipelines server is reached: :class:`InProcess` calls a pipe's
(and optionally a session filter's) hooks the way the server calls them; :class:`OverHTTP` posts
to a running server as Open WebUI does (``/{id}/filter/inlet``, ``/chat/completions``,
``/{id}/filter/outlet``, with its API key). :class:`Chat` plays an :class:`OpenWebUIChat`'s turns
over either. The bodies are :mod:`.openwebui`'s; nothing else in tests or benchmarks builds them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import requests

from ..errors import HelixPipelineError
from .openwebui import TITLE_TASK, ChatTurn, OpenWebUIChat, pipe_arguments, pipe_body

__all__ = [
    "Chat",
    "Hooks",
    "HostError",
    "InProcess",
    "OverHTTP",
    "Reply",
    "Transport",
    "ask",
    "parse_sse",
    "read_answer",
]

REQUEST_TIMEOUT_S = 60.0
"""How long a test waits for the Pipelines server (a whole answer included)."""


class HostError(HelixPipelineError):
    """The Pipelines server answered a hook or ``/chat/completions`` with an HTTP error."""


@dataclasses.dataclass
class Reply:
    """What the person saw of one answer, and how it arrived."""

    content: str
    """The answer's text: the strings joined (status events left out)."""
    status_code: int = 200
    items: list[Any] = dataclasses.field(default_factory=list)
    """In process: what ``pipe()`` returned or yielded, in order."""
    chunks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Over HTTP: every streamed ``chat.completion.chunk``."""
    statuses: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The status events shown above the answer, in order."""
    done: bool = True
    """A stream ended with ``data: [DONE]`` (always true for a complete answer)."""
    finish_reason: str | None = "stop"
    whole: bool = False
    """In process: ``pipe()`` returned one string rather than a generator."""
    raw: str = ""
    outlet: Any = None
    """What the outlet hooks returned after this turn (:meth:`Chat.turn` only)."""


class Transport(Protocol):
    """The three calls Open WebUI makes for a pipe model's turn."""

    def inlet(self, body: Any, user: Any) -> Any: ...

    def answer(self, body: dict[str, Any], *, headers: Mapping[str, str] | None = None) -> Reply:
        """The model's answer to the body Open WebUI posts to ``/chat/completions``."""
        ...

    def outlet(self, body: Any, user: Any) -> Any: ...


class Hooks(Protocol):
    """A pipe or a filter as the Pipelines server holds it (our pipe's ``pipe()`` included)."""

    def inlet(self, body: Any, user: Any) -> Any: ...

    def outlet(self, body: Any, user: Any) -> Any: ...


class InProcess:
    """The Pipelines server's calls without the server: the filter's hook (if any) and then the
    pipe's for inlet and outlet, ``pipe(**pipe_arguments(body))`` for the answer (HTTP headers
    do not reach a pipe: ``headers`` is ignored here)."""

    def __init__(self, pipe: Any, session_filter: Hooks | None = None) -> None:
        self.pipe = pipe
        self.hooks: list[Hooks] = [*([session_filter] if session_filter else []), pipe]

    def inlet(self, body: Any, user: Any) -> Any:
        for hooks in self.hooks:
            body = hooks.inlet(body, user)
        return body

    def outlet(self, body: Any, user: Any) -> Any:
        for hooks in self.hooks:
            body = hooks.outlet(body, user)
        return body

    def answer(self, body: dict[str, Any], *, headers: Mapping[str, str] | None = None) -> Reply:
        result = self.pipe.pipe(**pipe_arguments(body))
        whole = isinstance(result, str)
        items = [result] if whole else host_items(result)
        return Reply(
            "".join(item for item in items if isinstance(item, str)),
            items=items,
            statuses=[item["event"] for item in items if isinstance(item, dict)],
            whole=whole,
        )


def host_items(result: Iterable[Any]) -> list[Any]:
    """What a ``pipe()`` generator yielded, each checked to be what the Pipelines server sends
    on: a non-blank string (a blank one would be an empty chunk) or a status event."""
    items = list(result)
    for item in items:
        if isinstance(item, dict):
            assert item.get("event", {}).get("type") == "status", f"not a status event: {item}"
        else:
            assert isinstance(item, str), f"pipe() yielded a {type(item).__name__}"
            assert item, "pipe() yielded a blank string"
    return items


class OverHTTP:
    """A running Pipelines server, called as Open WebUI calls it (one keep-alive session a
    thread). ``hooks`` are the ids whose inlet and outlet run, in order (Open WebUI's global
    filters, then the model); by default the body's model alone."""

    def __init__(self, url: str, api_key: str, *, hooks: Sequence[str] | None = None) -> None:
        self.url = url
        self.api_key = api_key
        self.hooks = list(hooks) if hooks is not None else None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        """This thread's keep-alive session (tests play several chats at once)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def post(
        self, path: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        """``POST path`` with the bearer key; the response is streamed (read it or close it)."""
        sent = {**(headers or {}), "Authorization": f"Bearer {self.api_key}"}
        return self.session().post(
            f"{self.url}{path}", json=body, headers=sent, timeout=REQUEST_TIMEOUT_S, stream=True
        )

    def hook(self, hook: str, pipeline_id: str, body: Any, user: Any) -> Any:
        """``POST /{pipeline_id}/filter/{hook}`` with ``{"body", "user"}``; what it returned."""
        with self.post(f"/{pipeline_id}/filter/{hook}", {"body": body, "user": user}) as response:
            if response.status_code != 200:
                raise HostError(
                    f"POST /{pipeline_id}/filter/{hook}: HTTP {response.status_code} "
                    f"{response.text[:500]}"
                )
            return response.json()

    def inlet(self, body: Any, user: Any) -> Any:
        for pipeline_id in self._hook_ids(body):
            body = self.hook("inlet", pipeline_id, body, user)
        return body

    def outlet(self, body: Any, user: Any) -> Any:
        for pipeline_id in self._hook_ids(body):
            body = self.hook("outlet", pipeline_id, body, user)
        return body

    def _hook_ids(self, body: Any) -> list[str]:
        return self.hooks if self.hooks is not None else [str(body["model"])]

    def answer(self, body: dict[str, Any], *, headers: Mapping[str, str] | None = None) -> Reply:
        """``POST /chat/completions``; a stream (``body["stream"]``, default true) is read whole."""
        with self.post("/chat/completions", body, headers=headers) as response:
            raw = response.content.decode("utf-8")
        if response.status_code != 200:
            return Reply("", response.status_code, done=False, finish_reason=None, raw=raw)
        return read_answer(raw, stream=body.get("stream", True) is not False)


def read_answer(raw: str, *, stream: bool) -> Reply:
    """A ``/chat/completions`` answer (an SSE stream or one completion) as a :class:`Reply`."""
    if not stream:
        choice = json.loads(raw)["choices"][0]
        return Reply(
            choice["message"]["content"] or "", finish_reason=choice.get("finish_reason"), raw=raw
        )
    chunks, done = parse_sse(raw)
    choices = [choice for chunk in chunks for choice in chunk.get("choices", [])]
    return Reply(
        "".join((choice.get("delta") or {}).get("content") or "" for choice in choices),
        chunks=chunks,
        statuses=[chunk["event"] for chunk in chunks if "event" in chunk],
        done=done,
        finish_reason=next((c["finish_reason"] for c in choices if c.get("finish_reason")), None),
        raw=raw,
    )


def parse_sse(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON events of an SSE body and whether it ended with ``[DONE]``; raises on junk."""
    events: list[dict[str, Any]] = []
    done = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("data:"):
            raise ValueError(f"not an SSE data line: {line!r}")
        data = line[len("data:") :].strip()
        if done:
            raise ValueError(f"an event after [DONE]: {data!r}")
        if data == "[DONE]":
            done = True
            continue
        events.append(json.loads(data))
    return events, done


def ask(transport: Transport, body: Any, user: dict[str, Any]) -> Reply:
    """One request of a pipe model as Open WebUI sends it, for a body of one's own (a recorded
    one, or one a test shaped): the inlet, then the answer to what it returned; no outlet."""
    inlet = transport.inlet(body, user)
    return transport.answer(pipe_body(inlet, user, tools=None))


class Chat:
    """One Open WebUI chat played over a transport: each turn's inlet, answer and outlet, the
    reply kept in the chat as Open WebUI keeps it. Swap ``transport`` to continue the chat on
    another pipe or server; :meth:`branch` opens a second tab for an edit."""

    def __init__(self, transport: Transport, chat: OpenWebUIChat | None = None, **options: Any):
        self.transport = transport
        self.chat = chat or OpenWebUIChat(**options)
        self.last_turn: ChatTurn | None = None

    @property
    def user(self) -> dict[str, str]:
        return self.chat.user

    @property
    def chat_id(self) -> str:
        return self.chat.chat_id

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.chat.messages

    def turn(
        self, text: str, *, stream: bool | None = None, extra: Mapping[str, Any] | None = None
    ) -> Reply:
        """The person sends ``text``; ``extra`` joins the inlet body (model parameters)."""
        chat = self.chat
        turn = chat.start_turn(text)
        if stream is not None:
            turn = dataclasses.replace(turn, stream=stream)
        self.last_turn = turn
        inlet = self.transport.inlet({**chat.inlet_body(turn), **(extra or {})}, chat.user)
        reply = self.transport.answer(chat.pipe_body(inlet))
        if reply.status_code != 200:
            raise HostError(f"POST /chat/completions: HTTP {reply.status_code} {reply.raw[:500]}")
        chat.finish_turn(turn, reply.content)
        reply.outlet = self.transport.outlet(chat.outlet_body(turn), chat.user)
        return reply

    def send(self, text: str, **options: Any) -> str:
        """The text the person saw for ``text`` (see :meth:`turn`)."""
        return self.turn(text, **options).content

    def task(self, task: str = TITLE_TASK) -> Reply:
        """A background task for the last turn (a title by default): inlet and answer, no outlet."""
        if self.last_turn is None:
            raise ValueError("a task follows a turn: call turn() first")
        inlet = self.transport.inlet(self.chat.task_inlet_body(self.last_turn, task), self.user)
        return self.transport.answer(self.chat.pipe_body(inlet))

    def branch(self, keep: int) -> Chat:
        """This chat in a second tab showing its first ``keep`` messages, about to be edited."""
        return Chat(self.transport, self.chat.branch(keep))
