"""What only the Redis store does: key layout, expiry, its index, and recovering from a restart.

The behaviour every engine shares is in ``test_store_contract.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import ConfigError, StoreError, StoreUnavailable
from helix_pipeline.messages import Message
from helix_pipeline.stores import open_store

from .store_checks import assert_two_stores_lose_nothing
from .store_servers import RedisServer, free_port, running_redis

redis = pytest.importorskip("redis", reason="pip install helix-pipeline[redis]")

from helix_pipeline.stores import redis as redis_store_module  # noqa: E402
from helix_pipeline.stores.redis import RedisStore  # noqa: E402

ALICE = ConversationKey("alice", "chat-1")
HOSTILE = ConversationKey("eve}{*?[x]", "{chat}/../../etc\x00")


def turn(number: int) -> list[Message]:
    return [
        Message("user", f"question {number}", f"u{number}"),
        Message("assistant", f"answer {number}", f"a{number}"),
    ]


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    redis_server.flush()
    return redis_server


@pytest.fixture
def client(server: RedisServer) -> Iterator[Any]:
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()


@pytest.fixture
def store(server: RedisServer) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(server.url)
    yield opened
    opened.close()


def forked_conversation(store: RedisStore, key: ConversationKey = ALICE) -> None:
    """A conversation with two branches, so every kind of key exists."""
    store.record(key, [*turn(1), *turn(2)])
    store.record(key, [Message("user", "edited")], after=2)


class TestOpening:
    def test_a_missing_redis_package_names_the_extra_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "redis", None)

        with pytest.raises(ConfigError, match=r"pip install helix-pipeline\[redis\]") as caught:
            RedisStore.from_url("redis://127.0.0.1:6379/0")

        # pip install is no advice inside a Pipelines server or Open WebUI: a bundle's is.
        assert "helix-pipeline bundle --with redis writes, whose requirements: line" in str(
            caught.value
        )

    def test_open_store_opens_redis_urls(self, server: RedisServer) -> None:
        opened = open_store(server.url)
        try:
            assert isinstance(opened, RedisStore)
        finally:
            opened.close()

    def test_ttl_and_prefix_come_from_the_url_query(self, server: RedisServer) -> None:
        opened = RedisStore.from_url(f"{server.url}?ttl_days=2&prefix=team-a")
        try:
            assert (opened.ttl_seconds, opened.prefix) == (2 * 86_400, "team-a")
            assert opened.url == f"{server.url}?ttl_days=2&prefix=team-a"
        finally:
            opened.close()

    def test_ttl_comes_from_session_ttl_days_unless_the_url_says_otherwise(
        self, server: RedisServer
    ) -> None:
        plain = open_store(server.url, ttl_days=7)
        overridden = open_store(f"{server.url}?ttl_days=2", ttl_days=7)
        default = open_store(server.url)
        try:
            assert isinstance(plain, RedisStore) and isinstance(overridden, RedisStore)
            assert isinstance(default, RedisStore)
            assert plain.ttl_seconds == 7 * 86_400
            assert overridden.ttl_seconds == 2 * 86_400
            assert default.ttl_seconds == 0, "SESSION_TTL_DAYS=0 keeps conversations forever"
        finally:
            for opened in (plain, overridden, default):
                opened.close()

    @pytest.mark.parametrize(
        "query",
        [
            pytest.param("ttl_days=abc", id="ttl-not-a-number"),
            pytest.param("ttl_days=-1", id="ttl-negative"),
            pytest.param("ttl_days=inf", id="ttl-infinite"),
            pytest.param("prefix=", id="prefix-empty"),
            pytest.param("prefix=a{b}", id="prefix-with-hash-tag"),
            pytest.param("cluster=maybe", id="cluster-not-a-boolean"),
            pytest.param("no_such_option=1", id="unknown-to-redis-py"),
        ],
    )
    def test_an_invalid_setting_is_a_config_error_naming_the_variable(self, query: str) -> None:
        with pytest.raises(ConfigError, match="SESSION_STORE_URL") as caught:
            RedisStore.from_url(f"redis://:s3cret@127.0.0.1:{free_port()}/0?{query}")

        assert "s3cret" not in str(caught.value)

    def test_a_server_that_is_down_fails_fast_without_the_password(self) -> None:
        url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
        started = time.monotonic()

        with pytest.raises(StoreUnavailable) as caught:
            RedisStore.from_url(url)

        assert time.monotonic() - started < 3
        message = str(caught.value)
        assert "s3cret" not in message
        assert "redis://:***@127.0.0.1" in message
        assert "check that Redis is running" in message
        assert caught.value.store is not None and "s3cret" not in caught.value.store


@pytest.fixture(scope="module")
def tls_server() -> Iterator[RedisServer]:
    with running_redis(tls=True) as own:
        yield own


class TestTLS:
    def test_a_rediss_url_records_and_loads_over_tls(self, tls_server: RedisServer) -> None:
        opened = RedisStore.from_url(f"{tls_server.url}&ttl_days=1")
        try:
            opened.record(ALICE, turn(1))

            assert [m.message_id for m in opened.load(ALICE)] == ["u1", "a1"]
            assert opened.ttl_seconds == 86_400
        finally:
            opened.close()

    def test_a_certificate_that_is_not_trusted_is_refused(self, tls_server: RedisServer) -> None:
        untrusted = tls_server.url.split("?", 1)[0]  # no ssl_ca_certs: the system CAs only

        with pytest.raises(StoreUnavailable, match=r"add \?ssl_ca_certs=/path/to/ca.pem"):
            RedisStore.from_url(untrusted)

    def test_plain_redis_to_a_tls_port_says_to_check_tls(self, tls_server: RedisServer) -> None:
        plain = tls_server.url.split("?", 1)[0].replace("rediss://", "redis://")
        started = time.monotonic()

        with pytest.raises(StoreUnavailable, match="rediss:// is used exactly when"):
            RedisStore(plain, connect_timeout=1, command_timeout=1)

        assert time.monotonic() - started < 5


class TestPasswords:
    @pytest.fixture
    def password_user(self, client: Any) -> Iterator[str]:
        client.execute_command("ACL", "SETUSER", "helix", "on", ">right-pass", "~*", "+@all")
        yield "helix"
        client.execute_command("ACL", "DELUSER", "helix")

    def test_the_url_attribute_never_holds_the_password(
        self, server: RedisServer, password_user: str
    ) -> None:
        url = server.url.replace("redis://", f"redis://{password_user}:right-pass@")
        opened = RedisStore.from_url(url)
        try:
            opened.record(ALICE, turn(1))
            assert "right-pass" not in opened.url
            assert "right-pass" not in repr(opened)
            assert opened.url.startswith(f"redis://{password_user}:***@")
        finally:
            opened.close()

    def test_a_wrong_password_says_to_check_it_without_showing_it(
        self, server: RedisServer, password_user: str
    ) -> None:
        url = server.url.replace("redis://", f"redis://{password_user}:wrong-pass@")

        with pytest.raises(StoreUnavailable, match="check the user name and password") as caught:
            RedisStore.from_url(url)

        assert "wrong-pass" not in str(caught.value)


class TestKeys:
    def test_every_key_of_a_conversation_shares_one_hash_tag(
        self, store: RedisStore, client: Any
    ) -> None:
        forked_conversation(store)
        forked_conversation(store, HOSTILE)

        tags: dict[str, set[bytes]] = {}
        for key in client.keys("*"):
            tag = key[key.index(b"{") + 1 : key.index(b"}")]
            tags.setdefault("index" if tag == b"idx" else "conversation", set()).add(tag)
        assert len(tags["conversation"]) == 2
        assert all(len(tag) == 32 for tag in tags["conversation"])
        assert tags["index"] == {b"idx"}

    def test_ids_never_appear_in_key_names(self, store: RedisStore, client: Any) -> None:
        forked_conversation(store, HOSTILE)

        names = client.keys("*")
        assert len(names) == 6  # meta, active, one older branch, three index keys
        for name in names:
            assert name.count(b"{") == 1 and name.count(b"}") == 1
            assert b"eve" not in name and b"chat" not in name and b"\x00" not in name

    def test_every_key_expires_after_the_ttl(self, server: RedisServer, client: Any) -> None:
        opened = RedisStore.from_url(f"{server.url}?ttl_days=1")
        try:
            forked_conversation(opened)
        finally:
            opened.close()

        ttls = [client.ttl(key) for key in client.keys("*")]
        assert len(ttls) == 6
        assert all(86_400 - 60 < ttl <= 86_400 for ttl in ttls)

    def test_a_later_turn_renews_the_ttl_of_older_branches(
        self, server: RedisServer, client: Any
    ) -> None:
        opened = RedisStore.from_url(f"{server.url}?ttl_days=1")
        try:
            forked_conversation(opened)
            for key in client.keys("*"):
                client.expire(key, 100)
            opened.record(ALICE, [Message("assistant", "reply")])
        finally:
            opened.close()

        assert all(client.ttl(key) > 86_000 for key in client.keys("*"))

    def test_ttl_days_zero_keeps_keys_forever(self, server: RedisServer, client: Any) -> None:
        opened = RedisStore.from_url(f"{server.url}?ttl_days=0")
        try:
            forked_conversation(opened)
        finally:
            opened.close()

        assert {client.ttl(key) for key in client.keys("*")} == {-1}

    def test_an_imported_conversation_expires_ttl_days_after_its_own_last_activity(
        self, server: RedisServer, client: Any
    ) -> None:
        half_a_day_ago = time.time() - 43_200
        opened = RedisStore.from_url(f"{server.url}?ttl_days=1")
        try:
            opened.record(ALICE, [Message("user", "q", "u1", created_at=half_a_day_ago)])
            gone = ConversationKey("alice", "two-days-old")
            opened.record(gone, [Message("user", "q", "u1", created_at=half_a_day_ago - 129_600)])

            assert opened.load(gone) == []
            assert [c.conversation_id for c in opened.conversations("alice")] == ["chat-1"]
        finally:
            opened.close()

        ttls = [client.ttl(key) for key in client.keys("*") if b"{idx}" not in key]
        assert len(ttls) == 2
        assert all(43_200 - 60 < ttl <= 43_200 for ttl in ttls)

    def test_two_prefixes_keep_two_stores_apart(self, server: RedisServer) -> None:
        first = RedisStore.from_url(f"{server.url}?prefix=one")
        second = RedisStore.from_url(f"{server.url}?prefix=two")
        try:
            first.record(ALICE, turn(1))

            assert second.load(ALICE) == []
            assert second.users() == []
            assert second.purge(datetime.now(timezone.utc) + timedelta(days=1)) == 0
            assert len(first.load(ALICE)) == 2
        finally:
            first.close()
            second.close()


class TestRoundTrips:
    def commands_processed(self, client: Any) -> int:
        return int(client.info("stats")["total_commands_processed"])

    def test_loading_the_active_branch_is_one_command(self, store: RedisStore, client: Any) -> None:
        forked_conversation(store)
        idle = -self.commands_processed(client) + self.commands_processed(client)

        before = self.commands_processed(client)
        loaded = store.load(ALICE)
        spent = self.commands_processed(client) - before - idle

        assert [m.content for m in loaded] == ["question 1", "answer 1", "edited"]
        assert spent == 1

    def test_recording_a_turn_is_one_transaction_and_one_index_script(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        client.config_resetstat()

        store.record(ALICE, turn(2))

        stats = client.info("commandstats")
        assert stats["cmdstat_exec"]["calls"] == 1
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert stats["cmdstat_rpush"]["calls"] == 1


class TestIndex:
    def delete_conversation_keys(self, client: Any) -> None:
        """What expiry or an operator's DEL does: the conversation goes, its index stays."""
        for key in client.keys("*"):
            if b"{idx}" not in key:
                client.delete(key)

    def test_a_vanished_conversation_is_left_out_and_unindexed(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        self.delete_conversation_keys(client)

        assert store.conversations("alice") == []
        assert store.users() == []
        assert client.keys("*") == []

    def test_purging_a_vanished_conversation_counts_nothing_and_unindexes_it(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        self.delete_conversation_keys(client)

        assert store.purge(datetime.now(timezone.utc) + timedelta(days=1)) == 0
        assert client.keys("*") == []

    def test_purging_drops_a_candidate_that_nothing_else_knows(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        self.delete_conversation_keys(client)
        client.hdel(store.keys.user_index("alice"), "chat-1")

        assert store.purge(datetime.now(timezone.utc) + timedelta(days=1)) == 0
        assert client.keys("*") == []

    def test_a_user_whose_index_expired_is_not_listed(self, store: RedisStore, client: Any) -> None:
        store.record(ALICE, turn(1))
        store.record(ConversationKey("bob", "x"), turn(1))
        client.delete(store.keys.user_index("bob"))

        assert store.users() == ["alice"]

    def test_users_idle_longer_than_the_ttl_leave_the_user_list(
        self, server: RedisServer, client: Any
    ) -> None:
        opened = RedisStore.from_url(f"{server.url}?ttl_days=1")
        try:
            opened.record(ALICE, turn(1))
            users_key = opened.keys.index("users")
            client.zadd(users_key, {"alice": time.time() - 2 * 86_400})

            assert opened.users() == []
            assert client.zcard(users_key) == 0
        finally:
            opened.close()

    def test_purge_keeps_a_conversation_touched_since_it_was_indexed(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        cutoff = datetime.now(timezone.utc) + timedelta(days=1)
        # The index says "old", the conversation itself says "just now": the conversation wins.
        client.zadd(store.keys.index("convs"), {b'["alice","chat-1"]': 0.0})
        client.hset(store.keys.meta(ALICE), "touched", repr(cutoff.timestamp() + 60))

        assert store.purge(cutoff) == 0
        assert len(store.load(ALICE)) == 2


def commands(client: Any, name: str) -> int:
    """How many ``name`` commands the server has run (its own counters)."""
    return int(client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))


class TestRecordingOnTheBranchRead:
    def test_a_record_given_the_current_branch_does_not_read_the_list_again(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        base = store.read(ALICE)
        before = commands(client, "lrange")

        store.record(ALICE, [*base.messages, *turn(2)], after=0, base=base)

        assert commands(client, "lrange") == before
        assert [m.message_id for m in store.load(ALICE)] == ["u1", "a1", "u2", "a2"]

    def test_a_record_given_a_stale_branch_reads_the_list(
        self, store: RedisStore, client: Any
    ) -> None:
        store.record(ALICE, turn(1))
        stale = store.read(ALICE)
        store.record(ALICE, turn(2))
        before = commands(client, "lrange")

        store.record(ALICE, [*stale.messages, *turn(2)], after=0, base=stale)

        assert commands(client, "lrange") == before + 1
        assert [m.message_id for m in store.load(ALICE)] == ["u1", "a1", "u2", "a2"]


class TestConsistentReads:
    def test_branches_read_again_when_a_fork_lands_between_two_reads(
        self, store: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        forked_conversation(store)
        stale = iter([b"1"])
        hget = store._client.hget
        monkeypatch.setattr(store._client, "hget", lambda *args: next(stale, None) or hget(*args))

        old, new = store.branches(ALICE)

        assert len(old) == 4
        assert [m.content for m in new] == ["question 1", "answer 1", "edited"]


class TestConcurrency:
    def test_two_stores_recording_one_conversation_lose_nothing(self, server: RedisServer) -> None:
        assert_two_stores_lose_nothing(
            lambda: RedisStore.from_url(server.url), ALICE, per_worker=15
        )

    def test_a_conversation_that_never_settles_is_a_store_error(
        self, store: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.record(ALICE, turn(1))
        monkeypatch.setattr(redis_store_module, "back_off", lambda attempt: None)
        conflict = redis.exceptions.WatchError("changed")
        monkeypatch.setattr(redis.client.Pipeline, "execute", lambda self, **kw: _raise(conflict))

        with pytest.raises(StoreError, match="retry") as caught:
            store.record(ALICE, turn(2))

        assert caught.value.conversation_id == "chat-1"


def _raise(error: Exception) -> Any:
    raise error


class TestRecovery:
    @pytest.fixture
    def private_server(self) -> Iterator[RedisServer]:
        with running_redis() as own:
            if not own.restartable:
                pytest.skip("needs a redis-server of our own to stop and start")
            yield own

    def test_a_stopped_server_is_unavailable_then_used_again_once_back(
        self, private_server: RedisServer
    ) -> None:
        opened = RedisStore.from_url(private_server.url)
        try:
            opened.record(ALICE, turn(1))
            private_server.stop()
            started = time.monotonic()

            with pytest.raises(StoreUnavailable, match="check that Redis is running"):
                opened.load(ALICE)

            assert time.monotonic() - started < 3
            private_server.start()
            opened.record(ALICE, turn(2))
            assert [m.message_id for m in opened.load(ALICE)] == ["u2", "a2"]
        finally:
            opened.close()

    def test_a_restart_between_two_turns_goes_unnoticed(self, private_server: RedisServer) -> None:
        opened = RedisStore.from_url(private_server.url)
        try:
            opened.record(ALICE, turn(1))
            private_server.stop()
            private_server.start()

            assert opened.load(ALICE) == []  # nothing is saved across restarts of this server
            opened.record(ALICE, turn(2))
            assert len(opened.load(ALICE)) == 2
        finally:
            opened.close()
