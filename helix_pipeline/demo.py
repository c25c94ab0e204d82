"""``helix-pipeline demo``: an Open WebUI chat played through the Helix pipe, as a transcript.

The demo builds :class:`~helix_pipeline.pipe.HelixPipe` as ``pipelines/helix.py`` does and calls
its hooks in the order the Pipelines server does for Open WebUI 0.12.4 (bodies from
:class:`~helix_pipeline.testing.openwebui.OpenWebUIChat`): a title task and the first turn arrive
together, then each turn is ``inlet``, ``pipe`` (the body without ``metadata``) and ``outlet``.
Helix is FakeHelix on loopback unless ``--helix-url`` names a real one; either way the pipe talks
to it through a :class:`~helix_pipeline.testing.relay.RecordingRelay`, so the transcript shows
what Helix really received.

It prints facts and judges nothing (``tests/test_demo.py`` checks them). Only a failure ends it
early, with one line: Helix unreachable, a turn answered with the pipe's failure notice, a store
that cannot be read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from .cli_sessions import plural, preview
from .client import HelixClient
from .conversation import ConversationKey, helix_session_id
from .errors import BackendError, BackendUnavailable, ConfigError
from .messages import Message
from .notices import is_notice, visible
from .pipe import HelixPipe, PipeItem
from .stores import SessionStore, open_store
from .testing import RecordedRequest
from .testing.openwebui import TITLE_TASK, ChatTurn, OpenWebUIChat, pipe_arguments
from .testing.relay import RecordingRelay
from .urls import redact_url
from .valves import DEFAULT_HEADERS, HelixValves

__all__ = ["DEMO_TURNS", "run_demo"]

DEMO_TURNS = (
    "Hello, my name is Ana. What is 2+2?",
    "And what is that number times 10?",
    "Thanks! What was my name again?",
)
HEADER_NAMES = tuple(DEFAULT_HEADERS.split(","))


@dataclass(frozen=True, slots=True)
class _Answer:
    """One ``pipe()`` call: the request Helix got for it (if any) and what the person saw."""

    received: RecordedRequest | None
    text: str
    statuses: tuple[str, ...]
    notice: str | None


class _Transcript:
    """Plays the chat through the pipe and writes down what happened, step by step."""

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

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def row(self, label: str, text: str) -> None:
        self.out.write(f"    {label:<19} {text}".rstrip() + "\n")

    def stored(self) -> list[Message]:
        return self.reader.load(ConversationKey(self.chat.user["id"], self.chat.chat_id))

    def call_pipe(self, inlet: dict[str, Any]) -> _Answer:
        """``pipe()`` as the Pipelines server calls it, and the request Helix got for it."""
        before = len(self.relay.chat_requests())
        result = self.pipe.pipe(**pipe_arguments(self.chat.pipe_body(inlet)))
        items: list[PipeItem] = [result] if isinstance(result, str) else list(result)
        texts = [item for item in items if isinstance(item, str)]
        sent = self.relay.chat_requests()[before:]
        return _Answer(
            received=sent[-1] if sent else None,
            text="".join(texts),
            statuses=tuple(_statuses(items)),
            notice=_notice(texts),
        )

    def play(self, number: int, text: str) -> None:
        """One turn in the Pipelines server's order (the first with its title task)."""
        turn = self.chat.start_turn(text)
        user = self.chat.user
        self.line()
        self.line(f"Turn {number}")
        self.row(f"{user['name']} types", text)
        task_inlet = None
        if number == 1:
            task_inlet = self.pipe.inlet(self.chat.task_inlet_body(turn), user)
        inlet = self.pipe.inlet(self.chat.inlet_body(turn), user)
        if task_inlet is not None:
            self.title_task(number, task_inlet)
        self.chat_turn(number, turn, inlet)

    def title_task(self, number: int, inlet: dict[str, Any]) -> None:
        """The title task Open WebUI starts together with the first turn."""
        self.line(f"  Open WebUI's {TITLE_TASK} task, started together with turn {number}:")
        self.row(
            "Open WebUI sends", f"{_count(len(inlet['messages']))}, metadata.task {TITLE_TASK}"
        )
        answer = self.call_pipe(inlet)
        self.helix_rows(answer.received, task=True)
        self.answer_rows(number, answer)
        self.store_row()
        self.line(f"  Turn {number} itself:")

    def chat_turn(self, number: int, turn: ChatTurn, inlet: dict[str, Any]) -> None:
        """One chat turn's ``pipe()`` and ``outlet``."""
        self.row("Open WebUI sends", f"{_count(len(inlet['messages']))}, the whole chat")
        answer = self.call_pipe(inlet)
        self.helix_rows(answer.received)
        self.answer_rows(number, answer)
        self.chat.finish_turn(turn, answer.text)
        self.pipe.outlet(self.chat.outlet_body(turn), self.chat.user)
        self.store_row()

    def helix_rows(self, received: RecordedRequest | None, *, task: bool = False) -> None:
        """What Helix received: each message, and the conversation headers."""
        if received is None:
            self.row("Helix receives", "nothing: the pipe did not ask Helix")
            return
        body = received.body if isinstance(received.body, dict) else {}
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        earlier = len(messages) - 1 if messages and messages[-1].get("role") == "user" else 0
        what = "the task's prompt" if task else _earlier(earlier)
        self.row("Helix receives", f"{_count(len(messages))}: {what}")
        for message in messages:
            role, content = str(message.get("role")), str(message.get("content"))
            self.row("", f"  {role:<10} {preview(content)}")
        for index, name in enumerate(HEADER_NAMES):
            value = received.header(name)
            shown = "(not sent)" if value is None else value
            self.row("" if index else "headers", f"{name}: {shown}")
        value = received.header(HEADER_NAMES[0])
        session = (
            "(no header: a new one of Helix's own)" if value is None else helix_session_id(value)
        )
        self.row("Helix session", session)

    def answer_rows(self, number: int, answer: _Answer) -> None:
        """What the person saw; a failure notice ends the demo (the chat showed it)."""
        if answer.statuses:
            self.row("status lines", " > ".join(answer.statuses))
        self.row("shown", preview(visible(answer.text)) or "(nothing)")
        if answer.notice is not None:
            raise BackendError(f"turn {number}: the pipe answered with an error: {answer.notice}")

    def store_row(self) -> None:
        stored = self.stored()
        if not stored:
            self.row("store holds", "nothing for this chat")
            return
        roles = ", ".join(m.role + (" (partial)" if m.partial else "") for m in stored)
        ids = sum(1 for m in stored if m.message_id)
        self.row("store holds", f"{_count(len(stored))}: {roles}")
        self.row("", f"{ids} of them with Open WebUI's message id")

    def summary(self, store_url: str | None) -> None:
        """What Helix got over the whole chat, and where to look at what was stored."""
        received = self.relay.chat_requests()
        values = [r.header(HEADER_NAMES[0]) for r in received]
        with_header = [v for v in values if v is not None]
        self.line()
        self.line("Afterwards")
        self.row(
            "Helix received",
            f"{plural(len(received), 'request')}: {len(with_header)} with the conversation "
            f"headers, {len(values) - len(with_header)} without",
        )
        sessions = {helix_session_id(v): with_header.count(v) for v in with_header}
        for session, count in sessions.items():
            self.row("Helix session", f"{session}: {plural(count, 'request')}")
        self.row("store holds", f"{_count(len(self.stored()))} for chat {self.chat.chat_id}")
        if store_url is not None:
            self.row(
                "see them",
                f"helix-pipeline sessions --store '{redact_url(store_url)}' show "
                f"--user {self.chat.user['id']} {self.chat.chat_id}",
            )


