"""The Redis store (``redis://`` or ``rediss://``; needs ``pip install helix-pipeline[redis]``).

Ids never appear in key names: ``C`` below is a SHA-256 digest of the pair (user id, conversation
id) and ``U`` one of the user id, so hostile ids cannot collide, glob or break a hash tag. ``P`` is
the key prefix (``?prefix=``, default ``helix``).

========================  ================================================================
``P:{C}:meta``            hash: user, conversation, branches, count, touched, token
``P:{C}:active``          list: the active branch, one JSON message per item
``P:{C}:b:N``             list: older branch ``N`` (0 is the first)
``P:{idx}:users``         sorted set: user id -> its newest activity
``P:{idx}:convs``         sorted set: JSON ``[user, conversation]`` -> last activity (purge)
``P:{idx}:user:U``        hash: conversation id -> token of the conversation's incarnation
========================  ================================================================

Every key of one conversation shares the hash tag ``{C}``, so a turn is one ``WATCH``/``MULTI``
transaction (retried on conflict) that also works on Redis Cluster; loading the active branch is
one ``LRANGE``. The index keys share the tag ``{idx}`` and change through small Lua scripts, after
the conversation's own transaction. The index may briefly list a conversation that is gone (it is
skipped and cleaned up when read); a process killed between the two steps leaves a conversation
unlisted until its next turn or its expiry. Every key expires ``ttl_days`` after the last change
(``?ttl_days=``, ``0`` keeps them forever). Needs Redis 6.2 or newer; ``?cluster=true`` for a
Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from . import redact_url, url_error
from .base import ConversationSummary, RecordResult, plan_record

__all__ = ["DEFAULT_TTL_DAYS", "RedisStore"]

logger = logging.getLogger(__name__)

DEFAULT_TTL_DAYS = 0.0
"""Days a conversation is kept after its last change: 0, forever, unless ``ttl_days`` says otherwise."""

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
_MAX_ATTEMPTS = 50
_INSTALL = "pip install helix-pipeline[redis]"

# KEYS: users, convs, user hash. ARGV: user, conversation, pair, touched, token, ttl, horizon.
_INDEX_SCRIPT = """
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
_UNINDEX_SCRIPT = """
local seen = redis.call('HGET', KEYS[3], ARGV[2])
if seen ~= ARGV[4] and not (seen == false and ARGV[4] == '') then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_RESPONSE_HINTS = (
    # (words in Redis's answer, unavailable?, what to do)
    ("OOM", False, "Redis is out of memory: raise its maxmemory, or lower ttl_days"),
    ("READONLY", True, "SESSION_STORE_URL names a read-only replica: point it at the primary"),
    ("DB index is out of range", True, "use a database number the server has (/0 to /15)"),
    ("MOVED", True, "SESSION_STORE_URL names a Redis Cluster node: add ?cluster=true"),
)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            f"The Redis session store needs the redis package: {_INSTALL}",
            setting="SESSION_STORE_URL",
        ) from exc
    return redis


class RedisStore:
    """Conversations in Redis, safe for threads, processes and several Pipelines servers."""

    def __init__(
        self,
        url: str,
        *,
        ttl_days: float = DEFAULT_TTL_DAYS,
        prefix: str = "helix",
        cluster: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        command_timeout: float = COMMAND_TIMEOUT_S,
        display_url: str | None = None,
    ) -> None:
        """Connect to the Redis server at ``url`` (no ``ttl_days``/``prefix`` in its query).

        ``cluster=True`` talks to a Redis Cluster, ``url`` naming any of its nodes.
        ``display_url`` is the URL to show (redacted) instead of ``url``.

        Raises :class:`ConfigError` when the redis package is missing or a setting is invalid,
        :class:`StoreUnavailable` when the server cannot be reached.
        """
        if not ttl_days >= 0 or ttl_days == float("inf"):
            raise _url_error(url, "ttl_days must be a number of days, 0 (keep forever) or more")
        if not prefix or any(c in prefix for c in "{}"):
            raise _url_error(url, "prefix must be a non-empty string without { or }")
        redis = _import_redis()
        self.url = redact_url(display_url or url)
        self.ttl_seconds = round(ttl_days * 86_400)
        self.prefix = prefix
        self._password = urlsplit(url).password
        self._errors = redis.exceptions
        client_class = redis.cluster.RedisCluster if cluster else redis.Redis
        with self._translated("connecting"):
            try:
                # One quick retry without back-off: a connection a server restart cut is replaced
                # at once, and a server that is down is reported at once.
                self._client: Any = client_class.from_url(
                    url,
                    socket_connect_timeout=connect_timeout,
                    socket_timeout=command_timeout,
                    retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1),
                )
                self._client.ping()
            except (ValueError, TypeError) as exc:
                # redis-py hands unknown URL parameters on to its connections: a TypeError.
                raise _url_error(url, f"redis-py cannot use it ({exc})") from exc
        self._index = self._client.register_script(_INDEX_SCRIPT)
        self._unindex = self._client.register_script(_UNINDEX_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, ttl_days: float | None = None) -> RedisStore:
        """Open ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS).

        Query parameters of our own: ``ttl_days`` (default: the ``ttl_days`` argument, which the
        pipelines set from ``SESSION_TTL_DAYS``, else ``0`` = never expire),
        ``prefix`` (default ``helix``) and ``cluster`` (``true`` for Redis Cluster); any other
        is passed on to redis-py.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("redis", "rediss"):
            raise _url_error(url, "it must start with redis:// or rediss://")
        options: dict[str, Any] = {} if ttl_days is None else {"ttl_days": float(ttl_days)}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "ttl_days":
                try:
                    options["ttl_days"] = float(value)
                except ValueError:
                    options["ttl_days"] = -1.0
            elif name == "prefix":
                options["prefix"] = value
            elif name == "cluster":
                if value.lower() not in _BOOLEANS:
                    raise _url_error(url, "cluster must be true or false")
                options["cluster"] = _BOOLEANS[value.lower()]
            else:
                rest.append((name, value))
        return cls(urlunsplit(parts._replace(query=urlencode(rest))), display_url=url, **options)

    def load(self, key: ConversationKey) -> list[Message]:
        with self._translated("loading a conversation", key):
            raw = self._client.lrange(self._active_key(key), 0, -1)
        return [_decode_message(item) for item in raw]

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        meta_key, active_key = self._meta_key(key), self._active_key(key)
        with (
            self._translated("recording a turn", key),
            self._client.pipeline(transaction=True) as pipe,
        ):
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    pipe.watch(meta_key)
                    meta = pipe.hgetall(meta_key)
                    branches = int(meta[b"branches"]) if meta else 0
                    raw = pipe.lrange(active_key, 0, -1) if branches else []
                    active = [_decode_message(item) for item in raw]
                    plan = plan_record(active, messages, after)
                    if not plan.changes_anything:
                        pipe.reset()
                        return RecordResult(
                            branch=max(branches - 1, 0), appended=0, ids_attached=0, forked=False
                        )
                    now = time.time()
                    stamped = plan.stamped(now)
                    touched = plan.last_activity(
                        now, float(meta[b"touched"]) if b"touched" in meta else None
                    )
                    token = meta.get(b"token") or uuid.uuid4().hex.encode()
                    pipe.multi()
                    for position, message_id in plan.attach:
                        active[position] = active[position].with_id(message_id)
                        pipe.lset(active_key, position, _encode_message(active[position]))
                    if plan.fork_at is not None:
                        # Not pipe.rename(): redis-py blocks that name in cluster pipelines, as
                        # keys may be in two slots; ours share one hash tag.
                        pipe.execute_command(
                            "RENAME", active_key, self._branch_key(key, branches - 1)
                        )
                        new_active = [*active[: plan.fork_at], *stamped]
                        pipe.rpush(active_key, *map(_encode_message, new_active))
                        branches += 1
                        count = len(new_active)
                    else:
                        if stamped:
                            pipe.rpush(active_key, *map(_encode_message, stamped))
                        branches = max(branches, 1)
                        count = len(active) + len(stamped)
                    pipe.hset(
                        meta_key,
                        mapping={
                            "user": _bytes(key.user_id),
                            "conversation": _bytes(key.conversation_id),
                            "branches": branches,
                            "count": count,
                            "touched": repr(touched),
                            "token": token,
                        },
                    )
                    if self.ttl_seconds:
                        # Counted from the last activity, which an import may have set in the past.
                        expires_ms = round((touched + self.ttl_seconds) * 1000)
                        for name in (meta_key, active_key, *self._older_keys(key, branches)):
                            pipe.pexpireat(name, expires_ms)
                    pipe.execute()
                except self._errors.WatchError:
                    pipe.reset()
                    _back_off(attempt)
                    continue
                self._add_to_index(key, touched, token)
                return RecordResult(
                    branch=branches - 1,
                    appended=len(stamped),
                    ids_attached=len(plan.attach),
                    forked=plan.fork_at is not None,
                )
        raise StoreError(
            f"The Redis session store {self.url} could not record a turn: the conversation kept "
            f"changing under {_MAX_ATTEMPTS} attempts; retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        meta_key = self._meta_key(key)
        with self._translated("loading the branches of a conversation", key):
            count = int(self._client.hget(meta_key, "branches") or 0)
            for attempt in range(_MAX_ATTEMPTS):
                if not count:
                    return []
                pipe = self._client.pipeline(transaction=True)
                pipe.hget(meta_key, "branches")
                for name in (*self._older_keys(key, count), self._active_key(key)):
                    pipe.lrange(name, 0, -1)
                now_count, *lists = pipe.execute()
                if int(now_count or 0) == count:
                    return [[_decode_message(item) for item in raw] for raw in lists]
                count = int(now_count or 0)  # a fork or a delete came in between: read again
                _back_off(attempt)
        raise StoreError(
            f"The Redis session store {self.url} could not read the branches of a conversation: "
            f"it kept changing under {_MAX_ATTEMPTS} attempts; retry",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._translated("listing conversations"):
            tokens = self._client.hgetall(self._user_index_key(user_id))
            ids = [_text(raw) for raw in tokens]
            pipe = self._client.pipeline(transaction=False)
            for conversation_id in ids:
                key = ConversationKey(user_id, conversation_id)
                pipe.hmget(self._meta_key(key), ["count", "branches", "touched"])
            metas = pipe.execute()
            summaries: list[ConversationSummary] = []
            for conversation_id, (count, branches, touched) in zip(ids, metas, strict=True):
                if touched is None:
                    self._remove_from_index(
                        ConversationKey(user_id, conversation_id),
                        tokens[_bytes(conversation_id)],
                    )
                    continue
                summaries.append(
                    ConversationSummary(
                        conversation_id=conversation_id,
                        message_count=int(count),
                        branch_count=int(branches),
                        last_activity=datetime.fromtimestamp(float(touched), timezone.utc),
                    )
                )
        return sorted(summaries, key=lambda row: row.last_activity, reverse=True)

    def users(self) -> list[str]:
        with self._translated("listing users"):
            users_key = self._index_key("users")
            if self.ttl_seconds:
                horizon = time.time() - self.ttl_seconds
                self._client.zremrangebyscore(users_key, "-inf", f"({horizon!r}")
            candidates = [_text(raw) for raw in self._client.zrange(users_key, 0, -1)]
            pipe = self._client.pipeline(transaction=False)
            for user_id in candidates:
                pipe.exists(self._user_index_key(user_id))
            alive = pipe.execute()
        return sorted(user for user, exists in zip(candidates, alive, strict=True) if exists)

    def delete(self, key: ConversationKey) -> bool:
        with self._translated("deleting a conversation", key):
            return self._delete_if(key, before=None)

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        purged = 0
        with self._translated("purging old conversations"):
            raw_pairs = self._client.zrangebyscore(self._index_key("convs"), "-inf", f"({cutoff!r}")
            for raw in raw_pairs:
                user_id, conversation_id = json.loads(_text(raw))
                key = ConversationKey(user_id, conversation_id)
                seen = self._client.hget(self._user_index_key(user_id), _bytes(conversation_id))
                if self._delete_if(key, before=cutoff, index_token=seen or b""):
                    purged += 1
        return purged

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"

    def _delete_if(
        self, key: ConversationKey, *, before: float | None, index_token: bytes | None = None
    ) -> bool:
        """Delete a conversation (only if idle since ``before``, when given); whether it did.

        A conversation that is gone but still indexed under ``index_token`` leaves the index.
        """
        meta_key = self._meta_key(key)
        with self._client.pipeline(transaction=True) as pipe:
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    pipe.watch(meta_key)
                    meta = pipe.hgetall(meta_key)
                    if not meta:
                        pipe.reset()
                        if index_token is not None:
                            self._remove_from_index(key, index_token)
                        return False
                    if before is not None and float(meta[b"touched"]) >= before:
                        pipe.reset()
                        return False
                    branches = int(meta[b"branches"])
                    pipe.multi()
                    pipe.delete(meta_key, self._active_key(key), *self._older_keys(key, branches))
                    pipe.execute()
                except self._errors.WatchError:
                    pipe.reset()
                    _back_off(attempt)
                    continue
                self._remove_from_index(key, meta[b"token"])
                return True
        raise StoreError(
            f"The Redis session store {self.url} could not delete a conversation: it kept "
            f"changing under {_MAX_ATTEMPTS} attempts; retry",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _add_to_index(self, key: ConversationKey, touched: float, token: bytes) -> None:
        self._index(
            keys=self._index_keys(key.user_id),
            args=[
                _bytes(key.user_id),
                _bytes(key.conversation_id),
                _pair(key),
                repr(touched),
                token,
                self.ttl_seconds,
                repr(touched - self.ttl_seconds),
            ],
        )

    def _remove_from_index(self, key: ConversationKey, token: bytes) -> None:
        self._unindex(
            keys=self._index_keys(key.user_id),
            args=[_bytes(key.user_id), _bytes(key.conversation_id), _pair(key), token],
        )

    def _meta_key(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(_pair(key))}}}:meta"

    def _active_key(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(_pair(key))}}}:active"

    def _branch_key(self, key: ConversationKey, branch: int) -> str:
        return f"{self.prefix}:{{{_digest(_pair(key))}}}:b:{branch}"

    def _older_keys(self, key: ConversationKey, branches: int) -> list[str]:
        return [self._branch_key(key, branch) for branch in range(branches - 1)]

    def _index_key(self, name: str) -> str:
        return f"{self.prefix}:{{idx}}:{name}"

    def _user_index_key(self, user_id: str) -> str:
        return self._index_key(f"user:{_digest(_bytes(user_id))}")

    def _index_keys(self, user_id: str) -> list[str]:
        return [self._index_key("users"), self._index_key("convs"), self._user_index_key(user_id)]

    @contextmanager
    def _translated(self, doing: str, key: ConversationKey | None = None) -> Iterator[None]:
        """The one place that turns redis-py errors into :class:`StoreError`."""
        try:
            yield
        except (self._errors.RedisError, self._errors.RedisClusterException) as exc:
            detail = str(exc)
            if self._password:
                detail = detail.replace(self._password, "***")
            where = f"The Redis session store {self.url} failed while {doing} ({detail})"
            unavailable, hint = self._hint(exc, detail)
            error = StoreUnavailable if unavailable else StoreError
            raise error(
                f"{where}: {hint}" if hint else where,
                store=self.url,
                conversation_id=key.conversation_id if key is not None else None,
            ) from exc
        except TypeError as exc:  # redis-py passes unknown URL parameters on to its connections
            raise _url_error(
                self.url, f"Redis does not know one of its parameters ({exc})"
            ) from exc

    def _hint(self, exc: Exception, detail: str) -> tuple[bool, str]:
        """Whether ``exc`` means Redis cannot be used at all, and what to check."""
        errors = self._errors
        if isinstance(exc, errors.AuthenticationError):
            return True, "check the user name and password in SESSION_STORE_URL"
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            return True, (
                "the server's TLS certificate is not trusted: add "
                "?ssl_ca_certs=/path/to/ca.pem to SESSION_STORE_URL"
            )
        if isinstance(exc, (errors.ConnectionError, errors.TimeoutError)) or (
            isinstance(exc, errors.RedisClusterException) and "connect" in detail
        ):
            return True, (
                "check that Redis is running and reachable at the host and port of "
                "SESSION_STORE_URL (and that rediss:// is used exactly when it expects TLS)"
            )
        for words, unavailable, hint in _RESPONSE_HINTS:
            if words in detail:
                return unavailable, hint
        return False, ""


def _back_off(attempt: int) -> None:
    """After a WATCH conflict: retry at once, then after short random pauses (no lockstep)."""
    if attempt:
        time.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _pair(key: ConversationKey) -> bytes:
    return _bytes(json.dumps([key.user_id, key.conversation_id], ensure_ascii=False))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _encode_message(message: Message) -> bytes:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.message_id is not None:
        data["id"] = message.message_id
    if message.partial:
        data["partial"] = True
    if message.created_at is not None:
        data["at"] = message.created_at
    return _bytes(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def _decode_message(raw: bytes) -> Message:
    data = json.loads(_text(raw))
    return Message(
        role=data["role"],
        content=data["content"],
        message_id=data.get("id"),
        partial=bool(data.get("partial", False)),
        created_at=data.get("at"),
    )


def _url_error(url: str, problem: str) -> ConfigError:
    return url_error(
        "Redis",
        url,
        problem,
        "redis://[:password@]host:6379/0 (or rediss:// for TLS), optionally with "
        "?ttl_days=N&prefix=NAME",
    )
