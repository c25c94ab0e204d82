"""Helix failing in every way we know: the person always gets a clear chat message, the turn is
recorded (a cut-off answer as partial), and the next turn works.

The faults are real Helix's own failure forms (uke16/Helix b979a99: Claude Code unavailable, an
error before or after the stream began, a crash, a timeout, its 500), the network's, and those of
a proxy or another OpenAI-compatible server in front. Helix's failure text is never shown as its
answer, never recorded, and never sent back to Helix; its progress decorations become statuses.

Each fault runs twice, in an Open WebUI 0.12.4 chat (the driver's :class:`Chat`): in-process
through :class:`HelixPipe` (streaming and not), and through the real Open WebUI Pipelines server, where the stream must also end properly (the server's closing
chunk and ``[DONE]``) and no traceback may reach its log. The real server's answers also produce
the "fault: what the person sees" table in ``docs/reliability.md``; run with
``HELIX_WRITE_FAULT_TABLE=1`` to rewrite it after a notice changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.messages import Message
from helix_pipeline.notices import visible
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.stores import open_store
from helix_pipeline.testing import (
    FIRST_CHUNK,
    HELIX_FORMS,
    SEPARATOR,
    VALIDATION_HINT,
    FakeHelix,
    Fault,
)
from helix_pipeline.testing.openwebui_transport import Chat, InProcess, Reply
from helix_pipeline.valves import HelixValves

from .pipelines_server import PIPELINES, PipelinesServer, free_port

USER = {"id": "user-ana", "name": "Ana", "email": "ana@example.com", "role": "user"}
READ_TIMEOUT_S = 0.3
FAULT_DELAY_S = 5.0  # far past READ_TIMEOUT_S, so that a loaded machine cannot blur them
DOCS = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
TABLE_START = "<!-- fault-table:start -->"
TABLE_END = "<!-- fault-table:end -->"
TRACEBACK = "Traceback (most recent call last)"
WARNING_SIGN = "⚠️"
HELIX_FAILURE_TEXTS = (
    "Claude Code ist nicht verfuegbar",
    "**Fehler:**",
    "Fehler bei der Verarbeitung",
    "Unerwarteter Fehler",
    "Fehler: ",
    "Verarbeitung abgeschlossen",
    "Timeout",
    "/home/helix",
)
"""Helix's own failure wording (and its server's paths): never shown, recorded or sent back."""
DECORATIONS = (FIRST_CHUNK.strip(), SEPARATOR.strip(), VALIDATION_HINT, "[Read]")

BASE_VALVES: dict[str, Any] = {
    "HELIX_HEARTBEAT_S": 0.1,  # FakeHelix's heartbeats come every 0.01 s
    "READ_TIMEOUT_S": READ_TIMEOUT_S,
    "ANSWER_TIMEOUT_S": READ_TIMEOUT_S,
    "CONNECT_TIMEOUT_S": 1.0,
    "MAX_RETRIES": 1,
}


@dataclass(frozen=True)
class FaultCase:
    """One way Helix fails, and what the person must see."""

    label: str
    expect: str
    """A fragment of the chat message the person sees."""
    fault: Fault = Fault.NONE
    answered: bool = False
    """Helix's answer still arrives whole (the fault is absorbed)."""
    partial: bool = False
    """Part of the answer streams before the failure (streaming only)."""
    valves: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    message: str = "hello there"
    helix_down: bool = False
    api_key: str | None = None
    expect_complete: str | None = None
    """The fragment without streaming, when it differs."""
    answered_complete: bool | None = None


