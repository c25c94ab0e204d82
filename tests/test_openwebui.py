"""The driver's Open WebUI bodies have the shape of the recorded 0.12.4 ones: the same top-level
keys, and every key they carry where the recording has it, nested the same, of the same type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ChatKind, ConversationKey, read_conversation
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui import OpenWebUIChat, pipe_arguments
from helix_pipeline.testing.openwebui_transport import Chat, InProcess
from helix_pipeline.valves import FilterValves, HelixValves

from .conftest import FIXTURES, load_fixture

EXAMPLES = "openwebui-0.12.4/examples"
RUN1_FILTER = FIXTURES / "openwebui-0.12.4" / "run1_forward_headers" / "filter.jsonl"


def recorded_pipe_title_inlet() -> dict[str, Any]:
    """The recorded inlet of a title task to a pipe model (the examples hold a backend model's)."""
    for line in RUN1_FILTER.read_text(encoding="utf-8").splitlines():
        body = json.loads(line)["body"]
        metadata = body.get("metadata") or {}
        if metadata.get("task") == "title_generation" and body["model"] == "capture_pipe":
            return dict(body)
    raise LookupError("no title task to the pipe model in run1")


def recorded_pipe_turn_body() -> dict[str, Any]:
    """A recorded chat turn's body to ``pipe()``, with its 36 tool specs whole."""
    for line in (RUN1_FILTER.parent / "pipe.jsonl").read_text(encoding="utf-8").splitlines():
        body = json.loads(line)["body"]
        if isinstance(body.get("tools"), list):
            return dict(body)
    raise LookupError("no pipe body with tools in run1")


def assert_shaped_like(ours: Any, recorded: Any, where: str = "body") -> None:
    """``ours`` holds only keys ``recorded`` has, nested alike, each of the recorded type (a
    ``None`` on either side matches any type); list items are compared with the first recorded
    item of the same role, or the first one."""
    if ours is None or recorded is None:
        return
    assert type(ours) is type(recorded), f"{where}: {type(ours).__name__} is recorded as " + (
        type(recorded).__name__
    )
    if isinstance(ours, dict):
        extra = set(ours) - set(recorded)
        assert not extra, f"{where}: keys Open WebUI does not send: {sorted(extra)}"
        for key, value in ours.items():
            assert_shaped_like(value, recorded[key], f"{where}.{key}")
    elif isinstance(ours, list) and recorded:
        for index, item in enumerate(ours):
            alike = [r for r in recorded if isinstance(r, dict) and isinstance(item, dict)]
            same_role = [r for r in alike if r.get("role") == item.get("role")]
            assert_shaped_like(item, (same_role or recorded)[0], f"{where}[{index}]")


class TestOpenWebUIBodies:
    """The demo's bodies have the shape of the recorded Open WebUI 0.12.4 ones."""

    @pytest.fixture
    def chat(self) -> OpenWebUIChat:
        return OpenWebUIChat(chat_id="chat-1")

    def test_a_turn_inlet_has_the_recorded_keys_and_ids_only_in_metadata(
        self, chat: OpenWebUIChat
    ) -> None:
        real = load_fixture(f"{EXAMPLES}/06_filter_inlet_B-t2_pipe_model.json")["body"]
        turn = chat.start_turn("hi")

        body = chat.inlet_body(turn)

        assert set(body) == set(real)
        assert_shaped_like(body, real)
        assert all(set(m) == {"role", "content"} for m in body["messages"])
        conversation = read_conversation(body, chat.user)
        assert (conversation.kind, conversation.chat_id) == (ChatKind.SAVED, "chat-1")
        assert conversation.message_id == turn.assistant_message_id
        assert conversation.user_message_id == turn.user_message_id

    def test_a_title_task_inlet_is_a_task_of_the_same_chat(self, chat: OpenWebUIChat) -> None:
        real = recorded_pipe_title_inlet()

        body = chat.task_inlet_body(chat.start_turn("hi"))

        assert set(body) == set(real)
        assert_shaped_like(body, real)
        assert "message_id" not in body["metadata"]
        conversation = read_conversation(body, chat.user)
        assert (conversation.kind, conversation.task) == (ChatKind.TASK, "title_generation")

    def test_the_pipe_body_loses_metadata_and_gains_the_user(self, chat: OpenWebUIChat) -> None:
        real_turn = recorded_pipe_turn_body()
        real_task = load_fixture(f"{EXAMPLES}/09_pipe_title_task_to_pipe_model.json")["body"]
        turn = chat.start_turn("hi")

        for ours, real in [
            (chat.pipe_body(chat.inlet_body(turn)), real_turn),
            (chat.pipe_body(chat.task_inlet_body(turn)), real_task),
        ]:
            assert set(ours) == set(real)
            assert_shaped_like(ours, real)

    def test_the_outlet_carries_every_message_with_its_id(self, chat: OpenWebUIChat) -> None:
        real = load_fixture(f"{EXAMPLES}/03_filter_outlet_A-t2.json")["body"]
        first = chat.start_turn("hi")
        chat.finish_turn(first, "hello")
        second = chat.start_turn("again")
        chat.finish_turn(second, "still here")

        body = chat.outlet_body(second)

        assert set(body) == set(real)
        assert_shaped_like(body, real)
        assert [m["id"] for m in body["messages"]] == [
            first.user_message_id,
            first.assistant_message_id,
            second.user_message_id,
            second.assistant_message_id,
        ]
        assert body["id"] == second.assistant_message_id
        assert second.parent_message_id == first.assistant_message_id

    def test_pipe_arguments_are_the_manifold_sub_id_and_the_last_user_message(self) -> None:
        body: dict[str, Any] = {
            "model": "helix.helix-consultant",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": "second"},
            ],
        }

        arguments = pipe_arguments(body)

        assert arguments["model_id"] == "helix-consultant"
        assert arguments["user_message"] == "second"
        assert arguments["body"] == body and arguments["body"] is not body


