"""The in-memory store: the reference implementation of the protocol, and the test fake."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from ..conversation import ConversationKey
from ..errors import ConfigError
from ..messages import Message
from .base import Branch, ConversationSummary, RecordResult, plan_record

__all__ = ["MemoryStore"]


class MemoryStore:
    """Conversations in a dict, guarded by one lock. Lost when the process ends.

    ``max_conversations`` bounds the store: beyond it, the least recently used conversation (the
    one loaded or recorded longest ago) is forgotten. ``None`` keeps every conversation.
    """

    def __init__(self, url: str = "memory://", *, max_conversations: int | None = None) -> None:
        if max_conversations is not None and max_conversations < 1:
            raise ConfigError(
                f"max_conversations must be 1 or more (or None to keep every conversation), "
                f"got {max_conversations}",
                setting="max_conversations",
            )
        self.url = url
        self.max_conversations = max_conversations
        self._lock = threading.Lock()
        # Insertion order is recency order when bounded: the first key is the least recently used.
        self._branches: dict[ConversationKey, list[list[Message]]] = {}
        self._touched: dict[ConversationKey, float] = {}
        self._versions: dict[ConversationKey, int] = {}
        self._changes = itertools.count(1)
        """Versions: one counter for the whole store, so a conversation deleted and recorded
        again never repeats one."""

    def load(self, key: ConversationKey) -> list[Message]:
        return list(self.read(key).messages)

    def read(self, key: ConversationKey) -> Branch:
        with self._lock:
            branches = self._branches.get(key)
            if not branches:
                return Branch()
            self._used(key)
            return Branch(tuple(branches[-1]), self._versions[key])

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        """Record under the store's lock; ``base`` changes nothing here (reading costs nothing)."""
        now = time.time()
        with self._lock:
            branches = self._branches.setdefault(key, [[]])
            self._used(key)
            active = branches[-1]
            plan = plan_record(active, messages, after)
            for position, message_id in plan.attach:
                active[position] = active[position].with_id(message_id)
            stamped = plan.stamped(now)
            if plan.fork_at is not None:
                branches.append([*active[: plan.fork_at], *stamped])
            else:
                active.extend(stamped)
            if plan.changes_anything:
                self._touched[key] = plan.last_activity(now, self._touched.get(key))
                self._versions[key] = next(self._changes)
                self._forget_least_recently_used()
            elif not active:
                del self._branches[key]
            kept = key in self._branches
            return RecordResult(
                branch=len(branches) - 1 if kept else 0,
                appended=len(stamped),
                ids_attached=len(plan.attach),
                forked=plan.fork_at is not None,
                active=Branch(tuple(branches[-1]), self._versions[key]) if kept else Branch(),
            )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with self._lock:
            return [list(branch) for branch in self._branches.get(key, [])]

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._lock:
            rows = [
                ConversationSummary(
                    conversation_id=key.conversation_id,
                    message_count=len(branches[-1]),
                    branch_count=len(branches),
                    last_activity=datetime.fromtimestamp(self._touched[key], timezone.utc),
                )
                for key, branches in self._branches.items()
                if key.user_id == user_id
            ]
        return sorted(rows, key=lambda row: row.last_activity, reverse=True)

    def users(self) -> list[str]:
        with self._lock:
            return sorted({key.user_id for key in self._branches})

    def delete(self, key: ConversationKey) -> bool:
        with self._lock:
            self._touched.pop(key, None)
            self._versions.pop(key, None)
            return self._branches.pop(key, None) is not None

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        with self._lock:
            old = [key for key, touched in self._touched.items() if touched < cutoff]
            for key in old:
                del self._branches[key]
                del self._touched[key]
                del self._versions[key]
            return len(old)

    def _used(self, key: ConversationKey) -> None:
        """Make ``key`` the most recently used conversation (the last in the dict)."""
        if self.max_conversations is not None:
            self._branches[key] = self._branches.pop(key)

    def _forget_least_recently_used(self) -> None:
        if self.max_conversations is None:
            return
        while len(self._branches) > self.max_conversations:
            oldest = next(iter(self._branches))
            del self._branches[oldest]
            self._touched.pop(oldest, None)
            self._versions.pop(oldest, None)

    def close(self) -> None:
        with self._lock:
            self._branches.clear()
            self._touched.clear()
            self._versions.clear()
