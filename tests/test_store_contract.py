"""The behaviour every session store engine shares, run once per engine by the ``store`` fixture.

Nothing here knows which engine it is talking to: a new engine passes this file or is not done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.messages import Message
from helix_pipeline.stores import Branch, RecordResult, SessionStore
from helix_pipeline.stores.sql import SQLStore

ALICE = ConversationKey("alice", "chat-1")

Row = tuple[str, str, str | None, bool]


def rows(messages: Sequence[Message]) -> list[Row]:
    """What a store must give back exactly (``created_at`` is the store's own stamp)."""
    return [(m.role, m.content, m.message_id, m.partial) for m in messages]


def turn(number: int, *, ids: bool = True) -> list[Message]:
    """A user message and its reply, with Open WebUI ids unless ``ids=False``."""
    return [
        Message("user", f"question {number}", f"u{number}" if ids else None),
        Message("assistant", f"answer {number}", f"a{number}" if ids else None),
    ]


def chat(turns: int, *, ids: bool = True) -> list[Message]:
    return [message for number in range(1, turns + 1) for message in turn(number, ids=ids)]


class TestAnEmptyStore:
    def test_an_unknown_conversation_loads_as_empty(self, store: SessionStore) -> None:
        assert store.load(ALICE) == []

    def test_an_unknown_conversation_has_no_branches(self, store: SessionStore) -> None:
        assert store.branches(ALICE) == []

    def test_nobody_has_conversations(self, store: SessionStore) -> None:
        assert store.conversations("alice") == []
        assert store.users() == []

    def test_deleting_an_unknown_conversation_reports_false(self, store: SessionStore) -> None:
        assert store.delete(ALICE) is False

    def test_recording_nothing_creates_no_conversation(self, store: SessionStore) -> None:
        result = store.record(ALICE, [])

        assert result == RecordResult(branch=0, appended=0, ids_attached=0, forked=False)
        assert store.users() == []
        assert store.branches(ALICE) == []

    def test_the_store_satisfies_the_protocol(self, store: SessionStore) -> None:
        assert isinstance(store, SessionStore)
        assert isinstance(store.url, str)


class TestAppending:
    def test_recorded_messages_load_back_in_order(self, store: SessionStore) -> None:
        result = store.record(ALICE, chat(2))

        assert result == RecordResult(branch=0, appended=4, ids_attached=0, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))

    def test_every_recorded_message_is_stamped_with_its_creation_time(
        self, store: SessionStore
    ) -> None:
        before = time.time()
        store.record(ALICE, chat(1))
        after = time.time()

        stamps = [m.created_at for m in store.load(ALICE)]
        assert all(s is not None and before - 1 <= s <= after + 1 for s in stamps)

    def test_after_none_appends_to_the_end(self, store: SessionStore) -> None:
        store.record(ALICE, turn(1))
        result = store.record(ALICE, turn(2))

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))

    def test_after_none_appends_even_a_text_already_stored(self, store: SessionStore) -> None:
        store.record(ALICE, [Message("user", "again")])
        store.record(ALICE, [Message("user", "again")])

        assert rows(store.load(ALICE)) == [("user", "again", None, False)] * 2

    def test_earlier_messages_keep_their_creation_time(self, store: SessionStore) -> None:
        store.record(ALICE, turn(1))
        first = store.load(ALICE)
        store.record(ALICE, turn(2))

        assert store.load(ALICE)[:2] == first

    def test_conversations_are_kept_apart(self, store: SessionStore) -> None:
        other = ConversationKey("alice", "chat-2")
        store.record(ALICE, turn(1))
        store.record(other, turn(2))

        assert rows(store.load(ALICE)) == rows(turn(1))
        assert rows(store.load(other)) == rows(turn(2))


