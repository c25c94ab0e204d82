"""HelixPipe in-process against a real FakeHelix: the hooks as the Pipelines server calls them."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import PRIVATE_KEY, ConversationKey
from helix_pipeline.notices import UNEXPECTED, visible
from helix_pipeline.pipe import HelixPipe, shown_text
from helix_pipeline.testing import FakeHelix, Fault
from helix_pipeline.testing.openwebui import OpenWebUIChat, pipe_arguments
from helix_pipeline.testing.openwebui_transport import Chat, InProcess, ask
from helix_pipeline.valves import HelixValves

from .conftest import load_fixture

USER_A = {"id": "user-a", "name": "A", "email": "a@example.com", "role": "user"}
USER_B = {"id": "user-b", "name": "B", "email": "b@example.com", "role": "user"}
MODEL = "helix.helix-consultant"
NOTHING_TO_SEND = "There is nothing to send to Helix"


def new_chat(pipe: HelixPipe, chat_id: str, user: dict[str, str]) -> Chat:
    """An Open WebUI 0.12.4 chat with ``pipe``, called as the Pipelines server calls it."""
    return Chat(InProcess(pipe), chat_id=chat_id, user=user)


def send(chat: Chat, text: str, *, stream: bool = True) -> str:
    """One turn's shown text; the outlet hands the whole chat back unchanged."""
    reply = chat.turn(text, stream=stream)
    assert chat.last_turn is not None
    assert reply.outlet == chat.chat.outlet_body(chat.last_turn)
    return reply.content


def run_pipe(pipe: HelixPipe, body: dict[str, Any], user: dict[str, str]) -> str:
    """``body``'s inlet, then ``pipe()`` with what reaches it; the answer as text."""
    return ask(InProcess(pipe), copy.deepcopy(body), user).content


@pytest.fixture
def valves(fake_helix: FakeHelix, tmp_path: Path) -> HelixValves:
    return HelixValves(
        HELIX_BASE_URL=fake_helix.url,
        SESSION_STORE_URL=f"sqlite:///{tmp_path / 'sessions.db'}",
        MAX_RETRIES=0,
        HELIX_HEARTBEAT_S=1.0,  # FakeHelix's heartbeats are fast
        READ_TIMEOUT_S=2.0,
    )


@pytest.fixture
def pipe(valves: HelixValves) -> Iterator[HelixPipe]:
    current = {"valves": valves}
    helix = HelixPipe(lambda: current["valves"])
    helix.valves_holder = current  # type: ignore[attr-defined]
    yield helix
    helix.shutdown()


def set_valves(pipe: HelixPipe, **changes: Any) -> None:
    holder = pipe.valves_holder  # type: ignore[attr-defined]
    holder["valves"] = holder["valves"].model_copy(update=changes)


def stored(pipe: HelixPipe, user: dict[str, str], chat_id: str) -> list[str]:
    store = pipe._current().history.store
    return [m.content for m in store.load(ConversationKey(user["id"], chat_id))]


