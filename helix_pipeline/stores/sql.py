"""The SQL store: one implementation for SQLite and PostgreSQL, parameterised by a :class:`Dialect`.

The statements, the recording of a turn, the regrouping of branches and the conversion of rows live
here once. An engine module (:mod:`.sqlite`, :mod:`.postgres`) brings its dialect (table names,
placeholder, how a key is matched and its ids encoded, row locking), its connections and
transactions, the creation of a conversation row, and the translation of its driver's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from ..conversation import ConversationKey
from ..errors import StoreError
from ..messages import Message
from .base import ConversationSummary, RecordPlan, RecordResult, plan_record

__all__ = ["Dialect", "Queries", "SQLStore", "text"]

_MESSAGE_COLUMNS = "m.role, m.content, m.message_id, m.partial, m.created_at"
_CREATE_ATTEMPTS = 3


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
            f"SELECT {_MESSAGE_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id AND m.branch = c.active_branch WHERE {key} ORDER BY m.position"
        )
        self.load_all = sql(
            f"SELECT m.branch, {_MESSAGE_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id WHERE {key} ORDER BY m.branch, m.position"
        )
        self.find = sql(
            "SELECT c.id, c.active_branch, c.last_activity FROM {c} AS c WHERE {key}" + d.lock_row
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
            "UPDATE {c} SET active_branch = ?, message_count = ?, last_activity = ? WHERE id = ?"
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

    def _create(self, db: Any, key: ConversationKey, now: float) -> int | None:
        """Insert the conversation's row; its id, or ``None`` if another writer just did."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------

    def load(self, key: ConversationKey) -> list[Message]:
        with self._connection("loading a conversation", key) as db:
            rows = db.execute(self.queries.load_active, self.dialect.key_params(key)).fetchall()
        return [message_from_row(row) for row in rows]

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        with self._transaction("recording a turn", key) as db:
            found = self._lock_or_create(db, key, messages, after)
            if found is None:
                return RecordResult(branch=0, appended=0, ids_attached=0, forked=False)
            conversation, branch, previous = found
            active = [] if previous is None else self._read_branch(db, conversation, branch)
            plan = plan_record(active, messages, after)
            if not plan.changes_anything:
                return RecordResult(branch=branch, appended=0, ids_attached=0, forked=False)
            branch = self._apply(
                db,
                plan,
                conversation=conversation,
                branch=branch,
                previous=previous,
                length=len(active),
            )
        return RecordResult(
            branch=branch,
            appended=len(plan.new),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
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

    def _lock_or_create(
        self, db: Any, key: ConversationKey, messages: Sequence[Message], after: int | None
    ) -> tuple[int, int, float | None] | None:
        """Lock the conversation's row, creating it if this call records something.

        Returns ``(row id, active branch, last activity)``, the last activity ``None`` for a row
        created now, or ``None`` when the conversation does not exist and recording ``messages``
        would change nothing.
        """
        params = self.dialect.key_params(key)
        for _attempt in range(_CREATE_ATTEMPTS):
            found = db.execute(self.queries.find, params).fetchone()
            if found is not None:
                return int(found[0]), int(found[1]), float(found[2])
            if not plan_record([], messages, after).changes_anything:
                return None
            created = self._create(db, key, time.time())
            if created is not None:
                return created, 0, None
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
        plan: RecordPlan,
        *,
        conversation: int,
        branch: int,
        previous: float | None,
        length: int,
    ) -> int:
        """Write ``plan`` onto the active branch ``branch`` of ``length`` messages; the branch
        then active."""
        now = time.time()
        as_text = self.dialect.text_param
        with closing(db.cursor()) as cursor:
            cursor.executemany(
                self.queries.attach_id,
                [(as_text(mid), conversation, branch, pos) for pos, mid in plan.attach],
            )
            start = length
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
                    for position, message in enumerate(plan.stamped(now), start)
                ],
            )
            cursor.execute(
                self.queries.update_conversation,
                (branch, start + len(plan.new), plan.last_activity(now, previous), conversation),
            )
        return branch

    def _read_branch(self, db: Any, conversation: int, branch: int) -> list[Message]:
        rows = db.execute(self.queries.read_branch, (conversation, branch)).fetchall()
        return [message_from_row(row) for row in rows]


def message_from_row(row: Sequence[Any]) -> Message:
    """A message from its columns ``role, content, message_id, partial, created_at``."""
    # Run for every message of every load: the common case (text, not bytes) is checked inline,
    # which takes a quarter off reading a 50-message branch.
    role, content, message_id, partial, created_at = row
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
