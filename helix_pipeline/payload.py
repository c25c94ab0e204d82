"""What is sent to Helix: the request body rules, and the answer text of a completion.

Helix speaks the OpenAI chat completions API, and other OpenAI-compatible servers reject Open
WebUI's own keys (``tools``, ``metadata``, ...): :func:`build_payload` copies only what such a
server may receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .conversation import PRIVATE_KEY
from .errors import ConfigError
from .messages import Message
from .sse import completion_content

__all__ = [
    "DEFAULT_MODEL",
    "FORWARDED_FIELDS",
    "NEVER_FORWARDED",
    "build_payload",
    "check_extra_fields",
    "completion_text",
]

DEFAULT_MODEL = "helix-consultant"
FORWARDED_FIELDS = ("temperature", "max_tokens", "top_p", "stop")
"""Body fields forwarded to Helix besides ``model``, ``messages`` and ``stream``."""
NEVER_FORWARDED = frozenset({"tools", "tool_choice", "metadata", "features", "user", PRIVATE_KEY})
"""Open WebUI's own keys, which other OpenAI-compatible servers reject; never sent to Helix."""


def build_payload(
    messages: Sequence[Message | Mapping[str, Any]],
    body: Mapping[str, Any],
    *,
    stream: bool,
    extra_fields: Iterable[str] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """The request body for Helix: only what an OpenAI-compatible server may receive.

    ``messages`` (:class:`Message` objects or dicts) are reduced to ``role`` and ``content``.
    From ``body`` only ``model`` (unless ``model`` is given), ``temperature``, ``max_tokens``,
    ``top_p``, ``stop`` and the named ``extra_fields`` are copied, and only when set; ``tools``,
    ``metadata``, ``features``, ``user`` and private keys (``_...``) never are.
    """
    names = check_extra_fields(extra_fields)
    chosen_model = model or body.get("model")
    payload: dict[str, Any] = {
        "model": chosen_model if isinstance(chosen_model, str) and chosen_model else DEFAULT_MODEL,
        "messages": [
            m.to_wire()
            if isinstance(m, Message)
            else {"role": m.get("role"), "content": m.get("content")}
            for m in messages
        ],
        "stream": stream,
    }
    for name in (*FORWARDED_FIELDS, *names):
        value = body.get(name)
        if value is not None:
            payload[name] = value
    return payload


def check_extra_fields(extra_fields: Iterable[str]) -> tuple[str, ...]:
    """The extra field names, stripped; :class:`ConfigError` for one that must never be sent."""
    names = tuple(name.strip() for name in extra_fields if name and name.strip())
    for name in names:
        if name in NEVER_FORWARDED or name.startswith("_") or name in ("model", "messages"):
            raise ConfigError(
                f"The extra field {name!r} cannot be forwarded to Helix: remove it from the "
                "forwarded extra fields (Open WebUI's own and private keys are never sent).",
                setting="extra_fields",
            )
    return names


def completion_text(completion: Mapping[str, Any]) -> str:
    """The answer text of a non-streaming completion (``""`` when Helix sent ``null``)."""
    return completion_content(completion) or ""
