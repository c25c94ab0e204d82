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
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from _shared import (
    SUB_MODEL,
    Turn,
    history,
    machine,
    openwebui_turn,
    package_logging,
    percentile,
    seed,
    table,
    text,
)
from counting import COLUMNS, engine_counters, per_turn, pipes_use
from piping import Bench, Pairs, Phases, fake_helix_process, time_piped_stream

from helix_pipeline.decorations import strip_decorations
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.sse import iter_deltas
from helix_pipeline.stores import open_store
from helix_pipeline.stores.sqlite import SQLiteStore
from helix_pipeline.testing import FakeHelix
from helix_pipeline.valves import HelixValves


@dataclass
class Timings:
    """What :func:`run` measured."""

    complete: Pairs = field(default_factory=Pairs)
    phases: Phases = field(default_factory=Phases)
    first: Pairs = field(default_factory=Pairs)
    last: Pairs = field(default_factory=Pairs)
    end: Pairs = field(default_factory=Pairs)
    latency: Pairs = field(default_factory=Pairs)
    counts: Counter[str] = field(default_factory=Counter)


def run(args: argparse.Namespace) -> None:
    answer = text(7, args.words)
    rng = random.Random(args.seed)
    total = args.warmup + args.turns * 2 + args.chunk_turns + args.counted
    if total > args.conversations:
        raise SystemExit(f"need at least {total} conversations for distinct turns")
    chosen = iter(rng.sample(range(args.conversations), total))

    def next_turn(stream: bool) -> Turn:
        index = next(chosen)
        return openwebui_turn(index, history(index, args.messages), stream=stream)

    timings = Timings()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        db = seed_sqlite(Path(folder), args)
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
        time_complete(bench, next_turn, args, timings)
        time_streams(bench, next_turn, args, timings)
        count_round_trips(db, url, answer, [next_turn(False) for _ in range(args.counted)], timings)
        # The held-chunk probe needs FakeHelix in this process, to release its stream.
        valves[0] = valves[0].model_copy(update={"HELIX_BASE_URL": held.url})
        bench.url = f"{held.url}/v1/chat/completions"
        for _ in range(args.chunk_turns):
            turn = next_turn(stream=True)
            held.reset()
            a = bench.chunk_latency(held, partial(bench.direct_stream, turn))
            b = bench.chunk_latency(held, partial(bench.piped_stream, turn))
            timings.latency.add(a, b)
    report(args, timings)


def seed_sqlite(folder: Path, args: argparse.Namespace) -> Path:
    db = folder / "sessions.db"
    started = time.perf_counter()
    store = SQLiteStore(db)
    seed(store, args.conversations, args.messages)
    store.close()
    seeded = time.perf_counter() - started
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(
        f"seeded {args.conversations:,} conversations x {args.messages} messages in "
        f"{seeded:.1f} s ({size / 1e6:.0f} MB)"
    )
    return db


def time_complete(
    bench: Bench,
    next_turn: Callable[[bool], Turn],
    args: argparse.Namespace,
    timings: Timings,
) -> None:
    """Warm-up turns, then ``--turns`` non-streaming turns, direct and piped alternately first."""
    for _ in range(args.warmup):
        turn = next_turn(False)
        bench.direct_complete(turn)
        bench.piped_complete(turn)
    bench.phases = Phases()
    for number in range(args.turns):
        turn = next_turn(False)
        if number % 2:
            a = bench.direct_complete(turn)
            b = bench.piped_complete(turn)
        else:
            b = bench.piped_complete(turn)
            a = bench.direct_complete(turn)
        timings.complete.add(a, b)
    timings.phases, bench.phases = bench.phases, Phases()


def time_streams(
    bench: Bench,
    next_turn: Callable[[bool], Turn],
    args: argparse.Namespace,
    timings: Timings,
) -> None:
    for number in range(args.turns):
        turn = next_turn(True)
        if number % 2:
            piped = time_piped_stream(bench, turn)
            direct = bench.time_direct_stream(turn)
        else:
            direct = bench.time_direct_stream(turn)
            piped = time_piped_stream(bench, turn)
        # The pipe shows Helix's decorations as statuses, so its text is the answer alone.
        assert piped[3] == strip_decorations(direct[3])[0], "the pipe changed the answer"
        timings.first.add(direct[0], piped[0])
        timings.last.add(direct[1], piped[1])
        timings.end.add(direct[2], piped[2])


def count_round_trips(
    db: Path, url: str, answer: str, turns: Sequence[Turn], timings: Timings
) -> None:
    """Non-streaming turns through a pipe of their own, every store call and SQLite statement
    counted (after the timed turns: counting costs time)."""
    store_url = f"sqlite:///{db}"
    with engine_counters("sqlite", store_url, timings.counts):
        store = open_store(store_url)
        try:
            with pipes_use(store, timings.counts):
                valves = HelixValves(HELIX_BASE_URL=url, SESSION_STORE_URL=store_url)
                pipe = HelixPipe(lambda: valves, pipelines_dir=None)
                try:
                    bench = Bench(url, pipe, answer)
                    for turn in turns:
                        bench.piped_complete(turn)
                finally:
                    pipe.shutdown()
        finally:
            store.close()


def report(args: argparse.Namespace, timings: Timings) -> None:
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
                timings.complete.row("non-streaming, whole turn"),
                timings.first.row("streaming, first content chunk"),
                timings.last.row("streaming, last chunk"),
                timings.end.row("streaming, end + outlet"),
                timings.latency.row("streaming, held chunk released -> caller"),
            ],
        )
    )
    print()
    phases = timings.phases
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
    print(
        table(
            ["store round trips per non-streaming turn", *COLUMNS],
            [[f"SQLite, {args.counted} turns", *per_turn(timings.counts, args.counted)]],
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000, help="stored conversations")
    parser.add_argument("--messages", type=int, default=50, help="messages per conversation")
    parser.add_argument("--turns", type=int, default=300, help="turns of each kind")
    parser.add_argument("--chunk-turns", type=int, default=300, help="held-chunk probes")
    parser.add_argument("--warmup", type=int, default=20, help="untimed turns first")
    parser.add_argument(
        "--counted", type=int, default=20, help="turns whose store round trips are counted"
    )
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
