"""Store cost per turn (read the branch, record two messages on it) as the store fills up, per engine.

For every engine and every conversation length, one store is filled step by step to 1,000, 10,000
and 100,000 conversations (through the store's own ``record()``, one call per conversation), and at
each step ``--turns`` turns on random stored conversations are timed, making the store calls the
Helix pipe makes for a turn: ``read()``, then ``record()`` of the branch read plus the turn's
question and answer, given the branch read as ``base`` (the outlet of such a turn calls nothing).

Cells beyond ``--max-stored`` messages (10,000 x 1,000 and 100,000 x 100 or more: 10 million
messages and up) are skipped: seeding them takes longer than the benchmark may, and the three
lengths at 1,000 conversations already show the cost per message while the 10-message row shows
the cost against the number of conversations up to 100,000.

Redis and PostgreSQL run on throwaway servers (``tests/store_servers.py``) when their binaries are
installed; otherwise their rows are skipped with the reason.

    python benchmarks/store_scaling.py                            # every engine, the full grid
    python benchmarks/store_scaling.py --engines sqlite --conversations 1000,10000 --turns 50
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _shared import key, machine, median, percentile, seed, table, text

from helix_pipeline.messages import Message
from helix_pipeline.stores import open_store
from helix_pipeline.stores.base import SessionStore

ENGINES = ("memory", "sqlite", "redis", "postgres")


@dataclass
class Cell:
    engine: str
    conversations: int
    messages: int
    seed_s: float = 0.0
    load: list[float] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    skipped: str = ""

    @property
    def stored(self) -> int:
        return self.conversations * self.messages


NETWORKED = ("redis", "postgres")
"""Engines whose seeding waits on round trips, and so goes faster in threads."""


def seed_in_threads(
    store: SessionStore, start: int, stop: int, messages: int, threads: int
) -> None:
    """Conversations ``start`` to ``stop`` through ``record()``, in ``threads`` threads."""
    if threads <= 1:
        seed(store, stop - start, messages, start=start)
        return
    step = -(-(stop - start) // threads)
    with ThreadPoolExecutor(threads) as pool:
        jobs = [
            pool.submit(seed, store, min(step, stop - first), messages, start=first)
            for first in range(start, stop, step)
        ]
        for job in jobs:
            job.result()


def settle(engine: str, url: str) -> None:
    """Let PostgreSQL catch up with the bulk load, as a server in use long since has: without
    this, autovacuum's analyse of the million rows just written runs during the timed turns."""
    if engine != "postgres":
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) helix_conversations, helix_messages")


WARMUP = 10
"""Untimed turns first in every cell (connections, caches)."""


def time_turns(store: SessionStore, cell: Cell, turns: int, rng: random.Random) -> None:
    """``turns`` turns on distinct random conversations: read, then record question and answer."""
    chosen = rng.sample(range(cell.conversations), min(turns + WARMUP, cell.conversations))
    for number, index in enumerate(chosen):
        conversation = key(index)
        question = Message("user", text(index, 20), message_id=f"q-{index}-{cell.conversations}")
        answer = Message("assistant", text(index + 1, 80), message_id=f"a-{index}")
        start = time.perf_counter()
        branch = store.read(conversation)
        loaded = time.perf_counter()
        store.record(conversation, [*branch.messages, question, answer], after=0, base=branch)
        done = time.perf_counter()
        if len(branch.messages) < cell.messages:
            raise RuntimeError(f"{cell.engine}: conversation {index} lost messages")
        if number < WARMUP:
            continue
        cell.load.append(loaded - start)
        cell.turn.append(done - start)


