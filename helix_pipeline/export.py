"""Conversations as JSON Lines: one line per stored message, every branch, nothing secret.

Each line is an object with ``user``, ``conversation``, ``branch`` (0 = oldest), ``position``
(0 = first message of that branch), ``role``, ``content``, ``message_id``, ``partial`` and
``created_at`` (ISO 8601, UTC). The store's URL is never written. :func:`import_jsonl` reads such a
file back into any store, branch by branch in order; a branch the store already holds is skipped,
so importing the same file twice changes nothing. Imported messages keep their ``created_at``
(a time without an offset is read as UTC; ``null`` gets the time of the import), and so each
conversation keeps its last activity for listing and for ``SESSION_TTL_DAYS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from .conversation import ConversationKey
from .errors import InputError
from .messages import Message, Role
from .stores import SessionStore

__all__ = [
    "ExportCounts",
    "ImportCounts",
    "export_jsonl",
    "import_jsonl",
    "message_records",
    "read_records",
]

FIELDS = (
    "user",
    "conversation",
    "branch",
    "position",
    "role",
    "content",
    "message_id",
    "partial",
    "created_at",
)
_ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ExportCounts:
    """What :func:`export_jsonl` wrote."""

    conversations: int
    branches: int
    messages: int


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What :func:`import_jsonl` did: branches recorded, and branches the store already held."""

    conversations: int
    branches: int
    messages: int
    skipped_branches: int


def message_records(store: SessionStore, user_id: str | None = None) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per stored message: every user (or ``user_id``), every branch."""
    users = [user_id] if user_id is not None else store.users()
    for user in users:
        for summary in store.conversations(user):
            key = ConversationKey(user, summary.conversation_id)
            for branch, messages in enumerate(store.branches(key)):
                for position, message in enumerate(messages):
                    yield _record(key, branch, position, message)


def export_jsonl(store: SessionStore, out: TextIO, *, user_id: str | None = None) -> ExportCounts:
    """Write :func:`message_records` to ``out``, one compact JSON object a line."""
    conversations: set[tuple[str, str]] = set()
    branches: set[tuple[str, str, int]] = set()
    messages = 0
    for record in message_records(store, user_id):
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        conversations.add((record["user"], record["conversation"]))
        branches.add((record["user"], record["conversation"], record["branch"]))
        messages += 1
    return ExportCounts(len(conversations), len(branches), messages)


def read_records(lines: Iterable[str]) -> dict[ConversationKey, list[list[Message]]]:
    """Parse an export into each conversation's branches, oldest first; blank lines are skipped.

    Raises :class:`InputError` naming the line of the first record that cannot be used.
    """
    found: dict[ConversationKey, dict[int, dict[int, Message]]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number} is not JSON ({exc.msg}); is this an export?") from exc
        key, branch, position, message = _parse(raw, number)
        positions = found.setdefault(key, {}).setdefault(branch, {})
        if position in positions:
            raise InputError(
                f"line {number}: branch {branch} of conversation {key.conversation_id!r} "
                f"has two messages at position {position}"
            )
        positions[position] = message
    result: dict[ConversationKey, list[list[Message]]] = {}
    for key, branches in found.items():
        ordered: list[list[Message]] = []
        for branch in sorted(branches):
            positions = branches[branch]
            if sorted(positions) != list(range(len(positions))):
                raise InputError(
                    f"branch {branch} of conversation {key.conversation_id!r} has gaps in its "
                    "positions; export the whole conversation again"
                )
            ordered.append([positions[p] for p in range(len(positions))])
        result[key] = ordered
    return result


def import_jsonl(store: SessionStore, lines: Iterable[str]) -> ImportCounts:
    """Record every branch of an export into ``store``, oldest first; branches it holds are skipped.

    The whole file is parsed before anything is written, so a broken file writes nothing.
    """
    parsed = read_records(lines)
    conversations = branches = messages = skipped = 0
    for key, exported in parsed.items():
        held = [_comparable(branch) for branch in store.branches(key)]
        wrote = False
        for branch in exported:
            if _comparable(branch) in held:
                skipped += 1
                continue
            # Recording a whole branch from the start forks it off the active branch at the first
            # message that differs, which recreates the exported branch as the newest one.
            store.record(key, branch, after=0)
            held.append(_comparable(branch))
            branches += 1
            messages += len(branch)
            wrote = True
        conversations += wrote
    return ImportCounts(conversations, branches, messages, skipped)


def _record(key: ConversationKey, branch: int, position: int, message: Message) -> dict[str, Any]:
    created = (
        datetime.fromtimestamp(message.created_at, timezone.utc).isoformat()
        if message.created_at is not None
        else None
    )
    return {
        "user": key.user_id,
        "conversation": key.conversation_id,
        "branch": branch,
        "position": position,
        "role": message.role,
        "content": message.content,
        "message_id": message.message_id,
        "partial": message.partial,
        "created_at": created,
    }


def _parse(raw: object, number: int) -> tuple[ConversationKey, int, int, Message]:
    if not isinstance(raw, dict):
        raise InputError(f"line {number} is not a JSON object; is this an export?")
    missing = [name for name in FIELDS if name not in raw]
    if missing:
        raise InputError(f"line {number} lacks {', '.join(missing)}; is this an export?")
    user, conversation = raw["user"], raw["conversation"]
    if not (isinstance(user, str) and user and isinstance(conversation, str) and conversation):
        raise InputError(f"line {number}: 'user' and 'conversation' must be non-empty strings")
    branch, position = raw["branch"], raw["position"]
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (branch, position)
    ):
        raise InputError(f"line {number}: 'branch' and 'position' must be whole numbers, 0 or more")
    role = raw["role"]
    if role not in _ROLES:
        raise InputError(f"line {number}: 'role' must be one of {', '.join(_ROLES)}, not {role!r}")
    content, message_id = raw["content"], raw["message_id"]
    if not isinstance(content, str):
        raise InputError(f"line {number}: 'content' must be a string")
    if message_id is not None and not (isinstance(message_id, str) and message_id):
        raise InputError(f"line {number}: 'message_id' must be a non-empty string or null")
    if not isinstance(raw["partial"], bool):
        raise InputError(f"line {number}: 'partial' must be true or false")
    message = Message(
        role,
        content,
        message_id=message_id,
        partial=raw["partial"],
        created_at=_timestamp(raw["created_at"], number),
    )
    return ConversationKey(user, conversation), branch, position, message


def _timestamp(created_at: object, number: int) -> float | None:
    """An export's ``created_at`` as Unix seconds; ``None`` stays ``None``."""
    if created_at is None:
        return None
    problem = f"line {number}: 'created_at' must be an ISO 8601 string or null"
    if not isinstance(created_at, str):
        raise InputError(problem)
    text = created_at[:-1] + "+00:00" if created_at.endswith(("Z", "z")) else created_at
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{problem}, not {created_at!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _comparable(branch: Sequence[Message]) -> tuple[tuple[str, str, str | None, bool], ...]:
    """A branch without its times, for telling whether a store already holds it."""
    return tuple((m.role, m.content, m.message_id, m.partial) for m in branch)