class TestResentHistory:
    def test_resent_history_is_not_duplicated(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))
        result = store.record(ALICE, chat(2), after=0)

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))

    def test_resent_history_without_ids_is_not_duplicated(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1, ids=False))
        store.record(ALICE, chat(2, ids=False), after=0)

        assert rows(store.load(ALICE)) == rows(chat(2, ids=False))

    def test_a_message_id_recorded_twice_is_stored_once(self, store: SessionStore) -> None:
        store.record(ALICE, turn(1))
        result = store.record(ALICE, [turn(1)[1]])

        assert result.appended == 0
        assert rows(store.load(ALICE)) == rows(turn(1))

    def test_ids_attach_to_earlier_messages_that_had_none(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2, ids=False))
        result = store.record(ALICE, chat(2), after=0)

        assert result == RecordResult(branch=0, appended=0, ids_attached=4, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))
        assert len(store.branches(ALICE)) == 1

    def test_a_stored_partial_reply_matches_its_completed_text(self, store: SessionStore) -> None:
        store.record(ALICE, [Message("user", "hi"), Message("assistant", "Hel", partial=True)])
        store.record(
            ALICE,
            [Message("user", "hi"), Message("assistant", "Hello [cut]"), Message("user", "more")],
            after=0,
        )

        assert rows(store.load(ALICE)) == [
            ("user", "hi", None, False),
            ("assistant", "Hel", None, True),
            ("user", "more", None, False),
        ]


class TestBranching:
    def test_an_edited_message_starts_a_new_active_branch(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        edited = Message("user", "question 2, edited", "u2-edit")
        result = store.record(ALICE, [edited], after=2)

        assert result == RecordResult(branch=1, appended=1, ids_attached=0, forked=True)
        assert rows(store.load(ALICE)) == rows([*turn(1), edited])

    def test_the_old_branch_stays_readable(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "question 2, edited")], after=2)

        old, new = store.branches(ALICE)
        assert rows(old) == rows(chat(2))
        assert rows(new) == rows([*turn(1), Message("user", "question 2, edited")])

    def test_a_regenerated_reply_starts_a_new_branch(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        regenerated = Message("assistant", "answer 2, again", "a2-regen")
        result = store.record(ALICE, [*chat(1), turn(2)[0], regenerated], after=0)

        assert result == RecordResult(branch=1, appended=1, ids_attached=0, forked=True)
        assert rows(store.load(ALICE)) == rows([*chat(1), turn(2)[0], regenerated])
        assert [len(branch) for branch in store.branches(ALICE)] == [4, 4]

    def test_ids_attached_in_the_forking_call_are_in_both_branches(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, [*chat(1, ids=False), Message("user", "question 2")])
        result = store.record(ALICE, [*chat(1), Message("user", "edited")], after=0)

        assert result == RecordResult(branch=1, appended=1, ids_attached=2, forked=True)
        old, new = store.branches(ALICE)
        assert rows(old) == rows([*chat(1), Message("user", "question 2")])
        assert rows(new) == rows([*chat(1), Message("user", "edited")])

    def test_the_copied_prefix_keeps_its_creation_times(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        prefix = store.load(ALICE)[:2]
        store.record(ALICE, [Message("user", "edited")], after=2)

        assert store.load(ALICE)[:2] == prefix

    def test_later_turns_continue_the_new_branch(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "edited")], after=2)
        result = store.record(ALICE, [Message("assistant", "reply to edit")])

        assert result == RecordResult(branch=1, appended=1, ids_attached=0, forked=False)
        old, new = store.branches(ALICE)
        assert rows(old) == rows(chat(2))
        assert [m.content for m in new] == [
            *(m.content for m in chat(1)),
            "edited",
            "reply to edit",
        ]

    def test_a_message_id_of_the_active_branch_is_not_stored_again_after_a_fork(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(2))
        result = store.record(ALICE, [Message("user", "edited"), turn(1)[0]], after=2)

        assert result.appended == 1
        assert rows(store.load(ALICE)) == rows([*turn(1), Message("user", "edited")])

    def test_an_after_past_the_end_appends(self, store: SessionStore) -> None:
        store.record(ALICE, turn(1))
        result = store.record(ALICE, turn(2), after=99)

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))


