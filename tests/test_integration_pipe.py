"""The Helix manifold pipe inside the real Open WebUI Pipelines server, driven as Open WebUI 0.12.4.

One Pipelines server (``pipelines/helix.py`` copied into its folder) and one FakeHelix serve the
whole module; every test uses its own user and chat ids, so tests never see each other's history.
Each turn goes inlet -> ``/chat/completions`` -> outlet over HTTP with the recorded payloads.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.client import FORWARDED_FIELDS
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.notices import OPEN, is_notice, visible
from helix_pipeline.stores import SessionStore
from helix_pipeline.testing import FakeHelix, Fault, RecordedRequest

from .conftest import load_fixture
from .openwebui_replay import (
    Exchange,
    OpenWebUI,
    is_task,
    recorded,
    rewrite,
    stored,
)
from .pipelines_server import (
    PIPELINES,
    TRACEBACK,
    PipelinesServer,
    free_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_run")]

MODEL = "helix.helix-consultant"
CHAT_A = "8854fe74-68d4-4c99-9c9d-c0d0c58e1887"
"""Recorded chat A: a title task, three streamed turns, a regeneration and an edit."""
CHAT_E = "cd1e8527-676d-43a7-af82-97301c0f2d7f"
"""Recorded chat E: three turns to a pipe with its own inlet and outlet."""
CHAT_L2 = "54f4cf88-3b66-420c-a872-83d4353adfbd"
"""Recorded chat L2: a pipe model whose outlet an older client runs twice, the second time
without the user's message ids."""
A = recorded("run1_forward_headers/filter.jsonl", CHAT_A)
E = recorded("run1_forward_headers/pipe_inlet.jsonl", CHAT_E)
L2 = recorded("run1_forward_headers/filter.jsonl", CHAT_L2)
A_THREE_TURNS = A[:11]  # title task, t1, outlet, follow-up, tags, t2, outlet, follow-up, t3, ...
A_REGENERATED = A[:14]  # ... then the third answer regenerated
CONVERSATION_HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
ALLOWED_KEYS = {"model", "messages", "stream", *FORWARDED_FIELDS}


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helix-data")


@pytest.fixture(scope="module")
def server(
    helix: FakeHelix, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelinesServer]:
    env = {"HELIX_BASE_URL": helix.url, "HELIX_DATA_DIR": str(data_dir)}
    root = tmp_path_factory.mktemp("pipelines-server")
    with PipelinesServer(root, [PIPELINES / "helix.py"], env=env) as running:
        yield running


@pytest.fixture
def valves(server: PipelinesServer) -> Iterator[Callable[..., dict[str, Any]]]:
    """Update the pipe's valves as Open WebUI's admin page does; back to defaults afterwards."""

    def update(**values: Any) -> dict[str, Any]:
        return server.update_valves("helix", values)

    yield update
    server.update_valves("helix", {})


def new_user(name: str = "Ana") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "email": f"{name.lower()}@example.com",
        "name": name,
        "role": "user",
    }


def open_webui(
    server: PipelinesServer, user: dict[str, Any], chat_id: str, recorded_chat_id: str = CHAT_A
) -> OpenWebUI:
    recorded_model = "helix-test" if recorded_chat_id == CHAT_A else "capture_pipe_inlet"
    return OpenWebUI(
        server,
        MODEL,
        user=user,
        chat_id=chat_id,
        recorded_chat_id=recorded_chat_id,
        model=MODEL,
        recorded_model=recorded_model,
    )


def turns_to_helix(helix: FakeHelix) -> list[RecordedRequest]:
    """Helix's chat requests that were chat turns, not background tasks."""
    return [
        r for r in helix.chat_requests if not r.body["messages"][-1]["content"].startswith("###")
    ]


