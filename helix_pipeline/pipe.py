"""The Helix manifold pipe: conversation memory around every call to Helix.

``pipelines/helix.py`` is a thin shell around :class:`HelixPipe`. The flow of one chat turn:
``inlet`` copies the conversation context out of ``metadata`` (which never reaches ``pipe()``);
``pipe`` loads and merges the history, forwards to Helix with the conversation headers, streams the
reply back as it arrives and records the turn; ``outlet`` attaches Open WebUI's message ids.
None of the three ever raises: a failure becomes one short chat message, the details go to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat_body import REPAIRS_KEY, nothing_to_send, repair_chat_body
from .client import HelixClient, completion_text
from .conversation import PRIVATE_KEY, ChatKind, Conversation, read_conversation
from .decorations import Item, Status
from .errors import BackendError, ConfigError, HelixPipelineError
from .helix_answer import AnswerReader, read_whole
from .helix_failures import HelixFailure
from .messages import messages_from_dicts
from .notices import EMPTY_ANSWER, UNEXPECTED, notice_for, trim_line, trim_notice
from .payload import DEFAULT_MODEL
from .runtime import Reconfigurable, build_history, unusable_valves
from .service import HistoryService, Turn
from .valves import HelixValves

__all__ = ["HelixPipe", "PipeItem", "PreparedTurn", "shown_text"]

log = logging.getLogger(__name__)

MODELS_TTL_S = 300.0

PipeItem = str | dict[str, Any]
"""What the streaming ``pipe()`` yields: answer text, or a status event for the Pipelines server
to send on as ``data: {"event": ...}`` (Open WebUI shows it as a status line)."""


def shown_text(result: str | Iterable[PipeItem]) -> str:
    """The text a person sees of a ``pipe()`` result: the strings joined, status events left out."""
    if isinstance(result, str):
        return result
    return "".join(item for item in result if isinstance(item, str))


def _for_host(items: Iterable[Item | None]) -> Iterator[PipeItem]:
    """Items as the Pipelines server sends them on: non-empty text, statuses as event dicts."""
    for item in items:
        if isinstance(item, Status):
            yield {"event": item.event()}
        elif item:
            yield item


@dataclass(frozen=True, slots=True)
class _Parts:
    valves: HelixValves
    history: HistoryService
    client: HelixClient


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


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    """One chat turn ready for Helix (:meth:`HelixPipe.prepare`), sent by :meth:`HelixPipe.answer`.

    ``turn`` tells what the history service did (``attached``, ``trim``); ``local_answer`` is set
    when the turn is answered without Helix (a background task with ``TASKS=skip``).
    """

    parts: _Parts
    turn: Turn
    payload: dict[str, Any]
    header_id: str | None
    stream: bool = True
    local_answer: str | None = None


class HelixPipe:
    """The runtime behind ``pipelines/helix.py``; ``valves`` returns the pipeline's current valves."""

    def __init__(
        self, valves: Callable[[], HelixValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._pipelines_dir = pipelines_dir
        self._valves = valves
        self._parts: Reconfigurable[HelixValves, _Parts | ConfigError] = Reconfigurable(
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
        if isinstance(parts, _Parts):
            parts.client.close()
            parts.history.close()

    def _current(self) -> _Parts:
        """The parts built from the current valves; a :class:`ConfigError` if a valve is unusable."""
        parts = self._parts.get()
        if isinstance(parts, ConfigError):
            raise ConfigError(parts.message, setting=parts.setting)
        return parts

    def _build(
        self, valves: HelixValves, old_valves: HelixValves | None, old: _Parts | ConfigError | None
    ) -> _Parts | ConfigError:
        previous = old if isinstance(old, _Parts) else None
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
        self, valves: HelixValves, old_valves: HelixValves | None, old: _Parts | None
    ) -> _Parts:
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
        return _Parts(valves, history, client)

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
        return answer if trimmed is None else _after_status(trimmed, answer)

    def prepare(
        self,
        conversation: Conversation,
        messages: Any,
        body: Mapping[str, Any],
        *,
        model_id: Any = None,
        memory: bool = True,
    ) -> PreparedTurn:
        """Load and merge the history and build Helix's payload; the store is read here.

        ``memory=False`` (a person's own switch) forwards the turn as it came and records nothing.
        Raises :class:`HelixPipelineError` (e.g. a valve Helix's client refuses).
        """
        parts = self._current()
        incoming = messages_from_dicts(messages)
        if not any(message.role == "user" for message in incoming):
            raise nothing_to_send(body)
        stream = body.get("stream", True) is not False
        header_id: str | None = conversation.conversation_id
        if conversation.is_task:
            if parts.valves.TASKS == "skip":
                log.debug("answering background task %s locally", conversation.task)
                turn = parts.history.passthrough(conversation, ())
                return PreparedTurn(parts, turn, {}, None, stream=stream, local_answer="")
            turn, header_id = parts.history.passthrough(conversation, incoming), None
        elif parts.history.enabled and memory:
            turn = parts.history.prepare(conversation, incoming)
        else:
            turn = parts.history.passthrough(conversation, incoming)
        payload = parts.client.build_payload(
            turn.wire_messages(), body, model=_model(model_id), stream=stream
        )
        log.info(
            "conversation %s (%s): %d messages to Helix, %d attached from the store",
            conversation.conversation_id,
            conversation.kind.value,
            len(turn.outgoing),
            turn.attached,
        )
        return PreparedTurn(parts, turn, payload, header_id, stream=stream)

    def answer(self, prepared: PreparedTurn) -> str | Iterator[PipeItem]:
        """Send a prepared turn to Helix: a generator of text and status events (``{"event":
        ...}``, :func:`shown_text` keeps the text) when streaming, else the text.

        Blocks on Helix (the generator, on each chunk); records the turn when the answer is in.
        """
        if prepared.local_answer is not None:  # a stream of nothing: never a blank chunk
            return (
                iter(()) if prepared.stream and not prepared.local_answer else prepared.local_answer
            )
        if prepared.stream:
            return self._stream(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)
        return self._complete(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)

    def _complete(
        self, parts: _Parts, turn: Turn, payload: dict[str, Any], header_id: str | None
    ) -> str:
        try:
            text = completion_text(parts.client.complete(payload, conversation_id=header_id))
        except HelixPipelineError as exc:
            log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
            parts.history.record(turn, None)
            return notice_for(exc)
        reading = read_whole(text)
        if reading.failure is not None:
            self._failed(parts, turn, reading.failure, reading.answer)
            return reading.answer + _failure_notice(reading.failure, reading.answer)
        parts.history.record(turn, reading.answer or None)
        return reading.answer or EMPTY_ANSWER

    def _stream(
        self, parts: _Parts, turn: Turn, payload: dict[str, Any], header_id: str | None
    ) -> Iterator[PipeItem]:
        reader = AnswerReader()
        finished = False
        try:
            for delta in parts.client.stream(payload, conversation_id=header_id):
                yield from _for_host(reader.feed(delta))
            yield from _for_host(reader.finish())
            finished = True
        except HelixPipelineError as exc:
            log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
            finished = True
            yield from _for_host(reader.finish())
            parts.history.record(turn, reader.answer.strip() or None, partial=True)
            yield from _for_host([reader.closing_status("Helix's answer was cut off")])
            yield notice_for(exc, cut_off=bool(reader.answer.strip()))
            return
        except Exception:  # the boundary: a generator that raises cuts the stream
            log.exception("unexpected error while streaming from Helix")
            finished = True
            parts.history.record(turn, reader.answer.strip() or None, partial=True)
            yield UNEXPECTED
            return
        finally:
            if not finished:  # the client went away (GeneratorExit): keep what was streamed
                parts.history.record(turn, reader.answer.strip() or None, partial=True)
        if reader.failure is not None:
            self._failed(parts, turn, reader.failure, reader.answer)
            yield from _for_host([reader.closing_status("Helix did not answer")])
            yield _failure_notice(reader.failure, reader.answer)
            return
        reply = reader.answer
        parts.history.record(turn, reply or None)
        done = "Helix answered" if reply.strip() else "Helix answered nothing"
        if reader.unvalidated and reply.strip():
            done = "Helix answered, but could not fully validate the answer"
        yield from _for_host([reader.closing_status(done)])
        if not reply.strip():
            yield EMPTY_ANSWER

    @staticmethod
    def _failed(parts: _Parts, turn: Turn, failure: HelixFailure, answer: str) -> None:
        """Record the person's message (and what Helix answered before it failed), log why."""
        log.warning(
            "Helix failed for conversation %s: its answer is its %r failure text (%s)",
            _cid(turn.conversation),
            failure.form.name,
            failure.detail or failure.form.opening.strip(),
        )
        parts.history.record(turn, answer.strip() or None, partial=True)


def _failure_notice(failure: HelixFailure, answer: str) -> str:
    return notice_for(BackendError(failure.message, status_code=200), cut_off=bool(answer.strip()))


def _cid(conversation: Conversation) -> str:
    return conversation.conversation_id if conversation.kind is not ChatKind.TASK else "(task)"


def _model(model_id: object) -> str | None:
    """The sub id the server passes (always a string from the Pipelines server), else none."""
    return model_id if isinstance(model_id, str) and model_id else None


def _after_status(line: str, answer: Iterator[PipeItem]) -> Iterator[PipeItem]:
    """``answer`` after a status ``line`` (a shortened history), ending with a ``done`` status.

    The Pipelines host's own status; an Open WebUI Function says it through its event emitter.
    """
    yield {"event": Status(line).event()}
    closed = False
    for item in answer:
        if isinstance(item, dict):
            data = item.get("event", {}).get("data", {})
            closed = closed or data.get("done") is True
        yield item
    if not closed:
        yield {"event": Status(line, done=True).event()}