class TestUserIsolation:
    def test_another_user_with_the_same_conversation_id_sees_nothing(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(1))
        bob = ConversationKey("bob", ALICE.conversation_id)

        assert store.load(bob) == []
        assert store.branches(bob) == []
        assert store.conversations("bob") == []

    def test_another_user_cannot_overwrite_a_conversation(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        bob = ConversationKey("bob", ALICE.conversation_id)
        result = store.record(bob, [Message("user", "mine now")], after=0)

        assert result == RecordResult(branch=0, appended=1, ids_attached=0, forked=False)
        assert rows(store.load(ALICE)) == rows(chat(2))
        assert len(store.branches(ALICE)) == 1
        assert rows(store.load(bob)) == [("user", "mine now", None, False)]

    def test_another_user_cannot_delete_a_conversation(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))

        assert store.delete(ConversationKey("bob", ALICE.conversation_id)) is False
        assert rows(store.load(ALICE)) == rows(chat(1))

    @pytest.mark.parametrize(
        "intruder",
        [
            pytest.param("*", id="glob-star"),
            pytest.param("%", id="like-percent"),
            pytest.param("ali%", id="like-prefix"),
            pytest.param("alic_", id="like-underscore"),
            pytest.param("alice ", id="trailing-space"),
            pytest.param("ALICE", id="other-case"),
            pytest.param("alice\x00", id="trailing-nul"),
            pytest.param("' OR '1'='1", id="sql-injection"),
        ],
    )
    def test_a_lookalike_user_id_matches_nobody_else(
        self, store: SessionStore, intruder: str
    ) -> None:
        store.record(ALICE, chat(1))
        key = ConversationKey(intruder, ALICE.conversation_id)

        assert store.load(key) == []
        assert store.conversations(intruder) == []
        assert store.delete(key) is False
        assert store.users() == ["alice"]


class TestDelete:
    def test_deleting_removes_every_branch(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "edited")], after=2)

        assert store.delete(ALICE) is True
        assert store.load(ALICE) == []
        assert store.branches(ALICE) == []
        assert store.conversations("alice") == []
        assert store.users() == []

    def test_deleting_twice_reports_false_the_second_time(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))

        assert store.delete(ALICE) is True
        assert store.delete(ALICE) is False

    def test_deleting_leaves_other_conversations_alone(self, store: SessionStore) -> None:
        other = ConversationKey("alice", "chat-2")
        store.record(ALICE, turn(1))
        store.record(other, turn(2))
        store.delete(ALICE)

        assert rows(store.load(other)) == rows(turn(2))
        assert [c.conversation_id for c in store.conversations("alice")] == ["chat-2"]

    def test_a_deleted_conversation_starts_again_at_branch_zero(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "edited")], after=2)
        store.delete(ALICE)
        result = store.record(ALICE, turn(3))

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert [rows(b) for b in store.branches(ALICE)] == [rows(turn(3))]


class TestConversationListing:
    def test_a_conversation_lists_its_id_and_counts(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "edited")], after=2)

        (summary,) = store.conversations("alice")
        assert (summary.conversation_id, summary.message_count, summary.branch_count) == (
            "chat-1",
            3,
            2,
        )

    def test_last_activity_is_an_aware_utc_time_of_the_latest_change(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, turn(1))
        before = datetime.now(timezone.utc)
        store.record(ALICE, turn(2))
        after = datetime.now(timezone.utc)

        (summary,) = store.conversations("alice")
        assert summary.last_activity.utcoffset() == timedelta(0)
        slack = timedelta(seconds=1)
        assert before - slack <= summary.last_activity <= after + slack

    def test_attaching_ids_counts_as_activity(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1, ids=False))
        (first,) = store.conversations("alice")
        time.sleep(0.02)
        store.record(ALICE, chat(1), after=0)

        (second,) = store.conversations("alice")
        assert second.last_activity > first.last_activity

    def test_recording_nothing_new_is_not_activity(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))
        (first,) = store.conversations("alice")
        time.sleep(0.02)
        store.record(ALICE, chat(1), after=0)

        assert store.conversations("alice") == [first]

    def test_the_most_recently_active_conversation_comes_first(self, store: SessionStore) -> None:
        for name in ("chat-a", "chat-b", "chat-c"):
            store.record(ConversationKey("alice", name), turn(1))
            time.sleep(0.02)
        store.record(ConversationKey("alice", "chat-a"), turn(2))

        listed = [c.conversation_id for c in store.conversations("alice")]
        assert listed == ["chat-a", "chat-c", "chat-b"]

    def test_users_lists_each_user_once_in_order(self, store: SessionStore) -> None:
        for user, conversation in [("carol", "1"), ("alice", "1"), ("alice", "2"), ("bob", "1")]:
            store.record(ConversationKey(user, conversation), turn(1))

        assert store.users() == ["alice", "bob", "carol"]


