"""``helix-pipeline doctor``: is Helix reachable, and can the session store be written?

Each check prints ``ok`` or ``FAIL`` with what it saw; a failure adds the fix that fits it (the
valve, the environment variable or the command to run). Nothing secret is printed: URLs are
redacted and an API key is named by its variable, never shown. Doctor never creates what it checks:
an SQLite file that does not exist is reported, not made (nor its folder); an existing store gets a
probe conversation, written, read back and deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from uuid import uuid4

from .client import HelixClient
from .conversation import ConversationKey
from .errors import BackendError, ConfigError, HelixPipelineError, StoreError, StoreUnavailable
from .messages import Message
from .store_location import choose_store, pipelines_dir_from
from .stores import missing_store, open_store
from .urls import redact_url
from .valves import HelixValves

__all__ = ["Check", "check_helix", "check_store", "run_doctor"]

DOCTOR_USER = "helix-pipeline-doctor"


@dataclass(frozen=True, slots=True)
class Check:
    """One doctor check: what was checked, whether it passed, and the fix when it did not."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


STORE_URL_FORMS = (
    "sqlite:////absolute/path/sessions.db, redis://host:6379/0 or postgresql://user:pass@host/db"
)
_STORE_FIXES = {
    "missing": "the Helix pipeline creates it with its first recorded chat; if the Pipelines "
    "server has recorded chats, it uses another store: run doctor beside it with "
    "--pipelines-dir (or PIPELINES_DIR) set to its pipelines folder, or --store set to its "
    "SESSION_STORE_URL",
    "invalid": "correct SESSION_STORE_URL (the valve or the environment variable; --store tries "
    f"another) as the line above says; it takes {STORE_URL_FORMS}",
    "server": "give --pipelines-dir (or PIPELINES_DIR) the Pipelines server's pipelines folder, "
    "or --store a URL; a saved SESSION_STORE_URL valve is corrected in Open WebUI (Admin Panel > "
    "Settings > Pipelines)",
    "unreachable": "start the store's server, or correct the host, port and credentials in "
    "SESSION_STORE_URL (--store tries another URL)",
    "unwritable": "give the Pipelines server's user write access to the store, or point "
    f"SESSION_STORE_URL at one it can write: {STORE_URL_FORMS}",
}


def run_doctor(
    out: TextIO,
    *,
    helix_url: str | None,
    store_url: str | None,
    api_key_env: str,
    pipelines_dir: Path | None = None,
) -> int:
    """Run every check, print each result (a failure with its fix); 0 only if all passed.

    The store checked is ``store_url``, else the one the Pipelines server in ``pipelines_dir``
    uses (:func:`~helix_pipeline.store_location.choose_store`).
    """
    try:
        store = choose_store(store_url, pipelines_dir_from(pipelines_dir))
        store_check = check_store(store.url, store.source)
    except ConfigError as exc:  # saved valves that cannot be read or used, a file as the folder
        store_check = Check("session store", False, str(exc), _STORE_FIXES["server"])
    checks = [*check_helix(helix_url, api_key_env), store_check]
    for check in checks:
        out.write(f"{'ok  ' if check.passed else 'FAIL'}  {check.name}: {check.detail}\n")
        if not check.passed:
            out.write(f"      fix: {check.fix}\n")
    failed = sum(not c.passed for c in checks)
    out.write(
        "All checks passed.\n" if not failed else f"{failed} of {len(checks)} checks failed.\n"
    )
    return 0 if not failed else 1


def check_helix(helix_url: str | None, key_env: str) -> list[Check]:
    """Helix answers ``GET /health`` and lists its models (``helix_url`` or ``HELIX_BASE_URL``)."""
    url = helix_url or HelixValves().HELIX_BASE_URL
    reach_fix = (
        "start Helix (it listens on port 8001 by default), or set HELIX_BASE_URL (the "
        "HELIX_BASE_URL valve) to where it listens; --helix-url tries another address"
    )
    key_fix = (
        f"put Helix's API key in the environment variable {key_env} (in the pipeline: the "
        "HELIX_API_KEY valve)"
    )
    shown = redact_url(url)
    try:
        client = HelixClient(
            url,
            api_key=os.environ.get(key_env) or None,
            connect_timeout=3.0,
            read_timeout=10.0,
            max_retries=0,
        )
    except ConfigError as exc:
        fix = (
            "set HELIX_BASE_URL (the valve or the environment variable; --helix-url tries "
            "another) to where Helix listens, e.g. http://localhost:8001"
        )
        return [Check("Helix", False, str(exc), fix)]
    with client:
        try:
            health = client.health()
        except HelixPipelineError as exc:
            refused = isinstance(exc, BackendError) and exc.status_code in (401, 403)
            return [Check("Helix", False, str(exc), key_fix if refused else reach_fix)]
        checks = [Check("Helix", True, f"{shown} answered GET /health with {health}")]
        try:
            models = client.models()
        except HelixPipelineError as exc:
            refused = isinstance(exc, BackendError) and exc.status_code in (401, 403)
            fix = key_fix if refused else "check that HELIX_BASE_URL points at Helix itself"
            return [*checks, Check("Helix models", False, str(exc), fix)]
    if not models:
        fix = "check Helix's configuration; the HELIX_MODELS valve names the models to offer"
        return [*checks, Check("Helix models", False, "GET /v1/models lists no model", fix)]
    return [*checks, Check("Helix models", True, ", ".join(models))]


def check_store(url: str, source: str = "") -> Check:
    """The store exists and opens, and a probe conversation can be written, read back and deleted.

    ``source`` says where ``url`` came from (shown beside it). Nothing is created: an SQLite file
    that does not exist fails the check.
    """
    name = f"session store {redact_url(url)}" + (f" ({source})" if source else "")
    try:
        missing = missing_store(url)
    except ConfigError as exc:
        return Check(name, False, str(exc), _STORE_FIXES["invalid"])
    if missing is not None:
        return Check(name, False, missing, _STORE_FIXES["missing"])
    try:
        store = open_store(url)
    except ConfigError as exc:
        return Check(name, False, f"cannot open it: {exc}", _STORE_FIXES["invalid"])
    except StoreUnavailable as exc:
        local = url.lower().startswith("sqlite:")  # a file: nothing to start, only to allow
        fix = _STORE_FIXES["unwritable" if local else "unreachable"]
        return Check(name, False, f"cannot open it: {exc}", fix)
    except StoreError as exc:
        return Check(name, False, f"cannot open it: {exc}", _STORE_FIXES["unwritable"])
    key = ConversationKey(DOCTOR_USER, f"probe-{uuid4().hex}")
    try:
        store.record(key, [Message("user", "helix-pipeline doctor probe")])
        wrote = [m.content for m in store.load(key)] == ["helix-pipeline doctor probe"]
        deleted = store.delete(key)
    except StoreError as exc:
        return Check(name, False, f"cannot write to it: {exc}", _STORE_FIXES["unwritable"])
    finally:
        store.close()
    if not (wrote and deleted):
        detail = "a probe conversation did not read back as written"
        return Check(name, False, detail, _STORE_FIXES["unwritable"])
    return Check(name, True, "opened, wrote and deleted a probe conversation")
