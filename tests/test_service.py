"""HistoryService: what is loaded, merged, recorded, and what happens when the store fails."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import pytest

from helix_pipeline.conversation import ConversationKey, read_conversation
from helix_pipeline.errors import StoreUnavailable
from helix_pipeline.history import Budget
from helix_pipeline.messages import Message
from helix_pipeline.service import HistoryService
from helix_pipeline.stores import Branch, MemoryStore, RecordResult
from helix_pipeline.testing.openwebui import OpenWebUIChat

USER = {"id": "user-a", "name": "A", "email": "a@example.com", "role": "user"}


def chat_1() -> OpenWebUIChat:
    """An Open WebUI 0.12.4 chat of ``USER``'s (the driver's bodies)."""
    return OpenWebUIChat(chat_id="chat-1", user=USER)


def history_of(chat: OpenWebUIChat, texts: Sequence[str]) -> OpenWebUIChat:
    """``chat`` with alternating user/assistant ``texts`` shown, none of them through a service."""
    for question, answer in zip(texts[::2], texts[1::2], strict=False):
        chat.finish_turn(chat.start_turn(question), answer)
    return chat


def incoming(body: dict[str, object]) -> list[Message]:
    from helix_pipeline.messages import messages_from_dicts

    return messages_from_dicts(body["messages"])


class BrokenStore(MemoryStore):
    """A store whose engine is down."""

    def load(self, key: ConversationKey) -> list[Message]:
        raise StoreUnavailable("the store is down", store=self.url)

    def read(self, key: ConversationKey) -> Branch:
        raise StoreUnavailable("the store is down", store=self.url)

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        raise StoreUnavailable("the store is down", store=self.url)

    def purge(self, before: datetime) -> int:
        raise StoreUnavailable("the store is down", store=self.url)


@pytest.fixture
def service() -> HistoryService:
    return HistoryService(MemoryStore())


def play_turn(service: HistoryService, body: dict[str, object], reply: str) -> list[str]:
    conversation = read_conversation(body, USER)
    turn = service.prepare(conversation, incoming(body))
    assert service.record(turn, reply)
    return [m.content for m in turn.outgoing]


def play(service: HistoryService, chat: OpenWebUIChat, text: str, reply: str) -> list[str]:
    """One turn of ``chat`` through ``service``; what went to Helix."""
    turn = chat.start_turn(text)
    sent = play_turn(service, chat.inlet_body(turn), reply)
    chat.finish_turn(turn, reply)
    return sent


def ids(chat: OpenWebUIChat) -> list[str]:
    return [m["id"] for m in chat.messages]


class TestOpenWebUIChats:
    def test_three_turns_are_stored_once_each_with_their_ids(self, service: HistoryService) -> None:
        chat = chat_1()
        for turn in range(3):
            play(service, chat, f"question {turn}", f"answer {turn}")
        stored = service.store.load(ConversationKey("user-a", "chat-1"))
        assert [m.content for m in stored] == [m["content"] for m in chat.messages]
        assert [m.message_id for m in stored] == ids(chat)

    def test_resent_history_is_not_duplicated_in_what_goes_to_helix(
        self, service: HistoryService
    ) -> None:
        chat = chat_1()
        play(service, chat, "q0", "a0")
        assert play(service, chat, "q1", "a1") == ["q0", "a0", "q1"]

    def test_an_edit_starts_a_new_branch_and_keeps_the_old_one(
        self, service: HistoryService
    ) -> None:
        chat = chat_1()
        play(service, chat, "q0", "a0")
        play(service, chat, "q1", "a1")
        sent = play(service, chat.branch(2), "q1 edited", "a2")
        assert sent == ["q0", "a0", "q1 edited"]
        branches = service.store.branches(ConversationKey("user-a", "chat-1"))
        assert [[m.content for m in b] for b in branches] == [
            ["q0", "a0", "q1", "a1"],
            ["q0", "a0", "q1 edited", "a2"],
        ]

    def test_a_turn_prepared_before_another_workers_edit_forks_instead_of_joining_the_edit(
        self, service: HistoryService
    ) -> None:
        chat = chat_1()
        play(service, chat, "q0", "a0")
        play(service, chat, "q1", "a1")
        turn = chat.start_turn("q2")
        body = chat.inlet_body(turn)
        prepared = service.prepare(read_conversation(body, USER), incoming(body))

        play(service, chat.branch(2), "q1 edited", "a3")
        assert service.record(prepared, "a2")
        chat.finish_turn(turn, "a2")

        branches = service.store.branches(ConversationKey("user-a", "chat-1"))
        assert [[m.content for m in b] for b in branches] == [
            ["q0", "a0", "q1", "a1"],
            ["q0", "a0", "q1 edited", "a3"],
            ["q0", "a0", "q1", "a1", "q2", "a2"],
        ]
        assert [m.message_id for m in branches[-1]] == ids(chat)

    def test_the_outlet_attaches_ids_without_storing_anything_twice(
        self, service: HistoryService
    ) -> None:
        chat = chat_1()
        body = chat.inlet_body(chat.start_turn("q0"))
        body["metadata"] = {"chat_id": "chat-1"}  # an older client: no message ids in the inlet
        play_turn(service, body, "a0")
        outlet = {
            "chat_id": "chat-1",
            "id": "assistant-id",
            "messages": [
                {"id": "user-id", "role": "user", "content": "q0"},
                {"id": "assistant-id", "role": "assistant", "content": "a0"},
            ],
        }
        conversation = read_conversation(outlet, USER)
        for _ in range(2):  # older clients run the outlet twice
            assert service.reconcile(conversation, incoming(outlet))
        stored = service.store.load(ConversationKey("user-a", "chat-1"))
        assert [(m.content, m.message_id) for m in stored] == [
            ("q0", "user-id"),
            ("a0", "assistant-id"),
        ]


class TestPlainApiCallers:
    def test_a_client_that_sends_only_its_newest_message_gets_the_history_in_front(
        self, service: HistoryService
    ) -> None:
        first = {"messages": [{"role": "user", "content": "q0"}], "chat_id": "api-chat"}
        play_turn(service, first, "a0")
        second = {"messages": [{"role": "user", "content": "q1"}], "chat_id": "api-chat"}
        assert play_turn(service, second, "a1") == ["q0", "a0", "q1"]
        stored = service.store.load(ConversationKey("user-a", "api-chat"))
        assert [m.content for m in stored] == ["q0", "a0", "q1", "a1"]

    def test_system_messages_go_first_and_are_never_stored(self, service: HistoryService) -> None:
        body = {
            "chat_id": "api-chat",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "q0"},
            ],
        }
        conversation = read_conversation(body, USER)
        turn = service.prepare(conversation, incoming(body))
        service.record(turn, "a0")
        assert [m.role for m in turn.outgoing] == ["system", "user"]
        assert [m.role for m in service.store.load(conversation.key)] == ["user", "assistant"]


class TestWhatIsNeverStored:
    def test_background_tasks_are_never_recorded(self, service: HistoryService) -> None:
        chat = chat_1()
        body = chat.task_inlet_body(chat.start_turn("q0"))
        conversation = read_conversation(body, USER)
        assert service.store_for(conversation) is None
        assert not service.record(service.passthrough(conversation, incoming(body)), "Title")
        assert service.store.users() == []

    def test_temporary_chats_stay_in_memory_unless_a_valve_says_so(self) -> None:
        durable = MemoryStore("memory://durable")
        service = HistoryService(durable)
        play(service, OpenWebUIChat(chat_id="local:abc", user=USER), "q0", "a0")
        assert durable.users() == []
        assert service.temporary_store.users() == ["user-a"]

        keeping = HistoryService(durable, store_temporary=True)
        play(keeping, OpenWebUIChat(chat_id="local:abc", user=USER), "q0", "a0")
        assert durable.users() == ["user-a"]

    def test_history_off_records_nothing(self) -> None:
        service = HistoryService(MemoryStore(), enabled=False)
        chat = chat_1()
        conversation = read_conversation(chat.inlet_body(chat.start_turn("q0")), USER)
        assert service.store_for(conversation) is None


class TestAStoreThatIsDown:
    def test_the_turn_goes_on_without_stored_history_and_the_log_says_so(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        service = HistoryService(BrokenStore("memory://broken"))
        body = {"chat_id": "api-chat", "messages": [{"role": "user", "content": "q1"}]}
        with caplog.at_level(logging.WARNING):
            turn = service.prepare(read_conversation(body, USER), incoming(body))
            recorded = service.record(turn, "a1")
        assert [m.content for m in turn.outgoing] == ["q1"]
        assert not recorded
        assert "without stored history" in caplog.text
        assert "could not record a turn" in caplog.text

    def test_purge_failure_is_logged_not_raised(self, caplog: pytest.LogCaptureFixture) -> None:
        service = HistoryService(BrokenStore("memory://broken"))
        with caplog.at_level(logging.WARNING):
            assert service.purge_older_than(30) == 0
        assert "could not purge" in caplog.text


class TestBudget:
    def test_what_goes_to_helix_respects_the_message_budget(self) -> None:
        service = HistoryService(MemoryStore(), budget=Budget(max_messages=5))
        chat = history_of(chat_1(), [f"m{i}" for i in range(10)])
        body = chat.inlet_body(chat.start_turn("m10"))
        turn = service.prepare(read_conversation(body, USER), incoming(body))
        assert len(turn.outgoing) <= 5
        assert turn.outgoing[0].content == "m0"
        assert turn.outgoing[-1].content == "m10"
        assert turn.trim


class CountingBrokenStore(BrokenStore):
    calls = 0

    def read(self, key: ConversationKey) -> Branch:
        self.calls += 1
        return super().read(key)

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        self.calls += 1
        return super().record(key, messages, after=after, base=base)


class TestAStoreThatStaysDown:
    def test_turns_stop_asking_it_for_a_while_after_it_was_found_unreachable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from helix_pipeline.stores import lazy

        clock = [1000.0]
        monkeypatch.setattr(lazy.time, "monotonic", lambda: clock[0])
        store = CountingBrokenStore("memory://broken")
        service = HistoryService(lazy.LazyStore(store.url, lambda: store))
        body = {"chat_id": "api-chat", "messages": [{"role": "user", "content": "q"}]}
        conversation = read_conversation(body, USER)

        for _ in range(3):
            service.record(service.prepare(conversation, incoming(body)), "a")
        assert store.calls == 1, "one timeout, then the store rests"

        clock[0] += lazy.RETRY_OPEN_S + 0.1
        service.prepare(conversation, incoming(body))
        assert store.calls == 2, "after the cool-down the store is asked again"