LONG = "x" * 100_001
LOGGER = "name 'logger' is not defined"
CASES = [
    # -- real Helix's own failures (b979a99) ----------------------------------------------------
    FaultCase("Helix: Claude Code unavailable", "could not start Claude Code", Fault.UNAVAILABLE),
    FaultCase(
        "Helix: an error before the first chunk",
        "Helix answered nothing",
        Fault.ERROR_BEFORE_FIRST_CHUNK,
        expect_complete="Helix failed (HTTP 500)",
    ),
    FaultCase(
        "Helix: an error after the stream began",
        f"Helix failed while it worked on the answer: {LOGGER}",
        Fault.ERROR_MID_STREAM,
    ),
    FaultCase(
        "Helix: Claude Code crashed",
        "Claude Code ended without an answer",
        Fault.CLAUDE_CRASH,
        expect_complete="Claude Code failed on the Helix server: Error: Claude Code process",
    ),
    FaultCase(
        "Helix: Claude Code ended with an error result",
        "Claude Code ended without an answer",
        Fault.CLAUDE_ERROR_RESULT,
        expect_complete=f"Helix reported an error: {LOGGER}",
    ),
    FaultCase(
        "Helix: Claude Code ran past its time",
        "took longer than Helix allows",
        Fault.TIMEOUT,
    ),
    FaultCase(
        "Helix: 500 from its exception handler",
        "Helix failed (HTTP 500): PermissionError: [Errno 13] Permission denied",
        Fault.SERVER_ERROR,
    ),
    FaultCase(
        "Helix: an answer it could not validate", "Helix reply", Fault.UNVALIDATED, answered=True
    ),
    FaultCase(
        "Helix: 400 with a `detail` (message too long)",
        "too long",
        message=LONG,
        valves={"MAX_MESSAGE_CHARS": 150_000},  # above Helix's limit: a misconfiguration
    ),
    FaultCase("Helix: 422 validation `detail` list", "temperature", body={"temperature": 5}),
    # -- the network ----------------------------------------------------------------------------
    FaultCase("Helix is down (connection refused)", "refused the connection", helix_down=True),
    FaultCase("the connection drops before an answer", "dropped the connection", Fault.DISCONNECT),
    FaultCase(
        f"first byte later than READ_TIMEOUT_S ({READ_TIMEOUT_S:g} s)",
        "Raise the READ_TIMEOUT_S valve",
        Fault.SLOW_FIRST_BYTE,
    ),
    FaultCase(
        "stream cut mid-way",
        "The answer was cut off",
        Fault.DROP_MID_STREAM,
        partial=True,
        expect_complete="closed the connection",
        answered_complete=False,
    ),
    FaultCase(
        "stream silent mid-way past READ_TIMEOUT_S",
        "went silent",
        Fault.STALL_MID_STREAM,
        partial=True,
        expect_complete="sent nothing",
        answered_complete=False,
    ),
    FaultCase("a malformed SSE chunk", "Helix reply", Fault.MALFORMED_CHUNK, answered=True),
    FaultCase("stream ends without [DONE]", "Helix reply", Fault.NO_DONE, answered=True),
    FaultCase("JSON reply to a stream request", "Helix reply", Fault.JSON_TO_STREAM, answered=True),
    # -- not Helix: a proxy in front, another OpenAI-compatible server ---------------------------
    FaultCase(
        "proxy: an API key Helix was not given (401)",
        "Check the HELIX_API_KEY valve",
        api_key="the-right-key",
        valves={"HELIX_API_KEY": "a-wrong-key"},
    ),
    FaultCase(
        "proxy: 429 with Retry-After, every retry", "rate limiting", Fault.PROXY_RATE_LIMITED
    ),
    FaultCase("proxy: 503 with a `detail`", "Helix is restarting", Fault.PROXY_UNAVAILABLE),
    FaultCase("proxy: 500, plain text", "Internal Server Error", Fault.PROXY_PLAIN_TEXT_ERROR),
    FaultCase("proxy: 502, plain text", "Bad Gateway", Fault.PROXY_BAD_GATEWAY),
    FaultCase("proxy: 502, HTML page", "502 Bad Gateway nginx", Fault.PROXY_HTML_ERROR),
    FaultCase(
        "another server: an `error` chunk in the stream",
        "Claude Code crashed",
        Fault.OPENAI_COMPATIBLE_ERROR_CHUNK,
        partial=True,
        expect_complete="Helix reply",
        answered_complete=True,
    ),
]


