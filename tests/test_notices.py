"""Notices are marked by data, not by their words (issue 15): rewording one changes nothing else.

Open WebUI keeps the notice it showed as (the end of) the assistant message and sends it back next
turn; the pipe must know it again to keep it out of the history. These tests reword every notice
and play the chat on (through ``HelixPipe``, as the Pipelines server calls it); the history must
neither fork nor carry the notice to Helix or the store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline import notices
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import BackendError, ConfigError
from helix_pipeline.history import Trim
from helix_pipeline.messages import Message
from helix_pipeline.notices import (
    CLOSE,
    EMPTY_ANSWER,
    OPEN,
    UNEXPECTED,
    for_open_webui,
    is_notice,
    notice_for,
    trim_line,
    visible,
    without_notices,
)
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.testing import FakeHelix, Fault
from helix_pipeline.testing.openwebui_transport import Chat, InProcess
from helix_pipeline.valves import HelixValves

MARK_CHARACTERS = set(OPEN + CLOSE)
REWORDINGS = {
    "⚠️": "🛑",
    "(Details are in the Pipelines server log.)": "(The server's log says more.)",
    "The answer was cut off:": "Helix stopped part-way:",
    "What arrived above is kept; ask again to continue.": "The text above stays; ask once more.",
    "Helix answered nothing": "No words came from Helix",
    "helix-pipeline hit an unexpected error": "Something broke inside helix-pipeline",
    "Helix gets a shortened history": "Helix sees a shorter past",
}
"""Other words for every phrase of every notice, the warning sign and the log pointer included."""
NEW_WORDS = tuple(REWORDINGS.values())


def reword(text: str) -> str:
    for old, new in REWORDINGS.items():
        text = text.replace(old, new)
    return text


def reworded(build: Callable[..., str | None]) -> Callable[..., str | None]:
    def build_reworded(*args: Any, **kwargs: Any) -> str | None:
        text = build(*args, **kwargs)
        return None if text is None else reword(text)

    return build_reworded


@pytest.fixture
def new_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every notice the pipe shows, in other words (and nothing else changed)."""
    for text in (EMPTY_ANSWER, UNEXPECTED, notice_for(BackendError("x"), cut_off=True)):
        assert reword(text) != text, "a notice kept its words: the test would prove nothing"
    replacements: dict[str, tuple[object, object]] = {
        "notice_for": (notice_for, reworded(notice_for)),
        "trim_line": (trim_line, reworded(trim_line)),
        "EMPTY_ANSWER": (EMPTY_ANSWER, reword(EMPTY_ANSWER)),
        "UNEXPECTED": (UNEXPECTED, reword(UNEXPECTED)),
    }
    used = set()
    for module in list(sys.modules.values()):  # wherever the pipe builds its notices
        if not getattr(module, "__name__", "").startswith("helix_pipeline."):
            continue
        for name, (original, replacement) in replacements.items():
            if module.__name__ != notices.__name__ and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, replacement)
                used.add(name)
    assert used == set(replacements), f"not reworded: {set(replacements) - used}"


@pytest.fixture
def pipe(fake_helix: FakeHelix, tmp_path: Path) -> Iterator[HelixPipe]:
    valves = HelixValves(
        HELIX_BASE_URL=fake_helix.url,
        SESSION_STORE_URL=f"sqlite:///{tmp_path / 'sessions.db'}",
        MAX_RETRIES=0,
        HELIX_HEARTBEAT_S=1.0,
        READ_TIMEOUT_S=2.0,
        MAX_HISTORY_MESSAGES=3,
    )
    helix = HelixPipe(lambda: valves)
    yield helix
    helix.shutdown()


def new_chat(pipe: HelixPipe) -> Chat:
    """An Open WebUI 0.12.4 chat with ``pipe``, played as the Pipelines server calls it."""
    return Chat(InProcess(pipe), chat_id="chat-notices")


def branches_of(pipe: HelixPipe, chat: Chat) -> list[list[Message]]:
    store = pipe._current().history.store
    assert store is not None
    return store.branches(ConversationKey(chat.user["id"], chat.chat_id))


