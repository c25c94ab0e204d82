"""LazyStore: the engine opened on first use, and the one breaker that rests an unreachable one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import StoreError, StoreUnavailable
from helix_pipeline.messages import Message
from helix_pipeline.stores import Branch, MemoryStore, RecordResult, lazy
from helix_pipeline.stores.lazy import LazyStore

KEY = ConversationKey("alice", "chat-1")
QUESTION = [Message("user", "q")]


class FlakyEngine(MemoryStore):
    """A memory store whose reads or writes fail as unreachable while ``down`` says so."""

    def __init__(self) -> None:
        super().__init__("memory://flaky")
        self.reads_down = False
        self.writes_down = False
        self.calls = 0

    def read(self, key: ConversationKey) -> Branch:
        self.calls += 1
        if self.reads_down:
            raise StoreUnavailable("the engine is unreachable", store=self.url)
        return super().read(key)

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        self.calls += 1
        if self.writes_down:
            raise StoreUnavailable("the disk is full", store=self.url)
        return super().record(key, messages, after=after, base=base)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(lazy.time, "monotonic", lambda: now[0])
    return now


class TestOpening:
    def test_the_engine_is_opened_on_first_use_only(self) -> None:
        opened: list[MemoryStore] = []
        store = LazyStore("memory://", lambda: opened.append(MemoryStore()) or opened[-1])
        assert opened == []
        store.record(KEY, QUESTION)
        store.read(KEY)
        assert len(opened) == 1

    def test_an_engine_that_fails_to_open_is_asked_again_only_after_the_rest(
        self, clock: list[float]
    ) -> None:
        attempts: list[int] = []

        def fail() -> MemoryStore:
            attempts.append(1)
            raise StoreError("cannot open", store="memory://")

        store = LazyStore("memory://", fail, retry_s=5)
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="cannot open"):
                store.read(KEY)
        assert len(attempts) == 1
        clock[0] += 5.1
        with pytest.raises(StoreUnavailable):
            store.read(KEY)
        assert len(attempts) == 2


class TestTheBreaker:
    def test_a_read_that_finds_the_engine_unreachable_rests_it(self, clock: list[float]) -> None:
        engine = FlakyEngine()
        store = LazyStore(engine.url, lambda: engine, retry_s=5)
        engine.reads_down = True
        with pytest.raises(StoreUnavailable):
            store.read(KEY)

        for call in (lambda: store.read(KEY), lambda: store.record(KEY, QUESTION)):
            with pytest.raises(StoreUnavailable, match="unreachable"):
                call()
        assert engine.calls == 1, "resting: nothing reached the engine"

        engine.reads_down = False
        clock[0] += 5.1
        store.record(KEY, QUESTION)
        assert [m.content for m in store.read(KEY).messages] == ["q"]

    def test_a_failed_write_does_not_rest_it(self, clock: list[float]) -> None:
        engine = FlakyEngine()
        store = LazyStore(engine.url, lambda: engine, retry_s=5)
        engine.writes_down = True
        with pytest.raises(StoreUnavailable, match="disk is full"):
            store.record(KEY, QUESTION)

        assert store.read(KEY) == Branch()
        assert engine.calls == 2
