"""``helix-pipeline demo`` end to end against a real FakeHelix, and the Open WebUI bodies it plays."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from helix_pipeline.cli import main
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.demo import DEMO_TURNS, RecordingRelay
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix, Fault

from .store_servers import free_port

HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
EXAMPLES = "openwebui-0.12.4/examples"
REDIS_EXTRA = "needs the redis extra (pip install helix-pipeline[redis]) to reach a Redis at all"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def chat_id_from(transcript: str) -> str:
    line = next(line for line in transcript.splitlines() if line.strip().startswith("chat "))
    return line.split()[-1]


class TestTheDemoAgainstFakeHelix:
    @pytest.fixture
    def played(
        self, fake_helix: FakeHelix, capsys: pytest.CaptureFixture[str]
    ) -> tuple[int, str, str]:
        return run(["demo", "--helix-url", fake_helix.url], capsys)

    def test_succeeds_with_a_transcript_of_three_turns_and_a_title_task(
        self, played: tuple[int, str, str]
    ) -> None:
        code, out, err = played

        assert code == 0, err
        assert err == ""
        for number, text in enumerate(DEMO_TURNS, 1):
            assert f"Turn {number}: the user writes {text!r}" in out
        assert "the title_generation task" in out
        assert "All held" in out

    def test_helix_got_the_whole_chat_every_turn_with_the_chat_id_header(
        self, played: tuple[int, str, str], fake_helix: FakeHelix
    ) -> None:
        chat_id = chat_id_from(played[1])
        turns = [r for r in fake_helix.chat_requests if r.header(HEADERS[0]) is not None]

        assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
        for request in turns:
            assert [request.header(name) for name in HEADERS] == [chat_id, chat_id]
            assert request.body["stream"] is True
            assert not {"metadata", "tools", "user", "helix_conversation"} & set(request.body)
        assert [m["role"] for m in turns[-1].body["messages"]] == ["user", "assistant"] * 2 + [
            "user"
        ]

    def test_the_title_task_reached_helix_first_without_any_conversation_header(
        self, played: tuple[int, str, str], fake_helix: FakeHelix
    ) -> None:
        title = fake_helix.chat_requests[0]

        assert [title.header(name) for name in HEADERS] == [None, None]
        assert title.body["stream"] is False
        assert title.body["messages"][0]["content"].startswith("### Task:")
        assert len(fake_helix.chat_requests) == 4

    def test_helix_kept_one_session_for_the_chat_and_the_transcript_names_it(
        self, played: tuple[int, str, str], fake_helix: FakeHelix
    ) -> None:
        out = played[1]
        session_id = f"conv-{chat_id_from(out)}"

        assert fake_helix.sessions[session_id].turns == 3
        assert out.count(f"(Helix session {session_id})") == 3
        assert f"X-OpenWebUI-Chat-Id: {chat_id_from(out)}" in out

    def test_the_transcript_shows_what_was_sent_answered_and_stored(
        self, played: tuple[int, str, str]
    ) -> None:
        rows = [
            line.split(None, 1)[1]
            for line in played[1].splitlines()
            if line.strip().startswith("stored ")
        ]

        assert rows == [
            "nothing: background tasks never touch the history",
            "2 messages in the active branch",
            "4 messages in the active branch",
            "6 messages in the active branch",
        ]
        assert "Helix reply #2 to: And what is that number times 10?" in played[1]
        assert "<!--" not in played[1]


class TestTheDemoOptions:
    def test_runs_on_its_own_built_in_helix_in_a_few_seconds(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["demo"], capsys)

        assert code == 0, err
        assert "FakeHelix at http://127.0.0.1:" in out
        assert "(temporary)" in out

    def test_ignores_history_settings_meant_for_the_pipeline(
        self,
        fake_helix: FakeHelix,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("HISTORY_ENABLED", "false")
        monkeypatch.setenv("MAX_HISTORY_MESSAGES", "2")
        monkeypatch.setenv("TASKS", "skip")

        code, _, err = run(["demo", "--helix-url", fake_helix.url], capsys)

        assert code == 0, err
        assert len(fake_helix.chat_requests) == 4

    def test_no_stream_sends_every_turn_unstreamed(
        self, fake_helix: FakeHelix, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["demo", "--helix-url", fake_helix.url, "--no-stream"], capsys)

        assert code == 0, err
        assert "not streaming" in out
        assert {r.body["stream"] for r in fake_helix.chat_requests} == {False}

    def test_a_given_store_keeps_the_conversation_afterwards(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"sqlite:///{tmp_path / 'kept.db'}"
        code, out, err = run(["demo", "--helix-url", fake_helix.url, "--store", url], capsys)

        assert code == 0, err
        store = open_store(url)
        try:
            (user,) = store.users()
            stored = store.load(ConversationKey(user, chat_id_from(out)))
        finally:
            store.close()
        assert [m.content for m in stored if m.role == "user"] == list(DEMO_TURNS)
        assert all(m.message_id for m in stored), "the outlet attached Open WebUI's ids"
        assert f"show --user {user} {chat_id_from(out)}" in out


class TestTheDemoFails:
    def test_with_one_line_when_helix_is_unreachable(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"http://127.0.0.1:{free_port()}"

        code, out, err = run(["demo", "--helix-url", url], capsys)

        assert code == 1
        assert err.count("\n") == 1
        assert err.startswith("helix-pipeline: error: ")
        assert url in err and "--helix-url" in err
        assert "Traceback" not in out + err

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault.SERVER_ERROR, id="helix-500"),
            pytest.param(Fault.UNAVAILABLE, id="helix-unavailable"),
            pytest.param(Fault.DROP_MID_STREAM, id="stream-cut"),
        ],
    )
    def test_when_helix_does_not_answer_a_turn(
        self, fault: Fault, fake_helix: FakeHelix, capsys: pytest.CaptureFixture[str]
    ) -> None:
        fake_helix.fault = fault

        code, _, err = run(["demo", "--helix-url", fake_helix.url], capsys)

        assert code == 1
        assert "the pipe answered with an error" in err
        assert err.count("\n") == 1

    def test_when_helix_wants_a_key_it_was_not_given(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("HELIX_API_KEY", raising=False)
        with FakeHelix(proxy_api_key="helix-key") as helix:
            code, _, err = run(["demo", "--helix-url", helix.url], capsys)

        assert code == 1
        assert "helix-key" not in err

    def test_on_a_memory_store_it_cannot_read_back(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(["demo", "--store", "memory://"], capsys)

        assert code == 1
        assert "sqlite://" in err

    def test_without_showing_the_store_password(self, capsys: pytest.CaptureFixture[str]) -> None:
        pytest.importorskip("redis", reason=REDIS_EXTRA)
        url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"

        code, out, err = run(["demo", "--store", url], capsys)

        assert code == 1
        assert "s3cret-pw" not in out + err
        assert "redis://:***@127.0.0.1" in err


class TestWithoutTheRedisExtra:
    def test_the_redis_password_test_skips_and_says_why(self) -> None:
        node = "tests/test_demo.py::TestTheDemoFails::test_without_showing_the_store_password"
        blocked = (
            "import sys; sys.modules['redis'] = None; import pytest; "
            f"raise SystemExit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', {node!r}]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", blocked],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            check=False,
            text=True,
            timeout=120,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 skipped" in result.stdout
        assert "pip install helix-pipeline[redis]" in result.stdout


class TestRecordingRelay:
    def test_passes_a_stream_on_before_it_has_ended(self) -> None:
        hold = threading.Event()
        with FakeHelix(hold=hold) as helix, RecordingRelay(helix.url) as relay:
            response = requests.post(
                f"{relay.url}/v1/chat/completions",
                json={
                    "model": "helix-consultant",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"X-OpenWebUI-Chat-Id": "chat-1"},
                stream=True,
                timeout=10,
            )
            with response:
                lines = response.iter_lines()
                first = next(lines)
                hold.set()
                rest = b"\n".join(lines)

        assert first.startswith(b"data: ")
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert relay.chat_requests()[0].header("X-OpenWebUI-Chat-Id") == "chat-1"
        assert helix.chat_requests[0].header("X-OpenWebUI-Chat-Id") == "chat-1"

    def test_answers_502_when_helix_is_gone(self) -> None:
        with RecordingRelay(f"http://127.0.0.1:{free_port()}/v1") as relay:
            response = requests.get(f"{relay.url}/health", timeout=10)

        assert response.status_code == 502
        assert "unreachable" in response.json()["detail"]
        assert [r.path for r in relay.requests] == ["/health"]