class TestAnAPIClient:
    """An API client of Open WebUI sends the recorded plain API call's bodies, with a chat id."""

    def test_its_inlet_is_the_newest_message_without_ids(self) -> None:
        real = load_fixture(f"{EXAMPLES}/21_plain_api_inlet_no_chat.json")["body"]
        chat = OpenWebUIChat(chat_id="api-chat", api_client=True, stream=False)
        chat.finish_turn(chat.start_turn("first"), "reply")

        body = chat.inlet_body(chat.start_turn("second"))

        assert set(body) == set(real)
        assert_shaped_like(body, real)
        assert body["messages"] == [{"role": "user", "content": "second"}]
        conversation = read_conversation(body, chat.user)
        assert (conversation.chat_id, conversation.message_id) == ("api-chat", None)

    def test_its_outlet_holds_the_turn_and_only_the_reply_has_an_id(self) -> None:
        real = load_fixture(f"{EXAMPLES}/22_plain_api_outlet_no_chat.json")["body"]
        chat = OpenWebUIChat(chat_id="api-chat", api_client=True)
        turn = chat.start_turn("hello")
        chat.finish_turn(turn, "hi")

        body = chat.outlet_body(turn)

        assert set(body) == set(real)
        assert_shaped_like(body, real)
        assert [m["id"] for m in body["messages"]] == [None, turn.assistant_message_id]
        assert "tools" not in chat.pipe_body(chat.inlet_body(turn))


class TestInProcess:
    """The in-process transport calls the hooks as the Pipelines server does."""

    def test_a_turn_runs_the_filter_then_the_pipe_and_the_chat_keeps_the_reply(
        self, fake_helix: FakeHelix, tmp_path: Path
    ) -> None:
        pipe_url, filter_url = (f"sqlite:///{tmp_path / name}" for name in ("p.db", "f.db"))
        valves = HelixValves(HELIX_BASE_URL=fake_helix.url, SESSION_STORE_URL=pipe_url)
        pipe = HelixPipe(lambda: valves)
        filter_valves = FilterValves(SESSION_STORE_URL=filter_url)
        session_filter = SessionFilter(lambda: filter_valves)
        chat = Chat(InProcess(pipe, session_filter))
        try:
            reply = chat.turn("hello")
            title = chat.task()
        finally:
            pipe.shutdown()
            session_filter.shutdown()

        assert "Helix reply #1 to: hello" in reply.content and not reply.whole
        assert chat.messages[-1]["content"] == reply.content
        assert title.whole and len(fake_helix.chat_requests) == 1  # the title: answered locally
        for url in (pipe_url, filter_url):  # both outlets ran, with the chat's ids
            store = open_store(url)
            kept = store.load(ConversationKey(chat.user["id"], chat.chat_id))
            store.close()
            assert [m.message_id for m in kept] == [m["id"] for m in chat.messages]
