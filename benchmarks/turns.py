"""What the pipe does per Open WebUI turn, on every engine: its own time and its store round trips.

For each engine a store is seeded with ``--conversations`` conversations of ``--messages``
messages (every message with its Open WebUI id). Then Open WebUI 0.12.4 turns, each on another
stored conversation, go through :class:`HelixPipe` as the Pipelines server calls it (``inlet``,
``pipe``, ``outlet``; FakeHelix in a process of its own):

- timed: ``--turns`` non-streaming turns; **own** is inlet + pipe + outlet without the exchange with
  Helix inside ``HelixClient.complete`` (the pipeline's own work, as in ``overhead.py``);
- counted: ``--counted`` turns of each kind (pipe non-streaming, pipe streaming, and the session
  filter's inlet + outlet) with every store call counted through a proxy (reads: ``load``,
  ``read``, ``branches``; writes: ``record``) and the engine's own counters: statements that read
  the messages of a branch, statements that read only a conversation's row, write transactions
  (SQLite's statement trace, psycopg's cursors, Redis's ``INFO commandstats``: ``LRANGE``,
  ``HGETALL``/``HMGET``, ``EXEC``).

    python benchmarks/turns.py                                   # every engine, 2,000 x 50
    python benchmarks/turns.py --engines memory,sqlite --turns 100
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _shared import Turn, history, machine, openwebui_turn, package_logging, percentile, table, text
from counting import COLUMNS, engine_counters, per_turn, pipes_use
from piping import Bench, Phases, fake_helix_process, time_piped_stream
from store_scaling import ENGINES, NETWORKED, engine_names, engine_urls, seed_in_threads

from helix_pipeline.pipe import HelixPipe
from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.stores import open_store
from helix_pipeline.valves import FilterValves, HelixValves

KINDS = ("pipe, non-streaming", "pipe, streaming", "filter inlet + outlet")


@dataclass
class Result:
    engine: str
    own: list[float] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    skipped: str = ""


class Turns:
    """Distinct stored conversations, one per turn, as Open WebUI turns."""

    def __init__(self, conversations: int, messages: int, seed: int) -> None:
        self._order = iter(random.Random(seed).sample(range(conversations), conversations))
        self.messages = messages

    def next(self, *, stream: bool) -> Turn:
        index = next(self._order)
        return openwebui_turn(index, history(index, self.messages), stream=stream)


def measure(engine: str, url: str, args: argparse.Namespace, helix_url: str) -> Result:
    """Seed one store, then time and count turns through the pipe and the filter."""
    seeded = open_store(url)
    result = Result(engine)
    try:
        threads = args.seed_threads if engine in NETWORKED else 1
        seed_in_threads(seeded, 0, args.conversations, args.messages, threads)
        turns = Turns(args.conversations, args.messages, args.seed)
        answer = text(7, args.words)
        for kind in ("timed", *KINDS):
            counts: Counter[str] = Counter()
            with ExitStack() as stack:
                if kind != "timed":  # the counters cost time: the timed turns run without them
                    stack.enter_context(engine_counters(engine, url, counts))
                # A store opened now, so that the engine's counters see its connections (a
                # memory store cannot be opened again: the seeded one is used).
                store = seeded if engine == "memory" else open_store(url)
                if store is not seeded:
                    stack.callback(store.close)
                stack.enter_context(pipes_use(store, counts))
                if kind == "timed":
                    result.own = time_turns(url, helix_url, answer, turns, args)
                else:
                    play(kind, url, helix_url, answer, turns, args.counted)
            result.counts[kind] = counts
    finally:
        seeded.close()
    return result


def time_turns(
    url: str, helix_url: str, answer: str, turns: Turns, args: argparse.Namespace
) -> list[float]:
    """Seconds of the pipe's own work per non-streaming turn (warm-up turns left out)."""
    with pipe_on(url, helix_url) as pipe:
        bench = Bench(helix_url, pipe, answer)
        for _ in range(args.warmup):
            bench.piped_complete(turns.next(stream=False))
        bench.phases = Phases()
        for _ in range(args.turns):
            bench.piped_complete(turns.next(stream=False))
        return bench.phases.own()


def play(kind: str, url: str, helix_url: str, answer: str, turns: Turns, count: int) -> None:
    """``count`` turns of ``kind``."""
    if kind.startswith("filter"):
        valves = FilterValves(SESSION_STORE_URL=url)  # one object, as the server keeps it
        session_filter = SessionFilter(lambda: valves)
        try:
            for _ in range(count):
                chat, turn = turns.next(stream=False)
                session_filter.inlet(chat.inlet_body(turn), chat.user)
                chat.finish_turn(turn, answer)
                session_filter.outlet(chat.outlet_body(turn), chat.user)
        finally:
            session_filter.shutdown()
        return
    stream = kind.endswith(", streaming")
    with pipe_on(url, helix_url) as pipe:
        bench = Bench(helix_url, pipe, answer)
        for _ in range(count):
            turn = turns.next(stream=stream)
            if stream:
                assert time_piped_stream(bench, turn)[3]
            else:
                bench.piped_complete(turn)


@contextmanager
def pipe_on(url: str, helix_url: str) -> Iterator[HelixPipe]:
    valves = HelixValves(HELIX_BASE_URL=helix_url, SESSION_STORE_URL=url)
    pipe = HelixPipe(lambda: valves)
    try:
        yield pipe
    finally:
        pipe.shutdown()


def run(args: argparse.Namespace) -> list[Result]:
    import pytest  # only for the Skipped exception of tests/store_servers.py

    results: list[Result] = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        helix_url = stack.enter_context(fake_helix_process(args.words))
        stack.enter_context(package_logging(args.log))
        for engine in args.engines:
            try:
                with engine_urls(engine, folder) as urls:
                    results.append(measure(engine, next(urls), args, helix_url))
            except pytest.skip.Exception as skipped:
                results.append(Result(engine, skipped=str(getattr(skipped, "msg", skipped))))
            print(f"{engine}: done", file=sys.stderr)
    return results


def report(args: argparse.Namespace, results: Sequence[Result]) -> None:
    print(machine())
    print(
        f"{args.conversations:,} stored conversations x {args.messages} messages per engine; "
        f"{args.turns} timed and {args.counted} counted turns of each kind; "
        f"answers of {args.words} words; logging: {args.log}"
    )
    print()
    timed = [r for r in results if not r.skipped]
    print(
        table(
            ["engine", "own p50 ms (non-streaming)", "own p99 ms"],
            [[r.engine, percentile(r.own, 50) * 1000, percentile(r.own, 99) * 1000] for r in timed],
        )
    )
    print()
    print(
        table(
            ["engine", "turn", *(f"{c} / turn" for c in COLUMNS)],
            [
                [r.engine, kind, *per_turn(r.counts[kind], args.counted)]
                for r in timed
                for kind in KINDS
            ],
        )
    )
    for result in results:
        if result.skipped:
            print(f"skipped: {result.engine}: {result.skipped}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engines", type=engine_names, default=",".join(ENGINES), help="comma-separated"
    )
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--turns", type=int, default=300, help="timed non-streaming turns")
    parser.add_argument("--counted", type=int, default=20, help="counted turns of each kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--words", type=int, default=100, help="words in each answer")
    parser.add_argument("--log", choices=("off", "warning", "info"), default="info")
    parser.add_argument("--seed-threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    needed = args.warmup + args.turns + args.counted * len(KINDS)
    if needed > args.conversations:
        parser.error(f"needs --conversations of at least {needed} (one per turn)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report(args, run(args))


if __name__ == "__main__":
    main()
