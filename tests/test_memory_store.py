"""MemoryStore's optional bound, and the bounded store that keeps temporary chats."""

from __future__ import annotations

import pytest

from helix_pipeline.conversation import ConversationKey, read_conversation
from helix_pipeline.errors import ConfigError
from helix_pipeline.messages import Message, messages_from_dicts
from helix_pipeline.service import TEMPORARY_CONVERSATIONS, HistoryService
from helix_pipeline.stores import MemoryStore


def key(number: int) -> ConversationKey:
    return ConversationKey("user-a", f"chat-{number}")


def turn(text: str) -> list[Message]:
    return [Message("user", text), Message("assistant", f"answer to {text}")]


def kept(store: MemoryStore) -> set[str]:
    return {summary.conversation_id for summary in store.conversations("user-a")}


class TestAnUnboundedStore:
    def test_keeps_every_conversation(self) -> None:
        store = MemoryStore()
        for number in range(50):
            store.record(key(number), turn("q"))
        assert len(kept(store)) == 50


class TestABoundedStore:
    def test_forgets_the_least_recently_recorded_conversation_beyond_the_bound(self) -> None:
        store = MemoryStore(max_conversations=3)
        for number in range(5):
            store.record(key(number), turn("q"))
        assert kept(store) == {"chat-2", "chat-3", "chat-4"}
        assert store.load(key(0)) == []
        assert store.branches(key(1)) == []

    def test_a_conversation_loaded_recently_is_kept(self) -> None:
        store = MemoryStore(max_conversations=2)
        store.record(key(0), turn("q0"))
        store.record(key(1), turn("q1"))
        assert [m.content for m in store.load(key(0))] == ["q0", "answer to q0"]
        store.record(key(2), turn("q2"))
        assert kept(store) == {"chat-0", "chat-2"}

    def test_a_conversation_that_grows_is_kept_whole(self) -> None:
        store = MemoryStore(max_conversations=2)
        store.record(key(0), turn("q0"))
        store.record(key(1), turn("q1"))
        store.record(key(0), turn("q0 again"))
        store.record(key(2), turn("q2"))
        assert kept(store) == {"chat-0", "chat-2"}
        assert len(store.load(key(0))) == 4

    def test_a_record_that_changes_nothing_forgets_nothing(self) -> None:
        store = MemoryStore(max_conversations=1)
        store.record(key(0), turn("q0"))
        store.record(key(1), [], after=0)
        assert kept(store) == {"chat-0"}

    def test_a_forgotten_conversation_leaves_no_user_behind(self) -> None:
        store = MemoryStore(max_conversations=1)
        store.record(ConversationKey("user-a", "chat-0"), turn("q"))
        store.record(ConversationKey("user-b", "chat-0"), turn("q"))
        assert store.users() == ["user-b"]

    @pytest.mark.parametrize("bound", [pytest.param(0, id="zero"), pytest.param(-5, id="negative")])
    def test_a_bound_below_one_is_refused_with_what_to_set(self, bound: int) -> None:
        with pytest.raises(ConfigError, match="max_conversations must be 1 or more") as caught:
            MemoryStore(max_conversations=bound)
        assert caught.value.setting == "max_conversations"


class TestTemporaryChats:
    def test_the_history_service_keeps_a_bounded_number_of_them_in_memory(self) -> None:
        service = HistoryService(MemoryStore("memory://saved"))
        user = {"id": "user-a"}
        for number in range(TEMPORARY_CONVERSATIONS + 5):
            body = {
                "messages": [{"role": "user", "content": f"question {number}"}],
                "metadata": {"chat_id": f"local:{number}", "message_id": f"a-{number}"},
            }
            conversation = read_conversation(body, user)
            assert service.record(
                service.prepare(conversation, messages_from_dicts(body["messages"])), "answer"
            )
        temporary = service.temporary_store
        assert isinstance(temporary, MemoryStore)
        assert len(kept(temporary)) == TEMPORARY_CONVERSATIONS
        assert "local:0" not in kept(temporary)
        assert f"local:{TEMPORARY_CONVERSATIONS + 4}" in kept(temporary)
        assert service.store.users() == []
