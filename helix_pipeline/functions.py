"""The Helix pipe and the session filter as Open WebUI Functions, inside Open WebUI itself.

``hosts/functions_pipe.py`` and ``hosts/functions_filter.py`` are thin shells around
:class:`FunctionPipe` and :class:`FunctionFilter`. They run the same history service, Helix client
and valves as the Pipelines files (:class:`~helix_pipeline.pipe.HelixPipe`,
:class:`~helix_pipeline.session_filter.SessionFilter`), with what Functions add: the conversation
comes straight from ``__metadata__``; progress, trims and failures are status lines through
``__event_emitter__`` instead of text in the answer; each person has their own memory switch
(``UserValves``). Open WebUI calls a Function on its event loop, so every blocking step (the store,
Helix) runs in a thread: a turn never holds up another person's requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from .conversation import Conversation, read_conversation
from .errors import HelixPipelineError
from .functions_worker import Put, items_from_thread
from .notices import UNEXPECTED, for_open_webui, is_notice, notice_for, trim_notice, visible
from .pipe import HelixPipe
from .service import Turn
from .session_filter import SessionFilter
from .valves import HelixValves, HistoryValves

__all__ = [
    "WORKING",
    "FunctionFilter",
    "FunctionFilterValves",
    "FunctionPipe",
    "MemorySwitch",
    "open_webui_data_dir",
    "status_lines",
]

log = logging.getLogger(__name__)

Emitter = Callable[[dict[str, Any]], Awaitable[Any]]
V = TypeVar("V", bound=BaseModel)

WORKING = "Helix is working..."


class MemorySwitch(BaseModel):
    """Each person's own setting (Open WebUI: Settings > Functions or the chat's controls)."""

    HISTORY_ENABLED: bool = Field(
        default=True,
        description="Helix remembers your chats: their history is kept and sent with every turn. "
        "Off: nothing of your chats is stored, and Helix gets only what Open WebUI sends.",
    )


class FunctionFilterValves(HistoryValves):
    """The session filter's valves as a Function (Open WebUI chooses its models, not a valve)."""

    priority: int = Field(default=0, description="Order among filters: lower runs first.")


def open_webui_data_dir() -> Path:
    """Open WebUI's data folder: the default session store goes in ``helix_data/`` there."""
    env = sys.modules.get("open_webui.env")  # already imported when running inside Open WebUI
    data_dir = getattr(env, "DATA_DIR", None) or os.environ.get("DATA_DIR") or "data"
    return Path(data_dir)


class _SteadyValves(Generic[V]):
    """The current valves, as the same object while their values stay the same.

    Open WebUI builds a new ``Valves`` object for every call; what is built from the valves
    (store, client) is rebuilt only when they really change.
    """

    def __init__(self, current: Callable[[], V]) -> None:
        self._current = current
        self._last: V | None = None

    def __call__(self) -> V:
        valves = self._current()
        last = self._last
        if last is not None and (valves is last or valves == last):
            return last
        self._last = valves
        return valves


def status_lines(turn: Turn) -> list[str]:
    """What a turn's status says before Helix answers: earlier messages attached, trims."""
    lines: list[str] = []
    if turn.store is not None:
        earlier = sum(1 for m in turn.outgoing if m.role != "system") - 1
        if earlier > 0:
            lines.append(f"Helix: {earlier} earlier message{'s' if earlier != 1 else ''} attached")
    trim = trim_notice(turn.trim)  # the one wording, the Pipelines pipe's too
    if trim:
        lines.append(trim)
    return lines


def _memory_on(user: object) -> bool:
    """The person's own switch (``__user__["valves"]``); on when absent."""
    valves = user.get("valves") if isinstance(user, Mapping) else None
    return getattr(valves, "HISTORY_ENABLED", True) is not False


