"""``helix-pipeline install``: put the two pipeline files where a Pipelines server loads them.

The files are built from the package's own sources (:mod:`helix_pipeline.bundle`), the same
bytes as the repository's ``pipelines/`` folder holds. They are copied into a ``PIPELINES_DIR``, or uploaded to a running server with ``POST /pipelines/upload``
(multipart field ``file``, ``Authorization: Bearer <key>``), which saves and reloads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

import requests

from .bundle import build_bundle, bundles
from .errors import ConfigError, HelixPipelineError
from .urls import redact_url

__all__ = ["PIPELINE_FILES", "install_into", "pipeline_files", "upload"]

PIPELINE_FILES = ("helix.py", "helix_session_filter.py")
UPLOAD_TIMEOUT_S = (5.0, 300.0)
"""Connect and read timeouts: the server pip-installs the files' requirements before it answers."""


def pipeline_files() -> dict[str, bytes]:
    """The two pipeline files a Pipelines server loads, built from this package's sources."""
    return {
        spec.output: build_bundle(spec.host, label=spec.output).encode()
        for spec in bundles(["pipelines"])
    }


def install_into(folder: Path, out: TextIO) -> None:
    """Copy both pipeline files into a Pipelines server's ``PIPELINES_DIR`` (created if needed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in pipeline_files().items():
            (folder / name).write_bytes(data)
            out.write(f"Installed {folder / name}\n")
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {folder}: {exc.strerror}; pass the Pipelines server's "
            "PIPELINES_DIR folder, writable by you",
            setting="PIPELINES_DIR",
        ) from exc
    out.write(
        "They carry the library and need nothing installed: restart the Pipelines server (or "
        "POST /pipelines/reload) to load them.\n"
    )


def upload(url: str, key_env: str, out: TextIO) -> None:
    """Upload both files to the Pipelines server at ``url`` with the API key in ``$key_env``."""
    api_key = os.environ.get(key_env)
    if not api_key:
        raise ConfigError(
            f"set the environment variable {key_env} to the Pipelines server's API key (its "
            "PIPELINES_API_KEY), or name another variable with --api-key-env",
            setting=key_env,
        )
    for name, data in pipeline_files().items():
        detail = _upload_one(url, api_key, key_env, name, data)
        out.write(f"Uploaded {name}: {detail}\n")


def _upload_one(url: str, api_key: str, key_env: str, name: str, data: bytes) -> str:
    """``POST /pipelines/upload`` one file; the server's answer, or an error saying what to do."""
    endpoint = f"{url.rstrip('/')}/pipelines/upload"
    shown = redact_url(endpoint)
    try:
        response = requests.post(
            endpoint,
            files={"file": (name, data, "text/x-python")},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=UPLOAD_TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise HelixPipelineError(
            f"cannot reach the Pipelines server at {shown} ({type(exc).__name__}); check --url "
            "and that the server runs"
        ) from exc
    with response:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        text = response.text
    detail = answer.get("detail") if isinstance(answer, dict) else None
    shown_detail = detail if isinstance(detail, str) else " ".join(text[:200].split())
    if response.status_code in (401, 403):
        raise ConfigError(
            f"the Pipelines server at {shown} refused the API key in {key_env} "
            f"({response.status_code}); set {key_env} to its PIPELINES_API_KEY",
            setting=key_env,
        )
    if response.status_code != 200:
        raise HelixPipelineError(
            f"uploading {name} to {shown} failed with HTTP {response.status_code}: "
            f"{shown_detail or 'no detail'}"
        )
    return shown_detail or "uploaded"
