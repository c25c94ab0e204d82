"""The bodies Open WebUI 0.12.4 sends to a pipe model, built for one chat (demo and tests).

Shaped after the recorded payloads in ``tests/fixtures/openwebui-0.12.4/`` (trimmed to the keys
that matter): the inlet carries the chat and message ids in ``metadata`` and the history as bare
role/content; ``pipe()`` gets the body without ``metadata`` plus ``user``; the outlet holds the
whole chat with every message's id, and ``chat_id``/``id`` at the top level. Background tasks
(here the title) come through the same pipe with ``metadata.task`` and one ``### Task:`` prompt.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["TITLE_TASK", "ChatTurn", "OpenWebUIChat", "pipe_arguments"]

TITLE_TASK = "title_generation"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One user message of an :class:`OpenWebUIChat` and the assistant message Open WebUI makes."""

    text: str
    user_message_id: str
    assistant_message_id: str
    parent_message_id: str | None
    stream: bool


class OpenWebUIChat:
    """One saved Open WebUI 0.12.4 chat with a pipe model: the bodies it sends to the pipe.

    ``inlet_body`` and ``task_inlet_body`` are what ``/{id}/filter/inlet`` receives (with
    ``metadata``), :func:`pipe_arguments` what ``pipe()`` then gets, ``outlet_body`` the
    outlet's (every message with its id).
    """

    def __init__(
        self,
        *,
        model: str = "helix.helix-consultant",
        chat_id: str | None = None,
        user: dict[str, str] | None = None,
        stream: bool = True,
    ) -> None:
        self.model = model
        self.chat_id = chat_id or str(uuid.uuid4())
        self.user = user or {
            "id": str(uuid.uuid4()),
            "email": "ana@example.com",
            "name": "Ana",
            "role": "user",
        }
        self.stream = stream
        self.session_id = secrets.token_urlsafe(15)[:20]
        self.messages: list[dict[str, Any]] = []

    def start_turn(self, text: str) -> ChatTurn:
        """The user sends ``text``: it joins the chat, and an assistant message id is reserved."""
        parent = self.messages[-1]["id"] if self.messages else None
        turn = ChatTurn(text, str(uuid.uuid4()), str(uuid.uuid4()), parent, self.stream)
        self.messages.append(self._message(turn.user_message_id, "user", text, parent))
        return turn

    def finish_turn(self, turn: ChatTurn, reply: str) -> None:
        """The assistant's reply is saved in the chat, as Open WebUI does once the stream ends."""
        self.messages.append(
            self._message(turn.assistant_message_id, "assistant", reply, turn.user_message_id)
        )

    def inlet_body(self, turn: ChatTurn) -> dict[str, Any]:
        """A chat turn's inlet: the history as role/content only, the ids in ``metadata``."""
        return {
            "stream": turn.stream,
            "model": self.model,
            "tool_ids": [],
            "features": {"image_generation": False, "web_search": False, "memory": True},
            "metadata": {
                **self._metadata(turn),
                "message_id": turn.assistant_message_id,
                "task_id": str(uuid.uuid4()),
            },
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
        }

    def task_inlet_body(self, turn: ChatTurn, task: str = TITLE_TASK) -> dict[str, Any]:
        """A background task's inlet: one ``### Task:`` prompt, never streamed, no ``message_id``."""
        history = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in self.messages)
        prompt = (
            "### Task:\nGenerate a concise title summarizing the chat history.\n"
            "### Guidelines:\n- Keep it short: 2-4 words is best.\n"
            '### Output:\nJSON format: { "title": "your concise title here" }\n'
            f"### Chat History:\n<chat_history>\n{history}\nASSISTANT: \n</chat_history>"
        )
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "metadata": {
                **self._metadata(turn),
                "task": task,
                "task_body": {"model": self.model, "chat_id": self.chat_id},
            },
        }

    def outlet_body(self, turn: ChatTurn) -> dict[str, Any]:
        """The outlet after a turn: the whole chat with ids, ``chat_id`` and ``id`` at the top."""
        return {
            "model": self.model,
            "messages": [
                {k: m[k] for k in ("id", "role", "content", "timestamp")} for m in self.messages
            ],
            "filter_ids": [],
            "chat_id": self.chat_id,
            "session_id": self.session_id,
            "id": turn.assistant_message_id,
        }

    def _metadata(self, turn: ChatTurn) -> dict[str, Any]:
        user_message = next(m for m in self.messages if m["id"] == turn.user_message_id)
        return {
            "user_id": self.user["id"],
            "chat_id": self.chat_id,
            "user_message": user_message,
            "user_message_id": turn.user_message_id,
            "assistant_message_id": None,
            "regeneration_message_id": None,
            "session_id": self.session_id,
            "filter_ids": [],
            "tool_ids": [],
            "files": None,
            "variables": {"{{USER_NAME}}": self.user["name"]},
            "model": {"id": self.model, "pipeline": {"type": "manifold"}},
            "direct": False,
        }

    @staticmethod
    def _message(message_id: str, role: str, content: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": message_id,
            "parentId": parent,
            "role": role,
            "content": content,
            "timestamp": int(time.time()),
        }

    def pipe_body(self, inlet_result: dict[str, Any]) -> dict[str, Any]:
        """What Open WebUI sends to ``/chat/completions`` after the inlet (see :func:`pipe_arguments`).

        ``metadata``, ``features`` and ``tool_ids`` are stripped; ``user`` is added, and the
        built-in tools on a chat turn or ``max_tokens`` on a title task.
        """
        body = {
            k: v for k, v in inlet_result.items() if k not in ("metadata", "features", "tool_ids")
        }
        body["user"] = {k: self.user[k] for k in ("name", "id", "email", "role")}
        task = (inlet_result.get("metadata") or {}).get("task")
        if task is None:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": "get_current_timestamp", "parameters": {}},
                }
            ]
        elif task == TITLE_TASK:
            body["max_tokens"] = 1000
        return body


def pipe_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the Pipelines server passes to a manifold's ``pipe()`` for ``body``."""
    messages = [dict(m) for m in body.get("messages", [])]
    user_message = next(
        (m.get("content") for m in reversed(messages) if m.get("role") == "user"), None
    )
    model = str(body.get("model", ""))
    return {
        "user_message": user_message,
        "model_id": model.split(".", 1)[1] if "." in model else model,
        "messages": messages,
        "body": json.loads(json.dumps(body)),
    }
