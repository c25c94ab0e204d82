"""Checks that several engines' own test modules share (the contract suite holds the rest)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.messages import Message
from helix_pipeline.stores import SessionStore


def assert_two_stores_lose_nothing(
    open_one: Callable[[], SessionStore], key: ConversationKey, *, per_worker: int
) -> None:
    """Two stores on one server, four threads appending to one conversation: every message once."""
    stores = [open_one() for _ in range(2)]

    def append(worker: int) -> None:
        for number in range(per_worker):
            message_id = f"{worker}-{number}"
            stores[worker % 2].record(key, [Message("user", message_id, message_id)])

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        loaded = stores[0].load(key)
    finally:
        for opened in stores:
            opened.close()

    assert sorted(m.message_id or "" for m in loaded) == sorted(
        f"{w}-{n}" for w in range(4) for n in range(per_worker)
    )