def outcome(case: FaultCase, stream: bool) -> tuple[str, bool]:
    """The fragment the person must see, and whether Helix's answer arrives."""
    if stream:
        return case.expect, case.answered
    answered = case.answered if case.answered_complete is None else case.answered_complete
    return case.expect_complete or case.expect, answered


def _case_id(case: FaultCase) -> str:
    return "-".join(
        word.strip("`()").lower() for word in case.label.split()[:5] if word.strip("`()")
    )


CASE_PARAMS = [pytest.param(case, id=_case_id(case)) for case in CASES]


# ------------------------------------------------------------------------------ checks


def stored(url: str, chat: Chat) -> list[Message]:
    store = open_store(url)
    try:
        return store.load(ConversationKey(chat.user["id"], chat.chat_id))
    finally:
        store.close()


def check_fault_turn(case: FaultCase, shown: Reply, stream: bool, history: list[Message]) -> None:
    """The person sees a clear message; the turn is recorded as far as it got."""
    assert shown.content.strip(), "the person saw an empty answer"
    assert stream or not shown.items or shown.whole, "a complete answer must be one string"
    assert TRACEBACK not in shown.content
    assert all(item for item in shown.items), "a blank chunk was yielded to the Pipelines server"
    assert not any(isinstance(item, str) and item.startswith("data:") for item in shown.items)
    check_statuses(shown)
    assert not any(text in shown.content for text in HELIX_FAILURE_TEXTS), shown.content
    assert not any(text in shown.content for text in DECORATIONS), shown.content
    if " What arrived above" in shown.content:  # the cut-off notice reads as sentences
        assert shown.content.split(" What arrived above")[0][-1] in ".!?…"
    expect, answered = outcome(case, stream)
    assert expect in shown.content, shown.content
    if answered:
        assert WARNING_SIGN not in shown.content
    else:
        assert WARNING_SIGN in shown.content
    assert history, "nothing was recorded"
    assert history[0].role == "user" and history[0].content == case.message
    if case.partial and stream:
        assert len(history) >= 2 and history[1].role == "assistant"
        assert history[1].partial, "a cut-off answer must be recorded as partial"
        assert history[1].content and history[1].content in shown.content
    if answered:
        assert history[1].role == "assistant" and not history[1].partial
    for message in history:
        assert not any(text in message.content for text in HELIX_FAILURE_TEXTS), message
        assert not any(text in message.content for text in DECORATIONS), message
    if not answered and not case.partial:
        assert [m.role for m in history] == ["user"], "Helix's failure became an answer"


def check_statuses(shown: Reply) -> None:
    """Statuses are Open WebUI's status events, and the last one says the work is done."""
    for status in shown.statuses:
        assert status["type"] == "status"
        assert set(status["data"]) == {"description", "done"}
        assert status["data"]["description"].strip()
    if shown.statuses:
        assert [s["data"]["done"] for s in shown.statuses][-1] is True
        assert not any(s["data"]["done"] for s in shown.statuses[:-1])


def check_next_turn(helix: FakeHelix, chat: Chat, shown: Reply, history: list[Message]) -> None:
    """The turn after the fault reaches Helix with the whole conversation and is recorded."""
    assert "Helix reply" in shown.content and WARNING_SIGN not in shown.content
    sent = helix.chat_requests[-1].body["messages"]
    for message in sent:  # what goes back to Helix: no failure text, notice or decoration
        if message["role"] == "assistant":
            assert not any(text in message["content"] for text in HELIX_FAILURE_TEXTS)
            assert not any(text in message["content"] for text in DECORATIONS)
            assert WARNING_SIGN not in message["content"]
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert users[-1] == "and again"
    assert len(users) == 2, "the failed turn's own message must reach Helix once"
    assert [m.role for m in history][-2:] == ["user", "assistant"]
    assert history[-1].content.strip() and not history[-1].partial
    assert sum(1 for m in history if m.role == "user") == 2


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix(
        fault_delay=FAULT_DELAY_S, retry_after=0.05, tools=("Read",), heartbeats=1
    ) as server:
        yield server


def arm(helix: FakeHelix, case: FaultCase) -> None:
    helix.reset()
    helix.proxy_api_key = case.api_key
    helix.fault = case.fault


