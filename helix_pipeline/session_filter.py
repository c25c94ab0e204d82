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
from .decorations import strip_decorations
from .errors import ConfigError, HelixPipelineError
from .messages import messages_from_dicts
from .runtime import Reconfigurable, build_history, unusable_valves
from .service import HistoryService, Turn
from .valves import HistoryValves

__all__ = ["SessionFilter"]

log = logging.getLogger(__name__)


class SessionFilter:
    """The runtime behind ``pipelines/helix_session_filter.py``.

    With an unusable valve it passes every body through unchanged and says why in the log: a
    filter has no answer of its own to put a notice in.
    """

    def __init__(
        self, valves: Callable[[], HistoryValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._pipelines_dir = pipelines_dir
        self._valves = valves
        self._history: Reconfigurable[HistoryValves, HistoryService | ConfigError] = Reconfigurable(
            valves, self._build
        )

    def _build(
        self,
        valves: HistoryValves,
        old_valves: HistoryValves | None,
        old: HistoryService | ConfigError | None,
    ) -> HistoryService | ConfigError:
        previous = old if isinstance(old, HistoryService) else None
        unusable = unusable_valves(valves)
        if unusable is None:
            return build_history(valves, self._pipelines_dir, previous, old_valves)
        if previous is not None:
            previous.close()
        return unusable

    def _current(self) -> HistoryService:
        history = self._history.get()
        if isinstance(history, ConfigError):
            raise ConfigError(history.message, setting=history.setting)
        return history

    def startup(self) -> None:
        """Purge conversations past ``SESSION_TTL_DAYS``; never raises (it would stop the server)."""
        try:
            history = self._current()
            history.purge_older_than(self._valves().SESSION_TTL_DAYS)
        except HelixPipelineError as exc:
            log.warning("starting the session filter without a purge: %s", exc)
        except Exception:  # the boundary: the server's startup must go on
            log.exception("unexpected error while starting the session filter")

    def shutdown(self) -> None:
        history = self._history.get()
        if isinstance(history, HistoryService):
            history.close()

    def inlet(self, body: Any, user: Any) -> Any:
        """Put the stored history in front of what the client sent, when it sent less. Never raises."""
        if not isinstance(body, dict):
            return body
        try:
            self.attach(body, user)
        except HelixPipelineError as exc:
            log.warning("the session filter passed a body on without history: %s", exc)
        except Exception:  # the boundary: an inlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not attach history in the session filter's inlet")
        return body

    def attach(self, body: dict[str, Any], user: Any) -> Turn | None:
        """The inlet's work: replace ``body["messages"]`` when history was attached or trimmed;
        else leave them as they came, but for Helix's progress decorations in its answers.

        The turn tells what was done; ``None`` for a task or with the history switched off.
        Raises :class:`~helix_pipeline.errors.ConfigError` naming an unusable valve.
        """
        history = self._current()
        conversation = read_conversation(body, user)
        if conversation.is_task or not history.enabled:
            return None
        turn = history.prepare(conversation, messages_from_dicts(body.get("messages")))
        if turn.attached or turn.trim:
            body["messages"] = turn.wire_messages()
        else:  # as it came (ids, files), but Helix's answers without their decorations
            _without_decorations(body.get("messages"))
        return turn

    def outlet(self, body: Any, user: Any) -> Any:
        """Record the finished turn with Open WebUI's message ids. Never raises; body unchanged."""
        if not isinstance(body, dict):
            return body
        try:
            self._current().reconcile_outlet(body, user)
        except HelixPipelineError as exc:
            log.warning("the session filter did not record a turn: %s", exc)
        except Exception:  # the boundary: an outlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not record the turn in the session filter's outlet")
        return body


def _without_decorations(messages: object) -> None:
    """Helix's progress decorations out of the assistant messages' text, in place."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, str):
                answer, _ = strip_decorations(content)
                if answer != content:
                    message["content"] = answer
