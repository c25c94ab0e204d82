"""What only the PostgreSQL store does: migrations, queries, passwords, and recovering.

The behaviour every engine shares is in ``test_store_contract.py``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import ConfigError, StoreError, StoreUnavailable
from helix_pipeline.messages import Message
from helix_pipeline.stores import open_store

from .store_checks import assert_two_stores_lose_nothing
from .store_servers import POSTGRES_PASSWORD, PostgresServer, free_port, running_postgres

psycopg = pytest.importorskip("psycopg", reason="pip install helix-pipeline[postgres]")

from helix_pipeline.stores.migrations import migrate  # noqa: E402
from helix_pipeline.stores.postgres import LOAD_ACTIVE_BRANCH, PostgresStore  # noqa: E402
from helix_pipeline.stores.postgres_migrations import POSTGRES  # noqa: E402

ALICE = ConversationKey("alice", "chat-1")


def turn(number: int) -> list[Message]:
    return [
        Message("user", f"question {number}", f"u{number}"),
        Message("assistant", f"answer {number}", f"a{number}"),
    ]


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    """A new, empty schema."""
    return postgres_server.fresh_url()


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore.from_url(url)
    yield opened
    opened.close()


@pytest.fixture
def conn(url: str) -> Iterator[Any]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def recorded_migrations(conn: Any) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM helix_schema_migrations")]


class TestOpening:
    def test_a_missing_psycopg_names_the_extra_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "psycopg", None)

        with pytest.raises(ConfigError, match=r"pip install helix-pipeline\[postgres\]") as caught:
            PostgresStore.from_url("postgresql://u@127.0.0.1/db")

        # pip install is no advice inside a Pipelines server or Open WebUI: a bundle's is.
        assert "helix-pipeline bundle --with postgres writes, whose requirements: line" in str(
            caught.value
        )

    def test_a_missing_pool_names_the_extra_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "psycopg_pool", None)

        with pytest.raises(ConfigError, match=r"pip install helix-pipeline\[postgres\]"):
            PostgresStore.from_url("postgresql://u@127.0.0.1/db")

    @pytest.mark.parametrize(
        "scheme", [pytest.param("postgresql", id="postgresql"), pytest.param("postgres", id="pg")]
    )
    def test_open_store_opens_both_schemes(self, url: str, scheme: str) -> None:
        opened = open_store(url.replace("postgresql://", f"{scheme}://", 1))
        try:
            assert isinstance(opened, PostgresStore)
        finally:
            opened.close()

    def test_the_url_attribute_never_holds_the_password(
        self, url: str, store: PostgresStore
    ) -> None:
        password = urlsplit(url).password
        assert password
        assert password not in store.url
        assert password not in repr(store)
        assert store.url == url.replace(f":{password}@", ":***@", 1)

    def test_a_server_that_is_down_fails_fast_without_the_password(self) -> None:
        url = f"postgresql://helix:s3cret@127.0.0.1:{free_port()}/sessions"
        started = time.monotonic()

        with pytest.raises(StoreUnavailable) as caught:
            PostgresStore.from_url(url)

        assert time.monotonic() - started < 3
        message = str(caught.value)
        assert "s3cret" not in message
        assert "postgresql://helix:***@127.0.0.1" in message
        assert "check that PostgreSQL is running" in message

    def test_a_wrong_password_says_to_check_it_without_showing_it(self, url: str) -> None:
        with pytest.raises(StoreUnavailable, match="check the user name and password") as caught:
            PostgresStore.from_url(with_password(url, "wrong-pass"))

        assert "wrong-pass" not in str(caught.value)

    def test_a_one_letter_password_hides_only_itself(self, url: str) -> None:
        """Every "a" in libpq's message was once ``***``, and so was "authentication failed"."""
        with pytest.raises(StoreUnavailable, match="check the user name and password") as caught:
            PostgresStore.from_url(with_password(url, "a"))

        message = str(caught.value)
        assert "password authentication failed" in message
        assert ":***@" in message and ":a@" not in message

    def test_a_missing_database_says_to_create_it(self, postgres_server: PostgresServer) -> None:
        missing = postgres_server.url.rsplit("/", 1)[0] + "/no_such_database"

        with pytest.raises(StoreUnavailable, match="create the database") as caught:
            PostgresStore.from_url(missing)

        assert POSTGRES_PASSWORD not in str(caught.value)

    def test_an_unknown_url_parameter_is_a_config_error(self, url: str) -> None:
        with pytest.raises(ConfigError, match="SESSION_STORE_URL"):
            PostgresStore.from_url(f"{url}&no_such_option=1")


