"""``helix-pipeline install --openwebui URL``: the Helix Functions into a running Open WebUI.

Through Open WebUI's admin API (an admin's API key or token, read from an environment variable):
``GET /api/v1/functions/`` to see what is there, ``POST /api/v1/functions/create`` or
``/api/v1/functions/id/{id}/update`` with each file, ``.../toggle`` to switch it on, then
``GET /api/models`` to check that the Helix model is listed. Open WebUI keeps the valves an admin
set when a Function's code is updated. The files are the self-contained Function bundles, built
from this package's own sources, so nothing needs installing into Open WebUI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ConfigError, HelixPipelineError
from .install import admin_request, api_key_from
from .urls import redact_url

__all__ = ["FUNCTIONS", "FunctionFile", "install_functions"]

_KEY = "an Open WebUI admin's API key (Settings > Account > API keys)"
TIMEOUT_S = (5.0, 120.0)
"""Connect and read timeouts: Open WebUI loads (and may pip-install) a Function before answering."""


@dataclass(frozen=True, slots=True)
class FunctionFile:
    """One Function: its id in Open WebUI, its name and description there, and its bundle file."""

    id: str
    name: str
    description: str
    output: str


FUNCTIONS = (
    FunctionFile(
        "helix",
        "Helix",
        "Helix with conversation memory: one model per Helix model.",
        "functions/helix.py",
    ),
    FunctionFile(
        "helix_session_filter",
        "Helix session memory",
        "Conversation memory for a Helix reached through Open WebUI's own connection; "
        "attach it to those models.",
        "functions/helix_session_filter.py",
    ),
)


def install_functions(
    url: str,
    key_env: str,
    out: TextIO,
    *,
    sources: Mapping[str, str] | None = None,
    functions: Sequence[FunctionFile] = FUNCTIONS,
) -> None:
    """Create or update each Function at ``url``, switch it on, and check the Helix model is listed.

    ``sources`` maps a Function's ``output`` to its text (default: the bundles built now).
    Raises :class:`HelixPipelineError` saying what failed and what to do.
    """
    api = _AdminApi(url, api_key_from(key_env, _KEY), key_env)
    texts = dict(sources) if sources is not None else _bundles(functions)
    existing = {str(f.get("id")) for f in api.call("GET", "/api/v1/functions/") or []}
    for function in functions:
        form = {
            "id": function.id,
            "name": function.name,
            "content": texts[function.output],
            "meta": {"description": function.description},
        }
        if function.id in existing:
            saved = api.call("POST", f"/api/v1/functions/id/{function.id}/update", form)
            done = "Updated"
        else:
            saved = api.call("POST", "/api/v1/functions/create", form)
            done = "Created"
        if not (isinstance(saved, dict) and saved.get("is_active")):
            saved = api.call("POST", f"/api/v1/functions/id/{function.id}/toggle")
        if not (isinstance(saved, dict) and saved.get("is_active")):
            raise HelixPipelineError(f"Open WebUI at {api.shown} did not switch on {function.id}")
        out.write(f"{done} and switched on the Function {function.id} ({function.name})\n")
    _check_models(api, out)


def _check_models(api: _AdminApi, out: TextIO) -> None:
    answer = api.call("GET", "/api/models")
    models = answer.get("data") if isinstance(answer, dict) else None
    ids = [str(m.get("id")) for m in models or [] if isinstance(m, dict)]
    helix = [model_id for model_id in ids if model_id.startswith(f"{FUNCTIONS[0].id}.")]
    if not helix:
        raise HelixPipelineError(
            f"Open WebUI at {api.shown} lists no Helix model after the install; look at Open "
            "WebUI's log for the Helix Function's error (Admin Panel > Functions)"
        )
    out.write(f"Open WebUI lists {', '.join(helix)}\n")
    out.write(
        "Set the Helix Function's valves (HELIX_BASE_URL ...) in Admin Panel > Functions > Helix, "
        "or as environment variables of Open WebUI.\n"
    )


def _bundles(functions: Sequence[FunctionFile]) -> dict[str, str]:
    from .bundle import build_bundle, bundles

    specs = {spec.output: spec for spec in bundles(["functions"])}
    wanted = {f.output for f in functions}
    return {
        name: build_bundle(spec.host, label=name) for name, spec in specs.items() if name in wanted
    }


class _AdminApi:
    """Open WebUI's admin API with one bearer key; every failure says what to do."""

    def __init__(self, url: str, key: str, key_env: str) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self._key = key
        self._key_env = key_env

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return admin_request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=TIMEOUT_S,
            server=f"Open WebUI at {self.shown}",
            fix="check the URL and that Open WebUI runs",
            refused=lambda status: ConfigError(
                f"Open WebUI at {self.shown} refused the key in {self._key_env} "
                f"(HTTP {status} on {path}); use an admin's API key",
                setting=self._key_env,
            ),
        )
