"""``helix-pipeline install``: put the pipeline files where a Pipelines server loads them.

The files are bundles built from this package's own sources (:mod:`helix_pipeline.bundle`): the
same bytes as the repository's ``pipelines/`` folder, self-contained, so a stock server loads them.
The pipe alone is installed unless the filter is asked for. They are written into a
``PIPELINES_DIR``, or uploaded to a running server with ``POST /pipelines/upload`` (multipart field
``file``, ``Authorization: Bearer <key>``), which saves them and reloads every pipeline.

The upload answers 200 even when a file then fails to load (the server moves it to ``failed/``),
so after uploading, :func:`upload` asks the server what it really loaded: ``GET /pipelines`` lists
the files it loaded (a failed one is absent) and ``GET /models`` the models they serve.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests

from . import __version__
from .bundle import DRIVERS, BundleSpec, build_bundle, bundles
from .errors import ConfigError, HelixPipelineError
from .urls import redact_url
from .wire_errors import server_unreachable

__all__ = ["Installed", "install_into", "pipeline_files", "upload"]

UPLOAD_TIMEOUT_S = (5.0, 300.0)
"""Connect and read timeouts: the server pip-installs the files' requirements before it answers."""
CHECK_TIMEOUT_S = (5.0, 30.0)
PIPE_FILE, FILTER_FILE = "helix.py", "helix_session_filter.py"


@dataclass(frozen=True)
class Installed:
    """One file to install: its name, its text, and what it is, for the messages."""

    name: str
    data: bytes
    what: str

    @property
    def module(self) -> str:
        """The server's name for it (``GET /pipelines`` ``name``): the file name without ``.py``."""
        return self.name.removesuffix(".py")


def pipeline_files(*, with_filter: bool = False, drivers: Sequence[str] = ()) -> list[Installed]:
    """The pipe's file (and the filter's, if asked), built from this package's sources."""
    specs: list[BundleSpec] = [
        spec
        for spec in bundles(["pipelines"])
        if spec.output == PIPE_FILE or (with_filter and spec.output == FILTER_FILE)
    ]
    return [
        Installed(
            spec.output,
            build_bundle(spec.host, drivers=drivers, label=spec.output).encode(),
            "the Helix pipe" if spec.output == PIPE_FILE else "the session filter",
        )
        for spec in specs
    ]


def install_into(
    folder: Path, out: TextIO, *, with_filter: bool = False, drivers: Sequence[str] = ()
) -> None:
    """Write the files into a Pipelines server's ``PIPELINES_DIR`` (created if needed)."""
    files = pipeline_files(with_filter=with_filter, drivers=drivers)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            (folder / file.name).write_bytes(file.data)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {folder}: {exc.strerror}; pass the Pipelines server's "
            "PIPELINES_DIR folder, writable by you",
            setting="PIPELINES_DIR",
        ) from exc
    for file in files:
        out.write(
            f"Wrote {folder / file.name}: {file.what}, helix-pipeline {__version__}, "
            f"self-contained.\n"
        )
        if (folder / "failed" / file.name).exists():
            out.write(
                f"  {folder / 'failed' / file.name} is an older copy that failed to load; the "
                "server ignores it (delete it when you like).\n"
            )
    out.write(f"{_requirements_note(drivers)}\n")
    out.write(
        "The server loads files when it starts: restart it, or POST /pipelines/reload with its "
        "API key.\n"
    )


def upload(
    url: str,
    key_env: str,
    out: TextIO,
    *,
    with_filter: bool = False,
    drivers: Sequence[str] = (),
) -> None:
    """Upload the files to the server at ``url``, then check that it loaded them."""
    api_key = api_key_from(key_env, "the Pipelines server's API key (its PIPELINES_API_KEY)")
    server = _Server(url, api_key, key_env)
    files = pipeline_files(with_filter=with_filter, drivers=drivers)
    for file in files:
        server.upload(file)
    loaded = {entry.get("name"): entry for entry in server.get("/pipelines")}
    models = [str(model.get("id")) for model in server.get("/models")]
    failed = [file for file in files if file.module not in loaded]
    if failed:
        raise HelixPipelineError(_failure(server.shown, failed, drivers))
    for file in files:
        pipeline_id = str(loaded[file.module].get("id"))
        served = [m for m in models if m.startswith(f"{pipeline_id}.")]
        if file.name == PIPE_FILE and not served:
            raise HelixPipelineError(
                f"the Pipelines server at {server.shown} loaded {file.name} but lists no Helix "
                f"model: set the pipe's HELIX_MODELS valve, or check that HELIX_BASE_URL reaches "
                "Helix (helix-pipeline doctor)"
            )
        shown = f"; models: {', '.join(served)}" if served else ""
        out.write(f"Installed {file.name} ({file.what}): loaded as {pipeline_id}{shown}\n")
    if drivers:
        out.write(f"{_requirements_note(drivers)}\n")