class TestMigrations:
    def test_opening_applies_every_migration_once_in_order(
        self, store: PostgresStore, conn: Any
    ) -> None:
        assert recorded_migrations(conn) == [m.__name__ for m in POSTGRES.migrations]

    def test_migrating_an_up_to_date_database_does_nothing(
        self, store: PostgresStore, conn: Any
    ) -> None:
        assert migrate(conn, POSTGRES) == []
        second = PostgresStore.from_url(store_url_of(conn))
        second.close()

        assert recorded_migrations(conn) == [m.__name__ for m in POSTGRES.migrations]

    def test_a_new_migration_is_applied_on_top_and_recorded(
        self, store: PostgresStore, conn: Any
    ) -> None:
        def m099_add_a_table(connection: Any) -> None:
            connection.execute("CREATE TABLE helix_extra (id integer)")

        assert migrate(conn, POSTGRES, [*POSTGRES.migrations, m099_add_a_table]) == [
            "m099_add_a_table"
        ]
        assert migrate(conn, POSTGRES, [*POSTGRES.migrations, m099_add_a_table]) == []
        assert recorded_migrations(conn)[-1] == "m099_add_a_table"

    def test_a_failing_migration_leaves_nothing_behind(self, conn: Any) -> None:
        def m001_half_done(connection: Any) -> None:
            connection.execute("CREATE TABLE helix_half (id integer)")
            connection.execute("SELECT no_such_column FROM helix_half")

        with pytest.raises(psycopg.Error):
            migrate(conn, POSTGRES, [m001_half_done])

        assert conn.execute("SELECT to_regclass('helix_half')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('helix_schema_migrations')").fetchone() == (None,)

    def test_processes_opening_a_new_database_at_once_migrate_it_once(
        self, url: str, conn: Any
    ) -> None:
        errors: list[Exception] = []

        def open_and_close() -> None:
            try:
                PostgresStore.from_url(url).close()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_close) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert recorded_migrations(conn) == [m.__name__ for m in POSTGRES.migrations]


def store_url_of(conn: Any) -> str:
    """The URL of the schema ``conn`` uses (its search_path), password included."""
    info = conn.info
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    return (
        f"postgresql://{info.user}:{POSTGRES_PASSWORD}@{info.host}:{info.port}/{info.dbname}"
        f"?options=-csearch_path%3D{schema}"
    )


