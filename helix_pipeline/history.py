"""History merge: the stored branch and the incoming messages become what goes to Helix.

Helix keeps no history of its own, so every request must carry the whole conversation, without
duplicates and within Helix's limits. :func:`merge_history` decides what is new and where it
belongs; :func:`fit_budget` trims what goes out. Neither does any I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .messages import Message

__all__ = ["Budget", "Merge", "Trim", "fit_budget", "merge_history", "split_system"]

log = logging.getLogger(__name__)

TRUNCATION_NOTE = "\n[... truncated by helix-pipeline: {dropped} characters left out]"


@dataclass(frozen=True, slots=True)
class Budget:
    """What Helix accepts: at most 100 messages of at most 100,000 characters each."""

    max_messages: int = 100
    max_message_chars: int = 100_000
    max_total_chars: int = 500_000


@dataclass(frozen=True, slots=True)
class Merge:
    """The result of merging: the conversation as it now stands, and what of it is new.

    ``conversation`` holds no system messages (they are never stored); ``new`` are the incoming
    messages that follow the first ``base`` messages of the stored branch.
    """

    conversation: tuple[Message, ...]
    base: int
    new: tuple[Message, ...]
    attached: int
    """How many stored messages were put in front of what the client sent (0 for a full resend)."""


@dataclass(frozen=True, slots=True)
class Trim:
    """What :func:`fit_budget` left out, in counts (never content)."""

    dropped_messages: int = 0
    dropped_chars: int = 0
    truncated_messages: int = 0

    def __bool__(self) -> bool:
        return bool(self.dropped_messages or self.truncated_messages)


def split_system(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """System messages (first occurrence of each text, in order) and the rest."""
    system: list[Message] = []
    seen: set[str] = set()
    rest: list[Message] = []
    for message in messages:
        if message.role != "system":
            rest.append(message)
        elif message.content not in seen:
            seen.add(message.content)
            system.append(message)
    return system, rest


def merge_history(
    stored: Sequence[Message], incoming: Sequence[Message], *, complete: bool
) -> Merge:
    """Merge the stored active branch with the incoming (system-free) messages.

    - the client resent the history (Open WebUI does): nothing is added or duplicated;
    - the incoming messages diverge from the stored branch (an edit, a regeneration): they win;
    - the client sent only its newest messages (``complete`` is false and the first incoming
      message is not the first stored one): the stored history goes before them, overlapping
      messages once.

    ``complete`` says the caller always sends the whole conversation (Open WebUI with message ids),
    so a first message that differs is an edit of the first turn, not a continuation.
    """
    stored, incoming = list(stored), list(incoming)
    common = _common_prefix(stored, incoming)
    if common == len(stored) or common > 0 or complete or not stored:
        return Merge(tuple(incoming), common, tuple(incoming[common:]), attached=0)
    overlap = _overlap(stored, incoming)
    new = incoming[overlap:]
    return Merge(tuple(stored + new), len(stored), tuple(new), attached=len(stored) - overlap)


def fit_budget(
    system: Sequence[Message], conversation: Sequence[Message], budget: Budget
) -> tuple[list[Message], Trim]:
    """Trim the oldest turns until Helix's limits hold; keep the system messages, the first user
    message (Helix takes it as the session's request) and the newest message.

    What is kept after the first user message starts with a user message.
    """
    limit = budget.max_message_chars
    sizes = [len(m.content) for m in (*system, *conversation)]
    truncated = sum(size > limit for size in sizes)
    if truncated:
        system = [_truncate(m, limit) for m in system]
        conversation = [_truncate(m, limit) for m in conversation]
        total = sum(len(m.content) for m in (*system, *conversation))
    else:  # the common case: nothing to cut, nothing to copy
        total = sum(sizes)
    if len(system) + len(conversation) <= budget.max_messages and total <= budget.max_total_chars:
        kept, trim = [*system, *conversation], Trim(truncated_messages=truncated)
        _log_trim(trim)
        return kept, trim

    first_user = next((i for i, m in enumerate(conversation) if m.role == "user"), None)
    pinned = [conversation[first_user]] if first_user is not None else []
    tail = conversation[first_user + 1 :] if first_user is not None else list(conversation)
    dropped_before = first_user or 0
    dropped_chars = sum(len(m.content) for m in conversation[:dropped_before])

    fixed = len(system) + len(pinned)
    fixed_chars = sum(len(m.content) for m in (*system, *pinned))
    room = max(1, budget.max_messages - fixed)
    start = max(0, len(tail) - room)
    tail_chars = sum(len(m.content) for m in tail[start:])
    while start < len(tail) - 1 and fixed_chars + tail_chars > budget.max_total_chars:
        tail_chars -= len(tail[start].content)
        start += 1
    if start > 0:
        # Keep whole turns: what follows the first user message starts with a user message.
        while start < len(tail) - 1 and tail[start].role != "user":
            tail_chars -= len(tail[start].content)
            start += 1
    dropped = tail[:start]
    kept = [*system, *pinned, *tail[start:]]
    if fixed_chars + tail_chars > budget.max_total_chars:
        kept, extra = _shrink_to(kept, budget.max_total_chars)
        truncated += extra
    trim = Trim(
        dropped_messages=dropped_before + len(dropped),
        dropped_chars=dropped_chars + sum(len(m.content) for m in dropped),
        truncated_messages=truncated,
    )
    _log_trim(trim)
    return kept, trim


def _log_trim(trim: Trim) -> None:
    if trim:
        log.info(
            "history trimmed to Helix's limits: %d messages (%d chars) dropped, %d truncated",
            trim.dropped_messages,
            trim.dropped_chars,
            trim.truncated_messages,
        )


def _common_prefix(stored: Sequence[Message], incoming: Sequence[Message]) -> int:
    count = 0
    for mine, theirs in zip(stored, incoming, strict=False):
        if not mine.same_as(theirs):
            break
        count += 1
    return count


def _overlap(stored: Sequence[Message], incoming: Sequence[Message]) -> int:
    """The longest run that ends the stored branch and starts the incoming messages."""
    limit = min(len(stored), len(incoming))
    tail, head = stored[len(stored) - limit :], incoming[:limit]
    if not any(m.partial for m in tail) and (
        all(m.message_id is None for m in head) or all(m.message_id is None for m in tail)
    ):
        # Role and stripped text alone decide ``same_as`` here: an exact key, so linear time.
        return _overlap_of_keys([(m.role, m.content.strip()) for m in tail], head)
    # Ids on both sides or a partial reply: compare pairwise, quadratic in the worst case.
    for size in range(limit, 0, -1):
        if all(s.same_as(i) for s, i in zip(tail[-size:], head[:size], strict=True)):
            return size
    return 0


def _overlap_of_keys(tail: list[tuple[str, str]], head: Sequence[Message]) -> int:
    """The longest suffix of ``tail`` that is a prefix of ``head``'s keys (Knuth-Morris-Pratt).

    Comparing runs of messages pairwise from each possible size takes time quadratic in the
    number of messages: 50 ms for 1,000 messages of the same text, from a caller that sends only
    part of its history. The prefix function of ``head + [separator] + tail`` gives it in one pass.
    """
    keys: list[object] = [(m.role, m.content.strip()) for m in head]
    keys.append(object())  # a separator equal to nothing: no match runs across it
    keys.extend(tail)
    prefix = [0] * len(keys)
    for index in range(1, len(keys)):
        length = prefix[index - 1]
        while length and keys[index] != keys[length]:
            length = prefix[length - 1]
        if keys[index] == keys[length]:
            length += 1
        prefix[index] = length
    return prefix[-1]


def _truncate(message: Message, limit: int) -> Message:
    if len(message.content) <= limit:
        return message
    # The note counts what it replaces, and a longer count makes a longer note: settle both.
    keep = limit
    while True:
        note = TRUNCATION_NOTE.format(dropped=len(message.content) - keep)
        shorter = max(0, limit - len(note))
        if shorter == keep:
            break
        keep = shorter
    return replace(message, content=message.content[:keep] + note[: limit - keep])


def _shrink_to(messages: list[Message], total: int) -> tuple[list[Message], int]:
    """Cut the longest messages until the total fits (when even the newest turn is too long)."""
    messages = list(messages)
    shrunk = 0
    while (excess := sum(len(m.content) for m in messages) - total) > 0:
        index = max(range(len(messages)), key=lambda i: len(messages[i].content))
        longest = messages[index]
        target = max(0, len(longest.content) - excess)
        if target == len(longest.content) or not longest.content:
            break
        messages[index] = _truncate(longest, target)
        shrunk += 1
        if len(messages[index].content) >= len(longest.content):
            break
    return messages, shrunk
