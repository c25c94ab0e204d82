"""FakeHelix: a real HTTP server that behaves like Helix, for tests, demos and local trials.

    with FakeHelix() as helix:
        client = HelixClient(helix.url)
        ...
        assert helix.sessions["conv-chat-1"].messages[-1]["content"] == "hi"

It serves ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models`` and ``GET
/health`` on 127.0.0.1 and an ephemeral port, validates like Helix (422 with a FastAPI detail list,
Helix's own 400s, ``Fehler:`` answers), keeps one session per conversation header (overwritten by
each request, as Helix does), records every request, and can be told to fail the way real Helix
fails, by name, and the way the network or a proxy in front of it fails (:class:`Fault`). Run it alone with ``python -m helix_pipeline.testing --port 8001``.

The package, one idea a module: :mod:`.server` (FakeHelix, the object a test holds),
:mod:`.handler` (the HTTP side), :mod:`.helix_rules` (Helix's validation, limits and session
ids), :mod:`.events` (completions and stream events), :mod:`.faults`, :mod:`.records` and
:mod:`.cli` (``main``); :mod:`.relay` is the recording relay ``helix-pipeline demo`` puts
in front of Helix to show what it received. The other side, Open WebUI, is the one driver
tests and benchmarks play: :mod:`.openwebui` (the 0.12.4 bodies of a chat) and
:mod:`.openwebui_transport` (its turns, in process or over HTTP to a Pipelines server).
"""

from __future__ import annotations

from .cli import main
from .events import (
    CRASH_ANSWER,
    FIRST_CHUNK,
    SEPARATOR,
    UNAVAILABLE_JSON,
    UNAVAILABLE_STREAM,
    VALIDATION_HINT,
)
from .faults import HELIX_FORMS, Fault
from .helix_rules import MODEL_ID, adr029_stable_session_id, helix_rejection, validation_errors
from .records import HelixSession, RecordedRequest
from .server import FakeHelix

__all__ = [
    "CRASH_ANSWER",
    "FIRST_CHUNK",
    "HELIX_FORMS",
    "MODEL_ID",
    "SEPARATOR",
    "UNAVAILABLE_JSON",
    "UNAVAILABLE_STREAM",
    "VALIDATION_HINT",
    "FakeHelix",
    "Fault",
    "HelixSession",
    "RecordedRequest",
    "adr029_stable_session_id",
    "helix_rejection",
    "main",
    "validation_errors",
]
