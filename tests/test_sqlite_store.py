"""What only the SQLite store has: a file, migrations, a query plan, file errors, processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import ConfigError, StoreError, StoreUnavailable
from helix_pipeline.messages import Message
from helix_pipeline.stores import MemoryStore, SessionStore, open_store
from helix_pipeline.stores.migrations import SQLITE, migrate
from helix_pipeline.stores.sqlite import LOAD_ACTIVE_BRANCH, SQLiteStore

KEY = ConversationKey("alice", "chat-1")


def rows(messages: list[Message]) -> list[tuple[str, str, str | None, bool]]:
    return [(m.role, m.content, m.message_id, m.partial) for m in messages]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    try:
        yield store
    finally:
        store.close()


class TestOpeningFromAUrl:
    def test_open_store_gives_a_sqlite_store_on_that_file(self, db_path: Path) -> None:
        store = open_store(f"sqlite:///{db_path}")
        try:
            assert isinstance(store, SQLiteStore)
            assert store.url == f"sqlite:///{db_path}"
            assert store.path == db_path
            assert db_path.is_file()
        finally:
            store.close()

    def test_three_slashes_name_a_path_relative_to_the_working_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        SQLiteStore.from_url("sqlite:///data/sessions.db").close()

        assert (tmp_path / "data" / "sessions.db").is_file()

    def test_four_slashes_name_an_absolute_path_whose_folders_are_created(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a" / "b" / "sessions.db"
        assert str(path).startswith("/")
        SQLiteStore.from_url(f"sqlite:///{path}").close()

        assert path.is_file()

    def test_the_timeout_parameter_sets_the_busy_timeout(self, db_path: Path) -> None:
        store = SQLiteStore.from_url(f"sqlite:///{db_path}?timeout=2.5")
        store.close()

        assert store.busy_timeout == 2.5
        assert store.path == db_path

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("sqlite://sessions.db", id="two-slashes"),
            pytest.param("sqlite:///", id="no-path"),
            pytest.param("sqlite:///:memory:", id="in-memory"),
            pytest.param("sqlite:///x.db?mode=ro", id="unknown-parameter"),
            pytest.param("sqlite:///x.db?timeout=soon", id="timeout-not-a-number"),
            pytest.param("sqlite:///x.db?timeout=-1", id="negative-timeout"),
            pytest.param("sqlite:///x.db?timeout=inf", id="infinite-timeout"),
            pytest.param("postgresql:///x.db", id="other-scheme"),
        ],
    )
    def test_a_url_that_cannot_work_is_a_config_error_naming_the_variable(
        self, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError, match="SESSION_STORE_URL") as caught:
            SQLiteStore.from_url(url)

        assert caught.value.setting == "SESSION_STORE_URL"
        assert list(tmp_path.iterdir()) == []


class TestPersistence:
    def test_conversations_survive_closing_and_reopening(self, db_path: Path) -> None:
        store = SQLiteStore(db_path)
        store.record(KEY, [Message("user", "q1", "u1"), Message("assistant", "a1", "a1")])
        store.record(KEY, [Message("user", "edited", "u1e")], after=0)
        branches, listing = store.branches(KEY), store.conversations("alice")
        store.close()

        reopened = SQLiteStore(db_path)
        try:
            assert reopened.branches(KEY) == branches
            assert reopened.conversations("alice") == listing
            assert reopened.users() == ["alice"]
        finally:
            reopened.close()

    def test_two_stores_on_one_file_see_each_others_writes(self, db_path: Path) -> None:
        first, second = SQLiteStore(db_path), SQLiteStore(db_path)
        try:
            first.record(KEY, [Message("user", "from first", "1")])
            second.record(KEY, [Message("assistant", "from second", "2")])

            assert rows(first.load(KEY)) == rows(second.load(KEY))
            assert [m.content for m in first.load(KEY)] == ["from first", "from second"]
        finally:
            first.close()
            second.close()

    def test_the_file_is_in_wal_mode(self, sqlite_store: SQLiteStore, db_path: Path) -> None:
        with closing(sqlite3.connect(db_path)) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


class TestMigrations:
    def test_a_new_file_records_every_migration(
        self, sqlite_store: SQLiteStore, db_path: Path
    ) -> None:
        with closing(sqlite3.connect(db_path)) as raw:
            assert SQLITE.applied(raw) == {m.__name__ for m in SQLITE.migrations}

    def test_migrating_twice_applies_nothing_the_second_time(self, db_path: Path) -> None:
        SQLiteStore(db_path).close()
        raw = sqlite3.connect(db_path, isolation_level=None)
        try:
            recorded = raw.execute("SELECT * FROM schema_migrations ORDER BY name").fetchall()
            assert migrate(raw, SQLITE) == []
            SQLiteStore(db_path).close()
            assert raw.execute("SELECT * FROM schema_migrations ORDER BY name").fetchall() == (
                recorded
            )
        finally:
            raw.close()

    def test_opening_applies_only_the_migrations_a_file_lacks(self, db_path: Path) -> None:
        raw = sqlite3.connect(db_path, isolation_level=None)
        try:
            assert migrate(raw, SQLITE, SQLITE.migrations[:1]) == [SQLITE.migrations[0].__name__]
            SQLiteStore(db_path).close()
            assert SQLITE.applied(raw) == {m.__name__ for m in SQLITE.migrations}
            assert migrate(raw, SQLITE) == []
        finally:
            raw.close()

    def test_a_failing_migration_leaves_no_trace(self, db_path: Path) -> None:
        def m999_fails(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE half_done (x)")
            raise sqlite3.OperationalError("boom")

        raw = sqlite3.connect(db_path, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="boom"):
                migrate(raw, SQLITE, [*SQLITE.migrations, m999_fails])
            tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
            assert "half_done" not in tables
            assert SQLITE.applied(raw) == set()
        finally:
            raw.close()


class TestQueryPlan:
    def test_loading_the_active_branch_is_two_index_searches_and_no_scan(
        self, sqlite_store: SQLiteStore, db_path: Path
    ) -> None:
        for number in range(300):
            key = ConversationKey(f"user-{number % 7}", f"chat-{number}")
            sqlite_store.record(key, [Message("user", "q"), Message("assistant", "a")])
            sqlite_store.record(key, [Message("user", "edited")], after=0)

        with closing(sqlite3.connect(db_path)) as raw:
            raw.execute("ANALYZE")
            plan = [
                row[3]
                for row in raw.execute(
                    f"EXPLAIN QUERY PLAN {LOAD_ACTIVE_BRANCH}", (KEY.user_id, KEY.conversation_id)
                )
            ]

        assert plan == [
            "SEARCH c USING INDEX conversations_by_key (user_id=? AND conversation_id=?)",
            "SEARCH m USING INDEX messages_by_branch (conversation=? AND branch=?)",
        ]


def _assert_unavailable(path: Path, caught: pytest.ExceptionInfo[StoreUnavailable]) -> None:
    message = str(caught.value)
    assert str(path) in message
    assert "SESSION_STORE_URL" in message
    assert isinstance(caught.value.__cause__, (sqlite3.Error, OSError))


class TestFileErrors:
    def test_a_folder_where_the_file_should_be_is_unavailable(self, db_path: Path) -> None:
        db_path.mkdir()
        with pytest.raises(StoreUnavailable, match="unable to open") as caught:
            SQLiteStore(db_path)
        _assert_unavailable(db_path, caught)

    def test_a_file_that_is_not_a_database_is_unavailable(self, db_path: Path) -> None:
        db_path.write_bytes(b"this is not a database\n" * 500)
        with pytest.raises(StoreUnavailable, match="not a database") as caught:
            SQLiteStore(db_path)
        _assert_unavailable(db_path, caught)

    def test_a_folder_that_cannot_be_created_is_unavailable(self, tmp_path: Path) -> None:
        (tmp_path / "blocker").write_text("a file, not a folder")
        path = tmp_path / "blocker" / "sub" / "sessions.db"
        with pytest.raises(StoreUnavailable, match="creating its folder") as caught:
            SQLiteStore(path)
        _assert_unavailable(path, caught)

    @pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() == 0,
        reason="root writes into read-only folders anyway",
    )
    def test_a_read_only_folder_is_unavailable(self, tmp_path: Path) -> None:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
        path = folder / "sessions.db"
        try:
            with pytest.raises(StoreUnavailable) as caught:
                SQLiteStore(path)
        finally:
            folder.chmod(0o755)
        _assert_unavailable(path, caught)

    def test_a_write_lock_held_past_the_busy_timeout_is_a_store_error(self, db_path: Path) -> None:
        store = SQLiteStore(db_path, busy_timeout=0.1)
        store.record(KEY, [Message("user", "before the lock")])
        holder = sqlite3.connect(db_path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=r"busy timeout of 0\.1 s") as caught:
                store.record(KEY, [Message("user", "blocked")])
            assert not isinstance(caught.value, StoreUnavailable)
            assert caught.value.conversation_id == KEY.conversation_id
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert [m.content for m in store.load(KEY)] == ["before the lock"]
            holder.execute("ROLLBACK")
            store.record(KEY, [Message("user", "after the lock")])
            assert [m.content for m in store.load(KEY)] == ["before the lock", "after the lock"]
        finally:
            holder.close()
            store.close()

    def test_opening_waits_for_a_reader_of_an_old_file_to_finish(self, db_path: Path) -> None:
        reader = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("CREATE TABLE legacy (x)")
            reader.execute("BEGIN")
            reader.execute("SELECT * FROM legacy").fetchall()
            with pytest.raises(StoreError, match=r"busy timeout of 0\.05 s"):
                SQLiteStore(db_path, busy_timeout=0.05)
            release = threading.Timer(0.2, reader.execute, args=("COMMIT",))
            release.start()
            store = SQLiteStore(db_path, busy_timeout=10)
            release.join()
            store.close()
        finally:
            reader.close()
        with closing(sqlite3.connect(db_path)) as fresh:
            assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    @pytest.mark.parametrize("busy_answers", [1, 5], ids=["once", "five-times"])
    def test_switching_to_wal_retries_while_another_opener_is_switching(
        self, sqlite_store: SQLiteStore, db_path: Path, busy_answers: int
    ) -> None:
        # Two processes opening a new file at once: SQLite answers the second "database is
        # locked" at once, without its busy handler, so the store must wait by itself.
        db = sqlite3.connect(db_path, isolation_level=None, factory=_BusyForAWhile)
        db.busy_answers = busy_answers
        try:
            sqlite_store._use_wal(db)
            assert db.busy_answers == 0
        finally:
            db.close()

    def test_switching_to_wal_gives_up_after_the_busy_timeout(self, db_path: Path) -> None:
        store = SQLiteStore(db_path, busy_timeout=0.05)
        db = sqlite3.connect(db_path, isolation_level=None, factory=_BusyForAWhile)
        db.busy_answers = 10**6
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store._use_wal(db)
        finally:
            db.close()
            store.close()

    def test_a_closed_store_refuses_to_work(self, db_path: Path) -> None:
        store = SQLiteStore(db_path)
        store.close()
        store.close()

        with pytest.raises(StoreError, match="closed"):
            store.load(KEY)


class TestTextSQLiteCannotEncode:
    def test_lone_surrogates_in_ids_and_content_round_trip(self, sqlite_store: SQLiteStore) -> None:
        key = ConversationKey("user-\ud800", "chat-\udfff")
        message = Message("user", "broken \ud83d emoji", "id-\udc00")
        sqlite_store.record(key, [message])
        sqlite_store.record(key, [message])

        assert rows(sqlite_store.load(key)) == rows([message])
        assert [c.conversation_id for c in sqlite_store.conversations("user-\ud800")] == [
            "chat-\udfff"
        ]
        assert sqlite_store.users() == ["user-\ud800"]
        assert sqlite_store.load(ConversationKey("user-\ud800", "chat-\udffe")) == []


class _BusyForAWhile(sqlite3.Connection):
    """A connection whose first ``busy_answers`` journal mode switches find the file locked."""

    busy_answers = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "journal_mode" in sql and self.busy_answers > 0:
            self.busy_answers -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().execute(sql, *args)


def _expected_ids(workers: int, each: int, shared: int) -> list[str]:
    own = [f"w{worker}-{number}" for worker in range(workers) for number in range(each)]
    return sorted(own + [f"shared-{number}" for number in range(shared)])


def _append(store: SessionStore, worker: int, each: int, shared: int) -> None:
    """One writer's work: its own messages, and shared ones every writer also sends."""
    for number in range(each):
        store.record(KEY, [Message("user", f"w{worker}-{number}", f"w{worker}-{number}")])
        if number < shared:
            store.record(KEY, [Message("assistant", f"shared-{number}", f"shared-{number}")])


