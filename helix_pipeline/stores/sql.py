"""The SQL store: one implementation for SQLite and PostgreSQL, parameterised by a :class:`Dialect`.

The statements, the recording of a turn, the regrouping of branches and the conversion of rows live
here once. An engine module (:mod:`.sqlite`, :mod:`.postgres`) brings its dialect (table names,
placeholder, how a key is matched and its ids encoded, row locking), its connections and
transactions, the creation of a conversation row, and the translation of its driver's errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, NamedTuple

from ..conversation import ConversationKey
from ..errors import StoreError
from ..messages import Message
from .base import Branch, ConversationSummary, RecordPlan, RecordResult, applied, plan_record

__all__ = ["Dialect", "Queries", "SQLStore", "message_from_row", "new_revision", "text"]

_MESSAGE_COLUMNS = "m.role, m.content, m.message_id, m.partial, m.created_at"
_VERSION_COLUMNS = "c.id, c.active_branch, c.message_count, c.revision"
_CREATE_ATTEMPTS = 3


class _Row(NamedTuple):
    """A conversation's row as a writer locked it; ``last_activity`` is ``None`` if created now."""

    id: int
    branch: int
    length: int
    revision: int
    last_activity: float | None

    @property
    def version(self) -> tuple[int, int, int, int]:
        # The branch and count too, so that a writer that does not move the revision (an older
        # release sharing the database) still changes the version.
        return (self.id, self.branch, self.length, self.revision)


