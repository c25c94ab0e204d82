"""No valve value and no request body bricks the real Pipelines server.

Every kind of bad value goes to every valve of both pipelines through ``POST /<id>/valves/update``,
as Open WebUI's admin page sends it; after each the server must still answer (``GET /models``,
the valves, a chat turn), and the value must be refused naming the valve, or named in the chat on
the next turn. A ``valves.json`` holding bad values (written by an older version, or by hand) must
not stop the server from starting. Bodies the server's own schema refuses are repaired by the
pipe's inlet, which Open WebUI calls first.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helix_pipeline.notices import visible
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui_transport import Reply, ask
from helix_pipeline.valves import FilterValves, HelixValves

from .openwebui_replay import OpenWebUI, recorded
from .pipelines_server import PIPELINES, TRACEBACK, PipelinesServer

pytestmark = pytest.mark.integration

PIPE, FILTER = "helix", "helix_session_filter"
MODEL = "helix.helix-consultant"
CHAT_A = "8854fe74-68d4-4c99-9c9d-c0d0c58e1887"
FIRST_TURN = recorded("run1_forward_headers/filter.jsonl", CHAT_A)[1:2]
"""The first chat turn of recorded chat A (an inlet with metadata, streamed)."""
FILES = [PIPELINES / "helix.py", PIPELINES / "helix_session_filter.py"]

HOSTILE_URLS = ["http://:8001", "http://[::1", "ftp://x", "http://h:99999", "http://h:8001\r\nX: 1"]
WRONG_TYPES: list[Any] = [None, ["x"], {"a": 1}]
NUMBERS = ["many", "NaN", "Infinity", -1, 10**30, None]

BAD_PIPE_VALUES = [
    *(("HELIX_BASE_URL", value) for value in [*HOSTILE_URLS, "", "  ", 8001, *WRONG_TYPES]),
    *(("HELIX_API_KEY", value) for value in ["sk\nX-Evil: 1", "schlüssel", "sk key", 5, None]),
    *(("HELIX_MODELS", value) for value in ["helix one", "a/b", "x\ny", None, 5]),
    *(("CONVERSATION_HEADERS", v) for v in ["X Chat", "X-A\r\nX-B", "", " , ", "Ü", None, 5]),
    *(("SESSION_STORE_URL", v) for v in ["mysql://u:hunter2@db/x", "/tmp/x.db", None, 5]),
    *(("SESSION_STORE_URL", v) for v in ["redis://c:99999/0", "postgresql://u:hunter2@[::1/x"]),
    *(("HISTORY_ENABLED", value) for value in ["maybe", None, 5, []]),
    *(("STORE_TEMPORARY_CHATS", value) for value in ["maybe", None]),
    *(("MAX_HISTORY_MESSAGES", value) for value in [*NUMBERS, 0, 1.5]),
    *(("MAX_MESSAGE_CHARS", value) for value in [0, "many", None]),
    *(("MAX_HISTORY_CHARS", value) for value in [-5, 10**30]),
    *(("SESSION_TTL_DAYS", value) for value in [-1, 10**9, "x", 1.5, None]),
    *(("CONNECT_TIMEOUT_S", value) for value in [*NUMBERS, 0, 1e300]),
    *(("READ_TIMEOUT_S", value) for value in ["NaN", 0, -0.5, 5]),  # 5: cuts Helix's heartbeat gap
    *(("HELIX_HEARTBEAT_S", value) for value in ["NaN", 0, -1, "x", None]),
    *(("ANSWER_TIMEOUT_S", value) for value in ["Infinity", 1e300]),
    *(("MAX_RETRIES", value) for value in [-1, 11, 10**6, "x", 2.5, None]),
    *(("TASKS", value) for value in ["sometimes", "", "SKIP", None, 5]),
]
BAD_FILTER_VALUES = [
    *(("pipelines", value) for value in ["*", [1, None], None, {"a": 1}]),
    *(("priority", value) for value in ["high", None, 1.5, []]),
    *(("SESSION_STORE_URL", value) for value in ["mysql://db/x", None]),
    *(("MAX_HISTORY_MESSAGES", value) for value in [0, "NaN", None]),
    *(("SESSION_TTL_DAYS", value) for value in [-1, 10**9]),
    *(("HISTORY_ENABLED", value) for value in ["maybe", None]),
    *(("STORE_TEMPORARY_CHATS", value) for value in ["maybe"]),
    *(("MAX_MESSAGE_CHARS", value) for value in [0, 10**30]),
    *(("MAX_HISTORY_CHARS", value) for value in ["x"]),
]


def case_id(name: str, value: Any) -> str:
    return f"{name}={json.dumps(value)[:24]}"


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(helix: FakeHelix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelinesServer]:
    root = tmp_path_factory.mktemp("valves-server")
    env = {"HELIX_BASE_URL": helix.url, "HELIX_DATA_DIR": str(root / "data")}
    with PipelinesServer(root, FILES, env=env) as running:
        yield running


def chat_turn(server: PipelinesServer) -> Reply:
    """One recorded Open WebUI turn (the pipe's inlet, then ``/chat/completions``), new ids."""
    user = {"id": str(uuid.uuid4()), "email": "a@example.com", "name": "Ana", "role": "user"}
    ui = OpenWebUI(
        server,
        MODEL,
        user=user,
        chat_id=str(uuid.uuid4()),
        recorded_chat_id=CHAT_A,
        model=MODEL,
        recorded_model="helix-test",
    )
    reply = ui.replay(FIRST_TURN)[0].reply
    assert reply is not None
    return reply


def wait_for_log(server: PipelinesServer, since: int, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in server.log(since):
        assert time.monotonic() < deadline, f"{text!r} never reached the server's log"
        time.sleep(0.05)


def assert_serving(server: PipelinesServer) -> None:
    """What the middleware's call to ``models()`` on every request would break first."""
    assert {MODEL, FILTER} <= {model["id"] for model in server.models()}
    for pipeline_id in (PIPE, FILTER):
        assert server.request("GET", f"/{pipeline_id}/valves").status_code == 200


class TestEveryBadValveValue:
    def test_every_valve_of_both_pipelines_gets_bad_values(self) -> None:
        assert set(HelixValves.model_fields) == {name for name, _ in BAD_PIPE_VALUES}
        assert set(FilterValves.model_fields) == {name for name, _ in BAD_FILTER_VALUES}

    @pytest.mark.parametrize(
        ("name", "value"),
        [pytest.param(n, v, id=case_id(n, v)) for n, v in BAD_PIPE_VALUES],
    )
    def test_the_pipe_refuses_it_naming_the_valve_and_the_server_keeps_answering(
        self, server: PipelinesServer, helix: FakeHelix, name: str, value: Any
    ) -> None:
        mark = server.log_mark()
        before = server.valves(PIPE)
        response = server.request("POST", f"/{PIPE}/valves/update", json_body={name: value})

        assert_serving(server)
        if response.status_code == 200:  # accepted: the next turn must say what is wrong
            assert name in chat_turn(server).content
        else:
            assert response.status_code == 500  # how the server answers a Valves that raises
            assert name in response.json()["detail"]
            assert "hunter2" not in response.text
            assert server.valves(PIPE) == before
            assert "Helix reply #1" in chat_turn(server).content
        server.update_valves(PIPE, {})  # the update endpoint still works
        assert TRACEBACK not in server.log(mark)

    @pytest.mark.parametrize(
        ("name", "value"),
        [pytest.param(n, v, id=case_id(n, v)) for n, v in BAD_FILTER_VALUES],
    )
    def test_the_filter_refuses_it_naming_the_valve_and_the_server_keeps_answering(
        self, server: PipelinesServer, name: str, value: Any
    ) -> None:
        mark = server.log_mark()
        before = server.valves(FILTER)
        response = server.request("POST", f"/{FILTER}/valves/update", json_body={name: value})

        assert_serving(server)
        assert response.status_code == 500
        assert name in response.json()["detail"]
        assert server.valves(FILTER) == before
        assert "Helix reply #1" in chat_turn(server).content
        server.update_valves(FILTER, {})
        assert TRACEBACK not in server.log(mark)

    def test_a_good_value_after_a_refused_one_is_taken(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        refused = server.request("POST", f"/{PIPE}/valves/update", json_body={"MAX_RETRIES": -1})
        assert refused.status_code == 500
        try:
            assert server.update_valves(PIPE, {"MAX_RETRIES": 0})["MAX_RETRIES"] == 0
        finally:
            server.update_valves(PIPE, {})


class TestABadValvesFileOnDisk:
    """valves.json written by an older version (whose rules were looser), or by hand."""

    @pytest.fixture
    def restarted(self, helix: FakeHelix, tmp_path: Path) -> Iterator[PipelinesServer]:
        env = {"HELIX_BASE_URL": helix.url, "HELIX_DATA_DIR": str(tmp_path / "data")}
        saved = {
            PIPE: {"HELIX_BASE_URL": "http://:8001", "CONNECT_TIMEOUT_S": "abc", "MAX_RETRIES": 4},
            FILTER: {"pipelines": "*", "priority": "high", "MAX_HISTORY_MESSAGES": -1},
        }
        for pipeline_id, values in saved.items():
            folder = tmp_path / "pipelines" / pipeline_id
            folder.mkdir(parents=True)
            (folder / "valves.json").write_text(json.dumps(values), encoding="utf-8")
        with PipelinesServer(tmp_path, FILES, env=env) as running:
            yield running

    def test_the_server_starts_names_them_in_the_chat_and_the_admin_corrects_them(
        self, restarted: PipelinesServer, helix: FakeHelix
    ) -> None:
        assert_serving(restarted)
        assert not (restarted.pipelines_dir / "failed").exists()
        valves = restarted.valves(PIPE)
        assert valves["MAX_RETRIES"] == 4  # a good saved value is kept
        assert valves["HELIX_BASE_URL"] == helix.url  # a bad one shows its default
        assert restarted.valves(FILTER)["pipelines"] == ["helix-consultant"]  # its default

        helix.reset()
        reply = chat_turn(restarted)
        assert visible(reply.content).startswith("⚠️")
        assert "HELIX_BASE_URL" in reply.content and "CONNECT_TIMEOUT_S" in reply.content
        assert "Admin Panel > Settings > Pipelines" in reply.content
        assert helix.chat_requests == []

        restarted.update_valves(PIPE, {"HELIX_BASE_URL": helix.url, "MAX_RETRIES": 4})
        assert "Helix reply #1" in chat_turn(restarted).content
        refused = restarted.request(
            "POST", f"/{PIPE}/valves/update", json_body={"HELIX_BASE_URL": "http://:8001"}
        )
        assert refused.status_code == 500 and "HELIX_BASE_URL" in refused.text
        assert_serving(restarted)
        assert TRACEBACK not in restarted.log()


USER_TURN = {"role": "user", "content": "What time is it?"}
TOOL_CALL = [
    USER_TURN,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    {"role": "user", "content": "Thanks. And in Tokyo?"},
]
REFUSED_BODIES = [
    pytest.param({"messages": TOOL_CALL}, True, id="tool-call-content-null"),
    pytest.param({"messages": [USER_TURN, {"role": "assistant"}]}, True, id="content-missing"),
    pytest.param({"messages": [{"role": "user", "content": 5}]}, True, id="content-number"),
    pytest.param({"messages": [{"role": "user", "content": {"a": 1}}]}, True, id="content-object"),
    pytest.param({"messages": [{"role": "user", "content": [5, None]}]}, True, id="parts-junk"),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, True, id="part-no-text"
    ),
    pytest.param({"messages": [USER_TURN, "hi", 5]}, True, id="message-not-object"),
    pytest.param({"messages": [USER_TURN, {"content": "x"}]}, True, id="role-missing"),
    pytest.param({"messages": [{"role": None, "content": "x"}]}, False, id="only-role-null"),
    pytest.param({}, False, id="messages-missing"),
    pytest.param({"messages": None}, False, id="messages-null"),
    pytest.param({"messages": "hi"}, False, id="messages-string"),
    pytest.param({"messages": USER_TURN}, False, id="messages-object"),
    pytest.param({"messages": [USER_TURN], "stream": None}, True, id="stream-null"),
    pytest.param({"messages": [USER_TURN], "stream": "abc"}, True, id="stream-junk"),
]


class TestBodiesTheServerRefuses:
    """The server's schema refuses these before ``pipe()`` runs; the pipe's inlet repairs them."""

    @pytest.mark.parametrize(("fields", "answerable"), REFUSED_BODIES)
    def test_the_pipes_inlet_makes_them_acceptable_and_pipe_answers(
        self, server: PipelinesServer, helix: FakeHelix, fields: dict[str, Any], answerable: bool
    ) -> None:
        body = {"model": MODEL, "stream": False, **fields}
        before = server.log_mark()
        # Its own connection: after an unhandled 500 the server drops the kept-alive one.
        refused = requests.post(f"{server.url}/chat/completions", json=body, timeout=60)
        assert refused.status_code in (422, 500), "the server accepts it: nothing to repair"
        if refused.status_code == 500:  # the server's own crash: let its traceback arrive first
            wait_for_log(server, before, TRACEBACK)
        mark = server.log_mark()

        user = {"id": str(uuid.uuid4()), "name": "Ana", "email": "a@example.com", "role": "user"}
        inlet_body = {**body, "metadata": {"chat_id": str(uuid.uuid4()), "message_id": "m1"}}
        helix.reset()
        reply = ask(server.http, inlet_body, user)

        assert reply.status_code == 200
        if answerable:
            assert "Helix reply #1" in reply.content
            assert len(helix.chat_requests) == 1
        else:
            assert visible(reply.content).startswith("⚠️ There is nothing to send to Helix")
            assert helix.chat_requests == []
        assert TRACEBACK not in server.log(mark)

    def test_a_tool_calls_messages_reach_helix_as_text(
        self, server: PipelinesServer, helix: FakeHelix
    ) -> None:
        user = {"id": str(uuid.uuid4()), "name": "Ana", "email": "a@example.com", "role": "user"}
        body = {"model": MODEL, "stream": True, "messages": TOOL_CALL}
        helix.reset()
        ask(server.http, {**body, "metadata": {"chat_id": "tools"}}, user)
        sent = helix.chat_requests[-1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "assistant", "user"]
        assert sent[1]["content"] == "" and "12:00" in sent[2]["content"]
