"""``helix-pipeline demo`` end to end against a real FakeHelix: its transcript, and the facts behind it.

The demo only prints what happened; these tests are where it is checked: what Helix received
(FakeHelix's recorded requests), what the store holds afterwards, and that the transcript says so.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helix_pipeline.cli import main
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.demo import DEMO_TURNS
from helix_pipeline.messages import Message
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix, Fault, RecordedRequest

from .store_servers import free_port

HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
REDIS_EXTRA = "needs the redis extra (pip install helix-pipeline[redis]) to reach a Redis at all"
Rows = dict[str, list[str]]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sections(transcript: str) -> dict[str, Rows]:
    """The transcript's rows by section (``start``, ``title task``, ``turn 1``, ...,
    ``afterwards``): each label with its text and the unlabelled lines below it."""
    found: dict[str, Rows] = {"start": {}}
    rows, label = found["start"], ""
    for line in transcript.splitlines()[1:]:
        if not line.strip():
            continue
        if not line.startswith("    "):
            name = line.strip().lower()
            name = "title task" if "task" in name else name.removesuffix(" itself:")
            rows, label = found.setdefault(name, {}), ""
            continue
        label = line[4:23].strip() or label
        rows.setdefault(label, []).append(line[24:])
    return found


def helix_rows(request: RecordedRequest) -> list[str]:
    """What the transcript should list under "Helix receives" for ``request``."""
    return [f"  {m['role']:<10} {m['content'].splitlines()[0]}" for m in request.body["messages"]]


@dataclass
class Played:
    out: str
    err: str
    helix: FakeHelix
    stored: list[Message]
    branches: list[list[Message]]
    chats: int

    @property
    def rows(self) -> dict[str, Rows]:
        return sections(self.out)

    @property
    def chat_id(self) -> str:
        return self.rows["start"]["chat"][0]

    @property
    def turns(self) -> list[RecordedRequest]:
        """Helix's requests with the conversation header: the chat turns."""
        return [r for r in self.helix.chat_requests if r.header(HEADERS[0]) is not None]


