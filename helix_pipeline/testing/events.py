"""Helix's answers as data: a whole chat completion and the events of a streamed one.

Written the way Helix b979a99 writes them. A stream is the status chunk (:data:`FIRST_CHUNK`),
tool markers (``\\n[Read] ``) and ``.`` heartbeats, the :data:`SEPARATOR` (at least
``separator_delay`` s after the first chunk), the answer word by word, a final chunk with explicit
nulls and ``[DONE]``; each event comes with the pause FakeHelix makes before sending it. Helix's
own failure forms (:class:`~.faults.Fault`) change that sequence, or the text of a plain
completion, exactly as Helix does. The handler (:mod:`.handler`) writes them to the wire.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from .faults import Fault

if TYPE_CHECKING:
    from .server import FakeHelix

__all__ = [
    "CRASH_ANSWER",
    "FIRST_CHUNK",
    "SEPARATOR",
    "UNAVAILABLE_JSON",
    "UNAVAILABLE_STREAM",
    "VALIDATION_HINT",
]

FIRST_CHUNK = "[Starte Claude Code...]\n\n"
SEPARATOR = "\n\n---\n\n"
VALIDATION_HINT = "⚠️ **Hinweis:** Die Antwort konnte nicht vollständig validiert werden."
UNAVAILABLE_STREAM = "Claude Code ist nicht verfuegbar."
UNAVAILABLE_JSON = "Claude Code ist nicht verfuegbar. Bitte spaeter versuchen."
CRASH_ANSWER = "Verarbeitung abgeschlossen."
"""What Helix streams as the answer when Claude Code left none (it crashed)."""
STREAM_TIMEOUT = "\n\n**Timeout** - Verarbeitung hat zu lange gedauert. Bitte versuche es erneut."
JSON_TIMEOUT = "Timeout - die Verarbeitung hat zu lange gedauert."
SERVER_ERROR_TYPE = "PermissionError"
SERVER_ERROR_MESSAGE = (
    "[Errno 13] Permission denied: '/home/helix/helix-v4/projects/sessions/{session}/CLAUDE.md'"
)
"""Helix's 500 for an exception outside its stream, as its global handler words it."""


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


def answer_text(text: str, fault: Fault, helix: FakeHelix) -> str:
    """The content of a plain (non-streaming) answer: ``text``, or Helix's text for ``fault``."""
    if fault is Fault.UNAVAILABLE:
        return UNAVAILABLE_JSON
    if fault is Fault.ERROR_MID_STREAM:
        return f"Unerwarteter Fehler: {helix.error_text}"
    if fault is Fault.CLAUDE_CRASH:
        return f"Fehler bei der Verarbeitung:\n```\n{helix.crash_stderr[:500]}\n```"
    if fault is Fault.CLAUDE_ERROR_RESULT:
        return f"Fehler: {helix.error_text}"
    if fault is Fault.TIMEOUT:
        return JSON_TIMEOUT
    if fault is Fault.UNVALIDATED:
        return f"{text}{SEPARATOR}{VALIDATION_HINT}"
    return text


def server_error_body(kind: str, message: str, path: str) -> dict[str, Any]:
    """Helix's global exception handler's body (sent as compact JSON, as FastAPI does)."""
    return {
        "error": "Internal Server Error",
        "type": kind,
        "message": message,
        "path": path,
        "timestamp": datetime.now().isoformat(),
    }


def stream_events(
    model: str, text: str, helix: FakeHelix, fault: Fault = Fault.NONE
) -> Iterator[tuple[float, Any]]:
    """Helix's stream as (pause before it, event), for an answer ``text`` or a failure ``fault``.

    ``error-before-first-chunk`` yields nothing at all (the handler closes the empty stream).
    """
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

    if fault is Fault.ERROR_BEFORE_FIRST_CHUNK:
        return
    if fault is Fault.UNAVAILABLE:
        yield 0.0, chunk(UNAVAILABLE_STREAM, role="assistant")
    else:
        yield 0.0, chunk(FIRST_CHUNK, role="assistant")
        for tool in helix.tools:
            yield helix.chunk_delay, chunk(f"\n[{tool}] ")
        for _ in range(helix.heartbeats):
            yield helix.heartbeat_interval, chunk(".")
        if fault is Fault.ERROR_MID_STREAM:
            yield helix.chunk_delay, chunk(f"\n\n**Fehler:** {helix.error_text}")
        elif fault is Fault.TIMEOUT:
            yield helix.chunk_delay, chunk(STREAM_TIMEOUT)
        else:
            if fault in (Fault.CLAUDE_CRASH, Fault.CLAUDE_ERROR_RESULT, Fault.UNVALIDATED):
                yield helix.separator_delay, chunk(SEPARATOR)
                yield 0.0, chunk(f"{VALIDATION_HINT}\n\n")
                pause = 0.0
            else:
                pause = helix.separator_delay
            if fault in (Fault.CLAUDE_CRASH, Fault.CLAUDE_ERROR_RESULT):
                text = CRASH_ANSWER
            yield max(pause, helix.chunk_delay), chunk(SEPARATOR)
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
