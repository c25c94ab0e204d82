"""The one short message the person in the chat sees when a turn fails.

It says what went wrong and what to do; the details go to the log. Never a traceback, never a
secret (error messages are built without them, see :mod:`helix_pipeline.errors`), never a file
path of the server (Helix's 500 quotes its own: :func:`notice_for` replaces them).

Every notice is marked by data, not by its words: it is wrapped in :data:`OPEN` and :data:`CLOSE`,
two invisible characters each, which Open WebUI stores and sends back verbatim and the browser does
not show. :func:`without_notices` finds notices by that mark alone, so their wording can change
freely; it takes out only a well-formed span (an opening, words without mark characters, a
closing), so Helix's own text keeps any stray mark character. Chats from before the mark keep
their notices in the old wording, which :mod:`helix_pipeline.notices_legacy` recognises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from .decorations import strip_decorations
from .errors import ConfigError, HelixPipelineError
from .history import Trim
from .messages import Message
from .notices_legacy import without_legacy_notice

__all__ = [
    "CLOSE",
    "EMPTY_ANSWER",
    "OPEN",
    "UNEXPECTED",
    "for_open_webui",
    "is_notice",
    "notice_for",
    "trim_line",
    "trim_notice",
    "visible",
    "without_notices",
    "without_server_paths",
]

_SEPARATOR_CHAR = "\u2063"  # INVISIBLE SEPARATOR: never in prose, invisible in every browser
_NO_BREAK_CHAR = "\ufeff"  # ZERO WIDTH NO-BREAK SPACE: whitespace to the markdown renderer
OPEN = _SEPARATOR_CHAR + _NO_BREAK_CHAR
"""Opens a notice. Its no-break space faces the words: Open WebUI's markdown (marked 9) reads it as
white space, so emphasis at the edge of a notice (the trim line's ``_(...)_``) still renders."""
CLOSE = _NO_BREAK_CHAR + _SEPARATOR_CHAR
"""Closes a notice."""
_WITHOUT_MARK = str.maketrans("", "", _SEPARATOR_CHAR + _NO_BREAK_CHAR)
_NOTICE = re.compile(f"(?:\n\n)?{OPEN}[^{_SEPARATOR_CHAR}{_NO_BREAK_CHAR}]*{CLOSE}")
"""A marked notice, with the blank line that sets it apart from an answer it follows."""

_WARNING = "⚠️"
_DETAILS = "(Details are in the Pipelines server log.)"
_DETAILS_OPEN_WEBUI = "(Details are in Open WebUI's log.)"
"""The same notices from an Open WebUI Function, which runs inside Open WebUI."""
_AFTER_ANSWER = "\n\n"


def _marked(words: str) -> str:
    """``words`` as a notice: between the marks, any mark character in them taken out."""
    return f"{OPEN}{words.translate(_WITHOUT_MARK)}{CLOSE}"


EMPTY_ANSWER = _marked(
    f"{_WARNING} Helix answered nothing: its answer ended before any text. Look at Helix's log for "
    f"the cause, then ask again. {_DETAILS}"
)
UNEXPECTED = _marked(
    f"{_WARNING} helix-pipeline hit an unexpected error and could not answer. {_DETAILS}"
)


_SERVER_PATH = re.compile(
    r"""(?<![\w.:/])(?:/(?:home|root|usr|var|opt|srv|tmp|app|etc|mnt|data|run|Users|private)"""
    r"""(?:/[^\s'"/]+)+/?|[A-Za-z]:\\[^\s'"]+)"""
)
_STACK_FRAME = re.compile(
    r"""\s*(?:Traceback \(most recent call last\):|File "[^"]*", line \d+[^\n]*)"""
)


def notice_for(exc: HelixPipelineError, *, cut_off: bool = False) -> str:
    """The chat message for ``exc``; ``cut_off`` when part of the answer was already shown."""
    message = without_server_paths(exc.message)
    if cut_off:
        return _AFTER_ANSWER + _marked(
            f"{_WARNING} The answer was cut off: {_sentence(message)} "
            f"What arrived above is kept; ask again to continue. {_DETAILS}"
        )
    if isinstance(exc, ConfigError):
        return _marked(f"{_WARNING} helix-pipeline is misconfigured: {message} {_DETAILS}")
    return _marked(f"{_WARNING} {message} {_DETAILS}")


def without_server_paths(text: str) -> str:
    """``text`` with file paths of a server and stack frames replaced (the log keeps them)."""
    return _SERVER_PATH.sub("(a file on the server)", _STACK_FRAME.sub("", text))


def is_notice(text: str) -> bool:
    """Whether ``text`` (one chunk of an answer, as the pipe yields it) is one notice."""
    return _NOTICE.fullmatch(text) is not None


def visible(text: str) -> str:
    """``text`` as the person reads it: each notice's words without its (invisible) mark."""
    return _NOTICE.sub(lambda notice: notice[0].translate(_WITHOUT_MARK), text)


def for_open_webui(text: str) -> str:
    """``text`` with a notice's pointer to the log naming Open WebUI's log instead."""
    pointer = _DETAILS + CLOSE
    if text.endswith(pointer) and is_notice(text):
        return text[: -len(pointer)] + _DETAILS_OPEN_WEBUI + CLOSE
    return text


def trim_notice(trim: Trim) -> str | None:
    """One short line saying how Helix's history was cut to fit its limits, or ``None``."""
    parts: list[str] = []
    if trim.dropped_messages:
        noun = "message" if trim.dropped_messages == 1 else "messages"
        parts.append(
            f"{trim.dropped_messages} older {noun} left out "
            "(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS)"
        )
    if trim.truncated_messages:
        noun = "message" if trim.truncated_messages == 1 else "messages"
        parts.append(f"{trim.truncated_messages} long {noun} shortened (MAX_MESSAGE_CHARS)")
    return f"Helix gets a shortened history: {', '.join(parts)}" if parts else None


def trim_line(trim: Trim) -> str | None:
    """:func:`trim_notice` as a line to end a plain (non-streaming) answer with, where no status
    line can be shown; :func:`without_notices` takes it off again before the history."""
    notice = trim_notice(trim)
    return f"{_AFTER_ANSWER}{_marked(f'_({notice})_')}" if notice else None


def _sentence(text: str) -> str:
    """``text`` ending with a full stop, so that the next sentence does not run on."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def without_notices(messages: Sequence[Message]) -> list[Message]:
    """The messages without the notices this pipeline put in assistant replies, and without
    Helix's progress decorations.

    Open WebUI keeps a notice as (the end of) the assistant message and sends it back next turn;
    it is not part of the conversation, so it is neither stored nor sent to Helix. A reply cut off
    by an error keeps the text that arrived before the notice. Decorations
    (:mod:`helix_pipeline.decorations`) reach Open WebUI's copy when a host showed them as text
    (a plain answer's validation hint, answers from before the pipe turned them into statuses).
    """
    result: list[Message] = []
    for message in messages:
        if message.role != "assistant":
            result.append(message)
            continue
        content = message.content
        if OPEN in content:
            content = _NOTICE.sub("", content)
            if not content.strip():
                continue  # the whole reply was a notice
        kept = without_legacy_notice(content)
        if kept is None:
            continue
        answer, _ = strip_decorations(kept)
        unchanged = answer == message.content
        result.append(message if unchanged else replace(message, content=answer))
    return result
