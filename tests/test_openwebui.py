"""The Open WebUI bodies the demo plays have the shape of the recorded 0.12.4 ones."""

from __future__ import annotations

from typing import Any

import pytest

from helix_pipeline.conversation import ChatKind, read_conversation
from helix_pipeline.testing.openwebui import OpenWebUIChat, pipe_arguments

from .conftest import load_fixture

EXAMPLES = "openwebui-0.12.4/examples"


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
        assert set(body["metadata"]) <= set(real["metadata"])
        assert all(set(m) == {"role", "content"} for m in body["messages"])
        conversation = read_conversation(body, chat.user)
        assert (conversation.kind, conversation.chat_id) == (ChatKind.SAVED, "chat-1")
        assert conversation.message_id == turn.assistant_message_id
        assert conversation.user_message_id == turn.user_message_id

    def test_a_title_task_inlet_is_a_task_of_the_same_chat(self, chat: OpenWebUIChat) -> None:
        real = load_fixture(f"{EXAMPLES}/04_filter_inlet_A-t1_title_generation_task.json")["body"]

        body = chat.task_inlet_body(chat.start_turn("hi"))

        assert set(body) == set(real)
        assert set(body["metadata"]) <= set(real["metadata"])
        assert "message_id" not in body["metadata"]
        conversation = read_conversation(body, chat.user)
        assert (conversation.kind, conversation.task) == (ChatKind.TASK, "title_generation")

    def test_the_pipe_body_loses_metadata_and_gains_the_user(self, chat: OpenWebUIChat) -> None:
        real_turn = load_fixture(f"{EXAMPLES}/07_pipe_B-t2_stream.json")["body"]
        real_task = load_fixture(f"{EXAMPLES}/09_pipe_title_task_to_pipe_model.json")["body"]
        turn = chat.start_turn("hi")

        assert set(chat.pipe_body(chat.inlet_body(turn))) == set(real_turn)
        assert set(chat.pipe_body(chat.task_inlet_body(turn))) == set(real_task)

    def test_the_outlet_carries_every_message_with_its_id(self, chat: OpenWebUIChat) -> None:
        real = load_fixture(f"{EXAMPLES}/03_filter_outlet_A-t2.json")["body"]
        first = chat.start_turn("hi")
        chat.finish_turn(first, "hello")
        second = chat.start_turn("again")
        chat.finish_turn(second, "still here")

        body = chat.outlet_body(second)

        assert set(body) == set(real)
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
