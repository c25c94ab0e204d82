"""What the benchmarks share: Open WebUI turns (the test driver's bodies, the recorded tools), bulk seeding, statistics and tables.

Run a benchmark from the repository root (``python benchmarks/overhead.py``); this module puts the
root on ``sys.path`` so that ``tests.store_servers`` and the fixtures are found.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helix_pipeline.conversation import ConversationKey  # noqa: E402
from helix_pipeline.messages import Message  # noqa: E402
from helix_pipeline.stores.base import SessionStore  # noqa: E402
from helix_pipeline.testing.openwebui import ChatTurn, OpenWebUIChat  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "openwebui-0.12.4"
USER = {
    "name": "Bench User",
    "id": "55add4cf-2ad0-40f4-9334-c6eb6d9eacf1",
    "email": "bench@example.com",
    "role": "admin",
}
MODEL = "helix.helix-consultant"
SUB_MODEL = "helix-consultant"
_WORDS = [
    "the",
    "consultant",
    "reviews",
    "the",
    "quarterly",
    "numbers",
    "and",
    "suggests",
    "a",
    "plan",
    "for",
    "the",
    "next",
    "release",
    "with",
    "clear",
    "owners",
    "milestones",
    "risks",
    "and",
    "a",
    "budget",
    "that",
    "the",
    "team",
    "can",
    "defend",
    "in",
    "review",
]


# ------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; ``nan`` for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes into benchmarks/README.md as it is)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    """One line on where and when the figures were taken, and the exact command."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python", *[Path(sys.argv[0]).as_posix(), *sys.argv[1:]]])
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{now}; {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; "
        f"load average {load} (at the end); command: `{command}`"
    )


# ------------------------------------------------------------------------- conversation data


def text(seed: int, words: int) -> str:
    """Deterministic prose of ``words`` words, different for every ``seed``."""
    start = seed % len(_WORDS)
    body = " ".join(_WORDS[(start + i) % len(_WORDS)] for i in range(words))
    return f"[{seed}] {body}"


def history(conversation: int, count: int) -> list[Message]:
    """A stored conversation as Open WebUI leaves it: alternating turns, every message with its id.

    User messages are about 20 words, assistant replies about 80.
    """
    return [
        Message(
            "user" if i % 2 == 0 else "assistant",
            text(conversation * 1000 + i, 20 if i % 2 == 0 else 80),
            message_id=f"m-{conversation}-{i}",
        )
        for i in range(count)
    ]


def key(conversation: int, users: int = 100) -> ConversationKey:
    return ConversationKey(f"user-{conversation % users}", f"chat-{conversation:08d}")


def seed(store: SessionStore, conversations: int, messages: int, *, start: int = 0) -> None:
    """Fill ``store`` through its own ``record()``: one call (one transaction) per conversation."""
    for index in range(start, start + conversations):
        store.record(key(index), history(index, messages), after=0)


# ---------------------------------------------------------------------- Open WebUI bodies


@cache
def openwebui_tools() -> list[dict[str, Any]]:
    """The ~25 KB list of tool specs Open WebUI 0.12.4 puts in a pipe body (36 built-in tools)."""
    with (FIXTURES / "run1_forward_headers" / "pipe.jsonl").open() as lines:
        for line in lines:
            tools = json.loads(line).get("body", {}).get("tools")
            if isinstance(tools, list) and tools:
                return tools
    raise RuntimeError("no pipe body with tools in the fixtures")


class Turn(NamedTuple):
    """A chat in Open WebUI 0.12.4 (the test driver's bodies) and the turn it is about to send."""

    chat: OpenWebUIChat
    turn: ChatTurn


def openwebui_turn(
    conversation: int, stored: Sequence[Message], *, stream: bool, chat_id: str | None = None
) -> Turn:
    """Conversation ``conversation``'s next turn, ``stored`` shown before it, with the ~25 KB of
    recorded tool specs in its pipe body; the question is about 20 words."""
    owner = key(conversation)
    chat = OpenWebUIChat(
        chat_id=chat_id or owner.conversation_id,
        user={**USER, "id": owner.user_id},
        stream=stream,
        tools=openwebui_tools(),
    )
    chat.resume((m.role, m.content, m.message_id) for m in stored)
    return Turn(chat, chat.start_turn(text(conversation * 1000 + len(stored), 20)))


# ----------------------------------------------------------------------------- logging


@contextmanager
def package_logging(level: str) -> Iterator[None]:
    """Log ``helix_pipeline`` at ``level`` to a formatter and ``/dev/null``, as a server would
    (``off`` leaves logging unconfigured: Python's default WARNING threshold)."""
    if level == "off":
        yield
        return
    logger = logging.getLogger("helix_pipeline")
    fake = logging.getLogger("helix_pipeline.testing")
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        old_level, old_fake = logger.level, fake.level
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        fake.setLevel(logging.WARNING)  # FakeHelix's own access log is not the pipeline's cost
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            fake.setLevel(old_fake)
