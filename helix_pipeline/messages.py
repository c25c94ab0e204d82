"""Chat messages as helix-pipeline handles them: one role, text content, an optional id.

Open WebUI and OpenAI clients send messages in many shapes (content as a list of parts, roles such
as ``tool`` or ``developer``, extra keys). Helix accepts only ``system``/``user``/``assistant`` and
string content, so every incoming message is normalised here, once, into a :class:`Message`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = ["Message", "Role", "content_to_text", "message_from_dict", "messages_from_dicts"]

Role = Literal["system", "user", "assistant"]

_ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_IMAGE_PLACEHOLDER = "[image]"


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """One chat message: what Helix sees (role, content) plus what the store keeps beside it."""

    role: Role
    content: str
    message_id: str | None = None
    partial: bool = False
    created_at: float | None = None

    def __init__(
        self,
        role: Role,
        content: str,
        message_id: str | None = None,
        partial: bool = False,
        created_at: float | None = None,
    ) -> None:
        # A turn builds a hundred messages: setting the slots directly costs half the frozen
        # dataclass's own __init__ (which goes through object.__setattr__ for each field).
        _set_role(self, role)
        _set_content(self, content)
        _set_message_id(self, message_id)
        _set_partial(self, partial)
        _set_created_at(self, created_at)

    def to_wire(self) -> dict[str, str]:
        """The message as Helix takes it: role and string content only."""
        return {"role": self.role, "content": self.content}

    def with_id(self, message_id: str | None) -> Message:
        return replace(self, message_id=message_id)

    def same_as(self, other: Message) -> bool:
        """Whether ``other`` is this (stored) message sent again.

        Ids decide when both sides have one. Otherwise role and text decide, ignoring surrounding
        white space; a stored partial reply also matches a longer text that starts with it (Open WebUI
        keeps what was streamed, plus our error note, as the assistant message).
        """
        if self.role != other.role:
            return False
        if self.message_id and other.message_id:
            return self.message_id == other.message_id
        mine, theirs = self.content.strip(), other.content.strip()
        if mine == theirs:
            return True
        return self.partial and bool(mine) and theirs.startswith(mine)


# The slots' own setters, in field order (an added field breaks this line, not the messages).
_set_role, _set_content, _set_message_id, _set_partial, _set_created_at = (
    vars(Message)[field.name].__set__ for field in fields(Message)
)


def content_to_text(content: object) -> str:
    """Turn OpenAI content (a string, a list of parts, or ``None``) into plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for part in content if (text := _part_to_text(part)))
    try:
        return str(content)
    except ValueError:  # an int beyond str()'s 4,300 digits, possibly inside a dict
        return ""


def _part_to_text(part: object) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping):
        return ""
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = part.get("text")
        return text if isinstance(text, str) else ""
    if kind in ("image_url", "input_image", "image"):
        return _IMAGE_PLACEHOLDER
    return ""


def _output_text(output: object) -> str:
    """The text of a message's ``output`` items (Open WebUI 0.10 keeps an assistant reply there,
    with ``content: ""``): the text parts of its ``message`` items, as in :func:`content_to_text`."""
    if not isinstance(output, list):
        return ""
    texts = (
        content_to_text(item.get("content"))
        for item in output
        if isinstance(item, Mapping) and item.get("type", "message") == "message"
    )
    return "\n".join(text for text in texts if text)


def message_from_dict(raw: object) -> Message | None:
    """Normalise one OpenAI-style message dict; ``None`` for something that is not a message.

    The text is ``content``, else (when that is empty) the ``output`` items Open WebUI 0.10 puts
    an assistant reply in.

    Roles Helix does not know are never forwarded as such: ``developer`` becomes ``system``, and a
    ``tool``/``function`` result becomes an assistant message that says what it is.
    """
    # Run for every message of every turn: a plain dict with a known role, text and a string id
    # (what Open WebUI sends) is read inline; anything else takes the general path below, which
    # gives the same message for it.
    if raw.__class__ is dict:
        role_raw, content, message_id = raw.get("role"), raw.get("content"), raw.get("id")
        if (
            role_raw.__class__ is str
            and content.__class__ is str
            and content
            and (message_id is None or message_id.__class__ is str)
            and (role := _ROLE_ALIASES.get(role_raw)) is not None
        ):
            return Message(role, content, message_id or None)
    return _any_message(raw)


def _any_message(raw: object) -> Message | None:
    if not isinstance(raw, Mapping):
        return None
    role_raw = raw.get("role")
    content = content_to_text(raw.get("content")) or _output_text(raw.get("output"))
    role = _ROLE_ALIASES.get(role_raw) if isinstance(role_raw, str) else None
    if role is None:
        if role_raw in ("tool", "function"):
            role, content = "assistant", f"[tool result]\n{content}"
        else:
            return None
    message_id = raw.get("id")
    return Message(
        role, content, message_id if isinstance(message_id, str) and message_id else None
    )


def messages_from_dicts(raw: Any) -> list[Message]:
    """Normalise a message list, dropping entries that are not messages at all."""
    if not isinstance(raw, Iterable) or isinstance(raw, (str, bytes, Mapping)):
        return []
    return [m for item in raw if (m := message_from_dict(item)) is not None]
