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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qsl

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from .base import ConversationSummary, RecordResult, plan_record
from .migrations import migrate

__all__ = ["DEFAULT_BUSY_TIMEOUT", "LOAD_ACTIVE_BRANCH", "SQLiteStore"]

logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another connection's write transaction before giving up."""

_SCHEME = "sqlite://"
_MESSAGE_COLUMNS = "m.role, m.content, m.message_id, m.partial, m.created_at"

LOAD_ACTIVE_BRANCH = f"""
SELECT {_MESSAGE_COLUMNS}
FROM conversations AS c
JOIN messages AS m ON m.conversation = c.id AND m.branch = c.active_branch
WHERE c.user_id = ? AND c.conversation_id = ?
ORDER BY m.position
"""
"""The one query :meth:`SQLiteStore.load` runs: two index lookups, whatever the database size."""

_LOAD_ALL_BRANCHES = f"""
SELECT m.branch, {_MESSAGE_COLUMNS}
FROM conversations AS c
JOIN messages AS m ON m.conversation = c.id
WHERE c.user_id = ? AND c.conversation_id = ?
ORDER BY m.branch, m.position
"""
_FIND_CONVERSATION = (
    "SELECT id, active_branch, last_activity FROM conversations "
    "WHERE user_id = ? AND conversation_id = ?"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation, branch, position, role, content, message_id, partial, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_COPY_PREFIX = (
    "INSERT INTO messages (conversation, branch, position, role, content, message_id, partial, "
    "created_at) SELECT conversation, ?, position, role, content, message_id, partial, created_at "
    "FROM messages WHERE conversation = ? AND branch = ? AND position < ?"
)


class SQLiteStore:
    """Conversations in a SQLite file (``sqlite:///path/to/sessions.db``)."""

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
            applied = migrate(db)
        if applied:
            logger.info("Session store %s: applied migrations %s", self.url, ", ".join(applied))

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        The only query parameter is ``timeout`` (seconds, default 10), the busy timeout.
        """
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
        return cls(path, busy_timeout=busy_timeout, url=url)

    def load(self, key: ConversationKey) -> list[Message]:
        with self._connection("loading a conversation", key) as db:
            rows = db.execute(LOAD_ACTIVE_BRANCH, _key_params(key)).fetchall()
        return [_message(row) for row in rows]

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        now = time.time()
        with self._transaction("recording a turn", key) as db:
            found = db.execute(_FIND_CONVERSATION, _key_params(key)).fetchone()
            conversation, branch, previous = found if found is not None else (None, 0, None)
            active = [] if conversation is None else _read_branch(db, conversation, branch)
            plan = plan_record(active, messages, after)
            if not plan.changes_anything:
                return RecordResult(branch=branch, appended=0, ids_attached=0, forked=False)
            if conversation is None:
                conversation = db.execute(
                    "INSERT INTO conversations (user_id, conversation_id, active_branch, "
                    "message_count, last_activity) VALUES (?, ?, 0, 0, ?)",
                    (*_key_params(key), now),
                ).lastrowid
            db.executemany(
                "UPDATE messages SET message_id = ? "
                "WHERE conversation = ? AND branch = ? AND position = ?",
                [(_text_param(mid), conversation, branch, pos) for pos, mid in plan.attach],
            )
            start = len(active)
            if plan.fork_at is not None:
                db.execute(_COPY_PREFIX, (branch + 1, conversation, branch, plan.fork_at))
                branch, start = branch + 1, plan.fork_at
            db.executemany(
                _INSERT_MESSAGE,
                [
                    (
                        conversation,
                        branch,
                        position,
                        message.role,
                        _text_param(message.content),
                        _text_param(message.message_id),
                        int(message.partial),
                        message.created_at,
                    )
                    for position, message in enumerate(plan.stamped(now), start)
                ],
            )
            db.execute(
                "UPDATE conversations SET active_branch = ?, message_count = ?, last_activity = ? "
                "WHERE id = ?",
                (branch, start + len(plan.new), plan.last_activity(now, previous), conversation),
            )
        return RecordResult(
            branch=branch,
            appended=len(plan.new),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
        )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with self._connection("loading the branches of a conversation", key) as db:
            rows = db.execute(_LOAD_ALL_BRANCHES, _key_params(key)).fetchall()
        branches: list[list[Message]] = []
        for branch, *columns in rows:
            while len(branches) <= branch:
                branches.append([])
            branches[branch].append(_message(columns))
        return branches

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._connection("listing conversations") as db:
            rows = db.execute(
                "SELECT conversation_id, message_count, active_branch + 1, last_activity "
                "FROM conversations WHERE user_id = ? ORDER BY last_activity DESC, id",
                (_text_param(user_id),),
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
        with self._connection("listing users") as db:
            rows = db.execute("SELECT DISTINCT user_id FROM conversations").fetchall()
        return sorted(_text(user_id) for (user_id,) in rows)

    def delete(self, key: ConversationKey) -> bool:
        with self._transaction("deleting a conversation", key) as db:
            found = db.execute(_FIND_CONVERSATION, _key_params(key)).fetchone()
            if found is None:
                return False
            db.execute("DELETE FROM messages WHERE conversation = ?", (found[0],))
            db.execute("DELETE FROM conversations WHERE id = ?", (found[0],))
        return True

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        with self._transaction("purging old conversations") as db:
            db.execute(
                "DELETE FROM messages WHERE conversation IN "
                "(SELECT id FROM conversations WHERE last_activity < ?)",
                (cutoff,),
            )
            purged = db.execute(
                "DELETE FROM conversations WHERE last_activity < ?", (cutoff,)
            ).rowcount
        return purged

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


def _read_branch(db: sqlite3.Connection, conversation: int, branch: int) -> list[Message]:
    rows = db.execute(
        "SELECT role, content, message_id, partial, created_at FROM messages "
        "WHERE conversation = ? AND branch = ? ORDER BY position",
        (conversation, branch),
    ).fetchall()
    return [_message(row) for row in rows]


def _message(row: Sequence[Any]) -> Message:
    # Run for every message of every load: the common case (text, not bytes) is checked inline,
    # which takes a quarter off reading a 50-message branch.
    role, content, message_id, partial, created_at = row
    return Message(
        role,
        content if content.__class__ is str else _text(content),
        message_id if message_id is None or message_id.__class__ is str else _text(message_id),
        bool(partial),
        created_at,
    )


def _key_params(key: ConversationKey) -> tuple[str | bytes, str | bytes]:
    return _text_param(key.user_id), _text_param(key.conversation_id)


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


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_BUSY_NAMES) or any(word in str(exc) for word in _BUSY_WORDS)


def _url_error(url: str, problem: str) -> ConfigError:
    return ConfigError(
        f"Invalid SQLite session store URL {url!r}: {problem}. Set SESSION_STORE_URL to "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db",
        setting="SESSION_STORE_URL",
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
