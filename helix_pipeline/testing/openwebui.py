"""The bodies Open WebUI 0.12.4 sends to a pipe model, built for one chat (demo, tests, benchmarks).

Shaped after the recorded payloads in ``tests/fixtures/openwebui-0.12.4/`` (trimmed to the keys
that matter; ``tests/test_openwebui.py`` checks keys, nesting and types against them): the inlet
carries the chat and message ids in ``metadata`` and the history as bare role/content;
``pipe()`` gets the body without ``metadata`` plus ``user``; the outlet holds the whole chat with
every message's id, and ``chat_id``/``id`` at the top level. Background tasks
(here the title) come through the same pipe with ``metadata.task`` and one ``### Task:`` prompt.
:mod:`.openwebui_transport` sends these bodies to a pipe in process or to a Pipelines server.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["TITLE_TASK", "ChatTurn", "OpenWebUIChat", "pipe_arguments", "pipe_body"]

TITLE_TASK = "title_generation"
TITLE_MAX_TOKENS = 1000
"""What Open WebUI adds to a title task's body after the inlet (every captured release)."""
PIPE_BODY_DROPPED = ("metadata", "features", "tool_ids")
"""Keys of the inlet's answer that Open WebUI does not send on to ``/chat/completions``."""
BUILT_IN_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_current_timestamp", "parameters": {}}}
]
"""One of the 36 tool specs 0.12.4 adds to a chat turn's pipe body (the recorded ones: ~25 KB)."""


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One user message of an :class:`OpenWebUIChat` and the assistant message Open WebUI makes."""

    text: str
    user_message_id: str | None
    """``None`` from an API client (it sends no message ids)."""
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
        tools: list[dict[str, Any]] | None = None,
        api_client: bool = False,
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
        self.tools = BUILT_IN_TOOLS if tools is None else tools
        """The tool specs a chat turn's pipe body carries (pass the recorded ones for size)."""
        self.api_client = api_client
        """A client of Open WebUI's API with a chat id, not a browser: it sends only its newest
        message and no ids; the outlet (run server-side) holds that message and the reply, which
        alone has an id (the recorded plain API call, with a chat id)."""
        self.session_id = secrets.token_urlsafe(15)[:20]
        self.messages: list[dict[str, Any]] = []

    def start_turn(self, text: str) -> ChatTurn:
        """The user sends ``text``: it joins the chat, and an assistant message id is reserved."""
        parent = self.messages[-1]["id"] if self.messages else None
        if self.api_client:
            turn = ChatTurn(text, None, f"msg_{uuid.uuid4().hex[:24]}", parent, self.stream)
        else:
            turn = ChatTurn(text, str(uuid.uuid4()), str(uuid.uuid4()), parent, self.stream)
        self.messages.append(self._message(turn.user_message_id, "user", text, parent))
        return turn

    def finish_turn(self, turn: ChatTurn, reply: str) -> None:
        """The assistant's reply is saved in the chat, as Open WebUI does once the stream ends."""
        self.messages.append(
            self._message(turn.assistant_message_id, "assistant", reply, turn.user_message_id)
        )

    def resume(self, saved: Iterable[tuple[str, str, str | None]]) -> None:
        """Show earlier messages, (role, content, message id) oldest first, as a reopened chat."""
        for role, content, message_id in saved:
            parent = self.messages[-1]["id"] if self.messages else None
            self.messages.append(self._message(message_id, role, content, parent))

    def branch(self, keep: int) -> OpenWebUIChat:
        """The same chat in a second tab showing its first ``keep`` messages: the next
        :meth:`start_turn` there is an edit (a sibling of message ``keep``)."""
        tab = copy.copy(self)
        tab.messages = copy.deepcopy(self.messages[:keep])
        return tab

    def inlet_body(self, turn: ChatTurn) -> dict[str, Any]:
        """A chat turn's inlet: the history as role/content only, the ids in ``metadata``."""
        if self.api_client:
            return self._api_inlet_body(turn)
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
        messages = self.messages[-2:] if self.api_client else self.messages
        return {
            "model": self.model,
            "messages": [
                {k: m[k] for k in ("id", "role", "content", "timestamp")} | {"info": None}
                for m in messages
            ],
            "filter_ids": [],
            "chat_id": self.chat_id,
            "session_id": None if self.api_client else self.session_id,
            "id": turn.assistant_message_id,
        }

    def _api_inlet_body(self, turn: ChatTurn) -> dict[str, Any]:
        return {
            "model": self.model,
            "stream": turn.stream,
            "messages": [{"role": "user", "content": turn.text}],
            "metadata": {
                "user_id": self.user["id"],
                "chat_id": self.chat_id,
                "message_id": None,
                "user_message_id": None,
                "session_id": None,
                "user_message": None,
            },
        }

    def _metadata(self, turn: ChatTurn) -> dict[str, Any]:
        user_message = next(m for m in self.messages if m["id"] == turn.user_message_id)
        return {
            "user_id": self.user["id"],
            "chat_id": self.chat_id,
            "user_message": dict(user_message),
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

    def _message(
        self, message_id: str | None, role: str, content: str, parent: str | None
    ) -> dict[str, Any]:
        return {
            "id": message_id,
            "parentId": parent,
            "role": role,
            "content": content,
            "timestamp": None if self.api_client else int(time.time()),
        }

    def pipe_body(self, inlet_result: dict[str, Any]) -> dict[str, Any]:
        """What Open WebUI sends to ``/chat/completions`` after the inlet (see :func:`pipe_body`)."""
        return pipe_body(inlet_result, self.user, tools=None if self.api_client else self.tools)


def pipe_body(
    inlet_result: dict[str, Any], user: dict[str, Any], *, tools: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """What Open WebUI posts to ``/chat/completions`` for a pipe model after the inlet answered.

    ``metadata``, ``features`` and ``tool_ids`` are stripped; ``user`` is added, and ``tools``
    (if any) on a chat turn or ``max_tokens`` on a title task.
    """
    body = {k: v for k, v in inlet_result.items() if k not in PIPE_BODY_DROPPED}
    task = (inlet_result.get("metadata") or {}).get("task")
    if task is None and tools is not None:
        body["tools"] = tools
    elif task == TITLE_TASK:
        body["max_tokens"] = TITLE_MAX_TOKENS
    body["user"] = {k: user[k] for k in ("name", "id", "email", "role") if k in user}
    return body


def pipe_arguments(body: Any) -> dict[str, Any]:
    """The keyword arguments the Pipelines server passes to a manifold's ``pipe()`` for ``body``
    (whatever ``body`` holds: the server's own checks are not ours to test)."""
    fields = body if isinstance(body, dict) else {}
    messages = fields.get("messages")
    if isinstance(messages, list):
        messages = [dict(m) if isinstance(m, dict) else m for m in messages]
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        user_message = users[-1].get("content") if users else None
    else:
        user_message = None
    model = str(fields.get("model", ""))
    return {
        "user_message": user_message,
        "model_id": model.split(".", 1)[1] if "." in model else model,
        "messages": messages,
        "body": json.loads(json.dumps(body)),
    }
