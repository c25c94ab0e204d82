"""Helix's rules as FakeHelix applies them: model id, limits, headers, session ids, validation.

The request model and its FastAPI-style 422 ``detail`` items (:func:`validation_errors`), Helix's
own 400 input check (:func:`helix_rejection`: message count, roles, message length), the
conversation header each build reads, and the ADR-029 build's session id for a request without
one (:func:`adr029_stable_session_id`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

__all__ = [
    "MAX_MESSAGES",
    "MAX_MESSAGE_CHARS",
    "MODEL_ID",
    "VALID_ROLES",
    "HeaderMode",
    "adr029_stable_session_id",
    "helix_rejection",
    "validation_errors",
]

HeaderMode = Literal["current", "adr029"]
MODEL_ID = "helix-consultant"
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
VALID_ROLES = ("assistant", "system", "user")
HEADER_BY_MODE: dict[str, str] = {"current": "X-OpenWebUI-Chat-Id", "adr029": "X-Conversation-ID"}


def adr029_stable_session_id(first_message: str) -> str:
    """The ADR-029 build's session id without a header: three words and a hash of the message."""
    words = re.sub(r"[^a-zA-Z0-9\s]", "", first_message.lower()).split()[:3]
    prefix = "-".join(words) if words else "session"
    digest = hashlib.sha256(f"helix-session:{first_message[:200]}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


class _ChatMessage(BaseModel):
    role: str
    content: str


class _ChatRequest(BaseModel):
    """The request model Helix validates (pydantic gives the same 422 details as FastAPI)."""

    model: str = MODEL_ID
    messages: list[_ChatMessage]
    stream: bool = False
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)


def validation_errors(body: object) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` items for a chat completion body (empty when valid)."""
    try:
        _ChatRequest.model_validate(body)
    except ValidationError as exc:
        details = exc.errors(include_url=False)
        return [
            {**e, "loc": ["body", *e["loc"]]} for e in json.loads(json.dumps(details, default=str))
        ]
    return []


def helix_rejection(messages: Sequence[Mapping[str, str]]) -> str | None:
    """Helix's own input check (a 400 ``detail``), or ``None`` when the messages pass."""
    if len(messages) > MAX_MESSAGES:
        return f"Too many messages: {len(messages)}. Maximum allowed: {MAX_MESSAGES}"
    for index, message in enumerate(messages):
        if message["role"] not in VALID_ROLES:
            return (
                f"Invalid role '{message['role']}' in message {index}. "
                f"Valid roles: {', '.join(VALID_ROLES)}"
            )
        if len(message["content"]) > MAX_MESSAGE_CHARS:
            return (
                f"Message {index} too long: {len(message['content'])} characters. "
                f"Maximum allowed: {MAX_MESSAGE_CHARS}"
            )
    return None
