"""
title: Helix
author: helix-pipeline developers
version: 0.1.0
license: MIT
description: Helix agent backend with conversation memory, inside Open WebUI: every turn reaches Helix with the chat's id and its full, deduplicated history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from helix_pipeline.functions import FunctionPipe, MemorySwitch, open_webui_data_dir
from helix_pipeline.valves import HelixValves


class Pipe:
    class Valves(HelixValves):
        """Helix connection and conversation memory (Admin Panel > Functions > Helix)."""

    class UserValves(MemorySwitch):
        """Your own memory switch for Helix."""

    def __init__(self) -> None:
        self.name = "Helix: "
        self.valves = self.Valves()
        self._helix = FunctionPipe(lambda: self.valves, data_dir=open_webui_data_dir())

    def pipes(self) -> list[dict[str, str]]:
        return self._helix.models()

    async def pipe(
        self,
        body: dict[str, Any],
        *,
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __chat_id__: str | None = None,
        __task__: str | None = None,
        __event_emitter__: Any = None,
    ) -> str | AsyncIterator[str]:
        return await self._helix.pipe(
            body,
            user=__user__,
            metadata=__metadata__,
            chat_id=__chat_id__,
            task=__task__,
            emitter=__event_emitter__,
        )
