"""The history service: load, merge, budget and record, whatever store sits behind it.

Both pipeline files use it: the Helix pipe around its call to Helix, the session filter in its inlet
and outlet. It never raises for a store failure: a turn whose store is down goes to Helix without
stored history, and the log says so.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import Any

from .conversation import ChatKind, Conversation, ConversationKey, read_conversation
from .errors import StoreError
from .history import Budget, Trim, fit_budget, merge_history, split_system
from .messages import Message, messages_from_dicts
from .notices import without_notices
from .stores import Branch, MemoryStore, SessionStore

__all__ = ["TEMPORARY_CONVERSATIONS", "HistoryService", "Turn"]

log = logging.getLogger(__name__)

TEMPORARY_CONVERSATIONS = 1_000
"""Temporary chats kept in memory at most; beyond it the least recently used one is forgotten."""

_CONTENT = attrgetter("content")

RECENT_CONVERSATIONS = 256
RECENT_CHARACTERS = 8_000_000
"""Bounds of what a service remembers of the branches it just read or recorded (the outlet's
shortcut): conversations, and characters of message text in all."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One prepared chat turn: what goes to Helix, and what to record once the reply is in."""

    conversation: Conversation
    outgoing: tuple[Message, ...]
    new: tuple[Message, ...]
    store: SessionStore | None
    attached: int = 0
    trim: Trim = field(default_factory=Trim)
    prefix: tuple[Message, ...] = ()
    """The stored messages that ``new`` follows, as this turn loaded them (ids included):
    recording checks them against the branch then active, which another worker may have changed."""
    branch: Branch | None = None
    """The stored branch as this turn read it, with its version (``None`` if it could not)."""

    def wire_messages(self) -> list[dict[str, str]]:
        return [m.to_wire() for m in self.outgoing]