def disarm(helix: FakeHelix) -> None:
    helix.fault = Fault.NONE
    helix.proxy_api_key = None


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


class TestInProcess:
    """HelixPipe alone: every fault, streaming and not."""

    @pytest.mark.parametrize(
        "stream", [pytest.param(True, id="stream"), pytest.param(False, id="complete")]
    )
    @pytest.mark.parametrize("case", CASE_PARAMS)
    def test_a_fault_gives_a_clear_message_records_the_turn_and_the_next_turn_works(
        self, helix: FakeHelix, tmp_path: Path, case: FaultCase, stream: bool
    ) -> None:
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        healthy = {**BASE_VALVES, "HELIX_BASE_URL": helix.url, "SESSION_STORE_URL": url}
        current = HelixValves(**healthy, **case.valves)
        if case.helix_down:
            current = HelixValves(**{**healthy, "HELIX_BASE_URL": dead_url()})
        pipe = HelixPipe(lambda: current)
        try:
            chat = Chat(InProcess(pipe), user=USER)
            arm(helix, case)
            shown = chat.turn(case.message, stream=stream, extra=case.body)
            disarm(helix)
            check_fault_turn(case, shown, stream, stored(url, chat))
            current = HelixValves(**healthy)  # the admin fixed the valves, Helix is back
            after = chat.turn("and again", stream=stream)
            check_next_turn(helix, chat, after, stored(url, chat))
        finally:
            disarm(helix)
            pipe.shutdown()


class TestRetries:
    """A single refusal that says when to come back is retried; the person never sees it."""

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault.PROXY_RATE_LIMITED, id="429"),
            pytest.param(Fault.PROXY_UNAVAILABLE, id="503"),
        ],
    )
    def test_one_refusal_with_retry_after_is_retried_after_the_pause(
        self, helix: FakeHelix, tmp_path: Path, fault: Fault
    ) -> None:
        helix.reset()
        helix.retry_after = 0.2
        values = {
            **BASE_VALVES,
            "HELIX_BASE_URL": helix.url,
            "SESSION_STORE_URL": f"sqlite:///{tmp_path / 's.db'}",
        }
        pipe = HelixPipe(lambda: HelixValves(**values))
        try:
            helix.fail_next(fault)
            started = time.monotonic()
            shown = Chat(InProcess(pipe), user=USER).turn("hello there")
            elapsed = time.monotonic() - started
        finally:
            helix.retry_after = 0.05
            pipe.shutdown()
        assert "Helix reply" in shown.content and WARNING_SIGN not in shown.content
        assert elapsed >= 0.2, "Retry-After was not respected"
        assert len(helix.chat_requests) == 2


# ----------------------------------------------------------------- the real Pipelines server


