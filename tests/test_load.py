"""Many chats at once: 16 concurrent chats of 50 turns each, once per store engine, in-process and
through the real Pipelines server. No turn is lost, none is stored twice, and the latency the
pipeline adds to Helix's own stays small.

"Added latency" is measured per turn: the whole Open WebUI turn (inlet, streamed answer, outlet)
minus a direct streamed request to FakeHelix with the same messages, made right after by the same
thread. Set ``HELIX_LOAD_REPORT=<file>`` to append the figures to that file as Markdown rows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui_transport import Chat, InProcess, Transport
from helix_pipeline.valves import HelixValves

from .pipelines_server import PipelinesServer, pipe_bundle_for
from .store_servers import ENGINES, store_url

CHATS = 16
TURNS = 50
PERSISTENT_ENGINES = [engine for engine in ENGINES if engine != "memory"]


@dataclass
class LoadResult:
    turns: int = 0
    added_s: list[float] = field(default_factory=list)
    turn_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chats: list[Chat] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def row(self, where: str, engine: str, lost: int, duplicated: int) -> str:
        ms = 1000
        return (
            f"| {where} | {engine} | {CHATS} x {TURNS} | {self.turns} | {lost} | {duplicated} | "
            f"{self.percentile(self.turn_s, 0.5) * ms:.1f} | "
            f"{self.percentile(self.added_s, 0.5) * ms:.1f} | "
            f"{self.percentile(self.added_s, 0.99) * ms:.1f} | {self.wall_s:.1f} |"
        )


def direct_turn(session: requests.Session, helix: FakeHelix, chat: Chat) -> float:
    """The same messages streamed straight from FakeHelix: the baseline of one turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in chat.messages[:-1]]
    started = time.perf_counter()
    with session.post(
        f"{helix.url}/v1/chat/completions",
        json={"model": "helix-consultant", "messages": messages, "stream": True},
        stream=True,
        timeout=30,
    ) as response:
        for _ in response.iter_content(chunk_size=None):
            pass
    return time.perf_counter() - started


def run_load(helix: FakeHelix, transport: Transport) -> LoadResult:
    result = LoadResult()
    lock = threading.Lock()
    start = threading.Barrier(CHATS)

    def one_chat(number: int) -> None:
        chat = Chat(transport, user={"id": f"load-user-{number % 4}", "name": "L"})
        session = requests.Session()
        with lock:
            result.chats.append(chat)
        start.wait()
        try:
            for turn in range(TURNS):
                started = time.perf_counter()
                shown = chat.turn(f"chat {number} turn {turn}")
                took = time.perf_counter() - started
                baseline = direct_turn(session, helix, chat)
                with lock:
                    result.turns += 1
                    result.turn_s.append(took)
                    result.added_s.append(took - baseline)
                    if "Helix reply" not in shown.content:
                        result.errors.append(shown.content[:200])
        except Exception as exc:  # a thread that dies must fail the test, not vanish
            with lock:
                result.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            session.close()

    threads = [threading.Thread(target=one_chat, args=(n,)) for n in range(CHATS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    result.wall_s = time.perf_counter() - began
    return result


def lost_and_duplicated(url: str, chats: list[Chat]) -> tuple[int, int]:
    """Turns missing from the store, and messages stored more than once, over every chat."""
    store = open_store(url)
    lost = duplicated = 0
    try:
        for chat in chats:
            stored = store.load(ConversationKey(chat.user["id"], chat.chat_id))
            expected = [m["content"] for m in chat.messages if m["role"] == "user"]
            users = [m.content for m in stored if m.role == "user"]
            lost += len(set(expected) - set(users))
            duplicated += len(users) - len(set(users))
            assistants = [m for m in stored if m.role == "assistant"]
            lost += max(0, len(expected) - len(assistants))
            duplicated += max(0, len(assistants) - len(expected))
            assert users == expected[: len(users)] or lost, "turns stored out of order"
    finally:
        store.close()
    return lost, duplicated


def report(row: str) -> None:
    target = os.environ.get("HELIX_LOAD_REPORT")
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(row + "\n")


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as server:
        yield server


def check(result: LoadResult, url: str, where: str, engine: str) -> None:
    assert not result.errors, result.errors[:3]
    assert result.turns == CHATS * TURNS
    lost, duplicated = lost_and_duplicated(url, result.chats)
    report(result.row(where, engine, lost, duplicated))
    assert (lost, duplicated) == (0, 0)


class TestConcurrentChats:
    # memory:// is left out: each open_store("memory://") is a new, empty store, so what the pipe
    # recorded could not be read back; it is the reference the contract suite checks the others by.
    @pytest.mark.parametrize("engine", PERSISTENT_ENGINES)
    def test_sixteen_chats_of_fifty_turns_in_process_lose_and_duplicate_nothing(
        self,
        helix: FakeHelix,
        engine: str,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        url = store_url(engine, tmp_path, request)
        valves = HelixValves(HELIX_BASE_URL=helix.url, SESSION_STORE_URL=url)
        pipe = HelixPipe(lambda: valves)
        try:
            result = run_load(helix, InProcess(pipe))
        finally:
            pipe.shutdown()
        check(result, url, "in-process", engine)

    @pytest.mark.slow
    @pytest.mark.integration
    @pytest.mark.parametrize("engine", PERSISTENT_ENGINES)
    def test_sixteen_chats_of_fifty_turns_through_the_pipelines_server(
        self,
        helix: FakeHelix,
        engine: str,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        if engine != "sqlite" and os.environ.get("HELIX_LOAD_ALL_ENGINES") != "1":
            pytest.skip(
                "through the server only SQLite (the default) runs in CI, ~20 s; the in-process "
                "run covers every engine; set HELIX_LOAD_ALL_ENGINES=1 for the others"
            )
        url = store_url(engine, tmp_path, request)
        env = {"HELIX_BASE_URL": helix.url, "SESSION_STORE_URL": url}
        pipe = pipe_bundle_for(url, tmp_path / "bundle")
        with PipelinesServer(tmp_path / "server", [pipe], env=env) as server:
            mark = server.log_mark()
            result = run_load(helix, server.http)
            assert server.tracebacks(mark) == 0
        check(result, url, "Pipelines server", engine)
