"""The Redis store (``redis://`` or ``rediss://``; needs ``pip install helix-pipeline[redis]``).

Keys are laid out in :mod:`.redis_keys`; all of one conversation share a hash tag, so a turn is
one ``WATCH``/``MULTI`` transaction (retried on conflict) that also works on Redis Cluster.
Reading the active branch with its version is one ``MULTI`` (``HMGET``, ``LRANGE``); a record
given that branch (``base``) checks the version in the meta hash and appends without reading the
list again. The index keys change through Lua scripts after the conversation's own transaction:
it may briefly list a conversation that is gone (skipped and cleaned up when read), and a process
killed between the two leaves a conversation unlisted until its next turn or expiry. Keys expire
``ttl_days`` after the last change (``0`` keeps them). Needs Redis 6.2 or newer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ..conversation import ConversationKey
from ..errors import StoreError
from ..messages import Message
from ..urls import redact_url
from .base import Branch, ConversationSummary, RecordPlan, RecordResult, applied, plan_record
from .redis_keys import (
    INDEX_SCRIPT,
    UNINDEX_SCRIPT,
    VERSION_FIELDS,
    Keys,
    decode_message,
    encode_message,
    pair,
    to_bytes,
    to_text,
    version_of,
)
from .redis_setup import back_off, failure, import_redis, url_error, url_options

__all__ = ["DEFAULT_TTL_DAYS", "RedisStore"]

DEFAULT_TTL_DAYS = 0.0
"""Days a conversation is kept after its last change: 0, forever, unless ``ttl_days`` says otherwise."""

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
_MAX_ATTEMPTS = 50


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
        """Connect to the Redis server at ``url`` (no ``ttl_days``/``prefix`` in its query);
        ``cluster=True`` for a Redis Cluster, ``url`` naming any node; ``display_url`` to show.

        Raises :class:`ConfigError` when the redis package is missing or a setting is invalid,
        :class:`StoreUnavailable` when the server cannot be reached.
        """
        if not ttl_days >= 0 or ttl_days == float("inf"):
            raise url_error(url, "ttl_days must be a number of days, 0 (keep forever) or more")
        if not prefix or any(c in prefix for c in "{}"):
            raise url_error(url, "prefix must be a non-empty string without { or }")
        redis = import_redis()
        self.url = redact_url(display_url or url)
        self.ttl_seconds = round(ttl_days * 86_400)
        self.prefix = prefix
        self.keys = Keys(prefix)
        """The names of this store's keys."""
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
                raise url_error(url, f"redis-py cannot use it ({exc})") from exc
        self._index = self._client.register_script(INDEX_SCRIPT)
        self._unindex = self._client.register_script(UNINDEX_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, ttl_days: float | None = None) -> RedisStore:
        """Open ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS).

        Query parameters of our own: ``ttl_days`` (default: the ``ttl_days`` argument, which the
        pipelines set from ``SESSION_TTL_DAYS``, else ``0`` = never expire),
        ``prefix`` (default ``helix``) and ``cluster`` (``true`` for Redis Cluster); any other
        is passed on to redis-py.
        """
        plain, options = url_options(url, ttl_days)
        return cls(plain, display_url=url, **options)

    def load(self, key: ConversationKey) -> list[Message]:
        with self._translated("loading a conversation", key):
            raw = self._client.lrange(self.keys.active(key), 0, -1)
        return [decode_message(item) for item in raw]

    def read(self, key: ConversationKey) -> Branch:
        # One round trip, the version read first: a write in between makes it older than the
        # list, which a record given this branch then finds moved, and reads again.
        with self._translated("loading a conversation", key):
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(self.keys.meta(key), VERSION_FIELDS)
            pipe.lrange(self.keys.active(key), 0, -1)
            fields, raw = pipe.execute()
        return Branch(tuple(map(decode_message, raw)), version_of(*fields))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        with (
            self._translated("recording a turn", key),
            self._client.pipeline(transaction=True) as pipe,
        ):
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    result, indexed = self._record_once(pipe, key, messages, after, base)
                except self._errors.WatchError:
                    pipe.reset()
                    back_off(attempt)
                    continue
                if indexed is not None:
                    self._add_to_index(key, *indexed)
                return result
        raise StoreError(
            f"The Redis session store {self.url} could not record a turn: the conversation kept "
            f"changing under {_MAX_ATTEMPTS} attempts; retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _record_once(
        self,
        pipe: Any,
        key: ConversationKey,
        messages: Sequence[Message],
        after: int | None,
        base: Branch | None,
    ) -> tuple[RecordResult, tuple[float, bytes] | None]:
        """One attempt under ``WATCH``: the result, and the last activity and token to index
        (``None`` if nothing changed). Raises ``WatchError`` if another writer came in between."""
        meta_key = self.keys.meta(key)
        pipe.watch(meta_key)
        meta = pipe.hgetall(meta_key)
        version = version_of(*(meta.get(name.encode()) for name in VERSION_FIELDS))
        branches = int(meta[b"branches"]) if meta else 0
        if base is not None and base.version == version:
            active: Sequence[Message] = base.messages
        elif branches:
            active = [decode_message(raw) for raw in pipe.lrange(self.keys.active(key), 0, -1)]
        else:
            active = ()
        plan = plan_record(active, messages, after)
        if not plan.changes_anything:
            pipe.reset()
            unchanged = Branch(tuple(active), version)
            return RecordResult(max(branches - 1, 0), 0, 0, False, active=unchanged), None
        now = time.time()
        stamped = plan.stamped(now)
        previous = float(meta[b"touched"]) if b"touched" in meta else None
        touched = plan.last_activity(now, previous)
        new = applied(active, plan, stamped)
        branches = branches + 1 if plan.fork_at is not None else max(branches, 1)
        fields: dict[str, Any] = {
            "user": to_bytes(key.user_id),
            "conversation": to_bytes(key.conversation_id),
            "branches": branches,
            "count": len(new),
            "touched": repr(touched),
            "token": meta.get(b"token") or uuid.uuid4().hex.encode(),
            "rev": int(meta.get(b"rev", 0)) + 1,
        }
        pipe.multi()
        self._queue_changes(pipe, key, plan, new=new, appended=len(stamped), branches=branches)
        pipe.hset(meta_key, mapping=fields)
        if self.ttl_seconds:
            # Counted from the last activity, which an import may have set in the past.
            expires_ms = round((touched + self.ttl_seconds) * 1000)
            for name in (meta_key, self.keys.active(key), *self.keys.older(key, branches)):
                pipe.pexpireat(name, expires_ms)
        pipe.execute()
        version = version_of(*(fields[name] for name in VERSION_FIELDS))
        result = RecordResult(
            branch=branches - 1,
            appended=len(stamped),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
            active=Branch(new, version),
        )
        return result, (touched, fields["token"])

    def _queue_changes(
        self,
        pipe: Any,
        key: ConversationKey,
        plan: RecordPlan,
        *,
        new: Sequence[Message],
        appended: int,
        branches: int,
    ) -> None:
        """Queue the list changes that make ``new`` the active branch (``branches`` in all)."""
        active_key = self.keys.active(key)
        for position, _message_id in plan.attach:
            pipe.lset(active_key, position, encode_message(new[position]))
        if plan.fork_at is not None:
            # Not pipe.rename(): redis-py blocks that name in cluster pipelines, as keys may be
            # in two slots; ours share one hash tag.
            pipe.execute_command("RENAME", active_key, self.keys.branch(key, branches - 2))
            pipe.rpush(active_key, *map(encode_message, new))
        elif appended:
            pipe.rpush(active_key, *map(encode_message, new[len(new) - appended :]))

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        meta_key = self.keys.meta(key)
        with self._translated("loading the branches of a conversation", key):
            count = int(self._client.hget(meta_key, "branches") or 0)
            for attempt in range(_MAX_ATTEMPTS):
                if not count:
                    return []
                pipe = self._client.pipeline(transaction=True)
                pipe.hget(meta_key, "branches")
                for name in (*self.keys.older(key, count), self.keys.active(key)):
                    pipe.lrange(name, 0, -1)
                now_count, *lists = pipe.execute()
                if int(now_count or 0) == count:
                    return [[decode_message(item) for item in raw] for raw in lists]
                count = int(now_count or 0)  # a fork or a delete came in between: read again
                back_off(attempt)
        raise StoreError(
            f"The Redis session store {self.url} could not read the branches of a conversation: "
            f"it kept changing under {_MAX_ATTEMPTS} attempts; retry",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._translated("listing conversations"):
            tokens = self._client.hgetall(self.keys.user_index(user_id))
            ids = [to_text(raw) for raw in tokens]
            pipe = self._client.pipeline(transaction=False)
            for conversation_id in ids:
                key = ConversationKey(user_id, conversation_id)
                pipe.hmget(self.keys.meta(key), ["count", "branches", "touched"])
            metas = pipe.execute()
            summaries: list[ConversationSummary] = []
            for conversation_id, (count, branches, touched) in zip(ids, metas, strict=True):
                if touched is None:
                    self._remove_from_index(
                        ConversationKey(user_id, conversation_id),
                        tokens[to_bytes(conversation_id)],
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
            users_key = self.keys.index("users")
            if self.ttl_seconds:
                horizon = time.time() - self.ttl_seconds
                self._client.zremrangebyscore(users_key, "-inf", f"({horizon!r}")
            candidates = [to_text(raw) for raw in self._client.zrange(users_key, 0, -1)]
            pipe = self._client.pipeline(transaction=False)
            for user_id in candidates:
                pipe.exists(self.keys.user_index(user_id))
            alive = pipe.execute()
        return sorted(user for user, exists in zip(candidates, alive, strict=True) if exists)

    def delete(self, key: ConversationKey) -> bool:
        with self._translated("deleting a conversation", key):
            return self._delete_if(key, before=None)

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        purged = 0
        with self._translated("purging old conversations"):
            raw_pairs = self._client.zrangebyscore(self.keys.index("convs"), "-inf", f"({cutoff!r}")
            for raw in raw_pairs:
                user_id, conversation_id = json.loads(to_text(raw))
                key = ConversationKey(user_id, conversation_id)
                seen = self._client.hget(self.keys.user_index(user_id), to_bytes(conversation_id))
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
        meta_key = self.keys.meta(key)
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
                    pipe.delete(meta_key, self.keys.active(key), *self.keys.older(key, branches))
                    pipe.execute()
                except self._errors.WatchError:
                    pipe.reset()
                    back_off(attempt)
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
            keys=self.keys.indexes(key.user_id),
            args=[
                to_bytes(key.user_id),
                to_bytes(key.conversation_id),
                pair(key),
                repr(touched),
                token,
                self.ttl_seconds,
                repr(touched - self.ttl_seconds),
            ],
        )

    def _remove_from_index(self, key: ConversationKey, token: bytes) -> None:
        self._unindex(
            keys=self.keys.indexes(key.user_id),
            args=[to_bytes(key.user_id), to_bytes(key.conversation_id), pair(key), token],
        )

    @contextmanager
    def _translated(self, doing: str, key: ConversationKey | None = None) -> Iterator[None]:
        """The one place that turns redis-py errors into :class:`StoreError`."""
        try:
            yield
        except (self._errors.RedisError, self._errors.RedisClusterException) as exc:
            raise failure(
                self._errors, exc, url=self.url, password=self._password, doing=doing, key=key
            ) from exc
        except TypeError as exc:  # redis-py passes unknown URL parameters on to its connections
            raise url_error(self.url, f"Redis does not know one of its parameters ({exc})") from exc