@dataclass
class ServerRun:
    server: PipelinesServer
    url: str
    rows: dict[str, tuple[Reply, list[Message]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pipelines(helix: FakeHelix) -> Iterator[ServerRun]:
    with tempfile.TemporaryDirectory(prefix="helix-faults-") as tmp:
        root = Path(tmp)
        env = {
            "HELIX_BASE_URL": helix.url,
            "HELIX_DATA_DIR": str(root / "data"),
            **{name: str(value) for name, value in BASE_VALVES.items()},
        }
        with PipelinesServer(root, [PIPELINES / "helix.py"], env=env) as server:
            yield ServerRun(server, f"sqlite:///{root / 'data' / 'sessions.db'}")


@contextlib.contextmanager
def fault_armed(helix: FakeHelix, server: PipelinesServer, case: FaultCase) -> Iterator[None]:
    """Set the case's valves on the server and its fault on Helix; restore both afterwards."""
    changes = dict(case.valves)
    if case.helix_down:
        changes["HELIX_BASE_URL"] = dead_url()
    saved = server.valves("helix")
    if changes:
        server.update_valves("helix", {**saved, **changes})
    arm(helix, case)
    try:
        yield
    finally:
        disarm(helix)
        if changes:
            server.update_valves("helix", saved)


NON_STREAMING_SAMPLE = [
    param
    for param in CASE_PARAMS
    if param.values[0].helix_down  # type: ignore[union-attr]
    or param.values[0].fault  # type: ignore[union-attr]
    in (*HELIX_FORMS, Fault.UNVALIDATED, Fault.DROP_MID_STREAM, Fault.SLOW_FIRST_BYTE)
]


@pytest.mark.integration
class TestThroughThePipelinesServer:
    """The same faults through the real server: the stream always ends with [DONE]."""

    @pytest.mark.parametrize("case", CASE_PARAMS)
    def test_a_fault_ends_the_stream_properly_with_a_clear_message(
        self, helix: FakeHelix, pipelines: ServerRun, case: FaultCase
    ) -> None:
        server = pipelines.server
        mark = server.log_mark()
        chat = Chat(server.http, user=USER)
        with fault_armed(helix, server, case):
            shown = chat.turn(case.message, extra=case.body)
        history = stored(pipelines.url, chat)
        pipelines.rows[case.label] = (shown, history)
        assert shown.done, "the stream did not end with [DONE]"
        assert shown.finish_reason == "stop"
        check_fault_turn(case, shown, True, history)
        after = chat.turn("and again")
        check_next_turn(helix, chat, after, stored(pipelines.url, chat))
        assert server.tracebacks(mark) == 0, server.log(mark)[-3000:]

    @pytest.mark.parametrize("case", NON_STREAMING_SAMPLE)
    def test_a_fault_in_a_non_streaming_request_is_a_complete_answer_with_the_message(
        self, helix: FakeHelix, pipelines: ServerRun, case: FaultCase
    ) -> None:
        server = pipelines.server
        mark = server.log_mark()
        chat = Chat(server.http, user=USER)
        with fault_armed(helix, server, case):
            shown = chat.turn(case.message, stream=False, extra=case.body)
        check_fault_turn(case, shown, False, stored(pipelines.url, chat))
        assert server.tracebacks(mark) == 0, server.log(mark)[-3000:]

    def test_the_fault_table_in_the_docs_matches_what_the_server_shows(
        self, pipelines: ServerRun, helix: FakeHelix
    ) -> None:
        missing = [case.label for case in CASES if case.label not in pipelines.rows]
        if missing:
            pytest.skip(f"run the whole class to build the table (missing: {missing[:2]})")
        table = fault_table(pipelines.rows)
        docs = DOCS.read_text(encoding="utf-8")
        before, _, rest = docs.partition(TABLE_START)
        _, _, after = rest.partition(TABLE_END)
        current = f"{TABLE_START}\n{table}{TABLE_END}"
        if os.environ.get("HELIX_WRITE_FAULT_TABLE") == "1":
            DOCS.write_text(f"{before}{current}{after}", encoding="utf-8")
        assert current in docs or os.environ.get("HELIX_WRITE_FAULT_TABLE") == "1", (
            "docs/reliability.md's fault table is out of date: rerun with "
            "HELIX_WRITE_FAULT_TABLE=1 pytest tests/test_reliability_faults.py -k Pipelines"
        )


def fault_table(rows: dict[str, tuple[Reply, list[Message]]]) -> str:
    lines = [
        "| Fault | What the person sees (streamed, through the real Pipelines server) "
        "| Last status line | Recorded |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        shown, history = rows[case.label]
        text = re.sub(r"http://127\.0\.0\.1:\d+", "<HELIX_BASE_URL>", visible(shown.content))
        if case.partial and WARNING_SIGN in text:
            text = "*(the answer so far)* " + text[text.index(WARNING_SIGN) :]
        elif case.answered:
            text = "Helix's whole answer, no warning"
        text = " ".join(text.split()).replace("|", "\\|")
        if case.answered:
            recorded = "the whole turn"
        elif any(m.role == "assistant" and m.partial for m in history):
            recorded = "the message and the answer so far, marked partial"
        else:
            recorded = "the person's message"
        status = shown.statuses[-1]["data"]["description"] if shown.statuses else "(none)"
        lines.append(f"| {case.label} | {text} | {status} | {recorded} |")
    return "\n".join(lines) + "\n"
