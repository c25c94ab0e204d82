"""Helix's own failure texts, as data, and the one place that recognises them in an answer.

Helix (uke16/Helix at b979a99, ``src/helix/api/routes/openai.py``) reports most of its failures
as ordinary answer text with HTTP 200: ``Claude Code ist nicht verfuegbar.``, ``\\n\\n**Fehler:**
<exception>`` at the end of a stream, ``Fehler bei der Verarbeitung:`` and its siblings in a plain
answer, ``Verarbeitung abgeschlossen.`` when Claude Code left no answer. :data:`FORMS` lists each
one with where it stands in the answer, what it means and what to do about it.

Every form is anchored on Helix's exact wording *and* its place, so that an answer which merely
mentions "Fehler" is an answer: a form stands at the start of the answer (``start``), is the whole
answer (``whole``), or is the answer's last paragraph (``paragraph``: after a blank line, or the
whole answer). A text that holds one of Helix's ``<!-- STEP: ... -->`` markers after the form's
opening, or runs longer than :data:`MAX_FORM_CHARS`, is Helix's consultant speaking, never a
failure.

:func:`recognise` judges a whole answer; :func:`hold_from` tells a stream reader how much of an
answer still growing may be shown now without ever showing the start of a failure text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["FORMS", "MAX_FORM_CHARS", "FailureForm", "HelixFailure", "hold_from", "recognise"]

Place = Literal["start", "whole", "paragraph"]

STEP_MARKER = "<!-- STEP:"
MAX_FORM_CHARS = 2_000
"""The longest text a failure form may have: Helix's own are short (its stderr is cut to 500
characters, an exception's text is one line). Longer text is an answer, so a stream never holds
back more than this."""
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
    start: int | None = None
    rest: str | None = None  # the last paragraph, looked for once
    bare: str | None = None  # the head without STEP markers, made once
    for form in FORMS:
        if form.place == "paragraph":
            if rest is None:
                start = _last_paragraph(text, 0)
                rest = text[start:] if start is not None else ""
            if rest.startswith(form.opening) and _may_be_failure(rest):
                return HelixFailure(form, start or 0, _detail(rest[len(form.opening) :]))
        elif len(head) > MAX_FORM_CHARS:
            continue
        elif form.place == "whole":
            if bare is None:
                bare = _STEP.sub("", head).strip()
            if bare == form.opening:
                return HelixFailure(form, begin)
        elif head.startswith(form.opening) and _may_be_failure(head):
            return HelixFailure(form, begin, _detail(head[len(form.opening) :]))
    return None


def hold_from(text: str, shown: int) -> int:
    """How far ``text``, an answer still streaming of which ``shown`` characters are already
    shown, may be shown now: the index where a failure text may be starting, or where white space
    at its end begins. Held text is shown once the stream goes on to prove it an answer, or at
    its end. Never more than :data:`MAX_FORM_CHARS` are held for a failure.
    """
    if shown == 0:
        head = text.lstrip()
        if not head or any(_may_be(head, form) for form in FORMS if form.place != "paragraph"):
            return 0
    start = _last_paragraph(text, shown)
    if start is not None:
        rest = text[start:]
        for form in FORMS:
            if form.place == "paragraph" and (
                (rest and form.opening.startswith(rest))
                or (rest.startswith(form.opening) and _may_be_failure(rest))
            ):
                return _content_end(text, shown, start)  # the blank line before it waits too
    return _content_end(text, shown, len(text))  # white space waits for what follows it


def _may_be(head: str, form: FailureForm) -> bool:
    """Whether an answer that begins ``head`` (and may grow) can still turn out to be ``form``."""
    if form.opening.startswith(head):
        return True
    if len(head) > MAX_FORM_CHARS or not head.startswith(form.opening):
        return False
    rest = head[len(form.opening) :]
    if form.place == "start":
        return STEP_MARKER not in rest
    rest = _STEP.sub("", rest).lstrip()  # "whole": only white space and STEP markers may follow
    return not rest or STEP_MARKER.startswith(rest[: len(STEP_MARKER)])


def _may_be_failure(rest: str) -> bool:
    """Whether text from a form's opening on is short and unmarked enough to be Helix's own."""
    return len(rest.rstrip()) <= MAX_FORM_CHARS and STEP_MARKER not in rest


def _last_paragraph(text: str, lower: int) -> int | None:
    """Where the last paragraph of ``text`` starts (after its last blank line, white space at
    the end aside); ``None`` when that is before ``lower``, which is more than 0."""
    end = _content_end(text, lower, len(text))
    found = text.rfind("\n\n", max(lower - 2, 0), end)
    if found >= 0:
        return found + 2
    return 0 if lower == 0 else None


def _content_end(text: str, lower: int, upper: int) -> int:
    """``upper`` moved back over white space, but not below ``lower``."""
    while upper > lower and text[upper - 1].isspace():
        upper -= 1
    return upper


def _detail(text: str) -> str:
    """Helix's detail after a form's opening: one line, code fences removed, cut short."""
    text = " ".join(_CODE_FENCE.sub("", text.strip()).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1].rstrip() + "…"
