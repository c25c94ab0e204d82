"""HelixClient against mocked HTTP (responses): headers, forwarded fields, error mapping, retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests
import responses
import urllib3.exceptions
from responses import matchers

from helix_pipeline.client import HelixClient, build_payload, completion_text
from helix_pipeline.conversation import PRIVATE_KEY, header_safe
from helix_pipeline.errors import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    ConfigError,
)
from helix_pipeline.messages import Message

BASE = "http://helix.test:8001"
CHAT = f"{BASE}/v1/chat/completions"
SECRET = "sk-helix-very-secret-0123456789"
SSE = "text/event-stream; charset=utf-8"


def completion(text: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "helix-consultant",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


def sse_body(*deltas: str, done: bool = True) -> str:
    """A Helix stream: Python's default json.dumps, role and content on every delta, nulls at the end."""
    events = []
    for index, delta in enumerate([*deltas, None]):
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant" if index == 0 else None, "content": delta},
                    "finish_reason": None if delta is not None else "stop",
                }
            ],
        }
        events.append(f"data: {json.dumps(payload)}\n\n")
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events)


USER_TURN = [{"role": "user", "content": "Hallo"}]
PAYLOAD = {"model": "helix-consultant", "messages": USER_TURN}


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """A RequestsMock whose registered responses must all be used by the test."""
    with responses.RequestsMock() as rsps:
        yield rsps


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(sleeps: SleepRecorder) -> Iterator[HelixClient]:
    with HelixClient(BASE, sleep=sleeps) as opened:
        yield opened


class TestBaseUrl:
    @pytest.mark.parametrize(
        "base_url",
        [
            pytest.param(BASE, id="bare"),
            pytest.param(f"{BASE}/", id="trailing-slash"),
            pytest.param(f"{BASE}/v1", id="with-v1"),
            pytest.param(f"{BASE}/v1/", id="with-v1-and-slash"),
            pytest.param(f"  {BASE}/v1  ", id="surrounding-space"),
        ],
    )
    def test_every_form_of_the_base_url_reaches_the_same_endpoints(
        self, mock: responses.RequestsMock, base_url: str
    ) -> None:
        mock.get(f"{BASE}/v1/models", json={"object": "list", "data": [{"id": "helix-consultant"}]})
        mock.get(f"{BASE}/health", json={"status": "healthy"})
        with HelixClient(base_url) as client:
            assert client.models() == ["helix-consultant"]
            assert client.health() == {"status": "healthy"}

    def test_a_base_url_under_a_path_prefix_keeps_the_prefix(
        self, mock: responses.RequestsMock
    ) -> None:
        mock.get(f"{BASE}/helix/v1/models", json={"data": [{"id": "m"}]})
        with HelixClient(f"{BASE}/helix/v1/") as client:
            assert client.models() == ["m"]

    @pytest.mark.parametrize(
        "base_url",
        [
            pytest.param("", id="empty"),
            pytest.param("localhost:8001", id="no-scheme"),
            pytest.param("ftp://helix.test", id="wrong-scheme"),
            pytest.param("http://", id="no-host"),
        ],
    )
    def test_an_unusable_base_url_is_a_config_error_naming_the_valve(self, base_url: str) -> None:
        with pytest.raises(ConfigError, match="HELIX_BASE_URL") as caught:
            HelixClient(base_url)
        assert caught.value.setting == "HELIX_BASE_URL"

    def test_a_password_in_the_base_url_never_shows_in_errors_or_repr(self) -> None:
        with pytest.raises(ConfigError) as caught:
            HelixClient("ftp://user:hunter2@helix.test")
        assert "hunter2" not in str(caught.value)
        with HelixClient("http://user:hunter2@helix.test") as client:
            assert "hunter2" not in repr(client)

    @pytest.mark.parametrize(
        ("kwargs", "setting"),
        [
            pytest.param({"connect_timeout": 0}, "CONNECT_TIMEOUT_S", id="connect"),
            pytest.param({"read_timeout": -1}, "READ_TIMEOUT_S", id="read"),
        ],
    )
    def test_timeouts_must_be_positive(self, kwargs: dict[str, float], setting: str) -> None:
        with pytest.raises(ConfigError, match=setting):
            HelixClient(BASE, **kwargs)


