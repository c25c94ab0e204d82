"""What the Pipelines pipe yields: answer text, and status events for the server to send on.

The Pipelines server forwards a dict yielded by ``pipe()`` as ``data: {"event": ...}``, which Open
WebUI shows as a status line; an Open WebUI Function says the same through its event emitter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .decorations import Item, Status

__all__ = ["PipeItem", "after_status", "for_host", "shown_text"]

PipeItem = str | dict[str, Any]
"""What the streaming ``pipe()`` yields: answer text, or a status event for the Pipelines server
to send on as ``data: {"event": ...}`` (Open WebUI shows it as a status line)."""


def shown_text(result: str | Iterable[PipeItem]) -> str:
    """The text a person sees of a ``pipe()`` result: the strings joined, status events left out."""
    if isinstance(result, str):
        return result
    return "".join(item for item in result if isinstance(item, str))


def for_host(items: Iterable[Item | None]) -> Iterator[PipeItem]:
    """Items as the Pipelines server sends them on: non-empty text, statuses as event dicts."""
    for item in items:
        if isinstance(item, Status):
            yield {"event": item.event()}
        elif item:
            yield item


def after_status(line: str, answer: Iterator[PipeItem]) -> Iterator[PipeItem]:
    """``answer`` after a status ``line`` (a shortened history), ending with a ``done`` status.

    The Pipelines host's own status; an Open WebUI Function says it through its event emitter.
    """
    yield {"event": Status(line).event()}
    closed = False
    for item in answer:
        if isinstance(item, dict):
            data = item.get("event", {}).get("data", {})
            closed = closed or data.get("done") is True
        yield item
    if not closed:
        yield {"event": Status(line, done=True).event()}
