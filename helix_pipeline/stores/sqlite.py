"""The SQLite store: conversations in one local file, safe for threads and for several processes.

The file runs in WAL mode (readers never wait for the writer), every ``record`` is one
``BEGIN IMMEDIATE`` transaction (concurrent writers queue for up to ``busy_timeout`` seconds), and
connections come from a small pool, one per concurrent caller, so the Pipelines server's thread pool
never shares a connection between threads. Every ``sqlite3`` and file-system error is translated
into a :class:`~helix_pipeline.errors.StoreError` in :func:`_translated_errors`, and nowhere else.

Ids and texts are only ever SQL parameters. Strings that are not valid Unicode (lone surrogates,
which JSON can carry) are stored as UTF-8 blobs with ``surrogatepass`` so that they round-trip too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import overload
from urllib.parse import parse_qsl

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from .engine_errors import url_error
from .migrations import SQLITE, migrate
from .sql import Dialect, Queries, SQLStore

__all__ = ["DEFAULT_BUSY_TIMEOUT", "LOAD_ACTIVE_BRANCH", "SQLiteStore", "sqlite_path"]

logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another connection's write transaction before giving up."""

_SCHEME = "sqlite://"


@overload
def _text_param(value: str) -> str | bytes: ...
@overload
def _text_param(value: None) -> None: ...
def _text_param(value: str | None) -> str | bytes | None:
    """``value`` as SQLite takes it: text, or UTF-8 bytes when it holds lone surrogates."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _key_params(key: ConversationKey) -> tuple[str | bytes, str | bytes]:
    return _text_param(key.user_id), _text_param(key.conversation_id)


DIALECT = Dialect(
    name="SQLite",
    conversations="conversations",
    messages="messages",
    placeholder="?",
    key_match="c.user_id = ? AND c.conversation_id = ?",
    user_match="user_id = ?",
    key_params=_key_params,
    user_params=lambda user_id: (_text_param(user_id),),
    text_param=_text_param,
    lock_row="",  # BEGIN IMMEDIATE holds the whole file
    cascades=False,
)
_QUERIES = Queries(DIALECT)

LOAD_ACTIVE_BRANCH = _QUERIES.load_active
"""The one query :meth:`SQLiteStore.load` runs: two index lookups, whatever the database size."""


def sqlite_path(url: str) -> tuple[Path, float]:
    """The file and the busy timeout an ``sqlite://`` URL names; :class:`ConfigError` if it is
    not one (``sqlite:///rel.db`` is relative to the working folder, ``sqlite:////abs.db`` not)."""
    if not url.lower().startswith(_SCHEME):
        raise _url_error(url, "it must start with sqlite:///")
    rest, _, query = url[len(_SCHEME) :].partition("?")
    if not rest.startswith("/"):
        raise _url_error(url, "it needs three slashes before a path (sqlite:///sessions.db)")
    path = rest[1:]
    if not path or path == ":memory:":
        raise _url_error(url, "it names no file (use memory:// for a store that is not kept)")
    busy_timeout = DEFAULT_BUSY_TIMEOUT
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "timeout":
            raise _url_error(url, f"unknown parameter {name!r} (only ?timeout=SECONDS)")
        try:
            busy_timeout = float(value)
        except ValueError:
            busy_timeout = -1.0
        if not 0 <= busy_timeout < float("inf"):
            raise _url_error(url, "timeout must be a number of seconds, 0 or more")
    return Path(path), busy_timeout


class SQLiteStore(SQLStore):
    """Conversations in a SQLite file (``sqlite:///path/to/sessions.db``)."""

    dialect = DIALECT
    queries = _QUERIES

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        url: str | None = None,
    ) -> None:
        """Open (creating the file and its folder if needed) and migrate the database at ``path``.

        Raises :class:`StoreUnavailable` when the file cannot be created, opened or written.
        """
        self.path = Path(path)
        self.url = url or f"{_SCHEME}/{self.path}"
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        """Queues this store's own writers fairly (SQLite's busy handler polls, and starves some)."""
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        with _translated_errors(self, "creating its folder"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection("opening the database") as db:
            self._use_wal(db)
            applied = migrate(db, SQLITE)
        if applied:
            logger.info("Session store %s: applied migrations %s", self.url, ", ".join(applied))

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        The only query parameter is ``timeout`` (seconds, default 10), the busy timeout.
        """
        path, busy_timeout = sqlite_path(url)
        return cls(path, busy_timeout=busy_timeout, url=url)

    def _create(
        self, db: sqlite3.Connection, key: ConversationKey, now: float, revision: int
    ) -> int:
        cursor = db.execute(
            "INSERT INTO conversations (user_id, conversation_id, active_branch, "
            "message_count, last_activity, revision) VALUES (?, ?, 0, 0, ?, ?)",
            (*_key_params(key), now, revision),
        )
        return int(cursor.lastrowid or 0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    @contextmanager
    def _connection(
        self, doing: str, key: ConversationKey | None = None
    ) -> Iterator[sqlite3.Connection]:
        """A pooled connection for one operation; dropped (rolling back) if anything fails."""
        with self._lock:
            if self._closed:
                raise StoreError(
                    f"The session store {self.url} is closed; open a new one to keep using it",
                    store=self.url,
                )
            db = self._idle.pop() if self._idle else None
        with _translated_errors(self, doing, key):
            if db is None:
                db = self._connect()
            try:
                yield db
            except BaseException:
                db.close()
                raise
        with self._lock:
            if self._closed:
                db.close()
            else:
                self._idle.append(db)

    @contextmanager
    def _transaction(
        self, doing: str, key: ConversationKey | None = None
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the write lock first, so writers serialise.

        Threads of this process queue on :attr:`_writer` first: with 16 concurrent writers,
        SQLite's own busy handler (sleep and retry) let some wait over a second (p99 1.1 s per
        record, against 0.12 s with the queue).
        """
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreError(
                f"The SQLite session store {self.path} failed while {doing}: other threads held "
                f"the write lock longer than the busy timeout of {self.busy_timeout:g} s; retry, "
                "or raise it with ?timeout=SECONDS in SESSION_STORE_URL",
                store=self.url,
                conversation_id=key.conversation_id if key is not None else None,
            )
        try:
            with self._connection(doing, key) as db:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
        finally:
            self._writer.release()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # the pool hands a connection to one thread at a time
        )
        try:
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (kept in the file), retrying while another opener is busy.

        SQLite answers "database is locked" at once, without waiting, when two connections switch
        a new file at the same moment; so wait here, as long as the busy timeout allows.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_BUSY_NAMES) or any(word in str(exc) for word in _BUSY_WORDS)


