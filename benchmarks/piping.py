"""Driving :class:`HelixPipe` the way the Pipelines server does, timed against the same turn sent
straight to Helix; and FakeHelix in a process of its own (``python benchmarks/piping.py WORDS``
serves until its stdin closes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from _shared import SUB_MODEL, Turn, median, percentile, text

from helix_pipeline.pipe import HelixPipe, shown_text
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui import pipe_arguments

HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
HOLD_PAUSE_S = 0.002
"""How long the chunk-latency probe waits before releasing FakeHelix (it must be waiting by then)."""


@dataclass
class Pairs:
    """Timings of the same turns, direct (a) and through the pipe (b), in seconds."""

    direct: list[float] = field(default_factory=list)
    piped: list[float] = field(default_factory=list)

    def add(self, direct: float, piped: float) -> None:
        self.direct.append(direct)
        self.piped.append(piped)

    def row(self, name: str) -> list[object]:
        added = [(b - a) * 1000 for a, b in zip(self.direct, self.piped, strict=True)]
        return [
            name,
            len(added),
            median(self.direct) * 1000,
            median(self.piped) * 1000,
            percentile(added, 50),
            percentile(added, 99),
            median(self.piped) / median(self.direct) if self.direct else float("nan"),
        ]


@dataclass
class Phases:
    """Where the pipe's time goes, per hook (seconds)."""

    inlet: list[float] = field(default_factory=list)
    pipe: list[float] = field(default_factory=list)
    helix: list[float] = field(default_factory=list)
    """Inside ``HelixClient.complete``: the request, Helix's answer and its parsing, as (a) does."""
    outlet: list[float] = field(default_factory=list)

    def own(self) -> list[float]:
        """The pipe's own time per turn: the three hooks without the exchange with Helix."""
        return [
            i + p - h + o
            for i, p, h, o in zip(self.inlet, self.pipe, self.helix, self.outlet, strict=True)
        ]


