"""Helix's own failure texts, as data, and the one place that recognises them in an answer.

Helix (uke16/Helix at b979a99, ``src/helix/api/routes/openai.py``) reports most of its failures
as ordinary answer text with HTTP 200: ``Claude Code ist nicht verfuegbar.``, ``\\n\\n**Fehler:**
<exception>`` at the end of a stream, ``Fehler bei der Verarbeitung:`` and its siblings in a plain
answer, ``Verarbeitung abgeschlossen.`` when Claude Code left no answer. :data:`FORMS` lists each
one with where it stands in the answer, what it means and what to do about it.

Every form is anchored on Helix's exact wording *and* its place, so that an answer which merely
mentions "Fehler" is an answer: a form stands at the start of the answer (``start``), is the whole
answer (``whole``), or is the last paragraph (``paragraph``: at the start or after a blank line,
running to the end). A text that holds one of Helix's ``<!-- STEP: ... -->`` markers after the
form's opening is Helix's consultant speaking, never a failure.

:func:`recognise` judges a whole answer; :func:`hold_from` tells a stream reader how much of an
answer still growing may be shown now without ever showing the start of a failure text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["FORMS", "FailureForm", "HelixFailure", "hold_from", "recognise"]

Place = Literal["start", "whole", "paragraph"]

STEP_MARKER = "<!-- STEP:"
_MAX_DETAIL = 300
_CODE_FENCE = re.compile(r"^\s*```\w*\s*|\s*```\s*$")
_STEP = re.compile(r"<!--\s*STEP:.*?-->", re.DOTALL)


@dataclass(frozen=True, slots=True)
class FailureForm:
    """One way Helix words a failure, and what the person should be told about it."""

    name: str
    opening: str
    """Helix's exact text that starts the form (the whole text for ``whole`` forms)."""
    place: Place
    happened: str
    """What happened, as a sentence fragment that the form's detail may follow after a colon."""
    advice: str
    """What to do, one sentence."""
    quotes: bool = True
    """Whether Helix's text after the opening (an exception, stderr) is worth quoting."""


_LOOK_AT_LOG = "Look at Helix's log for the cause, then ask again."
FORMS: tuple[FailureForm, ...] = (
    FailureForm(
        "unavailable",
        "Claude Code ist nicht verfuegbar.",
        "start",
        "Helix could not start Claude Code (it says Claude Code is not available)",
        "Check that the Claude Code CLI works on the Helix server, then ask again.",
        quotes=False,
    ),
    FailureForm(
        "error-mid-stream",
        "**Fehler:** ",
        "paragraph",
        "Helix failed while it worked on the answer",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "timeout",
        "**Timeout** - Verarbeitung hat zu lange gedauert.",
        "paragraph",
        "Helix stopped Claude Code because it took longer than Helix allows",
        "Ask again, perhaps for a smaller step.",
        quotes=False,
    ),
    FailureForm(
        "timeout",
        "Timeout - die Verarbeitung hat zu lange gedauert.",
        "start",
        "Helix stopped Claude Code because it took longer than Helix allows",
        "Ask again, perhaps for a smaller step.",
        quotes=False,
    ),
    FailureForm(
        "claude-crash",
        "Fehler bei der Verarbeitung:",
        "start",
        "Claude Code failed on the Helix server",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "unexpected-error",
        "Unerwarteter Fehler: ",
        "start",
        "Helix failed while it worked on the answer",
        _LOOK_AT_LOG,
    ),
    FailureForm("error", "Fehler: ", "start", "Helix reported an error", _LOOK_AT_LOG),
    FailureForm(
        "no-answer",
        "Verarbeitung abgeschlossen.",
        "whole",
        "Claude Code ended without an answer (it may have crashed)",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "no-answer",
        "Ich habe deine Anfrage analysiert, aber keine Antwort generiert.",
        "whole",
        "Claude Code ended without an answer",
        _LOOK_AT_LOG,
    ),
)


@dataclass(frozen=True, slots=True)
class HelixFailure:
    """A failure found in an answer: its form, where its text starts, and Helix's detail."""

    form: FailureForm
    start: int
    detail: str = ""

    @property
    def message(self) -> str:
        """What happened and what to do, for the person (the notice adds its frame)."""
        detail = f": {self.detail}" if self.detail and self.form.quotes else ""
        return f"{self.form.happened}{detail}. {self.form.advice}"


def recognise(text: str) -> HelixFailure | None:
    """The Helix failure ``text`` reports, or ``None`` when it is an answer.

    The failure's ``start`` splits ``text``: what comes before it is what Helix answered before
    it failed (empty for every form but ``paragraph``).
    """
    begin = len(text) - len(text.lstrip())
    head = text[begin:]
    for form in FORMS:
        if form.place == "whole":
            if _STEP.sub("", head).strip() == form.opening:
                return HelixFailure(form, begin)
        elif form.place == "start":
            if head.startswith(form.opening) and STEP_MARKER not in head:
                return HelixFailure(form, begin, _detail(head[len(form.opening) :]))
        else:
            start = _paragraph(text, form.opening, 0)
            if start is not None:
                return HelixFailure(form, start, _detail(text[start + len(form.opening) :]))
    return None


def hold_from(text: str, shown: int) -> int:
    """How far ``text``, an answer still streaming of which ``shown`` characters are already
    shown, may be shown now: the index where a failure text may be starting, or where white space
    at its end begins. Held text is shown once the stream goes on to prove it an answer, or at
    its end.
    """
    hold = max(len(text.rstrip()), shown)  # white space waits for what follows it
    if shown == 0:
        head = text.lstrip()
        if not head or any(_may_be(head, form) for form in FORMS if form.place != "paragraph"):
            return 0
    for form in FORMS:
        if form.place == "paragraph":
            start = _paragraph(text, form.opening, shown, growing=True)
            if start is not None:  # the blank line before it waits too
                hold = min(hold, max(len(text[:start].rstrip()), shown))
    return hold


def _may_be(head: str, form: FailureForm) -> bool:
    """Whether an answer that begins ``head`` (and may grow) can still turn out to be ``form``."""
    if form.opening.startswith(head):
        return True
    if not head.startswith(form.opening):
        return False
    rest = head[len(form.opening) :]
    if form.place == "start":
        return STEP_MARKER not in rest
    rest = _STEP.sub("", rest).lstrip()  # "whole": only white space and STEP markers may follow
    return not rest or STEP_MARKER.startswith(rest[: len(STEP_MARKER)])


def _paragraph(text: str, opening: str, after: int, *, growing: bool = False) -> int | None:
    """The first index from ``after`` where a paragraph starting with ``opening`` runs to the end
    of ``text`` with no STEP marker; ``growing`` also counts an opening cut short by the end."""
    starts = [0] if after == 0 else []
    position = max(after - 2, 0)
    while (found := text.find("\n\n", position)) >= 0:
        starts.append(found + 2)
        position = found + 1
    for index in starts:
        if index < after:
            continue
        rest = text[index:]
        if rest.startswith(opening) and STEP_MARKER not in rest:
            return index
        if growing and rest and opening.startswith(rest):
            return index
    return None


def _detail(text: str) -> str:
    """Helix's detail after a form's opening: one line, code fences removed, cut short."""
    text = " ".join(_CODE_FENCE.sub("", text.strip()).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1].rstrip() + "…"
