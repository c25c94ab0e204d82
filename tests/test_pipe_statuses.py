"""The pipe's status lines: Helix's progress shows above the answer, a shortened history is told,
and the last status says the work is done; none of it becomes answer text or history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.history import Trim
from helix_pipeline.notices import CLOSE, OPEN, trim_notice
from helix_pipeline.pipe import HelixPipe, PipeItem
from helix_pipeline.testing import FakeHelix, Fault
from helix_pipeline.testing.openwebui_transport import InProcess, Reply, ask
from helix_pipeline.valves import HelixValves

USER = {"id": "user-a", "name": "A", "email": "a@example.com", "role": "user"}


def send(pipe: HelixPipe, messages: list[dict[str, str]], chat_id: str, *, stream: bool) -> Reply:
    """``messages`` (no ids) in a chat with ``chat_id``, as Open WebUI sends them to the pipe."""
    body: dict[str, Any] = {
        "model": "helix.helix-consultant",
        "stream": stream,
        "messages": messages,
        "metadata": {"chat_id": chat_id, "user_id": USER["id"]},
    }
    return ask(InProcess(pipe), body, USER)


def turn(pipe: HelixPipe, messages: list[dict[str, str]], chat_id: str = "c1") -> list[PipeItem]:
    reply = send(pipe, messages, chat_id, stream=True)
    assert not reply.whole
    return reply.items


def statuses(items: list[PipeItem]) -> list[tuple[str, bool]]:
    return [
        (item["event"]["data"]["description"], item["event"]["data"]["done"])
        for item in items
        if isinstance(item, dict)
    ]


def text(items: list[PipeItem]) -> str:
    return "".join(item for item in items if isinstance(item, str))


@pytest.fixture
def helix() -> Any:
    with FakeHelix(tools=("Read",), heartbeats=1) as server:
        yield server


@pytest.fixture
def pipe(helix: FakeHelix, tmp_path: Path) -> Any:
    valves = HelixValves(
        HELIX_BASE_URL=helix.url,
        SESSION_STORE_URL=f"sqlite:///{tmp_path / 's.db'}",
        MAX_HISTORY_MESSAGES=3,
        MAX_RETRIES=0,
    )
    running = HelixPipe(lambda: valves)
    yield running
    running.shutdown()


class TestHelixsProgress:
    def test_each_decoration_is_a_status_event_and_the_last_one_is_done(
        self, pipe: HelixPipe
    ) -> None:
        items = turn(pipe, [{"role": "user", "content": "hi"}])
        assert [description for description, _ in statuses(items)] == [
            "Helix is starting Claude Code…",
            "Claude Code is using Read…",
            "Helix is still working (0 s)…",
            "Helix is writing the answer…",
            "Helix answered",
        ]
        assert [done for _, done in statuses(items)] == [False] * 4 + [True]
        assert all(item["event"]["type"] == "status" for item in items if isinstance(item, dict))

    def test_the_answer_text_and_the_history_hold_no_decoration(
        self, pipe: HelixPipe, helix: FakeHelix
    ) -> None:
        items = turn(pipe, [{"role": "user", "content": "hi"}])
        assert text(items) == "Helix reply #1 to: hi\n\n<!-- STEP: what -->"
        stored = pipe._parts.get().history.store.load(ConversationKey("user-a", "c1"))
        assert [m.content for m in stored] == ["hi", text(items)]

    def test_an_unvalidated_answer_says_so_in_its_last_status(
        self, pipe: HelixPipe, helix: FakeHelix
    ) -> None:
        helix.fail_next(Fault.UNVALIDATED)
        items = turn(pipe, [{"role": "user", "content": "hi"}])
        assert statuses(items)[-1] == (
            "Helix answered, but could not fully validate the answer",
            True,
        )
        assert "Hinweis" not in text(items)


class TestShortenedHistory:
    def test_a_trim_is_told_in_one_status_before_helixs_own(self, pipe: HelixPipe) -> None:
        messages = [
            {"role": role, "content": f"{role} {n}"}
            for n in range(3)
            for role in ("user", "assistant")
        ][:-1]
        items = turn(pipe, messages, chat_id="long")
        told = statuses(items)[0]
        assert told == (
            "Helix gets a shortened history: 3 older messages left out "
            "(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS)",
            False,
        )
        assert "shortened" not in text(items)

    def test_a_plain_answer_ends_with_the_trim_line_which_never_reaches_helix_or_the_store(
        self, pipe: HelixPipe, helix: FakeHelix
    ) -> None:
        messages = [
            {"role": role, "content": f"{role} {n}"}
            for n in range(3)
            for role in ("user", "assistant")
        ][:-1]
        reply = send(pipe, messages, "plain", stream=False)
        answer = reply.content
        line = (  # the words as before, between the invisible mark of a notice
            f"\n\n{OPEN}_(Helix gets a shortened history: 3 older messages left out "
            f"(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS))_{CLOSE}"
        )
        assert reply.whole
        assert answer.endswith(line)
        stored = pipe._parts.get().history.store.load(ConversationKey("user-a", "plain"))
        assert stored[-1].content == answer.removesuffix(line)
        # Open WebUI sends the shown answer back next turn: Helix never gets the line.
        send(
            pipe,
            [
                *messages,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "more"},
            ],
            "plain",
            stream=False,
        )
        sent = helix.last_request.body["messages"]
        assert not any("shortened history" in m["content"] for m in sent)
        assert sent[-1]["content"] == "more"
        stored = pipe._parts.get().history.store.load(ConversationKey("user-a", "plain"))
        assert [m.content for m in stored[-4:-2]] == ["user 2", answer.removesuffix(line)]

    def test_an_untrimmed_plain_answer_has_no_line(self, pipe: HelixPipe) -> None:
        reply = send(pipe, [{"role": "user", "content": "hi"}], "short", stream=False)
        assert reply.whole
        assert reply.content == "Helix reply #1 to: hi\n\n<!-- STEP: what -->"

    def test_an_untrimmed_turn_tells_nothing(self, pipe: HelixPipe) -> None:
        items = turn(pipe, [{"role": "user", "content": "hi"}])
        assert not any("shortened" in description for description, _ in statuses(items))

    @pytest.mark.parametrize(
        ("trim", "line"),
        [
            pytest.param(Trim(), None, id="nothing"),
            pytest.param(
                Trim(dropped_messages=1),
                "Helix gets a shortened history: 1 older message left out "
                "(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS)",
                id="one-dropped",
            ),
            pytest.param(
                Trim(truncated_messages=2),
                "Helix gets a shortened history: 2 long messages shortened (MAX_MESSAGE_CHARS)",
                id="two-truncated",
            ),
        ],
    )
    def test_the_line_names_the_counts_and_the_valves(self, trim: Trim, line: str | None) -> None:
        assert trim_notice(trim) == line
