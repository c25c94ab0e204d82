"""A store that opens its engine on first use, and rests it after finding it unreachable.

The Pipelines server instantiates pipelines at load time, where an exception moves the file to
``failed/``. Opening the real engine lazily keeps loading free of I/O, and lets a store that was
down at startup (a read-only folder, a Redis not yet up) recover by itself.

It is also the one circuit breaker between the pipelines and their store: after a failed open, or
a read that found the engine unreachable, every call fails at once with that error for
``retry_s`` seconds, so that a down engine costs one timeout, not one per store call of every turn.
(A failed write does not rest it: a full disk fails writes that reads survive.) Open WebUI resends
the whole chat, so turns answered meanwhile are recorded by the first turn after the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from .base import Branch, ConversationSummary, RecordResult, SessionStore

__all__ = ["RETRY_OPEN_S", "LazyStore"]

RETRY_OPEN_S = 5.0
"""Seconds a store found unreachable is left alone before it is asked again (the default
``retry_s``)."""

T = TypeVar("T")


class LazyStore:
    """Opens ``open_engine()`` when first needed; rests ``retry_s`` after finding it unreachable."""

    def __init__(
        self, url: str, open_engine: Callable[[], SessionStore], *, retry_s: float | None = None
    ) -> None:
        self.url = url
        self._open_engine = open_engine
        self._retry_s = RETRY_OPEN_S if retry_s is None else retry_s
        self._engine: SessionStore | None = None
        self._failure: StoreUnavailable | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def engine(self) -> SessionStore:
        """The open engine, opening it now if needed; raises the failure that rests it."""
        failure = self._failure
        if failure is not None and time.monotonic() - self._failed_at < self._retry_s:
            raise failure
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is not None:
                return self._engine
            try:
                self._engine = self._open_engine()
            except (StoreError, ConfigError) as exc:
                failure = StoreUnavailable(str(exc), store=self.url)
                self._rest(failure)
                raise failure from exc
            self._failure = None
            return self._engine

    def _reading(self, read: Callable[[SessionStore], T]) -> T:
        """Run a read on the engine; an unreachable engine rests."""
        try:
            return read(self.engine())
        except StoreUnavailable as exc:
            if exc is not self._failure:
                self._rest(exc)
            raise

    def _rest(self, failure: StoreUnavailable) -> None:
        self._failure, self._failed_at = failure, time.monotonic()

    def load(self, key: ConversationKey) -> list[Message]:
        return self._reading(lambda engine: engine.load(key))

    def read(self, key: ConversationKey) -> Branch:
        return self._reading(lambda engine: engine.read(key))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        return self.engine().record(key, messages, after=after, base=base)

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        return self._reading(lambda engine: engine.branches(key))

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        return self._reading(lambda engine: engine.conversations(user_id))

    def users(self) -> list[str]:
        return self._reading(lambda engine: engine.users())

    def delete(self, key: ConversationKey) -> bool:
        return self.engine().delete(key)

    def purge(self, before: datetime) -> int:
        return self.engine().purge(before)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