def wire(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def stored_ids(sessions: SessionStore, user: dict[str, Any], chat_id: str) -> list[str | None]:
    return [m.message_id for m in sessions.load(ConversationKey(user["id"], chat_id))]


def plain_api_turn(server: PipelinesServer, user: dict[str, Any], chat_id: str, text: str) -> str:
    """A plain API caller through Open WebUI: a chat id, only its newest message, no message ids.

    Inlet, a non-streaming answer, then the server-side outlet Open WebUI runs from 0.9 on.
    """
    inlet = load_fixture("openwebui-0.12.4/examples/21_plain_api_inlet_no_chat.json")
    body = rewrite(inlet["body"], {"helix-test": MODEL, inlet["user"]["id"]: user["id"]})
    body["metadata"]["chat_id"] = chat_id
    body["messages"] = [{"role": "user", "content": text}]
    ui = open_webui(server, user, chat_id)
    answered = server.inlet(MODEL, body, user)
    reply = ui.answer(answered)
    outlet = load_fixture("openwebui-0.12.4/examples/22_plain_api_outlet_no_chat.json")
    out = rewrite(outlet["body"], {"helix-test": MODEL})
    out["chat_id"] = chat_id
    out["messages"][0]["content"] = text
    out["messages"][1]["content"] = reply.content
    out["id"] = out["messages"][1]["id"] = f"msg_{uuid.uuid4().hex[:24]}"
    server.outlet(MODEL, out, user)
    return reply.content


class TestModels:
    def test_the_manifold_lists_helix_models_with_the_bearer_key(
        self, server: PipelinesServer
    ) -> None:
        models = {m["id"]: m for m in server.models()}

        assert models[MODEL]["name"] == "Helix: helix-consultant"
        assert models[MODEL]["pipeline"] == {"type": "manifold", "valves": True}

    def test_models_are_refused_without_the_bearer_key(self, server: PipelinesServer) -> None:
        assert server.request("GET", "/models", auth=False).status_code in (401, 403)

    def test_the_models_valve_is_only_a_fallback_for_when_helix_cannot_be_asked(
        self, server: PipelinesServer, valves: Callable[..., dict[str, Any]]
    ) -> None:
        valves(HELIX_MODELS="fallback-model")
        assert [m["id"] for m in server.models()] == [MODEL]

        valves(HELIX_MODELS="fallback-model", HELIX_BASE_URL=f"http://127.0.0.1:{free_port()}")

        assert [m["id"] for m in server.models()] == ["helix.fallback-model"]


class TestThreeTurnChat:
    @pytest.mark.parametrize(
        "stream", [pytest.param(True, id="stream"), pytest.param(False, id="non-stream")]
    )
    def test_helix_gets_the_whole_history_once_with_the_raw_chat_id(
        self, server: PipelinesServer, helix: FakeHelix, stream: bool
    ) -> None:
        chat_id = str(uuid.uuid4())
        ui = open_webui(server, new_user(), chat_id)

        exchanges = ui.replay(A_THREE_TURNS, stream=stream)

        sent = [e.returned["messages"] for e in exchanges if e.hook == "inlet" and not e.task]
        turns = turns_to_helix(helix)
        assert [r.body["messages"] for r in turns] == [wire(m) for m in sent]
        assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
        for request in turns:
            assert [request.header(h) for h in CONVERSATION_HEADERS] == [chat_id, chat_id]
            assert request.body["stream"] is stream
            assert request.body["model"] == "helix-consultant"
            assert set(request.body) <= ALLOWED_KEYS

    @pytest.mark.parametrize(
        "stream", [pytest.param(True, id="stream"), pytest.param(False, id="non-stream")]
    )
    def test_the_client_gets_each_answer_whole(
        self, server: PipelinesServer, helix: FakeHelix, stream: bool
    ) -> None:
        ui = open_webui(server, new_user(), str(uuid.uuid4()))

        exchanges = ui.replay(A_THREE_TURNS, stream=stream)

        replies = [e.reply for e in exchanges if e.reply is not None and not e.task]
        assert [r.content.split("Helix reply #")[1][:1] for r in replies if r] == ["1", "2", "3"]
        for reply in replies:
            assert reply is not None
            assert reply.done
            assert reply.finish_reason == "stop"
            if stream:
                assert len(reply.chunks) > 5, "the answer was buffered, not streamed"

    def test_the_stored_branch_holds_every_turn_once_with_open_webui_ids(
        self, server: PipelinesServer, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)

        exchanges = ui.replay(A_THREE_TURNS)

        last_outlet = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
        assert stored(sessions, user, chat_id) == [(m["role"], m["content"]) for m in last_outlet]
        assert stored_ids(sessions, user, chat_id) == [m["id"] for m in last_outlet]
        assert len(sessions.branches(ConversationKey(user["id"], chat_id))) == 1

    def test_the_inlet_adds_only_the_private_key_and_the_outlet_changes_nothing(
        self, server: PipelinesServer
    ) -> None:
        ui = open_webui(server, new_user(), str(uuid.uuid4()))

        exchanges = ui.replay(A[:3])

        inlet, outlet = exchanges[1], exchanges[2]
        added = set(inlet.returned) - set(inlet.sent)
        assert added == {"helix_conversation"}
        assert {k: v for k, v in inlet.returned.items() if k not in added} == inlet.sent
        assert outlet.returned == outlet.sent


class TestWhatOpenWebUISends:
    def test_an_image_message_and_a_system_prompt_reach_helix_as_text_and_are_not_stored(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)
        body = ui.prepare(A[1])
        body["messages"] = [
            {"role": "system", "content": "You are Helix."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is on this picture?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            },
        ]

        reply = ui.answer(server.inlet(MODEL, body, user))

        assert reply.done
        assert helix.chat_requests[-1].body["messages"] == [
            {"role": "system", "content": "You are Helix."},
            {"role": "user", "content": "What is on this picture?\n[image]"},
        ]
        assert [role for role, _ in stored(sessions, user, chat_id)] == ["user", "assistant"]

    def test_a_chat_id_that_is_not_ascii_travels_in_a_safe_header_and_keeps_its_history(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), "chät-ü-1"
        ui = open_webui(server, user, chat_id)

        ui.replay(A[1:3] + A[5:7])

        headers = {r.header("X-OpenWebUI-Chat-Id") for r in turns_to_helix(helix)}
        assert headers == {"ch%C3%A4t-%C3%BC-1"}
        assert len(stored(sessions, user, chat_id)) == 4

    def test_the_answer_streams_through_the_server_while_helix_is_still_writing(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        ui = open_webui(server, new_user(), str(uuid.uuid4()))
        answered = server.inlet(MODEL, ui.prepare(A[1]), ui.user)
        helix.hold = threading.Event()
        try:
            response = server.http.post("/chat/completions", ui.pipe_body(answered))
            with response:
                lines = response.iter_lines(decode_unicode=True)
                first = next(line for line in lines if line)
                assert helix.streams_completed == 0
                helix.hold.set()
                rest = [line for line in lines if line]
        finally:
            helix.hold.set()
            helix.hold = None

        assert '"type": "status"' in first and "starting Claude Code" in first  # a status line
        assert rest[-1] == "data: [DONE]"


class TestInstalling:
    def test_uploaded_files_load_answer_and_keep_the_history_across_reloads(
        self, helix: FakeHelix, tmp_path: Path
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        with PipelinesServer(tmp_path, [], env={"HELIX_BASE_URL": helix.url}) as fresh:
            assert fresh.models() == []

            fresh.upload(PIPELINES / "helix.py")
            first = plain_api_turn(fresh, user, chat_id, "My name is Ana.")
            fresh.upload(PIPELINES / "helix_session_filter.py")  # reloads every pipeline
            plain_api_turn(fresh, user, chat_id, "What is my name?")

            assert {m["id"] for m in fresh.models()} == {MODEL, "helix_session_filter"}
            assert not (fresh.pipelines_dir / "failed").exists()
            assert TRACEBACK not in fresh.log()
        assert helix.chat_requests[-1].body["messages"][:2] == [
            {"role": "user", "content": "My name is Ana."},
            {"role": "assistant", "content": first},
        ]
        assert (fresh.pipelines_dir / "helix_data" / "sessions.db").is_file()


class TestHelixLimits:
    def test_a_long_chat_reaches_helix_within_its_limits(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        ui = open_webui(server, new_user(), str(uuid.uuid4()))
        body = ui.prepare(A[1])
        history: list[dict[str, str]] = []
        for turn in range(60):
            history.append({"role": "user", "content": f"question {turn}"})
            history.append({"role": "assistant", "content": f"answer {turn}"})
        history.append({"role": "user", "content": "x" * 150_000})
        body["messages"] = history

        reply = ui.answer(server.inlet(MODEL, body, ui.user))

        assert "Helix reply #1" in reply.content
        sent = helix.chat_requests[-1].body["messages"]
        assert len(sent) <= 100
        assert sent[0] == {"role": "user", "content": "question 0"}
        assert max(len(m["content"]) for m in sent) <= 100_000
        assert sent[-1]["content"].startswith("xxxx")


class TestValves:
    def test_an_invalid_valve_is_refused_and_the_old_valves_stay(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        response = server.request(
            "POST", "/helix/valves/update", json_body={"HELIX_BASE_URL": "ftp://nowhere"}
        )

        assert response.status_code == 500
        assert "HELIX_BASE_URL must be an http:// or https:// URL" in response.text
        assert server.valves("helix")["HELIX_BASE_URL"] == helix.url
        ui = open_webui(server, new_user(), str(uuid.uuid4()))
        assert "Helix reply #1" in ui.replay(A[1:2])[0].reply.content  # type: ignore[union-attr]


class TestBackgroundTasks:
    def test_forwarded_tasks_reach_helix_without_conversation_headers_and_are_never_recorded(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        valves: Callable[..., dict[str, Any]],
    ) -> None:
        valves(TASKS="forward")
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)

        ui.replay(A_THREE_TURNS)

        tasks = [r for r in helix.chat_requests if r not in turns_to_helix(helix)]
        assert len(tasks) == len([r for r in A_THREE_TURNS if is_task(r)]) == 5
        for request in tasks:
            assert [request.header(h) for h in CONVERSATION_HEADERS] == [None, None]
            assert request.body["stream"] is False
            assert set(request.body) <= ALLOWED_KEYS
        assert tasks[0].body["max_tokens"] == 1000  # the title task's, forwarded
        assert not any(text.startswith("###") for _, text in stored(sessions, user, chat_id))

    def test_tasks_are_answered_locally_by_default_without_calling_helix(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        ui = open_webui(server, new_user(), str(uuid.uuid4()))

        exchanges = ui.replay(A[:3])

        title = exchanges[0]
        assert title.task == "title_generation"
        assert title.reply is not None
        assert title.reply.content == ""
        assert len(helix.chat_requests) == 1  # only the turn itself


class TestEditsAndRegenerations:
    def test_a_regeneration_resends_the_history_and_starts_a_new_branch(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)

        exchanges = ui.replay(A_REGENERATED)

        third, regenerated = turns_to_helix(helix)[2:]
        assert regenerated.body["messages"] == third.body["messages"]
        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert len(branches) == 2
        regenerated_outlet = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
        assert [(m.role, m.content, m.message_id) for m in branches[-1]] == [
            (m["role"], m["content"], m["id"]) for m in regenerated_outlet
        ]
        assert branches[0][-1].message_id == "fb3fa54d-c914-4903-9a17-962849ead9f7"
        assert branches[0][-1].content != branches[1][-1].content

    def test_an_edit_of_the_first_question_starts_over_with_only_that_question(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)
        ui.replay(A[1:3] + A[5:7])
        edit = ui.prepare(A[1])
        edited_id, reply_id = str(uuid.uuid4()), str(uuid.uuid4())
        edit["messages"] = [{"role": "user", "content": "[A-t1] EDITED: hello, I am Bo."}]
        edit["metadata"].update(user_message_id=edited_id, message_id=reply_id)
        edit["metadata"]["user_message"].update(id=edited_id, content="[A-t1] EDITED")

        reply = ui.answer(server.inlet(MODEL, edit, user))
        server.outlet(
            MODEL,
            {
                "model": MODEL,
                "messages": [
                    {"id": edited_id, "role": "user", "content": edit["messages"][0]["content"]},
                    {"id": reply_id, "role": "assistant", "content": reply.content},
                ],
                "chat_id": chat_id,
                "session_id": "socket-1",
                "id": reply_id,
            },
            user,
        )

        assert helix.chat_requests[-1].body["messages"] == [edit["messages"][0]]
        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert [len(b) for b in branches] == [4, 2]
        assert [m.message_id for m in branches[-1]] == [edited_id, reply_id]

    def test_an_edit_sends_helix_the_edited_history_and_starts_a_new_branch(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)

        exchanges = ui.replay(A)

        edited = turns_to_helix(helix)[-1]
        assert [m["content"][:8] for m in edited.body["messages"]] == [
            "[A-t1] H",
            "Helix re",
            "[A-edit]",
        ]
        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert len(branches) == 3
        edit_outlet = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
        assert [m.message_id for m in branches[-1]] == [m["id"] for m in edit_outlet]
        assert [m.content for m in branches[-1]] == [m["content"] for m in edit_outlet]
        assert len(branches[1]) == 6, "the regenerated branch stays readable"


class TestConversations:
    def test_a_second_chat_keeps_its_own_history_and_header(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user = new_user()
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        chat_a = open_webui(server, user, first)
        chat_e = open_webui(server, user, second, recorded_chat_id=CHAT_E)

        chat_a.replay(A[:3])
        chat_e.replay(E)
        chat_a.replay(A[3:7])

        by_chat: dict[str, list[list[str]]] = {}
        for request in turns_to_helix(helix):
            contents = [m["content"][:6] for m in request.body["messages"]]
            by_chat.setdefault(str(request.header("X-OpenWebUI-Chat-Id")), []).append(contents)
        assert by_chat[first] == [["[A-t1]"], ["[A-t1]", "Helix ", "[A-t2]"]]
        assert [c[::2] for c in by_chat[second]] == [
            ["[E-t1]"],
            ["[E-t1]", "[E-t2]"],
            ["[E-t1]", "[E-t2]", "[E-t3]"],
        ]
        assert len(stored(sessions, user, first)) == 4
        assert len(stored(sessions, user, second)) == 6

    def test_a_second_user_never_sees_the_first_users_history_under_the_same_chat_id(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        ana, bob, chat_id = new_user("Ana"), new_user("Bob"), str(uuid.uuid4())
        plain_api_turn(server, ana, chat_id, "Ana's secret is 1234.")
        helix.reset()

        plain_api_turn(server, bob, chat_id, "What is Ana's secret?")

        assert helix.chat_requests[0].body["messages"] == [
            {"role": "user", "content": "What is Ana's secret?"}
        ]
        assert stored(sessions, bob, chat_id)[0] == ("user", "What is Ana's secret?")
        assert len(stored(sessions, bob, chat_id)) == 2
        assert stored(sessions, ana, chat_id)[0] == ("user", "Ana's secret is 1234.")
        assert len(stored(sessions, ana, chat_id)) == 2

    def test_a_client_sending_only_its_newest_message_gets_the_stored_history_in_front(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        first_reply = plain_api_turn(server, user, chat_id, "My name is Ana.")

        second_reply = plain_api_turn(server, user, chat_id, "What is my name?")

        assert helix.chat_requests[-1].body["messages"] == [
            {"role": "user", "content": "My name is Ana."},
            {"role": "assistant", "content": first_reply},
            {"role": "user", "content": "What is my name?"},
        ]
        assert stored(sessions, user, chat_id) == [
            ("user", "My name is Ana."),
            ("assistant", first_reply),
            ("user", "What is my name?"),
            ("assistant", second_reply),
        ]

    def test_a_temporary_chat_is_answered_but_never_written_to_the_session_file(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore, data_dir: Path
    ) -> None:
        user, chat_id = new_user(), f"local:{uuid.uuid4().hex[:20]}"
        ui = open_webui(server, user, chat_id)

        ui.replay(A[:7])

        turns = turns_to_helix(helix)
        assert [len(r.body["messages"]) for r in turns] == [1, 3]
        assert turns[1].header("X-OpenWebUI-Chat-Id") == chat_id
        assert sessions.conversations(user["id"]) == []
        written = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
        assert user["id"].encode() not in written
        assert chat_id.encode() not in written

    def test_a_temporary_chat_is_kept_when_the_valve_says_so(
        self,
        server: PipelinesServer,
        sessions: SessionStore,
        valves: Callable[..., dict[str, Any]],
    ) -> None:
        valves(STORE_TEMPORARY_CHATS=True)
        user, chat_id = new_user(), f"local:{uuid.uuid4().hex[:20]}"

        open_webui(server, user, chat_id).replay(A[1:3])

        assert [c.conversation_id for c in sessions.conversations(user["id"])] == [chat_id]


class TestHistoryToggle:
    def test_history_off_forwards_untouched_and_records_nothing_until_it_is_on_again(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        valves: Callable[..., dict[str, Any]],
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        first_reply = plain_api_turn(server, user, chat_id, "My name is Ana.")

        assert valves(HISTORY_ENABLED=False)["HISTORY_ENABLED"] is False
        plain_api_turn(server, user, chat_id, "Off the record.")
        assert helix.chat_requests[-1].body["messages"] == [
            {"role": "user", "content": "Off the record."}
        ]
        assert [r.header("X-OpenWebUI-Chat-Id") for r in helix.chat_requests] == [chat_id] * 2
        assert len(stored(sessions, user, chat_id)) == 2

        assert valves(HISTORY_ENABLED=True)["HISTORY_ENABLED"] is True
        plain_api_turn(server, user, chat_id, "What is my name?")
        assert helix.chat_requests[-1].body["messages"] == [
            {"role": "user", "content": "My name is Ana."},
            {"role": "assistant", "content": first_reply},
            {"role": "user", "content": "What is my name?"},
        ]
        assert len(stored(sessions, user, chat_id)) == 4
        assert json.loads((server.pipelines_dir / "helix" / "valves.json").read_text())[
            "HISTORY_ENABLED"
        ]


class TestHelixFailures:
    @pytest.mark.parametrize(
        ("failure", "stream"),
        [
            pytest.param("unreachable", True, id="unreachable-stream"),
            pytest.param(Fault.SERVER_ERROR, True, id="http-500-stream"),
            pytest.param(Fault.SERVER_ERROR, False, id="http-500-non-stream"),
            pytest.param(Fault.UNAVAILABLE, True, id="unavailable-stream"),
        ],
    )
    def test_the_person_gets_one_clear_message_and_the_question_is_kept(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        valves: Callable[..., dict[str, Any]],
        failure: Any,
        stream: bool,
    ) -> None:
        if failure == "unreachable":
            valves(HELIX_BASE_URL=f"http://127.0.0.1:{free_port()}", MAX_RETRIES=0)
        else:
            helix.fail_next(failure)
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)
        mark = server.log_mark()

        exchanges = ui.replay(A[1:2], stream=stream)

        reply = exchanges[0].reply
        assert reply is not None
        assert f"Helix failed for conversation {chat_id}" in server.log(mark)
        assert reply.status_code == 200
        assert reply.done
        assert reply.finish_reason == "stop"
        assert is_notice(reply.content), "the notice's mark did not come through whole"
        assert visible(reply.content).startswith("⚠️")
        assert "Pipelines server log" in reply.content
        texts = [
            c for c in reply.chunks if c.get("choices", [{}])[0].get("delta", {}).get("content")
        ]
        assert len(texts) <= 1
        assert stored(sessions, user, chat_id) == [
            ("user", "[A-t1] Hello, my name is Ana. What is 2+2?")
        ]
        assert stored_ids(sessions, user, chat_id) == ["ad101b8f-cacc-48e7-bc00-9497760e39f6"]

    def test_an_answer_cut_off_mid_stream_keeps_what_arrived_and_says_so(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        helix.fail_next(Fault.DROP_MID_STREAM)
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)

        exchanges = ui.replay(A[1:2], stream=True)

        reply = exchanges[0].reply
        assert reply is not None
        assert reply.done
        assert reply.content.startswith("Helix ")
        assert "The answer was cut off" in reply.content
        assert is_notice("\n\n" + reply.content.rpartition("\n\n")[2]), "the mark broke"
        kept = sessions.load(ConversationKey(user["id"], chat_id))
        assert [m.role for m in kept] == ["user", "assistant"]
        assert kept[1].partial
        assert reply.content.startswith(kept[1].content)

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault.SERVER_ERROR, id="failed-before-answering"),
            pytest.param(Fault.DROP_MID_STREAM, id="cut-off"),
        ],
    )
    def test_the_next_turn_never_sends_the_notice_to_helix(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore, fault: Fault
    ) -> None:
        helix.fail_next(fault)
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)
        ui.replay(A[1:3])  # Open WebUI saw a complete answer (the notice) and ran the outlet

        ui.replay(A[5:7])

        after = turns_to_helix(helix)[-1].body["messages"]
        assert [m["content"][:6] for m in after if m["role"] == "user"] == ["[A-t1]", "[A-t2]"]
        assert not any("⚠️" in m["content"] or OPEN in m["content"] for m in after)
        assert not any("⚠️" in text or OPEN in text for _, text in stored(sessions, user, chat_id))
        assert [role for role, _ in stored(sessions, user, chat_id)][-2:] == ["user", "assistant"]

    def test_a_wrong_api_key_is_named_but_never_shown(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        valves: Callable[..., dict[str, Any]],
    ) -> None:
        helix.proxy_api_key = "right-key-5b1e"
        try:
            valves(HELIX_API_KEY="wrong-key-9c4d")
            mark = server.log_mark()
            ui = open_webui(server, new_user(), str(uuid.uuid4()))
            reply = ui.replay(A[1:2])[0].reply
            valves(HELIX_API_KEY="right-key-5b1e")
            answered = ui.replay(A[1:2])[0].reply
        finally:
            helix.proxy_api_key = None

        assert reply is not None
        assert "HELIX_API_KEY" in reply.content
        assert "wrong-key-9c4d" not in reply.content
        assert "wrong-key-9c4d" not in server.log(mark)
        assert answered is not None
        assert "Helix reply #1" in answered.content
        assert helix.chat_requests[-1].header("Authorization") == "Bearer right-key-5b1e"


class TestConcurrency:
    def test_chats_played_at_once_keep_their_own_histories(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        players = [(new_user(), str(uuid.uuid4())) for _ in range(4)]

        def play(user: dict[str, Any], chat_id: str) -> list[Exchange]:
            return open_webui(server, user, chat_id).replay(A_THREE_TURNS)

        with ThreadPoolExecutor(max_workers=len(players)) as pool:
            played = list(pool.map(lambda p: play(*p), players))

        for (user, chat_id), exchanges in zip(players, played, strict=True):
            last = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
            assert stored_ids(sessions, user, chat_id) == [m["id"] for m in last]
            requests = [
                r for r in turns_to_helix(helix) if r.header("X-OpenWebUI-Chat-Id") == chat_id
            ]
            assert [len(r.body["messages"]) for r in requests] == [1, 3, 5]

    def test_a_title_task_racing_the_first_turn_is_not_recorded(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        title, turn = open_webui(server, user, chat_id), open_webui(server, user, chat_id)

        with ThreadPoolExecutor(max_workers=2) as pool:
            racing = [pool.submit(title.replay, A[:1]), pool.submit(turn.replay, A[1:3])]
            for future in racing:
                future.result()

        assert stored_ids(sessions, user, chat_id) == [
            "ad101b8f-cacc-48e7-bc00-9497760e39f6",
            "2bf6ab90-bf2e-438d-b58b-849714e0e078",
        ]


class TestRestart:
    def test_history_and_valves_survive_a_restart_of_the_server(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        valves: Callable[..., dict[str, Any]],
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        valves(TASKS="skip")
        first_reply = plain_api_turn(server, user, chat_id, "My name is Ana.")

        server.restart()

        assert server.valves("helix")["TASKS"] == "skip"
        plain_api_turn(server, user, chat_id, "What is my name?")
        assert helix.chat_requests[-1].body["messages"] == [
            {"role": "user", "content": "My name is Ana."},
            {"role": "assistant", "content": first_reply},
            {"role": "user", "content": "What is my name?"},
        ]


class TestOutlet:
    def test_running_the_outlet_twice_changes_nothing(
        self, server: PipelinesServer, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, user, chat_id)
        exchanges = ui.replay(A[:3])
        before = sessions.branches(ConversationKey(user["id"], chat_id))

        again = server.outlet(MODEL, exchanges[2].sent, user)

        assert again == exchanges[2].sent
        assert sessions.branches(ConversationKey(user["id"], chat_id)) == before
        assert [m.message_id for m in before[0]] == [m["id"] for m in exchanges[2].sent["messages"]]

    def test_an_older_client_running_each_outlet_twice_stores_every_message_once(
        self, server: PipelinesServer, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = OpenWebUI(
            server,
            MODEL,
            user=user,
            chat_id=chat_id,
            recorded_chat_id=CHAT_L2,
            model=MODEL,
            recorded_model="capture_pipe",
        )

        exchanges = ui.replay(L2)

        outlets = [e.sent["messages"] for e in exchanges if e.hook == "outlet"]
        assert len(outlets) == 6
        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert len(branches) == 1
        assert [m.message_id for m in branches[0]] == [m["id"] for m in outlets[-2]]
