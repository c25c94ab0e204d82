"""Reading an OpenAI-style chat stream (server-sent events) from Helix, byte by byte.

Three layers, each usable alone: :func:`iter_lines` turns raw body chunks into text lines (UTF-8
split anywhere, ``\\n``, ``\\r\\n`` or ``\\r``), :func:`iter_events` turns lines into events (blank
lines and ``:`` comments skipped, multi-line ``data`` joined), and :func:`iter_deltas` turns events
into the content deltas of the answer. It stops at ``data: [DONE]`` without forwarding it, skips
``"role": null`` / ``"content": null`` deltas, logs and skips a chunk that is not JSON, raises
:class:`~helix_pipeline.errors.BackendError` for an error object in the stream, and also accepts a
plain JSON completion sent to a stream request. Helix's status chunk (``[Starte Claude Code...]``),
its ``.`` heartbeats and its ``<!-- STEP: ... -->`` markers are content and pass through unchanged
(:mod:`helix_pipeline.helix_answer` reads them for the person).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BackendError, BackendProtocolError

__all__ = [
    "DONE",
    "ServerSentEvent",
    "completion_content",
    "describe_error",
    "iter_deltas",
    "iter_events",
    "iter_lines",
]

logger = logging.getLogger(__name__)

DONE = "[DONE]"
"""The data of the event that ends an OpenAI-style stream; never forwarded."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_STRAY_CHARS = 1_000_000
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` unless named) and its data."""

    data: str
    event: str = "message"


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines from body chunks, whatever the chunk boundaries; the last line may lack a break.

    Invalid UTF-8 becomes U+FFFD rather than failing the answer.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    after_cr = False
    for chunk in chunks:
        text = decoder.decode(chunk)
        if after_cr and text.startswith("\n"):
            text = text[1:]  # the second half of a CRLF split across two chunks
        if not text:
            continue
        after_cr = text.endswith("\r")
        *lines, buffer = _LINE_BREAK.split(buffer + text)
        yield from lines
    buffer += decoder.decode(b"", final=True)
    if buffer:
        yield buffer


def iter_events(lines: Iterable[str], stray: list[str] | None = None) -> Iterator[ServerSentEvent]:
    """Events from SSE lines, as the HTML standard parses them.

    An event is dispatched at a blank line, and also at the end of the stream (a server that ends
    without the final blank line still delivered its data). Lines that are no SSE field at all
    (such as a JSON body sent instead of a stream) are appended to ``stray`` when it is given.
    """
    data: list[str] = []
    event = ""
    stray_chars = 0
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), event or "message")
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name in ("id", "retry"):
            continue
        elif stray is not None and stray_chars < _MAX_STRAY_CHARS:
            stray.append(line)
            stray_chars += len(line)
    if data:
        yield ServerSentEvent("\n".join(data), event or "message")


def iter_deltas(chunks: Iterable[bytes]) -> Iterator[str]:
    """The content deltas of an OpenAI chat stream, in order, as they arrive.

    Raises :class:`BackendError` for an error object (or an ``error`` event) in the stream, and
    :class:`BackendProtocolError` for a stream that ends without ``[DONE]`` before any content
    arrived. A stream cut short after content arrived simply ends: the caller keeps what came.
    """
    stray: list[str] = []
    seen_event = False
    delivered = False
    for event in iter_events(iter_lines(chunks), stray):
        seen_event = True
        data = event.data.strip()
        if data == DONE:
            return
        if event.event == "error":
            raise BackendError(f"Helix reported an error in its answer: {_error_text(data)}")
        try:
            chunk = json.loads(data)
        except ValueError:
            logger.warning(
                "Skipped a malformed chunk in Helix's stream (%d chars, not JSON): %.80r",
                len(data),
                data,
            )
            continue
        error = describe_error(chunk)
        if error is not None:
            raise BackendError(f"Helix reported an error in its answer: {error}")
        text = completion_content(chunk)
        if text:
            delivered = True
            yield text
    if not seen_event and stray:
        yield from _plain_json_reply("\n".join(stray))
        return
    if not delivered:
        raise BackendProtocolError(
            "Helix answered nothing: its stream ended before any text (Helix does this when an "
            "error stops it before its first chunk). Look at Helix's log for the cause, then "
            "ask again."
        )


def completion_content(payload: object) -> str | None:
    """The text of a stream chunk (``choices[0].delta.content``) or of a whole completion
    (``choices[0].message.content``); ``None`` when there is none (``"content": null``)."""
    if not isinstance(payload, Mapping):
        return None
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    choice: Mapping[str, Any] = choices[0]
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, Mapping):
            content = part.get("content")
            return content if isinstance(content, str) else None
    text = choice.get("text")
    return text if isinstance(text, str) else None


def describe_error(payload: object) -> str | None:
    """A short readable summary of an error body, or ``None`` if ``payload`` is no error.

    Understands FastAPI (``{"detail": "..."}`` and the 422 ``{"detail": [...]}`` list), Helix's
    flat 500 (``{"error", "type", "message"}``) and OpenAI (``{"error": {"message"}}``).
    """
    if not isinstance(payload, Mapping):
        return None
    detail = payload.get("detail")
    if isinstance(detail, str) and detail.strip():
        return _cut(detail)
    if isinstance(detail, list) and detail:
        return _validation_summary(detail)
    error = payload.get("error")
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("detail") or error.get("type")
        return _cut(str(message)) if message else _cut(json.dumps(error))
    if isinstance(error, str) and error.strip():
        message = payload.get("message")
        kind = payload.get("type")
        if isinstance(message, str) and message.strip():
            prefix = f"{kind}: " if isinstance(kind, str) and kind and kind not in message else ""
            return _cut(f"{prefix}{message}")
        return _cut(error)
    return None


def _validation_summary(items: list[Any], shown: int = 3) -> str:
    """``messages.0.content: Input should be a valid string`` for each of the first few items."""
    parts: list[str] = []
    for item in items[:shown]:
        if not isinstance(item, Mapping):
            parts.append(str(item))
            continue
        location = item.get("loc")
        path = (
            ".".join(str(p) for p in location if p != "body") if isinstance(location, list) else ""
        )
        message = str(item.get("msg") or item.get("type") or "invalid")
        parts.append(f"{path}: {message}" if path else message)
    if len(items) > shown:
        parts.append(f"and {len(items) - shown} more")
    return _cut("; ".join(parts))


def _plain_json_reply(body: str) -> Iterator[str]:
    """A whole JSON completion (or error) sent to a stream request: its content, once."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise BackendProtocolError(
            "Helix answered a stream request with something that is neither an event stream "
            f"nor JSON: {_cut(' '.join(body.split()), 200)!r}; check that HELIX_BASE_URL points "
            "at Helix."
        ) from None
    error = describe_error(payload)
    if error is not None:
        raise BackendError(f"Helix reported an error: {error}")
    text = completion_content(payload)
    if text is None:
        raise BackendProtocolError("Helix answered a stream request with JSON that holds no answer")
    if text:
        yield text


def _error_text(data: str) -> str:
    try:
        payload = json.loads(data)
    except ValueError:
        return _cut(data)
    return describe_error(payload) or _cut(data)


def _cut(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
