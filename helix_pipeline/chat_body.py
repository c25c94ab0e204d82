"""What the Pipelines server's ``/chat/completions`` accepts, and the repair of a body it refuses.

Read from the server (open-webui/pipelines at 26b8f20, ``schemas.py`` and
``utils/pipelines/main.py``) and checked against it: ``messages`` must be a list of objects, each
with a string ``role`` and a ``content`` that is a string or a list; ``stream`` a boolean. Anything
else is refused with a 422 before ``pipe()`` runs, so the person sees nothing useful: an
assistant message of a tool call (``content: null``) is enough. The server also reads the last
user message's list parts as ``part["type"]`` and ``part["text"]``: a part without them is a 500.

Open WebUI calls the pipe model's own inlet first, so the Helix pipe repairs the body there with
:func:`repair_chat_body`, and ``pipe()`` then answers with a clear message where nothing is left
to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conversation import PRIVATE_KEY
from .errors import InputError
from .messages import content_to_text

__all__ = ["NO_MESSAGES", "REPAIRS_KEY", "nothing_to_send", "repair_chat_body"]

NO_MESSAGES = "the request had no 'messages' list"
"""The repair note that ``pipe()`` turns into its answer when nothing is left to send."""
REPAIRS_KEY = "repairs"
"""Where in the private key (:data:`~helix_pipeline.conversation.PRIVATE_KEY`) the inlet leaves
its repair notes for ``pipe()``."""
_FALSE_WORDS = frozenset({"false", "0", "no", "off", "f", "n", ""})


def repair_chat_body(body: dict[str, Any]) -> list[str]:
    """Make ``body`` acceptable to the Pipelines server, in place; what was repaired, for the log.

    ``messages`` missing or not a list becomes ``[]`` (noted as :data:`NO_MESSAGES`); an entry that
    is not an object or has no string role is dropped; ``content`` that is ``null``, missing, or of
    another type becomes text; ``stream`` that is not a boolean becomes one.
    """
    repairs: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        kept = _repaired_messages(messages, repairs)
        if kept is not None:
            body["messages"] = kept
    else:
        body["messages"] = []
        repairs.append(NO_MESSAGES)
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        body["stream"] = _as_bool(stream)
        repairs.append("'stream' was not true or false")
    return repairs


def _repaired_messages(messages: list[Any], repairs: list[str]) -> list[Any] | None:
    """The messages the server accepts; ``None`` when every one is acceptable as it is (the
    common case: then nothing is copied)."""
    for index, message in enumerate(messages):
        repaired = _repair_message(message, repairs)
        if repaired is None or repaired is not message:  # dropped (``None`` too) or repaired
            kept = messages[:index]
            if repaired is not None:
                kept.append(repaired)
            for later in messages[index + 1 :]:
                repaired = _repair_message(later, repairs)
                if repaired is not None:
                    kept.append(repaired)
            return kept
    return None


def _repair_message(message: object, repairs: list[str]) -> object | None:
    """``message`` itself when acceptable, a repaired copy, or ``None`` to drop it."""
    if (  # what Open WebUI sends, checked first: the general path below keeps it as it is too
        message.__class__ is dict
        and message.get("role").__class__ is str
        and message.get("content").__class__ is str
    ):
        return message
    if not isinstance(message, Mapping):
        repairs.append("a message that is not an object was dropped")
        return None
    if not isinstance(message.get("role"), str):
        repairs.append("a message without a role was dropped")
        return None
    content = message.get("content")
    if isinstance(content, str) or (isinstance(content, list) and _parts_readable(content)):
        return message
    if content is not None:
        repairs.append(f"a message's content ({type(content).__name__}) was turned into text")
    return {**message, "content": content_to_text(content)}


def _parts_readable(parts: list[Any]) -> bool:
    """Whether the server can read every part: an object with a string ``type``, and ``text``
    when it is a text part."""
    return all(
        isinstance(part, Mapping)
        and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str))
        for part in parts
    )


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    if value is None:
        return True  # the server's own default
    return bool(value) if isinstance(value, (int, float)) else True


def nothing_to_send(body: Mapping[str, Any]) -> InputError:
    """The error ``pipe()`` answers with when no user message is left: why, and what to do."""
    private = body.get(PRIVATE_KEY)
    repairs = private.get(REPAIRS_KEY) if isinstance(private, Mapping) else None
    why = NO_MESSAGES if isinstance(repairs, list) and NO_MESSAGES in repairs else None
    return InputError(
        f"There is nothing to send to Helix: {why or 'the request holds no user message'}. "
        "Type a message and send it again."
    )
