"""FakeHelix itself, spoken to with plain requests: does it behave like Helix?"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from helix_pipeline.testing import (
    FIRST_CHUNK,
    SEPARATOR,
    UNAVAILABLE_JSON,
    UNAVAILABLE_STREAM,
    VALIDATION_HINT,
    FakeHelix,
    Fault,
    HelixSession,
)
from helix_pipeline.testing.events import stream_events


def chat(
    helix: FakeHelix,
    messages: list[dict[str, Any]] | None = None,
    *,
    headers: dict[str, str] | None = None,
    stream: bool = False,
    **body: Any,
) -> requests.Response:
    payload = {"model": "helix-consultant", "messages": messages, "stream": stream, **body}
    if messages is None:
        payload["messages"] = [{"role": "user", "content": "Hallo Helix"}]
    return requests.post(
        f"{helix.url}/v1/chat/completions", json=payload, headers=headers or {}, timeout=5
    )


def answer(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


def events(response: requests.Response) -> list[str]:
    """The data of every event in a streamed answer, in order."""
    assert response.status_code == 200, response.text
    blocks = response.content.decode().split("\n\n")
    assert blocks[-1] == ""
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [block.removeprefix("data: ") for block in blocks[:-1]]


@pytest.fixture
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as server:
        yield server


@pytest.fixture
def adr029() -> Iterator[FakeHelix]:
    with FakeHelix(header_mode="adr029") as server:
        yield server


class TestEndpoints:
    def test_models_lists_the_one_helix_model(self, helix: FakeHelix) -> None:
        data = requests.get(f"{helix.url}/v1/models", timeout=5).json()
        assert data["object"] == "list"
        assert [m["id"] for m in data["data"]] == ["helix-consultant"]

    def test_health_says_healthy(self, helix: FakeHelix) -> None:
        assert requests.get(f"{helix.url}/health", timeout=5).json() == {"status": "healthy"}

    def test_an_unknown_path_is_a_404_with_a_detail(self, helix: FakeHelix) -> None:
        response = requests.get(f"{helix.url}/v2/nothing", timeout=5)
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})

    def test_the_wrong_method_is_a_405(self, helix: FakeHelix) -> None:
        assert requests.get(f"{helix.url}/v1/chat/completions", timeout=5).status_code == 405

    def test_the_fake_helix_fixture_is_a_running_server(self, fake_helix: FakeHelix) -> None:
        assert requests.get(f"{fake_helix.url}/health", timeout=5).ok

    def test_after_stop_the_port_refuses_connections(self) -> None:
        with FakeHelix() as server:
            url = server.url
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=2)
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.url


class TestSessions:
    @pytest.mark.parametrize(
        ("chat_id", "session_id"),
        [
            pytest.param("6f1c9a1e-aaaa-bbbb", "conv-6f1c9a1e-aaaa-bbbb", id="uuid-kept"),
            pytest.param("ABC-def", "conv-ABC-def", id="case-kept"),
            pytest.param("abc_123", "conv-abc-123", id="underscore-becomes-dash"),
            pytest.param("--a//b--", "conv-a-b", id="runs-collapse-and-ends-strip"),
            pytest.param("___", "conv-session", id="nothing-left"),
            pytest.param("x" * 80, "conv-" + "x" * 59, id="cut-to-59"),
        ],
    )
    def test_the_chat_id_header_is_normalised_like_helix_does(
        self, helix: FakeHelix, chat_id: str, session_id: str
    ) -> None:
        chat(helix, headers={"X-OpenWebUI-Chat-Id": chat_id})
        assert list(helix.sessions) == [session_id]
        assert helix.sessions[session_id].conversation_id == chat_id

    def test_ids_that_differ_only_in_punctuation_collide_as_in_helix(
        self, helix: FakeHelix
    ) -> None:
        chat(helix, headers={"X-OpenWebUI-Chat-Id": "abc_123"})
        chat(helix, headers={"X-OpenWebUI-Chat-Id": "abc/123"})
        assert list(helix.sessions) == ["conv-abc-123"]
        assert helix.sessions["conv-abc-123"].turns == 2

    def test_the_current_build_ignores_x_conversation_id_and_starts_a_random_session(
        self, helix: FakeHelix
    ) -> None:
        chat(helix, headers={"X-Conversation-ID": "c1"})
        chat(helix, headers={"X-Conversation-ID": "c1"})
        ids = list(helix.sessions)
        assert len(ids) == 2
        assert all(re.fullmatch(r"session-[0-9a-f]{32}", sid) for sid in ids)

    def test_adr029_reads_x_conversation_id_only(self, adr029: FakeHelix) -> None:
        chat(adr029, headers={"X-Conversation-ID": "c1", "X-OpenWebUI-Chat-Id": "other"})
        assert list(adr029.sessions) == ["conv-c1"]

    def test_adr029_without_a_header_derives_a_stable_id_from_the_first_user_message(
        self, adr029: FakeHelix
    ) -> None:
        first = "Hallo Welt, wie geht's dir heute?"
        history = [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": first},
            {"role": "assistant", "content": "gut"},
            {"role": "user", "content": "und sonst?"},
        ]
        chat(adr029, history[:2])
        chat(adr029, history)
        digest = hashlib.sha256(f"helix-session:{first}".encode()).hexdigest()[:12]
        assert list(adr029.sessions) == [f"hallo-welt-wie-{digest}"]
        assert adr029.sessions[f"hallo-welt-wie-{digest}"].turns == 2

    def test_each_request_overwrites_the_sessions_messages(self, helix: FakeHelix) -> None:
        header = {"X-OpenWebUI-Chat-Id": "c1"}
        long = [
            {"role": "user", "content": "eins"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "zwei"},
        ]
        chat(helix, long, headers=header)
        chat(helix, [{"role": "user", "content": "nur das"}], headers=header)
        session = helix.sessions["conv-c1"]
        assert session.messages == [{"role": "user", "content": "nur das"}]
        assert session.original_request == "eins"

    def test_sessions_are_snapshots_that_tests_cannot_corrupt(self, helix: FakeHelix) -> None:
        chat(helix, headers={"X-OpenWebUI-Chat-Id": "c1"})
        helix.sessions["conv-c1"].messages.clear()
        assert helix.sessions["conv-c1"].messages != []


class TestValidation:
    def test_a_hundred_messages_pass(self, helix: FakeHelix) -> None:
        messages = [{"role": "user", "content": str(i)} for i in range(100)]
        assert chat(helix, messages).status_code == 200

    @pytest.mark.parametrize(
        ("messages", "detail"),
        [
            pytest.param(
                [{"role": "user", "content": "x"}] * 101,
                "Too many messages: 101. Maximum allowed: 100",
                id="too-many",
            ),
            pytest.param(
                [{"role": "user", "content": "x" * 100_001}],
                "Message 0 too long: 100001 characters. Maximum allowed: 100000",
                id="too-long",
            ),
            pytest.param(
                [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}],
                "Invalid role 'tool' in message 1. Valid roles: assistant, system, user",
                id="bad-role",
            ),
        ],
    )
    def test_helix_own_limits_are_400_with_a_detail_string(
        self, helix: FakeHelix, messages: list[dict[str, str]], detail: str
    ) -> None:
        response = chat(helix, messages, headers={"X-OpenWebUI-Chat-Id": "c1"})
        assert (response.status_code, response.json()) == (400, {"detail": detail})
        assert helix.sessions == {}

    @pytest.mark.parametrize(
        ("body", "loc", "kind"),
        [
            pytest.param(
                {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
                ["body", "messages", 0, "content"],
                "string_type",
                id="content-list",
            ),
            pytest.param({"model": "m"}, ["body", "messages"], "missing", id="no-messages"),
            pytest.param(
                {"messages": [{"role": "user"}]},
                ["body", "messages", 0, "content"],
                "missing",
                id="no-content",
            ),
            pytest.param(
                {"messages": [], "temperature": 3},
                ["body", "temperature"],
                "less_than_equal",
                id="temperature",
            ),
            pytest.param(
                {"messages": [], "max_tokens": 0},
                ["body", "max_tokens"],
                "greater_than_equal",
                id="max-tokens",
            ),
        ],
    )
    def test_schema_errors_are_422_with_a_fastapi_detail_list(
        self, helix: FakeHelix, body: dict[str, Any], loc: list[Any], kind: str
    ) -> None:
        response = requests.post(f"{helix.url}/v1/chat/completions", json=body, timeout=5)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert [(d["loc"], d["type"]) for d in detail] == [(loc, kind)]
        assert all(isinstance(d["msg"], str) for d in detail)
        assert helix.sessions == {}

    def test_a_body_that_is_not_json_is_fastapis_422_with_the_error_position(
        self, helix: FakeHelix
    ) -> None:
        response = requests.post(
            f"{helix.url}/v1/chat/completions",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body", 1],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting property name enclosed in double quotes"},
                }
            ]
        }
        assert response.text.startswith('{"detail":[{"type":"json_invalid"')  # compact

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream-request"])
    @pytest.mark.parametrize(
        ("messages", "text"),
        [
            pytest.param([], "Fehler: No messages provided", id="no-messages"),
            pytest.param(
                [{"role": "system", "content": "s"}], "Fehler: No user message found", id="no-user"
            ),
        ],
    )
    def test_helix_answers_some_mistakes_with_a_200_fehler_json(
        self, helix: FakeHelix, messages: list[dict[str, str]], text: str, stream: bool
    ) -> None:
        response = chat(helix, messages, stream=stream)
        assert response.headers["Content-Type"] == "application/json"
        assert answer(response) == text
        assert helix.sessions == {}


class TestAnswers:
    def test_the_default_reply_counts_turns_and_quotes_the_last_user_message(
        self, helix: FakeHelix
    ) -> None:
        header = {"X-OpenWebUI-Chat-Id": "c1"}
        first = answer(chat(helix, [{"role": "user", "content": "Erste Frage"}], headers=header))
        long = "x" * 100
        second = answer(chat(helix, [{"role": "user", "content": long}], headers=header))
        assert first == "Helix reply #1 to: Erste Frage\n\n<!-- STEP: what -->"
        assert second == f"Helix reply #2 to: {'x' * 60}\n\n<!-- STEP: what -->"

    def test_a_reply_callable_decides_the_answer(self) -> None:
        seen: list[list[dict[str, Any]]] = []

        def reply(messages: list[dict[str, Any]]) -> str:
            seen.append(messages)
            return f"{len(messages)} messages"

        with FakeHelix(reply=reply) as server:
            assert answer(chat(server)) == "1 messages"
        assert seen == [[{"role": "user", "content": "Hallo Helix"}]]

    def test_a_failing_reply_callable_is_a_helix_style_500(self) -> None:
        def reply(messages: list[dict[str, Any]]) -> str:
            raise KeyError("boom")

        with FakeHelix(reply=reply) as server:
            response = chat(server)
        assert response.status_code == 500
        body = response.json()
        assert list(body) == ["error", "type", "message", "path", "timestamp"]
        assert body["error"] == "Internal Server Error"
        assert (body["type"], body["message"]) == ("KeyError", "'boom'")
        assert body["path"] == "/v1/chat/completions"
        assert response.text.startswith('{"error":"Internal Server Error","type":"KeyError"')

    def test_a_plain_answer_is_compact_json_with_non_ascii_kept(self) -> None:
        with FakeHelix(reply=lambda m: "Grüße") as server:
            response = chat(server)
        assert '"content":"Grüße"' in response.content.decode()

    def test_the_stream_is_written_the_way_helix_writes_it(self) -> None:
        with FakeHelix(heartbeats=2, reply=lambda m: "Grüße aus Helix") as server:
            response = chat(server, stream=True)
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Transfer-Encoding"] == "chunked"
        data = events(response)
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert data[0] == json.dumps(chunks[0])  # Python's default separators
        assert "\\u00fc" in "".join(data)  # non-ASCII escaped
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert all(set(d) == {"role", "content"} for d in deltas)
        assert deltas[0] == {"role": "assistant", "content": FIRST_CHUNK}
        assert [d["role"] for d in deltas[1:]] == [None] * (len(deltas) - 1)
        assert deltas[-1] == {"role": None, "content": None}
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        text = "".join(d["content"] for d in deltas[:-1])
        assert text == f"{FIRST_CHUNK}..{SEPARATOR}Grüße aus Helix"
        assert len(deltas) > 5  # the answer arrives in several chunks

    def test_tool_markers_come_between_the_first_chunk_and_the_separator(self) -> None:
        with FakeHelix(tools=("Read", "Bash"), reply=lambda m: "ok") as server:
            contents = stream_contents(chat(server, stream=True))
        assert contents == [FIRST_CHUNK, "\n[Read] ", "\n[Bash] ", SEPARATOR, "ok"]

    def test_the_separator_waits_separator_delay_after_the_first_chunk(self) -> None:
        helix = FakeHelix(separator_delay=1.5, heartbeats=1, heartbeat_interval=0.5)
        planned = list(stream_events("helix-consultant", "a b", helix))
        contents = [event["choices"][0]["delta"]["content"] for _, event in planned[:-1]]
        pauses = [pause for pause, _ in planned]
        assert contents[:3] == [FIRST_CHUNK, ".", SEPARATOR]
        assert pauses[1:3] == [0.5, 1.5]  # the separator comes >= 1.5 s after the first chunk

    def test_without_chunked_encoding_the_stream_ends_by_closing(self) -> None:
        with FakeHelix(chunked=False) as server:
            response = chat(server, stream=True)
        assert "Transfer-Encoding" not in response.headers
        assert response.headers["Connection"] == "close"
        assert events(response)[-1] == "[DONE]"


class TestRecords:
    def test_every_request_is_recorded_with_method_path_headers_and_body(
        self, helix: FakeHelix
    ) -> None:
        requests.get(f"{helix.url}/health", timeout=5)
        chat(helix, headers={"X-OpenWebUI-Chat-Id": "c1"})
        health, completion = helix.requests
        assert (health.method, health.path, health.body) == ("GET", "/health", None)
        assert (completion.method, completion.path) == ("POST", "/v1/chat/completions")
        assert completion.body["messages"] == [{"role": "user", "content": "Hallo Helix"}]
        assert completion.header("x-openwebui-chat-id") == "c1"
        assert helix.chat_requests == [completion]
        assert helix.last_request == completion

    def test_parallel_requests_are_all_recorded(self, helix: FakeHelix) -> None:
        def one(index: int) -> str:
            return answer(chat(helix, headers={"X-OpenWebUI-Chat-Id": f"c{index}"}))

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(16)))
        assert len(replies) == 16
        assert len(helix.chat_requests) == 16
        assert sorted(helix.sessions) == sorted(f"conv-c{i}" for i in range(16))

    def test_reset_forgets_requests_sessions_and_faults(self, helix: FakeHelix) -> None:
        chat(helix, headers={"X-OpenWebUI-Chat-Id": "c1"})
        helix.fail_next(Fault.SERVER_ERROR)
        helix.reset()
        assert (helix.requests, helix.sessions) == ([], {})
        assert chat(helix).status_code == 200


def stream_contents(response: requests.Response) -> list[str | None]:
    """The ``content`` of every chunk of a stream, in order (``[DONE]`` left out)."""
    data = events(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(set(c["choices"][0]["delta"]) == {"role", "content"} for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {"role": None, "content": None},
        "finish_reason": "stop",
    }
    return [c["choices"][0]["delta"]["content"] for c in chunks[:-1]]


class TestHelixOwnFailures:
    """The forms of uke16/Helix b979a99 (``src/helix/api/routes/openai.py``), one by one."""

    def test_unavailable_is_one_chunk_in_a_stream(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.UNAVAILABLE)
        assert stream_contents(chat(helix, stream=True)) == [UNAVAILABLE_STREAM]

    def test_unavailable_is_a_longer_text_in_json(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.UNAVAILABLE)
        assert answer(chat(helix)) == UNAVAILABLE_JSON

    def test_an_error_before_the_first_chunk_is_an_empty_properly_closed_stream(
        self, helix: FakeHelix
    ) -> None:
        helix.fail_next(Fault.ERROR_BEFORE_FIRST_CHUNK)
        response = chat(helix, stream=True)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.content == b""

    def test_an_error_before_the_first_chunk_is_helix_500_without_a_stream(
        self, helix: FakeHelix
    ) -> None:
        helix.fail_next(Fault.ERROR_BEFORE_FIRST_CHUNK)
        response = chat(helix)
        assert response.status_code == 500
        assert response.json()["error"] == "Internal Server Error"

    def test_an_error_mid_stream_is_content_after_the_first_chunk(self) -> None:
        with FakeHelix(heartbeats=1, error_text="boom") as server:
            server.fail_next(Fault.ERROR_MID_STREAM)
            contents = stream_contents(chat(server, stream=True))
        assert contents == [FIRST_CHUNK, ".", "\n\n**Fehler:** boom"]

    def test_an_error_mid_stream_is_unerwarteter_fehler_in_json(self) -> None:
        with FakeHelix(error_text="boom") as server:
            server.fail_next(Fault.ERROR_MID_STREAM)
            assert answer(chat(server)) == "Unerwarteter Fehler: boom"

    @pytest.mark.parametrize("fault", [Fault.CLAUDE_CRASH, Fault.CLAUDE_ERROR_RESULT])
    def test_a_crash_streams_the_hint_and_then_verarbeitung_abgeschlossen(
        self, helix: FakeHelix, fault: Fault
    ) -> None:
        helix.fail_next(fault)
        contents = stream_contents(chat(helix, stream=True))
        assert contents == [
            FIRST_CHUNK,
            SEPARATOR,
            VALIDATION_HINT + "\n\n",
            SEPARATOR,
            "Verarbeitung ",
            "abgeschlossen.",
        ]

    @pytest.mark.parametrize(
        ("fault", "text"),
        [
            pytest.param(
                Fault.CLAUDE_CRASH,
                "Fehler bei der Verarbeitung:\n```\nsegfault\n```",
                id="claude-crash",
            ),
            pytest.param(Fault.CLAUDE_ERROR_RESULT, "Fehler: boom", id="claude-error-result"),
            pytest.param(
                Fault.TIMEOUT, "Timeout - die Verarbeitung hat zu lange gedauert.", id="timeout"
            ),
        ],
    )
    def test_json_failures_are_helix_texts(self, fault: Fault, text: str) -> None:
        with FakeHelix(error_text="boom", crash_stderr="segfault") as server:
            server.fail_next(fault)
            assert answer(chat(server)) == text

    def test_a_timeout_streams_its_notice_after_the_first_chunk(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.TIMEOUT)
        assert stream_contents(chat(helix, stream=True)) == [
            FIRST_CHUNK,
            "\n\n**Timeout** - Verarbeitung hat zu lange gedauert. Bitte versuche es erneut.",
        ]

    def test_an_unvalidated_answer_carries_the_hint_before_it_streamed_and_after_it_in_json(
        self,
    ) -> None:
        with FakeHelix(reply=lambda m: "Die Antwort") as server:
            server.fail_next(Fault.UNVALIDATED, times=2)
            contents = stream_contents(chat(server, stream=True))
            text = answer(chat(server))
        assert contents == [
            FIRST_CHUNK,
            SEPARATOR,
            VALIDATION_HINT + "\n\n",
            SEPARATOR,
            "Die ",
            "Antwort",
        ]
        assert text == f"Die Antwort{SEPARATOR}{VALIDATION_HINT}"

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream-request"])
    def test_a_server_error_is_the_compact_500_with_a_server_path_after_the_session_opened(
        self, helix: FakeHelix, stream: bool
    ) -> None:
        helix.fail_next(Fault.SERVER_ERROR)
        response = chat(helix, stream=stream, headers={"X-OpenWebUI-Chat-Id": "c1"})
        assert response.status_code == 500
        body = response.json()
        assert list(body) == ["error", "type", "message", "path", "timestamp"]
        assert "/projects/sessions/conv-c1/" in body["message"]
        assert "conv-c1" in helix.sessions


class TestFaults:
    def test_fail_next_applies_to_the_next_n_chat_requests_only(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.SERVER_ERROR, times=2)
        requests.get(f"{helix.url}/health", timeout=5)  # not a chat request: no fault used
        statuses = [chat(helix).status_code for _ in range(3)]
        assert statuses == [500, 500, 200]

    def test_a_fault_attribute_applies_until_it_is_reset(self, helix: FakeHelix) -> None:
        helix.fault = Fault.PROXY_UNAVAILABLE
        assert [chat(helix).status_code for _ in range(2)] == [503, 503]
        helix.fault = Fault.NONE
        assert chat(helix).status_code == 200

    @pytest.mark.parametrize(
        ("fault", "status", "content_type", "needle"),
        [
            pytest.param(Fault.PROXY_RATE_LIMITED, 429, "application/json", "Rate limit", id="429"),
            pytest.param(Fault.PROXY_BAD_GATEWAY, 502, "text/plain", "Bad Gateway", id="502"),
            pytest.param(Fault.PROXY_UNAVAILABLE, 503, "application/json", "detail", id="503"),
            pytest.param(Fault.PROXY_PLAIN_TEXT_ERROR, 500, "text/plain", "Internal", id="text"),
            pytest.param(Fault.PROXY_HTML_ERROR, 502, "text/html", "<h1>", id="html"),
        ],
    )
    def test_proxy_faults_answer_without_touching_sessions(
        self, helix: FakeHelix, fault: Fault, status: int, content_type: str, needle: str
    ) -> None:
        helix.fail_next(fault)
        response = chat(helix, headers={"X-OpenWebUI-Chat-Id": "c1"})
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith(content_type)
        assert needle in response.text
        assert helix.sessions == {}

    def test_rate_limiting_and_unavailability_send_retry_after(self) -> None:
        with FakeHelix(retry_after=2.5) as server:
            server.fail_next(Fault.PROXY_RATE_LIMITED)
            server.fail_next(Fault.PROXY_UNAVAILABLE)
            assert [chat(server).headers["Retry-After"] for _ in range(2)] == ["2.5", "2.5"]

    def test_json_to_stream_sends_a_whole_completion(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.JSON_TO_STREAM)
        assert answer(chat(helix, stream=True)).startswith("Helix reply #1")

    def test_no_done_ends_the_stream_without_the_final_chunk(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.NO_DONE)
        data = events(chat(helix, stream=True))
        assert "[DONE]" not in data
        assert json.loads(data[-1])["choices"][0]["finish_reason"] is None

    def test_malformed_chunk_sends_one_chunk_that_is_not_json(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.MALFORMED_CHUNK)
        broken = []
        for data in events(chat(helix, stream=True))[:-1]:
            try:
                json.loads(data)
            except ValueError:
                broken.append(data)
        assert len(broken) == 1

    def test_an_openai_compatible_error_chunk_comes_after_the_answers_first_word(
        self, helix: FakeHelix
    ) -> None:
        helix.fail_next(Fault.OPENAI_COMPATIBLE_ERROR_CHUNK)
        data = events(chat(helix, stream=True))
        contents = [json.loads(d)["choices"][0]["delta"]["content"] for d in data[:-1]]
        assert contents == [FIRST_CHUNK, SEPARATOR, "Helix "]
        assert json.loads(data[-1])["error"]["message"]

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_stall_mid_stream_pauses_after_the_answers_first_word(self, stream: bool) -> None:
        with FakeHelix(fault=Fault.STALL_MID_STREAM, fault_delay=0.3) as server:
            started = time.monotonic()
            response = chat(server, stream=stream)
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.3

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_drop_mid_stream_cuts_the_connection_mid_answer(
        self, helix: FakeHelix, stream: bool
    ) -> None:
        helix.fail_next(Fault.DROP_MID_STREAM)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            chat(helix, stream=stream)

    def test_disconnect_closes_without_any_answer(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.DISCONNECT)
        with pytest.raises(requests.ConnectionError):
            chat(helix)

    def test_slow_first_byte_delays_the_whole_answer(self) -> None:
        with FakeHelix(fault=Fault.SLOW_FIRST_BYTE, fault_delay=0.3) as server:
            started = time.monotonic()
            assert chat(server).status_code == 200
        assert time.monotonic() - started >= 0.3

    def test_a_proxy_in_front_can_require_an_api_key(self) -> None:
        with FakeHelix(proxy_api_key="right") as server:
            missing = requests.get(f"{server.url}/v1/models", timeout=5)
            wrong = requests.get(
                f"{server.url}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=5
            )
            right = requests.get(
                f"{server.url}/v1/models", headers={"Authorization": "Bearer right"}, timeout=5
            )
        assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
        assert "wrong" in wrong.json()["error"]["message"]  # echoed, as some servers do


def test_helix_session_is_a_plain_record() -> None:
    session = HelixSession("conv-x", "first", "x")
    assert (session.messages, session.turns) == ([], 0)


def test_the_module_runs_fake_helix_in_the_foreground() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "helix_pipeline.testing", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, "FakeHelix exited early"
                assert time.monotonic() < deadline, "FakeHelix did not start"
                time.sleep(0.05)
        assert health.json() == {"status": "healthy"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert b"GET /health" in stderr  # requests are logged


def test_hold_words_holds_the_stream_after_that_many_words_of_the_answer() -> None:
    hold = threading.Event()
    with (
        FakeHelix(hold=hold, hold_words=1) as server,
        requests.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            stream=True,
            timeout=(5, 2),  # the words before the hold must come at once
        ) as response,
    ):
        lines = (line for line in response.iter_lines() if line.startswith(b"data: {"))
        contents = [json.loads(next(lines)[6:])["choices"][0]["delta"]["content"]]
        contents += [json.loads(next(lines)[6:])["choices"][0]["delta"]["content"]]
        contents += [json.loads(next(lines)[6:])["choices"][0]["delta"]["content"]]
        assert server.streams_completed == 0  # held after the first word
        hold.set()
        rest = list(lines)
    assert contents == [FIRST_CHUNK, SEPARATOR, "Helix "]
    assert rest
