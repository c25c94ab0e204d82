"""The Functions inside the real Open WebUI 0.12.4, created through its admin API as an admin would.

One Open WebUI process for the module (it boots in ~20 s); chats go the browser's way
(:class:`tests.openwebui_server.BrowserChat`) to the Helix pipe Function, in front of FakeHelix.
The module skips, saying why, only when Open WebUI's venv cannot be built on this machine.
"""

from __future__ import annotations

import io
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.cli import main
from helix_pipeline.conversation import PRIVATE_KEY, ConversationKey
from helix_pipeline.decorations import strip_decorations
from helix_pipeline.errors import ConfigError
from helix_pipeline.install_openwebui import install_functions
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix, Fault

from .openwebui_server import (
    Account,
    BrowserChat,
    OpenWebUIServer,
    OpenWebUIUnavailable,
    SocketListener,
    openwebui_python,
)

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PIPE_MODEL = "helix.helix-consultant"
CONNECTION_MODEL = "helix-consultant"
HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
SLOW_TURNS = 20


SOURCES = {
    name: (REPO / "pipelines" / name).read_text(encoding="utf-8")
    for name in ("functions/helix.py", "functions/helix_session_filter.py")
}
"""The committed Function bundles, as an admin pastes them: Open WebUI's venv has no helix_pipeline."""


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(helix: FakeHelix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWebUIServer]:
    try:
        openwebui_python()
    except OpenWebUIUnavailable as exc:
        pytest.skip(str(exc))
    env = {
        "PYTHONPATH": "",  # the Functions are the bundles: nothing of ours is importable there
        # Helix also as an OpenAI connection of Open WebUI's own, for the filter Function.
        "ENABLE_OPENAI_API": "true",
        "OPENAI_API_BASE_URLS": f"{helix.url}/v1",
        "OPENAI_API_KEYS": "unused",
        "ENABLE_FORWARD_USER_INFO_HEADERS": "true",
        "BYPASS_MODEL_ACCESS_CONTROL": "true",
        "ENABLE_API_KEYS": "true",
    }
    with OpenWebUIServer(tmp_path_factory.mktemp("openwebui"), env=env) as running:
        yield running


KEY_ENV = "HELIX_TEST_OPENWEBUI_KEY"


