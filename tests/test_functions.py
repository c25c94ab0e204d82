"""The Helix pipe and session filter Functions, called exactly as Open WebUI 0.12.4 calls them.

Each Function file is loaded the way Open WebUI loads it (``exec`` after ``replace_imports``) and
called through :mod:`tests.openwebui_functions`, against a real FakeHelix and a real SQLite store.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.cli import main
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.functions import WORKING
from helix_pipeline.hosts import functions_filter, functions_pipe
from helix_pipeline.notices import CLOSE, OPEN, is_notice, visible
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix, Fault
from helix_pipeline.testing.openwebui import OpenWebUIChat

from .conftest import load_fixture
from .openwebui_functions import Events, call_filter, call_pipe, load_function

USER_A = {"id": "user-a", "name": "Ana", "email": "ana@example.com", "role": "user"}
USER_B = {"id": "user-b", "name": "Ben", "email": "ben@example.com", "role": "user"}
HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture
def stored(store_url: str) -> Iterator[SessionStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def valves(helix: FakeHelix, store_url: str) -> dict[str, Any]:
    """The Function's valves as an admin saved them (Open WebUI rebuilds them on every call)."""
    return {"HELIX_BASE_URL": helix.url, "SESSION_STORE_URL": store_url, "MAX_RETRIES": 0}


@pytest.fixture
def pipe() -> Any:
    return load_function(Path(functions_pipe.__file__).read_text(encoding="utf-8"), "helix")


@pytest.fixture
def session_filter() -> Any:
    source = Path(functions_filter.__file__).read_text(encoding="utf-8")
    return load_function(source, "helix_session_filter")


