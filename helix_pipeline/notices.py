"""The one short message the person in the chat sees when a turn fails.

It says what went wrong and what to do; the details go to the log. Never a traceback, never a
secret (error messages are built without them, see :mod:`helix_pipeline.errors`), never a file
path of the server (Helix's 500 quotes its own: :func:`notice_for` replaces them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from .decorations import strip_decorations
from .errors import ConfigError, HelixPipelineError
from .history import Trim
from .messages import Message

__all__ = [
    "EMPTY_ANSWER",
    "UNEXPECTED",
    "for_open_webui",
    "is_notice",
    "notice_for",
    "trim_line",
    "trim_notice",
    "without_notices",
    "without_server_paths",
]

_MARK = "⚠️"
_DETAILS = "(Details are in the Pipelines server log.)"
_DETAILS_OPEN_WEBUI = "(Details are in Open WebUI's log.)"
"""The same notices from an Open WebUI Function, which runs inside Open WebUI."""
_CUT_OFF = f"\n\n{_MARK} The answer was cut off: "
EMPTY_ANSWER = (
    f"{_MARK} Helix answered nothing: its answer ended before any text. Look at Helix's log for "
    f"the cause, then ask again. {_DETAILS}"
)
UNEXPECTED = f"{_MARK} helix-pipeline hit an unexpected error and could not answer. {_DETAILS}"


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
        return (
            f"{_CUT_OFF}{_sentence(message)} "
            f"What arrived above is kept; ask again to continue. {_DETAILS}"
        )
    if isinstance(exc, ConfigError):
        return f"{_MARK} helix-pipeline is misconfigured: {message} {_DETAILS}"
    return f"{_MARK} {message} {_DETAILS}"


def without_server_paths(text: str) -> str:
    """``text`` with file paths of a server and stack frames replaced (the log keeps them)."""
    return _SERVER_PATH.sub("(a file on the server)", _STACK_FRAME.sub("", text))


def is_notice(text: str) -> bool:
    """Whether ``text`` (one chunk of an answer) is one of these notices."""
    return text.endswith((_DETAILS, _DETAILS_OPEN_WEBUI)) and text.lstrip().startswith(_MARK)


def for_open_webui(text: str) -> str:
    """``text`` with a notice's pointer to the log naming Open WebUI's log instead."""
    if text.endswith(_DETAILS):
        return text[: -len(_DETAILS)] + _DETAILS_OPEN_WEBUI
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


_TRIM_MARK = "\n\n_("
_TRIM_LINE = re.compile(r"\n\n_\(Helix gets a shortened history: [^\n]*\)_\Z")


def trim_line(trim: Trim) -> str | None:
    """:func:`trim_notice` as a line to end a plain (non-streaming) answer with, where no status
    line can be shown; :func:`without_notices` takes it off again before the history."""
    notice = trim_notice(trim)
    return f"{_TRIM_MARK}{notice})_" if notice else None


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
        content = message.content
        if message.role != "assistant":
            result.append(message)
            continue
        if content.endswith(")_"):
            content = _TRIM_LINE.sub("", content)
        if content.endswith((_DETAILS, _DETAILS_OPEN_WEBUI)):
            if content.startswith(_MARK):
                continue
            cut = content.rfind(_CUT_OFF)
            content = content[:cut] if cut >= 0 else content
        answer, _ = strip_decorations(content)
        unchanged = answer == message.content
        result.append(message if unchanged else replace(message, content=answer))
    return result
