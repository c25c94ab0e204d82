"""HistoryService.reconcile writes only when the outlet brings something new (a hot path)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from helix_pipeline.conversation import ConversationKey, read_conversation
from helix_pipeline.messages import Message, messages_from_dicts
from helix_pipeline.service import HistoryService, RecentBranches
from helix_pipeline.stores import Branch, MemoryStore, RecordResult

USER = {"id": "user-a", "name": "A", "email": "a@example.com", "role": "user"}
KEY = ConversationKey("user-a", "chat-1")


class CountingStore(MemoryStore):
    """A memory store that counts its reads and its ``record`` calls (each one a write
    transaction elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.records = 0
        self.reads = 0

    def read(self, key: ConversationKey) -> Branch:
        self.reads += 1
        return super().read(key)

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        self.records += 1
        return super().record(key, messages, after=after, base=base)


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


class TestStoreRoundTripsPerTurn:
    def test_a_pipe_turn_and_its_outlet_read_once_and_write_once(
        self, store: CountingStore
    ) -> None:
        service = play_turn(store, {"user_message_id": "u0", "message_id": "a0-id"})
        assert reconcile(service, outlet("u0", "a0-id"))

        assert (store.reads, store.records) == (1, 1)

    def test_a_filter_turn_reads_at_the_inlet_and_writes_once_at_the_outlet(
        self, store: CountingStore
    ) -> None:
        service = HistoryService(store)
        body = inlet({"user_message_id": "u0", "message_id": "a0-id"})
        service.prepare(read_conversation(body, USER), messages_from_dicts(body["messages"]))
        assert reconcile(service, outlet("u0", "a0-id"))

        assert (store.reads, store.records) == (1, 1)
        assert [(m.content, m.message_id) for m in store.load(KEY)] == [
            ("q0", "u0"),
            ("a0", "a0-id"),
        ]

    def test_an_outlet_another_worker_serves_reads_the_branch(self, store: CountingStore) -> None:
        play_turn(store, {"user_message_id": "u0", "message_id": "a0-id"})
        other_worker = HistoryService(store)
        assert reconcile(other_worker, outlet("u0", "a0-id"))

        assert (store.reads, store.records) == (2, 1)

    def test_an_outlet_after_another_workers_edit_still_records_what_it_brings(
        self, store: CountingStore
    ) -> None:
        service = play_turn(store, {})  # no ids: the outlet will bring them
        other_worker = HistoryService(store)
        edit = inlet({"user_message_id": "u0e", "message_id": "a0e"})
        edit["messages"] = [{"role": "user", "content": "q0 edited"}]
        turn = other_worker.prepare(
            read_conversation(edit, USER), messages_from_dicts(edit["messages"])
        )
        assert other_worker.record(turn, "a0e-text")

        assert reconcile(service, outlet("user-id", "assistant-id"))
        branches = store.branches(KEY)
        assert [(m.content, m.message_id) for m in branches[-1]] == [
            ("q0", "user-id"),
            ("a0", "assistant-id"),
        ]
        assert len(branches) == 3


class TestTheBranchesAServiceRemembers:
    def test_are_bounded_in_number_least_recently_used_out(self) -> None:
        store = MemoryStore()
        recent = RecentBranches(conversations=2)
        keys = [ConversationKey("u", f"chat-{n}") for n in range(3)]
        for key in keys:
            recent.remember(store, key, Branch((Message("user", "q"),), 1))
        assert recent.get(store, keys[0]) is None
        assert recent.get(store, keys[2]) is not None
        assert len(recent) == 2

    def test_are_bounded_in_characters_and_a_longer_branch_is_not_kept(self) -> None:
        store = MemoryStore()
        recent = RecentBranches(characters=10)
        recent.remember(store, KEY, Branch((Message("user", "x" * 11),), 1))
        assert recent.get(store, KEY) is None
        recent.remember(store, KEY, Branch((Message("user", "x" * 6),), 1))
        other = ConversationKey("u", "other")
        recent.remember(store, other, Branch((Message("user", "x" * 6),), 1))
        assert recent.get(store, KEY) is None
        assert recent.get(store, other) is not None

    def test_belong_to_the_store_they_came_from(self) -> None:
        recent = RecentBranches()
        recent.remember(MemoryStore(), KEY, Branch((Message("user", "q"),), 1))
        assert recent.get(MemoryStore(), KEY) is None


class TestAnOutletOfTheTurnJustRecorded:
    def test_is_recognised_by_its_ids_without_normalising_its_messages(
        self, store: CountingStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        service = play_turn(store, {"user_message_id": "u0", "message_id": "a0-id"})

        def unexpected(raw: object) -> list[Message]:
            raise AssertionError("the outlet's messages were normalised")

        monkeypatch.setattr("helix_pipeline.service.messages_from_dicts", unexpected)
        assert service.reconcile_outlet(outlet("u0", "a0-id"), USER)
        assert (store.reads, store.records) == (1, 1)

    def test_that_brings_an_id_the_branch_lacks_is_recorded(self, store: CountingStore) -> None:
        service = play_turn(store, {"user_message_id": "u0"})  # no id for the reply yet
        assert service.reconcile_outlet(outlet("u0", "a0-id"), USER)

        assert store.records == 2
        assert [m.message_id for m in store.load(KEY)] == ["u0", "a0-id"]

    def test_with_a_message_without_an_id_is_read_and_merged_and_records_nothing_new(
        self, store: CountingStore
    ) -> None:
        service = play_turn(store, {"user_message_id": "u0", "message_id": "a0-id"})
        body = outlet("u0", "a0-id")
        messages = body["messages"]
        assert isinstance(messages, list)
        del messages[0]["id"]

        assert service.reconcile_outlet(body, USER)
        assert (store.reads, store.records) == (2, 1)  # not the whole chat by ids: read, merged
        assert [m.message_id for m in store.load(KEY)] == ["u0", "a0-id"]
