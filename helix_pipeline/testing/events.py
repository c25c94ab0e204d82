"""Helix's answers as data: a whole chat completion and the events of a streamed one.

A stream is the status chunk (:data:`FIRST_CHUNK`), ``.`` heartbeats, the :data:`SEPARATOR`, the
answer word by word, a final chunk with explicit nulls and ``[DONE]``; each event comes with the
pause FakeHelix makes before sending it. The handler (:mod:`.handler`) writes them to the wire.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .server import FakeHelix

__all__ = ["FIRST_CHUNK", "SEPARATOR"]

FIRST_CHUNK = "[Starte Claude Code...]\n\n"
SEPARATOR = "\n\n---\n\n"


def completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def stream_events(model: str, text: str, helix: FakeHelix) -> Iterator[tuple[float, Any]]:
    """Helix's stream as (pause before it, event): status chunk, heartbeats, separator, the
    answer word by word, the final chunk with explicit nulls, ``[DONE]``."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:8]}"
    created = int(time.time())

    def chunk(content: str | None, role: str | None = None, end: bool = False) -> dict[str, Any]:
        delta = {"role": role, "content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if end else None}
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    yield 0.0, chunk(FIRST_CHUNK, role="assistant")
    for _ in range(helix.heartbeats):
        yield helix.heartbeat_interval, chunk(".")
    yield helix.chunk_delay, chunk(SEPARATOR)
    words = text.split(" ")
    for index, word in enumerate(words):
        yield helix.chunk_delay, chunk(word if index == len(words) - 1 else word + " ")
    yield 0.0, chunk(None, end=True)
    yield 0.0, "[DONE]"


def is_final(event: object) -> bool:
    if not isinstance(event, dict):
        return False
    choices = cast(list[dict[str, Any]], event.get("choices") or [{}])
    return choices[0].get("finish_reason") == "stop"
