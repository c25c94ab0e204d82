"""
title: Helix
author: helix-pipeline developers
license: MIT
description: Helix agent backend with conversation memory: every turn reaches Helix with the chat's id and its full, deduplicated history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from helix_pipeline.pipe import HelixPipe
from helix_pipeline.valves import HelixValves

__all__ = ["Pipeline"]


class Pipeline:
    class Valves(HelixValves):
        """Helix connection and conversation memory (Admin > Settings > Pipelines)."""

        tolerant = True  # until on_startup: a bad value in valves.json must not stop the server

    def __init__(self) -> None:
        self.type = "manifold"
        self.id = "helix"
        self.name = "Helix: "
        self.valves = self.Valves()
        self._helix = HelixPipe(lambda: self.valves)
        self.pipelines = self._helix.models

    async def on_startup(self) -> None:
        self.Valves.tolerant = False  # valves.json is restored: refuse an admin's bad value
        await asyncio.to_thread(self._helix.startup)

    async def on_shutdown(self) -> None:
        await asyncio.to_thread(self._helix.shutdown)

    async def on_valves_updated(self) -> None:
        await asyncio.to_thread(self._helix.refresh_models)

    async def inlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return self._helix.inlet(body, user)

    async def outlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._helix.outlet, body, user)

    def pipe(
        self, user_message: str, model_id: str, messages: list[dict[str, Any]], body: dict[str, Any]
    ) -> str | Iterator[str | dict[str, Any]]:
        return self._helix.pipe(user_message, model_id, messages, body)
