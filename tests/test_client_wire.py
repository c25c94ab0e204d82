"""HelixClient over real HTTP against FakeHelix: streaming, timeouts, retries and every fault."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from helix_pipeline.client import HelixClient, completion_text
from helix_pipeline.conversation import header_safe, helix_session_id
from helix_pipeline.errors import BackendError, BackendProtocolError, BackendUnavailable
from helix_pipeline.testing import FIRST_CHUNK, SEPARATOR, FakeHelix, Fault

PAYLOAD = {"model": "helix-consultant", "messages": [{"role": "user", "content": "Hallo Helix"}]}
REPLY = "Helix reply #1 to: Hallo Helix\n\n<!-- STEP: what -->"


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(helix: FakeHelix, sleeps: SleepRecorder) -> Iterator[HelixClient]:
    with HelixClient(helix.url, sleep=sleeps, read_timeout=5) as opened:
        yield opened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full, so a new connection attempt just waits (times out)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


class TestStreaming:
    def test_the_first_chunk_reaches_the_caller_before_helix_sent_the_last(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        helix.hold = threading.Event()
        deltas = client.stream(PAYLOAD, conversation_id="c1")
        try:
            assert next(deltas) == FIRST_CHUNK
            assert helix.streams_completed == 0
        finally:
            helix.hold.set()
        assert "".join(deltas) == SEPARATOR + REPLY
        assert helix.streams_completed == 1

    def test_a_stream_without_chunked_encoding_is_not_buffered_either(self) -> None:
        hold = threading.Event()
        with FakeHelix(chunked=False, hold=hold) as server, HelixClient(server.url) as client:
            deltas = client.stream(PAYLOAD, conversation_id="c1")
            try:
                assert next(deltas) == FIRST_CHUNK
                assert server.streams_completed == 0
            finally:
                hold.set()
            assert "".join(deltas) == SEPARATOR + REPLY

    def test_heartbeats_and_the_status_chunk_pass_through_as_helix_sent_them(self) -> None:
        with FakeHelix(heartbeats=3) as server, HelixClient(server.url) as client:
            text = "".join(client.stream(PAYLOAD, conversation_id="c1"))
        assert text == f"{FIRST_CHUNK}...{SEPARATOR}{REPLY}"

    def test_closing_the_stream_early_leaves_the_client_usable(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        deltas = client.stream(PAYLOAD, conversation_id="c1")
        assert next(deltas) == FIRST_CHUNK
        deltas.close()
        assert completion_text(client.complete(PAYLOAD, conversation_id="c1")).startswith(
            "Helix reply #2"
        )

    def test_models_health_and_completion_over_the_wire(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        assert client.models() == ["helix-consultant"]
        assert client.health() == {"status": "healthy"}
        assert completion_text(client.complete(PAYLOAD, conversation_id="c1")) == REPLY

    def test_a_chat_id_that_is_not_latin1_reaches_helix_as_one_stable_session(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        raw = "chät-✓-42"
        client.complete(PAYLOAD, conversation_id=raw)
        list(client.stream(PAYLOAD, conversation_id=raw))
        assert list(helix.sessions) == [helix_session_id(header_safe(raw))]

    def test_no_conversation_id_means_no_header_and_a_fresh_session(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        client.complete(PAYLOAD, conversation_id=None)
        client.complete(PAYLOAD, conversation_id=None)
        assert helix.last_request.header("X-OpenWebUI-Chat-Id") is None
        assert len(helix.sessions) == 2

    def test_eight_threads_share_one_client(self, helix: FakeHelix, client: HelixClient) -> None:
        def turn(index: int) -> str:
            payload = {"messages": [{"role": "user", "content": f"Frage {index}"}]}
            if index % 2:
                return "".join(client.stream(payload, conversation_id=f"chat-{index}"))
            return completion_text(client.complete(payload, conversation_id=f"chat-{index}"))

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(turn, range(32)))
        for index, reply in enumerate(replies):
            assert reply.endswith(f"Helix reply #1 to: Frage {index}\n\n<!-- STEP: what -->")
        sessions = helix.sessions
        assert len(sessions) == 32
        assert sessions["conv-chat-7"].messages == [{"role": "user", "content": "Frage 7"}]


class TestTimeouts:
    def test_a_connection_that_is_never_accepted_times_out_naming_the_valve(
        self, unanswered_port: int
    ) -> None:
        base = f"http://127.0.0.1:{unanswered_port}"
        client = HelixClient(base, connect_timeout=0.2, max_retries=0)
        started = time.monotonic()
        with client, pytest.raises(BackendUnavailable, match="CONNECT_TIMEOUT_S"):
            client.health()
        assert time.monotonic() - started < 2

    def test_connect_timeouts_are_retried(self, unanswered_port: int) -> None:
        sleeps = SleepRecorder()
        client = HelixClient(
            f"http://127.0.0.1:{unanswered_port}", connect_timeout=0.1, sleep=sleeps
        )
        with client, pytest.raises(BackendUnavailable, match="CONNECT_TIMEOUT_S"):
            client.complete(PAYLOAD, conversation_id="c1")
        assert sleeps.calls == [0.2, 0.4]

    @pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
    def test_silence_before_any_byte_is_a_read_timeout_and_is_not_retried(
        self, helix: FakeHelix, sleeps: SleepRecorder, streaming: bool
    ) -> None:
        helix.fault, helix.fault_delay = Fault.SLOW_FIRST_BYTE, 1.0
        client = HelixClient(helix.url, read_timeout=0.2, completion_timeout=0.1, sleep=sleeps)
        with client, pytest.raises(BackendUnavailable, match=r"nothing for 0\.2 s.*READ_TIMEOUT_S"):
            if streaming:
                list(client.stream(PAYLOAD, conversation_id="c1"))
            else:
                client.complete(PAYLOAD, conversation_id="c1")
        assert len(helix.chat_requests) == 1
        assert sleeps.calls == []

    def test_silence_after_the_answer_began_keeps_what_arrived(self, helix: FakeHelix) -> None:
        helix.fault, helix.fault_delay = Fault.STALL_MID_STREAM, 1.0
        received: list[str] = []
        client = HelixClient(helix.url, read_timeout=0.2)
        with client, pytest.raises(BackendProtocolError, match="READ_TIMEOUT_S") as caught:
            received.extend(client.stream(PAYLOAD, conversation_id="c1"))
        assert received == [FIRST_CHUNK, SEPARATOR, "Helix "]
        assert "incomplete" in str(caught.value)
        assert len(helix.chat_requests) == 1

    def test_a_completion_timeout_lets_a_plain_completion_outlast_the_idle_timeout(
        self, helix: FakeHelix
    ) -> None:
        helix.fault_delay = 0.3
        with HelixClient(helix.url, read_timeout=0.1, max_retries=0) as client:
            helix.fail_next(Fault.SLOW_FIRST_BYTE)
            with pytest.raises(BackendUnavailable, match=r"nothing for 0\.1 s"):
                client.complete(PAYLOAD, conversation_id="c1")
        with HelixClient(helix.url, read_timeout=0.1, completion_timeout=2) as client:
            helix.fail_next(Fault.SLOW_FIRST_BYTE)
            reply = completion_text(client.complete(PAYLOAD, conversation_id="c1"))
            assert reply.startswith("Helix reply #")
            helix.fail_next(Fault.SLOW_FIRST_BYTE)
            with pytest.raises(BackendUnavailable, match=r"nothing for 0\.1 s"):
                list(client.stream(PAYLOAD, conversation_id="c1"))

    def test_a_non_streaming_answer_past_its_whole_answer_timeout_names_that_valve(
        self, helix: FakeHelix
    ) -> None:
        helix.fault, helix.fault_delay = Fault.SLOW_FIRST_BYTE, 1.0
        with (
            HelixClient(
                helix.url, read_timeout=0.1, completion_timeout=0.3, max_retries=0
            ) as client,
            pytest.raises(BackendUnavailable, match=r"nothing for 0\.3 s.*ANSWER_TIMEOUT_S"),
        ):
            client.complete(PAYLOAD, conversation_id="c1")

    def test_a_slow_start_within_the_read_timeout_is_fine(self, helix: FakeHelix) -> None:
        helix.fail_next(Fault.SLOW_FIRST_BYTE)
        helix.fault_delay = 0.2
        with HelixClient(helix.url, read_timeout=2) as client:
            assert "".join(client.stream(PAYLOAD, conversation_id="c1")).endswith(REPLY)


class TestRetries:
    def test_a_refused_connection_is_retried_then_reported(self) -> None:
        sleeps = SleepRecorder()
        base = f"http://127.0.0.1:{free_port()}"
        with HelixClient(base, sleep=sleeps) as client, pytest.raises(BackendUnavailable) as c:
            client.models()
        assert str(c.value) == (
            f"Helix at {base} refused the connection: is it running? "
            "Check the HELIX_BASE_URL valve."
        )
        assert sleeps.calls == [0.2, 0.4]

    def test_a_dropped_connection_before_any_answer_is_retried(
        self, helix: FakeHelix, client: HelixClient, sleeps: SleepRecorder
    ) -> None:
        helix.fail_next(Fault.DISCONNECT)
        assert "".join(client.stream(PAYLOAD, conversation_id="c1")).endswith(REPLY)
        assert len(helix.chat_requests) == 2
        assert len(sleeps.calls) == 1

    @pytest.mark.parametrize(
        "fault",
        [
            Fault.PROXY_UNAVAILABLE,
            Fault.PROXY_RATE_LIMITED,
            Fault.PROXY_BAD_GATEWAY,
            Fault.PROXY_HTML_ERROR,
        ],
    )
    def test_passing_failures_are_retried_honouring_retry_after(
        self, helix: FakeHelix, client: HelixClient, sleeps: SleepRecorder, fault: Fault
    ) -> None:
        helix.retry_after = 0.05
        helix.fail_next(fault, times=2)
        assert completion_text(client.complete(PAYLOAD, conversation_id="c1")) == REPLY
        assert len(helix.chat_requests) == 3
        with_header = fault in (Fault.PROXY_UNAVAILABLE, Fault.PROXY_RATE_LIMITED)
        assert sleeps.calls == ([0.05, 0.05] if with_header else [0.2, 0.4])

    def test_retries_give_up_after_max_retries(self, helix: FakeHelix, client: HelixClient) -> None:
        helix.fault, helix.retry_after = Fault.PROXY_RATE_LIMITED, 0
        with pytest.raises(BackendError, match="HTTP 429") as caught:
            client.complete(PAYLOAD, conversation_id="c1")
        assert caught.value.status_code == 429
        assert len(helix.chat_requests) == 3

    @pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
    def test_nothing_is_retried_once_the_answer_began(
        self, helix: FakeHelix, client: HelixClient, sleeps: SleepRecorder, streaming: bool
    ) -> None:
        helix.fail_next(Fault.DROP_MID_STREAM)
        received: list[str] = []
        with pytest.raises(BackendProtocolError, match="closed the connection in the middle"):
            if streaming:
                received.extend(client.stream(PAYLOAD, conversation_id="c1"))
            else:
                client.complete(PAYLOAD, conversation_id="c1")
        assert len(helix.chat_requests) == 1
        assert sleeps.calls == []
        if streaming:
            assert received[:2] == [FIRST_CHUNK, SEPARATOR]


class TestFaults:
    @pytest.mark.parametrize(
        ("fault", "kind", "message"),
        [
            pytest.param(
                Fault.SERVER_ERROR,
                BackendError,
                "Helix failed (HTTP 500): PermissionError: [Errno 13] Permission denied: "
                "'/home/helix/helix-v4/projects/sessions/conv-c1/CLAUDE.md'",
                id="500-helix",
            ),
            pytest.param(
                Fault.PROXY_PLAIN_TEXT_ERROR,
                BackendError,
                "Helix failed (HTTP 500): Internal Server Error",
                id="plain-text",
            ),
            pytest.param(
                Fault.PROXY_HTML_ERROR,
                BackendUnavailable,
                "Helix failed (HTTP 502): 502 Bad Gateway nginx",
                id="html",
            ),
            pytest.param(
                Fault.PROXY_BAD_GATEWAY,
                BackendUnavailable,
                "Helix failed (HTTP 502): Bad Gateway",
                id="502",
            ),
        ],
    )
    @pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
    def test_error_answers_raise_readable_errors(
        self,
        helix: FakeHelix,
        fault: Fault,
        kind: type[BackendError],
        message: str,
        streaming: bool,
    ) -> None:
        helix.fault = fault
        with HelixClient(helix.url, max_retries=0) as client, pytest.raises(kind) as caught:
            if streaming:
                list(client.stream(PAYLOAD, conversation_id="c1"))
            else:
                client.complete(PAYLOAD, conversation_id="c1")
        assert str(caught.value) == message
        assert type(caught.value) is kind

    def test_a_stream_without_done_keeps_the_whole_answer(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        helix.fail_next(Fault.NO_DONE)
        assert "".join(client.stream(PAYLOAD, conversation_id="c1")).endswith(REPLY)

    def test_a_malformed_chunk_is_skipped_with_a_warning(
        self, helix: FakeHelix, client: HelixClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        helix.fail_next(Fault.MALFORMED_CHUNK)
        with caplog.at_level(logging.WARNING, logger="helix_pipeline.sse"):
            text = "".join(client.stream(PAYLOAD, conversation_id="c1"))
        assert text == FIRST_CHUNK + SEPARATOR + REPLY
        assert "malformed chunk" in caplog.text

    def test_an_error_object_in_the_stream_raises_after_what_came_before_it(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        helix.fail_next(Fault.OPENAI_COMPATIBLE_ERROR_CHUNK)
        received: list[str] = []
        with pytest.raises(BackendError, match="Claude Code crashed"):
            received.extend(client.stream(PAYLOAD, conversation_id="c1"))
        assert received == [FIRST_CHUNK, SEPARATOR, "Helix "]

    def test_a_json_reply_to_a_stream_request_is_yielded_once(
        self, helix: FakeHelix, client: HelixClient
    ) -> None:
        helix.fail_next(Fault.JSON_TO_STREAM)
        assert list(client.stream(PAYLOAD, conversation_id="c1")) == [REPLY]

    def test_a_required_api_key_is_sent_and_a_wrong_one_never_shown(self) -> None:
        with FakeHelix(proxy_api_key="sk-right-key") as server:
            with HelixClient(server.url, api_key="sk-right-key") as client:
                assert client.models() == ["helix-consultant"]
            wrong = HelixClient(server.url, api_key="sk-wrong-key-123")
            with wrong, pytest.raises(BackendError) as caught:
                list(wrong.stream(PAYLOAD, conversation_id="c1"))
            without = HelixClient(server.url)
            with without, pytest.raises(BackendError, match="HELIX_API_KEY") as missing:
                without.complete(PAYLOAD, conversation_id="c1")
        assert caught.value.status_code == missing.value.status_code == 401
        assert "HELIX_API_KEY" in str(caught.value)
        assert "sk-wrong-key-123" not in str(caught.value)
