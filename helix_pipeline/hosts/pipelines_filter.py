"""
title: Helix session memory (filter)
author: helix-pipeline developers
license: MIT
description: Conversation memory for a Helix reached through Open WebUI's own OpenAI connection: the inlet attaches the stored history, the outlet records the turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.valves import FilterValves

__all__ = ["Pipeline"]


class Pipeline:
    class Valves(FilterValves):
        """Which models get conversation memory, and where it is kept."""

        tolerant = True  # until on_startup: a bad value in valves.json must not stop the server

    def __init__(self) -> None:
        self.type = "filter"
        self.id = "helix_session_filter"
        self.name = "Helix session memory"
        self.valves = self.Valves()
        self._filter = SessionFilter(lambda: self.valves)

    async def on_startup(self) -> None:
        self.Valves.tolerant = False  # valves.json is restored: refuse an admin's bad value
        await asyncio.to_thread(self._filter.startup)

    async def on_shutdown(self) -> None:
        await asyncio.to_thread(self._filter.shutdown)

    async def inlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._filter.inlet, body, user)

    async def outlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._filter.outlet, body, user)
