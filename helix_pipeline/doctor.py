"""``helix-pipeline doctor``: is Helix reachable, and can the session store be written?

Each check prints ``ok`` or ``FAIL`` with what it saw; a failure adds the fix (the valve, the
environment variable or the command to run). Nothing secret is printed: URLs are redacted and an
API key is named by its variable, never shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO
from uuid import uuid4

from .client import HelixClient
from .conversation import ConversationKey
from .errors import BackendError, ConfigError, HelixPipelineError, StoreError
from .messages import Message
from .stores import open_store, redact_url
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


def run_doctor(out: TextIO, *, helix_url: str | None, store_url: str, api_key_env: str) -> int:
    """Run every check, print each result (a failure with its fix); 0 only if all passed."""
    checks = [*check_helix(helix_url, api_key_env), check_store(store_url)]
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
        return [Check("Helix", False, str(exc), reach_fix)]
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


def check_store(url: str) -> Check:
    """The store opens, and a probe conversation can be written, read back and deleted."""
    name = f"session store {redact_url(url)}"
    fix = (
        "set SESSION_STORE_URL (the SESSION_STORE_URL valve) to a store this process can "
        "write, e.g. sqlite:///var/lib/pipelines/sessions.db; Redis and PostgreSQL need "
        "`pip install helix-pipeline[redis]` / `helix-pipeline[postgres]`"
    )
    key = ConversationKey(DOCTOR_USER, f"probe-{uuid4().hex}")
    try:
        store = open_store(url)
    except HelixPipelineError as exc:
        return Check(name, False, f"cannot open it: {exc}", fix)
    try:
        store.record(key, [Message("user", "helix-pipeline doctor probe")])
        wrote = [m.content for m in store.load(key)] == ["helix-pipeline doctor probe"]
        deleted = store.delete(key)
    except StoreError as exc:
        return Check(name, False, f"cannot write to it: {exc}", fix)
    finally:
        store.close()
    if not (wrote and deleted):
        return Check(name, False, "a probe conversation did not read back as written", fix)
    return Check(name, True, "opened, wrote and deleted a probe conversation")
