"""Does the pipe's memory grow with the number of turns? Peak RSS and live Python heap, per store.

One process plays ``--turns`` chat turns through :class:`HelixPipe` (inlet, pipe, outlet; streaming
and not, alternately) against FakeHelix in a process of its own (its request log is not ours).
Turn ``n`` goes to slot ``n % --conversations``; a slot starts a new chat (a new chat id) after
``--messages`` messages, as people do, so 10,000 turns make 2,000 chats of 5 turns. After
``--early`` turns, half way and at the end it samples the peak RSS (``resource.getrusage``), the
live objects (``sys.getallocatedblocks`` after ``gc.collect()``; ``--tracemalloc`` adds the traced
heap, three times slower), and counts the conversations held in this process.

A store on disk must not grow the process; the memory store keeps every chat (it is the reference
store for tests); temporary chats live in the pipe's own in-process store, which must stay bounded.

    python benchmarks/memory.py                           # 10,000 turns over 1,000 slots
    python benchmarks/memory.py --turns 2000 --early 200  # a quick run
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from _shared import Turn, machine, openwebui_turn, package_logging, table, text
from piping import fake_helix_process

from helix_pipeline.messages import Message
from helix_pipeline.pipe import HelixPipe, shown_text
from helix_pipeline.stores.base import SessionStore
from helix_pipeline.testing.openwebui import pipe_arguments
from helix_pipeline.valves import HelixValves

MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    rss_mb: float
    heap_mb: float
    """Live heap traced by tracemalloc (``nan`` unless ``--tracemalloc``)."""
    blocks: int
    """Memory blocks Python's allocator holds (``sys.getallocatedblocks``): live objects."""
    kept: int
    """Conversations held in this process (memory store or temporary-chat store)."""


@dataclass(frozen=True)
class Result:
    scenario: str
    samples: list[Sample]
    """At ``--early`` turns, half way, and at the end."""
    seconds: float


class Chats:
    """Which chat each turn belongs to, and its history so far, rebuilt from two counters a slot
    (so that the benchmark's own bookkeeping does not grow with the turns). Odd slots stream."""

    def __init__(self, slots: int, messages: int, prefix: str) -> None:
        self.slots = slots
        self.messages = messages
        self.prefix = prefix
        self.count = [0] * slots
        self.chat = [0] * slots
        self.replies: dict[bool, str] = {}
        """The answer as streamed and as not streamed (FakeHelix's answers are all the same)."""

    def next_turn(self, number: int) -> Turn:
        slot = number % self.slots
        stream = slot % 2 == 1
        if self.count[slot] >= self.messages:
            self.count[slot] = 0
            self.chat[slot] += 1
        past = [
            message
            for position in range(0, self.count[slot], 2)
            for message in (
                Message("user", text(slot * 1000 + position, 20), f"u-{slot}-{position}"),
                Message("assistant", self.replies[stream], f"a-{slot}-{position}"),
            )
        ]
        chat_id = f"{self.prefix}chat-{slot}-{self.chat[slot]}"
        self.count[slot] += 2
        return openwebui_turn(slot, past, stream=stream, chat_id=chat_id)

    def answered(self, played: Turn, reply: str) -> None:
        known = self.replies.setdefault(played.turn.stream, reply)
        assert reply == known, f"FakeHelix answered {reply!r}, expected {known!r}"


def play(pipe: HelixPipe, played: Turn) -> str:
    chat, turn = played
    body = chat.pipe_body(pipe.inlet(chat.inlet_body(turn), chat.user))
    reply = shown_text(pipe.pipe(**pipe_arguments(body)))
    chat.finish_turn(turn, reply)
    pipe.outlet(chat.outlet_body(turn), chat.user)
    return reply


def held_conversations(pipe: HelixPipe) -> int:
    """Conversations kept in this process: by a memory store, and by the temporary-chat store."""
    history = pipe._parts.get().history
    held = _count(history.temporary_store)
    if history.store.url.startswith("memory://"):
        held += _count(history.store)
    return held


def _count(store: SessionStore) -> int:
    return sum(len(store.conversations(user)) for user in store.users())


