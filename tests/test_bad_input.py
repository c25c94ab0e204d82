"""Bodies, users and metadata of every shape: the hooks never raise, and hostile conversation ids
never leave the data folder or reach another user's history.

Property tests run ``HELIX_FUZZ_EXAMPLES`` examples each (200 by default; set it to 10000 for a
deep run) against a live FakeHelix and an SQLite store.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helix_pipeline import pipe as pipe_module
from helix_pipeline.conversation import (
    PRIVATE_KEY,
    ChatKind,
    ConversationKey,
    read_conversation,
)
from helix_pipeline.notices import UNEXPECTED
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.service import HistoryService
from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui_transport import Chat, InProcess
from helix_pipeline.valves import FilterValves, HelixValves

EXAMPLES = int(os.environ.get("HELIX_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_IDS = [
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "/absolute/path",
    "chat\x00id",
    "\ud800lone-surrogate",
    "Ünïcødé-聊天-💬",
    "x" * 1_000_000,
    "'; DROP TABLE conversations; --",
    '" OR 1=1 --',
    "*",
    "conv:*\r\nFLUSHALL\r\n",
    "{hash}tag",
    "local",
    "local:abc",
    "temporary:abc",
    "channel:",
    "channel:abc",
    "abc/123",
    "abc_123",
    "abc 123",
    "%2e%2e%2f",
    "sessions.db",
]

# Strings of every kind: lone surrogates, NUL and other control characters included.
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(
        [
            *(i for i in HOSTILE_IDS if len(i) < 1000),
            "x" * 5000,
            "### Task: make a title",
            "Fehler: not from Helix",
            "data: [DONE]",
            "",
            " ",
            "\x00",
        ]
    ),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**5000),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
ROLE = st.one_of(
    st.sampled_from(["user", "assistant", "system", "developer", "tool", "function", "bogus"]),
    SCALAR,
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(TEXT, JSON)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": JSON}),
    JSON,
)
CONTENT = st.one_of(TEXT, st.lists(PART, max_size=4), JSON)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": ROLE, "content": CONTENT}, optional={"id": st.one_of(TEXT, JSON)}
    ),
    JSON,
)
MESSAGES = st.one_of(st.lists(MESSAGE, max_size=6), JSON)
ID = st.one_of(TEXT, SCALAR, JSON)
METADATA = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "chat_id": ID,
            "message_id": ID,
            "user_message_id": ID,
            "parent_message_id": ID,
            "session_id": ID,
            "user_id": ID,
            "task": ID,
            "user_message": st.one_of(JSON, st.fixed_dictionaries({"id": ID, "parentId": ID})),
        },
    ),
    JSON,
)
PLAUSIBLE_BODY = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system"]), "content": TEXT}
            ),
            min_size=1,
            max_size=4,
        ),
        "metadata": METADATA,
        "stream": st.booleans(),
    }
)
"""Close to what Open WebUI sends, so that many examples reach Helix and the store."""
BODY = st.one_of(
    PLAUSIBLE_BODY,
    st.fixed_dictionaries(
        {},
        optional={
            "model": ID,
            "messages": MESSAGES,
            "stream": JSON,
            "metadata": METADATA,
            "chat_id": ID,
            "id": ID,
            "session_id": ID,
            PRIVATE_KEY: st.one_of(METADATA, JSON),
            "temperature": JSON,
            "max_tokens": JSON,
            "user": JSON,
        },
    ),
    JSON,
)
USER = st.one_of(
    st.fixed_dictionaries({}, optional={"id": ID, "email": ID, "name": ID, "role": ID}),
    JSON,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"content": value}
    return value


DEEP_BODIES = [
    pytest.param({"messages": deep(5000)}, id="messages-5000-deep"),
    pytest.param({"messages": [{"role": "user", "content": deep(5000)}]}, id="content-5000-deep"),
    pytest.param({"metadata": deep(5000)}, id="metadata-5000-deep"),
    pytest.param({"messages": [{"role": "user", "content": "y" * 3_000_000}]}, id="a-3-mb-message"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}] * 5000}, id="5000-messages"),
]


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as server:
        yield server


@pytest.fixture(scope="module")
def pipe(helix: FakeHelix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HelixPipe]:
    folder = tmp_path_factory.mktemp("fuzz-pipe")
    valves = HelixValves(
        HELIX_BASE_URL=helix.url,
        SESSION_STORE_URL=f"sqlite:///{folder / 'sessions.db'}",
        MAX_RETRIES=0,
        HELIX_HEARTBEAT_S=1.0,  # FakeHelix's heartbeats are fast
        READ_TIMEOUT_S=5,
    )
    running = HelixPipe(lambda: valves)
    yield running
    running.shutdown()


@pytest.fixture(scope="module")
def session_filter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionFilter]:
    folder = tmp_path_factory.mktemp("fuzz-filter")
    valves = FilterValves(SESSION_STORE_URL=f"sqlite:///{folder / 'sessions.db'}")
    running = SessionFilter(lambda: valves)
    yield running
    running.shutdown()


def consume(result: object) -> list[str]:
    """The text the Pipelines server would send on: every item a non-blank string or a status
    event; the strings are returned."""
    items = [result] if isinstance(result, str) else list(result)  # type: ignore[call-overload]
    assert all(isinstance(item, str) or item["event"]["type"] == "status" for item in items)
    return [item for item in items if isinstance(item, str)]


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def nothing_crashed() -> Iterator[None]:
    """Fails when a hook's catch-all caught a crash: it logs at ERROR, so "did not raise" alone
    would prove nothing (the hooks never raise by design)."""
    handler = ErrorRecords()
    logger = logging.getLogger("helix_pipeline")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records:
        record = handler.records[0]
        details = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        raise AssertionError(f"a crash was caught: {record.getMessage()}\n{details}")


def run_pipe(pipe: HelixPipe, body: Any, user: Any) -> str:
    """One turn as Open WebUI plays it; fails unless every hook handled the body as designed."""
    with nothing_crashed():
        inlet = pipe.inlet(body, user)
        pipe_body = inlet
        if isinstance(inlet, dict):
            assert isinstance(inlet.get(PRIVATE_KEY), dict), "the inlet left no context for pipe()"
            pipe_body = {k: v for k, v in inlet.items() if k != "metadata"}
        messages = pipe_body.get("messages") if isinstance(pipe_body, dict) else None
        items = consume(pipe.pipe("", "helix-consultant", messages, pipe_body))
        stream = not isinstance(pipe_body, dict) or pipe_body.get("stream", True) is not False
        if stream:
            assert all(item for item in items), "a blank string was yielded"
        text = "".join(items)
        assert UNEXPECTED not in text, "pipe() answered with the catch-all's notice"
        if "Helix reply" in text and isinstance(pipe_body, dict):
            assert_recorded(pipe, pipe_body)
        pipe.outlet(body, user)
    return text


def assert_recorded(pipe: HelixPipe, pipe_body: dict[str, Any]) -> None:
    """A saved chat's answered turn is in the store (temporary chats and tasks are not stored;
    what exactly is kept depends on earlier examples with the same ids, so only its presence)."""
    conversation = read_conversation(pipe_body, pipe_body.get("user"))
    if conversation.kind is ChatKind.SAVED:
        stored = pipe._current().history.store.load(conversation.key)
        assert stored, f"the answered turn of {conversation.conversation_id[:40]!r} was not stored"


def run_filter(session_filter: SessionFilter, body: Any, user: Any) -> None:
    with nothing_crashed():
        assert session_filter.inlet(body, user) is body
        assert session_filter.outlet(body, user) is body


def outcome(text: str) -> str:
    return "Helix answered" if "Helix reply" in text else "a notice" if text else "empty (a task)"


class TestNeverRaises:
    @FUZZ
    @given(body=BODY, user=USER)
    def test_the_helix_pipe_handles_any_body_and_user(
        self, pipe: HelixPipe, body: Any, user: Any
    ) -> None:
        event(outcome(run_pipe(pipe, body, user)))

    @FUZZ
    @given(body=BODY, user=USER, model_id=ID, messages=MESSAGES, user_message=ID)
    def test_pipe_handles_any_arguments_the_server_might_pass(
        self, pipe: HelixPipe, body: Any, user: Any, model_id: Any, messages: Any, user_message: Any
    ) -> None:
        with nothing_crashed():
            text = "".join(consume(pipe.pipe(user_message, model_id, messages, body)))
        assert UNEXPECTED not in text

    @FUZZ
    @given(body=BODY, user=USER)
    def test_the_session_filter_handles_any_body_and_user(
        self, session_filter: SessionFilter, body: Any, user: Any
    ) -> None:
        run_filter(session_filter, body, user)

    @pytest.mark.parametrize("body", DEEP_BODIES)
    def test_deep_and_huge_bodies_are_handled(
        self, pipe: HelixPipe, session_filter: SessionFilter, body: dict[str, Any]
    ) -> None:
        user = {"id": "user-deep"}
        run_pipe(pipe, dict(body), user)
        run_filter(session_filter, dict(body), user)


PLAIN_BODY = {
    "stream": False,
    "messages": [{"role": "user", "content": "hello"}],
    "metadata": {"chat_id": "chat-plain", "message_id": "a1"},
}


def crash(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug")


class TestTheChecksSeeACaughtCrash:
    """The checks above fail when an internal part crashes, although no hook raises."""

    def test_a_plain_body_passes_them_and_its_turn_is_stored(self, pipe: HelixPipe) -> None:
        reply = run_pipe(pipe, copy.deepcopy(PLAIN_BODY), {"id": "user-plain"})
        assert "Helix reply" in reply
        key = ConversationKey("user-plain", "chat-plain")
        stored = pipe._current().history.store.load(key)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert reply.startswith(stored[-1].content)

    @pytest.mark.parametrize(
        "target",
        [
            pytest.param((HelixPipe, "_pipe"), id="pipe"),
            pytest.param((pipe_module, "read_conversation"), id="inlet"),
            pytest.param((HistoryService, "reconcile_outlet"), id="outlet"),
            pytest.param((HistoryService, "record"), id="recording"),
        ],
    )
    def test_a_crash_in_the_pipe_fails_them(
        self, pipe: HelixPipe, monkeypatch: pytest.MonkeyPatch, target: tuple[Any, str]
    ) -> None:
        monkeypatch.setattr(*target, crash)
        with pytest.raises(AssertionError):
            run_pipe(pipe, copy.deepcopy(PLAIN_BODY), {"id": "user-crash"})

    @pytest.mark.parametrize(
        "method",
        [pytest.param("prepare", id="inlet"), pytest.param("reconcile_outlet", id="outlet")],
    )
    def test_a_crash_in_the_filters_hooks_fails_them(
        self, session_filter: SessionFilter, monkeypatch: pytest.MonkeyPatch, method: str
    ) -> None:
        monkeypatch.setattr(HistoryService, method, crash)
        with pytest.raises(AssertionError, match="a crash was caught"):
            run_filter(session_filter, copy.deepcopy(PLAIN_BODY), {"id": "user-crash"})


# --------------------------------------------------------------------- hostile conversation ids


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def api_client(pipe: HelixPipe, chat_id: str, user_id: str) -> Chat:
    """An API client of Open WebUI with ``chat_id``: it sends no message ids, only its newest
    message, so its history reaches Helix only from the store."""
    user = {"id": user_id, "name": "N", "email": "n@example.com", "role": "user"}
    return Chat(InProcess(pipe), chat_id=chat_id, user=user, api_client=True, stream=False)


class TestHostileConversationIds:
    def test_no_file_is_written_outside_the_data_folder_and_no_history_crosses_users(
        self, helix: FakeHelix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = tmp_path / "data"
        work = tmp_path / "cwd"
        work.mkdir()
        monkeypatch.chdir(work)
        valves = HelixValves(
            HELIX_BASE_URL=helix.url,
            SESSION_STORE_URL=f"sqlite:///{data / 'sessions.db'}",
            STORE_TEMPORARY_CHATS=True,
            MAX_RETRIES=0,
        )
        pipe = HelixPipe(lambda: valves)
        before = tree(tmp_path)
        users = ("user-a", "user-b")
        try:
            for index, chat_id in enumerate(HOSTILE_IDS):
                for user_id in users:
                    api_client(pipe, chat_id, user_id).send(f"first {user_id} {index}")
            for index, chat_id in enumerate(HOSTILE_IDS):
                for user_id in users:
                    helix.reset()
                    api_client(pipe, chat_id, user_id).send(f"second {user_id} {index}")
                    sent = [m["content"] for m in helix.chat_requests[-1].body["messages"]]
                    mine = {f"first {user_id} {index}", f"second {user_id} {index}"}
                    users_texts = {t for t in sent if t.startswith(("first ", "second "))}
                    assert users_texts == mine, f"{chat_id[:40]!r}: history crossed: {sent}"
        finally:
            pipe.shutdown()
        created = tree(tmp_path) - before
        outside = {path for path in created if not path.startswith("data")}
        assert not outside, f"files outside the data folder: {sorted(outside)[:5]}"
        assert {Path(path).name for path in created} <= {
            "data",
            "sessions.db",
            "sessions.db-wal",
            "sessions.db-shm",
        }

    def test_ids_that_differ_only_in_characters_helix_would_merge_stay_apart(
        self, pipe: HelixPipe, helix: FakeHelix
    ) -> None:
        lookalikes = ["abc/123", "abc_123", "abc 123", "abc-123", "ABC-123"]
        for index, chat_id in enumerate(lookalikes):
            api_client(pipe, f"lookalike-{chat_id}", "user-l").send(f"first {index}")
        for index, chat_id in enumerate(lookalikes):
            api_client(pipe, f"lookalike-{chat_id}", "user-l").send(f"second {index}")
            sent = [m["content"] for m in helix.chat_requests[-1].body["messages"]]
            assert [t for t in sent if t.startswith(("first", "second"))] == [
                f"first {index}",
                f"second {index}",
            ]

    def test_the_inlet_body_stays_json_serialisable(self, pipe: HelixPipe) -> None:
        for chat_id in HOSTILE_IDS:
            body = pipe.inlet({"metadata": {"chat_id": chat_id}, "messages": []}, {"id": "u"})
            json.dumps(body)
