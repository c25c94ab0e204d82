"""Schema migrations of the PostgreSQL store: named functions, applied once each, in order.

As for SQLite (:mod:`helix_pipeline.stores.migrations`): a migration is a function
``mNNN_what_it_does(conn)`` appended to :data:`MIGRATIONS`, recorded in
``helix_schema_migrations`` in the transaction that applies it. Never edit a shipped migration:
add a new one.

Schema (version ``m002``):

- ``helix_conversations``: one row per (user id, conversation id), found by ``key_hash`` (SHA-256
  of both, unique), listed by ``user_hash``; it carries the active branch, that branch's message
  count and the last activity (Unix seconds), so listing and purging never read messages.
- ``helix_messages``: one row per message of a branch, keyed ``(conversation, branch, position)``
  and deleted with its conversation. Ids, texts and message ids are UTF-8 ``bytea``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MIGRATIONS", "Migration", "applied_migrations", "migrate"]

_MIGRATION_LOCK = 0x48454C4958  # pg_advisory_xact_lock key: "HELIX"

Migration = Callable[[Any], None]
"""A schema change: a function ``mNNN_what_it_does(conn)`` run inside the migration transaction."""


def m001_create_conversations(conn: Any) -> None:
    conn.execute(
        """
        CREATE TABLE helix_conversations (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            key_hash bytea NOT NULL,
            user_hash bytea NOT NULL,
            user_id bytea NOT NULL,
            conversation_id bytea NOT NULL,
            active_branch integer NOT NULL,
            message_count integer NOT NULL,
            last_activity double precision NOT NULL
        )
        """
    )
    conn.execute("CREATE UNIQUE INDEX helix_conversations_by_key ON helix_conversations (key_hash)")
    conn.execute(
        "CREATE INDEX helix_conversations_by_user ON helix_conversations (user_hash, last_activity)"
    )
    conn.execute(
        "CREATE INDEX helix_conversations_by_activity ON helix_conversations (last_activity)"
    )


def m002_create_messages(conn: Any) -> None:
    conn.execute(
        """
        CREATE TABLE helix_messages (
            conversation bigint NOT NULL
                REFERENCES helix_conversations (id) ON DELETE CASCADE,
            branch integer NOT NULL,
            position integer NOT NULL,
            role text NOT NULL,
            content bytea NOT NULL,
            message_id bytea,
            partial boolean NOT NULL,
            created_at double precision,
            PRIMARY KEY (conversation, branch, position)
        )
        """
    )


MIGRATIONS: tuple[Migration, ...] = (m001_create_conversations, m002_create_messages)


def applied_migrations(conn: Any) -> set[str]:
    """The migration names recorded in ``helix_schema_migrations`` (empty for a new database)."""
    exists = conn.execute("SELECT to_regclass('helix_schema_migrations')").fetchone()[0]
    if exists is None:
        return set()
    return {name for (name,) in conn.execute("SELECT name FROM helix_schema_migrations")}


def migrate(conn: Any, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded, in one transaction; the names applied now.

    An advisory lock makes processes that open the same database at once apply each migration
    exactly once. ``conn`` must be in autocommit mode.
    """
    wanted = {migration.__name__ for migration in migrations}
    if wanted <= applied_migrations(conn):
        return []
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS helix_schema_migrations ("
            "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = applied_migrations(conn)
        for migration in migrations:
            if migration.__name__ in done:
                continue
            migration(conn)
            conn.execute(
                "INSERT INTO helix_schema_migrations (name) VALUES (%s)", (migration.__name__,)
            )
            applied.append(migration.__name__)
    return applied