class TestHeaders:
    def test_the_raw_conversation_id_goes_in_both_default_headers(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(
            CHAT,
            json=completion("ok"),
            match=[
                matchers.header_matcher(
                    {"X-OpenWebUI-Chat-Id": "abc_123", "X-Conversation-ID": "abc_123"}
                )
            ],
        )
        client.complete(PAYLOAD, conversation_id="abc_123")

    @pytest.mark.parametrize("conversation_id", [None, ""], ids=["none", "empty"])
    def test_no_conversation_id_sends_no_conversation_header(
        self, mock: responses.RequestsMock, client: HelixClient, conversation_id: str | None
    ) -> None:
        mock.post(CHAT, json=completion("ok"))
        client.complete(PAYLOAD, conversation_id=conversation_id)
        sent = mock.calls[0].request.headers
        assert "X-OpenWebUI-Chat-Id" not in sent
        assert "X-Conversation-ID" not in sent

    def test_an_id_that_is_not_latin1_is_sent_in_a_stable_ascii_form(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        raw = "chat-日本-✓"
        mock.post(CHAT, json=completion("ok"))
        mock.post(CHAT, json=completion("ok"))
        client.complete(PAYLOAD, conversation_id=raw)
        client.complete(PAYLOAD, conversation_id=raw)
        first, second = (c.request.headers["X-OpenWebUI-Chat-Id"] for c in mock.calls)
        assert first == second == header_safe(raw)
        assert first.isascii()

    def test_configured_header_names_replace_the_defaults(
        self, mock: responses.RequestsMock
    ) -> None:
        mock.post(CHAT, json=completion("ok"))
        with HelixClient(BASE, conversation_headers=["X-Conversation-ID"]) as client:
            client.complete(PAYLOAD, conversation_id="c1")
        sent = mock.calls[0].request.headers
        assert sent["X-Conversation-ID"] == "c1"
        assert "X-OpenWebUI-Chat-Id" not in sent

    def test_the_api_key_is_sent_as_a_bearer_token_when_set(
        self, mock: responses.RequestsMock
    ) -> None:
        bearer = matchers.header_matcher({"Authorization": f"Bearer {SECRET}"})
        mock.get(f"{BASE}/health", json={"status": "healthy"}, match=[bearer])
        with HelixClient(BASE, api_key=SECRET) as client:
            client.health()

    @pytest.mark.parametrize("api_key", [None, ""], ids=["none", "empty"])
    def test_no_authorization_header_without_a_key(
        self, mock: responses.RequestsMock, api_key: str | None
    ) -> None:
        mock.get(f"{BASE}/health", json={"status": "healthy"})
        with HelixClient(BASE, api_key=api_key) as client:
            client.health()
        assert "Authorization" not in mock.calls[0].request.headers

    def test_a_stream_request_asks_for_an_event_stream(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        accept = matchers.header_matcher({"Accept": "text/event-stream"})
        mock.post(CHAT, body=sse_body("a"), content_type=SSE, match=[accept])
        assert list(client.stream(PAYLOAD, conversation_id="c")) == ["a"]


class TestForwardedFields:
    OPEN_WEBUI_BODY: ClassVar[dict[str, Any]] = {
        "model": "helix.helix-consultant",
        "messages": [{"role": "user", "content": "ignored: the merged history is sent"}],
        "stream": True,
        "temperature": 0.3,
        "max_tokens": 500,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "tools": [{"type": "function"}],
        "tool_choice": "auto",
        "metadata": {"chat_id": "c1"},
        "features": {"web_search": False},
        "user": {"id": "u1"},
        PRIVATE_KEY: {"chat_id": "c1"},
        "_private": 1,
        "files": [],
    }

    def test_only_the_openai_fields_reach_helix(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        messages = [{"role": "user", "content": "Hallo", "id": "m1", "timestamp": 5}]
        expected = {
            "model": "helix.helix-consultant",
            "messages": [{"role": "user", "content": "Hallo"}],
            "stream": False,
            "temperature": 0.3,
            "max_tokens": 500,
            "top_p": 0.9,
            "stop": ["END"],
        }
        mock.post(CHAT, json=completion("ok"), match=[matchers.json_params_matcher(expected)])
        payload = client.build_payload(messages, self.OPEN_WEBUI_BODY, stream=False)
        client.complete(payload, conversation_id="c1")

    def test_configured_extra_fields_are_forwarded_too(self, mock: responses.RequestsMock) -> None:
        expected = {
            "model": "helix-consultant",
            "messages": USER_TURN,
            "stream": True,
            "seed": 7,
        }
        mock.post(
            CHAT,
            body=sse_body("ok"),
            content_type=SSE,
            match=[matchers.json_params_matcher(expected)],
        )
        with HelixClient(BASE, extra_fields=["seed", "absent_field"]) as client:
            payload = client.build_payload(USER_TURN, {"seed": 7}, stream=True)
            assert list(client.stream(payload, conversation_id=None)) == ["ok"]

    def test_unset_and_null_fields_are_left_out(self) -> None:
        body = {"temperature": None, "stop": None}
        assert build_payload(USER_TURN, body, stream=True) == {
            "model": "helix-consultant",
            "messages": USER_TURN,
            "stream": True,
        }

    def test_message_objects_go_out_as_their_dicts_would(self) -> None:
        messages = [Message("system", "be brief"), Message("user", "hi", "m1", True, 1.0)]
        payload = build_payload(messages, {"temperature": 0.1}, stream=False)
        assert payload == build_payload(
            [{**m.to_wire(), "id": m.message_id} for m in messages],
            {"temperature": 0.1},
            stream=False,
        )
        assert payload["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]

    def test_an_explicit_model_wins_over_the_body_model(self) -> None:
        payload = build_payload(USER_TURN, {"model": "helix.x"}, stream=False, model="x")
        assert payload["model"] == "x"

    @pytest.mark.parametrize(
        "name", ["tools", "metadata", "features", "user", PRIVATE_KEY, "_secret", "messages"]
    )
    def test_extra_fields_cannot_smuggle_in_open_webui_or_private_keys(self, name: str) -> None:
        with pytest.raises(ConfigError, match=name):
            HelixClient(BASE, extra_fields=[name])
        with pytest.raises(ConfigError, match=name):
            build_payload(USER_TURN, {name: 1}, stream=False, extra_fields=[name])

    def test_complete_and_stream_set_the_stream_flag_themselves(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(
            CHAT,
            json=completion("ok"),
            match=[matchers.json_params_matcher({"stream": False}, strict_match=False)],
        )
        mock.post(
            CHAT,
            body=sse_body("ok"),
            content_type=SSE,
            match=[matchers.json_params_matcher({"stream": True}, strict_match=False)],
        )
        client.complete({**PAYLOAD, "stream": True}, conversation_id=None)
        list(client.stream({**PAYLOAD, "stream": False}, conversation_id=None))


class TestComplete:
    def test_returns_the_completion_and_its_text(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, json=completion("Antwort <!-- STEP: what -->"))
        result = client.complete(PAYLOAD, conversation_id="c")
        assert completion_text(result) == "Antwort <!-- STEP: what -->"

    def test_null_content_is_an_empty_text(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, json=completion(None))
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == ""

    @pytest.mark.parametrize(
        "text",
        [
            "Fehler: No user message found",
            "Fehler bei der Verarbeitung:\n```\nboom\n```",
            "Unerwarteter Fehler: boom",
            "Claude Code ist nicht verfuegbar. Bitte spaeter versuchen.",
        ],
    )
    def test_helix_failure_texts_are_returned_for_the_answer_reader_to_judge(
        self, mock: responses.RequestsMock, client: HelixClient, text: str
    ) -> None:
        mock.post(CHAT, json=completion(text))
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == text

    @pytest.mark.parametrize(
        "text", ["Fehlerbehandlung: so geht's", "Der Fehler: liegt hier", "Fehler"]
    )
    def test_answers_that_merely_mention_fehler_are_answers(
        self, mock: responses.RequestsMock, client: HelixClient, text: str
    ) -> None:
        mock.post(CHAT, json=completion(text))
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == text

    def test_an_error_object_with_status_200_raises(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, json={"error": {"message": "model overloaded"}})
        with pytest.raises(BackendError, match="model overloaded"):
            client.complete(PAYLOAD, conversation_id="c")

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [
            pytest.param("<html>login page</html>", "text/html", id="html"),
            pytest.param('{"no": "choices"}', "application/json", id="json-without-choices"),
            pytest.param("[1, 2]", "application/json", id="json-list"),
        ],
    )
    def test_an_answer_that_is_no_completion_is_a_protocol_error(
        self, mock: responses.RequestsMock, client: HelixClient, body: str, content_type: str
    ) -> None:
        mock.post(CHAT, body=body, content_type=content_type)
        with pytest.raises(BackendProtocolError, match=r"HELIX_BASE_URL|JSON object"):
            client.complete(PAYLOAD, conversation_id="c")

    def test_an_event_stream_sent_to_a_plain_request_is_assembled(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, body=sse_body("Hal", "lo"), content_type=SSE)
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == "Hallo"


class TestStream:
    def test_yields_each_delta_helix_sends_including_its_status_and_heartbeats(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        deltas = ["[Starte Claude Code...]\n\n", ".", "\n\n---\n\n", "Hallo ", "Welt"]
        mock.post(CHAT, body=sse_body(*deltas), content_type=SSE)
        assert list(client.stream(PAYLOAD, conversation_id="c")) == deltas

    def test_a_plain_json_completion_to_a_stream_request_is_yielded_once(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, json=completion("whole answer"))
        assert list(client.stream(PAYLOAD, conversation_id="c")) == ["whole answer"]

    def test_a_plain_json_fehler_to_a_stream_request_is_yielded_as_text(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        mock.post(CHAT, json=completion("Fehler: No messages provided"))
        assert list(client.stream(PAYLOAD, conversation_id="c")) == ["Fehler: No messages provided"]

    def test_helix_failure_text_in_a_stream_is_yielded_as_it_came(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        deltas = ["[Starte Claude Code...]\n\n", "\n\n**Fehler:** timeout"]
        mock.post(CHAT, body=sse_body(*deltas), content_type=SSE)
        assert list(client.stream(PAYLOAD, conversation_id="c")) == deltas

    def test_an_error_object_in_the_stream_raises_after_the_content_before_it(
        self, mock: responses.RequestsMock, client: HelixClient
    ) -> None:
        body = sse_body("a", done=False) + 'data: {"error": {"message": "crashed"}}\n\n'
        mock.post(CHAT, body=body, content_type=SSE)
        received: list[str] = []
        with pytest.raises(BackendError, match="crashed"):
            received.extend(client.stream(PAYLOAD, conversation_id="c"))
        assert received == ["a"]

    def test_no_request_is_sent_until_iteration_starts(self, client: HelixClient) -> None:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.post(CHAT, body=sse_body("a"), content_type=SSE)
            client.stream(PAYLOAD, conversation_id="c")
            assert len(rsps.calls) == 0


ERROR_CASES = [
    pytest.param(
        400,
        {"detail": "Too many messages: 120. Maximum allowed: 100"},
        "Helix rejected the request: Too many messages: 120. Maximum allowed: 100",
        BackendError,
        id="400-detail",
    ),
    pytest.param(
        422,
        {
            "detail": [
                {
                    "type": "string_type",
                    "loc": ["body", "messages", 2, "content"],
                    "msg": "Input should be a valid string",
                    "input": [{"type": "text", "text": "x"}],
                }
            ]
        },
        "Helix rejected the request: messages.2.content: Input should be a valid string",
        BackendError,
        id="422-detail-list",
    ),
    pytest.param(
        500,
        {"error": "Internal server error", "type": "RuntimeError", "message": "Claude crashed"},
        "Helix failed (HTTP 500): RuntimeError: Claude crashed",
        BackendError,
        id="500-helix-flat",
    ),
    pytest.param(
        500,
        {"error": {"message": "The server had an error", "type": "server_error"}},
        "Helix failed (HTTP 500): The server had an error",
        BackendError,
        id="500-openai",
    ),
    pytest.param(
        500,
        "upstream   exploded\n",
        "Helix failed (HTTP 500): upstream exploded",
        BackendError,
        id="500-plain-text",
    ),
    pytest.param(
        500, "", "Helix failed (HTTP 500): Internal Server Error", BackendError, id="500-empty"
    ),
    pytest.param(
        503,
        {"detail": "restarting"},
        "Helix failed (HTTP 503): restarting",
        BackendUnavailable,
        id="503",
    ),
    pytest.param(
        401,
        {"detail": "Not authenticated"},
        "Check the HELIX_API_KEY valve",
        BackendError,
        id="401",
    ),
    pytest.param(403, "Forbidden", "Check the HELIX_API_KEY valve", BackendError, id="403"),
    pytest.param(
        404, {"detail": "Not Found"}, "Check the HELIX_BASE_URL valve", BackendError, id="404"
    ),
    pytest.param(
        429,
        {"error": "Rate limit exceeded: 10 per 1 minute"},
        "rate limiting requests (HTTP 429): Rate limit exceeded: 10 per 1 minute",
        BackendError,
        id="429",
    ),
]


class TestErrorMapping:
    @pytest.mark.parametrize(("status", "body", "message", "kind"), ERROR_CASES)
    @pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
    def test_error_answers_become_short_readable_errors(
        self,
        mock: responses.RequestsMock,
        status: int,
        body: object,
        message: str,
        kind: type[BackendError],
        streaming: bool,
    ) -> None:
        if isinstance(body, str):
            mock.post(CHAT, body=body, status=status, content_type="text/plain")
        else:
            mock.post(CHAT, json=body, status=status)
        with HelixClient(BASE, max_retries=0) as client, pytest.raises(kind) as caught:
            if streaming:
                list(client.stream(PAYLOAD, conversation_id="c"))
            else:
                client.complete(PAYLOAD, conversation_id="c")
        assert message in str(caught.value)
        assert type(caught.value) is kind
        assert caught.value.status_code == status

    def test_an_html_error_page_is_stripped_of_tags_and_cut_short(
        self, mock: responses.RequestsMock
    ) -> None:
        page = (
            "<html><head><title>502 Bad Gateway</title><style>body{}</style></head><body>"
            "<script>var x = 1;</script><h1>502 Bad Gateway</h1><p>"
            + "nginx &amp; friends " * 100
            + "</p></body></html>"
        )
        mock.post(CHAT, body=page, status=502, content_type="text/html")
        with HelixClient(BASE, max_retries=0) as client, pytest.raises(BackendUnavailable) as c:
            client.complete(PAYLOAD, conversation_id="c")
        text = str(c.value)
        assert text.startswith("Helix failed (HTTP 502): 502 Bad Gateway nginx & friends")
        assert "<" not in text and "var x" not in text and "body{}" not in text
        assert len(text) < 400

    def test_connection_refused_says_how_to_fix_it(self, mock: responses.RequestsMock) -> None:
        refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
        mock.get(
            "http://127.0.0.1:8001/health",
            body=requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", refused)),  # type: ignore[arg-type]
        )
        client = HelixClient("http://127.0.0.1:8001", max_retries=0)
        with client, pytest.raises(BackendUnavailable) as caught:
            client.health()
        assert str(caught.value) == (
            "Helix at http://127.0.0.1:8001 refused the connection: is it running? "
            "Check the HELIX_BASE_URL valve."
        )
        assert isinstance(caught.value.__cause__, requests.ConnectionError)

    @pytest.mark.parametrize(
        ("failure", "kind", "names"),
        [
            pytest.param(
                requests.ConnectTimeout("connect timed out"),
                BackendUnavailable,
                "CONNECT_TIMEOUT_S",
                id="connect-timeout",
            ),
            pytest.param(
                requests.ReadTimeout("read timed out"),
                BackendUnavailable,
                "READ_TIMEOUT_S",
                id="read-timeout-before-any-byte",
            ),
            pytest.param(
                requests.exceptions.SSLError("wrong version number"),
                BackendUnavailable,
                "http:// versus https://",
                id="tls",
            ),
            pytest.param(
                requests.exceptions.ChunkedEncodingError("Connection broken"),
                BackendProtocolError,
                "in the middle of its answer",
                id="body-cut-short",
            ),
            pytest.param(
                requests.ConnectionError("Connection aborted: RemoteDisconnected"),
                BackendUnavailable,
                "dropped the connection before answering",
                id="disconnected",
            ),
        ],
    )
    def test_transport_failures_become_backend_errors_that_name_the_valve(
        self,
        mock: responses.RequestsMock,
        failure: Exception,
        kind: type[BackendError],
        names: str,
    ) -> None:
        mock.post(CHAT, body=failure)
        with HelixClient(BASE, max_retries=0) as client, pytest.raises(kind, match=names) as c:
            client.complete(PAYLOAD, conversation_id="c")
        assert c.value.__cause__ is failure

    def test_the_api_key_never_appears_in_errors_or_logs(
        self, mock: responses.RequestsMock, caplog: pytest.LogCaptureFixture
    ) -> None:
        echoed = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
        mock.post(CHAT, status=503, json={"detail": f"no capacity for {SECRET}"})
        mock.post(CHAT, status=401, json=echoed)
        sleeps = SleepRecorder()
        client = HelixClient(BASE, api_key=SECRET, sleep=sleeps)
        with caplog.at_level(logging.DEBUG), client, pytest.raises(BackendError) as caught:
            client.complete(PAYLOAD, conversation_id="c")
        assert "HELIX_API_KEY" in str(caught.value)
        assert "Incorrect API key provided: ***" in str(caught.value)
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(caught.value.args)
        assert caplog.records, "the retry must have been logged"
        assert SECRET not in caplog.text


class TestRetries:
    def test_a_503_is_retried_and_the_answer_returned(
        self, mock: responses.RequestsMock, client: HelixClient, sleeps: SleepRecorder
    ) -> None:
        mock.post(CHAT, status=503, json={"detail": "busy"})
        mock.post(CHAT, json=completion("finally"))
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == "finally"
        assert sleeps.calls == [0.2]

    def test_a_stream_is_retried_before_it_begins(
        self, mock: responses.RequestsMock, client: HelixClient, sleeps: SleepRecorder
    ) -> None:
        mock.post(CHAT, status=502, body="Bad Gateway")
        mock.post(CHAT, body=sse_body("ok"), content_type=SSE)
        assert list(client.stream(PAYLOAD, conversation_id="c")) == ["ok"]
        assert len(sleeps.calls) == 1

    @pytest.mark.parametrize(
        ("retry_after", "slept"),
        [
            pytest.param("7", 7.0, id="seconds"),
            pytest.param("0.5", 0.5, id="fraction"),
            pytest.param("120", 30.0, id="capped"),
            pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="http-date-in-the-past"),
            pytest.param("soon", 0.2, id="unreadable-falls-back-to-backoff"),
        ],
    )
    def test_retry_after_is_honoured_through_the_injected_sleep(
        self,
        mock: responses.RequestsMock,
        client: HelixClient,
        sleeps: SleepRecorder,
        retry_after: str,
        slept: float,
    ) -> None:
        mock.post(
            CHAT, status=429, json={"error": "slow down"}, headers={"Retry-After": retry_after}
        )
        mock.post(CHAT, json=completion("ok"))
        client.complete(PAYLOAD, conversation_id="c")
        assert sleeps.calls == [slept]

    @pytest.mark.parametrize("status", [400, 401, 404, 422, 500])
    def test_errors_that_a_retry_cannot_fix_are_not_retried(
        self, mock: responses.RequestsMock, client: HelixClient, sleeps: SleepRecorder, status: int
    ) -> None:
        mock.post(CHAT, status=status, json={"detail": "no"})
        with pytest.raises(BackendError):
            client.complete(PAYLOAD, conversation_id="c")
        assert len(mock.calls) == 1
        assert sleeps.calls == []

    def test_a_connection_error_is_retried(
        self, mock: responses.RequestsMock, client: HelixClient, sleeps: SleepRecorder
    ) -> None:
        mock.post(CHAT, body=requests.ConnectionError("refused"))
        mock.post(CHAT, json=completion("ok"))
        assert completion_text(client.complete(PAYLOAD, conversation_id="c")) == "ok"
        assert sleeps.calls == [0.2]

    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(requests.ReadTimeout("slow"), id="read-timeout"),
            pytest.param(requests.exceptions.SSLError("tls"), id="tls"),
        ],
    )
    def test_read_timeouts_and_tls_errors_are_not_retried(
        self,
        mock: responses.RequestsMock,
        client: HelixClient,
        sleeps: SleepRecorder,
        failure: Exception,
    ) -> None:
        mock.post(CHAT, body=failure)
        with pytest.raises(BackendUnavailable):
            client.complete(PAYLOAD, conversation_id="c")
        assert len(mock.calls) == 1

    def test_retries_stop_after_max_retries_with_growing_backoff(
        self, mock: responses.RequestsMock, client: HelixClient, sleeps: SleepRecorder
    ) -> None:
        mock.post(CHAT, status=503, json={"detail": "still busy"})
        with pytest.raises(BackendUnavailable, match="still busy") as caught:
            client.complete(PAYLOAD, conversation_id="c")
        assert len(mock.calls) == 3
        assert sleeps.calls == [0.2, 0.4]
        assert caught.value.status_code == 503

    def test_the_backoff_is_capped(self, mock: responses.RequestsMock) -> None:
        mock.post(CHAT, status=504, body="")
        sleeps = SleepRecorder()
        client = HelixClient(BASE, max_retries=5, sleep=sleeps, backoff_max=1.0)
        with client, pytest.raises(BackendUnavailable):
            client.complete(PAYLOAD, conversation_id="c")
        assert sleeps.calls == [0.2, 0.4, 0.8, 1.0, 1.0]

    def test_max_retries_zero_sends_once(self, mock: responses.RequestsMock) -> None:
        mock.post(CHAT, status=503, body="")
        with HelixClient(BASE, max_retries=0) as client, pytest.raises(BackendUnavailable):
            client.complete(PAYLOAD, conversation_id="c")
        assert len(mock.calls) == 1


class TestLifecycle:
    def test_closing_closes_the_clients_own_session_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        closed: list[requests.Session] = []

        def record_close(session: requests.Session) -> None:
            closed.append(session)

        monkeypatch.setattr(requests.Session, "close", record_close)
        own = HelixClient(BASE)
        with own:
            pass
        assert closed == [own._session]
        borrowed = requests.Session()
        HelixClient(BASE, session=borrowed).close()
        assert closed == [own._session]

    def test_a_session_passed_in_is_the_one_used(self, mock: responses.RequestsMock) -> None:
        session = requests.Session()
        session.headers["X-Trace"] = "t1"
        trace = matchers.header_matcher({"X-Trace": "t1"})
        mock.get(f"{BASE}/health", json={"status": "healthy"}, match=[trace])
        with session, HelixClient(BASE, session=session) as client:
            assert client.health() == {"status": "healthy"}

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [
            pytest.param('{"data": "nope"}', "application/json", id="data-not-a-list"),
            pytest.param("ok", "text/plain", id="not-json"),
        ],
    )
    def test_a_models_answer_of_the_wrong_shape_is_a_protocol_error(
        self, mock: responses.RequestsMock, client: HelixClient, body: str, content_type: str
    ) -> None:
        mock.get(f"{BASE}/v1/models", body=body, content_type=content_type)
        with pytest.raises(BackendProtocolError):
            client.models()
