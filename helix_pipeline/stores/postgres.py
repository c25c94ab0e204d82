"""The PostgreSQL store (``postgresql://``; needs ``pip install helix-pipeline[postgres]``).

Connections come from a psycopg ``ConnectionPool`` (autocommit, 3 s connect timeout); a connection
whose socket shows the server went away is tested before use and replaced, so the store recovers
by itself when the server comes back. Every ``record`` is one transaction that locks the
conversation's row (``SELECT ... FOR UPDATE``), so concurrent writers of one conversation
serialise, even across processes and hosts (waiting at most ``lock_timeout``, 10 s, for each
other); loading the active branch is one indexed query.
Every psycopg error is translated into a :class:`~helix_pipeline.errors.StoreError` in
:meth:`PostgresStore._translated`, and nowhere else.

Ids, texts and message ids are stored as UTF-8 ``bytea`` (``surrogatepass``): PostgreSQL ``text``
cannot hold NUL characters, and ids may hold anything. Conversations are found by a SHA-256 digest
of (user id, conversation id), so ids of any length fit the unique index. The schema comes from
the named migrations of :mod:`~helix_pipeline.stores.postgres_migrations`, applied on open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from . import redact_url
from .base import ConversationSummary, RecordResult, plan_record
from .postgres_migrations import migrate

__all__ = ["LOAD_ACTIVE_BRANCH", "PostgresStore"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 3.0
LOCK_TIMEOUT_S = 10
_INSTALL = "pip install helix-pipeline[postgres]"
_MESSAGE_COLUMNS = "m.role, m.content, m.message_id, m.partial, m.created_at"
_KEY_MATCH = "c.key_hash = %s AND c.user_id = %s AND c.conversation_id = %s"

LOAD_ACTIVE_BRANCH = f"""
SELECT {_MESSAGE_COLUMNS}
FROM helix_conversations AS c
JOIN helix_messages AS m ON m.conversation = c.id AND m.branch = c.active_branch
WHERE {_KEY_MATCH}
ORDER BY m.position
"""
"""The one query :meth:`PostgresStore.load` runs: two unique-index lookups."""

_LOAD_ALL_BRANCHES = f"""
SELECT m.branch, {_MESSAGE_COLUMNS}
FROM helix_conversations AS c
JOIN helix_messages AS m ON m.conversation = c.id
WHERE {_KEY_MATCH}
ORDER BY m.branch, m.position
"""
_LOCK_CONVERSATION = (
    "SELECT c.id, c.active_branch, c.last_activity FROM helix_conversations AS c "
    f"WHERE {_KEY_MATCH} FOR UPDATE"
)
_INSERT_MESSAGE = (
    "INSERT INTO helix_messages (conversation, branch, position, role, content, message_id, "
    "partial, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_COPY_PREFIX = (
    "INSERT INTO helix_messages (conversation, branch, position, role, content, message_id, "
    "partial, created_at) SELECT conversation, %s, position, role, content, message_id, partial, "
    "created_at FROM helix_messages WHERE conversation = %s AND branch = %s AND position < %s"
)


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(
            f"The PostgreSQL session store needs psycopg and psycopg_pool: {_INSTALL}",
            setting="SESSION_STORE_URL",
        ) from exc
    return psycopg, psycopg_pool


class PostgresStore:
    """Conversations in PostgreSQL (``postgresql://user[:password]@host:5432/database``)."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 8,
        connect_timeout: int = CONNECT_TIMEOUT_S,
        pool_timeout: float = POOL_TIMEOUT_S,
        lock_timeout: float = LOCK_TIMEOUT_S,
    ) -> None:
        """Connect, apply pending migrations, and start the pool.

        Raises :class:`ConfigError` when psycopg is missing, :class:`StoreUnavailable` when the
        server cannot be reached or refuses the login.
        """
        if urlsplit(url).scheme.lower() not in ("postgresql", "postgres"):
            raise _url_error(url, "it must start with postgresql://")
        psycopg, pool_module = _import_driver()
        self.url = redact_url(url)
        self._password = urlsplit(url).password
        self._psycopg = psycopg
        self._pool_timeout_error = pool_module.PoolTimeout
        self._lock_timeout_ms = max(1, round(lock_timeout * 1000))
        connect_options: dict[str, Any] = {"autocommit": True}
        with self._translated("opening the database"):
            try:
                if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
                    connect_options["connect_timeout"] = connect_timeout
                first = psycopg.connect(url, **connect_options)
            except psycopg.ProgrammingError as exc:
                raise _url_error(url, "PostgreSQL cannot read it") from exc
            with first:
                applied = migrate(first)
            self._pool: Any = pool_module.ConnectionPool(
                url,
                kwargs=connect_options,
                min_size=1,
                max_size=max_connections,
                timeout=pool_timeout,
                reconnect_timeout=pool_timeout,
                check=_check_if_readable,
                configure=self._configure,
                name="helix-session-store",
                open=False,
            )
            self._pool.open(wait=False)
        if applied:
            logger.info("Session store %s: applied migrations %s", self.url, ", ".join(applied))

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Open ``postgresql://...``; libpq reads the URL, its query parameters included.

        ``connect_timeout`` defaults to 3 s unless the URL sets it.
        """
        return cls(url)

    def load(self, key: ConversationKey) -> list[Message]:
        with self._translated("loading a conversation", key), self._pool.connection() as conn:
            rows = conn.execute(LOAD_ACTIVE_BRANCH, _key_params(key)).fetchall()
        return [_message(row) for row in rows]

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        with (
            self._translated("recording a turn", key),
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            found = self._lock_or_create(conn, key, messages, after)
            if found is None:
                return RecordResult(branch=0, appended=0, ids_attached=0, forked=False)
            conversation, branch, previous = found
            active = [] if previous is None else _read_branch(conn, conversation, branch)
            plan = plan_record(active, messages, after)
            if not plan.changes_anything:
                return RecordResult(branch=branch, appended=0, ids_attached=0, forked=False)
            now = time.time()
            activity = plan.last_activity(now, previous)
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE helix_messages SET message_id = %s "
                    "WHERE conversation = %s AND branch = %s AND position = %s",
                    [(_bytes(mid), conversation, branch, pos) for pos, mid in plan.attach],
                )
                start = len(active)
                if plan.fork_at is not None:
                    cursor.execute(_COPY_PREFIX, (branch + 1, conversation, branch, plan.fork_at))
                    branch, start = branch + 1, plan.fork_at
                cursor.executemany(
                    _INSERT_MESSAGE,
                    [
                        (
                            conversation,
                            branch,
                            position,
                            message.role,
                            _bytes(message.content),
                            _optional_bytes(message.message_id),
                            message.partial,
                            message.created_at,
                        )
                        for position, message in enumerate(plan.stamped(now), start)
                    ],
                )
                cursor.execute(
                    "UPDATE helix_conversations SET active_branch = %s, message_count = %s, "
                    "last_activity = %s WHERE id = %s",
                    (branch, start + len(plan.new), activity, conversation),
                )
        return RecordResult(
            branch=branch,
            appended=len(plan.new),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
        )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with (
            self._translated("loading the branches of a conversation", key),
            self._pool.connection() as conn,
        ):
            rows = conn.execute(_LOAD_ALL_BRANCHES, _key_params(key)).fetchall()
        branches: list[list[Message]] = []
        for branch, *columns in rows:
            while len(branches) <= branch:
                branches.append([])
            branches[branch].append(_message(columns))
        return branches

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._translated("listing conversations"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT conversation_id, message_count, active_branch + 1, last_activity "
                "FROM helix_conversations WHERE user_hash = %s AND user_id = %s "
                "ORDER BY last_activity DESC, id",
                (_digest(_bytes(user_id)), _bytes(user_id)),
            ).fetchall()
        return [
            ConversationSummary(
                conversation_id=_text(conversation_id),
                message_count=message_count,
                branch_count=branch_count,
                last_activity=datetime.fromtimestamp(last_activity, timezone.utc),
            )
            for conversation_id, message_count, branch_count, last_activity in rows
        ]

    def users(self) -> list[str]:
        with self._translated("listing users"), self._pool.connection() as conn:
            rows = conn.execute("SELECT DISTINCT user_id FROM helix_conversations").fetchall()
        return sorted(_text(user_id) for (user_id,) in rows)

    def delete(self, key: ConversationKey) -> bool:
        with self._translated("deleting a conversation", key), self._pool.connection() as conn:
            cursor = conn.execute(
                f"DELETE FROM helix_conversations AS c WHERE {_KEY_MATCH}", _key_params(key)
            )
            return bool(cursor.rowcount)

    def purge(self, before: datetime) -> int:
        with self._translated("purging old conversations"), self._pool.connection() as conn:
            cursor = conn.execute(
                "DELETE FROM helix_conversations WHERE last_activity < %s", (before.timestamp(),)
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def _lock_or_create(
        self,
        conn: Any,
        key: ConversationKey,
        messages: Sequence[Message],
        after: int | None,
    ) -> tuple[int, int, float | None] | None:
        """Lock the conversation's row, creating it if this call records something.

        Returns ``(row id, active branch, last activity)``, the last activity ``None`` for a row
        created now, or ``None`` when the conversation does not exist and recording ``messages``
        would change nothing.
        """
        params = _key_params(key)
        for _attempt in range(3):
            found = conn.execute(_LOCK_CONVERSATION, params).fetchone()
            if found is not None:
                return int(found[0]), int(found[1]), float(found[2])
            if not plan_record([], messages, after).changes_anything:
                return None
            created = conn.execute(
                "INSERT INTO helix_conversations (key_hash, user_hash, user_id, conversation_id, "
                "active_branch, message_count, last_activity) VALUES (%s, %s, %s, %s, 0, 0, %s) "
                "ON CONFLICT (key_hash) DO NOTHING RETURNING id",
                (params[0], _digest(params[1]), params[1], params[2], time.time()),
            ).fetchone()
            if created is not None:
                return int(created[0]), 0, None
            # Another writer created it since our look-up: lock its row instead.
        raise StoreError(
            f"The PostgreSQL session store {self.url} could not create a conversation row; "
            "retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _configure(self, conn: Any) -> None:
        """Settings of every pooled connection: a writer waits at most ``lock_timeout`` for
        another's lock on a conversation, so a stuck transaction cannot hang chat turns forever.
        """
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")

    @contextmanager
    def _translated(self, doing: str, key: ConversationKey | None = None) -> Iterator[None]:
        """The one place that turns psycopg and pool errors into :class:`StoreError`."""
        try:
            yield
        except self._psycopg.Error as exc:
            detail = " ".join(str(exc).split())
            if self._password:
                detail = detail.replace(self._password, "***")
            # A failed login has no SQLSTATE in psycopg: libpq's message tells the cause.
            sqlstate = getattr(exc, "sqlstate", None) or ""
            conversation_id = key.conversation_id if key is not None else None
            where = f"The PostgreSQL session store {self.url} failed while {doing} ({detail})"
            if isinstance(exc, self._pool_timeout_error):
                hint = (
                    "no connection could be opened or freed in time; check that PostgreSQL is "
                    "running and reachable at the host and port of SESSION_STORE_URL (or, under "
                    "heavy load, that it accepts enough connections)"
                )
            elif sqlstate.startswith("28") or any(
                words in detail for words in ("authentication failed", "no password supplied")
            ):
                hint = "check the user name and password in SESSION_STORE_URL"
            elif sqlstate == "3D000" or ("database" in detail and "does not exist" in detail):
                hint = "create the database, or name an existing one in SESSION_STORE_URL"
            elif sqlstate == "55P03":
                raise StoreError(
                    f"{where}: another writer held this conversation for over "
                    f"{self._lock_timeout_ms / 1000:g} s; retry, and look for a stuck transaction "
                    "in pg_stat_activity",
                    store=self.url,
                    conversation_id=conversation_id,
                ) from exc
            elif isinstance(exc, self._psycopg.OperationalError) and (
                not sqlstate or sqlstate.startswith(("08", "57P"))
            ):
                hint = (
                    "check that PostgreSQL is running and reachable at the host and port of "
                    "SESSION_STORE_URL"
                )
            else:
                raise StoreError(where, store=self.url, conversation_id=conversation_id) from exc
            raise StoreUnavailable(
                f"{where}: {hint}", store=self.url, conversation_id=conversation_id
            ) from exc


def _check_if_readable(conn: Any) -> None:
    """Ping a pooled connection before use only if its socket has something to read.

    An idle connection has nothing to read unless the server closed it (a restart sends a
    termination notice): then the ping fails and the pool replaces the connection.
    """
    try:
        readable = bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        readable = True
    if readable:
        conn.execute("")


def _read_branch(conn: Any, conversation: int, branch: int) -> list[Message]:
    rows = conn.execute(
        "SELECT role, content, message_id, partial, created_at FROM helix_messages "
        "WHERE conversation = %s AND branch = %s ORDER BY position",
        (conversation, branch),
    ).fetchall()
    return [_message(row) for row in rows]


def _message(row: Sequence[Any]) -> Message:
    role, content, message_id, partial, created_at = row
    return Message(
        role=role,
        content=_text(content),
        message_id=None if message_id is None else _text(message_id),
        partial=partial,
        created_at=created_at,
    )


def _key_params(key: ConversationKey) -> tuple[bytes, bytes, bytes]:
    pair = json.dumps([key.user_id, key.conversation_id], ensure_ascii=False)
    return _digest(_bytes(pair)), _bytes(key.user_id), _bytes(key.conversation_id)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _optional_bytes(text: str | None) -> bytes | None:
    return None if text is None else _bytes(text)


def _text(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def _url_error(url: str, problem: str) -> ConfigError:
    return ConfigError(
        f"Invalid PostgreSQL session store URL {redact_url(url)!r}: {problem}. Set "
        "SESSION_STORE_URL to postgresql://user[:password]@host:5432/database",
        setting="SESSION_STORE_URL",
    )
