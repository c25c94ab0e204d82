"""The session filter inside the real Open WebUI Pipelines server, driven as Open WebUI 0.12.4.

Here Open WebUI reaches Helix through its own OpenAI connection (with forwarded user headers):
it calls the filter's inlet, sends what the inlet returned to Helix itself, then calls the filter's
outlet. One Pipelines server (``pipelines/helix_session_filter.py``) and one FakeHelix serve the
module; every test has its own user and chat ids.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.decorations import strip_decorations
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix

from .conftest import load_fixture
from .openwebui_replay import (
    OpenWebUI,
    OpenWebUIWithHelixConnection,
    recorded,
    rewrite,
    stored,
)
from .pipelines_server import (
    PIPELINES,
    PipelinesServer,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_run")]

FILTER = "helix_session_filter"
MODEL = "helix-consultant"
"""Helix's own model, as Open WebUI lists it from its OpenAI connection."""
CHAT_A = "8854fe74-68d4-4c99-9c9d-c0d0c58e1887"
CHAT_L1 = "21a7ec3e-2eab-4fe7-90ed-1f2ecfed2cb1"
"""Recorded chat L1: an older client whose outlet runs twice, first without the user's ids."""
A = recorded("run1_forward_headers/filter.jsonl", CHAT_A)
A_THREE_TURNS = A[:11]
L1 = recorded("run1_forward_headers/filter.jsonl", CHAT_L1)


def answer_of(content: str) -> str:
    """What is stored of a message Open WebUI showed: Helix's progress decorations left out
    (through its own connection, Open WebUI shows them as text)."""
    return strip_decorations(content)[0]


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("filter-data")


@pytest.fixture(scope="module")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelinesServer]:
    root = tmp_path_factory.mktemp("filter-server")
    env = {"SESSION_STORE_URL": f"sqlite:///{data_dir / 'sessions.db'}"}
    with PipelinesServer(root, [PIPELINES / "helix_session_filter.py"], env=env) as running:
        yield running


def new_user(name: str = "Ana") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "email": f"{name.lower()}@example.com",
        "name": name,
        "role": "user",
    }


def open_webui(
    server: PipelinesServer,
    helix: FakeHelix,
    user: dict[str, Any],
    chat_id: str,
    recorded_chat_id: str = CHAT_A,
) -> OpenWebUIWithHelixConnection:
    return OpenWebUIWithHelixConnection(
        helix,
        server,
        FILTER,
        user=user,
        chat_id=chat_id,
        recorded_chat_id=recorded_chat_id,
        model=MODEL,
        recorded_model="helix-test",
    )