def _failure(shown: str, failed: Sequence[Installed], drivers: Sequence[str]) -> str:
    names = " and ".join(file.name for file in failed)
    cause = (
        f"its requirements line asked the server to pip install "
        f"{', '.join(req for name in drivers for req in DRIVERS[name])}: a server that cannot "
        "reach PyPI fails there, so install the driver with PIPELINES_REQUIREMENTS_PATH "
        "(README, Deployment) and upload the file without --with"
        if drivers
        else "its log names the error; a Python older than 3.10 or a pydantic older than 2 "
        "cannot run it"
    )
    return (
        f"the Pipelines server at {shown} took {names} but did not load it: it moved the file "
        f"to failed/ in its PIPELINES_DIR, and its log says why after 'Error loading module: "
        f"{failed[0].module}'. {cause[0].upper()}{cause[1:]}"
    )


def _requirements_note(drivers: Sequence[str]) -> str:
    if not drivers:
        return "Nothing to pip install: pydantic and requests come with the Pipelines server."
    needed = ", ".join(req for name in drivers for req in DRIVERS[name])
    return f"Their requirements line makes the server pip install {needed} when it loads them."


class _Server:
    """The Pipelines server's admin API, its errors turned into ours."""

    def __init__(self, url: str, api_key: str, key_env: str) -> None:
        self.base = url.rstrip("/")
        self.shown = redact_url(self.base)
        self.key_env = key_env
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def upload(self, file: Installed) -> None:
        self._call(
            "POST",
            "/pipelines/upload",
            files={"file": (file.name, file.data, "text/x-python")},
            timeout=UPLOAD_TIMEOUT_S,
        )

    def get(self, path: str) -> list[dict[str, Any]]:
        answer = self._call("GET", path, timeout=CHECK_TIMEOUT_S)
        data = answer.get("data") if isinstance(answer, dict) else None
        return (
            [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return admin_request(
            method,
            f"{self.base}{path}",
            headers=self.headers,
            server=f"the Pipelines server at {self.shown}",
            fix="check --url and that the server runs",
            refused=lambda status: ConfigError(
                f"the Pipelines server at {self.shown} refused the API key in {self.key_env} "
                f"({status}); set {self.key_env} to its PIPELINES_API_KEY",
                setting=self.key_env,
            ),
            **kwargs,
        )


def api_key_from(key_env: str, what: str) -> str:
    """The admin API key in the environment variable ``key_env``; ``what`` says which key it is."""
    key = os.environ.get(key_env)
    if not key:
        raise ConfigError(
            f"set the environment variable {key_env} to {what}, or name another variable with "
            "--api-key-env",
            setting=key_env,
        )
    return key


def admin_request(
    method: str,
    url: str,
    *,
    server: str,
    fix: str,
    refused: Callable[[int], ConfigError],
    **kwargs: Any,
) -> Any:
    """One call to a server's admin API (the Pipelines server's, Open WebUI's): its JSON answer,
    ``None`` when it is not JSON. ``server`` names it in errors, ``fix`` is what to check when it
    cannot be reached, ``refused`` the error for a key it refuses (401, 403)."""
    try:
        response = requests.request(method, url, **kwargs)
    except requests.RequestException as exc:
        raise server_unreachable(exc, server=server, fix=fix) from exc
    with response:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        text = response.text
    if response.status_code in (401, 403):
        raise refused(response.status_code)
    if response.status_code != 200:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        shown = detail if isinstance(detail, str) else " ".join(text[:200].split())
        path = urlsplit(url).path
        raise HelixPipelineError(
            f"{server} answered HTTP {response.status_code} to {method} {path}: "
            f"{shown or 'no detail'}"
        )
    return answer