class TestPurge:
    def test_purging_removes_conversations_idle_since_before_the_date(
        self, store: SessionStore
    ) -> None:
        old = ConversationKey("alice", "old")
        store.record(old, chat(1))
        store.record(old, [Message("user", "edited")], after=0)
        time.sleep(0.02)
        cutoff = datetime.now(timezone.utc)
        time.sleep(0.02)
        store.record(ALICE, chat(1))

        assert store.purge(cutoff) == 1
        assert store.load(old) == []
        assert store.branches(old) == []
        assert rows(store.load(ALICE)) == rows(chat(1))
        assert [c.conversation_id for c in store.conversations("alice")] == ["chat-1"]

    def test_purging_with_a_past_date_removes_nothing(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))

        assert store.purge(datetime.now(timezone.utc) - timedelta(days=1)) == 0
        assert rows(store.load(ALICE)) == rows(chat(1))

    def test_purging_everything_leaves_no_users(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1))
        store.record(ConversationKey("bob", "x"), chat(1))

        assert store.purge(datetime.now(timezone.utc) + timedelta(seconds=1)) == 2
        assert store.users() == []


MARCH = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp()
"""A time long past, as an import gives it; the fractions below are exact in binary."""


def dated(messages: Sequence[Message], start: float) -> list[Message]:
    """``messages`` with creation times 60.25 s apart from ``start``, as an export holds them."""
    return [replace(m, created_at=start + 60.25 * i) for i, m in enumerate(messages)]


class TestGivenCreationTimes:
    def test_a_given_creation_time_is_kept_by_load_and_branches(self, store: SessionStore) -> None:
        imported = dated(chat(2), MARCH)
        store.record(ALICE, imported)

        assert [m.created_at for m in store.load(ALICE)] == [m.created_at for m in imported]
        assert [[m.created_at for m in b] for b in store.branches(ALICE)] == [
            [m.created_at for m in imported]
        ]

    def test_a_forked_branch_keeps_its_given_times_and_its_copied_prefix(
        self, store: SessionStore
    ) -> None:
        first = dated(chat(2), MARCH)
        edit = dated([Message("user", "edited", "u2-edit")], MARCH + 3600.5)
        store.record(ALICE, first)
        store.record(ALICE, [*first[:2], *edit], after=0)

        old, new = store.branches(ALICE)
        assert [m.created_at for m in old] == [m.created_at for m in first]
        assert [m.created_at for m in new] == [*(m.created_at for m in first[:2]), MARCH + 3600.5]

    def test_only_the_messages_without_a_time_get_the_current_one(
        self, store: SessionStore
    ) -> None:
        before = time.time()
        store.record(ALICE, [*dated(turn(1), MARCH), *turn(2)])
        after = time.time()

        stamps = [m.created_at for m in store.load(ALICE)]
        assert stamps[:2] == [MARCH, MARCH + 60.25]
        assert all(s is not None and before - 1 <= s <= after + 1 for s in stamps[2:])

    def test_the_last_activity_is_the_latest_given_time(self, store: SessionStore) -> None:
        store.record(ALICE, dated(chat(2), MARCH))
        store.record(ALICE, dated([Message("user", "edited", "e")], MARCH + 600.5), after=2)

        (summary,) = store.conversations("alice")
        assert summary.last_activity == datetime.fromtimestamp(MARCH + 600.5, timezone.utc)

    def test_older_given_times_never_move_the_last_activity_back(self, store: SessionStore) -> None:
        store.record(ALICE, dated(chat(1), MARCH + 86_400))
        store.record(ALICE, dated([Message("user", "older edit", "e")], MARCH), after=0)

        (summary,) = store.conversations("alice")
        assert summary.last_activity == datetime.fromtimestamp(MARCH + 86_400 + 60.25, timezone.utc)
        assert summary.branch_count == 2

    def test_ids_attached_by_dated_messages_keep_the_dated_activity(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, dated(chat(1, ids=False), MARCH))
        result = store.record(ALICE, dated(chat(1), MARCH), after=0)

        assert result.ids_attached == 2
        (summary,) = store.conversations("alice")
        assert summary.last_activity == datetime.fromtimestamp(MARCH + 60.25, timezone.utc)

    def test_a_new_turn_after_an_import_is_activity_now(self, store: SessionStore) -> None:
        store.record(ALICE, dated(chat(1), MARCH))
        before = datetime.now(timezone.utc)
        store.record(ALICE, turn(2))

        (summary,) = store.conversations("alice")
        assert summary.last_activity >= before - timedelta(seconds=1)

    def test_imported_conversations_are_listed_by_their_own_activity(
        self, store: SessionStore
    ) -> None:
        store.record(ConversationKey("alice", "older"), dated(chat(1), MARCH))
        store.record(ConversationKey("alice", "fresh"), chat(1))
        store.record(ConversationKey("alice", "newer"), dated(chat(1), MARCH + 86_400))

        listed = [c.conversation_id for c in store.conversations("alice")]
        assert listed == ["fresh", "newer", "older"]

    def test_purging_removes_an_imported_conversation_whose_times_are_old(
        self, store: SessionStore
    ) -> None:
        imported = ConversationKey("alice", "imported")
        store.record(imported, dated(chat(2), MARCH))
        store.record(imported, dated([Message("user", "edited", "e")], MARCH + 60), after=2)
        store.record(ALICE, chat(1))

        assert store.purge(datetime.now(timezone.utc) - timedelta(days=30)) == 1
        assert store.branches(imported) == []
        assert [c.conversation_id for c in store.conversations("alice")] == ["chat-1"]


