"""Valves: the settings an admin sees in Open WebUI (Admin > Settings > Pipelines).

Every valve has a description, a default from the environment variable of the same name, and a
validator whose message says what the value must be. A bad environment variable never stops the
pipeline from loading: it is logged and the built-in default is used. There is no
``extra="forbid"``: the Pipelines server overlays a saved ``valves.json``, and a stale key from an
older version must not break loading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError
from .history import Budget

__all__ = [
    "DEFAULT_HEADERS",
    "FilterValves",
    "HelixValves",
    "HistoryValves",
    "default_store_url",
    "parse_csv",
]

log = logging.getLogger(__name__)

DEFAULT_HEADERS = "X-OpenWebUI-Chat-Id,X-Conversation-ID"
DATA_FOLDER = "helix_data"


def default_store_url(pipelines_dir: Path | None = None) -> str:
    """An SQLite file in a data folder beside the pipelines (``HELIX_DATA_DIR`` overrides)."""
    data_dir = os.environ.get("HELIX_DATA_DIR")
    if data_dir:
        folder = Path(data_dir)
    else:
        base = pipelines_dir or Path(os.environ.get("PIPELINES_DIR", "./pipelines"))
        folder = base / DATA_FOLDER
    return f"sqlite:///{folder.absolute() / 'sessions.db'}"


def parse_csv(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _env(name: str, default: Any, check: Callable[[Any], Any] | None = None) -> Callable[[], Any]:
    """A default factory: the environment variable ``name`` converted like ``default``, if valid."""

    def factory() -> Any:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value: Any
            if isinstance(default, bool):
                if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError("must be true or false")
                value = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw
            if check is not None:
                value = check(value)
        except (ValueError, ConfigError) as exc:
            log.warning("ignoring environment variable %s: %s; using %r", name, exc, default)
            return default
        return value

    return factory


def _check_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "HELIX_BASE_URL must be an http:// or https:// URL, e.g. http://localhost:8001"
        )
    return value.strip()


def _check_headers(value: str) -> str:
    names = parse_csv(value)
    for name in names:
        if not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise ValueError(
                f"CONVERSATION_HEADERS must be comma-separated header names; {name!r} is not one"
            )
    return ",".join(names)


def _check_store_url(value: str) -> str:
    from .stores import SUPPORTED_SCHEMES, redact_url

    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"SESSION_STORE_URL must start with one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)}; got {redact_url(value)!r}"
        )
    return value


_store_url_from_env = _env("SESSION_STORE_URL", "", _check_store_url)
"""Secrets are read from the environment when needed, never copied into a valve: the Pipelines
server returns valves unauthenticated (``GET /<id>/valves``) and saves them in ``valves.json``."""
_api_key_from_env = _env("HELIX_API_KEY", "")


def _positive(name: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not (math.isfinite(value) and value > 0):  # NaN and infinity break socket timeouts
            raise ValueError(f"{name} must be a number greater than 0")
        return value

    return check


def _not_negative(name: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < 0:
            raise ValueError(f"{name} must be 0 or more")
        return value

    return check


def _check_retries(value: int) -> int:
    if value < 0 or value > 10:
        raise ValueError("MAX_RETRIES must be between 0 and 10")
    return value


def _check_tasks(value: str) -> str:
    if value not in ("forward", "skip"):
        raise ValueError("TASKS must be 'forward' or 'skip'")
    return value


class HistoryValves(BaseModel):
    """The valves of the history service, shared by the Helix pipe and the session filter."""

    # A validation error must not echo the value: it may be a store URL with its password.
    model_config = ConfigDict(hide_input_in_errors=True)

    HISTORY_ENABLED: bool = Field(
        default_factory=_env("HISTORY_ENABLED", True),
        description="On: attach the stored history and record every turn. Off: forward untouched, record nothing.",
    )
    SESSION_STORE_URL: str = Field(
        default="",
        description="Where conversations are kept: sqlite:////abs/path.db, redis://host:6379/0 or "
        "postgresql://user:pass@host/db when several workers share it. Empty: the SESSION_STORE_URL "
        "environment variable, else an SQLite file beside the pipelines. Put a URL with a password "
        "in the environment: the Pipelines server shows valves to anyone who can reach it.",
    )
    MAX_HISTORY_MESSAGES: int = Field(
        default_factory=_env("MAX_HISTORY_MESSAGES", 100, _positive("MAX_HISTORY_MESSAGES")),
        description="Most messages sent to Helix in one request (Helix accepts at most 100).",
    )
    MAX_MESSAGE_CHARS: int = Field(
        default_factory=_env("MAX_MESSAGE_CHARS", 100_000, _positive("MAX_MESSAGE_CHARS")),
        description="Longest message sent to Helix, in characters; longer ones are truncated (Helix accepts 100,000).",
    )
    MAX_HISTORY_CHARS: int = Field(
        default_factory=_env("MAX_HISTORY_CHARS", 500_000, _positive("MAX_HISTORY_CHARS")),
        description="Total characters of history sent to Helix; the oldest turns are left out beyond it.",
    )
    STORE_TEMPORARY_CHATS: bool = Field(
        default_factory=_env("STORE_TEMPORARY_CHATS", False),
        description="Keep temporary chats in the session store too (off: in memory only, gone on restart).",
    )
    SESSION_TTL_DAYS: int = Field(
        default_factory=_env("SESSION_TTL_DAYS", 0, _not_negative("SESSION_TTL_DAYS")),
        description="Delete conversations inactive for this many days (checked at startup); 0 keeps them forever.",
    )

    @field_validator("SESSION_STORE_URL")
    @classmethod
    def _store_url(cls, value: str) -> str:
        return _check_store_url(value) if value else value

    @field_validator("MAX_HISTORY_MESSAGES", "MAX_MESSAGE_CHARS", "MAX_HISTORY_CHARS")
    @classmethod
    def _limits(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("SESSION_TTL_DAYS")
    @classmethod
    def _ttl(cls, value: int) -> int:
        if value < 0:
            raise ValueError("SESSION_TTL_DAYS must be 0 (keep forever) or a number of days")
        return value

    def budget(self) -> Budget:
        return Budget(
            max_messages=self.MAX_HISTORY_MESSAGES,
            max_message_chars=self.MAX_MESSAGE_CHARS,
            max_total_chars=self.MAX_HISTORY_CHARS,
        )

    def store_url(self, pipelines_dir: Path | None = None) -> str:
        """The valve, else the ``SESSION_STORE_URL`` environment variable, else the default file."""
        return self.SESSION_STORE_URL or _store_url_from_env() or default_store_url(pipelines_dir)


class HelixValves(HistoryValves):
    """The valves of the Helix manifold pipe."""

    HELIX_BASE_URL: str = Field(
        default_factory=_env("HELIX_BASE_URL", "http://localhost:8001", _check_url),
        description="Where Helix listens, with or without /v1, e.g. http://localhost:8001.",
    )
    HELIX_API_KEY: str = Field(
        default="",
        description="Sent as 'Authorization: Bearer <key>'. Empty: the HELIX_API_KEY environment "
        "variable, which stays out of the valves (the Pipelines server shows valves to anyone who "
        "can reach it); no key if neither is set.",
        json_schema_extra={"format": "password"},
    )
    HELIX_MODELS: str = Field(
        default_factory=_env("HELIX_MODELS", "helix-consultant"),
        description="Models to offer when Helix cannot be asked for its list (comma separated).",
    )
    CONVERSATION_HEADERS: str = Field(
        default_factory=_env("CONVERSATION_HEADERS", DEFAULT_HEADERS, _check_headers),
        description="Headers that carry the chat id to Helix (comma separated). Current Helix reads "
        "X-OpenWebUI-Chat-Id, the ADR-029 build X-Conversation-ID.",
    )
    CONNECT_TIMEOUT_S: float = Field(
        default_factory=_env("CONNECT_TIMEOUT_S", 5.0, _positive("CONNECT_TIMEOUT_S")),
        description="Seconds to wait for a connection to Helix.",
    )
    READ_TIMEOUT_S: float = Field(
        default_factory=_env("READ_TIMEOUT_S", 120.0, _positive("READ_TIMEOUT_S")),
        description="Seconds Helix may stay silent before the turn fails (Helix sends a heartbeat every 10 s; "
        "a whole answer may take 600 s).",
    )
    ANSWER_TIMEOUT_S: float = Field(
        default_factory=_env("ANSWER_TIMEOUT_S", 660.0, _positive("ANSWER_TIMEOUT_S")),
        description="Seconds a non-streaming answer (every background task, and chats with streaming "
        "off) may take in all: Helix sends nothing until it is done, and may work 600 s.",
    )
    MAX_RETRIES: int = Field(
        default_factory=_env("MAX_RETRIES", 2, _check_retries),
        description="Retries when Helix cannot be reached or answers 429/502/503/504 before any answer began.",
    )
    TASKS: Literal["forward", "skip"] = Field(
        default_factory=_env("TASKS", "forward", _check_tasks),
        description="Background tasks (titles, tags, follow-ups): 'forward' sends them to Helix without the "
        "conversation header; 'skip' answers them locally with an empty result.",
    )

    @field_validator("HELIX_BASE_URL")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("CONVERSATION_HEADERS")
    @classmethod
    def _headers(cls, value: str) -> str:
        return _check_headers(value)

    @field_validator("CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "ANSWER_TIMEOUT_S")
    @classmethod
    def _timeouts(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError("timeouts must be a number of seconds greater than 0")
        return value

    @field_validator("MAX_RETRIES")
    @classmethod
    def _retries(cls, value: int) -> int:
        return _check_retries(value)

    def api_key(self) -> str | None:
        """The valve, else the ``HELIX_API_KEY`` environment variable; ``None`` without either."""
        return self.HELIX_API_KEY or _api_key_from_env() or None

    def header_names(self) -> tuple[str, ...]:
        return tuple(parse_csv(self.CONVERSATION_HEADERS))

    def model_ids(self) -> list[str]:
        return parse_csv(self.HELIX_MODELS) or ["helix-consultant"]


class FilterValves(HistoryValves):
    """The valves of the session filter. ``pipelines`` and ``priority`` are the Pipelines server's."""

    pipelines: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Model ids this filter applies to; ['*'] means every model.",
    )
    priority: int = Field(default=0, description="Order among filters: lower runs first.")
