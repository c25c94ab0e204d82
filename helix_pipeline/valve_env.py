"""Valve defaults from environment variables, and the secrets read from them when needed.

A valve's default is the environment variable of the same name, held to the valve's own rule
(:data:`~helix_pipeline.valve_rules.RULES`): a bad variable never stops the pipeline from loading,
it is logged and the built-in default is used. Secrets (``HELIX_API_KEY``, a ``SESSION_STORE_URL``
with a password) are read from the environment when needed, never copied into a valve: the
Pipelines server returns valves unauthenticated (``GET /<id>/valves``) and saves them in
``valves.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .valve_rules import HELIX_HEARTBEAT_S, RULES, check_read_timeout

__all__ = [
    "DATA_FOLDER",
    "api_key_from_env",
    "default_store_url",
    "from_env",
    "read_timeout_from_env",
    "store_url_from_env",
]

log = logging.getLogger(__name__)

DATA_FOLDER = "helix_data"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def default_store_url(pipelines_dir: Path | None = None) -> str:
    """An SQLite file in a data folder beside the pipelines (``HELIX_DATA_DIR`` overrides)."""
    data_dir = os.environ.get("HELIX_DATA_DIR")
    if data_dir:
        folder = Path(data_dir)
    else:
        base = pipelines_dir or Path(os.environ.get("PIPELINES_DIR", "./pipelines"))
        folder = base / DATA_FOLDER
    return f"sqlite:///{folder.absolute() / 'sessions.db'}"


def from_env(name: str, default: Any) -> Callable[[], Any]:
    """A default factory: the environment variable ``name`` converted like ``default``, if valid.

    The variable must pass the valve's own rule (:data:`RULES`); else it is logged and ignored.
    """

    def factory() -> Any:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = _converted(name, raw, default)
            rule = RULES.get(name)
            if rule is not None:
                value = rule(value)
        except ValueError as exc:  # ConfigError is a ValueError too
            log.warning("ignoring environment variable %s: %s; using %r", name, exc, default)
            return default
        return value

    return factory


def _converted(name: str, raw: str, default: Any) -> Any:
    """``raw`` as the type of ``default``; a :class:`ValueError` if it is not one."""
    if isinstance(default, bool):
        if raw.strip().lower() not in (*_TRUE, *_FALSE):
            raise ValueError(f"{name} must be true or false")
        return raw.strip().lower() in _TRUE
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def read_timeout_from_env() -> float:
    """READ_TIMEOUT_S's default: its environment variable, if it passes the heartbeat rule too."""
    value: float = from_env("READ_TIMEOUT_S", 120.0)()
    try:
        return check_read_timeout(value, from_env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S)())
    except ValueError as exc:
        log.warning("ignoring environment variable READ_TIMEOUT_S: %s; using 120.0", exc)
        return 120.0


store_url_from_env: Callable[[], str] = from_env("SESSION_STORE_URL", "")
"""The ``SESSION_STORE_URL`` environment variable, if it passes the valve's rule; else empty."""
api_key_from_env: Callable[[], str] = from_env("HELIX_API_KEY", "")
"""The ``HELIX_API_KEY`` environment variable, if it passes the valve's rule; else empty."""
