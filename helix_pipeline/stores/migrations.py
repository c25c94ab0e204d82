"""Schema migrations of the SQL stores: named functions, each applied once, in order, on open.

A migration is a function ``mNNN_what_it_does(db)`` appended to its engine's list; its name is
recorded in the engine's migrations table in the same transaction that applies it, under a lock
that makes processes opening one database at once apply each migration exactly once. So a
migration is either fully applied and recorded or not at all. Never edit a migration that has
shipped: add a new one. One runner, :func:`migrate`, serves both engines: SQLite's migrations
are here (:data:`SQLITE`), PostgreSQL's in :mod:`~helix_pipeline.stores.postgres_migrations`.

Schema (version ``m003``), table names ``conversations``/``messages`` in SQLite and
``helix_conversations``/``helix_messages`` in PostgreSQL:

- conversations: one row per (user id, conversation id) with the active branch number, the
  message count of that branch, the last activity (Unix seconds) and a revision that every change
  moves on (``m003``): listing and purging never touch the messages, and a writer tells from the
  row alone whether the branch it read is still the active one. PostgreSQL finds a row by ``key_hash``
  (SHA-256 of both ids, unique) and lists by ``user_hash``; ids are UTF-8 ``bytea`` there.
- messages: one row per message of a branch; ``(conversation, branch, position)`` is unique and
  indexed, so loading the active branch is one index range read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["SQLITE", "Migration", "Schema", "migrate"]

Migration = Callable[[Any], None]
"""A schema change: ``mNNN_what_it_does(db)``, run inside the migration transaction."""


@dataclass(frozen=True)
class Schema:
    """One engine's migrations, and how it records and serialises them."""

    migrations: tuple[Migration, ...]
    table_exists: str
    create_table: str
    insert: str
    insert_params: Callable[[str], tuple[Any, ...]]
    exclusive: Callable[[Any], AbstractContextManager[None]]
    table: str

    def applied(self, db: Any) -> set[str]:
        """The names recorded in the migrations table (empty for a new database)."""
        if db.execute(self.table_exists, (self.table,)).fetchone()[0] is None:
            return set()
        return {name for (name,) in db.execute(f"SELECT name FROM {self.table}")}


def migrate(db: Any, schema: Schema, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded; the names applied now (``[]`` when up to date).

    ``db`` must be in autocommit mode. ``migrations`` defaults to the engine's own list.
    """
    wanted = schema.migrations if migrations is None else tuple(migrations)
    if {migration.__name__ for migration in wanted} <= schema.applied(db):
        return []
    applied: list[str] = []
    with schema.exclusive(db):
        db.execute(schema.create_table)
        done = schema.applied(db)
        for migration in wanted:
            if migration.__name__ in done:
                continue
            migration(db)
            db.execute(schema.insert, schema.insert_params(migration.__name__))
            applied.append(migration.__name__)
    return applied


# -- SQLite ----------------------------------------------------------------------------------


def m001_create_conversations(db: Any) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            active_branch INTEGER NOT NULL,
            message_count INTEGER NOT NULL,
            last_activity REAL NOT NULL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX conversations_by_key ON conversations (user_id, conversation_id)"
    )
    db.execute("CREATE INDEX conversations_by_activity ON conversations (last_activity)")


def m002_create_messages(db: Any) -> None:
    db.execute(
        """
        CREATE TABLE messages (
            conversation INTEGER NOT NULL REFERENCES conversations (id),
            branch INTEGER NOT NULL,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            message_id TEXT,
            partial INTEGER NOT NULL,
            created_at REAL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX messages_by_branch ON messages (conversation, branch, position)"
    )


def m003_add_revision(db: Any) -> None:
    db.execute("ALTER TABLE conversations ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")


@contextmanager
def _sqlite_exclusive(db: Any) -> Iterator[None]:
    """``BEGIN IMMEDIATE``: the file's write lock, held until the migrations are committed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


SQLITE = Schema(
    migrations=(m001_create_conversations, m002_create_messages, m003_add_revision),
    table="schema_migrations",
    table_exists="SELECT max(name) FROM sqlite_master WHERE type = 'table' AND name = ?",
    create_table=(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    ),
    insert="INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
    insert_params=lambda name: (name, time.time()),
    exclusive=_sqlite_exclusive,
)
