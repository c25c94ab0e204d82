"""Blocking work for Open WebUI's event loop: one thread per chat turn, items handed over as they come.

Open WebUI runs a Function's ``pipe()`` on its event loop; Helix may take minutes to answer, and
``requests`` and the stores block. :func:`items_from_thread` runs the blocking producer in a thread
of its own (not the loop's default executor, which twenty long turns would fill, starving Open
WebUI's own use of it) and yields what it produces without ever blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

__all__ = ["Put", "items_from_thread"]

log = logging.getLogger(__name__)

Put = Callable[[Any], bool]
"""Hands one item to the event loop; returns False once nobody is listening any more."""

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def items_from_thread(
    produce: Callable[[Put], None], *, name: str
) -> AsyncGenerator[Any, None]:
    """Run ``produce(put)`` in a new daemon thread and yield every item it puts, in order.

    An exception in ``produce`` is raised here. When the consumer stops early (the person closed
    the chat, Open WebUI cancelled the task), ``put`` starts returning False, so the producer can
    stop and clean up in its own thread.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    listening = threading.Event()
    listening.set()

    def put(item: Any) -> bool:
        if not listening.is_set():
            return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: Open WebUI is shutting down
            listening.clear()
            return False
        return True

    def work() -> None:
        try:
            produce(put)
        except BaseException as exc:  # handed to the consumer, which raises it on the loop
            put(_Failed(exc))
        finally:
            put(_END)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        listening.clear()
