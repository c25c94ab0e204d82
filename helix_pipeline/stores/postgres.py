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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..urls import hide_secret, redact_url
from .engine_errors import missing_driver, url_error
from .migrations import migrate
from .postgres_migrations import POSTGRES
from .sql import Dialect, Queries, SQLStore

__all__ = ["LOAD_ACTIVE_BRANCH", "PostgresStore"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 3.0
LOCK_TIMEOUT_S = 10


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _key_params(key: ConversationKey) -> tuple[bytes, bytes, bytes]:
    pair = json.dumps([key.user_id, key.conversation_id], ensure_ascii=False)
    return _digest(_bytes(pair)), _bytes(key.user_id), _bytes(key.conversation_id)


DIALECT = Dialect(
    name="PostgreSQL",
    conversations="helix_conversations",
    messages="helix_messages",
    placeholder="%s",
    key_match="c.key_hash = ? AND c.user_id = ? AND c.conversation_id = ?",
    user_match="user_hash = ? AND user_id = ?",
    key_params=_key_params,
    user_params=lambda user_id: (_digest(_bytes(user_id)), _bytes(user_id)),
    text_param=_bytes,
    lock_row=" FOR UPDATE",
    cascades=True,
)
_QUERIES = Queries(DIALECT)

LOAD_ACTIVE_BRANCH = _QUERIES.load_active
"""The one query :meth:`PostgresStore.load` runs: two unique-index lookups."""


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise missing_driver("PostgreSQL", "psycopg and psycopg_pool", "postgres") from exc
    return psycopg, psycopg_pool


class PostgresStore(SQLStore):
    """Conversations in PostgreSQL (``postgresql://user[:password]@host:5432/database``)."""

    dialect = DIALECT
    queries = _QUERIES

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
                applied = migrate(first, POSTGRES)
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

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def _create(self, db: Any, key: ConversationKey, now: float, revision: int) -> int | None:
        key_hash, user_id, conversation_id = _key_params(key)
        created = db.execute(
            "INSERT INTO helix_conversations (key_hash, user_hash, user_id, conversation_id, "
            "active_branch, message_count, last_activity, revision) "
            "VALUES (%s, %s, %s, %s, 0, 0, %s, %s) ON CONFLICT (key_hash) DO NOTHING RETURNING id",
            (key_hash, _digest(user_id), user_id, conversation_id, now, revision),
        ).fetchone()
        return None if created is None else int(created[0])

    @contextmanager
    def _connection(self, doing: str, key: ConversationKey | None = None) -> Iterator[Any]:
        with self._translated(doing, key), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _transaction(self, doing: str, key: ConversationKey | None = None) -> Iterator[Any]:
        with self._translated(doing, key), self._pool.connection() as conn, conn.transaction():
            yield conn

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
            detail = hide_secret(" ".join(str(exc).split()), self._password)
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


def _url_error(url: str, problem: str) -> ConfigError:
    return url_error("PostgreSQL", url, problem, "postgresql://user[:password]@host:5432/database")