def _url_error(url: str, problem: str) -> ConfigError:
    return url_error(
        "SQLite", url, problem, "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


_BUSY_NAMES = ("SQLITE_BUSY", "SQLITE_LOCKED")
_BUSY_WORDS = ("locked", "busy")
_HINTS = (
    # (SQLite error names, words of the message on Python 3.10, unavailable?, what to do)
    (
        _BUSY_NAMES,
        _BUSY_WORDS,
        False,
        "another connection kept the database locked longer than the busy timeout of "
        "{timeout:g} s; retry, or raise it with ?timeout=SECONDS in SESSION_STORE_URL",
    ),
    (
        ("SQLITE_NOTADB", "SQLITE_CORRUPT"),
        ("not a database", "malformed"),
        True,
        "the file is not a SQLite database or is damaged; move it away or point "
        "SESSION_STORE_URL at another file",
    ),
    (
        ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"),
        ("readonly", "read-only", "permission"),
        True,
        "the file or its folder is read-only; make both writable by the Pipelines server's user "
        "or point SESSION_STORE_URL at a writable path",
    ),
    (
        ("SQLITE_CANTOPEN",),
        ("unable to open",),
        True,
        "check that its folder exists and is writable and that the path is not a folder, or "
        "point SESSION_STORE_URL at another file",
    ),
    (
        ("SQLITE_FULL",),
        ("disk is full",),
        True,
        "free some disk space or point SESSION_STORE_URL at another disk",
    ),
)


@contextmanager
def _translated_errors(
    store: SQLiteStore, doing: str, key: ConversationKey | None = None
) -> Iterator[None]:
    """The one place that turns ``sqlite3`` and file-system errors into :class:`StoreError`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        conversation_id = key.conversation_id if key is not None else None
        where = f"The SQLite session store {store.path} failed while {doing}"
        if isinstance(exc, OSError):
            raise StoreUnavailable(
                f"{where}: {exc.strerror or exc}; create the folder or point SESSION_STORE_URL "
                "at a writable path",
                store=store.url,
                conversation_id=conversation_id,
            ) from exc
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        for names, words, unavailable, hint in _HINTS:
            if name.startswith(names) or any(word in text for word in words):
                error = StoreUnavailable if unavailable else StoreError
                raise error(
                    f"{where} ({exc}): " + hint.format(timeout=store.busy_timeout),
                    store=store.url,
                    conversation_id=conversation_id,
                ) from exc
        raise StoreError(
            f"{where}: {exc}", store=store.url, conversation_id=conversation_id
        ) from exc