def _install(server: OpenWebUIServer, account: Account) -> str:
    """``helix-pipeline install --openwebui URL``, as an admin runs it; what it printed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, account.token)
        install_functions(server.url, KEY_ENV, out, sources=SOURCES)
    return out.getvalue()


@pytest.fixture(scope="module")
def admin(server: OpenWebUIServer, helix: FakeHelix) -> Account:
    """The admin, who installs the Functions with ``helix-pipeline install --openwebui``."""
    account = server.signup("Admin")
    assert account.role == "admin"
    printed = _install(server, account)
    assert "Created and switched on the Function helix (Helix)" in printed
    server.set_valves(account, "helix", {"HELIX_BASE_URL": helix.url, "MAX_RETRIES": 0})
    return account


@pytest.fixture(scope="module")
def ben(server: OpenWebUIServer, admin: Account) -> Account:
    return server.add_user(admin, "Ben")


@pytest.fixture
def stored(server: OpenWebUIServer, admin: Account) -> Iterator[SessionStore]:
    """The pipe's default store: ``helix_data/sessions.db`` in Open WebUI's DATA_DIR."""
    opened = open_store(f"sqlite:///{server.data_dir / 'helix_data' / 'sessions.db'}")
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def fresh_helix(helix: FakeHelix) -> None:
    helix.reset()
    helix.fault = Fault.NONE
    helix.hold = None


def _chat_requests(helix: FakeHelix) -> list[Any]:
    return [r for r in helix.chat_requests if not _is_task(r)]


def _is_task(request: Any) -> bool:
    first = request.body["messages"][0]["content"]
    return isinstance(first, str) and first.startswith("### Task:")


def _texts(request: Any) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.body["messages"]]


class TestPipeFunctionInOpenWebUI:
    def test_the_helix_models_are_listed(self, server: OpenWebUIServer, admin: Account) -> None:
        assert PIPE_MODEL in [m["id"] for m in server.models(admin)]

    def test_every_turn_reaches_helix_with_the_chat_id_and_the_whole_history(
        self, server: OpenWebUIServer, admin: Account, helix: FakeHelix, stored: SessionStore
    ) -> None:
        chat = BrowserChat(server, admin, PIPE_MODEL)
        answers = [chat.send(f"question {n}")["content"] for n in range(3)]

        turns = _chat_requests(helix)
        assert len(turns) == 3
        for request in turns:
            assert [request.header(h) for h in HEADERS] == [chat.chat_id] * 2
        assert _texts(turns[-1]) == [
            ("user", "question 0"),
            ("assistant", answers[0]),
            ("user", "question 1"),
            ("assistant", answers[1]),
            ("user", "question 2"),
        ]
        kept = stored.load(ConversationKey(admin.id, str(chat.chat_id)))
        assert [(m.role, m.content) for m in kept] == [
            *_texts(turns[-1]),
            ("assistant", answers[2]),
        ]

    def test_forwarded_background_tasks_carry_no_header_and_are_not_recorded(
        self, server: OpenWebUIServer, admin: Account, helix: FakeHelix, stored: SessionStore
    ) -> None:
        valves = {"HELIX_BASE_URL": helix.url, "MAX_RETRIES": 0}
        server.set_valves(admin, "helix", {**valves, "TASKS": "forward"})  # the default skips
        try:
            chat = BrowserChat(server, admin, PIPE_MODEL)
            chat.send("name this chat", background_tasks={"title_generation": True})
            deadline = time.monotonic() + 60
            while not any(_is_task(r) for r in helix.chat_requests):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            server.set_valves(admin, "helix", valves)

        tasks = [r for r in helix.chat_requests if _is_task(r)]
        assert tasks, "Open WebUI sent no title task"
        assert all(r.header(h) is None for r in tasks for h in HEADERS)
        kept = stored.load(ConversationKey(admin.id, str(chat.chat_id)))
        assert [m.role for m in kept] == ["user", "assistant"]
        assert not any(m.content.startswith("### Task:") for m in kept)

    def test_two_users_never_see_each_others_history(
        self, server: OpenWebUIServer, admin: Account, ben: Account, helix: FakeHelix
    ) -> None:
        BrowserChat(server, admin, PIPE_MODEL).send("my secret is 1234")
        BrowserChat(server, ben, PIPE_MODEL).send("what is the secret?")

        assert _texts(_chat_requests(helix)[-1]) == [("user", "what is the secret?")]

    def test_status_lines_arrive_instead_of_text_in_the_answer(
        self, server: OpenWebUIServer, admin: Account
    ) -> None:
        chat = BrowserChat(server, admin, PIPE_MODEL)
        chat.send("first")
        message = chat.send("second")

        descriptions = [s["description"] for s in message["statusHistory"]]
        assert descriptions[:2] == ["Helix: 2 earlier messages attached", "Helix is working..."]
        assert message["statusHistory"][-1]["done"] is True
        assert "Helix is working" not in message["content"]

    def test_the_browsers_socket_gets_the_status_lines_then_the_answer(
        self, server: OpenWebUIServer, admin: Account
    ) -> None:
        with SocketListener(server, admin) as socket:
            chat = BrowserChat(server, admin, PIPE_MODEL, session_id=socket.sid)
            message = chat.send("over the socket")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                e["type"] == "chat:completion" and e["data"].get("done")
                for e in socket.for_message(chat.last_message_id or "")
            ):
                time.sleep(0.05)
            events = socket.for_message(chat.last_message_id or "")

        statuses = [e["data"]["description"] for e in events if e["type"] == "status"]
        deltas = [
            e["data"]["delta"]
            for e in events
            if e["type"] == "response:completion"
            and e["data"].get("type") == "response.output_text.delta"
        ]
        kinds = [e["type"] for e in events]
        assert "Helix is working..." in statuses
        assert kinds.index("status") < kinds.index("response:completion"), "status, then answer"
        assert "".join(deltas) == message["content"]

    def test_a_failure_is_one_status_line_and_the_next_turn_still_works(
        self, server: OpenWebUIServer, admin: Account, helix: FakeHelix
    ) -> None:
        chat = BrowserChat(server, admin, PIPE_MODEL)
        helix.fail_next(Fault.SERVER_ERROR)
        failed = chat.send("hello")
        answered = chat.send("again")

        last = failed["statusHistory"][-1]
        assert last["done"] is True and last["description"].startswith("⚠️ Helix failed (HTTP 500)")
        assert last["description"].endswith("(Details are in Open WebUI's log.)")
        assert failed["content"] == "" and "error" not in failed
        assert "Helix reply" in answered["content"]
        assert [m for m, _ in _texts(_chat_requests(helix)[-1])].count("user") == 2

    def test_a_person_who_switched_memory_off_is_not_recorded(
        self, server: OpenWebUIServer, ben: Account, stored: SessionStore
    ) -> None:
        server.set_user_valves(ben, "helix", {"HISTORY_ENABLED": False})
        try:
            chat = BrowserChat(server, ben, PIPE_MODEL)
            chat.send("forget me")
        finally:
            server.set_user_valves(ben, "helix", {"HISTORY_ENABLED": True})

        assert stored.load(ConversationKey(ben.id, str(chat.chat_id))) == []

    def test_models_are_served_at_once_while_twenty_slow_turns_stream(
        self, server: OpenWebUIServer, admin: Account, helix: FakeHelix
    ) -> None:
        """With every turn held by Helix after its first chunk, Open WebUI still answers
        ``/api/models`` promptly: a pipe that blocked its event loop would hold it for the whole
        turn (FakeHelix holds up to 10 s)."""
        hold = threading.Event()
        helix.hold = hold
        chats = [BrowserChat(server, admin, PIPE_MODEL) for _ in range(SLOW_TURNS)]
        ids = [chat.start(f"slow question {n}") for n, chat in enumerate(chats)]
        try:
            deadline = time.monotonic() + 60
            while len(_chat_requests(helix)) < SLOW_TURNS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(_chat_requests(helix)) == SLOW_TURNS, "the turns did not all reach Helix"
            took = []
            for _ in range(10):
                started = time.monotonic()
                response = server.call("GET", "/api/models", admin)
                took.append(time.monotonic() - started)
                assert response.status_code == 200
            log.info(
                "/api/models during %d held Helix turns: median %.0f ms, max %.0f ms",
                SLOW_TURNS,
                statistics.median(took) * 1000,
                max(took) * 1000,
            )
            assert not hold.is_set() and helix.streams_completed == 0
            assert max(took) < 5.0  # generous: a blocked loop would hold it for ~10 s
        finally:
            hold.set()
        for chat, message_id in zip(chats, ids, strict=True):
            assert "Helix reply" in chat.wait_for(message_id)["content"]


class TestInstall:
    def test_installing_again_from_the_command_line_updates_them_and_keeps_their_valves(
        self,
        server: OpenWebUIServer,
        admin: Account,
        helix: FakeHelix,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        api_key = server.ok("POST", "/api/v1/auths/api_key", admin)["api_key"]
        monkeypatch.setenv("OPENWEBUI_API_KEY", api_key)  # an admin's API key, as the README says
        assert main(["install", "--openwebui", server.url]) == 0
        printed = capsys.readouterr().out

        assert "Updated and switched on the Function helix (Helix)" in printed
        assert "Updated and switched on the Function helix_session_filter" in printed
        assert f"Open WebUI lists {PIPE_MODEL}" in printed
        valves = server.ok("GET", "/api/v1/functions/id/helix/valves", admin)
        assert valves["HELIX_BASE_URL"] == helix.url
        functions = server.ok("GET", "/api/v1/functions/", admin)
        assert {f["id"]: f["is_active"] for f in functions} == {
            "helix": True,
            "helix_session_filter": True,
        }

    def test_a_key_that_is_not_an_admins_fails_saying_so(
        self, server: OpenWebUIServer, ben: Account
    ) -> None:
        with pytest.raises(ConfigError, match=f"refused the key in {KEY_ENV}"):
            _install(server, ben)


class TestFilterFunctionInOpenWebUI:
    @pytest.fixture
    def session_filter(self, server: OpenWebUIServer, admin: Account) -> Iterator[None]:
        """The filter Function (installed switched on) on every model, for these tests only."""
        server.ok("POST", "/api/v1/functions/id/helix_session_filter/toggle/global", admin)
        yield
        server.ok("POST", "/api/v1/functions/id/helix_session_filter/toggle/global", admin)

    def test_turns_through_open_webuis_own_connection_are_recorded_and_carry_no_extra_keys(
        self,
        server: OpenWebUIServer,
        admin: Account,
        helix: FakeHelix,
        stored: SessionStore,
        session_filter: None,
    ) -> None:
        chat = BrowserChat(server, admin, CONNECTION_MODEL)
        first = chat.send("hello through the connection")["content"]
        chat.send("and again")

        turns = _chat_requests(helix)
        assert turns[-1].header("X-OpenWebUI-Chat-Id") == chat.chat_id
        assert all(PRIVATE_KEY not in r.body and "metadata" not in r.body for r in turns)
        deadline = time.monotonic() + 30
        kept: list[Any] = []
        while len(kept) < 4 and time.monotonic() < deadline:  # the outlet runs after the answer
            kept = stored.load(ConversationKey(admin.id, str(chat.chat_id)))
            time.sleep(0.1)
        assert [(m.role, m.content) for m in kept][:3] == [
            ("user", "hello through the connection"),
            ("assistant", strip_decorations(first)[0]),  # Open WebUI showed Helix's as text
            ("user", "and again"),
        ]
        assert all(m.message_id for m in kept)
