"""What each valve's value must be: one rule per valve, its message naming the valve.

:data:`RULES` is used by the valve's validator and by its environment variable alike, so a value
that passes one passes the other; the rule of ``HELIX_BASE_URL`` is the client's own
(:func:`helix_pipeline.urls.helix_base_url`). ``READ_TIMEOUT_S`` has one more rule that reads a
second valve: :func:`check_read_timeout`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .urls import authority_problem, helix_base_url, redact_url, url_scheme

__all__ = [
    "DEFAULT_HEADERS",
    "HEARTBEAT_MARGIN",
    "HELIX_HEARTBEAT_S",
    "MAX_LIMIT",
    "MAX_TIMEOUT_S",
    "MAX_TTL_DAYS",
    "RULES",
    "check_models",
    "check_read_timeout",
    "parse_csv",
]

DEFAULT_HEADERS = "X-OpenWebUI-Chat-Id,X-Conversation-ID"
HELIX_HEARTBEAT_S = 10.0
"""How often Helix (b979a99) sends a heartbeat while Claude Code works, in seconds."""
HEARTBEAT_MARGIN = 1.5
"""READ_TIMEOUT_S must be this many heartbeat gaps at least: a late heartbeat must not cut."""
MAX_TIMEOUT_S = 86_400.0
"""A day: beyond it a socket timeout overflows on some platforms, and no answer takes that long."""
MAX_LIMIT = 1_000_000_000
MAX_TTL_DAYS = 36_500


def parse_csv(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def check_read_timeout(value: float, heartbeat: float) -> float:
    """``READ_TIMEOUT_S`` as given, unless it would cut Helix's normal pause between heartbeats."""
    floor = heartbeat * HEARTBEAT_MARGIN
    if value < floor:
        raise ValueError(
            f"READ_TIMEOUT_S must be at least {floor:g} s: Helix sends a heartbeat only every "
            f"{heartbeat:g} s while it works (HELIX_HEARTBEAT_S), so a shorter wait cuts healthy "
            "answers"
        )
    return value


def check_models(value: str) -> str:
    """``HELIX_MODELS``: comma-separated ids a URL path and a model list can carry."""
    for model_id in parse_csv(value):
        if "/" in model_id or not all(c.isprintable() and not c.isspace() for c in model_id):
            raise ValueError(
                "HELIX_MODELS must be comma-separated model ids without spaces, slashes or "
                "control characters, e.g. helix-consultant"
            )
    return value


def _check_url(value: str) -> str:
    helix_base_url(value)  # the client's own rule: what passes here, the client can use
    return value.strip()


def _check_headers(value: str) -> str:
    names = parse_csv(value)
    if not names:
        raise ValueError(
            "CONVERSATION_HEADERS must name at least one header, e.g. " + DEFAULT_HEADERS
        )
    for name in names:
        if not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise ValueError(
                f"CONVERSATION_HEADERS must be comma-separated header names; {name!r} is not one"
            )
    return ",".join(names)


def _check_api_key(value: str) -> str:
    if not all(c.isascii() and c.isprintable() and not c.isspace() for c in value):
        # Never echo the key: this message reaches logs and the chat.
        raise ValueError("HELIX_API_KEY must be printable ASCII characters without spaces")
    return value


def _check_store_url(value: str) -> str:
    from .stores import SUPPORTED_SCHEMES

    if not value:
        return value  # empty: the environment variable, else the default file
    if url_scheme(value) not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"SESSION_STORE_URL must start with one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)}; got {redact_url(value)!r}"
        )
    problem = authority_problem(value) if url_scheme(value) not in ("memory", "sqlite") else None
    if problem is not None:
        raise ValueError(f"SESSION_STORE_URL {redact_url(value)!r} {problem}")
    return value


def _check_tasks(value: str) -> str:
    if value not in ("forward", "skip"):
        raise ValueError("TASKS must be 'forward' or 'skip'")
    return value


def _number(name: str, high: float, must: str, *, zero: bool) -> Callable[[Any], Any]:
    """The rule of a numeric valve: finite, above 0 (or 0 itself if ``zero``), at most ``high``.

    NaN and infinity would break socket timeouts; huge values overflow them and date arithmetic.
    """

    def check(value: Any) -> Any:
        above = value >= 0 if zero else value > 0
        if not (math.isfinite(value) and above and value <= high):
            raise ValueError(f"{name} must be {must}")
        return value

    return check


RULES: dict[str, Callable[[Any], Any]] = {
    "HELIX_BASE_URL": _check_url,
    "HELIX_API_KEY": _check_api_key,
    "HELIX_MODELS": check_models,
    "CONVERSATION_HEADERS": _check_headers,
    "SESSION_STORE_URL": _check_store_url,
    "TASKS": _check_tasks,
    "MAX_RETRIES": _number("MAX_RETRIES", 10, "a whole number from 0 to 10", zero=True),
    "SESSION_TTL_DAYS": _number(
        "SESSION_TTL_DAYS",
        MAX_TTL_DAYS,
        f"0 (keep forever) or a number of days up to {MAX_TTL_DAYS:,}",
        zero=True,
    ),
    **{
        name: _number(
            name, MAX_LIMIT, f"a whole number greater than 0 and at most {MAX_LIMIT:,}", zero=False
        )
        for name in ("MAX_HISTORY_MESSAGES", "MAX_MESSAGE_CHARS", "MAX_HISTORY_CHARS")
    },
    **{
        name: _number(
            name,
            MAX_TIMEOUT_S,
            f"a number of seconds greater than 0 and at most {MAX_TIMEOUT_S:,.0f}",
            zero=False,
        )
        for name in ("CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "ANSWER_TIMEOUT_S", "HELIX_HEARTBEAT_S")
    },
}
"""One rule per valve, used by the valve's validator and by its environment variable."""