def _no_notice_in(texts: list[str]) -> None:
    for text in texts:
        assert not MARK_CHARACTERS & set(text), f"a notice's mark got through: {text!r}"
        assert not any(words in text for words in NEW_WORDS), f"a notice got through: {text!r}"


def _crash(*args: Any) -> Any:
    raise RuntimeError("a bug")


FAILURES = [
    pytest.param(Fault.SERVER_ERROR, True, id="failed-streamed"),
    pytest.param(Fault.SERVER_ERROR, False, id="failed-plain"),
    pytest.param(Fault.ERROR_BEFORE_FIRST_CHUNK, True, id="empty-answer"),
    pytest.param(Fault.CLAUDE_CRASH, True, id="helix-failure-text"),
    pytest.param(Fault.DROP_MID_STREAM, True, id="cut-off"),
    pytest.param(None, True, id="unexpected-error"),
]


NOTICES = [
    pytest.param(notice_for(BackendError("Helix failed (HTTP 500).")), id="failure"),
    pytest.param(notice_for(ConfigError("Check the valve.")), id="misconfigured"),
    pytest.param(notice_for(BackendError("dropped"), cut_off=True), id="cut-off"),
    pytest.param(EMPTY_ANSWER, id="empty-answer"),
    pytest.param(UNEXPECTED, id="unexpected"),
    pytest.param(trim_line(Trim(dropped_messages=2)), id="trim-line"),
]


@pytest.mark.usefixtures("new_wording")
class TestRewordedNotices:
    """With every notice reworded, nothing else changed, the history still de-duplicates."""

    @pytest.mark.parametrize(("fault", "stream"), FAILURES)
    def test_the_next_turn_neither_forks_the_history_nor_sends_the_notice(
        self,
        pipe: HelixPipe,
        fake_helix: FakeHelix,
        monkeypatch: pytest.MonkeyPatch,
        fault: Fault | None,
        stream: bool,
    ) -> None:
        chat = new_chat(pipe)
        with monkeypatch.context() as broken:
            if fault is None:
                broken.setattr(HelixPipe, "_pipe", _crash)
            else:
                fake_helix.fail_next(fault)
            shown = chat.send("first question", stream=stream)
        assert any(words in shown for words in NEW_WORDS), shown  # the reworded notice showed

        reply = chat.send("second question", stream=stream)

        sent = [m["content"] for m in fake_helix.last_request.body["messages"]]
        _no_notice_in(sent)
        assert sent[0] == "first question" and sent[-1] == "second question"
        assert sent.count("first question") == 1
        branches = branches_of(pipe, chat)
        assert len(branches) == 1, "the history forked"
        kept = [m.content for m in branches[0]]
        _no_notice_in(kept)
        assert [text.strip() for text in kept] == [text.strip() for text in (*sent, reply)]

    def test_a_plain_answers_trim_line_reaches_neither_helix_nor_the_store(
        self, pipe: HelixPipe, fake_helix: FakeHelix
    ) -> None:
        chat = new_chat(pipe)
        replies = [chat.send(f"question {n}", stream=False) for n in range(3)]
        assert "Helix sees a shorter past" in replies[-1]  # three messages at most: trimmed

        chat.send("question 3", stream=False)

        _no_notice_in([m["content"] for m in fake_helix.last_request.body["messages"]])
        branches = branches_of(pipe, chat)
        assert len(branches) == 1, "the history forked"
        kept = [m.content for m in branches[0]]
        _no_notice_in(kept)
        assert kept[5] == replies[2].partition(f"\n\n{OPEN}")[0]