class _Status:
    """Status lines to the chat; a no-op without an emitter (API callers, background tasks)."""

    def __init__(self, emitter: object) -> None:
        self._emitter: Emitter | None = emitter if callable(emitter) else None
        self.shown = False

    @property
    def available(self) -> bool:
        return self._emitter is not None

    async def __call__(self, description: str, *, done: bool = False) -> None:
        await self.event({"type": "status", "data": {"description": description, "done": done}})

    async def event(self, event: Mapping[str, Any]) -> None:
        if self._emitter is None:
            return
        try:
            await self._emitter(dict(event))
            self.shown = True
        except Exception:  # the boundary: a lost status line must never cost the answer
            log.exception("could not send a status event to Open WebUI")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What the worker thread reports once the history is merged (for the status lines)."""

    turn: Turn


class FunctionPipe:
    """The runtime behind ``hosts/functions_pipe.py``: ``valves`` returns the Function's valves."""

    def __init__(self, valves: Callable[[], HelixValves], *, data_dir: Path | None = None) -> None:
        self._helix = HelixPipe(_SteadyValves(valves), pipelines_dir=data_dir)
        self._started = threading.Event()

    def models(self) -> list[dict[str, str]]:
        """One model per Helix model; never waits on Helix (see :meth:`HelixPipe.models`)."""
        self._start()
        return self._helix.models()

    def _start(self) -> None:
        """Once per instance, in the background: ask Helix for its models, purge old chats."""
        if self._started.is_set():
            return
        self._started.set()
        threading.Thread(target=self._startup, name="helix-startup", daemon=True).start()

    def _startup(self) -> None:
        try:
            self._helix.startup()
        except Exception:  # a background thread: log, never raise into nothing
            log.exception("helix-pipeline could not start up")

    async def pipe(
        self,
        body: Mapping[str, Any],
        *,
        user: object = None,
        metadata: object = None,
        chat_id: object = None,
        task: object = None,
        emitter: object = None,
    ) -> str | AsyncIterator[str]:
        """Answer one turn: an async iterator of text when streaming, else the text. Never raises."""
        self._start()
        meta = dict(metadata) if isinstance(metadata, Mapping) else {}
        if chat_id is not None:
            meta.setdefault("chat_id", chat_id)
        if task is not None:
            meta.setdefault("task", task)
        messages = body.get("messages")
        conversation = read_conversation({"metadata": meta, "messages": messages}, user)
        model = str(body.get("model") or "")
        model_id = model.split(".", 1)[1] if "." in model else model
        memory = _memory_on(user)

        def produce(put: Put) -> None:
            self._produce(
                put,
                conversation=conversation,
                messages=messages,
                body=body,
                model_id=model_id,
                memory=memory,
            )

        chunks = self._answer(produce, _Status(emitter))
        if body.get("stream", True) is not False:
            return chunks
        return "".join([chunk async for chunk in chunks])

    def _produce(
        self,
        put: Put,
        *,
        conversation: Conversation,
        messages: Any,
        body: Mapping[str, Any],
        model_id: str,
        memory: bool,
    ) -> None:
        """In the worker thread: prepare the turn, then hand over Helix's answer chunk by chunk."""
        try:
            prepared = self._helix.prepare(
                conversation, messages, body, model_id=model_id or None, memory=memory
            )
            if not put(_Prepared(prepared.turn)):
                return  # the person left before Helix was asked: nothing to send or record
            answer = self._helix.answer(prepared)
        except HelixPipelineError as exc:
            log.warning("turn failed before reaching Helix: %s", exc)
            put(notice_for(exc))
            return
        except Exception:  # the boundary: the person gets one short message, the log the rest
            log.exception("unexpected error in the Helix Function")
            put(UNEXPECTED)
            return
        if isinstance(answer, str):
            put(answer)
            return
        _drain(answer, put)

    async def _answer(self, produce: Callable[[Put], None], status: _Status) -> AsyncIterator[str]:
        """Turn the worker's items into text for the answer and status lines for the chat."""
        closed = False  # a status line that ends the turn was shown (a failure, or the pipe's own)
        context: list[str] = []
        # aclosing: when Open WebUI closes this generator, the worker hears it at once, not when
        # the event loop gets round to finalising a forgotten inner generator.
        async with aclosing(items_from_thread(produce, name="helix-turn")) as items:
            async for item in items:
                if isinstance(item, _Prepared):
                    context = status_lines(item.turn)
                    for line in context:
                        await status(line)
                    await status(WORKING)
                elif isinstance(item, Mapping) and isinstance(item.get("event"), Mapping):
                    event = item["event"]
                    closed = closed or _closes_turn(event)
                    await status.event(event)
                elif isinstance(item, str) and item:
                    text = for_open_webui(item)
                    if status.available and is_notice(text):
                        closed = True
                        await status(visible(text).strip(), done=True)
                    else:
                        yield text
        if not closed and status.shown:
            await status(context[0] if context else "Helix answered", done=True)


def _closes_turn(event: Mapping[str, Any]) -> bool:
    """Whether an event from the answer is a status line with ``done`` set."""
    data = event.get("data")
    return event.get("type") == "status" and isinstance(data, Mapping) and data.get("done") is True


def _drain(chunks: Iterator[Any], put: Put) -> None:
    """Hand over every chunk; stop as soon as nobody listens (closing records what arrived)."""
    try:
        for chunk in chunks:
            if not put(chunk):
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class FunctionFilter:
    """The runtime behind ``hosts/functions_filter.py``: the session filter, off the event loop."""

    def __init__(
        self, valves: Callable[[], FunctionFilterValves], *, data_dir: Path | None = None
    ) -> None:
        self._filter = SessionFilter(_SteadyValves(valves), pipelines_dir=data_dir)

    async def inlet(
        self, body: Any, *, user: object = None, metadata: object = None, emitter: object = None
    ) -> Any:
        """Attach the stored history (and say so in a status line). Never raises."""
        if not isinstance(body, dict) or not _memory_on(user):
            return body
        view = body if "metadata" in body or not isinstance(metadata, Mapping) else {}
        if view is not body:
            view.update(body)
            view["metadata"] = metadata
        try:
            turn = await asyncio.to_thread(self._filter.attach, view, user)
        except Exception:  # the boundary: an inlet that raises stops the chat in Open WebUI
            log.exception("could not attach history in the session filter's inlet")
            return body
        if view is not body:
            body["messages"] = view["messages"]
        if turn is not None:
            status = _Status(emitter)
            for line in status_lines(turn):
                await status(line, done=True)
        return body

    async def outlet(self, body: Any, *, user: object = None) -> Any:
        """Record the finished turn. Never raises; the body is returned unchanged."""
        if not isinstance(body, dict) or not _memory_on(user):
            return body
        return await asyncio.to_thread(self._filter.outlet, body, user)