class Bench:
    def __init__(self, helix_url: str, pipe: HelixPipe, answer: str) -> None:
        self.answer = answer
        self.pipe = pipe
        self.session = requests.Session()
        self.url = f"{helix_url}/v1/chat/completions"
        self.phases = Phases()
        self._time_helix_calls()

    def _time_helix_calls(self) -> None:
        """Wrap the pipe's client so that each non-streaming exchange with Helix is timed."""
        client = self.pipe._parts.get().client
        complete = client.complete

        def timed(payload: Mapping[str, Any], *, conversation_id: str | None) -> dict[str, Any]:
            start = time.perf_counter()
            try:
                return complete(payload, conversation_id=conversation_id)
            finally:
                self.phases.helix.append(time.perf_counter() - start)

        client.complete = timed  # type: ignore[method-assign]

    # -- (a): straight to Helix ------------------------------------------------------------------

    @staticmethod
    def _request(played: Turn, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The same turn as an OpenAI client sends it to Helix: the whole chat, role/content."""
        chat, turn = played
        messages = chat.inlet_body(turn)["messages"]
        payload = {"model": SUB_MODEL, "messages": messages, "stream": stream}
        return payload, dict.fromkeys(HEADERS, chat.chat_id)

    def direct_complete(self, turn: Turn) -> float:
        payload, headers = self._request(turn, stream=False)
        start = time.perf_counter()
        with self.session.post(self.url, json=payload, headers=headers) as response:
            response.raise_for_status()
            reply = response.json()["choices"][0]["message"]["content"]
        elapsed = time.perf_counter() - start
        assert reply
        return elapsed

    def direct_stream(self, turn: Turn) -> Iterator[str]:
        payload, headers = self._request(turn, stream=True)
        return self._direct_chunks(payload, headers)

    def time_direct_stream(self, turn: Turn) -> tuple[float, float, float, str]:
        payload, headers = self._request(turn, stream=True)
        return self.time_stream(lambda: self._direct_chunks(payload, headers))

    def _direct_chunks(self, payload: dict[str, Any], headers: dict[str, str]) -> Iterator[str]:
        with self.session.post(self.url, json=payload, headers=headers, stream=True) as response:
            response.raise_for_status()
            for line in response.iter_lines(chunk_size=None):
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    return
                content = json.loads(data)["choices"][0]["delta"]["content"]
                if content:
                    yield content

    # -- (b): through the pipe, as the Pipelines server calls it ---------------------------------

    def _inlet(self, played: Turn) -> dict[str, Any]:
        """The inlet, timed; then ``pipe()``'s arguments for what it returned (not timed)."""
        chat, turn = played
        inlet_body = chat.inlet_body(turn)
        start = time.perf_counter()
        result: dict[str, Any] = self.pipe.inlet(inlet_body, chat.user)
        self.phases.inlet.append(time.perf_counter() - start)
        return pipe_arguments(chat.pipe_body(result))

    def _outlet(self, played: Turn, reply: str) -> float:
        chat, turn = played
        chat.finish_turn(turn, reply)
        outlet_body = chat.outlet_body(turn)
        start = time.perf_counter()
        self.pipe.outlet(outlet_body, chat.user)
        elapsed = time.perf_counter() - start
        self.phases.outlet.append(elapsed)
        return elapsed

    def piped_complete(self, turn: Turn) -> float:
        arguments = self._inlet(turn)
        start = time.perf_counter()
        reply = self.pipe.pipe(**arguments)
        elapsed = time.perf_counter() - start
        self.phases.pipe.append(elapsed)
        assert reply == self.answer, reply
        return self.phases.inlet[-1] + elapsed + self._outlet(turn, reply)

    def piped_stream(self, turn: Turn) -> Iterator[str]:
        result = self.pipe.pipe(**self._inlet(turn))
        assert not isinstance(result, str), result
        yield from result

    # -- timing a stream -------------------------------------------------------------------------

    @staticmethod
    def time_stream(chunks: Callable[[], Iterator[str]]) -> tuple[float, float, float, str]:
        """Seconds to the first chunk, to the last, and to the end; and the whole text."""
        start = time.perf_counter()
        first = last = 0.0
        parts: list[str] = []
        for chunk in chunks():
            last = time.perf_counter()
            if not parts:
                first = last
            parts.append(chunk)
        end = time.perf_counter()
        return first - start, last - start, end - start, shown_text(parts)

    @staticmethod
    def chunk_latency(helix: FakeHelix, chunks: Callable[[], Iterator[str]]) -> float:
        """Seconds from FakeHelix releasing the held second chunk to the caller receiving it."""
        hold = threading.Event()
        helix.hold = hold
        try:
            stream = chunks()
            next(stream)  # the status chunk; FakeHelix now waits for ``hold``
            time.sleep(HOLD_PAUSE_S)
            released = time.perf_counter()
            hold.set()
            next(stream)
            received = time.perf_counter()
            for _ in stream:
                pass
        finally:
            helix.hold = None
        return received - released


@contextmanager
def fake_helix_process(words: int) -> Iterator[str]:
    """FakeHelix in a process of its own (as Helix is), so that it never holds our GIL; every
    answer is :func:`text` ``(7, words)``."""
    command = [sys.executable, __file__, str(words)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("FakeHelix did not start in its own process")
        try:
            yield url
        finally:
            child.stdin.close()  # the child serves until its stdin closes
            child.wait(timeout=10)


def serve_fake(words: int) -> None:
    """The child of :func:`fake_helix_process`: serve, print the URL, stop when stdin closes."""
    answer = text(7, words)
    with FakeHelix(reply=lambda _messages: answer) as helix:
        print(helix.url, flush=True)
        sys.stdin.read()


def time_piped_stream(bench: Bench, turn: Turn) -> tuple[float, float, float, str]:
    """The stream through the pipe: inlet time plus pipe() to each point; ``end`` adds the outlet.

    Building the bodies (the Pipelines server's work, not ours) stays outside the clock.
    """
    arguments = bench._inlet(turn)
    inlet = bench.phases.inlet[-1]
    start = time.perf_counter()
    result = bench.pipe.pipe(**arguments)
    assert not isinstance(result, str), result
    first = last = 0.0
    parts: list[str] = []
    for chunk in result:
        last = time.perf_counter()
        if not parts:
            first = last
        parts.append(chunk)
    end = time.perf_counter()
    reply = shown_text(parts)
    outlet = bench._outlet(turn, reply)
    return inlet + first - start, inlet + last - start, inlet + end - start + outlet, reply


if __name__ == "__main__":
    serve_fake(int(sys.argv[1]))
