"""A notice's mark survives the real Open WebUI 0.12.4 in front of the real Pipelines server.

Open WebUI stores what the pipe streamed as the assistant message and rebuilds the next request
from its store; the mark must come back byte for byte, or the pipe could no longer tell the notice
from the answer. The chats go the browser's way (:class:`tests.openwebui_server.BrowserChat`)
through Open WebUI's OpenAI connection to the Pipelines server running ``pipelines/helix.py``, in
front of FakeHelix. The module skips, saying why, only when Open WebUI's venv cannot be built.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.notices import CLOSE, OPEN, is_notice, visible
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix, Fault

from .openwebui_server import (
    Account,
    BrowserChat,
    OpenWebUIServer,
    OpenWebUIUnavailable,
    openwebui_python,
)
from .pipelines_server import API_KEY, PIPELINES, PipelinesServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "helix.helix-consultant"
MARK_CHARACTERS = set(OPEN + CLOSE)


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notices")


@pytest.fixture(scope="module")
def pipelines(helix: FakeHelix, root: Path) -> Iterator[PipelinesServer]:
    env = {
        "HELIX_BASE_URL": helix.url,
        "HELIX_DATA_DIR": str(root / "helix-data"),
        "MAX_RETRIES": "0",
    }
    with PipelinesServer(root / "pipelines-server", [PIPELINES / "helix.py"], env=env) as server:
        yield server


@pytest.fixture(scope="module")
def server(pipelines: PipelinesServer, root: Path) -> Iterator[OpenWebUIServer]:
    try:
        openwebui_python()
    except OpenWebUIUnavailable as exc:
        pytest.skip(str(exc))
    env = {
        "ENABLE_OPENAI_API": "true",
        "OPENAI_API_BASE_URLS": pipelines.url,
        "OPENAI_API_KEYS": API_KEY,
    }
    with OpenWebUIServer(root / "openwebui", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: OpenWebUIServer) -> Account:
    return server.signup("Admin")


@pytest.fixture
def stored(root: Path) -> Iterator[SessionStore]:
    opened = open_store(f"sqlite:///{root / 'helix-data' / 'sessions.db'}")
    yield opened
    opened.close()


def _turns(helix: FakeHelix) -> list[Any]:
    return [
        r for r in helix.chat_requests if not r.body["messages"][0]["content"].startswith("###")
    ]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.SERVER_ERROR, id="failed"),
        pytest.param(Fault.DROP_MID_STREAM, id="cut-off"),
    ],
)
def test_open_webui_keeps_the_mark_and_the_next_turn_leaves_the_notice_out(
    server: OpenWebUIServer,
    admin: Account,
    helix: FakeHelix,
    stored: SessionStore,
    fault: Fault,
) -> None:
    assert MODEL in [m["id"] for m in server.models(admin)]
    chat = BrowserChat(server, admin, MODEL)
    helix.fail_next(fault)

    shown = chat.send(f"first question {uuid.uuid4().hex[:6]}")["content"]
    reply = chat.send("second question")

    cut_off = fault is Fault.DROP_MID_STREAM
    notice = "\n\n" + shown.rpartition("\n\n")[2] if cut_off else shown
    assert is_notice(notice), f"Open WebUI did not keep the mark: {shown!r}"
    assert visible(notice).lstrip().startswith("⚠️")
    sent = [m["content"] for m in _turns(helix)[-1].body["messages"]]
    assert not any(MARK_CHARACTERS & set(text) or "⚠️" in text for text in sent), sent
    assert [m["role"] for m in _turns(helix)[-1].body["messages"]] == (
        ["user", "assistant", "user"] if cut_off else ["user", "user"]
    )
    assert sent[-1] == "second question"
    branches = stored.branches(ConversationKey(admin.id, str(chat.chat_id)))
    assert len(branches) == 1, "the history forked"
    kept = [m.content for m in branches[0]]
    assert not any(MARK_CHARACTERS & set(text) for text in kept)
    assert kept[-1] == reply["content"].strip()
