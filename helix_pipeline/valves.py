"""Valves: the settings an admin sees in Open WebUI (Admin > Settings > Pipelines).

Every valve has a description, a default from the environment variable of the same name, and one
rule (:data:`_RULES`) whose message names the valve and says what the value must be; the rule of
``HELIX_BASE_URL`` is the client's own (:func:`helix_pipeline.urls.helix_base_url`). A bad
environment variable never stops the pipeline from loading: it is logged and the built-in default is
used. A bad saved value never stops the Pipelines server from starting (see
:attr:`HistoryValves.tolerant`), and :meth:`HistoryValves.problems` tells the runtime which valves
are unusable, however they were set. There is no ``extra="forbid"``: the Pipelines server overlays a
saved ``valves.json``, and a stale key from an older version must not break loading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
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
from .urls import (
    EXAMPLE_BASE_URL,
    authority_problem,
    helix_base_url,
    redact_url,
    url_scheme,
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

DEFAULT_HEADERS = "X-OpenWebUI-Chat-Id,X-Conversation-ID"
DATA_FOLDER = "helix_data"
_STRICT = "helix_strict"
"""Validation context key: refuse bad values even while the valves class is tolerant."""


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


def _env(name: str, default: Any) -> Callable[[], Any]:
    """A default factory: the environment variable ``name`` converted like ``default``, if valid.

    The variable must pass the valve's own rule (:data:`_RULES`); else it is logged and ignored.
    """

    def factory() -> Any:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value: Any
            if isinstance(default, bool):
                if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"{name} must be true or false")
                value = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw
            rule = _RULES.get(name)
            if rule is not None:
                value = rule(value)
        except ValueError as exc:  # ConfigError is a ValueError too
            log.warning("ignoring environment variable %s: %s; using %r", name, exc, default)
            return default
        return value

    return factory


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


def _check_models(value: str) -> str:
    for model_id in parse_csv(value):
        if "/" in model_id or not all(c.isprintable() and not c.isspace() for c in model_id):
            raise ValueError(
                "HELIX_MODELS must be comma-separated model ids without spaces, slashes or "
                "control characters, e.g. helix-consultant"
            )
    return value


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


def _check_tasks(value: str) -> str:
    if value not in ("forward", "skip"):
        raise ValueError("TASKS must be 'forward' or 'skip'")
    return value


HELIX_HEARTBEAT_S = 10.0
"""How often Helix (b979a99) sends a heartbeat while Claude Code works, in seconds."""
HEARTBEAT_MARGIN = 1.5
"""READ_TIMEOUT_S must be this many heartbeat gaps at least: a late heartbeat must not cut."""


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


def _read_timeout_from_env() -> float:
    """READ_TIMEOUT_S's default: its environment variable, if it passes the heartbeat rule too."""
    value: float = _env("READ_TIMEOUT_S", 120.0)()
    try:
        return check_read_timeout(value, _env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S)())
    except ValueError as exc:
        log.warning("ignoring environment variable READ_TIMEOUT_S: %s; using 120.0", exc)
        return 120.0


MAX_TIMEOUT_S = 86_400.0
"""A day: beyond it a socket timeout overflows on some platforms, and no answer takes that long."""
MAX_LIMIT = 1_000_000_000
MAX_TTL_DAYS = 36_500

