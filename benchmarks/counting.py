"""Store round trips per turn: the pipe's store calls through a counting proxy, and each engine's
own counters (SQLite's statement trace, Redis's ``INFO commandstats``, psycopg's cursors).

Works against any release of the package: the proxy counts whichever of ``load``, ``read`` and
``branches`` (reads) and ``record`` (writes) the service calls, and the engine counters see what
the store does inside those calls (a ``record`` that reads the whole branch again shows there).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from helix_pipeline import runtime
from helix_pipeline.stores.base import SessionStore

READS = frozenset({"load", "read", "branches"})
WRITES = frozenset({"record"})
BRANCH_READS = "branch reads"
ROW_READS = "row reads"
TRANSACTIONS = "write transactions"
COLUMNS = ("store reads", "store writes", BRANCH_READS, ROW_READS, TRANSACTIONS)


class CountingStore:
    """An engine whose reads and writes are counted in ``counts``; everything else passes."""

    def __init__(self, engine: SessionStore, counts: Counter[str]) -> None:
        self._engine = engine
        self._counts = counts
        self.url = engine.url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._engine, name)
        kind = "store reads" if name in READS else "store writes" if name in WRITES else None
        if kind is None:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts[kind] += 1
            return attribute(*args, **kwargs)

        return counted

    def close(self) -> None:
        """The benchmark closes the store it seeded, not the pipe."""


@contextmanager
def pipes_use(store: SessionStore, counts: Counter[str]) -> Iterator[None]:
    """Pipes and filters built meanwhile open ``store`` (counted) whatever their URL says."""
    with mock.patch.object(runtime, "open_store", lambda *_a, **_k: CountingStore(store, counts)):
        yield


@contextmanager
def engine_counters(engine: str, url: str, counts: Counter[str]) -> Iterator[None]:
    """Count what ``engine`` does (branch reads, row reads, write transactions) into ``counts``."""
    with ExitStack() as stack:
        if engine == "sqlite":
            stack.enter_context(_sqlite_trace(counts))
        elif engine == "postgres":
            stack.enter_context(_postgres_cursors(counts))
        elif engine == "redis":
            stack.enter_context(_redis_commandstats(url, counts))
        yield


def _classify(sql: str, counts: Counter[str]) -> None:
    statement = " ".join(sql.split()).lower()
    if statement.startswith("begin"):
        counts[TRANSACTIONS] += 1
    elif statement.startswith("select") and "messages" in statement:
        counts[BRANCH_READS] += 1
    elif statement.startswith("select") and "conversations" in statement:
        counts[ROW_READS] += 1


@contextmanager
def _sqlite_trace(counts: Counter[str]) -> Iterator[None]:
    """Trace the statements of connections opened meanwhile (the pipe opens its own)."""
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(lambda sql: _classify(sql, counts))
        return connection

    with mock.patch.object(sqlite3, "connect", traced):
        yield


@contextmanager
def _postgres_cursors(counts: Counter[str]) -> Iterator[None]:
    import psycopg

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            _classify(str(query), counts)
            return method(cursor, query, *args, **kwargs)

        return counted

    transaction = psycopg.Connection.transaction

    def counted_transaction(connection: Any, *args: Any, **kwargs: Any) -> Any:
        counts[TRANSACTIONS] += 1
        return transaction(connection, *args, **kwargs)

    with (
        mock.patch.object(psycopg.Cursor, "execute", wrap(psycopg.Cursor.execute)),
        mock.patch.object(psycopg.Cursor, "executemany", wrap(psycopg.Cursor.executemany)),
        mock.patch.object(psycopg.Connection, "transaction", counted_transaction),
    ):
        yield


@contextmanager
def _redis_commandstats(url: str, counts: Counter[str]) -> Iterator[None]:
    """The server's own command counters, before and after."""
    import redis

    client = redis.Redis.from_url(url)
    names = {"lrange": BRANCH_READS, "hgetall": ROW_READS, "hmget": ROW_READS, "exec": TRANSACTIONS}

    def calls() -> Counter[str]:
        stats = client.info("commandstats")
        found: Counter[str] = Counter()
        for command, kind in names.items():
            found[kind] += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        return found

    before = calls()
    try:
        yield
    finally:
        counts.update(calls() - before)
        client.close()


def per_turn(counts: Counter[str], turns: int) -> list[object]:
    """The counts of :data:`COLUMNS`, divided by ``turns``."""
    return [counts[column] / turns for column in COLUMNS]
