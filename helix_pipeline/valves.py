"""Valves: the settings an admin sees in Open WebUI (Admin > Settings > Pipelines).

Every valve has a description, a default from the environment variable of the same name
(:mod:`helix_pipeline.valve_env`), and one rule (:mod:`helix_pipeline.valve_rules`) whose message
names the valve and says what the value must be. A bad saved value never stops the Pipelines
server from starting (see :attr:`HistoryValves.tolerant`), and :meth:`HistoryValves.problems`
tells the runtime which valves are unusable, however they were set. There is no
``extra="forbid"``: the Pipelines server overlays a saved ``valves.json``, and a stale key from an
older version must not break loading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import ModelWrapValidatorHandler  # pydantic<2.9: not top-level
from typing_extensions import Self

from .history import Budget
from .payload import DEFAULT_MODEL
from .urls import EXAMPLE_BASE_URL
from .valve_env import (
    api_key_from_env,
    default_store_url,
    from_env,
    read_timeout_from_env,
    store_url_from_env,
)
from .valve_rules import (
    DEFAULT_HEADERS,
    HELIX_HEARTBEAT_S,
    RULES,
    check_models,
    check_read_timeout,
    parse_csv,
)

__all__ = [
    "DEFAULT_HEADERS",
    "FilterValves",
    "HelixValves",
    "HistoryValves",
    "default_store_url",
    "parse_csv",
]

log = logging.getLogger(__name__)

_STRICT = "helix_strict"
"""Validation context key: refuse bad values even while the valves class is tolerant."""


class HistoryValves(BaseModel):
    """The valves of the history service, shared by the Helix pipe and the session filter."""

    # A validation error must not echo the value: it may be a store URL with its password.
    model_config = ConfigDict(hide_input_in_errors=True)

    tolerant: ClassVar[bool] = False
    """While true, a value that breaks its valve's rule is replaced by the default and kept in
    :meth:`problems` instead of refused. The pipeline files set it until ``on_startup``: the
    Pipelines server rebuilds the valves from ``valves.json`` before that, and an error there stops
    the whole server from starting. After it, an admin's bad value is refused, naming the valve."""
    _refused: dict[str, str] = PrivateAttr(default_factory=dict)

    HISTORY_ENABLED: bool = Field(
        default_factory=from_env("HISTORY_ENABLED", True),
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
        default_factory=from_env("MAX_HISTORY_MESSAGES", 100),
        description="Most messages sent to Helix in one request (Helix accepts at most 100).",
    )
    MAX_MESSAGE_CHARS: int = Field(
        default_factory=from_env("MAX_MESSAGE_CHARS", 100_000),
        description="Longest message sent to Helix, in characters; longer ones are truncated (Helix accepts 100,000).",
    )
    MAX_HISTORY_CHARS: int = Field(
        default_factory=from_env("MAX_HISTORY_CHARS", 500_000),
        description="Total characters of history sent to Helix; the oldest turns are left out beyond it.",
    )
    STORE_TEMPORARY_CHATS: bool = Field(
        default_factory=from_env("STORE_TEMPORARY_CHATS", False),
        description="Keep temporary chats in the session store too (off: in memory only, gone on restart).",
    )
    SESSION_TTL_DAYS: int = Field(
        default_factory=from_env("SESSION_TTL_DAYS", 0),
        description="Delete conversations inactive for this many days (checked at startup); 0 keeps them forever.",
    )

    @field_validator("*")
    @classmethod
    def _follows_its_rule(cls, value: Any, info: ValidationInfo) -> Any:
        rule = RULES.get(info.field_name or "")
        value = value if rule is None else rule(value)
        heartbeat = info.data.get("HELIX_HEARTBEAT_S")
        if info.field_name == "READ_TIMEOUT_S" and heartbeat:  # declared before it
            check_read_timeout(value, heartbeat)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate_saved_values(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            strict = isinstance(info.context, Mapping) and info.context.get(_STRICT)
            if not cls.tolerant or strict or not isinstance(data, Mapping):
                raise
            refused = _reasons(exc)
        for name, reason in refused.items():
            log.warning("the saved %s valve is refused, its default is used: %s", name, reason)
        valves = handler({k: v for k, v in data.items() if k not in refused})
        valves._refused = refused
        return valves

    def problems(self) -> dict[str, str]:
        """Each valve that breaks its rule, with what it must be; empty when every valve is usable.

        Checks the values as they are now, so values set without validation (``model_construct``)
        are caught too, plus the saved values that were replaced by defaults while :attr:`tolerant`.
        """
        values = {name: getattr(self, name, None) for name in type(self).model_fields}
        try:
            type(self).model_validate(values, context={_STRICT: True})
        except ValidationError as exc:
            return {**self._refused, **_reasons(exc)}
        return dict(self._refused)

    def budget(self) -> Budget:
        return Budget(
            max_messages=self.MAX_HISTORY_MESSAGES,
            max_message_chars=self.MAX_MESSAGE_CHARS,
            max_total_chars=self.MAX_HISTORY_CHARS,
        )

    def store_url(self, pipelines_dir: Path | None = None) -> str:
        """The valve, else the ``SESSION_STORE_URL`` environment variable, else the default file."""
        return self.SESSION_STORE_URL or store_url_from_env() or default_store_url(pipelines_dir)


class HelixValves(HistoryValves):
    """The valves of the Helix manifold pipe."""

    HELIX_BASE_URL: str = Field(
        default_factory=from_env("HELIX_BASE_URL", EXAMPLE_BASE_URL),
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
        default_factory=from_env("HELIX_MODELS", "helix-consultant"),
        description="Models to offer when Helix cannot be asked for its list (comma separated).",
    )
    CONVERSATION_HEADERS: str = Field(
        default_factory=from_env("CONVERSATION_HEADERS", DEFAULT_HEADERS),
        description="Headers that carry the chat id to Helix (comma separated). Current Helix reads "
        "X-OpenWebUI-Chat-Id, the ADR-029 build X-Conversation-ID.",
    )
    CONNECT_TIMEOUT_S: float = Field(
        default_factory=from_env("CONNECT_TIMEOUT_S", 5.0),
        description="Seconds to wait for a connection to Helix.",
    )
    HELIX_HEARTBEAT_S: float = Field(
        default_factory=from_env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S),
        description="Seconds between the heartbeats Helix sends while it works (10 in Helix). "
        "READ_TIMEOUT_S must be at least 1.5 times this.",
    )
    READ_TIMEOUT_S: float = Field(
        default_factory=read_timeout_from_env,
        description="Seconds Helix may stay silent before the turn fails (Helix sends a heartbeat every 10 s, "
        "so at least 15; a whole answer may take 600 s).",
    )
    ANSWER_TIMEOUT_S: float = Field(
        default_factory=from_env("ANSWER_TIMEOUT_S", 660.0),
        description="Seconds a non-streaming answer (every background task, and chats with streaming "
        "off) may take in all: Helix sends nothing until it is done, and may work 600 s.",
    )
    MAX_RETRIES: int = Field(
        default_factory=from_env("MAX_RETRIES", 2),
        description="Retries when Helix cannot be reached or answers 429/502/503/504 before any answer began.",
    )
    TASKS: Literal["forward", "skip"] = Field(
        default_factory=from_env("TASKS", "skip"),
        description="Background tasks (titles, tags, follow-ups): 'skip' answers them locally with an "
        "empty result (Open WebUI then titles the chat with its first message); 'forward' sends each "
        "to Helix without the conversation header, where it is a full Claude Code run. Or set Open "
        "WebUI's task model to a small model.",
    )

    def api_key(self) -> str | None:
        """The valve, else the ``HELIX_API_KEY`` environment variable; ``None`` without either."""
        return self.HELIX_API_KEY or api_key_from_env() or None

    def header_names(self) -> tuple[str, ...]:
        return tuple(parse_csv(self.CONVERSATION_HEADERS))

    def model_ids(self) -> list[str]:
        """The ``HELIX_MODELS`` valve's ids; the default model when it is empty or unusable."""
        try:
            ids = parse_csv(check_models(self.HELIX_MODELS))
        except (ValueError, AttributeError, TypeError):  # set without validation: not a usable list
            ids = []
        return ids or [DEFAULT_MODEL]


class FilterValves(HistoryValves):
    """The valves of the session filter. ``pipelines`` and ``priority`` are the Pipelines server's."""

    pipelines: list[str] = Field(
        default_factory=lambda: ["helix-consultant"],
        description=(
            "Model ids (as Open WebUI lists them) whose chats this filter gives memory and "
            "records. Default: helix-consultant, the model Helix serves, and nothing else; "
            "['*'] would record every model's chats (gpt-4o's too) in the Helix store."
        ),
    )
    priority: int = Field(default=0, description="Order among filters: lower runs first.")


def _reasons(exc: ValidationError) -> dict[str, str]:
    """Valve name -> why its value was refused: our rule's own words, else pydantic's."""
    reasons: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "valves"
        context = error.get("ctx") or {}
        if error["type"] == "value_error" and "error" in context:
            reason = str(context["error"])
        else:
            reason = f"{name} is invalid: {error['msg']}"
        reasons.setdefault(name, reason)
    return reasons
