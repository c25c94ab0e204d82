"""What a pipeline instance builds from its valves, rebuilt when an admin changes them.

The Pipelines server replaces ``pipeline.valves`` after loading ``valves.json`` and on every update,
so pipelines read their valves through a callable and rebuild only what a changed valve affects: a
store is reopened only when its URL changes. Valves that break their rules (restored from an old
``valves.json``, set with ``model_construct``) build nothing: :func:`unusable_valves` turns them
into one :class:`~helix_pipeline.errors.ConfigError` that the pipelines report in the chat, since
an exception there would make the Pipelines server answer 500 to every request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .errors import ConfigError
from .service import HistoryService
from .stores import open_store
from .stores.lazy import LazyStore
from .urls import redact_url
from .valves import HistoryValves

__all__ = ["Reconfigurable", "build_history", "unusable_valves"]

WHERE_TO_FIX = "An admin can correct it in Admin Panel > Settings > Pipelines."

log = logging.getLogger(__name__)

V = TypeVar("V", bound=HistoryValves)
R = TypeVar("R")


def build_history(
    valves: HistoryValves,
    pipelines_dir: Path | None,
    previous: HistoryService | None = None,
    previous_valves: HistoryValves | None = None,
) -> HistoryService:
    """A history service for ``valves``, keeping ``previous``'s stores when their URL is unchanged."""
    url = valves.store_url(pipelines_dir)
    unchanged = (
        previous_valves is not None
        and previous_valves.store_url(pipelines_dir) == url
        and previous_valves.SESSION_TTL_DAYS == valves.SESSION_TTL_DAYS
    )
    if previous is not None and unchanged:
        store = previous.store
        temporary = previous.temporary_store
    else:
        if previous is not None:
            previous.close()
        ttl_days = valves.SESSION_TTL_DAYS
        store = LazyStore(redact_url(url), lambda: open_store(url, ttl_days=ttl_days))
        temporary = None
    return HistoryService(
        store,
        budget=valves.budget(),
        store_temporary=valves.STORE_TEMPORARY_CHATS,
        enabled=valves.HISTORY_ENABLED,
        temporary_store=temporary,
    )


def unusable_valves(valves: HistoryValves) -> ConfigError | None:
    """One error naming each valve that breaks its rule and what it must be; ``None`` if all are
    usable. Each problem is logged once here (callers build once per valves object)."""
    problems = valves.problems()
    if not problems:
        return None
    for name, reason in problems.items():
        log.warning(
            "the %s valve is unusable, turns are refused until it is corrected: %s", name, reason
        )
    reasons = "; ".join(_sentence_body(reason) for reason in problems.values())
    return ConfigError(f"{reasons}. {WHERE_TO_FIX}", setting=next(iter(problems)))


def _sentence_body(text: str) -> str:
    return text.rstrip().rstrip(".")


class Reconfigurable(Generic[V, R]):
    """Holds the object built from the current valves; rebuilds it when the valves object changes."""

    def __init__(
        self, valves: Callable[[], V], build: Callable[[V, V | None, R | None], R]
    ) -> None:
        self._valves = valves
        self._build = build
        self._lock = threading.Lock()
        self._seen: V | None = None
        self._built: R | None = None

    def get(self) -> R:
        valves = self._valves()
        built = self._built
        if valves is self._seen and built is not None:
            return built
        with self._lock:
            if valves is not self._seen or self._built is None:
                log.debug("building %s from new valves", type(self).__name__)
                self._built = self._build(valves, self._seen, self._built)
                self._seen = valves
            return self._built
