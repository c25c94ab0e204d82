"""What FakeHelix keeps for a test to read: every request received and each Helix session.

:class:`RecordedRequest` is one request as it arrived (method, path, headers, decoded body);
:class:`HelixSession` is Helix's per-session memory, the first user message and the messages of
the last request, overwritten by each request as Helix does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["HelixSession", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as FakeHelix received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class HelixSession:
    """What Helix keeps per session: the first user message and the messages of the last request."""

    session_id: str
    original_request: str
    conversation_id: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: int = 0
