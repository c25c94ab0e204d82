"""
title: Helix session memory (filter)
author: helix-pipeline developers
version: 0.1.0
license: MIT
description: Conversation memory for a Helix reached through Open WebUI's own OpenAI connection: the inlet attaches the stored history, the outlet records the turn.
"""

from __future__ import annotations

from typing import Any

from helix_pipeline.functions import (
    FunctionFilter,
    FunctionFilterValves,
    MemorySwitch,
    open_webui_data_dir,
)


class Filter:
    class Valves(FunctionFilterValves):
        """Where conversation memory is kept (attach this filter to the Helix models)."""

    class UserValves(MemorySwitch):
        """Your own memory switch for Helix."""

    def __init__(self) -> None:
        self.valves = self.Valves()
        self._filter = FunctionFilter(lambda: self.valves, data_dir=open_webui_data_dir())

    async def inlet(
        self,
        body: dict[str, Any],
        *,
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __event_emitter__: Any = None,
    ) -> Any:
        return await self._filter.inlet(
            body, user=__user__, metadata=__metadata__, emitter=__event_emitter__
        )

    async def outlet(self, body: dict[str, Any], *, __user__: dict[str, Any] | None = None) -> Any:
        return await self._filter.outlet(body, user=__user__)
