"""What the benchmarks share: realistic Open WebUI bodies, bulk seeding, statistics and tables.

Run a benchmark from the repository root (``python benchmarks/overhead.py``); this module puts the
root on ``sys.path`` so that ``tests.store_servers`` and the fixtures are found.
"""

from __future__ import annotations

import copy
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helix_pipeline.conversation import PRIVATE_KEY, ConversationKey  # noqa: E402
from helix_pipeline.messages import Message  # noqa: E402
from helix_pipeline.stores.base import SessionStore  # noqa: E402

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
def _inlet_template() -> dict[str, Any]:
    path = FIXTURES / "examples" / "06_filter_inlet_B-t2_pipe_model.json"
    body: dict[str, Any] = json.loads(path.read_text())["body"]
    return body


@cache
def openwebui_tools() -> list[dict[str, Any]]:
    """The ~25 KB list of tool specs Open WebUI 0.12.4 puts in a pipe body (36 built-in tools)."""
    with (FIXTURES / "run1_forward_headers" / "pipe.jsonl").open() as lines:
        for line in lines:
            tools = json.loads(line).get("body", {}).get("tools")
            if isinstance(tools, list) and tools:
                return tools
    raise RuntimeError("no pipe body with tools in the fixtures")


class OpenWebUITurn:
    """One chat turn as Open WebUI 0.12.4 sends it to a manifold pipe: inlet, pipe, outlet."""

    def __init__(
        self,
        conversation: int,
        stored: Sequence[Message],
        *,
        stream: bool,
        chat_id: str | None = None,
    ) -> None:
        self.key = key(conversation)
        if chat_id is not None:
            self.key = ConversationKey(self.key.user_id, chat_id)
        self.chat_id = self.key.conversation_id
        self.stream = stream
        self.user = {**USER, "id": self.key.user_id}
        self.history: list[dict[str, str]] = [
            {"id": m.message_id or "", "role": m.role, "content": m.content} for m in stored
        ]
        self.user_message_id = f"u-{conversation}-{len(stored)}"
        self.assistant_message_id = f"a-{conversation}-{len(stored)}"
        self.question = text(conversation * 1000 + len(stored), 20)

    def wire_messages(self) -> list[dict[str, str]]:
        """What Helix receives: the whole conversation, role and content only."""
        return [
            *({"role": m["role"], "content": m["content"]} for m in self.history),
            {"role": "user", "content": self.question},
        ]

    def inlet_body(self) -> dict[str, Any]:
        body = copy.deepcopy(_inlet_template())
        metadata = body["metadata"]
        metadata.update(
            user_id=self.key.user_id,
            chat_id=self.chat_id,
            user_message_id=self.user_message_id,
            message_id=self.assistant_message_id,
            parent_message_id=self.history[-1]["id"] if self.history else None,
        )
        metadata["user_message"].update(
            id=self.user_message_id,
            content=self.question,
            parentId=self.history[-1]["id"] if self.history else None,
            childrenIds=[self.assistant_message_id],
        )
        body["stream"] = self.stream
        body["model"] = MODEL
        body["messages"] = self.wire_messages()
        return body

    def pipe_body(self, inlet_result: dict[str, Any]) -> dict[str, Any]:
        """What ``pipe()`` gets: no metadata, the tools, the user, and the inlet's private key."""
        return {
            "stream": self.stream,
            "model": MODEL,
            "messages": self.wire_messages(),
            "tools": openwebui_tools(),
            "user": dict(self.user),
            PRIVATE_KEY: inlet_result[PRIVATE_KEY],
        }

    def outlet_body(self, reply: str) -> dict[str, Any]:
        messages = [
            *({**m, "info": None, "timestamp": 1795647991} for m in self.history),
            {"id": self.user_message_id, "role": "user", "content": self.question},
            {"id": self.assistant_message_id, "role": "assistant", "content": reply},
        ]
        return {
            "model": MODEL,
            "messages": messages,
            "filter_ids": [],
            "chat_id": self.chat_id,
            "session_id": "bench-socket",
            "id": self.assistant_message_id,
        }


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
