"""The real Open WebUI 0.12.4 in a subprocess, driven over HTTP as an admin and its browser drive it.

Open WebUI is ``pip install open-webui==0.12.4`` in a venv of its own (about 7.4 GB), built once by
``.ci/openwebui-venv`` and cached by version (``HELIX_OPENWEBUI_CACHE``, default
``~/.cache/helix-pipeline``). :func:`openwebui_python` builds it when it is missing and says why
when it cannot be built, so the tests skip with that reason. The server runs offline (DESIGN.md
section 5) on a free 127.0.0.1 port with a temporary ``DATA_DIR``; the first account signed up is
the admin, whose token installs the Functions through the admin API, as an admin would
(``helix-pipeline install --openwebui``).

A chat turn goes the browser's way (``tests/fixtures/openwebui-0.12.4/examples/17_*``): ``POST
/api/chat/completions`` with the session, chat and message ids, then the chat is read back from
``GET /api/v1/chats/{id}`` until the assistant message is done (the browser would follow the socket
events, which Open WebUI also saves in the chat: the answer and its status lines).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from .pipelines_server import free_port

__all__ = [
    "OPENWEBUI_VERSION",
    "Account",
    "BrowserChat",
    "OpenWebUIServer",
    "OpenWebUIUnavailable",
    "SocketListener",
    "openwebui_python",
]

OPENWEBUI_VERSION = "0.12.4"
REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / ".ci" / "openwebui-venv"
START_TIMEOUT_S = 180.0
TURN_TIMEOUT_S = 120.0
PASSWORD = "helix-test-password-7c1e"


class OpenWebUIUnavailable(RuntimeError):
    """Open WebUI's venv cannot be built on this machine; the message says why."""


def venv_dir() -> Path:
    cache = os.environ.get("HELIX_OPENWEBUI_CACHE") or str(Path.home() / ".cache/helix-pipeline")
    return Path(cache) / f"openwebui-{OPENWEBUI_VERSION}" / "venv"


def openwebui_python() -> Path:
    """The cached venv's interpreter, built by ``.ci/openwebui-venv`` first if it is missing."""
    python = venv_dir() / "bin" / "python"
    if python.is_file():
        return python
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HELIX_OPENWEBUI_VERSION": OPENWEBUI_VERSION},
    )
    if result.returncode != 0 or not python.is_file():
        tail = "\n".join(line for line in result.stderr.splitlines() if "is ignored" not in line)[
            -1500:
        ]
        raise OpenWebUIUnavailable(
            f"could not build open-webui=={OPENWEBUI_VERSION} with {BUILD_SCRIPT.name} "
            f"(exit {result.returncode}): {tail}"
        )
    return python


@dataclass(frozen=True, slots=True)
class Account:
    """A signed-up Open WebUI user and the bearer token of their session."""

    id: str
    name: str
    email: str
    role: str
    token: str