@pytest.fixture
def played(fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Played:
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    code, out, err = run(["demo", "--helix-url", fake_helix.url, "--store", url], capsys)
    assert code == 0, err
    start = sections(out)["start"]
    user = start["user"][0].split()[0]
    store = open_store(url)
    try:
        key = ConversationKey(user, start["chat"][0])
        stored, branches = store.load(key), store.branches(key)
        chats = len(store.conversations(user))
    finally:
        store.close()
    return Played(out, err, fake_helix, stored, branches, chats)


class TestWhatHelixReceived:
    def test_every_turn_carried_both_headers_with_the_chat_id(self, played: Played) -> None:
        assert len(played.turns) == len(DEMO_TURNS)
        for request in played.turns:
            assert [request.header(name) for name in HEADERS] == [played.chat_id] * 2

    def test_every_turn_carried_the_whole_chat_once_in_order(self, played: Played) -> None:
        for number, request in enumerate(played.turns, 1):
            messages = request.body["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"] * (number - 1) + ["user"]
            assert [m["content"] for m in messages[::2]] == list(DEMO_TURNS[:number])
            for asked, reply in enumerate(messages[1::2], 1):
                assert reply["content"].startswith(
                    f"Helix reply #{asked} to: {DEMO_TURNS[asked - 1]}"
                )
            assert request.body["stream"] is True
            assert not {"metadata", "tools", "user", "helix_conversation"} & set(request.body)

    def test_helix_kept_one_session_for_all_the_turns(self, played: Played) -> None:
        conversations = [s for s in played.helix.sessions.values() if s.conversation_id]

        assert [(s.session_id, s.turns) for s in conversations] == [
            (f"conv-{played.chat_id}", len(DEMO_TURNS))
        ]

    def test_the_title_task_came_first_without_any_conversation_header(
        self, played: Played
    ) -> None:
        title, *rest = played.helix.chat_requests

        assert [title.header(name) for name in HEADERS] == [None, None]
        assert title.body["stream"] is False
        assert [m["content"][:9] for m in title.body["messages"]] == ["### Task:"]
        assert rest == played.turns, "one request a pipe() call, nothing more"


class TestWhatWasStored:
    def test_the_chat_once_with_open_webuis_message_ids(self, played: Played) -> None:
        assert [m.role for m in played.stored] == ["user", "assistant"] * len(DEMO_TURNS)
        assert [m.content for m in played.stored[::2]] == list(DEMO_TURNS)
        assert all(m.message_id for m in played.stored), "the outlet attached Open WebUI's ids"
        assert not any(m.partial for m in played.stored)

    def test_not_the_title_task(self, played: Played) -> None:
        every = [m.content for branch in played.branches for m in branch]

        assert not any(content.startswith("### Task:") for content in every)
        assert played.chats == 1


class TestTheTranscript:
    def test_shows_what_was_typed_sent_and_shown_each_turn(self, played: Played) -> None:
        turns = [played.rows[f"turn {n}"] for n in range(1, len(DEMO_TURNS) + 1)]

        assert [t["Ana types"] for t in turns] == [[text] for text in DEMO_TURNS]
        assert [t["Open WebUI sends"] for t in turns] == [
            [f"{n} message{'s' * (n > 1)}, the whole chat"] for n in (1, 3, 5)
        ]
        assert [t["shown"] for t in turns] == [
            [f"Helix reply #{n} to: {text}"] for n, text in enumerate(DEMO_TURNS, 1)
        ]
        assert turns[0]["status lines"][0].endswith("> Helix answered")

    def test_lists_each_message_and_header_helix_received(self, played: Played) -> None:
        for number, request in enumerate(played.turns, 1):
            rows = played.rows[f"turn {number}"]
            earlier = f"{2 * number - 2} earlier + the new one" if number > 1 else "the new one"
            assert rows["Helix receives"][0].startswith(f"{2 * number - 1} message")
            assert earlier in rows["Helix receives"][0]
            assert rows["Helix receives"][1:] == helix_rows(request)
            assert rows["headers"] == [f"{name}: {request.header(name)}" for name in HEADERS]
            assert rows["Helix session"] == [f"conv-{played.chat_id}"]

    def test_shows_the_title_task_without_headers_and_storing_nothing(self, played: Played) -> None:
        task = played.rows["title task"]

        assert task["Helix receives"] == ["1 message: the task's prompt", "  user       ### Task:"]
        assert task["headers"] == [f"{name}: (not sent)" for name in HEADERS]
        assert task["store holds"] == ["nothing for this chat"]

    def test_shows_what_the_store_holds_after_each_turn(self, played: Played) -> None:
        held = [played.rows[f"turn {n}"]["store holds"] for n in range(1, len(DEMO_TURNS) + 1)]

        assert held == [
            [f"{2 * n} messages: {', '.join(['user', 'assistant'] * n)}",
             f"{2 * n} of them with Open WebUI's message id"]
            for n in range(1, len(DEMO_TURNS) + 1)
        ]  # fmt: skip

    def test_sums_up_what_helix_got_and_where_the_chat_is_kept(self, played: Played) -> None:
        after = played.rows["afterwards"]

        assert after["Helix received"] == ["4 requests: 3 with the conversation headers, 1 without"]
        assert after["Helix session"] == [f"conv-{played.chat_id}: 3 requests"]
        assert after["store holds"] == [f"6 messages for chat {played.chat_id}"]
        user = played.rows["start"]["user"][0].split()[0]
        assert after["see them"][0].endswith(f"show --user {user} {played.chat_id}")
        assert played.stored, "the command it names shows the chat"
        assert played.err == ""


class TestTheDemoOptions:
    def test_runs_on_its_own_built_in_helix_and_a_temporary_store(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["demo"], capsys)
        start = sections(out)["start"]

        assert code == 0, err
        assert start["Helix"][0].startswith("FakeHelix at http://127.0.0.1:")
        assert start["store"][0].endswith("(temporary)")
        assert "see them" not in sections(out)["afterwards"]

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
        assert [len(r.body["messages"]) for r in fake_helix.chat_requests] == [1, 1, 3, 5]

    def test_no_stream_sends_every_turn_unstreamed(
        self, fake_helix: FakeHelix, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["demo", "--helix-url", fake_helix.url, "--no-stream"], capsys)

        assert code == 0, err
        assert sections(out)["start"]["model"][0].endswith(", not streaming")
        assert {r.body["stream"] for r in fake_helix.chat_requests} == {False}
        assert "status lines" not in sections(out)["turn 1"]


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
        ("fault", "options"),
        [
            pytest.param(Fault.SERVER_ERROR, [], id="helix-500"),
            pytest.param(Fault.UNAVAILABLE, [], id="helix-unavailable"),
            pytest.param(Fault.UNAVAILABLE, ["--no-stream"], id="helix-unavailable-unstreamed"),
            pytest.param(Fault.DROP_MID_STREAM, [], id="stream-cut"),
        ],
    )
    def test_when_helix_does_not_answer_a_turn(
        self,
        fault: Fault,
        options: list[str],
        fake_helix: FakeHelix,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        fake_helix.fault = fault

        code, out, err = run(["demo", "--helix-url", fake_helix.url, *options], capsys)

        assert code == 1
        assert err.startswith("helix-pipeline: error: turn 1: the pipe answered with an error: ⚠️")
        assert err.count("\n") == 1
        assert sections(out)["title task"]["shown"][0].startswith("⚠️")

    @pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
    def test_when_helix_fails_after_part_of_an_answer(
        self, stream: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with FakeHelix(reply=lambda _: "Four.\n\n**Fehler:** the disk is full") as helix:
            code, out, err = run(["demo", "--helix-url", helix.url, stream], capsys)

        assert code == 1
        assert "the pipe answered with an error: ⚠️ The answer was cut off: " in err
        assert "the disk is full" in err
        assert sections(out)["title task"]["shown"] == ["Four."]

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
