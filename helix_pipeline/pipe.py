"""The Helix manifold pipe: conversation memory around every call to Helix.

``pipelines/helix.py`` is a thin shell around :class:`HelixPipe`. The flow of one chat turn:
``inlet`` copies the conversation context out of ``metadata`` (which never reaches ``pipe()``);
``pipe`` prepares the turn and has Helix answer it (:mod:`helix_pipeline.pipe_turn`);
``outlet`` attaches Open WebUI's message ids. This module is what the Pipelines server calls: the
parts built from the valves, the model list, and the three hooks. None of them ever raises: a
failure becomes one short chat message, the details go to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .chat_body import REPAIRS_KEY, repair_chat_body
from .client import HelixClient
from .conversation import PRIVATE_KEY, Conversation, read_conversation
from .errors import ConfigError, HelixPipelineError
from .notices import UNEXPECTED, notice_for, trim_line, trim_notice
from .payload import DEFAULT_MODEL
from .pipe_items import PipeItem, after_status, shown_text
from .pipe_turn import PipeParts, PreparedTurn, answer_turn, prepare_turn
from .runtime import Reconfigurable, build_history, unusable_valves
from .valves import HelixValves

__all__ = ["HelixPipe", "PipeItem", "PreparedTurn", "shown_text"]

log = logging.getLogger(__name__)

MODELS_TTL_S = 300.0


def _client_for(valves: HelixValves) -> HelixClient:
    return HelixClient(
        valves.HELIX_BASE_URL,
        api_key=valves.api_key(),
        conversation_headers=valves.header_names(),
        connect_timeout=valves.CONNECT_TIMEOUT_S,
        read_timeout=valves.READ_TIMEOUT_S,
        completion_timeout=valves.ANSWER_TIMEOUT_S,
        max_retries=valves.MAX_RETRIES,
    )


_CLIENT_VALVES = (
    "HELIX_BASE_URL",
    "HELIX_API_KEY",
    "CONVERSATION_HEADERS",
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "ANSWER_TIMEOUT_S",
    "MAX_RETRIES",
)


class HelixPipe:
    """The runtime behind ``pipelines/helix.py``; ``valves`` returns the pipeline's current valves."""

    def __init__(
        self, valves: Callable[[], HelixValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._pipelines_dir = pipelines_dir
        self._valves = valves
        self._parts: Reconfigurable[HelixValves, PipeParts | ConfigError] = Reconfigurable(
            valves, self._build
        )
        self._models: list[str] | None = None
        self._models_at = 0.0
        self._refreshing = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def startup(self) -> None:
        """Ask Helix for its models (briefly) and purge conversations past ``SESSION_TTL_DAYS``.

        Never raises: an exception in ``on_startup`` stops the whole Pipelines server.
        """
        try:
            parts = self._current()
            self.refresh_models()
            parts.history.purge_older_than(parts.valves.SESSION_TTL_DAYS)
        except HelixPipelineError as exc:
            log.warning("starting without Helix's models or a purge: %s", exc)
        except Exception:  # the boundary: the server's startup must go on
            log.exception("unexpected error while starting the Helix pipe")

    def shutdown(self) -> None:
        parts = self._parts.get()
        if isinstance(parts, PipeParts):
            parts.client.close()
            parts.history.close()

    def _current(self) -> PipeParts:
        """The parts built from the current valves; a :class:`ConfigError` if a valve is unusable."""
        parts = self._parts.get()
        if isinstance(parts, ConfigError):
            raise ConfigError(parts.message, setting=parts.setting)
        return parts

    def _build(
        self,
        valves: HelixValves,
        old_valves: HelixValves | None,
        old: PipeParts | ConfigError | None,
    ) -> PipeParts | ConfigError:
        previous = old if isinstance(old, PipeParts) else None
        unusable = unusable_valves(valves)
        if unusable is None:
            try:
                return self._build_parts(valves, old_valves, previous)
            except ConfigError as exc:  # the valves' rules are the client's: should not happen
                log.warning("the valves cannot be used: %s", exc)
                unusable = exc
        if previous is not None:
            previous.client.close()
            previous.history.close()
        self._models_at = 0.0  # ask the next Helix for its models once the valves are corrected
        return unusable

    def _build_parts(
        self, valves: HelixValves, old_valves: HelixValves | None, old: PipeParts | None
    ) -> PipeParts:
        history = build_history(
            valves, self._pipelines_dir, old.history if old else None, old_valves
        )
        same_client = (
            old is not None
            and old_valves is not None
            and all(getattr(valves, name) == getattr(old_valves, name) for name in _CLIENT_VALVES)
        )
        if old is not None and same_client:
            client = old.client
        else:
            if old is not None:
                old.client.close()
                self._models_at = 0.0  # another Helix may offer other models
            client = _client_for(valves)
        return PipeParts(valves, history, client)

    # -- models --------------------------------------------------------------------------------

    def models(self) -> list[dict[str, str]]:
        """The manifold's models: Helix's own list (cached), else the ``HELIX_MODELS`` valve.

        The Pipelines server calls this on every request (its middleware), so it never waits on
        Helix (a stale list is refreshed in the background) and never raises: an exception here is
        an HTTP 500 for every endpoint, the valve update that would repair it included.
        """
        try:
            parts = self._parts.get()
            if isinstance(parts, ConfigError):
                ids = self._valves().model_ids()
            else:
                stale = time.monotonic() - self._models_at > MODELS_TTL_S
                if stale and not self._refreshing.locked():
                    threading.Thread(
                        target=self.refresh_models, name="helix-models", daemon=True
                    ).start()
                ids = self._models or parts.valves.model_ids()
        except Exception:  # the boundary: see above
            log.exception("unexpected error while listing the models; offering %s", DEFAULT_MODEL)
            ids = [DEFAULT_MODEL]
        return [{"id": model_id, "name": model_id} for model_id in ids]

    def refresh_models(self) -> None:
        """Ask Helix for its models now; never raises (it runs after every valve update)."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            parts = self._current()
            self._models_at = time.monotonic()
            self._models = parts.client.models() or None
        except HelixPipelineError as exc:
            log.info("using the HELIX_MODELS valve: could not list Helix's models: %s", exc)
            self._models = None
        except Exception:  # the boundary: a raising on_valves_updated answers the update with 500
            log.exception("unexpected error while asking Helix for its models")
            self._models = None
        finally:
            self._refreshing.release()

    # -- the three hooks -----------------------------------------------------------------------

    def inlet(self, body: Any, user: Any) -> Any:
        """Copy the conversation context into the body's private key, the only way to ``pipe()``."""
        if not isinstance(body, dict):
            return body
        try:
            repairs = repair_chat_body(body)  # else the server refuses it before pipe() runs
            private = read_conversation(body, user).to_private()
            if repairs:
                log.info("repaired an inlet body the Pipelines server would refuse: %s", repairs)
                private[REPAIRS_KEY] = repairs
            body[PRIVATE_KEY] = private
        except Exception:  # the boundary: an inlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not read the conversation of an inlet body")
        return body

    def outlet(self, body: Any, user: Any) -> Any:
        """Attach Open WebUI's message ids to the recorded turn; idempotent; body unchanged."""
        if not isinstance(body, dict):
            return body
        try:
            self._current().history.reconcile_outlet(body, user)
        except HelixPipelineError as exc:
            log.warning("could not reconcile an outlet body: %s", exc)
        except Exception:  # the boundary: an outlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not reconcile an outlet body")
        return body

    def pipe(
        self, user_message: Any, model_id: Any, messages: Any, body: Any
    ) -> str | Iterator[PipeItem]:
        """Answer one chat turn: a generator when streaming, a string otherwise. Never raises."""
        try:
            return self._pipe(model_id, messages, body if isinstance(body, Mapping) else {})
        except HelixPipelineError as exc:
            log.warning("turn failed before reaching Helix: %s", exc)
            return notice_for(exc)
        except Exception:  # the boundary: pipe() must never raise
            log.exception("unexpected error in pipe()")
            return UNEXPECTED

    def _pipe(
        self, model_id: Any, messages: Any, body: Mapping[str, Any]
    ) -> str | Iterator[PipeItem]:
        conversation = read_conversation(body, body.get("user"))
        prepared = self.prepare(
            conversation, body.get("messages", messages), body, model_id=model_id
        )
        answer = self.answer(prepared)
        if isinstance(answer, str):  # a plain answer has no status line: the trim ends the text
            return answer + (trim_line(prepared.turn.trim) or "") if answer else answer
        trimmed = trim_notice(prepared.turn.trim)
        return answer if trimmed is None else after_status(trimmed, answer)

    def prepare(
        self,
        conversation: Conversation,
        messages: Any,
        body: Mapping[str, Any],
        *,
        model_id: Any = None,
        memory: bool = True,
    ) -> PreparedTurn:
        """The turn ready for Helix (:func:`~helix_pipeline.pipe_turn.prepare_turn`), made with
        the parts of the current valves; raises :class:`HelixPipelineError`."""
        return prepare_turn(
            self._current(), conversation, messages, body, model_id=model_id, memory=memory
        )

    def answer(self, prepared: PreparedTurn) -> str | Iterator[PipeItem]:
        """Helix's answer to a prepared turn (:func:`~helix_pipeline.pipe_turn.answer_turn`)."""
        return answer_turn(prepared)