class OpenWebUIServer:
    """One Open WebUI process; a context manager. ``env`` adds to the offline environment."""

    def __init__(self, root: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "openwebui.log"
        self.extra_env = dict(env or {})
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OpenWebUIServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIX_", "VIRTUAL_ENV"))}
        env.update(
            {
                "DATA_DIR": str(self.data_dir),
                "OFFLINE_MODE": "true",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
                "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
                "ENABLE_OLLAMA_API": "false",
                "ENABLE_OPENAI_API": "false",
                "ENABLE_VERSION_UPDATE_CHECK": "false",
                "WEBUI_SECRET_KEY": secrets.token_hex(16),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        python = openwebui_python()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        command = [
            str(python),
            "-c",
            "import sys; from open_webui import app; sys.exit(app())",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Open WebUI exited at start:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Open WebUI did not answer within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        self.http.close()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, account: Account | None = None, json_body: Any = None
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {account.token}"} if account else {}
        return self.http.request(
            method, f"{self.url}{path}", json=json_body, headers=headers, timeout=60
        )

    def ok(
        self, method: str, path: str, account: Account | None = None, json_body: Any = None
    ) -> Any:
        response = self.call(method, path, account, json_body)
        if response.status_code != 200:
            raise AssertionError(
                f"{method} {path}: HTTP {response.status_code} {response.text[:500]}\n"
                f"{self.log_tail(30)}"
            )
        return response.json()

    def signup(self, name: str) -> Account:
        """A new account (the first one is the admin)."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        data = self.ok(
            "POST",
            "/api/v1/auths/signup",
            json_body={"name": name, "email": email, "password": PASSWORD},
        )
        return Account(data["id"], data["name"], data["email"], data["role"], data["token"])

    def add_user(self, admin: Account, name: str) -> Account:
        """Another account, made by the admin (Admin Panel > Users; sign-up closes after the first)."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        form = {"name": name, "email": email, "password": PASSWORD, "role": "user"}
        data = self.ok("POST", "/api/v1/auths/add", admin, form)
        return Account(data["id"], data["name"], data["email"], data["role"], data["token"])

    def set_valves(self, admin: Account, function_id: str, valves: Mapping[str, Any]) -> None:
        self.ok("POST", f"/api/v1/functions/id/{function_id}/valves/update", admin, dict(valves))

    def set_user_valves(
        self, account: Account, function_id: str, valves: Mapping[str, Any]
    ) -> None:
        path = f"/api/v1/functions/id/{function_id}/valves/user/update"
        self.ok("POST", path, account, dict(valves))

    def models(self, account: Account) -> list[dict[str, Any]]:
        data = self.ok("GET", "/api/models", account)
        return list(data["data"])


@dataclass
class BrowserChat:
    """One chat of one account, driven the way the 0.12.4 frontend drives it."""

    server: OpenWebUIServer
    account: Account
    model: str
    chat_id: str | None = None
    session_id: str = field(default_factory=lambda: secrets.token_urlsafe(15)[:20])
    last_message_id: str | None = None

    def send(self, text: str, *, background_tasks: Mapping[str, bool] | None = None) -> Any:
        """Send ``text`` and wait until the assistant message is done; that message."""
        return self.wait_for(self.start(text, background_tasks=background_tasks))

    def start(self, text: str, *, background_tasks: Mapping[str, bool] | None = None) -> str:
        """Send ``text``; Open WebUI answers at once and works on; the assistant message's id."""
        user_message_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
        body: dict[str, Any] = {
            "stream": True,
            "model": self.model,
            "params": {},
            "tool_ids": [],
            "features": {"web_search": False, "memory": False},
            "session_id": self.session_id,
            "id": message_id,
            "message_ids": [{"model_id": self.model, "message_id": message_id, "modelIdx": 0}],
            "parent_id": self.last_message_id,
            "user_message": {
                "id": user_message_id,
                "parentId": self.last_message_id,
                "childrenIds": [message_id],
                "role": "user",
                "content": text,
                "timestamp": int(time.time()),
                "models": [self.model],
            },
            "background_tasks": dict(background_tasks or {}),
        }
        if self.chat_id:
            body["chat_id"] = self.chat_id
        answer = self.server.ok("POST", "/api/chat/completions", self.account, body)
        self.chat_id = self.chat_id or answer.get("chat_id")
        assert self.chat_id, f"no chat id in {answer}"
        self.last_message_id = message_id
        return message_id

    def wait_for(self, message_id: str) -> Any:
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while time.monotonic() < deadline:
            chat = self.server.ok("GET", f"/api/v1/chats/{self.chat_id}", self.account)
            message = chat["chat"]["history"]["messages"].get(message_id)
            if message and message.get("done"):
                return message
            time.sleep(0.2)
        raise AssertionError(f"the answer to {message_id} did not finish in {TURN_TIMEOUT_S} s")


class SocketListener:
    """The browser's socket to Open WebUI for one account (``tests/openwebui_socket.py``, run by
    Open WebUI's Python): every ``events`` message it receives, as they arrive. A context manager."""

    def __init__(self, server: OpenWebUIServer, account: Account) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.sid = ""
        script = Path(__file__).with_name("openwebui_socket.py")
        self._process = subprocess.Popen(
            [str(openwebui_python()), str(script), server.url, account.token],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="socket-listener", daemon=True)
        self._reader.start()
        if not self._connected.wait(30):
            self.close()
            raise AssertionError("the socket listener did not connect to Open WebUI")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            data = json.loads(line)
            if "sid" in data and not self._connected.is_set():
                self.sid = str(data["sid"])
                self._connected.set()
                continue
            with self._lock:
                self.events.append(data)

    def for_message(self, message_id: str) -> list[dict[str, Any]]:
        """The events of one assistant message (``data`` of each), in order."""
        with self._lock:
            return [e["data"] for e in self.events if e.get("message_id") == message_id]

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> SocketListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