def run_demo(
    out: TextIO,
    *,
    helix_url: str | None = None,
    store_url: str | None = None,
    stream: bool = True,
) -> int:
    """Play three turns and a title task through the Helix pipe, printing what happened.

    Returns 0 once the chat is played; raises a :class:`~helix_pipeline.errors.HelixPipelineError`
    when it cannot be (Helix unreachable, a turn that failed, a store that cannot be read).
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
        kept_url = store_url
        if store_url is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="helix-demo-"))
            store_url = f"sqlite:///{folder}/sessions.db"
        pipe = _start_pipe(stack, relay.url, store_url)
        reader = open_store(store_url)
        stack.callback(reader.close)
        chat = OpenWebUIChat(model=f"helix.{pipe.models()[0]['id']}", stream=stream)
        transcript = _Transcript(out, pipe, relay, reader, chat)
        transcript.line("helix-pipeline demo: an Open WebUI 0.12.4 chat through the Helix pipe")
        transcript.row("Helix", helix_shown)
        transcript.row(
            "store", redact_url(store_url) + (" (temporary)" if kept_url is None else "")
        )
        transcript.row("chat", chat.chat_id)
        transcript.row("user", f"{chat.user['id']} ({chat.user['name']})")
        transcript.row("model", f"{chat.model}, {'streaming' if stream else 'not streaming'}")
        for number, text in enumerate(DEMO_TURNS, 1):
            transcript.play(number, text)
        transcript.summary(kept_url)
    return 0


def _start_pipe(stack: ExitStack, helix_url: str, store_url: str) -> HelixPipe:
    """The pipe as an admin would set it up, whatever valves the environment holds."""
    valves = HelixValves(
        HELIX_BASE_URL=helix_url,
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
    return pipe


def _statuses(items: Iterable[PipeItem]) -> Iterator[str]:
    """The status lines Open WebUI shows above the answer, in order, each once."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, dict):
            description = item.get("event", {}).get("data", {}).get("description")
            if isinstance(description, str) and description not in seen:
                seen.add(description)
                yield description


def _notice(texts: list[str]) -> str | None:
    """The pipe's failure notice among the answer's texts (a plain answer ends with it)."""
    for text in texts:
        for candidate in (text, text.rpartition("\n\n")[2]):
            if is_notice(candidate):
                return " ".join(visible(candidate).split())
    return None


def _count(number: int) -> str:
    return plural(number, "message")


def _earlier(number: int) -> str:
    if number == 0:
        return "the new one, nothing earlier"
    return f"{number} earlier + the new one"


def _check_reachable(url: str) -> None:
    try:
        with HelixClient(url, connect_timeout=3.0, read_timeout=10.0, max_retries=0) as client:
            client.health()
    except BackendError as exc:
        raise BackendUnavailable(
            f"{exc} (For the demo: start Helix, or leave out --helix-url to use the built-in "
            "FakeHelix.)"
        ) from exc
