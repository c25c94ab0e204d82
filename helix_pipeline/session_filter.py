"""The history service as an Open WebUI filter, for a Helix reached through Open WebUI's own
OpenAI connection (with ``ENABLE_FORWARD_USER_INFO_HEADERS=true`` carrying the chat id).

``inlet`` attaches the stored history to ``messages`` when the client did not send it; ``outlet``
records the turn. It adds no top-level keys: providers reject unknown arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conversation import read_conversation
from .messages import messages_from_dicts
from .runtime import Reconfigurable, build_history
from .service import HistoryService, Turn
from .valves import HistoryValves

__all__ = ["SessionFilter"]

log = logging.getLogger(__name__)


class SessionFilter:
    """The runtime behind ``pipelines/helix_session_filter.py``."""

    def __init__(
        self, valves: Callable[[], HistoryValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._history: Reconfigurable[HistoryValves, HistoryService] = Reconfigurable(
            valves,
            lambda new, old_valves, old: build_history(new, pipelines_dir, old, old_valves),
        )
        self._valves = valves

    def startup(self) -> None:
        self._history.get().purge_older_than(self._valves().SESSION_TTL_DAYS)

    def shutdown(self) -> None:
        self._history.get().close()

    def inlet(self, body: Any, user: Any) -> Any:
        """Put the stored history in front of what the client sent, when it sent less. Never raises."""
        if not isinstance(body, dict):
            return body
        try:
            self.attach(body, user)
        except Exception:  # the boundary: an inlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not attach history in the session filter's inlet")
        return body

    def attach(self, body: dict[str, Any], user: Any) -> Turn | None:
        """The inlet's work: replace ``body["messages"]`` when history was attached or trimmed.

        The turn tells what was done; ``None`` for a task or with the history switched off.
        """
        history = self._history.get()
        conversation = read_conversation(body, user)
        if conversation.is_task or not history.enabled:
            return None
        turn = history.prepare(conversation, messages_from_dicts(body.get("messages")))
        if turn.attached or turn.trim:
            body["messages"] = turn.wire_messages()
        return turn

    def outlet(self, body: Any, user: Any) -> Any:
        """Record the finished turn with Open WebUI's message ids. Never raises; body unchanged."""
        if not isinstance(body, dict):
            return body
        try:
            self._history.get().reconcile_outlet(body, user)
        except Exception:  # the boundary: an outlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not record the turn in the session filter's outlet")
        return body
