"""A store that opens its engine on first use and again after a failure to open.

The Pipelines server instantiates pipelines at load time, where an exception moves the file to
``failed/``. Opening the real engine lazily keeps loading free of I/O, and lets a store that was
down at startup (a read-only folder, a Redis not yet up) recover by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from .base import ConversationSummary, RecordResult, SessionStore

__all__ = ["RETRY_OPEN_S", "LazyStore"]

RETRY_OPEN_S = 5.0
"""Seconds a store found unreachable is left alone before it is asked again: a failed open here
(the default ``retry_s``), and a failed call in :class:`~helix_pipeline.service.HistoryService`."""


class LazyStore:
    """Opens ``open_engine()`` when first needed; after a failed open, waits ``retry_s`` to retry."""

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
        """The open engine, opening it now if needed (raises the opening error, remembered briefly)."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is not None:
                return self._engine
            if self._failure is not None and time.monotonic() - self._failed_at < self._retry_s:
                raise self._failure
            try:
                self._engine = self._open_engine()
            except (StoreError, ConfigError) as exc:
                failure = StoreUnavailable(str(exc), store=self.url)
                self._failure, self._failed_at = failure, time.monotonic()
                raise failure from exc
            self._failure = None
            return self._engine

    def load(self, key: ConversationKey) -> list[Message]:
        return self.engine().load(key)

    def record(
        self, key: ConversationKey, messages: Sequence[Message], *, after: int | None = None
    ) -> RecordResult:
        return self.engine().record(key, messages, after=after)

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        return self.engine().branches(key)

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        return self.engine().conversations(user_id)

    def users(self) -> list[str]:
        return self.engine().users()

    def delete(self, key: ConversationKey) -> bool:
        return self.engine().delete(key)

    def purge(self, before: datetime) -> int:
        return self.engine().purge(before)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
