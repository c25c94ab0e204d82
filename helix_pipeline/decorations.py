"""Helix's progress decorations, turned from answer text into status events.

While Claude Code works, Helix streams decorations in the answer's text (uke16/Helix b979a99):
the first chunk ``[Starte Claude Code...]``, tool markers such as ``\\n[Read] ``, a ``.``
heartbeat every 10 s, then the separator ``\\n\\n---\\n\\n`` before the answer; when its check of
the answer fails it adds the hint ``⚠️ **Hinweis:** Die Antwort konnte nicht vollständig validiert
werden.`` (before the answer in a stream, after it in a plain answer). None of that is the answer.

:class:`DecorationFilter` reads a stream's content deltas, wherever their chunk boundaries fall,
and gives back two kinds of items: answer text (``str``) and :class:`Status` (what Helix is doing,
for the host to show as a status line). :func:`strip_decorations` does the same to a whole text.
An answer that does not begin with Helix's first chunk (another server, an old build) passes
through unchanged, and Helix's ``<!-- STEP: ... -->`` markers are answer text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SEPARATOR",
    "START",
    "VALIDATION_HINT",
    "DecorationFilter",
    "Item",
    "Status",
    "strip_decorations",
]

START = "[Starte Claude Code...]"
SEPARATOR = "\n\n---\n\n"
VALIDATION_HINT = "⚠️ **Hinweis:** Die Antwort konnte nicht vollständig validiert werden."
_TOOL = re.compile(r"\n\[([^\]\n]{1,80})\] ")
_TOOL_BEGUN = re.compile(r"\n(?:\[[^\]\n]{0,80}\]?)?\Z")
_TRAILING_HINT = re.compile(r"\s*-{3}\s*" + re.escape(VALIDATION_HINT) + r"\s*\Z")


@dataclass(frozen=True, slots=True)
class Status:
    """What Helix is doing, for a status line above the answer; ``done`` on the last one."""

    description: str
    done: bool = False

    def event(self) -> dict[str, Any]:
        """Open WebUI's status event (``__event_emitter__`` takes it as is; a Pipelines pipe
        yields it as ``{"event": ...}``)."""
        return {"type": "status", "data": {"description": self.description, "done": self.done}}


Item = str | Status
"""What the filter gives back: answer text, or a status."""


class DecorationFilter:
    """Splits Helix's streamed content into answer text and :class:`Status` items.

    ``feed`` each delta, then ``finish`` once the stream ended. Text that may still turn out to
    be a decoration (``\\n\\n--``, ``[Starte``) waits for the next delta.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._buffer = ""
        self._state = "first"  # first, prelude, hint, after-hint, answer
        self.unvalidated = False
        """Helix said it could not fully validate the answer."""

    def feed(self, delta: str) -> list[Item]:
        self._buffer += delta
        return self._drain(final=False)

    def finish(self) -> list[Item]:
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[Item]:
        items: list[Item] = []
        while self._buffer and self._state != "answer":
            step = getattr(self, "_" + self._state.replace("-", "_"))
            if not step(items, final):
                break
        if self._state == "answer" and self._buffer:
            items.append(self._buffer)
            self._buffer = ""
        elif final:
            self._buffer = ""  # only white space or a decoration cut short is left
        return items

    def _take(self, count: int) -> None:
        self._buffer = self._buffer[count:]

    # Each state reads the buffer's head: True when it consumed something or changed state.

    def _first(self, items: list[Item], final: bool) -> bool:
        head = self._buffer.lstrip()
        if head.startswith(START):
            self._take(len(self._buffer) - len(head) + len(START))
            self._state = "prelude"
            items.append(Status("Helix is starting Claude Code…"))
            return True
        if not final and START.startswith(head):
            return False
        self._state = "answer"
        return True

    def _prelude(self, items: list[Item], final: bool) -> bool:
        buffer = self._buffer
        if buffer.startswith(SEPARATOR):
            self._take(len(SEPARATOR))
            self._state = "hint"
            items.append(Status("Helix is writing the answer…"))
        elif buffer.startswith("."):
            self._take(len(buffer) - len(buffer.lstrip(".")))
            seconds = int(self._clock() - self._started)
            items.append(Status(f"Helix is still working ({seconds} s)…"))
        elif match := _TOOL.match(buffer):
            self._take(match.end())
            items.append(Status(f"Claude Code is using {match.group(1)}…"))
        elif buffer[0].isspace():
            if not final and (SEPARATOR.startswith(buffer) or _TOOL_BEGUN.match(buffer)):
                return False
            self._take(1)
        else:  # anything else ends the decorations (Helix's error texts come this way)
            self._state = "answer"
        return True

    def _hint(self, items: list[Item], final: bool) -> bool:
        if self._buffer.startswith(VALIDATION_HINT):
            self._take(len(VALIDATION_HINT))
            self._state = "after-hint"
            self.unvalidated = True
            items.append(Status("Helix could not fully validate this answer"))
            return True
        if not final and VALIDATION_HINT.startswith(self._buffer):
            return False
        self._state = "answer"
        return True

    def _after_hint(self, items: list[Item], final: bool) -> bool:
        buffer = self._buffer
        if buffer.startswith(SEPARATOR):
            self._take(len(SEPARATOR))
            self._state = "answer"
        elif not final and SEPARATOR.startswith(buffer):
            return False
        elif buffer[0].isspace():
            self._take(1)
        else:
            self._state = "answer"
        return True


def strip_decorations(text: str) -> tuple[str, bool]:
    """A whole answer without Helix's decorations, and whether it carried the validation hint
    (which a plain answer carries at its end)."""
    if VALIDATION_HINT not in text and not text.lstrip().startswith(START):
        return text, False  # the common case, an answer without decorations: nothing to scan
    decorations = DecorationFilter()
    items = [*decorations.feed(text), *decorations.finish()]
    answer = "".join(item for item in items if isinstance(item, str))
    stripped = _TRAILING_HINT.sub("", answer)
    return stripped, decorations.unvalidated or stripped != answer
