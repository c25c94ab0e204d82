"""Schema migrations of the PostgreSQL store, run by :func:`~helix_pipeline.stores.migrations.migrate`.

Named functions, applied once each, in order, recorded in ``helix_schema_migrations``; the schema
is described in :mod:`~helix_pipeline.stores.migrations`. Never edit a shipped migration: add a
new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .migrations import Schema

__all__ = ["POSTGRES"]

_MIGRATION_LOCK = 0x48454C4958  # pg_advisory_xact_lock key: "HELIX"


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


def m003_add_revision(conn: Any) -> None:
    conn.execute("ALTER TABLE helix_conversations ADD COLUMN revision bigint NOT NULL DEFAULT 0")


@contextmanager
def _postgres_exclusive(conn: Any) -> Iterator[None]:
    """A transaction holding an advisory lock, so concurrent openers migrate one at a time."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        yield


POSTGRES = Schema(
    migrations=(m001_create_conversations, m002_create_messages, m003_add_revision),
    table="helix_schema_migrations",
    table_exists="SELECT to_regclass(%s)",
    create_table=(
        "CREATE TABLE IF NOT EXISTS helix_schema_migrations ("
        "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ),
    insert="INSERT INTO helix_schema_migrations (name) VALUES (%s)",
    insert_params=lambda name: (name,),
    exclusive=_postgres_exclusive,
)