def plain_api_inlet(
    server: PipelinesServer, user: dict[str, Any], chat_id: str, text: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A plain API caller's inlet through Open WebUI: a chat id, only its newest message."""
    inlet = load_fixture("openwebui-0.12.4/examples/21_plain_api_inlet_no_chat.json")
    body = rewrite(inlet["body"], {"helix-test": MODEL, inlet["user"]["id"]: user["id"]})
    body["metadata"]["chat_id"] = chat_id
    body["messages"] = [{"role": "user", "content": text}]
    return body, server.inlet(FILTER, body, user)


def plain_api_outlet(
    server: PipelinesServer, user: dict[str, Any], chat_id: str, text: str, reply: str
) -> None:
    """The outlet Open WebUI runs server-side for an API caller (its messages without ids)."""
    outlet = load_fixture("openwebui-0.12.4/examples/22_plain_api_outlet_no_chat.json")
    body = rewrite(outlet["body"], {"helix-test": MODEL})
    body["chat_id"] = chat_id
    body["messages"][0]["content"] = text
    body["messages"][1]["content"] = reply
    body["id"] = body["messages"][1]["id"] = f"msg_{uuid.uuid4().hex[:24]}"
    assert server.outlet(FILTER, body, user) == body


def plain_api_turn(
    server: PipelinesServer, helix: FakeHelix, user: dict[str, Any], chat_id: str, text: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    sent, returned = plain_api_inlet(server, user, chat_id, text)
    ui = open_webui(server, helix, user, chat_id)
    reply = ui.answer(returned).content
    plain_api_outlet(server, user, chat_id, text, reply)
    return sent, returned, reply


class TestModels:
    def test_models_show_the_filter_for_helixs_model_only(self, server: PipelinesServer) -> None:
        models = {m["id"]: m for m in server.models()}

        assert models[FILTER]["name"] == "Helix session memory"
        assert models[FILTER]["pipeline"] == {
            "type": "filter",
            "pipelines": ["helix-consultant"],
            "priority": 0,
            "valves": True,
        }


class TestOpenWebUIChats:
    def test_the_inlet_leaves_a_complete_history_as_it_came_but_for_helixs_decorations(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        ui = open_webui(server, helix, new_user(), str(uuid.uuid4()))

        exchanges = ui.replay(A_THREE_TURNS)

        inlets = [e for e in exchanges if e.hook == "inlet"]
        assert len(inlets) == 8
        for exchange in inlets:
            expected = copy.deepcopy(exchange.sent)
            for message in expected["messages"]:
                if message["role"] == "assistant":
                    message["content"] = answer_of(message["content"])
            assert exchange.returned == expected

    def test_the_outlet_records_every_turn_once_with_open_webui_ids(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, helix, user, chat_id)

        exchanges = ui.replay(A_THREE_TURNS)

        outlets = [e for e in exchanges if e.hook == "outlet"]
        assert all(e.returned == e.sent for e in outlets)
        last = outlets[-1].sent["messages"]
        branch = sessions.load(ConversationKey(user["id"], chat_id))
        assert [(m.role, m.content, m.message_id) for m in branch] == [
            (m["role"], answer_of(m["content"]), m["id"]) for m in last
        ]
        assert not any(text.startswith("###") for _, text in stored(sessions, user, chat_id))

    def test_helix_gets_the_chat_id_and_whole_history_from_open_webui(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        chat_id = str(uuid.uuid4())
        ui = open_webui(server, helix, new_user(), chat_id)

        ui.replay(A_THREE_TURNS)

        turns = [r for r in helix.chat_requests if r.body.get("tools")]
        assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
        assert {r.header("X-OpenWebUI-Chat-Id") for r in turns} == {chat_id}

    def test_a_regeneration_and_an_edit_start_new_branches_and_keep_the_old_ones(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, helix, user, chat_id)

        exchanges = ui.replay(A)

        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert [len(b) for b in branches] == [6, 6, 4]
        edit = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
        assert [m.message_id for m in branches[-1]] == [m["id"] for m in edit]
        assert branches[-1][2].content.startswith("[A-edit]")

    def test_an_outlet_run_twice_by_an_older_client_stores_each_message_once(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = open_webui(server, helix, user, chat_id, recorded_chat_id=CHAT_L1)

        exchanges = ui.replay(L1)

        outlets = [e.sent["messages"] for e in exchanges if e.hook == "outlet"]
        assert len(outlets) == 6
        assert [m["id"] for m in outlets[-1]][:-1] == [None] * 5, "the second run has no user ids"
        last = outlets[-2]
        branches = sessions.branches(ConversationKey(user["id"], chat_id))
        assert len(branches) == 1
        assert [(m.content, m.message_id) for m in branches[0]] == [
            (answer_of(m["content"]), m["id"]) for m in last
        ]


class TestPlainApiCallers:
    def test_the_second_call_gets_the_stored_history_and_no_new_keys(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        first_sent, first_returned, first_reply = plain_api_turn(
            server, helix, user, chat_id, "My name is Ana."
        )
        assert first_returned == first_sent

        sent, returned = plain_api_inlet(server, user, chat_id, "What is my name?")

        assert returned["messages"] == [
            {"role": "user", "content": "My name is Ana."},
            {"role": "assistant", "content": first_reply},
            {"role": "user", "content": "What is my name?"},
        ]
        assert list(returned) == list(sent)
        assert {k: v for k, v in returned.items() if k != "messages"} == {
            k: v for k, v in sent.items() if k != "messages"
        }

    def test_the_history_keeps_growing_turn_after_turn(
        self, server: PipelinesServer, helix: FakeHelix, sessions: SessionStore
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        replies = [
            plain_api_turn(server, helix, user, chat_id, text)[2]
            for text in ("My name is Ana.", "I live in Porto.", "Where do I live?")
        ]

        assert [len(r.body["messages"]) for r in helix.chat_requests] == [1, 3, 5]
        assert [text for _, text in stored(sessions, user, chat_id)] == [
            "My name is Ana.",
            replies[0],
            "I live in Porto.",
            replies[1],
            "Where do I live?",
            replies[2],
        ]

    def test_another_user_with_the_same_chat_id_gets_nothing_attached(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        ana, bob, chat_id = new_user("Ana"), new_user("Bob"), str(uuid.uuid4())
        plain_api_turn(server, helix, ana, chat_id, "Ana's secret is 1234.")

        sent, returned = plain_api_inlet(server, bob, chat_id, "What is Ana's secret?")

        assert returned == sent


@pytest.fixture(scope="module")
def beside_the_pipe(
    helix: FakeHelix, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelinesServer]:
    """Both files in one server, sharing the default session file, as an admin may install them."""
    root = tmp_path_factory.mktemp("both-server")
    files = [PIPELINES / "helix_session_filter.py", PIPELINES / "helix.py"]
    with PipelinesServer(root, files, env={"HELIX_BASE_URL": helix.url}) as running:
        yield running


class TestBesideTheHelixPipe:
    """With the pipe's model added to ``pipelines``, the filter also runs in front of the pipe."""

    def test_each_turn_reaches_helix_once_and_is_stored_once(
        self, beside_the_pipe: PipelinesServer, helix: FakeHelix
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        ui = OpenWebUI(
            beside_the_pipe,
            "helix.helix-consultant",
            filters=[FILTER],
            user=user,
            chat_id=chat_id,
            recorded_chat_id=CHAT_A,
            model="helix.helix-consultant",
            recorded_model="helix-test",
        )

        exchanges = ui.replay(A_THREE_TURNS)

        turns = [r for r in helix.chat_requests if r.header("X-OpenWebUI-Chat-Id")]
        assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
        store_file = beside_the_pipe.pipelines_dir / "helix_data" / "sessions.db"
        sessions = open_store(f"sqlite:///{store_file}")
        try:
            branches = sessions.branches(ConversationKey(user["id"], chat_id))
        finally:
            sessions.close()
        last = [e for e in exchanges if e.hook == "outlet"][-1].sent["messages"]
        assert len(branches) == 1
        assert [m.message_id for m in branches[0]] == [m["id"] for m in last]


class TestHistoryToggle:
    def test_history_off_leaves_the_body_alone_until_it_is_on_again(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        user, chat_id = new_user(), str(uuid.uuid4())
        plain_api_turn(server, helix, user, chat_id, "My name is Ana.")
        try:
            server.update_valves(FILTER, {"HISTORY_ENABLED": False})
            sent, returned = plain_api_inlet(server, user, chat_id, "What is my name?")
            assert returned == sent
        finally:
            server.update_valves(FILTER, {})

        sent, returned = plain_api_inlet(server, user, chat_id, "What is my name?")

        assert [m["content"] for m in returned["messages"]][::2] == [
            "My name is Ana.",
            "What is my name?",
        ]
        assert server.valves(FILTER)["pipelines"] == ["helix-consultant"], (
            "an update resets omitted valves"
        )