@contextmanager
def engine_urls(engine: str, folder: Path) -> Iterator[Iterator[str]]:
    """Fresh, empty store URLs of ``engine`` (one per conversation length); skips raise."""
    if engine == "memory":
        yield iter(lambda: "memory://", None)
    elif engine == "sqlite":
        yield (f"sqlite:///{folder / f'scaling-{n}.db'}" for n in range(1_000_000))
    elif engine == "redis":
        from tests.store_servers import running_redis

        with running_redis() as server:

            def flushed() -> Iterator[str]:
                while True:
                    server.flush()
                    yield server.url

            yield flushed()
    elif engine == "postgres":
        from tests.store_servers import running_postgres

        with running_postgres() as cluster:
            yield iter(cluster.fresh_url, None)
    else:
        raise SystemExit(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def measure_engine(engine: str, args: argparse.Namespace, folder: Path) -> list[Cell]:
    import pytest  # only for the Skipped exception of tests/store_servers.py

    cells: list[Cell] = []
    rng = random.Random(args.seed)
    try:
        with engine_urls(engine, folder) as urls:
            for messages in args.messages:
                url = next(urls)
                store = open_store(url)
                try:
                    cells += measure_length(engine, store, url, messages, args, rng)
                finally:
                    store.close()
    except pytest.skip.Exception as skipped:
        reason = str(skipped.msg) if hasattr(skipped, "msg") else str(skipped)
        return [Cell(engine, 0, 0, skipped=reason)]
    return cells


def measure_length(
    engine: str,
    store: SessionStore,
    url: str,
    messages: int,
    args: argparse.Namespace,
    rng: random.Random,
) -> list[Cell]:
    """Fill one store with conversations of ``messages`` messages, timing turns at each size."""
    cells: list[Cell] = []
    seeded = 0
    for conversations in args.conversations:
        cell = Cell(engine, conversations, messages)
        cells.append(cell)
        if cell.stored > args.max_stored:
            cell.skipped = f"{cell.stored:,} messages is over --max-stored"
            continue
        started = time.perf_counter()
        threads = args.seed_threads if engine in NETWORKED else 1
        seed_in_threads(store, seeded, conversations, messages, threads)
        seeded = conversations
        cell.seed_s = time.perf_counter() - started
        settle(engine, url)
        time_turns(store, cell, args.turns, rng)
        print(
            f"{engine} {conversations:,} x {messages}: seeded in {cell.seed_s:.1f} s, "
            f"turn p50 {median(cell.turn) * 1000:.3f} ms",
            file=sys.stderr,
        )
    return cells


def report(args: argparse.Namespace, cells: Sequence[Cell]) -> None:
    print(machine())
    print(
        f"{args.turns} turns per cell on distinct random conversations; a turn = read() + "
        "record(branch + question + answer, base=branch), as the pipe calls them; messages of 20 "
        "(user) and 80 (assistant) words"
    )
    print()
    rows = [
        [
            cell.engine,
            cell.conversations,
            cell.messages,
            cell.stored,
            cell.seed_s,
            percentile(cell.load, 50) * 1000,
            percentile(cell.turn, 50) * 1000,
            percentile(cell.turn, 99) * 1000,
        ]
        for cell in cells
        if not cell.skipped
    ]
    print(
        table(
            [
                "engine",
                "conversations",
                "messages each",
                "stored",
                "seed s",
                "read p50 ms",
                "turn p50 ms",
                "turn p99 ms",
            ],
            rows,
        )
    )
    for cell in cells:
        if cell.skipped:
            size = f" {cell.conversations:,} x {cell.messages:,}" if cell.conversations else ""
            print(f"skipped: {cell.engine}{size}: {cell.skipped}")
    print()
    print(
        table(
            ["engine", "messages each", "turn p50 ratio, most / fewest conversations"], flat(cells)
        )
    )
    print()
    print(
        table(
            ["engine", "conversations", "turn p50 ms by messages each", "cost / messages growth"],
            linear(cells),
        )
    )


def flat(cells: Sequence[Cell]) -> list[list[object]]:
    """How the cost moves with the number of conversations (1.0 is flat)."""
    rows: list[list[object]] = []
    for engine in dict.fromkeys(c.engine for c in cells):
        for messages in dict.fromkeys(c.messages for c in cells if c.engine == engine):
            timed = [c for c in cells if c.engine == engine and c.messages == messages and c.turn]
            if len(timed) >= 2:
                ratio = median(timed[-1].turn) / median(timed[0].turn)
                rows.append(
                    [
                        engine,
                        messages,
                        f"{ratio:.2f} ({timed[0].conversations:,} -> {timed[-1].conversations:,})",
                    ]
                )
    return rows


def linear(cells: Sequence[Cell]) -> list[list[object]]:
    """How the cost moves with the messages attached, at the fewest conversations."""
    rows: list[list[object]] = []
    for engine in dict.fromkeys(c.engine for c in cells):
        timed = [c for c in cells if c.engine == engine and c.turn]
        if not timed:
            continue
        fewest = min(c.conversations for c in timed)
        lengths = [c for c in timed if c.conversations == fewest]
        if len(lengths) < 2:
            continue
        first, last = lengths[0], lengths[-1]
        rows.append(
            [
                engine,
                fewest,
                " / ".join(f"{c.messages:,}: {median(c.turn) * 1000:.3f}" for c in lengths),
                f"x{median(last.turn) / median(first.turn):.1f} for x{last.messages // first.messages}",
            ]
        )
    return rows


def _ints(value: str) -> list[int]:
    return sorted(int(part.replace("_", "")) for part in value.split(",") if part.strip())


def engine_names(value: str) -> list[str]:
    """``--engines``: comma-separated names of :data:`ENGINES` (argparse says which are unknown)."""
    engines = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown engines {', '.join(unknown)}; choose from {', '.join(ENGINES)}"
        )
    return engines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engines", type=engine_names, default=",".join(ENGINES), help="comma-separated"
    )
    parser.add_argument("--conversations", type=_ints, default=[1_000, 10_000, 100_000])
    parser.add_argument("--messages", type=_ints, default=[10, 100, 1_000])
    parser.add_argument("--max-stored", type=int, default=1_000_000, help="messages in one cell")
    parser.add_argument("--turns", type=int, default=200, help="timed turns per cell")
    parser.add_argument(
        "--seed-threads", type=int, default=4, help="threads seeding Redis and PostgreSQL"
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory() as folder:
        for engine in args.engines:
            cells += measure_engine(engine, args, Path(folder))
    report(args, cells)


if __name__ == "__main__":
    main()
