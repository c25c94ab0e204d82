"""Which conversation a request belongs to, read from what Open WebUI really sends.

Open WebUI (0.5 and later) puts the chat id and the message ids in ``body["metadata"]`` of the
inlet; 0.3/0.4 and every outlet put ``chat_id`` and ``id`` at the top level; ``pipe()`` never sees
``metadata``, so the Helix pipe's inlet copies the context into :data:`PRIVATE_KEY`. Every value is
treated as hostile: non-strings, huge strings and control characters never crash anything, and an
id is only ever a store key or a header value, never part of a file path.

The user message a chat turn answers is ``metadata.user_message`` / ``user_message_id`` from 0.9
on, and ``metadata.parent_message`` / ``parent_message_id`` in 0.6 (the parent of the reply being
made). Either set marks a turn of Open WebUI's own chat, which always sends the whole chat:
:meth:`Conversation.sends_whole_chat` is the one rule that decides it.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from .messages import Message, content_to_text

__all__ = [
    "PRIVATE_KEY",
    "ChatKind",
    "Conversation",
    "ConversationKey",
    "header_safe",
    "helix_session_id",
    "read_conversation",
    "stable_conversation_id",
]

PRIVATE_KEY = "helix_conversation"
"""The top-level body key the Helix pipe's inlet fills so that ``pipe()`` learns the conversation."""

MAX_ID_CHARS = 200
ANONYMOUS_USER = "anonymous"
_TASK_PROMPT_PREFIX = "### Task:"
_HELIX_ID_MAX = 64 - len("conv-")
_HELIX_SAFE = frozenset(string.ascii_letters + string.digits + "-")
_HEADER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.:~@+=")


class ChatKind(str, Enum):
    """What kind of request this is, which decides whether and where history is kept."""

    SAVED = "saved"
    TEMPORARY = "temporary"
    CHANNEL = "channel"
    TASK = "task"
    API = "api"


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """A store key: one user's one conversation. Another user's key never names the same rows."""

    user_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """Everything helix-pipeline knows about the conversation of one request."""

    kind: ChatKind
    user_id: str
    conversation_id: str
    chat_id: str | None = None
    task: str | None = None
    message_id: str | None = None
    user_message_id: str | None = None
    chat_turn: bool = False
    """The body carries Open WebUI's chat-turn markers (``user_message``/``user_message_id`` from
    0.9, ``parent_message``/``parent_message_id`` in 0.6): it holds the whole chat."""

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.user_id, self.conversation_id)

    @property
    def is_task(self) -> bool:
        return self.kind is ChatKind.TASK

    def sends_whole_chat(self, messages: Sequence[Message]) -> bool:
        """Whether ``messages`` are the whole chat, not only its newest part: the one rule.

        Open WebUI's own chat says so with its turn markers (:attr:`chat_turn`, or the id of the
        user message) on every release, and its outlets with an id on every message. Without either, the messages may be a plain
        API client's newest ones, and the stored history goes in front of them unless they resend
        its start (:func:`~helix_pipeline.history.merge_history` checks that).
        """
        if self.chat_turn or self.user_message_id:
            return True
        return (
            self.kind is not ChatKind.API and bool(messages) and all(m.message_id for m in messages)
        )

    def to_private(self) -> dict[str, Any]:
        """The JSON-safe form the pipe's inlet stores under :data:`PRIVATE_KEY`."""
        data = {name: getattr(self, name) for name in _FIELDS}  # asdict() deep-copies: slow
        data["kind"] = self.kind.value
        return data


_FIELDS = tuple(field.name for field in fields(Conversation))