def _append_in_process(path: str, worker: int, each: int, shared: int, start: Any) -> None:
    start.wait(timeout=60)
    store = SQLiteStore(path)
    try:
        _append(store, worker, each, shared)
    finally:
        store.close()


def _assert_everything_stored_once(store: SessionStore, expected: list[str]) -> None:
    loaded = store.load(KEY)
    assert sorted(m.message_id or "" for m in loaded) == expected
    assert all(m.content == m.message_id for m in loaded)
    assert len(store.branches(KEY)) == 1
    (summary,) = store.conversations(KEY.user_id)
    assert summary.message_count == len(expected)


class TestConcurrentWriters:
    @pytest.mark.parametrize("per_thread", [False, True], ids=["shared-store", "store-per-thread"])
    def test_eight_threads_lose_nothing_and_duplicate_nothing(
        self, db_path: Path, per_thread: bool
    ) -> None:
        workers, each, shared = 8, 25, 10
        main = SQLiteStore(db_path)
        start = threading.Barrier(workers)
        failures: list[BaseException] = []

        def run(worker: int) -> None:
            store = SQLiteStore(db_path) if per_thread else main
            try:
                start.wait(timeout=30)
                _append(store, worker, each, shared)
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)
            finally:
                if per_thread:
                    store.close()

        threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert failures == []
            _assert_everything_stored_once(main, _expected_ids(workers, each, shared))
        finally:
            main.close()

    def test_two_processes_on_a_new_file_lose_nothing_and_duplicate_nothing(
        self, db_path: Path
    ) -> None:
        workers, each, shared = 2, 60, 20
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(workers)
        processes = [
            context.Process(target=_append_in_process, args=(str(db_path), w, each, shared, start))
            for w in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)

        assert [p.exitcode for p in processes] == [0] * workers
        store = SQLiteStore(db_path)
        try:
            _assert_everything_stored_once(store, _expected_ids(workers, each, shared))
        finally:
            store.close()