HOSTILE_IDS = [
    pytest.param("chat/../../etc/passwd", id="path-separators"),
    pytest.param("C:\\Windows\\x", id="backslashes"),
    pytest.param('it\'s "quoted"', id="quotes"),
    pytest.param("'; DROP TABLE messages; --", id="sql-injection"),
    pytest.param("a\x00b", id="nul-byte"),
    pytest.param("{tag}:*?[x]", id="glob-and-hash-tag"),
    pytest.param("ünïcødé 会话 🙂", id="unicode"),
    pytest.param("x" * 100_000, id="100k-characters"),
]


class TestRoundTrips:
    def test_the_partial_flag_round_trips(self, store: SessionStore) -> None:
        store.record(ALICE, [Message("user", "q"), Message("assistant", "cut sh", partial=True)])

        assert [m.partial for m in store.load(ALICE)] == [False, True]

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param("", id="empty"),
            pytest.param("  padded\n\n", id="white-space"),
            pytest.param("नमस्ते 🙂 مرحبا e\u0301", id="unicode"),
            pytest.param("before\x00after", id="nul-byte"),
            pytest.param("\x01\x1b[31m\x7f", id="control-characters"),
            pytest.param("line\r\nline\n" * 100_000, id="over-a-megabyte"),
        ],
    )
    def test_content_round_trips_exactly(self, store: SessionStore, content: str) -> None:
        store.record(ALICE, [Message("user", content, "m1")])

        assert rows(store.load(ALICE)) == [("user", content, "m1", False)]

    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    def test_hostile_ids_are_only_ever_keys(self, store: SessionStore, hostile: str) -> None:
        key = ConversationKey(hostile, hostile)
        store.record(key, [Message("user", "q", hostile)])
        store.record(key, [Message("user", "q", hostile)])

        assert rows(store.load(key)) == [("user", "q", hostile, False)]
        assert [c.conversation_id for c in store.conversations(hostile)] == [hostile]
        assert store.users() == [hostile]
        assert store.delete(key) is True
        assert store.users() == []