def new_revision() -> int:
    """Where a new conversation's revision starts: random, so that a conversation deleted and
    created again (SQLite may reuse its row id) never repeats a version."""
    return random.getrandbits(48)


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL engines, written with ``?`` placeholders."""

    name: str
    conversations: str
    messages: str
    placeholder: str
    key_match: str
    """Matches one conversation row ``c`` by its key (see ``key_params``)."""
    user_match: str
    """Matches the conversation rows of one user (see ``user_params``)."""
    key_params: Callable[[ConversationKey], tuple[Any, ...]]
    user_params: Callable[[str], tuple[Any, ...]]
    text_param: Callable[[str], Any]
    """A text (content, message id) as the engine stores it."""
    lock_row: str
    """What makes ``SELECT`` lock the row for the transaction (empty where the whole file is)."""
    cascades: bool
    """Whether deleting a conversation row deletes its messages."""


class Queries:
    """Every statement of the SQL store, in one dialect."""

    def __init__(self, d: Dialect) -> None:
        def sql(template: str) -> str:
            text = template.format(c=d.conversations, m=d.messages, key=d.key_match)
            return text.replace("?", d.placeholder)

        self.load_active = sql(
            f"SELECT {_MESSAGE_COLUMNS}, {_VERSION_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id AND m.branch = c.active_branch WHERE {key} ORDER BY m.position"
        )
        self.load_all = sql(
            f"SELECT m.branch, {_MESSAGE_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id WHERE {key} ORDER BY m.branch, m.position"
        )
        self.find = sql(
            f"SELECT {_VERSION_COLUMNS}, c.last_activity FROM {{c}} AS c WHERE {{key}}" + d.lock_row
        )
        self.read_branch = sql(
            "SELECT role, content, message_id, partial, created_at FROM {m} "
            "WHERE conversation = ? AND branch = ? ORDER BY position"
        )
        columns = "conversation, branch, position, role, content, message_id, partial, created_at"
        self.insert_message = sql(f"INSERT INTO {{m}} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self.copy_prefix = sql(
            f"INSERT INTO {{m}} ({columns}) SELECT conversation, ?, position, role, content, "
            "message_id, partial, created_at FROM {m} "
            "WHERE conversation = ? AND branch = ? AND position < ?"
        )
        self.attach_id = sql(
            "UPDATE {m} SET message_id = ? WHERE conversation = ? AND branch = ? AND position = ?"
        )
        self.update_conversation = sql(
            "UPDATE {c} SET active_branch = ?, message_count = ?, revision = ?, last_activity = ? "
            "WHERE id = ?"
        )
        self.list_conversations = sql(
            "SELECT conversation_id, message_count, active_branch + 1, last_activity FROM {c} "
            f"WHERE {d.user_match} ORDER BY last_activity DESC, id"
        )
        self.list_users = sql("SELECT DISTINCT user_id FROM {c}")
        self.delete_messages = sql("DELETE FROM {m} WHERE conversation = ?")
        self.delete_conversation = sql("DELETE FROM {c} WHERE id = ?")
        self.purge_messages = sql(
            "DELETE FROM {m} WHERE conversation IN (SELECT id FROM {c} WHERE last_activity < ?)"
        )
        self.purge_conversations = sql("DELETE FROM {c} WHERE last_activity < ?")


class SQLStore:
    """The session store on a SQL engine; subclasses bring connections and the dialect."""

    dialect: ClassVar[Dialect]
    queries: ClassVar[Queries]
    url: str

    # -- what an engine provides ---------------------------------------------------------------

    def _connection(
        self, doing: str, key: ConversationKey | None = None
    ) -> AbstractContextManager[Any]:
        """A connection for one read, its driver's errors translated."""
        raise NotImplementedError

    def _transaction(
        self, doing: str, key: ConversationKey | None = None
    ) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed on leaving, errors translated."""
        raise NotImplementedError

    def _create(self, db: Any, key: ConversationKey, now: float, revision: int) -> int | None:
        """Insert the conversation's row (branch 0, no messages, ``revision``); its id, or
        ``None`` if another writer just did."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------

    def load(self, key: ConversationKey) -> list[Message]:
        return list(self.read(key).messages)

    def read(self, key: ConversationKey) -> Branch:
        with self._connection("loading a conversation", key) as db:
            rows = db.execute(self.queries.load_active, self.dialect.key_params(key)).fetchall()
        if not rows:
            return Branch()
        return Branch(tuple(map(message_from_row, rows)), tuple(rows[0][5:]))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        with self._transaction("recording a turn", key) as db:
            row, active, plan = self._locked(db, key, messages, after, base)
            if row is None or not plan.changes_anything:
                version = None if row is None else row.version
                return RecordResult(
                    branch=0 if row is None else row.branch,
                    appended=0,
                    ids_attached=0,
                    forked=False,
                    active=Branch(tuple(active), version),
                )
            now = time.time()
            stamped = plan.stamped(now)
            written = self._apply(db, row, len(active), plan, stamped=stamped, now=now)
        return RecordResult(
            branch=written.branch,
            appended=len(stamped),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
            active=Branch(applied(active, plan, stamped), written.version),
        )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with self._connection("loading the branches of a conversation", key) as db:
            rows = db.execute(self.queries.load_all, self.dialect.key_params(key)).fetchall()
        branches: list[list[Message]] = []
        for branch, *columns in rows:
            while len(branches) <= branch:
                branches.append([])
            branches[branch].append(message_from_row(columns))
        return branches

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._connection("listing conversations") as db:
            rows = db.execute(
                self.queries.list_conversations, self.dialect.user_params(user_id)
            ).fetchall()
        return [
            ConversationSummary(
                conversation_id=text(conversation_id),
                message_count=message_count,
                branch_count=branch_count,
                last_activity=datetime.fromtimestamp(last_activity, timezone.utc),
            )
            for conversation_id, message_count, branch_count, last_activity in rows
        ]

    def users(self) -> list[str]:
        with self._connection("listing users") as db:
            rows = db.execute(self.queries.list_users).fetchall()
        return sorted(text(user_id) for (user_id,) in rows)

    def delete(self, key: ConversationKey) -> bool:
        with self._transaction("deleting a conversation", key) as db:
            found = db.execute(self.queries.find, self.dialect.key_params(key)).fetchone()
            if found is None:
                return False
            if not self.dialect.cascades:
                db.execute(self.queries.delete_messages, (found[0],))
            db.execute(self.queries.delete_conversation, (found[0],))
        return True

    def purge(self, before: datetime) -> int:
        cutoff = (before.timestamp(),)
        with self._transaction("purging old conversations") as db:
            if not self.dialect.cascades:
                db.execute(self.queries.purge_messages, cutoff)
            return int(db.execute(self.queries.purge_conversations, cutoff).rowcount)

    # -- recording -----------------------------------------------------------------------------

    def _locked(
        self,
        db: Any,
        key: ConversationKey,
        messages: Sequence[Message],
        after: int | None,
        base: Branch | None,
    ) -> tuple[_Row | None, Sequence[Message], RecordPlan]:
        """Lock the conversation's row (creating it if this call records something), take its
        active branch (``base`` while its version holds, else read), and plan the record.

        The row is ``None`` when the conversation does not exist and recording changes nothing.
        """
        params = self.dialect.key_params(key)
        for _attempt in range(_CREATE_ATTEMPTS):
            found = db.execute(self.queries.find, params).fetchone()
            if found is not None:
                row = _Row(
                    int(found[0]), int(found[1]), int(found[2]), int(found[3]), float(found[4])
                )
                if base is not None and base.version == row.version:
                    active: Sequence[Message] = base.messages
                else:
                    active = self._read_branch(db, row.id, row.branch)
                return row, active, plan_record(active, messages, after)
            plan = plan_record((), messages, after)
            if not plan.changes_anything:
                return None, (), plan
            revision = new_revision()
            created = self._create(db, key, time.time(), revision)
            if created is not None:
                return _Row(created, 0, 0, revision, None), (), plan
            # Another writer created it since our look-up: lock its row instead.
        raise StoreError(
            f"The {self.dialect.name} session store {self.url} could not create a conversation "
            "row; retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _apply(
        self,
        db: Any,
        row: _Row,
        length: int,
        plan: RecordPlan,
        *,
        stamped: Sequence[Message],
        now: float,
    ) -> _Row:
        """Write ``plan`` onto the locked row's active branch of ``length`` messages; the row as
        it now stands."""
        as_text = self.dialect.text_param
        conversation, branch, start = row.id, row.branch, length
        with closing(db.cursor()) as cursor:
            if plan.attach:
                cursor.executemany(
                    self.queries.attach_id,
                    [(as_text(mid), conversation, branch, pos) for pos, mid in plan.attach],
                )
            if plan.fork_at is not None:
                cursor.execute(
                    self.queries.copy_prefix, (branch + 1, conversation, branch, plan.fork_at)
                )
                branch, start = branch + 1, plan.fork_at
            cursor.executemany(
                self.queries.insert_message,
                [
                    (
                        conversation,
                        branch,
                        position,
                        message.role,
                        as_text(message.content),
                        None if message.message_id is None else as_text(message.message_id),
                        message.partial,
                        message.created_at,
                    )
                    for position, message in enumerate(stamped, start)
                ],
            )
            written = _Row(
                conversation,
                branch,
                start + len(stamped),
                row.revision + 1,
                plan.last_activity(now, row.last_activity),
            )
            cursor.execute(self.queries.update_conversation, (*written[1:], conversation))
        return written

    def _read_branch(self, db: Any, conversation: int, branch: int) -> list[Message]:
        rows = db.execute(self.queries.read_branch, (conversation, branch)).fetchall()
        return [message_from_row(row) for row in rows]


def message_from_row(row: Sequence[Any]) -> Message:
    """A message from its first columns ``role, content, message_id, partial, created_at``."""
    # Run for every message of every load: the common case (text, not bytes) is checked inline,
    # which takes a quarter off reading a 50-message branch.
    role, content, message_id, partial, created_at = row[:5]
    return Message(
        role,
        content if content.__class__ is str else text(content),
        message_id if message_id is None or message_id.__class__ is str else text(message_id),
        bool(partial),
        created_at,
    )


def text(value: str | bytes | memoryview) -> str:
    """A stored text: as it is, or decoded from UTF-8 bytes (lone surrogates included)."""
    if isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "surrogatepass")