_KEYS = [ConversationKey("alice", "c"), ConversationKey("bob", "c"), ConversationKey("alice", "d")]
_messages = st.builds(
    Message,
    role=st.sampled_from(["user", "assistant"]),
    content=st.sampled_from(["hi", " hi", "hello", "h", ""]),
    message_id=st.sampled_from([None, None, "m1", "m2", "m3"]),
    partial=st.booleans(),
)
_record = st.tuples(
    st.just("record"),
    st.sampled_from(_KEYS),
    st.lists(_messages, max_size=4),
    st.none() | st.integers(min_value=0, max_value=6),
)
_delete = st.tuples(st.just("delete"), st.sampled_from(_KEYS), st.just([]), st.none())


class TestAgreementWithTheMemoryStore:
    @settings(max_examples=200, deadline=None)
    @given(operations=st.lists(st.one_of(_record, _record, _record, _delete), max_size=12))
    def test_any_sequence_of_calls_gives_the_same_results_and_contents(
        self, operations: list[tuple[str, ConversationKey, list[Message], int | None]]
    ) -> None:
        reference = MemoryStore()
        with tempfile.TemporaryDirectory() as folder:
            store = SQLiteStore(Path(folder) / "sessions.db")
            try:
                for operation, key, messages, after in operations:
                    if operation == "record":
                        assert store.record(key, messages, after=after) == reference.record(
                            key, messages, after=after
                        )
                    else:
                        assert store.delete(key) == reference.delete(key)
                for key in _KEYS:
                    assert [rows(b) for b in store.branches(key)] == [
                        rows(b) for b in reference.branches(key)
                    ]
                    assert rows(store.load(key)) == rows(reference.load(key))
                for user in ("alice", "bob"):
                    assert _counts(store, user) == _counts(reference, user)
                assert store.users() == reference.users()
                everything = datetime.now(timezone.utc) + timedelta(seconds=1)
                assert store.purge(everything) == reference.purge(everything)
            finally:
                store.close()


def _counts(store: SessionStore, user: str) -> list[tuple[str, int, int]]:
    return sorted(
        (c.conversation_id, c.message_count, c.branch_count) for c in store.conversations(user)
    )
