"""Which session store the command line opens: the one the Pipelines server beside it uses.

``--store`` wins. Else the rule is the pipeline's own (:meth:`HistoryValves.store_url`): the
``SESSION_STORE_URL`` valve the server saved in ``<PIPELINES_DIR>/helix/valves.json`` (or, without
that file, the filter's ``helix_session_filter/valves.json``), else the ``SESSION_STORE_URL`` environment
variable, else ``<PIPELINES_DIR>/helix_data/sessions.db`` (``HELIX_DATA_DIR`` moves it). The
pipelines folder is ``--pipelines-dir``, else ``PIPELINES_DIR``, else ``./pipelines``, as for the
server. :class:`StoreChoice` says where the URL came from, for the line each command prints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .errors import ConfigError
from .urls import redact_url
from .valves import HistoryValves, default_store_url

__all__ = ["PIPELINE_IDS", "StoreChoice", "choose_store", "pipelines_dir_from"]

PIPELINE_IDS = ("helix", "helix_session_filter")
"""The ids of the Helix pipe and the session filter: the folders the server keeps valves in."""


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """A store URL and where it came from, e.g. ``the SESSION_STORE_URL environment variable``."""

    url: str
    source: str

    def describe(self) -> str:
        """``<url, password as ***> (<source>)``."""
        return f"{redact_url(self.url)} ({self.source})"


def pipelines_dir_from(option: Path | None) -> Path:
    """``--pipelines-dir``, else ``PIPELINES_DIR``, else ``./pipelines``."""
    return option or Path(os.environ.get("PIPELINES_DIR") or "./pipelines")


def choose_store(given: str | None, pipelines_dir: Path) -> StoreChoice:
    """The store a command opens: ``given`` (``--store``), else the pipelines' own rule."""
    if given:
        return StoreChoice(given, "--store")
    if pipelines_dir.exists() and not pipelines_dir.is_dir():
        raise ConfigError(
            f"{pipelines_dir} is not a folder: give --pipelines-dir (or PIPELINES_DIR) the "
            "Pipelines server's pipelines folder, or --store a store URL",
            setting="PIPELINES_DIR",
        )
    saved, valves_file = _saved_store_url(pipelines_dir)
    try:
        valves = HistoryValves(SESSION_STORE_URL=saved)
    except ValidationError as exc:
        problem = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(
            f"the SESSION_STORE_URL valve in {valves_file} cannot be used: {problem}; correct it "
            "in Open WebUI (Admin Panel > Settings > Pipelines), or give --store",
            setting="SESSION_STORE_URL",
        ) from exc
    url = valves.store_url(pipelines_dir)
    if saved:
        return StoreChoice(url, f"the SESSION_STORE_URL valve in {valves_file}")
    if url != default_store_url(pipelines_dir):
        return StoreChoice(url, "the SESSION_STORE_URL environment variable")
    if os.environ.get("HELIX_DATA_DIR"):
        return StoreChoice(url, "the default file in HELIX_DATA_DIR")
    return StoreChoice(url, f"the default file beside the pipelines in {pipelines_dir}")


def _saved_store_url(pipelines_dir: Path) -> tuple[str, Path | None]:
    """The ``SESSION_STORE_URL`` the server saved for the pipe (else, if the pipe has no saved
    valves, for the filter), and that file; empty when none was saved."""
    for pipeline_id in PIPELINE_IDS:
        path = pipelines_dir / pipeline_id / "valves.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read the saved valves {path} ({exc}); give --store instead",
                setting="SESSION_STORE_URL",
            ) from exc
        value = saved.get("SESSION_STORE_URL") if isinstance(saved, dict) else None
        return (value.strip() if isinstance(value, str) else ""), path
    return "", None