class Chat:
    """One saved chat played against the pipe Function as Open WebUI 0.12.4 plays it."""

    def __init__(self, pipe: Any, valves: dict[str, Any], user: dict[str, str], **kw: Any) -> None:
        self.pipe, self.valves, self.user = pipe, valves, user
        self.chat = OpenWebUIChat(user=user, **kw)
        self.events = Events()

    def send(self, text: str, **kw: Any) -> str:
        turn = self.last_turn = self.chat.start_turn(text)
        result = asyncio.run(
            call_pipe(
                self.pipe,
                self.chat.inlet_body(turn),
                self.user,
                events=self.events,
                valves=self.valves,
                **kw,
            )
        )
        reply = result if isinstance(result, str) else "".join(result)
        self.chat.finish_turn(turn, reply)
        return reply

    def title_task(self) -> Any:
        body = self.chat.task_inlet_body(self.last_turn)
        return asyncio.run(call_pipe(self.pipe, body, self.user, valves=self.valves))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestPipeFunction:
    def test_every_turn_reaches_helix_with_the_chat_id_in_both_headers_and_the_whole_history(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix, stored: SessionStore
    ) -> None:
        chat = Chat(pipe, valves, USER_A)
        replies = [chat.send(f"question {n}") for n in range(3)]

        requests = helix.chat_requests
        assert len(requests) == 3
        for request in requests:
            assert [request.header(h) for h in HEADERS] == [chat.chat.chat_id] * 2
        sent = [(m["role"], m["content"]) for m in requests[-1].body["messages"]]
        assert sent == [
            ("user", "question 0"),
            ("assistant", replies[0]),
            ("user", "question 1"),
            ("assistant", replies[1]),
            ("user", "question 2"),
        ]
        kept = stored.load(ConversationKey(USER_A["id"], chat.chat.chat_id))
        assert [m.content for m in kept] == [
            m["content"] for m in chat.chat.messages
        ]  # whole, no duplicates
        assert [m.message_id for m in kept] == [m["id"] for m in chat.chat.messages]

    def test_a_real_0_12_4_body_is_answered_with_the_chat_id_from_metadata(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix
    ) -> None:
        record = load_fixture("openwebui-0.12.4/examples/10_pipe_with_inlet_E-t2_inlet.json")
        body = copy.deepcopy(record["body"])
        body["model"] = "helix.helix-consultant"
        chunks = asyncio.run(call_pipe(pipe, body, record["user"], valves=valves))

        assert "Helix reply #" in "".join(chunks)
        assert helix.chat_requests[-1].header(HEADERS[0]) == body["metadata"]["chat_id"]
        assert helix.chat_requests[-1].body["model"] == "helix-consultant"
        assert len(helix.chat_requests[-1].body["messages"]) == 3

    def test_status_lines_say_what_was_attached_and_that_helix_is_working(
        self, pipe: Any, valves: dict[str, Any]
    ) -> None:
        chat = Chat(pipe, valves, USER_A)
        chat.send("first")
        chat.events.sent.clear()
        reply = chat.send("second")

        assert chat.events.statuses[:2] == [
            {"description": "Helix: 2 earlier messages attached", "done": False},
            {"description": WORKING, "done": False},
        ]
        assert chat.events.statuses[-1]["done"] is True
        assert "Helix" in reply and "attached" not in reply  # no status text in the answer

    def test_an_api_caller_that_sends_only_its_newest_message_gets_the_stored_history(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix
    ) -> None:
        chat = OpenWebUIChat(chat_id="api-chat", user=USER_A, api_client=True, stream=False)

        def ask(text: str) -> None:
            turn = chat.start_turn(text)
            body = chat.inlet_body(turn)
            reply = asyncio.run(call_pipe(pipe, body, USER_A, valves=valves))
            assert "Helix reply" in reply
            chat.finish_turn(turn, reply)

        ask("remember 42")
        ask("what did I say?")

        sent = [m["content"] for m in helix.chat_requests[-1].body["messages"]]
        assert sent[0] == "remember 42" and sent[-1] == "what did I say?" and len(sent) == 3

    def test_forwarded_background_tasks_go_without_the_header_and_are_not_recorded(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix, stored: SessionStore
    ) -> None:
        chat = Chat(pipe, {**valves, "TASKS": "forward"}, USER_A)
        chat.send("hello")
        title = chat.title_task()

        assert isinstance(title, str) and "Helix reply" in title
        task_request = helix.chat_requests[-1]
        assert all(task_request.header(h) is None for h in HEADERS)
        kept = stored.load(ConversationKey(USER_A["id"], chat.chat.chat_id))
        assert [m.content for m in kept] == [m["content"] for m in chat.chat.messages]

    def test_two_users_with_the_same_chat_id_never_see_each_others_history(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix
    ) -> None:
        ana = Chat(pipe, valves, USER_A, chat_id="shared-id")
        ben = Chat(pipe, valves, USER_B, chat_id="shared-id")
        ana.send("my secret is 1234")
        ben.chat.messages = []
        body = ben.chat.inlet_body(ben.chat.start_turn("what is the secret?"))
        body["messages"] = body["messages"][-1:]
        asyncio.run(call_pipe(pipe, body, USER_B, valves=valves))

        sent = [m["content"] for m in helix.chat_requests[-1].body["messages"]]
        assert sent == ["what is the secret?"]

    def test_a_person_who_switched_memory_off_is_not_recorded(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix, stored: SessionStore
    ) -> None:
        chat = Chat(pipe, valves, USER_A)
        chat.send("hello", user_valves={"HISTORY_ENABLED": False})

        assert stored.load(ConversationKey(USER_A["id"], chat.chat.chat_id)) == []
        assert helix.chat_requests[-1].header(HEADERS[0]) == chat.chat.chat_id

    def test_a_failure_is_a_status_line_not_text_in_the_answer(
        self, pipe: Any, valves: dict[str, Any]
    ) -> None:
        chat = Chat(
            pipe, {**valves, "HELIX_BASE_URL": f"http://127.0.0.1:{_closed_port()}"}, USER_A
        )
        reply = chat.send("hello")

        assert reply == ""
        last = chat.events.statuses[-1]
        assert last["done"] is True
        assert "refused the connection" in last["description"]
        assert last["description"].endswith("(Details are in Open WebUI's log.)")
        assert OPEN not in last["description"] and CLOSE not in last["description"]

    def test_without_an_emitter_the_failure_is_one_short_message_naming_open_webuis_log(
        self, pipe: Any, valves: dict[str, Any]
    ) -> None:
        body = {
            "model": "helix.helix-consultant",
            "stream": True,
            "messages": [{"role": "user", "content": "hello"}],
        }
        down = {**valves, "HELIX_BASE_URL": f"http://127.0.0.1:{_closed_port()}"}
        chunks = asyncio.run(call_pipe(pipe, body, USER_A, valves=down))

        assert len(chunks) == 1
        assert is_notice(chunks[0])
        shown = visible(chunks[0])
        assert shown.startswith("⚠️ Helix at") and "refused the connection" in shown
        assert shown.endswith("(Details are in Open WebUI's log.)")

    def test_a_cut_off_answer_keeps_what_arrived_and_says_so_in_the_status(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix, stored: SessionStore
    ) -> None:
        helix.fault = Fault.DROP_MID_STREAM
        chat = Chat(pipe, valves, USER_A)
        reply = chat.send("hello")

        assert reply and "⚠️" not in reply
        assert chat.events.statuses[-1]["description"].startswith("⚠️ The answer was cut off:")
        kept = stored.load(ConversationKey(USER_A["id"], chat.chat.chat_id))
        assert kept[-1].partial and kept[-1].content == reply.strip()

    def test_a_person_who_leaves_mid_answer_keeps_what_arrived_as_a_partial_turn(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix, stored: SessionStore
    ) -> None:
        """Open WebUI stops iterating (the chat was closed or stopped): the worker thread stops at
        the next chunk and records what arrived, marked partial."""
        hold = threading.Event()
        helix.hold, helix.hold_words = hold, 1  # the answer's first word, then FakeHelix waits
        chat = OpenWebUIChat(user=USER_A)
        body = chat.inlet_body(chat.start_turn("long question"))

        pipe.valves = pipe.Valves(**valves)

        key = ConversationKey(USER_A["id"], chat.chat_id)

        async def leave_after_the_first_chunk() -> tuple[str, list[Any]]:
            """Open WebUI's event loop runs on (as it does for everyone else) while we wait."""
            body_without_metadata = dict(body)
            metadata = body_without_metadata.pop("metadata")
            answer = await pipe.pipe(
                body_without_metadata,
                __user__={"id": USER_A["id"]},
                __metadata__=metadata,
                __event_emitter__=Events(),
            )
            first = await anext(answer)
            await answer.aclose()
            hold.set()
            for _ in range(200):
                kept = stored.load(key)
                if len(kept) == 2:
                    break
                await asyncio.sleep(0.05)
            return str(first), kept

        first, kept = asyncio.run(leave_after_the_first_chunk())
        assert [m.role for m in kept] == ["user", "assistant"]
        assert kept[1].partial and kept[1].content.startswith(first.strip())

    def test_models_come_from_the_valves_at_once_when_helix_cannot_be_asked(self) -> None:
        source = Path(functions_pipe.__file__).read_text(encoding="utf-8")
        function = load_function(source, "helix")
        function.valves = function.Valves(
            HELIX_BASE_URL=f"http://127.0.0.1:{_closed_port()}", HELIX_MODELS="a,b"
        )

        assert function.pipes() == [{"id": "a", "name": "a"}, {"id": "b", "name": "b"}]

    def test_the_event_loop_keeps_serving_while_helix_works(
        self, pipe: Any, valves: dict[str, Any], helix: FakeHelix
    ) -> None:
        """A blocking pipe would hold the loop until Helix finishes; here other work completes
        while Helix still holds the stream (FakeHelix's ``hold``), and the loop releases it."""
        hold = threading.Event()
        helix.hold = hold
        chat = OpenWebUIChat(user=USER_A)
        body = chat.inlet_body(chat.start_turn("slow question"))
        order: list[str] = []

        async def turn() -> None:
            chunks = await call_pipe(pipe, body, USER_A, valves=valves)
            assert "Helix reply" in "".join(chunks)
            order.append("turn done")

        async def other_user() -> None:
            while not helix.chat_requests:  # Helix has the turn and holds its stream
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            order.append("other served")
            hold.set()

        async def both() -> None:
            await asyncio.gather(turn(), other_user())

        asyncio.run(both())
        assert order == ["other served", "turn done"]