class TestConcurrentWriters:
    def test_threads_appending_to_one_conversation_lose_nothing(self, store: SessionStore) -> None:
        def append(worker: int) -> None:
            for number in range(10):
                store.record(ALICE, [Message("user", f"{worker}-{number}", f"{worker}-{number}")])

        threads = [threading.Thread(target=append, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        ids = [m.message_id or "" for m in store.load(ALICE)]
        assert sorted(ids) == sorted(f"{w}-{n}" for w in range(4) for n in range(10))
        assert len(store.branches(ALICE)) == 1


class TestReadingWithAVersion:
    def test_an_unknown_conversation_reads_as_an_empty_branch_without_a_version(
        self, store: SessionStore
    ) -> None:
        assert store.read(ALICE) == Branch()
        assert store.read(ALICE).version is None

    def test_read_gives_the_active_branch_as_load_does(self, store: SessionStore) -> None:
        store.record(ALICE, chat(2))
        store.record(ALICE, [Message("user", "edited")], after=2)

        branch = store.read(ALICE)
        assert list(branch.messages) == store.load(ALICE)
        assert branch.version is not None

    def test_every_change_moves_the_version_and_nothing_else_does(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(1, ids=False))
        versions = [store.read(ALICE).version]
        store.record(ALICE, chat(1), after=0)  # ids attached
        versions.append(store.read(ALICE).version)
        store.record(ALICE, turn(2))  # appended
        versions.append(store.read(ALICE).version)
        store.record(ALICE, [Message("user", "edited")], after=2)  # forked
        versions.append(store.read(ALICE).version)
        store.record(ALICE, [*chat(1), Message("user", "edited")], after=0)  # nothing new

        assert len(set(versions)) == 4
        assert store.read(ALICE).version == versions[-1]

    def test_a_conversation_deleted_and_recorded_again_has_a_new_version(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, turn(1))
        before = store.read(ALICE)
        store.delete(ALICE)
        store.record(ALICE, turn(1))

        assert store.read(ALICE).version != before.version


class TestRecordingOnTheBranchRead:
    def test_a_record_on_the_current_branch_appends_and_returns_what_a_read_gives(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(1))
        base = store.read(ALICE)
        result = store.record(ALICE, [*base.messages, *turn(2)], after=0, base=base)

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert result.active == store.read(ALICE)
        assert rows(result.active.messages) == rows(chat(2))

    def test_a_record_that_changes_nothing_returns_the_branch_as_it_stands(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(1))
        base = store.read(ALICE)
        result = store.record(ALICE, chat(1), after=0, base=base)

        assert result.appended == result.ids_attached == 0
        assert result.active == base == store.read(ALICE)

    def test_a_sql_record_given_the_current_branch_does_not_read_the_branch_again(
        self, store: SessionStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SQLite and PostgreSQL share one ``record``: one check for both."""
        if not isinstance(store, SQLStore):
            pytest.skip("a SQL engine's branch read")
        store.record(ALICE, [Message("user", "q1", "u1"), Message("assistant", "a1", "a1")])
        base = store.read(ALICE)
        reads: list[int] = []
        read_branch = SQLStore._read_branch
        monkeypatch.setattr(
            SQLStore,
            "_read_branch",
            lambda self, *args: reads.append(1) or read_branch(self, *args),
        )

        store.record(ALICE, [*base.messages, Message("user", "q2", "u2")], after=0, base=base)
        assert reads == []
        store.record(ALICE, [*base.messages, Message("user", "q3", "u3")], after=0, base=base)
        assert reads == [1], "a stale branch is read again"
        assert [m.content for m in store.load(ALICE)] == ["q1", "a1", "q3"]

    def test_a_new_conversation_recorded_on_its_empty_read_is_created(
        self, store: SessionStore
    ) -> None:
        result = store.record(ALICE, chat(1), after=0, base=store.read(ALICE))

        assert result == RecordResult(branch=0, appended=2, ids_attached=0, forked=False)
        assert result.active == store.read(ALICE)

    def test_a_branch_another_writer_appended_to_is_read_again_and_nothing_is_lost(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(1))
        stale = store.read(ALICE)
        store.record(ALICE, turn(2))  # another worker's turn, with ids
        result = store.record(ALICE, [*stale.messages, *turn(2)], after=0, base=stale)

        assert result.appended == 0
        assert rows(store.load(ALICE)) == rows(chat(2))
        assert result.active == store.read(ALICE)

    def test_a_turn_read_before_another_writers_edit_forks_from_the_edit(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(2))
        stale = store.read(ALICE)
        store.record(ALICE, [Message("user", "question 2, edited", "u2e")], after=2)
        result = store.record(ALICE, [*stale.messages, *turn(3)], after=0, base=stale)

        assert result == RecordResult(branch=2, appended=4, ids_attached=0, forked=True)
        assert rows(store.load(ALICE)) == rows(chat(3))
        assert len(store.branches(ALICE)) == 3

    def test_a_branch_read_before_a_delete_is_not_trusted_after_it(
        self, store: SessionStore
    ) -> None:
        store.record(ALICE, chat(2))
        stale = store.read(ALICE)
        store.delete(ALICE)
        store.record(ALICE, [Message("user", "a new start", "n1")])
        store.record(ALICE, [*stale.messages, *turn(3)], after=0, base=stale)

        old, new = store.branches(ALICE)
        assert rows(old) == [("user", "a new start", "n1", False)]
        assert rows(new) == rows(chat(3))

    def test_ids_attached_by_another_writer_move_the_version(self, store: SessionStore) -> None:
        store.record(ALICE, chat(1, ids=False))
        stale = store.read(ALICE)
        store.record(ALICE, chat(1), after=0)  # another worker's outlet attaches the ids
        result = store.record(ALICE, [*chat(1), *turn(2)], after=0, base=stale)

        assert result.ids_attached == 0
        assert rows(store.load(ALICE)) == rows(chat(2))
