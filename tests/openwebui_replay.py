"""Open WebUI 0.6.43, 0.10.2 or 0.12.4 replayed against the real Pipelines server, with our ids.

:class:`OpenWebUI` plays a captured release's recorded requests (``tests/fixtures/``, read by
``tests/openwebui_releases.py``) against a :class:`~tests.pipelines_server.PipelinesServer`: inlet,
answer and outlet, turn by turn, as that release did; :class:`OpenWebUIWithHelixConnection` gets
the answer from Helix itself, as Open WebUI's own OpenAI connection does. When Open WebUI changes,
this file and the captures change, nothing else. The HTTP calls and the pipe body are the
driver's (:mod:`helix_pipeline.testing.openwebui_transport`, :func:`~helix_pipeline.testing.
openwebui.pipe_body`), as for every other test that talks to the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.stores import SessionStore
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui import pipe_body
from helix_pipeline.testing.openwebui_transport import HostError, OverHTTP, Reply, read_answer

from .openwebui_releases import (
    OPENWEBUI_0_12,
    Release,
    as_edit,
    chat_of,
    hook_records,
    is_task,
    reply_text,
    rewrite,
)
from .pipelines_server import REQUEST_TIMEOUT_S, PipelinesServer, PipelinesServerError

__all__ = [
    "Exchange",
    "OpenWebUI",
    "OpenWebUIWithHelixConnection",
    "is_task",
    "recorded",
    "recorded_tools",
    "rewrite",
    "stored",
]

FIXTURES = OPENWEBUI_0_12.folder
RECORDED_USER_ID = OPENWEBUI_0_12.user_id
"""The user of every recorded 0.12.4 run (``Capture Admin``)."""


def recorded(path: str, chat_id: str) -> list[dict[str, Any]]:
    """The records of one recorded chat, in order, from ``fixtures/openwebui-0.12.4/<path>``."""
    return [r for r in hook_records(FIXTURES / path) if chat_of(r["body"]) == chat_id]


def recorded_tools() -> list[dict[str, Any]]:
    """The 36 tool specs Open WebUI 0.12.4 sends with every chat turn to a pipe model."""
    if OPENWEBUI_0_12.tools is None:
        raise LookupError("no recorded pipe body carries tools")
    return OPENWEBUI_0_12.tools


@dataclass
class Exchange:
    """One recorded request replayed: what was sent and what came back."""

    hook: str
    sent: dict[str, Any]
    returned: Any
    task: str | None = None
    reply: Reply | None = None


class OpenWebUI:
    """Replays a recorded Open WebUI release against a Pipelines server, with our ids.

    For a chat turn Open WebUI calls ``/{id}/filter/inlet`` for each of ``filters`` (the global
    filters, by priority) and then for ``target`` (the model itself, or a filter); then
    ``answer`` (for a pipe model: ``POST /chat/completions`` with the inlet's answer minus
    ``metadata``, plus ``user``, and the release's ``tools`` on a chat turn); then
    ``/{id}/filter/outlet`` in the same order, with the whole chat and its message ids. The
    recorded replies are replaced by the real ones as they come, so the history Open WebUI sends
    back is the history this run produced. ``release`` is the captured release (0.12.4 unless
    told); its records come from :class:`tests.openwebui_releases.Release`.
    """

    def __init__(
        self,
        server: PipelinesServer,
        target: str,
        *,
        user: Mapping[str, Any],
        chat_id: str,
        recorded_chat_id: str,
        model: str,
        recorded_model: str,
        filters: Sequence[str] = (),
        release: Release = OPENWEBUI_0_12,
    ) -> None:
        self.server = server
        self.target = target
        self.chain = [*filters, target]
        self.http = OverHTTP(server.url, server.api_key, hooks=self.chain)
        self.user = dict(user)
        self.model = model
        self.release = release
        self.replacements: dict[str, str] = {
            recorded_chat_id: chat_id,
            recorded_model: model,
            release.user_id: str(user["id"]),
        }
        self.exchanges: list[Exchange] = []

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A recorded body with our ids and the replies of this run."""
        body: dict[str, Any] = rewrite(record["body"], self.replacements)
        return body

    def pipe_body(self, inlet_answer: Mapping[str, Any]) -> dict[str, Any]:
        """What Open WebUI posts to ``/chat/completions`` after the inlet answered."""
        return pipe_body(dict(inlet_answer), self.user, tools=self.release.tools)

    def forwarded_headers(self, chat_id: str) -> dict[str, str]:
        """The ``X-OpenWebUI-*`` headers of ``ENABLE_FORWARD_USER_INFO_HEADERS=true``."""
        return {
            "X-OpenWebUI-Auth-Type": "jwt",
            "X-OpenWebUI-User-Name": str(self.user["name"]),
            "X-OpenWebUI-User-Id": str(self.user["id"]),
            "X-OpenWebUI-User-Email": str(self.user["email"]),
            "X-OpenWebUI-User-Role": str(self.user["role"]),
            "X-OpenWebUI-Chat-Id": chat_id,
        }

    def answer(self, inlet_answer: Mapping[str, Any]) -> Reply:
        """Get the model's answer for the body the inlet returned (the Pipelines pipe here)."""
        chat_id = str((inlet_answer.get("metadata") or {}).get("chat_id") or "")
        return self.http.answer(
            self.pipe_body(inlet_answer), headers=self.forwarded_headers(chat_id)
        )

    def replay(
        self, records: Sequence[Mapping[str, Any]], *, stream: bool | None = None
    ) -> list[Exchange]:
        """Replay ``records`` in order; ``stream`` overrides the turns' own (tasks never stream)."""
        try:
            done = self._replay(records, stream)
        except HostError as exc:
            raise PipelinesServerError(f"{exc}\n{self.server.log_tail()}") from exc
        self.exchanges.extend(done)
        return done

    def _replay(self, records: Sequence[Mapping[str, Any]], stream: bool | None) -> list[Exchange]:
        done: list[Exchange] = []
        for index, record in enumerate(records):
            body = self.prepare(record)
            if record["hook"] == "outlet":
                done.append(Exchange("outlet", body, self.http.outlet(body, self.user)))
                continue
            task = (body.get("metadata") or {}).get("task")
            if stream is not None and not task:
                body["stream"] = stream
            returned = self.http.inlet(body, self.user)
            reply = self.answer(returned)
            if reply.status_code != 200:
                raise PipelinesServerError(f"the answer failed: {reply.raw[:500]}")
            if not task:
                self._learn_reply(records[index + 1 :], reply.content)
            done.append(Exchange("inlet", body, returned, task, reply))
        return done

    def edit(self, turn: Sequence[Mapping[str, Any]], text: str) -> list[Exchange]:
        """Replay a recorded turn (its inlet and outlet) as an edit of its user message: ``text``
        instead, with fresh ids for the message and its reply (see ``as_edit``)."""
        saved = dict(self.replacements)
        try:
            return self.replay(as_edit(turn, text, str(uuid.uuid4()), str(uuid.uuid4())))
        finally:
            self.replacements = saved  # the edit's reply replaces no later turn's recorded one

    def _learn_reply(self, following: Sequence[Mapping[str, Any]], content: str) -> None:
        """Map the recorded reply of this turn (in its outlet) to the reply this run got."""
        for record in following:
            if record["hook"] == "outlet":
                recorded_reply = reply_text(record["body"])
                if recorded_reply:
                    self.replacements[recorded_reply] = content
                return
            if not is_task(record):
                return  # the turn failed: Open WebUI ran no outlet for it


class OpenWebUIWithHelixConnection(OpenWebUI):
    """Open WebUI in front of Helix as an OpenAI connection: the answer comes from Helix itself
    (the session filter's setting), with the forwarded user headers."""

    def __init__(self, helix: FakeHelix, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helix = helix

    def answer(self, inlet_answer: Mapping[str, Any]) -> Reply:
        body = self.pipe_body(inlet_answer)
        del body["user"]  # sent to a pipe, not to an OpenAI connection (recorded backend.jsonl)
        chat_id = str((inlet_answer.get("metadata") or {}).get("chat_id") or "")
        response = requests.post(
            f"{self.helix.url}/v1/chat/completions",
            json=body,
            headers=self.forwarded_headers(chat_id),
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code != 200:
            return Reply("", response.status_code, done=False, raw=response.text)
        return read_answer(response.text, stream=body.get("stream", True) is not False)


def stored(sessions: SessionStore, user: dict[str, Any], chat_id: str) -> list[tuple[str, str]]:
    """(role, content) of a user's chat's active branch."""
    return [(m.role, m.content) for m in sessions.load(ConversationKey(user["id"], chat_id))]
