"""Schema migrations of the SQLite store: named functions, each applied once, in order, on open.

A migration is a function ``mNNN_what_it_does(db)`` appended to :data:`MIGRATIONS`; its name is
recorded in the ``schema_migrations`` table in the same transaction that applies it, so a migration
is either fully applied and recorded or not at all. Never edit a migration that has shipped: add a
new one.

Schema (version ``m002``):

- ``conversations``: one row per (user id, conversation id) with the active branch number, the
  message count of that branch and the last activity (Unix seconds), so listing and purging never
  touch the messages.
- ``messages``: one row per message of a branch; ``(conversation, branch, position)`` is unique
  and indexed, so loading the active branch is one index range read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

__all__ = ["MIGRATIONS", "Migration", "applied_migrations", "migrate"]

Migration = Callable[[sqlite3.Connection], None]


def m001_create_conversations(db: sqlite3.Connection) -> None:
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


def m002_create_messages(db: sqlite3.Connection) -> None:
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


MIGRATIONS: tuple[Migration, ...] = (m001_create_conversations, m002_create_messages)


def applied_migrations(db: sqlite3.Connection) -> set[str]:
    """The names recorded in ``schema_migrations`` (empty for a new database)."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return set()
    return {name for (name,) in db.execute("SELECT name FROM schema_migrations")}


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded; the names applied now (``[]`` when up to date).

    ``db`` must be in autocommit mode (``isolation_level=None``). The check and the changes run in
    one ``BEGIN IMMEDIATE`` transaction, so processes opening the same file at once apply each
    migration exactly once.
    """
    wanted = [migration.__name__ for migration in migrations]
    if set(wanted) <= applied_migrations(db):
        return []
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = applied_migrations(db)
        applied: list[str] = []
        for migration in migrations:
            if migration.__name__ in done:
                continue
            migration(db)
            db.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (migration.__name__, time.time()),
            )
            applied.append(migration.__name__)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return applied