def sample(pipe: HelixPipe) -> Sample:
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] / MB if tracemalloc.is_tracing() else float("nan")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    return Sample(rss_kb / 1024, heap, sys.getallocatedblocks(), held_conversations(pipe))


def measure(
    scenario: str, store_url: str, prefix: str, helix: str, args: argparse.Namespace
) -> Result:
    valves = HelixValves(HELIX_BASE_URL=helix, SESSION_STORE_URL=store_url)
    pipe = HelixPipe(lambda: valves, pipelines_dir=None)
    chats = Chats(args.conversations, args.messages, prefix)
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        samples: list[Sample] = []
        points = sample_points(args)
        for number in range(args.turns):
            turn = chats.next_turn(number)
            chats.answered(turn, play(pipe, turn))
            if number + 1 in points:
                samples.append(sample(pipe))
    finally:
        tracemalloc.stop()
        pipe.shutdown()
    return Result(scenario, samples, time.perf_counter() - started)


def sample_points(args: argparse.Namespace) -> tuple[int, int, int]:
    return (args.early, args.turns // 2, args.turns)


SCENARIOS = (
    # (name, store file or URL, chat id prefix)
    ("sqlite, saved chats", "sqlite", ""),
    ("sqlite, temporary chats", "sqlite", "local:"),
    ("memory, saved chats", "memory://", ""),
)


def run(args: argparse.Namespace) -> list[Result]:
    """Each scenario in a process of its own, so that each peak RSS is that scenario's."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as folder, fake_helix_process(args.words) as helix:
        for number, (scenario, _, _) in enumerate(SCENARIOS):
            if args.only and args.only not in scenario:
                continue
            command = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--scenario",
                str(number),
                "--helix",
                helix,
                "--folder",
                folder,
            ]
            output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results.append(
                Result(
                    result["scenario"],
                    [Sample(**fields) for fields in result["samples"]],
                    result["seconds"],
                )
            )
            print(f"{scenario}: {results[-1].seconds:.1f} s", file=sys.stderr)
    return results


def run_scenario(args: argparse.Namespace) -> None:
    """The child of :func:`run`: one scenario, its result as one JSON line."""
    scenario, store, prefix = SCENARIOS[args.scenario]
    url = f"sqlite:///{Path(args.folder) / f'{args.scenario}.db'}" if store == "sqlite" else store
    with package_logging(args.log):
        result = measure(scenario, url, prefix, args.helix, args)
    print(json.dumps(asdict(result)))


def report(args: argparse.Namespace, results: Sequence[Result]) -> None:
    print(machine())
    print(
        f"{args.turns:,} turns over {args.conversations:,} slots, a new chat every "
        f"{args.messages} messages; answers of {args.words} words; live blocks = "
        "sys.getallocatedblocks() after gc.collect(); kept = conversations held in the process"
    )
    print()
    at = [f"@{point:,}" for point in sample_points(args)]
    columns: list[tuple[str, Callable[[Sample], object]]] = [
        ("peak RSS MB", lambda s: s.rss_mb),
        ("live blocks", lambda s: s.blocks),
        ("kept", lambda s: s.kept),
    ]
    if args.tracemalloc:
        columns.insert(1, ("heap MB", lambda s: s.heap_mb))
    headers = ["scenario"]
    for name, _ in columns:
        headers += [f"{name} {at[0]}", at[1], at[2]]
    rows = [[r.scenario, *(value(s) for _, value in columns for s in r.samples)] for r in results]
    print(table(headers, rows))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--early", type=int, default=1_000, help="turns at the first sample")
    parser.add_argument("--conversations", type=int, default=1_000, help="chat slots")
    parser.add_argument("--messages", type=int, default=10, help="messages before a new chat")
    parser.add_argument("--words", type=int, default=40, help="words in each answer")
    parser.add_argument("--only", default="", help="run only the scenarios whose name has this")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace the live heap (about 3x slower)",
    )
    parser.add_argument("--log", choices=("off", "warning", "info"), default="info")
    parser.add_argument("--scenario", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--helix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.early < args.turns // 2:
        parser.error("--early must be between 0 and half of --turns")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.scenario is not None:
        run_scenario(args)
        return
    report(args, run(args))


if __name__ == "__main__":
    main()
