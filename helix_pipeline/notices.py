"""The one short message the person in the chat sees when a turn fails.

It says what went wrong and what to do; the details go to the log. Never a traceback, never a
secret (error messages are built without them, see :mod:`helix_pipeline.errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .errors import ConfigError, HelixPipelineError
from .messages import Message

__all__ = [
    "EMPTY_ANSWER",
    "UNEXPECTED",
    "for_open_webui",
    "is_notice",
    "notice_for",
    "without_notices",
]

_MARK = "⚠️"
_DETAILS = "(Details are in the Pipelines server log.)"
_DETAILS_OPEN_WEBUI = "(Details are in Open WebUI's log.)"
"""The same notices from an Open WebUI Function, which runs inside Open WebUI."""
_CUT_OFF = f"\n\n{_MARK} The answer was cut off: "
EMPTY_ANSWER = f"{_MARK} Helix sent an empty answer. Please try again. {_DETAILS}"
UNEXPECTED = f"{_MARK} helix-pipeline hit an unexpected error and could not answer. {_DETAILS}"


def notice_for(exc: HelixPipelineError, *, cut_off: bool = False) -> str:
    """The chat message for ``exc``; ``cut_off`` when part of the answer was already shown."""
    if cut_off:
        return (
            f"{_CUT_OFF}{_sentence(exc.message)} "
            f"What arrived above is kept; ask again to continue. {_DETAILS}"
        )
    if isinstance(exc, ConfigError):
        return f"{_MARK} helix-pipeline is misconfigured: {exc.message} {_DETAILS}"
    return f"{_MARK} {exc.message} {_DETAILS}"


def is_notice(text: str) -> bool:
    """Whether ``text`` (one chunk of an answer) is one of these notices."""
    return text.endswith((_DETAILS, _DETAILS_OPEN_WEBUI)) and text.lstrip().startswith(_MARK)


def for_open_webui(text: str) -> str:
    """``text`` with a notice's pointer to the log naming Open WebUI's log instead."""
    if text.endswith(_DETAILS):
        return text[: -len(_DETAILS)] + _DETAILS_OPEN_WEBUI
    return text


def _sentence(text: str) -> str:
    """``text`` ending with a full stop, so that the next sentence does not run on."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def without_notices(messages: Sequence[Message]) -> list[Message]:
    """The messages without the notices this pipeline put in assistant replies.

    Open WebUI keeps a notice as (the end of) the assistant message and sends it back next turn;
    it is not part of the conversation, so it is neither stored nor sent to Helix. A reply cut off
    by an error keeps the text that arrived before the notice.
    """
    result: list[Message] = []
    for message in messages:
        content = message.content
        if message.role != "assistant" or not content.endswith((_DETAILS, _DETAILS_OPEN_WEBUI)):
            result.append(message)
        elif not content.startswith(_MARK):
            cut = content.rfind(_CUT_OFF)
            result.append(replace(message, content=content[:cut]) if cut >= 0 else message)
    return result