def _newest_only(body: dict[str, Any]) -> dict[str, Any]:
    """An API caller that sends its newest message only (so no ``user_message`` either)."""
    body["messages"] = body["messages"][-1:]
    for key in ("user_message", "user_message_id"):
        body["metadata"].pop(key)
    return body


def ask_through_filter(
    session_filter: Any, valves: dict[str, Any], chat: OpenWebUIChat, text: str, **kw: Any
) -> tuple[dict[str, Any], Events]:
    """A client that sends only its newest message; the filter's inlet, then its outlet."""
    turn = chat.start_turn(text)
    body = _newest_only(chat.inlet_body(turn))
    events = Events()
    sent = asyncio.run(
        call_filter(session_filter, "inlet", body, chat.user, events=events, valves=valves, **kw)
    )
    chat.finish_turn(turn, f"reply to {text}")
    outlet = chat.outlet_body(turn)
    result = asyncio.run(
        call_filter(session_filter, "outlet", copy.deepcopy(outlet), chat.user, valves=valves, **kw)
    )
    assert result == outlet
    return sent, events


class TestFilterFunction:
    def test_the_inlet_attaches_the_stored_history_and_adds_no_keys(
        self, session_filter: Any, valves: dict[str, Any]
    ) -> None:
        chat = OpenWebUIChat(user=USER_A, model="helix-consultant")
        ask_through_filter(session_filter, valves, chat, "remember 42")
        body = _newest_only(chat.inlet_body(chat.start_turn("what did I say?")))
        keys = set(body)
        events = Events()
        sent = asyncio.run(
            call_filter(session_filter, "inlet", body, USER_A, events=events, valves=valves)
        )

        assert [m["content"] for m in sent["messages"]] == [
            "remember 42",
            "reply to remember 42",
            "what did I say?",
        ]
        assert set(sent) == keys
        assert events.descriptions == ["Helix: 2 earlier messages attached"]

    def test_the_outlet_records_the_turn_with_open_webuis_ids(
        self, session_filter: Any, valves: dict[str, Any], stored: SessionStore
    ) -> None:
        chat = OpenWebUIChat(user=USER_A, model="helix-consultant")
        ask_through_filter(session_filter, valves, chat, "hello")

        kept = stored.load(ConversationKey(USER_A["id"], chat.chat_id))
        assert [(m.message_id, m.content) for m in kept] == [
            (m["id"], m["content"]) for m in chat.messages
        ]

    def test_a_person_who_switched_memory_off_is_neither_attached_nor_recorded(
        self, session_filter: Any, valves: dict[str, Any], stored: SessionStore
    ) -> None:
        chat = OpenWebUIChat(user=USER_A, model="helix-consultant")
        off = {"user_valves": {"HISTORY_ENABLED": False}}
        ask_through_filter(session_filter, valves, chat, "hello", **off)
        sent, events = ask_through_filter(session_filter, valves, chat, "again", **off)

        assert stored.load(ConversationKey(USER_A["id"], chat.chat_id)) == []
        assert [m["content"] for m in sent["messages"]] == ["again"]
        assert events.sent == []


