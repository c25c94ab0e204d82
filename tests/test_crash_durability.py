"""A process recording turns is killed with SIGKILL at random points: the SQLite store always
opens cleanly afterwards and keeps every turn whose ``record()`` had returned.

A single-threaded helper process imports the package once and forks a writer per round (so 50
rounds take a few seconds, not 50 interpreter start-ups). The writer records Open WebUI-style turns
through :class:`HistoryService` and reports each finished turn on stdout with an unbuffered write;
the test kills it once it has reported a (seeded) random number of turns, 0 to 3, plus up to 10 ms
so that the kill lands anywhere in the turn being written, then checks the database. What is
checked never depends on how fast the machine is: only on the turns the writer reported.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.stores.sqlite import SQLiteStore

ROUNDS = 50
MAX_TURNS_BEFORE_KILL = 3
MAX_JITTER_S = 0.01
SILENCE_S = 60.0
CHATS = ("chat-a", "chat-b", "chat-c")
USERS = ("user-1", "user-2")

WRITER = r"""
import os, sys
from helix_pipeline.conversation import ChatKind, Conversation
from helix_pipeline.messages import Message
from helix_pipeline.service import HistoryService
from helix_pipeline.stores.sqlite import SQLiteStore

path = sys.argv[1]
chats = [(user, chat) for user in ("user-1", "user-2") for chat in ("chat-a", "chat-b", "chat-c")]


def say(line):
    os.write(1, (line + "\n").encode())


def write_forever(round_no):
    service = HistoryService(SQLiteStore(path, busy_timeout=5))
    turn_no = 0
    while True:
        user, chat = chats[turn_no % len(chats)]
        conversation = Conversation(ChatKind.SAVED, user, chat, chat_id=chat)
        history = service.store.load(conversation.key)
        text = f"r{round_no}-t{turn_no}"
        incoming = [*history, Message("user", f"question {text}")]
        turn = service.prepare(conversation, incoming)
        if service.record(turn, f"answer {text} " + "x" * (turn_no % 7) * 300):
            say(f"done {user} {chat} {text}")
        turn_no += 1


for line in sys.stdin:
    round_no = int(line)
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(round_no)
        finally:
            os._exit(1)
    say(f"pid {pid}")
    os.waitpid(pid, 0)
    say(f"reaped {round_no}")
"""


class Helper:
    """The forking helper process and a thread that reads its lines."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=SILENCE_S)
        except queue.Empty:
            assert self.process.stderr is not None
            self.process.kill()
            message = f"the writer fell silent: {self.process.stderr.read()[-2000:]}"
            raise AssertionError(message) from None

    def round(self, number: int, turns: int, jitter: float) -> list[tuple[str, str, str]]:
        """Start a writer; once it has reported ``turns`` recorded turns, wait ``jitter`` s (so
        the kill lands anywhere in the turn being written) and kill it. The turns it recorded."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{number}\n")
        self.process.stdin.flush()
        first = self.next_line()
        assert first.startswith("pid "), first
        finished: list[tuple[str, str, str]] = []
        while len(finished) < turns:
            finished.append(self._done(self.next_line()))
        time.sleep(jitter)
        os.kill(int(first.split()[1]), signal.SIGKILL)
        while (line := self.next_line()) != f"reaped {number}":
            finished.append(self._done(line))
        return finished

    def _done(self, line: str) -> tuple[str, str, str]:
        """A ``done USER CHAT TEXT`` line; anything else means the writer stopped by itself."""
        if not line.startswith("done "):
            assert self.process.stderr is not None
            self.process.kill()
            raise AssertionError(f"the writer stopped: {line} {self.process.stderr.read()[-2000:]}")
        _, user, chat, text = line.split()
        return user, chat, text

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[tuple[Helper, Path]]:
    path = tmp_path / "sessions.db"
    running = Helper(path)
    try:
        yield running, path
    finally:
        running.close()


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


class TestKilledWriter:
    def test_every_recorded_turn_survives_fifty_sigkills_and_the_file_stays_sound(
        self, helper: tuple[Helper, Path]
    ) -> None:
        running, path = helper
        rng = random.Random(7)
        recorded: dict[tuple[str, str], list[str]] = {}
        awaited = 0
        for number in range(ROUNDS):
            turns = rng.randint(0, MAX_TURNS_BEFORE_KILL)
            finished = running.round(number, turns, rng.uniform(0, MAX_JITTER_S))
            assert len(finished) >= turns
            awaited += turns
            for user, chat, text in finished:
                recorded.setdefault((user, chat), []).append(text)
            if not path.exists():  # killed before the store even created the file
                continue
            assert integrity(path) == "ok", f"round {number}"
            store = SQLiteStore(path)
            try:
                for (user, chat), texts in recorded.items():
                    stored = [m.content for m in store.load(ConversationKey(user, chat))]
                    questions = [c.removeprefix("question ") for c in stored if c.startswith("q")]
                    missing = [t for t in texts if t not in questions]
                    assert not missing, f"round {number}: turns lost in {chat}: {missing}"
                    assert len(questions) == len(set(questions)), "a turn was stored twice"
            finally:
                store.close()
        total = sum(len(texts) for texts in recorded.values())
        assert total >= awaited >= ROUNDS, "too few turns were recorded to test anything"