class TestTheMark:
    """What a notice looks like: its words, between an invisible opening and closing."""

    @pytest.mark.parametrize("notice", NOTICES)
    def test_every_notice_is_its_words_between_the_marks(self, notice: str) -> None:
        words = notice.removeprefix("\n\n")
        assert words.startswith(OPEN) and words.endswith(CLOSE)
        assert is_notice(notice)
        assert visible(notice) == notice.replace(OPEN, "").replace(CLOSE, "")
        assert not MARK_CHARACTERS & set(visible(notice))

    @pytest.mark.parametrize("notice", NOTICES)
    def test_a_notice_after_an_answer_leaves_the_answer_alone(self, notice: str) -> None:
        answer = "The answer so far, with **bold** and _emphasis_."
        message = Message("assistant", answer + notice)

        assert without_notices([message]) == [Message("assistant", answer)]

    @pytest.mark.parametrize("notice", NOTICES)
    def test_a_reply_that_is_only_a_notice_is_left_out(self, notice: str) -> None:
        messages = [Message("user", "hi"), Message("assistant", notice), Message("user", "again")]

        assert without_notices(messages) == [messages[0], messages[2]]

    def test_mark_characters_in_the_words_cannot_break_the_span(self) -> None:
        notice = notice_for(BackendError(f"Helix said {OPEN}this{CLOSE} and {CLOSE}that"))

        assert is_notice(notice)
        assert without_notices([Message("assistant", "kept" + notice)]) == [
            Message("assistant", "kept")
        ]

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(f"A stray {OPEN} opening stays.", id="lone-opening"),
            pytest.param(f"A stray {CLOSE} closing stays.", id="lone-closing"),
            pytest.param(f"Backwards {CLOSE} marks {OPEN} stay.", id="backwards"),
            pytest.param("Zero\u2063width \ufeffcharacters stay.", id="lone-characters"),
            pytest.param(f"{OPEN}Nested {OPEN}opening{CLOSE}", id="opened-twice"),
        ],
    )
    def test_helix_text_with_mark_characters_keeps_all_of_it(self, text: str) -> None:
        message = Message("assistant", text)
        kept = without_notices([message])
        if text.startswith(f"{OPEN}Nested"):  # only the well-formed inner span is a notice
            assert kept == [Message("assistant", f"{OPEN}Nested ")]
        else:
            assert kept == [message]

    def test_a_stray_opening_in_the_answer_before_a_notice_stays(self) -> None:
        answer = f"Helix wrote {OPEN} here."
        notice = notice_for(BackendError("dropped"), cut_off=True)

        kept = without_notices([Message("assistant", answer + notice)])

        assert kept == [Message("assistant", answer)]

    def test_a_user_message_is_never_touched(self) -> None:
        message = Message("user", f"I pasted this:{notice_for(BackendError('x'), cut_off=True)}")

        assert without_notices([message]) == [message]

    def test_a_streamed_notice_is_one_chunk(self, pipe: HelixPipe, fake_helix: FakeHelix) -> None:
        chat = new_chat(pipe)
        fake_helix.fail_next(Fault.DROP_MID_STREAM)
        items = chat.turn("tell me").items

        marked = [item for item in items if isinstance(item, str) and OPEN in item]
        assert len(marked) == 1 and is_notice(marked[0])

    def test_the_functions_host_names_its_own_log_and_keeps_the_mark(self) -> None:
        notice = for_open_webui(notice_for(BackendError("Helix failed."), cut_off=True))

        assert is_notice(notice)
        assert visible(notice).endswith("(Details are in Open WebUI's log.)")
        assert for_open_webui("An answer that ends (Details are in the Pipelines server log.)") == (
            "An answer that ends (Details are in the Pipelines server log.)"
        )


class TestNoticesOfThePreviousRelease:
    """Chats from before the mark hold notices in the old words, unmarked: they still go."""

    OLD = "(Details are in the Pipelines server log.)"

    @pytest.mark.parametrize(
        ("content", "kept"),
        [
            pytest.param(f"⚠️ Helix failed (HTTP 500). {OLD}", None, id="whole"),
            pytest.param(
                "⚠️ Helix at x refused the connection. (Details are in Open WebUI's log.)",
                None,
                id="whole-functions",
            ),
            pytest.param(
                f"Partial\n\n⚠️ The answer was cut off: dropped. What arrived above is kept; "
                f"ask again to continue. {OLD}",
                "Partial",
                id="cut-off",
            ),
            pytest.param(
                "Answer\n\n_(Helix gets a shortened history: 2 older messages left out "
                "(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS))_",
                "Answer",
                id="trim-line",
            ),
        ],
    )
    def test_an_unmarked_notice_in_the_old_words_is_still_taken_out(
        self, content: str, kept: str | None
    ) -> None:
        result = without_notices([Message("assistant", content)])

        assert result == ([] if kept is None else [Message("assistant", kept)])