_RULES: dict[str, Callable[[Any], Any]] = {
    "HELIX_BASE_URL": _check_url,
    "HELIX_API_KEY": _check_api_key,
    "HELIX_MODELS": _check_models,
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

_store_url_from_env = _env("SESSION_STORE_URL", "")
"""Secrets are read from the environment when needed, never copied into a valve: the Pipelines
server returns valves unauthenticated (``GET /<id>/valves``) and saves them in ``valves.json``."""
_api_key_from_env = _env("HELIX_API_KEY", "")


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
        default_factory=_env("MAX_HISTORY_MESSAGES", 100),
        description="Most messages sent to Helix in one request (Helix accepts at most 100).",
    )
    MAX_MESSAGE_CHARS: int = Field(
        default_factory=_env("MAX_MESSAGE_CHARS", 100_000),
        description="Longest message sent to Helix, in characters; longer ones are truncated (Helix accepts 100,000).",
    )
    MAX_HISTORY_CHARS: int = Field(
        default_factory=_env("MAX_HISTORY_CHARS", 500_000),
        description="Total characters of history sent to Helix; the oldest turns are left out beyond it.",
    )
    STORE_TEMPORARY_CHATS: bool = Field(
        default_factory=_env("STORE_TEMPORARY_CHATS", False),
        description="Keep temporary chats in the session store too (off: in memory only, gone on restart).",
    )
    SESSION_TTL_DAYS: int = Field(
        default_factory=_env("SESSION_TTL_DAYS", 0),
        description="Delete conversations inactive for this many days (checked at startup); 0 keeps them forever.",
    )

    @field_validator("*")
    @classmethod
    def _follows_its_rule(cls, value: Any, info: ValidationInfo) -> Any:
        rule = _RULES.get(info.field_name or "")
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
        return self.SESSION_STORE_URL or _store_url_from_env() or default_store_url(pipelines_dir)


class HelixValves(HistoryValves):
    """The valves of the Helix manifold pipe."""

    HELIX_BASE_URL: str = Field(
        default_factory=_env("HELIX_BASE_URL", EXAMPLE_BASE_URL),
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
        default_factory=_env("CONVERSATION_HEADERS", DEFAULT_HEADERS),
        description="Headers that carry the chat id to Helix (comma separated). Current Helix reads "
        "X-OpenWebUI-Chat-Id, the ADR-029 build X-Conversation-ID.",
    )
    CONNECT_TIMEOUT_S: float = Field(
        default_factory=_env("CONNECT_TIMEOUT_S", 5.0),
        description="Seconds to wait for a connection to Helix.",
    )
    HELIX_HEARTBEAT_S: float = Field(
        default_factory=_env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S),
        description="Seconds between the heartbeats Helix sends while it works (10 in Helix). "
        "READ_TIMEOUT_S must be at least 1.5 times this.",
    )
    READ_TIMEOUT_S: float = Field(
        default_factory=_read_timeout_from_env,
        description="Seconds Helix may stay silent before the turn fails (Helix sends a heartbeat every 10 s, "
        "so at least 15; a whole answer may take 600 s).",
    )
    ANSWER_TIMEOUT_S: float = Field(
        default_factory=_env("ANSWER_TIMEOUT_S", 660.0),
        description="Seconds a non-streaming answer (every background task, and chats with streaming "
        "off) may take in all: Helix sends nothing until it is done, and may work 600 s.",
    )
    MAX_RETRIES: int = Field(
        default_factory=_env("MAX_RETRIES", 2),
        description="Retries when Helix cannot be reached or answers 429/502/503/504 before any answer began.",
    )
    TASKS: Literal["forward", "skip"] = Field(
        default_factory=_env("TASKS", "skip"),
        description="Background tasks (titles, tags, follow-ups): 'skip' answers them locally with an "
        "empty result (Open WebUI then titles the chat with its first message); 'forward' sends each "
        "to Helix without the conversation header, where it is a full Claude Code run. Or set Open "
        "WebUI's task model to a small model.",
    )

    def api_key(self) -> str | None:
        """The valve, else the ``HELIX_API_KEY`` environment variable; ``None`` without either."""
        return self.HELIX_API_KEY or _api_key_from_env() or None

    def header_names(self) -> tuple[str, ...]:
        return tuple(parse_csv(self.CONVERSATION_HEADERS))

    def model_ids(self) -> list[str]:
        """The ``HELIX_MODELS`` valve's ids; the default model when it is empty or unusable."""
        try:
            ids = parse_csv(_check_models(self.HELIX_MODELS))
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