class TestAChat:
    @pytest.mark.parametrize(
        "stream", [pytest.param(True, id="stream"), pytest.param(False, id="json")]
    )
    def test_every_turn_reaches_helix_with_the_chat_id_and_the_whole_history(
        self, pipe: HelixPipe, fake_helix: FakeHelix, stream: bool
    ) -> None:
        chat = new_chat(pipe, "chat-1", USER_A)
        for turn in range(3):
            reply = send(chat, f"question {turn}", stream=stream)
            assert f"Helix reply #{turn + 1} to: question {turn}" in reply
        requests = fake_helix.chat_requests
        assert [len(r.body["messages"]) for r in requests] == [1, 3, 5]
        for request in requests:
            assert request.headers["X-OpenWebUI-Chat-Id"] == "chat-1"
            assert request.headers["X-Conversation-ID"] == "chat-1"
            assert request.body["stream"] is stream
        assert fake_helix.sessions["conv-chat-1"].turns == 3
        assert len(stored(pipe, USER_A, "chat-1")) == 6

    def test_the_inlet_copies_the_conversation_into_the_private_key(self, pipe: HelixPipe) -> None:
        example = load_fixture("openwebui-0.12.4/examples/06_filter_inlet_B-t2_pipe_model.json")
        body = pipe.inlet(copy.deepcopy(example["body"]), example["user"])
        assert body[PRIVATE_KEY]["chat_id"] == "7e6c5e92-8659-49ed-80ee-7886efabafc6"
        assert body[PRIVATE_KEY]["user_message_id"] == "b9302cd2-95fc-45c6-932b-fac26f41de8e"
        assert body[PRIVATE_KEY]["kind"] == "saved"

    def test_open_webui_fields_and_private_keys_never_reach_helix(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        example = load_fixture("openwebui-0.12.4/examples/06_filter_inlet_B-t2_pipe_model.json")
        body = copy.deepcopy(example["body"])
        body["model"] = MODEL
        body["tools"] = [{"type": "function", "function": {"name": "get_time"}}]
        body["max_tokens"] = 123
        run_pipe(pipe, body, example["user"])
        sent = fake_helix.last_request.body
        assert set(sent) == {"model", "messages", "stream", "max_tokens"}
        assert sent["model"] == "helix-consultant"

    def test_a_second_user_with_the_same_chat_id_never_sees_the_first_users_history(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        send(new_chat(pipe, "shared-id", USER_A), "secret of A")
        send(new_chat(pipe, "shared-id", USER_B), "hi")
        contents = [m["content"] for m in fake_helix.last_request.body["messages"]]
        assert contents == ["hi"]
        assert stored(pipe, USER_A, "shared-id")[0] == "secret of A"


class TestBackgroundTasks:
    def title_task(self) -> dict[str, Any]:
        example = load_fixture(
            "openwebui-0.12.4/examples/04_filter_inlet_A-t1_title_generation_task.json"
        )
        body = copy.deepcopy(example["body"])
        body["model"] = MODEL
        return body

    def test_forwarded_tasks_go_to_helix_without_the_conversation_header_and_are_not_recorded(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        set_valves(pipe, TASKS="forward")
        run_pipe(pipe, self.title_task(), USER_A)
        request = fake_helix.last_request
        assert "X-OpenWebUI-Chat-Id" not in request.headers
        assert "X-Conversation-ID" not in request.headers
        assert pipe._current().history.store.users() == []

    def test_tasks_are_answered_locally_by_default_so_helix_runs_no_agent_for_them(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        assert run_pipe(pipe, self.title_task(), USER_A) == ""
        assert fake_helix.chat_requests == []


class TestTheToggle:
    def test_history_off_forwards_untouched_and_records_nothing_and_on_again_works(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        set_valves(pipe, HISTORY_ENABLED=False)
        send(new_chat(pipe, "chat-off", USER_A), "hello")
        assert fake_helix.last_request.headers["X-OpenWebUI-Chat-Id"] == "chat-off"
        assert stored(pipe, USER_A, "chat-off") == []
        set_valves(pipe, HISTORY_ENABLED=True)
        send(new_chat(pipe, "chat-on", USER_A), "hello")
        assert len(stored(pipe, USER_A, "chat-on")) == 2

    def test_a_new_base_url_takes_effect_without_a_restart(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        with FakeHelix() as other:
            set_valves(pipe, HELIX_BASE_URL=other.url)
            send(new_chat(pipe, "chat-1", USER_A), "hello")
            assert len(other.chat_requests) == 1
        assert fake_helix.chat_requests == []


class TestModels:
    def test_models_come_from_helix(self, pipe: HelixPipe) -> None:
        pipe.refresh_models()
        assert pipe.models() == [{"id": "helix-consultant", "name": "helix-consultant"}]

    def test_models_fall_back_to_the_valve_when_helix_is_down(self, tmp_path: Path) -> None:
        valves = HelixValves(
            HELIX_BASE_URL="http://127.0.0.1:9",
            HELIX_MODELS="helix-a, helix-b",
            SESSION_STORE_URL="memory://",
            MAX_RETRIES=0,
        )
        helix = HelixPipe(lambda: valves)
        helix.refresh_models()
        assert [m["id"] for m in helix.models()] == ["helix-a", "helix-b"]


class TestFailures:
    def test_helix_down_is_one_clear_message_and_the_user_message_is_kept(
        self, tmp_path: Path
    ) -> None:
        valves = HelixValves(
            HELIX_BASE_URL="http://127.0.0.1:9",
            SESSION_STORE_URL=f"sqlite:///{tmp_path / 's.db'}",
            MAX_RETRIES=0,
        )
        helix = HelixPipe(lambda: valves)
        reply = send(new_chat(helix, "chat-1", USER_A), "are you there?")
        assert visible(reply).startswith("⚠️")
        assert "http://127.0.0.1:9" in reply and "HELIX_BASE_URL" in reply
        assert stored(helix, USER_A, "chat-1") == ["are you there?"]

    def test_a_failure_notice_is_neither_stored_nor_sent_to_helix_next_turn(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        chat = new_chat(pipe, "chat-1", USER_A)
        fake_helix.fail_next(Fault.SERVER_ERROR)
        assert visible(send(chat, "q0")).startswith("⚠️")
        reply = send(chat, "q1")
        assert [m["content"] for m in fake_helix.last_request.body["messages"]] == ["q0", "q1"]
        assert stored(pipe, USER_A, "chat-1") == ["q0", "q1", reply]

    def test_a_stream_cut_midway_keeps_what_arrived_marked_partial(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        fake_helix.fail_next(Fault.DROP_MID_STREAM)
        reply = send(new_chat(pipe, "chat-1", USER_A), "tell me")
        assert "cut off" in reply
        branch = pipe._current().history.store.load(ConversationKey("user-a", "chat-1"))
        assert branch[-1].role == "assistant" and branch[-1].partial
        assert reply.startswith(branch[-1].content)

    def test_a_client_that_goes_away_keeps_what_was_streamed(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        chat = OpenWebUIChat(chat_id="chat-1", user=USER_A)
        body = pipe.inlet(chat.inlet_body(chat.start_turn("long answer please")), USER_A)
        result = pipe.pipe(**pipe_arguments(chat.pipe_body(body)))
        assert not isinstance(result, str)
        first = next(item for item in result if isinstance(item, str))
        result.close()  # the Pipelines server stops iterating when the client disconnects
        branch = pipe._current().history.store.load(ConversationKey("user-a", "chat-1"))
        assert [m.role for m in branch] == ["user", "assistant"]
        assert branch[-1].partial and branch[-1].content == first.strip()

    @pytest.mark.parametrize(
        ("body", "answer"),
        [
            pytest.param(None, NOTHING_TO_SEND, id="none"),
            pytest.param([], NOTHING_TO_SEND, id="list"),
            pytest.param({"messages": "not a list"}, NOTHING_TO_SEND, id="messages-string"),
            pytest.param(
                {"messages": [{"role": "user", "content": None}]}, "Helix reply #1", id="null"
            ),
            pytest.param({"messages": [], "stream": False}, NOTHING_TO_SEND, id="no-messages"),
        ],
    )
    def test_garbage_bodies_get_the_answer_they_deserve(
        self, pipe: HelixPipe, caplog: pytest.LogCaptureFixture, body: Any, answer: str
    ) -> None:
        assert answer in handled(pipe, body, caplog)

    def test_a_crash_inside_pipe_is_not_taken_for_a_handled_body(
        self, pipe: HelixPipe, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def crash(*args: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(HelixPipe, "_pipe", crash)
        with pytest.raises(AssertionError, match="catch-all"):
            handled(pipe, {"messages": []}, caplog)


def handled(pipe: HelixPipe, body: Any, caplog: pytest.LogCaptureFixture) -> str:
    """pipe()'s answer to ``body``, failing if the answer is the catch-all's: pipe() never raises,
    so only the notice and the ERROR record tell a crash from a handled body."""
    with caplog.at_level(logging.WARNING, logger="helix_pipeline"):
        result = pipe.pipe("", "helix-consultant", [], body)
        text = shown_text(result)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert text != UNEXPECTED and not errors, f"the catch-all caught a crash: {errors}"
    return text


BROKEN: dict[str, Any] = {
    "HELIX_BASE_URL": "http://:8001",
    "CONNECT_TIMEOUT_S": "abc",
    "HELIX_MODELS": None,
    "MAX_RETRIES": -1,
}


class TestUnusableValves:
    """Valves that skipped validation (``model_construct``, a restored valves.json): no hook
    raises, the chat names the valve, and a corrected valve works at once."""

    def test_every_hook_answers_and_names_the_valves(
        self, fake_helix: FakeHelix, caplog: pytest.LogCaptureFixture
    ) -> None:
        current = {"valves": HelixValves.model_construct(**BROKEN)}
        helix = HelixPipe(lambda: current["valves"])
        with caplog.at_level(logging.WARNING):
            helix.startup()
            assert helix.models() == [{"id": "helix-consultant", "name": "helix-consultant"}]
            helix.refresh_models()
            reply = send(new_chat(helix, "chat-1", USER_A), "hello")
        assert visible(reply).startswith("⚠️ helix-pipeline is misconfigured")
        for name in BROKEN:
            assert name in reply
        assert "Admin Panel > Settings > Pipelines" in reply
        assert fake_helix.chat_requests == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        current["valves"] = HelixValves(
            HELIX_BASE_URL=fake_helix.url, SESSION_STORE_URL="memory://"
        )
        assert "Helix reply #1" in send(new_chat(helix, "chat-2", USER_A), "hello")
        helix.shutdown()

    def test_a_valve_broken_after_good_ones_is_named_and_the_good_ones_work_again(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        send(new_chat(pipe, "chat-1", USER_A), "hello")
        holder = pipe.valves_holder  # type: ignore[attr-defined]
        good = holder["valves"]
        holder["valves"] = HelixValves.model_construct(**{**dict(good), "READ_TIMEOUT_S": 0})
        assert "READ_TIMEOUT_S" in send(new_chat(pipe, "chat-1", USER_A), "again")
        holder["valves"] = good.model_copy()
        assert "Helix reply" in send(new_chat(pipe, "chat-3", USER_A), "hello")


class TestNothingToSend:
    @pytest.mark.parametrize(
        ("body", "why"),
        [
            pytest.param({"stream": False}, "no 'messages' list", id="no-messages"),
            pytest.param({"messages": "hi"}, "no 'messages' list", id="messages-string"),
            pytest.param({"messages": []}, "holds no user message", id="empty"),
            pytest.param(
                {"messages": [{"role": "system", "content": "be brief"}]},
                "holds no user message",
                id="system-only",
            ),
        ],
    )
    def test_a_body_without_a_user_message_is_answered_here_and_never_sent(
        self, pipe: HelixPipe, fake_helix: FakeHelix, body: dict[str, Any], why: str
    ) -> None:
        reply = run_pipe(pipe, {"metadata": {"chat_id": "chat-empty"}, **body}, USER_A)
        assert visible(reply).startswith("⚠️ There is nothing to send to Helix")
        assert why in reply
        assert fake_helix.chat_requests == []
        assert stored(pipe, USER_A, "chat-empty") == []
