"""The Redis store's keys, index scripts and message encoding (no I/O, no redis import).

Ids never appear in key names: ``C`` below is a SHA-256 digest of the pair (user id, conversation
id) and ``U`` one of the user id, so hostile ids cannot collide, glob or break a hash tag. ``P`` is
the key prefix (``?prefix=``, default ``helix``).

========================  ================================================================
``P:{C}:meta``            hash: user, conversation, branches, count, touched, token, rev
``P:{C}:active``          list: the active branch, one JSON message per item
``P:{C}:b:N``             list: older branch ``N`` (0 is the first)
``P:{idx}:users``         sorted set: user id -> its newest activity
``P:{idx}:convs``         sorted set: JSON ``[user, conversation]`` -> last activity (purge)
``P:{idx}:user:U``        hash: conversation id -> token of the conversation's incarnation
========================  ================================================================

Every key of one conversation shares the hash tag ``{C}``, so a turn is one transaction that also
works on Redis Cluster. The index keys share the tag ``{idx}`` and change through the two scripts
below, after the conversation's own transaction. ``token`` names one incarnation of a conversation
(a new one after a delete) and ``rev`` counts its changes: with ``branches`` and ``count`` they
are the version a writer checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..conversation import ConversationKey
from ..messages import Message

__all__ = [
    "INDEX_SCRIPT",
    "UNINDEX_SCRIPT",
    "VERSION_FIELDS",
    "Keys",
    "decode_message",
    "encode_message",
    "pair",
    "to_bytes",
    "to_text",
    "version_of",
]

# KEYS: users, convs, user hash. ARGV: user, conversation, pair, touched, token, ttl, horizon.
INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
end
return 1
"""

# KEYS: users, convs, user hash. ARGV: user, conversation, pair, token the caller saw ('' for
# none: then only a purge candidate without a user-index entry is dropped).
UNINDEX_SCRIPT = """
local seen = redis.call('HGET', KEYS[3], ARGV[2])
if seen ~= ARGV[4] and not (seen == false and ARGV[4] == '') then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""

VERSION_FIELDS = ("token", "rev", "branches", "count")
"""The meta fields that make a conversation's version, in :func:`version_of`'s order."""


def version_of(token: Any, rev: Any, branches: Any, count: Any) -> object:
    """The version of a conversation from its meta fields; ``None`` when there is none."""
    if token is None:
        return None
    return (bytes(token), int(rev or 0), int(branches or 0), int(count or 0))


@dataclass(frozen=True)
class Keys:
    """The names of the keys under one prefix."""

    prefix: str

    def meta(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:meta"

    def active(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:active"

    def branch(self, key: ConversationKey, branch: int) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:b:{branch}"

    def older(self, key: ConversationKey, branches: int) -> list[str]:
        """The keys of every branch but the active one, oldest first."""
        return [self.branch(key, branch) for branch in range(branches - 1)]

    def index(self, name: str) -> str:
        return f"{self.prefix}:{{idx}}:{name}"

    def user_index(self, user_id: str) -> str:
        return self.index(f"user:{_digest(to_bytes(user_id))}")

    def indexes(self, user_id: str) -> list[str]:
        """The ``KEYS`` of both index scripts."""
        return [self.index("users"), self.index("convs"), self.user_index(user_id)]


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def pair(key: ConversationKey) -> bytes:
    return to_bytes(json.dumps([key.user_id, key.conversation_id], ensure_ascii=False))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def encode_message(message: Message) -> bytes:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.message_id is not None:
        data["id"] = message.message_id
    if message.partial:
        data["partial"] = True
    if message.created_at is not None:
        data["at"] = message.created_at
    return to_bytes(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def decode_message(raw: bytes) -> Message:
    data = json.loads(to_text(raw))
    return Message(
        role=data["role"],
        content=data["content"],
        message_id=data.get("id"),
        partial=bool(data.get("partial", False)),
        created_at=data.get("at"),
    )
