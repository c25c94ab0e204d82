"""HistoryService.reconcile writes only when the outlet brings something new (a hot path)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from helix_pipeline.conversation import ConversationKey, read_conversation
from helix_pipeline.messages import Message, messages_from_dicts
from helix_pipeline.service import HistoryService
from helix_pipeline.stores import MemoryStore
from helix_pipeline.stores.base import RecordResult

USER = {"id": "user-a", "name": "A", "email": "a@example.com", "role": "user"}
KEY = ConversationKey("user-a", "chat-1")


class CountingStore(MemoryStore):
    """A memory store that counts its ``record`` calls (each one a write transaction elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.records = 0

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        self.records += 1
        return super().record(key, messages, after=after)


def inlet(metadata: dict[str, str]) -> dict[str, object]:
    return {
        "model": "helix.helix-consultant",
        "messages": [{"role": "user", "content": "q0"}],
        "metadata": {"chat_id": "chat-1", "user_id": "user-a", **metadata},
    }


def outlet(user_id: str, assistant_id: str) -> dict[str, object]:
    return {
        "chat_id": "chat-1",
        "id": assistant_id,
        "messages": [
            {"id": user_id, "role": "user", "content": "q0"},
            {"id": assistant_id, "role": "assistant", "content": "a0"},
        ],
    }


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def play_turn(store: CountingStore, metadata: dict[str, str]) -> HistoryService:
    service = HistoryService(store)
    body = inlet(metadata)
    turn = service.prepare(read_conversation(body, USER), messages_from_dicts(body["messages"]))
    assert service.record(turn, "a0")
    return service


def reconcile(service: HistoryService, body: dict[str, object]) -> bool:
    conversation = read_conversation(body, USER)
    return service.reconcile(conversation, messages_from_dicts(body["messages"]))


class TestAnOutletThatChangesNothing:
    def test_records_nothing_when_the_pipe_already_stored_the_turn_with_its_ids(
        self, store: CountingStore
    ) -> None:
        service = play_turn(store, {"user_message_id": "u0", "message_id": "a0-id"})
        assert store.records == 1
        assert reconcile(service, outlet("u0", "a0-id"))
        assert store.records == 1
        assert [(m.content, m.message_id) for m in store.load(KEY)] == [
            ("q0", "u0"),
            ("a0", "a0-id"),
        ]


class TestAnOutletThatBringsIds:
    def test_records_the_ids_the_turn_lacked_and_then_nothing_more(
        self, store: CountingStore
    ) -> None:
        service = play_turn(store, {})  # an older client: no message ids in the inlet
        assert reconcile(service, outlet("user-id", "assistant-id"))
        assert store.records == 2
        assert reconcile(service, outlet("user-id", "assistant-id"))  # the outlet runs twice
        assert store.records == 2
        assert [(m.content, m.message_id) for m in store.load(KEY)] == [
            ("q0", "user-id"),
            ("a0", "assistant-id"),
        ]
