"""Reading Helix's answer for the person: decorations become statuses, failures become notices.

:class:`AnswerReader` is what a host (the Pipelines pipe, an Open WebUI Function) puts between
Helix's content deltas and the chat. It runs the deltas through
:class:`~helix_pipeline.decorations.DecorationFilter` and holds back any text that may be the
start of one of Helix's failure texts (:mod:`helix_pipeline.helix_failures`), so the person sees
the answer as it arrives and statuses while Helix works, but never Helix's failure text itself.
When the stream ends, :attr:`AnswerReader.failure` says whether the answer was a failure and
:attr:`AnswerReader.answer` holds what was shown: the answer to record, without decorations.
:func:`read_whole` does the same for a plain (non-streaming) answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .decorations import DecorationFilter, Item, Status, strip_decorations
from .helix_failures import HelixFailure, hold_from, recognise

__all__ = ["AnswerReader", "Reading", "read_whole"]


class AnswerReader:
    """Helix's streamed content deltas in; text to show and :class:`Status` items out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._decorations = DecorationFilter(clock)
        self._shown: list[str] = []
        self._shown_chars = 0
        self._tail = ""
        """The last two characters shown: a blank line may straddle what is shown and held."""
        self._held = ""
        self._statuses = 0
        self.failure: HelixFailure | None = None
        """Set by :meth:`finish` when the answer was one of Helix's failure texts."""

    def feed(self, delta: str) -> list[Item]:
        """The items to show now for ``delta`` (possibly none: text may be held back)."""
        return self._pass(self._decorations.feed(delta), final=False)

    def finish(self) -> list[Item]:
        """The stream ended (completely or not): the last items, and :attr:`failure` decided."""
        return self._pass(self._decorations.finish(), final=True)

    @property
    def answer(self) -> str:
        """The answer text shown so far: no decorations, no failure text."""
        return "".join(self._shown)

    @property
    def unvalidated(self) -> bool:
        return self._decorations.unvalidated

    def closing_status(self, outcome: str) -> Status | None:
        """The last status (``done``), when statuses were shown; ``outcome`` describes the end."""
        return Status(outcome, done=True) if self._statuses else None

    def _pass(self, items: Iterable[Item], *, final: bool) -> list[Item]:
        shown: list[Item] = []
        for item in items:
            if isinstance(item, Status):
                self._statuses += 1
                shown.append(item)
            else:
                self._held += item
        if final:
            text = self.answer + self._held  # once per answer: the whole text is judged
            self.failure = recognise(text)
            end = len(text) if self.failure is None else len(text[: self.failure.start].rstrip())
            release = max(end - self._shown_chars, 0)
        else:  # only the held text and the two characters before it are looked at
            window = self._tail + self._held
            release = hold_from(window, len(self._tail)) - len(self._tail)
        if release > 0:
            text, self._held = self._held[:release], self._held[release:]
            self._shown.append(text)
            self._shown_chars += len(text)
            self._tail = (self._tail + text)[-2:]
            shown.append(text)
        return shown


@dataclass(frozen=True, slots=True)
class Reading:
    """A whole answer read: the answer without decorations, and the failure it reports."""

    answer: str
    failure: HelixFailure | None
    unvalidated: bool


def read_whole(text: str) -> Reading:
    """:class:`AnswerReader`'s verdict on a plain answer that came in one piece."""
    answer, unvalidated = strip_decorations(text)
    failure = recognise(answer)
    if failure is not None:
        answer = answer[: failure.start].rstrip()
    return Reading(answer, failure, unvalidated)