def read_conversation(body: object, user: object = None) -> Conversation:
    """Read the conversation of an inlet, outlet or pipe body; never raises.

    Sources, in order: our own :data:`PRIVATE_KEY` (a pipe body), ``metadata`` (an inlet from 0.5
    on), then the top level (an outlet, or Open WebUI 0.3/0.4).
    """
    body_map: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    private = _mapping(body_map.get(PRIVATE_KEY))
    metadata = _mapping(body_map.get("metadata"))
    sources = (private, metadata, body_map)

    def first(*names: str) -> str | None:
        for source in sources:
            for name in names:
                value = clean_id(source.get(name))
                if value is not None:
                    return value
        return None

    user_id = clean_id(_mapping(user).get("id")) or first("user_id") or ANONYMOUS_USER
    chat_id = first("chat_id")
    task = first("task")
    user_message = _user_message(metadata)
    # An outlet's top-level ``id`` is the assistant message; an inlet's ``message_id`` likewise.
    message_id = first("message_id") or clean_id(body_map.get("id"))
    messages = body_map.get("messages")
    # Tasks carry no message id; a chat turn whose own text starts with ``### Task:`` is no task.
    if task is None and message_id is None and _looks_like_task(messages):
        task = "unknown"
    kind = _classify(chat_id, task)
    conversation_id = chat_id or stable_conversation_id(user_id, _first_user_text(messages))
    return Conversation(
        kind=kind,
        user_id=user_id,
        conversation_id=conversation_id,
        chat_id=chat_id,
        task=task,
        message_id=message_id,
        user_message_id=first("user_message_id") or clean_id(user_message.get("id")),
        chat_turn=private.get("chat_turn") is True or _has_turn_markers(metadata),
    )


def clean_id(value: object) -> str | None:
    """A usable id from any value: ``None`` for empty or non-scalar values.

    Strings are stripped of surrounding white space; ids longer than 200 characters or holding
    control characters are replaced by a digest, so the same input always gives the same id.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if abs(value) >= 10**MAX_ID_CHARS:  # no id is that long, and str() refuses > 4300 digits
            return None
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"sha256-{digest[:40]}"
    return value


def stable_conversation_id(user_id: str, first_user_message: str) -> str:
    """A conversation id for callers that send no chat id: same user and first message, same id."""
    seed = f"{user_id}\x00{first_user_message}".encode("utf-8", "surrogatepass")
    return f"api-{hashlib.sha256(seed).hexdigest()[:32]}"


def helix_session_id(raw: str) -> str:
    """The session id Helix derives from a conversation header value (``conv-...``).

    Helix keeps ASCII letters, digits and ``-``, turns anything else into ``-``, collapses runs,
    strips the ends, falls back to ``session``, cuts to 59 characters and prefixes ``conv-``.
    """
    safe = "".join(c if c in _HELIX_SAFE else "-" for c in raw)
    while "--" in safe:
        safe = safe.replace("--", "-")
    safe = safe.strip("-") or "session"
    return f"conv-{safe[:_HELIX_ID_MAX]}"


def header_safe(value: str) -> str:
    """``value`` if it can travel in an HTTP header as it is, else a deterministic ASCII form.

    ``requests`` refuses header values that are not latin-1, and control characters would break
    the request; such ids are percent-encoded as UTF-8 (stable, reversible, and distinct per id).
    """
    if all(c in _HEADER_SAFE for c in value):
        return value
    return "".join(
        c if c in _HEADER_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in value
    )


def _classify(chat_id: str | None, task: str | None) -> ChatKind:
    if task is not None:
        return ChatKind.TASK
    if chat_id is None:
        return ChatKind.API
    if chat_id == "local" or chat_id.startswith(("local:", "temporary:")):
        return ChatKind.TEMPORARY
    if chat_id.startswith("channel:"):
        return ChatKind.CHANNEL
    return ChatKind.SAVED


def _user_message(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """The user message this turn answers: ``user_message`` (0.9 on), else 0.6's
    ``parent_message`` when it is the user's (the parent of the reply being made)."""
    user_message = _mapping(metadata.get("user_message"))
    if user_message:
        return user_message
    parent = _mapping(metadata.get("parent_message"))
    return parent if parent.get("role") == "user" else {}


def _has_turn_markers(metadata: Mapping[str, Any]) -> bool:
    """Whether an inlet's metadata names the user message of an Open WebUI chat turn."""
    return bool(
        _mapping(metadata.get("user_message"))
        or _mapping(metadata.get("parent_message"))
        or clean_id(metadata.get("user_message_id"))
        or clean_id(metadata.get("parent_message_id"))
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _user_texts(messages: object) -> list[str]:
    if not isinstance(messages, list):
        return []
    return [
        content_to_text(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "user"
    ]


def _first_user_text(messages: object) -> str:
    texts = _user_texts(messages)
    return texts[0] if texts else ""


def _looks_like_task(messages: object) -> bool:
    """A background task's one user message is a prompt that starts with ``### Task:``."""
    texts = _user_texts(messages)
    return len(texts) == 1 and texts[0].lstrip().startswith(_TASK_PROMPT_PREFIX)
