"""The session store protocol, and the branch rules every engine shares.

A conversation is a list of branches; the newest branch is the active one. Branches are
self-contained (a new branch copies the prefix it shares with its parent), so loading the active
branch is one indexed read. Nothing is ever updated in place except a message's Open WebUI id, and
nothing is deleted except by :meth:`SessionStore.delete` or :meth:`SessionStore.purge`.

Every change gives the conversation a new *version*. :meth:`SessionStore.read` returns the active
branch with its version; a writer that hands that :class:`Branch` back to
:meth:`SessionStore.record` as ``base`` has its turn appended without the branch being read
again, unless another writer moved it since: then the record reads the branch and plans as usual
(so a turn prepared before another worker's edit forks instead of joining the edit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..conversation import ConversationKey
from ..messages import Message

__all__ = [
    "Branch",
    "ConversationSummary",
    "RecordPlan",
    "RecordResult",
    "SessionStore",
    "applied",
    "plan_record",
]


@dataclass(frozen=True, slots=True)
class Branch:
    """A conversation's active branch as one read (or write) left it, and its version.

    ``version`` is opaque: equal versions of one conversation mean the same branch, messages and
    ids included. ``None`` means there was no conversation.
    """

    messages: tuple[Message, ...] = ()
    version: object = None

    def unchanged_by(self, messages: Sequence[Message], *, after: int | None = None) -> bool:
        """Whether recording ``messages`` after ``after`` onto this branch would store nothing."""
        if after == 0 and _same_ids(self.messages, messages):
            return True  # what an outlet resends once its turn is recorded: decided by ids alone
        return not plan_record(self.messages, messages, after).changes_anything


def _same_ids(stored: Sequence[Message], incoming: Sequence[Message]) -> bool:
    """Whether both hold the same messages by role and id, every one with an id."""
    return len(stored) == len(incoming) and all(
        s.message_id is not None and s.message_id == i.message_id and s.role == i.role
        for s, i in zip(stored, incoming, strict=True)
    )


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of a user's conversation list."""

    conversation_id: str
    message_count: int
    branch_count: int
    last_activity: datetime


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What :meth:`SessionStore.record` did: messages appended, ids attached, whether it forked;
    and the active branch it left (not compared: it carries the store's own times and version)."""

    branch: int
    appended: int
    ids_attached: int
    forked: bool
    active: Branch = field(default=Branch(), compare=False, repr=False)


@runtime_checkable
class SessionStore(Protocol):
    """Where conversations live. Every engine (memory, SQLite, Redis, PostgreSQL) behaves the same.

    Methods raise :class:`~helix_pipeline.errors.StoreError` and nothing else on failure.
    """

    url: str
    """The store's URL without any password, for logs and messages."""

    def load(self, key: ConversationKey) -> list[Message]:
        """The active branch of a conversation, oldest first; ``[]`` if there is none."""
        ...

    def read(self, key: ConversationKey) -> Branch:
        """The active branch with its version, in one read; an empty ``Branch()`` if none."""
        ...

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        """Record ``messages`` as following the first ``after`` messages of the active branch.

        ``after=None`` appends to the end. Messages that match what is already stored at their place
        (see :meth:`Message.same_as`) are kept once, gaining the Open WebUI id if they had none; a
        message whose id is already in the branch is not stored twice. The first message that
        differs starts a new branch (a copy of the common prefix plus the rest), which becomes
        active; the old branch stays readable. One atomic transaction.

        A stored message keeps the ``created_at`` it was given (an import restores the original
        times); one without gets the current time. The conversation's last activity becomes the
        latest of its previous last activity and the times of the messages stored or given an id,
        so an ordinary turn makes it now, and an imported conversation keeps its own age for
        :meth:`conversations` and :meth:`purge`.

        ``base`` is the branch as the caller read it: while the conversation is still at its
        version, the store plans against it instead of reading the branch again. The result's
        ``active`` is the branch as this call left it, with its new version.
        """
        ...

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        """Every branch of a conversation, oldest first; the last one is the active branch."""
        ...

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        """A user's conversations, most recently active first."""
        ...

    def users(self) -> list[str]:
        """Every user id with at least one stored conversation."""
        ...

    def delete(self, key: ConversationKey) -> bool:
        """Delete a conversation with all its branches; whether there was one."""
        ...

    def purge(self, before: datetime) -> int:
        """Delete every conversation whose last activity is older than ``before``; how many."""
        ...

    def close(self) -> None:
        """Release connections and files. The store is not used again."""
        ...


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """How to apply a :meth:`SessionStore.record` call to an active branch.

    ``fork_at`` is ``None`` to append ``new`` to the active branch, or the length of the prefix a
    new branch copies before ``new``. ``attach`` lists ``(position, message_id)`` pairs of stored
    messages that gain an Open WebUI id, and ``attached_at`` the ``created_at`` of the incoming
    message that brought each id.
    """

    new: tuple[Message, ...]
    fork_at: int | None
    attach: tuple[tuple[int, str], ...]
    attached_at: tuple[float | None, ...] = ()

    @property
    def changes_anything(self) -> bool:
        return bool(self.new) or bool(self.attach) or self.fork_at is not None

    def stamped(self, now: float) -> tuple[Message, ...]:
        """The new messages as stored: each keeps its ``created_at``, or gets ``now``."""
        return tuple(
            m if m.created_at is not None else replace(m, created_at=now) for m in self.new
        )

    def last_activity(self, now: float, previous: float | None = None) -> float:
        """The conversation's last activity once this plan is applied at ``now``.

        The latest of ``previous`` and the times of the messages stored or given an id (each its
        own ``created_at``, or ``now`` without one).
        """
        times = [m.created_at for m in self.new] + list(self.attached_at)
        latest = [now if t is None else t for t in times] or [now]
        return max(latest) if previous is None else max(previous, *latest)


def plan_record(
    active: Sequence[Message], messages: Sequence[Message], after: int | None
) -> RecordPlan:
    """Decide, engine-independently, what recording ``messages`` after ``after`` means."""
    stored_count, count = len(active), len(messages)
    start = stored_count if after is None else max(0, min(after, stored_count))
    attach: list[tuple[int, str]] = []
    attached_at: list[float | None] = []
    position = start
    index = 0
    # Walk the stored messages at the same places while they match (the very objects, when the
    # caller hands back the branch it read: nothing to compare then, and no id to attach).
    while index < count and position < stored_count:
        incoming, stored = messages[index], active[position]
        if stored is not incoming:
            if not stored.same_as(incoming):
                break
            if incoming.message_id and not stored.message_id:
                attach.append((position, incoming.message_id))
                attached_at.append(incoming.created_at)
        position += 1
        index += 1
    known_ids = {m.message_id for m in active if m.message_id} if index < count else set()
    rest = [m for m in messages[index:] if not (m.message_id and m.message_id in known_ids)]
    if not rest:
        return RecordPlan(
            new=(), fork_at=None, attach=tuple(attach), attached_at=tuple(attached_at)
        )
    fork_at = position if position < len(active) else None
    return RecordPlan(
        new=tuple(rest), fork_at=fork_at, attach=tuple(attach), attached_at=tuple(attached_at)
    )


def applied(
    active: Sequence[Message], plan: RecordPlan, stamped: Sequence[Message]
) -> tuple[Message, ...]:
    """The active branch once ``plan`` is applied to ``active``, its new messages ``stamped``."""
    messages = list(active)
    for position, message_id in plan.attach:
        messages[position] = messages[position].with_id(message_id)
    if plan.fork_at is not None:
        del messages[plan.fork_at :]
    return (*messages, *stamped)
