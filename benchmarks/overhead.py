"""What helix-pipeline adds to a chat turn: the same turns straight to Helix, and through the pipe.

(a) ``requests`` posts each turn's messages straight to FakeHelix (one kept-alive session);
(b) the turn goes through :class:`HelixPipe` the way the Pipelines server calls it: ``inlet``, then
``pipe`` (the Open WebUI 0.12.4 body, ~25 KB of tool specs included), then ``outlet``, with the
SQLite store pre-filled with ``--conversations`` conversations of ``--messages`` messages. The turns
alternate between (a) and (b), and the table shows what (b) adds to (a), turn by turn.

Streaming turns are timed to the first content chunk, the last chunk and the end (outlet included).
The chunk latency row isolates the pipe's own delay per chunk: FakeHelix holds the stream after its
first chunk, the benchmark releases it, and times how long the next chunk takes to reach the caller.

    python benchmarks/overhead.py                      # 10,000 x 50 stored, 300 turns of each kind
    python benchmarks/overhead.py --conversations 1000 --turns 50   # a quick run
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests
from _shared import (
    SUB_MODEL,
    OpenWebUITurn,
    history,
    machine,
    median,
    package_logging,
    percentile,
    seed,
    table,
    text,
)

from helix_pipeline import testing
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.sse import iter_deltas
from helix_pipeline.stores.sqlite import SQLiteStore
from helix_pipeline.testing import FakeHelix
from helix_pipeline.valves import HelixValves

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
    def _request(turn: OpenWebUITurn, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        payload = {"model": SUB_MODEL, "messages": turn.wire_messages(), "stream": stream}
        return payload, dict.fromkeys(HEADERS, turn.chat_id)

    def direct_complete(self, turn: OpenWebUITurn) -> float:
        payload, headers = self._request(turn, stream=False)
        start = time.perf_counter()
        with self.session.post(self.url, json=payload, headers=headers) as response:
            response.raise_for_status()
            reply = response.json()["choices"][0]["message"]["content"]
        elapsed = time.perf_counter() - start
        assert reply
        return elapsed

    def direct_stream(self, turn: OpenWebUITurn) -> Iterator[str]:
        payload, headers = self._request(turn, stream=True)
        return self._direct_chunks(payload, headers)

    def time_direct_stream(self, turn: OpenWebUITurn) -> tuple[float, float, float, str]:
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

    def _inlet(self, turn: OpenWebUITurn) -> dict[str, Any]:
        inlet_body = turn.inlet_body()
        start = time.perf_counter()
        result: dict[str, Any] = self.pipe.inlet(inlet_body, turn.user)
        self.phases.inlet.append(time.perf_counter() - start)
        return turn.pipe_body(result)

    def _outlet(self, turn: OpenWebUITurn, reply: str) -> float:
        outlet_body = turn.outlet_body(reply)
        start = time.perf_counter()
        self.pipe.outlet(outlet_body, turn.user)
        elapsed = time.perf_counter() - start
        self.phases.outlet.append(elapsed)
        return elapsed

    def piped_complete(self, turn: OpenWebUITurn) -> float:
        body = self._inlet(turn)
        start = time.perf_counter()
        reply = self.pipe.pipe(turn.question, SUB_MODEL, body["messages"], body)
        elapsed = time.perf_counter() - start
        self.phases.pipe.append(elapsed)
        assert reply == self.answer, reply
        return self.phases.inlet[-1] + elapsed + self._outlet(turn, reply)

    def piped_stream(self, turn: OpenWebUITurn) -> Iterator[str]:
        body = self._inlet(turn)
        result = self.pipe.pipe(turn.question, SUB_MODEL, body["messages"], body)
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
        return first - start, last - start, end - start, "".join(parts)

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


def run(args: argparse.Namespace) -> None:
    answer = text(7, args.words)
    rng = random.Random(args.seed)
    total = args.warmup + args.turns * 2 + args.chunk_turns
    if total > args.conversations:
        raise SystemExit(f"need at least {total} conversations for distinct turns")
    chosen = iter(rng.sample(range(args.conversations), total))

    def next_turn(stream: bool) -> OpenWebUITurn:
        index = next(chosen)
        return OpenWebUITurn(index, history(index, args.messages), stream=stream)

    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        db = Path(folder) / "sessions.db"
        started = time.perf_counter()
        store = SQLiteStore(db)
        seed(store, args.conversations, args.messages)
        store.close()
        seeded = time.perf_counter() - started
        size = sum(f.stat().st_size for f in Path(folder).iterdir())
        print(
            f"seeded {args.conversations:,} conversations x {args.messages} messages in "
            f"{seeded:.1f} s ({size / 1e6:.0f} MB)"
        )

        _quiet_fake_helix()
        held = stack.enter_context(FakeHelix(reply=lambda _messages: answer))
        url = (
            held.url
            if args.fake == "thread"
            else stack.enter_context(fake_helix_process(args.words))
        )
        stack.enter_context(package_logging(args.log))
        valves = [HelixValves(HELIX_BASE_URL=url, SESSION_STORE_URL=f"sqlite:///{db}")]
        pipe = HelixPipe(lambda: valves[0], pipelines_dir=None)
        stack.callback(pipe.shutdown)
        bench = Bench(url, pipe, answer)

        for _ in range(args.warmup):
            turn = next_turn(stream=False)
            bench.direct_complete(turn)
            bench.piped_complete(turn)
        bench.phases = Phases()

        complete = Pairs()
        for number in range(args.turns):
            turn = next_turn(stream=False)
            if number % 2:
                a = bench.direct_complete(turn)
                b = bench.piped_complete(turn)
            else:
                b = bench.piped_complete(turn)
                a = bench.direct_complete(turn)
            complete.add(a, b)
        phases, bench.phases = bench.phases, Phases()
        first, last, end = Pairs(), Pairs(), Pairs()
        for number in range(args.turns):
            turn = next_turn(stream=True)
            if number % 2:
                piped = _time_piped_stream(bench, turn)
                direct = bench.time_direct_stream(turn)
            else:
                direct = bench.time_direct_stream(turn)
                piped = _time_piped_stream(bench, turn)
            assert piped[3] == direct[3], "the pipe changed the streamed answer"
            first.add(direct[0], piped[0])
            last.add(direct[1], piped[1])
            end.add(direct[2], piped[2])

        # The held-chunk probe needs FakeHelix in this process, to release its stream.
        valves[0] = valves[0].model_copy(update={"HELIX_BASE_URL": held.url})
        bench.url = f"{held.url}/v1/chat/completions"
        latency = Pairs()
        for _ in range(args.chunk_turns):
            turn = next_turn(stream=True)
            held.reset()
            a = bench.chunk_latency(held, partial(bench.direct_stream, turn))
            b = bench.chunk_latency(held, partial(bench.piped_stream, turn))
            latency.add(a, b)

    print()
    print(machine())
    print(
        f"{args.conversations:,} stored conversations x {args.messages} messages, SQLite; "
        f"answers of {args.words} words; logging: {args.log}"
    )
    print()
    print(
        table(
            [
                "turn",
                "n",
                "a direct p50 ms",
                "b piped p50 ms",
                "added p50 ms",
                "added p99 ms",
                "b/a",
            ],
            [
                complete.row("non-streaming, whole turn"),
                first.row("streaming, first content chunk"),
                last.row("streaming, last chunk"),
                end.row("streaming, end + outlet"),
                latency.row("streaming, held chunk released -> caller"),
            ],
        )
    )
    print()
    print(
        table(
            ["hook (non-streaming turns)", "p50 ms", "p99 ms"],
            [
                [name, percentile(values, 50) * 1000, percentile(values, 99) * 1000]
                for name, values in (
                    ("inlet", phases.inlet),
                    ("pipe (with Helix)", phases.pipe),
                    ("HelixClient.complete (Helix)", phases.helix),
                    ("outlet", phases.outlet),
                    ("own: inlet + pipe - Helix + outlet", phases.own()),
                )
            ],
        )
    )
    print()
    print(f"SSE parsing (helix_pipeline.sse.iter_deltas): {sse_cost_us():.1f} us per chunk")


def sse_cost_us(events: int = 2_000) -> float:
    """The pipe's CPU per streamed chunk: Helix-shaped events through ``iter_deltas``, one
    network read per event."""
    chunks = [
        b"data: "
        + json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": SUB_MODEL,
                "choices": [
                    {"index": 0, "delta": {"role": None, "content": "word "}, "finish_reason": None}
                ],
            }
        ).encode()
        + b"\n\n"
        for _ in range(events)
    ]
    chunks.append(b"data: [DONE]\n\n")
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        deltas = sum(1 for _ in iter_deltas(chunks))
        best = min(best, time.perf_counter() - start)
    assert deltas == events
    return best / events * 1e6


def _quiet_fake_helix() -> None:
    """Helix runs on uvicorn, whose sockets send at once (TCP_NODELAY); http.server's do not, and
    Nagle's algorithm then holds a response body behind its headers until the client's delayed
    ACK: 20-40 ms of noise in (a) and (b) alike that no real Helix has. FakeHelix now sets this
    itself; setting it here keeps before/after runs against older commits comparable."""
    testing._Handler.disable_nagle_algorithm = True


@contextmanager
def fake_helix_process(words: int) -> Iterator[str]:
    """FakeHelix in a process of its own (as Helix is), so that it never holds our GIL; every
    answer is :func:`text` ``(7, words)``."""
    command = [sys.executable, __file__, "--serve-fake", "--words", str(words)]
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
    _quiet_fake_helix()
    answer = text(7, words)
    with FakeHelix(reply=lambda _messages: answer) as helix:
        print(helix.url, flush=True)
        sys.stdin.read()


def _time_piped_stream(bench: Bench, turn: OpenWebUITurn) -> tuple[float, float, float, str]:
    """The stream through the pipe: inlet time plus pipe() to each point; ``end`` adds the outlet.

    Building the bodies (the Pipelines server's work, not ours) stays outside the clock.
    """
    body = bench._inlet(turn)
    inlet = bench.phases.inlet[-1]
    start = time.perf_counter()
    result = bench.pipe.pipe(turn.question, SUB_MODEL, body["messages"], body)
    assert not isinstance(result, str), result
    first = last = 0.0
    parts: list[str] = []
    for chunk in result:
        last = time.perf_counter()
        if not parts:
            first = last
        parts.append(chunk)
    end = time.perf_counter()
    reply = "".join(parts)
    outlet = bench._outlet(turn, reply)
    return inlet + first - start, inlet + last - start, inlet + end - start + outlet, reply


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000, help="stored conversations")
    parser.add_argument("--messages", type=int, default=50, help="messages per conversation")
    parser.add_argument("--turns", type=int, default=300, help="turns of each kind")
    parser.add_argument("--chunk-turns", type=int, default=300, help="held-chunk probes")
    parser.add_argument("--warmup", type=int, default=20, help="untimed turns first")
    parser.add_argument("--words", type=int, default=100, help="words in each answer")
    parser.add_argument(
        "--log",
        choices=("off", "warning", "info", "debug"),
        default="info",
        help="helix_pipeline log level, to a formatter and /dev/null (off: unconfigured)",
    )
    parser.add_argument(
        "--fake",
        choices=("process", "thread"),
        default="process",
        help="where FakeHelix answers the timed turns: its own process (default) or a thread here",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_fake:
        serve_fake(args.words)
    else:
        run(args)


if __name__ == "__main__":
    main()