class TestInstallCommand:
    def test_without_an_admin_key_it_fails_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("OPENWEBUI_API_KEY", raising=False)

        assert main(["install", "--openwebui", "http://127.0.0.1:1"]) == 1
        assert "set the environment variable OPENWEBUI_API_KEY" in capsys.readouterr().err

    def test_an_unreachable_open_webui_fails_saying_so(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("OPENWEBUI_API_KEY", "sk-secret-key")
        url = f"http://127.0.0.1:{_closed_port()}"

        assert main(["install", "--openwebui", url]) == 1
        err = capsys.readouterr().err
        assert f"cannot reach Open WebUI at {url}" in err and "sk-secret-key" not in err
        assert "it refused the connection; check the URL" in err  # wire_errors said what happened


class TestFilterFunctionWithRecordedBodies:
    """The bodies a real 0.12.4 sent its filters for chat A (tests/fixtures/, examples 02 to 04)."""

    def test_the_recorded_turn_is_kept_by_its_outlet_and_the_inlet_changes_nothing(
        self, session_filter: Any, valves: dict[str, Any], stored: SessionStore
    ) -> None:
        inlet = load_fixture(
            "openwebui-0.12.4/examples/02_filter_inlet_A-t2_chat_backend_model.json"
        )
        outlet = load_fixture("openwebui-0.12.4/examples/03_filter_outlet_A-t2.json")
        user = inlet["user"]
        body = copy.deepcopy(inlet["body"])
        sent = asyncio.run(call_filter(session_filter, "inlet", body, user, valves=valves))
        kept = asyncio.run(
            call_filter(
                session_filter, "outlet", copy.deepcopy(outlet["body"]), user, valves=valves
            )
        )

        assert sent == inlet["body"], "Open WebUI sent the whole chat: nothing to attach or add"
        assert kept == outlet["body"]
        stored_chat = stored.load(ConversationKey(user["id"], outlet["body"]["chat_id"]))
        assert [(m.message_id, m.content) for m in stored_chat] == [
            (m["id"], m["content"]) for m in outlet["body"]["messages"]
        ]

    def test_a_recorded_title_task_is_neither_completed_nor_recorded(
        self, session_filter: Any, valves: dict[str, Any], stored: SessionStore
    ) -> None:
        task = load_fixture(
            "openwebui-0.12.4/examples/04_filter_inlet_A-t1_title_generation_task.json"
        )
        events = Events()
        body = copy.deepcopy(task["body"])
        sent = asyncio.run(
            call_filter(session_filter, "inlet", body, task["user"], events=events, valves=valves)
        )

        assert sent == task["body"] and events.sent == []
        chat_id = task["body"]["metadata"]["chat_id"]
        assert stored.load(ConversationKey(task["user"]["id"], chat_id)) == []


@pytest.mark.usefixtures("isolated_imports")
class TestBundledFunctions:
    """The committed one-file Functions, loaded as Open WebUI loads them, behave as the sources."""

    def test_the_bundled_pipe_keeps_the_history(
        self, valves: dict[str, Any], helix: FakeHelix
    ) -> None:
        source = (REPO / "pipelines" / "functions" / "helix.py").read_text(encoding="utf-8")
        chat = Chat(load_function(source, "helix"), valves, USER_A)
        chat.send("first")
        chat.send("second")

        assert [m["content"] for m in helix.chat_requests[-1].body["messages"]][::2] == [
            "first",
            "second",
        ]
        assert "Helix: 2 earlier messages attached" in chat.events.descriptions

    def test_the_bundled_filter_attaches_the_history(self, valves: dict[str, Any]) -> None:
        path = REPO / "pipelines" / "functions" / "helix_session_filter.py"
        session_filter = load_function(path.read_text(encoding="utf-8"), "helix_session_filter")
        chat = OpenWebUIChat(user=USER_A, model="helix-consultant")
        ask_through_filter(session_filter, valves, chat, "remember 42")
        sent, _ = ask_through_filter(session_filter, valves, chat, "what did I say?")

        assert sent["messages"][0]["content"] == "remember 42"