class TestQueries:
    def test_loading_the_active_branch_can_use_indexes_only(
        self, store: PostgresStore, conn: Any
    ) -> None:
        store.record(ALICE, [*turn(1), *turn(2)])
        store.record(ALICE, [Message("user", "edited")], after=2)
        conn.execute("SET enable_seqscan = off")

        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN {LOAD_ACTIVE_BRANCH}", (b"k" * 32, b"alice", b"chat-1")
            ).fetchall()
        )

        assert "Seq Scan" not in plan
        assert "helix_conversations_by_key" in plan

    def test_loading_the_active_branch_runs_one_statement(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.record(ALICE, [*turn(1), *turn(2)])
        store.record(ALICE, [Message("user", "edited")], after=2)
        statements: list[str] = []
        execute = psycopg.Connection.execute

        def counting(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return execute(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", counting)

        assert [m.content for m in store.load(ALICE)] == ["question 1", "answer 1", "edited"]
        assert statements == [LOAD_ACTIVE_BRANCH]

    def test_ids_and_texts_are_stored_as_utf8_bytes(self, store: PostgresStore, conn: Any) -> None:
        store.record(ConversationKey("a\x00b", "ünï"), [Message("user", "x\x00y", "m\x00")])

        row = conn.execute("SELECT user_id, conversation_id FROM helix_conversations").fetchone()
        message = conn.execute("SELECT content, message_id FROM helix_messages").fetchone()
        assert row == (b"a\x00b", "ünï".encode())
        assert message == (b"x\x00y", b"m\x00")

    def test_deleting_a_conversation_deletes_its_messages(
        self, store: PostgresStore, conn: Any
    ) -> None:
        store.record(ALICE, turn(1))
        store.record(ALICE, [Message("user", "edited")], after=0)
        store.delete(ALICE)

        assert conn.execute("SELECT count(*) FROM helix_messages").fetchone() == (0,)

    def test_two_stores_recording_one_conversation_lose_nothing(self, url: str) -> None:
        assert_two_stores_lose_nothing(lambda: PostgresStore.from_url(url), ALICE, per_worker=10)

    def test_a_database_error_is_a_store_error_naming_the_conversation(
        self, store: PostgresStore, conn: Any
    ) -> None:
        conn.execute("DROP TABLE helix_messages")

        with pytest.raises(StoreError) as caught:
            store.load(ALICE)

        assert not isinstance(caught.value, StoreUnavailable)
        assert caught.value.conversation_id == "chat-1"
        assert "helix_messages" in str(caught.value)
        assert POSTGRES_PASSWORD not in str(caught.value)


@pytest.fixture(scope="module")
def private_server() -> Iterator[PostgresServer]:
    """A cluster of our own, to stop and start; each test leaves it running."""
    with running_postgres() as own:
        if own.port is None:
            pytest.skip("needs a PostgreSQL cluster of our own to stop and start")
        yield own


class TestLocking:
    def test_a_writer_kept_waiting_too_long_gets_a_store_error_saying_so(
        self, url: str, conn: Any
    ) -> None:
        opened = PostgresStore(url, lock_timeout=0.2)
        try:
            opened.record(ALICE, turn(1))
            with conn.transaction():
                conn.execute("SELECT * FROM helix_conversations FOR UPDATE")
                started = time.monotonic()

                with pytest.raises(StoreError, match="another writer held") as caught:
                    opened.record(ALICE, turn(2))

                assert time.monotonic() - started < 2
                assert not isinstance(caught.value, StoreUnavailable)
            opened.record(ALICE, turn(2))
            assert len(opened.load(ALICE)) == 4
        finally:
            opened.close()

    def test_a_writer_waits_for_another_to_finish(self, store: PostgresStore, conn: Any) -> None:
        store.record(ALICE, turn(1))
        with conn.transaction():
            conn.execute("SELECT * FROM helix_conversations FOR UPDATE")
            writer = threading.Thread(target=store.record, args=(ALICE, turn(2)))
            writer.start()
            time.sleep(0.2)
            assert writer.is_alive()
        writer.join(timeout=5)

        assert len(store.load(ALICE)) == 4


class TestRecovery:
    def test_a_stopped_server_is_unavailable_then_used_again_once_back(
        self, private_server: PostgresServer
    ) -> None:
        opened = PostgresStore.from_url(private_server.fresh_url())
        try:
            opened.record(ALICE, turn(1))
            private_server.stop()
            started = time.monotonic()

            with pytest.raises(StoreUnavailable, match="check that PostgreSQL is running") as e:
                opened.record(ALICE, turn(2))

            assert time.monotonic() - started < 5
            assert POSTGRES_PASSWORD not in str(e.value)
            private_server.start()
            opened.record(ALICE, turn(2))
            assert [m.message_id for m in opened.load(ALICE)] == ["u1", "a1", "u2", "a2"]
        finally:
            opened.close()

    def test_connections_cut_by_a_restart_are_replaced_unnoticed(
        self, private_server: PostgresServer
    ) -> None:
        opened = PostgresStore.from_url(private_server.fresh_url())
        try:
            opened.record(ALICE, turn(1))
            private_server.stop()
            private_server.start()

            assert len(opened.load(ALICE)) == 2
        finally:
            opened.close()