class HistoryService:
    """Conversation memory for one pipeline instance.

    ``store`` keeps saved chats, channels and API conversations; temporary chats go to an
    in-memory store bounded to :data:`TEMPORARY_CONVERSATIONS` chats unless ``store_temporary`` is
    on; background tasks are never stored.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        budget: Budget | None = None,
        store_temporary: bool = False,
        enabled: bool = True,
        temporary_store: SessionStore | None = None,
    ) -> None:
        self.store = store
        self.budget = budget or Budget()
        self.store_temporary = store_temporary
        self.enabled = enabled
        self.temporary_store = temporary_store or MemoryStore(
            "memory://temporary", max_conversations=TEMPORARY_CONVERSATIONS
        )
        self._recent = RecentBranches()

    def store_for(self, conversation: Conversation) -> SessionStore | None:
        """Where this conversation's history lives; ``None`` for what is never recorded."""
        if not self.enabled or conversation.kind is ChatKind.TASK:
            return None
        if conversation.kind is ChatKind.TEMPORARY and not self.store_temporary:
            return self.temporary_store
        return self.store

    def prepare(self, conversation: Conversation, incoming: Sequence[Message]) -> Turn:
        """Merge the stored history into the incoming messages and fit Helix's limits."""
        system, chat = split_system(without_notices(incoming))
        store = self.store_for(conversation)
        branch = self._read(store, conversation) if store is not None else None
        stored = branch.messages if branch is not None else ()
        merge = merge_history(stored, chat, complete=conversation.sends_whole_chat(chat))
        if merge.attached:
            log.info(
                "attached %d stored messages to conversation %s",
                merge.attached,
                conversation.conversation_id,
            )
        new = tuple(self._with_ids(merge.new, conversation))
        outgoing, trim = fit_budget(system, merge.conversation, self.budget)
        return Turn(
            conversation=conversation,
            outgoing=tuple(outgoing),
            new=new,
            store=store,
            attached=merge.attached,
            trim=trim,
            prefix=tuple(stored[: merge.base]),
            branch=branch,
        )

    def passthrough(self, conversation: Conversation, incoming: Sequence[Message]) -> Turn:
        """A turn that is forwarded as it came (history off, or a background task)."""
        system, chat = split_system(incoming)
        outgoing, trim = fit_budget(system, chat, self.budget)
        return Turn(conversation, tuple(outgoing), (), None, trim=trim)

    def record(self, turn: Turn, reply: str | None, *, partial: bool = False) -> bool:
        """Record the turn's new messages and Helix's reply in one transaction; whether it worked.

        A reply that was cut off is recorded with ``partial=True``; ``None`` records only the user's
        messages (Helix failed before answering).
        """
        if turn.store is None:
            return False
        messages = list(turn.new)
        if reply is not None and (reply or not partial):
            messages.append(
                Message(
                    "assistant",
                    reply,
                    message_id=turn.conversation.message_id,
                    partial=partial,
                )
            )
        if not messages:
            return True
        key = turn.conversation.key
        try:
            # The prefix, not ``after=len(turn.prefix)``: if another worker recorded an edit of
            # this chat since prepare(), the turn forks from where it diverges instead of joining
            # the edit. While nobody did, ``base`` spares the store reading the branch again.
            result = turn.store.record(key, [*turn.prefix, *messages], after=0, base=turn.branch)
        except StoreError as exc:
            self._recent.forget(turn.store, key)
            log.warning(
                "could not record a turn of conversation %s in %s: %s",
                turn.conversation.conversation_id,
                turn.store.url,
                exc,
            )
            return False
        self._recent.remember(turn.store, key, result.active)
        return True

    def reconcile(self, conversation: Conversation, messages: Sequence[Message]) -> bool:
        """Record a finished exchange as Open WebUI's outlet reports it (with its message ids).

        Open WebUI's outlet holds the whole chat, every message with its id: it is matched against
        the stored branch from the start, so ids attach to what the pipe recorded and nothing is
        stored twice. It is matched against the branch this service just read or recorded for the
        chat, when it has it: then the store is touched only if the outlet brings something new,
        and is not read again. An API caller's outlet (with or without a chat id) holds only what
        it sent, its own messages without ids: it is merged like an incoming request against the
        branch read now, so the history the turn was answered with stays in front of it.
        """
        store = self.store_for(conversation)
        if store is None:
            return False
        _, chat = split_system(without_notices(messages))
        if not chat:
            return True
        key = conversation.key
        try:
            complete = conversation.sends_whole_chat(chat)
            recent = self._recent.get(store, key) if complete else None
            branch = store.read(key) if recent is None else recent
            # The whole chat is matched from its start; only a part goes after the history.
            after = 0 if complete else merge_history(branch.messages, chat, complete=False).attached
            if not branch.unchanged_by(chat, after=after):
                branch = store.record(key, chat, after=after, base=branch).active
            elif branch is recent:
                return True
        except StoreError as exc:
            self._recent.forget(store, key)
            log.warning(
                "could not record the outlet of conversation %s in %s: %s",
                conversation.conversation_id,
                store.url,
                exc,
            )
            return False
        self._recent.remember(store, key, branch)
        return True

    def reconcile_outlet(self, body: Mapping[str, Any], user: object) -> bool:
        """:meth:`reconcile` for an Open WebUI outlet body (its ``chat_id``, ``id`` and messages)."""
        conversation = read_conversation(body, user)
        raw = body.get("messages")
        if self._just_recorded(conversation, raw):
            return True
        return self.reconcile(conversation, messages_from_dicts(raw))

    def _just_recorded(self, conversation: Conversation, raw: object) -> bool:
        """Whether an outlet's messages are, one for one by role and id, the branch this service
        last read or recorded for the chat: then it brings nothing to record (what
        :meth:`reconcile` would find), and its messages need not even be normalised."""
        store = self.store_for(conversation)
        if store is None or not isinstance(raw, list):
            return False
        branch = self._recent.get(store, conversation.key)
        if branch is None or len(raw) != len(branch.messages):
            return False
        try:
            for item, stored in zip(raw, branch.messages, strict=True):  # lengths checked above
                if (
                    stored.message_id is None
                    or item["id"] != stored.message_id
                    or item["role"] != stored.role
                ):
                    return False
        except (TypeError, KeyError, IndexError):  # not a message dict: the full path decides
            return False
        return True

    def purge_older_than(self, days: int) -> int:
        """Delete conversations inactive for ``days`` days (0 keeps everything); how many."""
        if days <= 0:
            return 0
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        try:
            removed = self.store.purge(cutoff)
        except StoreError as exc:
            log.warning("could not purge old conversations from %s: %s", self.store.url, exc)
            return 0
        if removed:
            log.info("purged %d conversations inactive for %d days", removed, days)
        return removed

    def close(self) -> None:
        for store in (self.store, self.temporary_store):
            try:
                store.close()
            except StoreError as exc:
                log.warning("closing %s failed: %s", store.url, exc)

    def _read(self, store: SessionStore, conversation: Conversation) -> Branch | None:
        try:
            branch = store.read(conversation.key)
        except StoreError as exc:
            log.warning(
                "session store %s unavailable, forwarding conversation %s without stored history: %s",
                store.url,
                conversation.conversation_id,
                exc,
            )
            return None
        self._recent.remember(store, conversation.key, branch)
        return branch

    @staticmethod
    def _with_ids(new: Sequence[Message], conversation: Conversation) -> list[Message]:
        """Give the turn's own user message the id Open WebUI assigned it (the last user message)."""
        result = list(new)
        if conversation.user_message_id:
            for index in range(len(result) - 1, -1, -1):
                if result[index].role == "user":
                    if result[index].message_id is None:
                        result[index] = replace(
                            result[index], message_id=conversation.user_message_id
                        )
                    break
        return result


class RecentBranches:
    """The branch a service last read or recorded per conversation, least recently used out.

    Bounded to :data:`RECENT_CONVERSATIONS` conversations and :data:`RECENT_CHARACTERS`
    characters of message text; a longer branch is not kept. Each entry remembers its store.
    """

    def __init__(
        self, conversations: int = RECENT_CONVERSATIONS, characters: int = RECENT_CHARACTERS
    ) -> None:
        self._limit = conversations
        self._characters_limit = characters
        self._characters = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[ConversationKey, tuple[SessionStore, Branch, int]] = OrderedDict()

    def get(self, store: SessionStore, key: ConversationKey) -> Branch | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] is not store:
                return None
            self._items.move_to_end(key)
            return item[1]

    def remember(self, store: SessionStore, key: ConversationKey, branch: Branch) -> None:
        size = sum(map(len, map(_CONTENT, branch.messages)))
        with self._lock:
            self._drop(key)
            if size > self._characters_limit:
                return
            self._items[key] = (store, branch, size)
            self._characters += size
            while len(self._items) > self._limit or self._characters > self._characters_limit:
                self._drop(next(iter(self._items)))

    def forget(self, store: SessionStore, key: ConversationKey) -> None:
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] is store:
                self._drop(key)

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: ConversationKey) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._characters -= item[2]
