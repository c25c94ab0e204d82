"""One chat turn of the Helix pipe: prepared from the history, then answered by Helix.

:func:`prepare_turn` loads and merges the history and builds Helix's payload (the store is read
there); :func:`answer_turn` sends it, streams the reply back as it arrives and records the turn.
Failures while answering become one short notice in the chat; the details go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .chat_body import nothing_to_send
from .client import HelixClient, completion_text
from .conversation import ChatKind, Conversation
from .errors import BackendError, HelixPipelineError
from .helix_answer import AnswerReader, read_whole
from .helix_failures import HelixFailure
from .messages import messages_from_dicts
from .notices import EMPTY_ANSWER, UNEXPECTED, notice_for
from .pipe_items import PipeItem, for_host
from .service import HistoryService, Turn
from .valves import HelixValves

__all__ = ["PipeParts", "PreparedTurn", "answer_turn", "prepare_turn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipeParts:
    """What the pipe builds from its valves: the history service and Helix's client."""

    valves: HelixValves
    history: HistoryService
    client: HelixClient


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    """One chat turn ready for Helix (:func:`prepare_turn`), sent by :func:`answer_turn`.

    ``turn`` tells what the history service did (``attached``, ``trim``); ``local_answer`` is set
    when the turn is answered without Helix (a background task with ``TASKS=skip``).
    """

    parts: PipeParts
    turn: Turn
    payload: dict[str, Any]
    header_id: str | None
    stream: bool = True
    local_answer: str | None = None


def prepare_turn(
    parts: PipeParts,
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
    payload = parts.client.build_payload(turn.outgoing, body, model=_model(model_id), stream=stream)
    log.info(
        "conversation %s (%s): %d messages to Helix, %d attached from the store",
        conversation.conversation_id,
        conversation.kind.value,
        len(turn.outgoing),
        turn.attached,
    )
    return PreparedTurn(parts, turn, payload, header_id, stream=stream)


def answer_turn(prepared: PreparedTurn) -> str | Iterator[PipeItem]:
    """Send a prepared turn to Helix: a generator of text and status events (``{"event": ...}``,
    :func:`~helix_pipeline.pipe_items.shown_text` keeps the text) when streaming, else the text.

    Blocks on Helix (the generator, on each chunk); records the turn when the answer is in.
    """
    if prepared.local_answer is not None:  # a stream of nothing: never a blank chunk
        return iter(()) if prepared.stream and not prepared.local_answer else prepared.local_answer
    if prepared.stream:
        return _stream(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)
    return _complete(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)


def _complete(parts: PipeParts, turn: Turn, payload: dict[str, Any], header_id: str | None) -> str:
    try:
        text = completion_text(parts.client.complete(payload, conversation_id=header_id))
    except HelixPipelineError as exc:
        log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
        parts.history.record(turn, None)
        return notice_for(exc)
    reading = read_whole(text)
    if reading.failure is not None:
        _failed(parts, turn, reading.failure, reading.answer)
        return reading.answer + _failure_notice(reading.failure, reading.answer)
    parts.history.record(turn, reading.answer or None)
    return reading.answer or EMPTY_ANSWER


def _stream(
    parts: PipeParts, turn: Turn, payload: dict[str, Any], header_id: str | None
) -> Iterator[PipeItem]:
    reader = AnswerReader()
    finished = False
    try:
        for delta in parts.client.stream(payload, conversation_id=header_id):
            yield from for_host(reader.feed(delta))
        yield from for_host(reader.finish())
        finished = True
    except HelixPipelineError as exc:
        log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
        finished = True
        yield from for_host(reader.finish())
        parts.history.record(turn, reader.answer.strip() or None, partial=True)
        yield from for_host([reader.closing_status("Helix's answer was cut off")])
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
    yield from _close_stream(parts, turn, reader)


def _close_stream(parts: PipeParts, turn: Turn, reader: AnswerReader) -> Iterator[PipeItem]:
    """The end of a stream Helix finished: the closing status, and a notice when it failed or
    said nothing; the turn is recorded."""
    if reader.failure is not None:
        _failed(parts, turn, reader.failure, reader.answer)
        yield from for_host([reader.closing_status("Helix did not answer")])
        yield _failure_notice(reader.failure, reader.answer)
        return
    reply = reader.answer
    parts.history.record(turn, reply or None)
    done = "Helix answered" if reply.strip() else "Helix answered nothing"
    if reader.unvalidated and reply.strip():
        done = "Helix answered, but could not fully validate the answer"
    yield from for_host([reader.closing_status(done)])
    if not reply.strip():
        yield EMPTY_ANSWER


def _failed(parts: PipeParts, turn: Turn, failure: HelixFailure, answer: str) -> None:
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
