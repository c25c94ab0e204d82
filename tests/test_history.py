"""The history merge and Helix's budget, on conversation A of the real capture and on random ones.

Conversation A (run1 filter.jsonl): three streamed turns, a regeneration of turn 3, then an edit of
turn 2. Inlets carry the messages without ids (what ``pipe()`` sees); outlets carry them with ids
(what the store ends up holding).
"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.history import Budget, Merge, Trim, fit_budget, merge_history, split_system
from helix_pipeline.messages import Message, messages_from_dicts

from .conftest import FIXTURES

FILTER_RUN = FIXTURES / "openwebui-0.12.4" / "run1_forward_headers" / "filter.jsonl"
# Line numbers of conversation A in filter.jsonl.
A_T1_OUTLET, A_T2_INLET, A_T2_OUTLET, A_T3_INLET, A_T3_OUTLET = 2, 5, 6, 8, 9
A_REGEN_INLET, A_REGEN_OUTLET, A_EDIT_INLET = 11, 12, 14
NOTE = re.compile(r"\n\[\.\.\. truncated by helix-pipeline: (\d+) characters left out\]$")


@cache
def _filter_records() -> list[dict[str, Any]]:
    with FILTER_RUN.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def a_messages(line: int) -> list[Message]:
    return messages_from_dicts(_filter_records()[line]["body"]["messages"])


def turns(count: int, *, size: int = 10, ids: bool = True) -> list[Message]:
    """``count`` messages alternating user/assistant, each text unique and ``size`` long."""
    roles = ("user", "assistant")
    return [
        Message(
            roles[i % 2],  # type: ignore[arg-type]
            f"{i:04d}:".ljust(size, "x"),
            message_id=f"id-{i}" if ids else None,
        )
        for i in range(count)
    ]


def total_chars(messages: list[Message]) -> int:
    return sum(len(m.content) for m in messages)


class TestFullResend:
    def test_open_webui_resending_the_chat_adds_only_the_new_question(self) -> None:
        stored, incoming = a_messages(A_T2_OUTLET), a_messages(A_T3_INLET)
        merge = merge_history(stored, incoming, complete=True)
        assert merge == Merge(conversation=tuple(incoming), base=4, new=(incoming[4],), attached=0)
        assert merge.new[0].content == "[A-t3] Thanks! Summarize our chat in one line."

    @pytest.mark.parametrize(
        "complete", [pytest.param(True, id="complete"), pytest.param(False, id="partial-client")]
    )
    def test_a_resend_of_what_is_stored_adds_nothing(self, complete: bool) -> None:
        stored = a_messages(A_T3_OUTLET)
        merge = merge_history(stored, a_messages(A_T3_OUTLET), complete=complete)
        assert (merge.base, merge.new, merge.attached) == (6, (), 0)
        assert merge.conversation == tuple(stored)

    def test_nothing_stored_takes_the_incoming_messages(self) -> None:
        incoming = a_messages(A_T2_INLET)
        merge = merge_history([], incoming, complete=False)
        assert merge == Merge(tuple(incoming), base=0, new=tuple(incoming), attached=0)


class TestRegenerationAndEdit:
    def test_a_regeneration_keeps_the_prefix_and_drops_the_old_reply(self) -> None:
        stored, incoming = a_messages(A_T3_OUTLET), a_messages(A_REGEN_INLET)
        merge = merge_history(stored, incoming, complete=True)
        assert (merge.base, merge.new, merge.conversation) == (5, (), tuple(incoming))

    def test_a_regenerated_reply_with_the_same_text_and_a_new_id_is_new(self) -> None:
        stored, outlet = a_messages(A_T3_OUTLET), a_messages(A_REGEN_OUTLET)
        assert stored[5].content == outlet[5].content
        merge = merge_history(stored, outlet, complete=True)
        assert (merge.base, merge.new) == (5, (outlet[5],))

    def test_an_edit_of_turn_two_wins_from_the_edited_message_on(self) -> None:
        stored, incoming = a_messages(A_T3_OUTLET), a_messages(A_EDIT_INLET)
        merge = merge_history(stored, incoming, complete=True)
        assert merge.base == 2
        assert [m.content for m in merge.new] == ["[A-edit] EDITED second question: what is 6 x 7?"]
        assert merge.conversation == tuple(incoming)

    def test_an_edit_of_turn_one_from_open_webui_wins_from_the_start(self) -> None:
        stored = a_messages(A_T1_OUTLET)
        edited = [Message("user", "[A-t1] Hello, my name is Bea. What is 3+3?")]
        merge = merge_history(stored, edited, complete=True)
        assert merge == Merge(tuple(edited), base=0, new=tuple(edited), attached=0)

    def test_another_first_message_from_a_partial_client_continues_the_chat(self) -> None:
        stored = a_messages(A_T1_OUTLET)
        newest = [Message("user", "And now?")]
        merge = merge_history(stored, newest, complete=False)
        assert merge == Merge((*stored, *newest), base=2, new=tuple(newest), attached=2)

    def test_a_partial_stored_reply_matches_what_open_webui_kept_of_it(self) -> None:
        full = a_messages(A_T2_INLET)
        stored = [full[0], Message("assistant", full[1].content[:20], partial=True)]
        kept = Message("assistant", full[1].content[:20] + "\n\n(Helix stopped: timed out)")
        incoming = [full[0], kept, full[2]]
        merge = merge_history(stored, incoming, complete=True)
        assert (merge.base, merge.new) == (2, (full[2],))

    def test_a_failed_reply_missing_from_the_next_turn_is_left_behind(self) -> None:
        t3 = a_messages(A_T3_INLET)
        failed = Message("assistant", "backend reply #2 to: [A-t", partial=True)
        stored = [*t3[:3], failed]
        incoming = [*t3[:3], Message("user", "Are you there?")]
        merge = merge_history(stored, incoming, complete=True)
        assert (merge.base, merge.conversation) == (3, tuple(incoming))


class TestClientSendsOnlyItsNewestMessages:
    def test_the_stored_history_goes_before_a_lone_new_question(self) -> None:
        stored, question = a_messages(A_T2_OUTLET), a_messages(A_T3_INLET)[-1]
        merge = merge_history(stored, [question], complete=False)
        assert merge == Merge((*stored, question), base=4, new=(question,), attached=4)

    def test_messages_that_overlap_the_stored_end_are_kept_once(self) -> None:
        stored, incoming = a_messages(A_T2_OUTLET), a_messages(A_T3_INLET)[2:]
        merge = merge_history(stored, incoming, complete=False)
        assert merge.conversation == (*stored, incoming[-1])
        assert (merge.base, merge.new, merge.attached) == (4, (incoming[-1],), 2)


class TestFitBudgetWithinLimits:
    def test_a_conversation_within_the_limits_is_sent_unchanged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        system = [Message("system", "You are Helix.")]
        conversation = a_messages(A_T3_INLET)
        with caplog.at_level(logging.DEBUG, logger="helix_pipeline.history"):
            kept, trim = fit_budget(system, conversation, Budget())
        assert kept == [*system, *conversation]
        assert trim == Trim() and not trim
        assert caplog.records == []

    def test_a_greeting_before_the_first_question_is_kept_when_it_fits(self) -> None:
        conversation = [Message("assistant", "Hi, I am Helix."), *a_messages(A_T2_INLET)]
        kept, trim = fit_budget([], conversation, Budget())
        assert (kept, trim) == (conversation, Trim())


class TestFitBudgetMessageCount:
    def test_a_long_chat_is_cut_to_helixs_100_messages_keeping_its_start(self) -> None:
        system = [Message("system", "You are Helix.", message_id="sys")]
        conversation = turns(151)
        kept, trim = fit_budget(system, conversation, Budget())
        # 98 places after the system message and the first question would start with a reply:
        # that reply goes too, so that the kept turns start with a question.
        assert len(kept) == 99
        assert kept[0] == system[0]
        assert kept[1] == conversation[0]
        assert kept[2].role == "user"
        assert kept[-1] == conversation[-1]
        assert kept[2:] == conversation[-97:]
        assert trim.dropped_messages == 152 - 99
        assert trim.dropped_chars == 10 * (152 - 99)

    def test_what_follows_the_first_question_starts_with_a_question(self) -> None:
        conversation = turns(10)  # ends with an assistant reply, as an outlet does
        kept, _ = fit_budget([], conversation, Budget(max_messages=5))
        assert kept[0] == conversation[0]
        assert kept[1].role == "user"
        assert kept[-1] == conversation[-1]
        assert len(kept) <= 5


class TestFitBudgetMessageSize:
    @pytest.mark.parametrize(
        "length",
        [
            pytest.param(150_000, id="half-again-too-long"),
            pytest.param(100_005, id="just-too-long"),
            pytest.param(100_001, id="one-too-long"),
        ],
    )
    def test_a_too_long_message_is_cut_with_a_whole_note(self, length: int) -> None:
        text = "".join(chr(ord("a") + i % 26) for i in range(length))
        kept, trim = fit_budget([], [Message("user", text)], Budget())
        content = kept[0].content
        assert len(content) == 100_000
        note = NOTE.search(content)
        assert note is not None, content[-80:]
        kept_chars = note.start()
        assert content[:kept_chars] == text[:kept_chars]
        assert int(note.group(1)) == length - kept_chars
        assert trim == Trim(truncated_messages=1)

    def test_a_limit_shorter_than_the_note_still_holds(self) -> None:
        kept, _ = fit_budget([], [Message("user", "x" * 50)], Budget(max_message_chars=10))
        assert len(kept[0].content) == 10

    def test_a_message_at_the_limit_is_untouched(self) -> None:
        message = Message("user", "y" * 100_000)
        assert fit_budget([], [message], Budget()) == ([message], Trim())


class TestFitBudgetTotal:
    def test_the_oldest_turns_go_first_when_the_characters_do_not_fit(self) -> None:
        conversation = turns(9, size=100)
        kept, trim = fit_budget([], conversation, Budget(max_total_chars=450))
        assert total_chars(kept) <= 450
        assert kept[0] == conversation[0]
        assert kept[1].role == "user"
        assert kept[-1] == conversation[-1]
        assert kept[1:] == conversation[-len(kept) + 1 :]
        assert trim.dropped_messages == 9 - len(kept)

    def test_the_first_question_and_the_newest_are_shrunk_rather_than_dropped(self) -> None:
        system = [Message("system", "s" * 300, message_id="sys")]
        conversation = turns(5, size=400)
        kept, trim = fit_budget(system, conversation, Budget(max_total_chars=600))
        assert total_chars(kept) <= 600
        assert [m.message_id for m in kept] == ["sys", "id-0", "id-4"]
        assert trim.truncated_messages >= 1
        assert trim.dropped_messages == 3


class TestSystemMessages:
    def test_split_system_keeps_each_system_text_once_in_order(self) -> None:
        messages = [
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("system", "Answer in German."),
            Message("assistant", "Hallo"),
            Message("system", "Be brief."),
        ]
        system, rest = split_system(messages)
        assert [m.content for m in system] == ["Be brief.", "Answer in German."]
        assert rest == [messages[1], messages[3]]

    def test_system_messages_stay_first_when_the_history_is_trimmed(self) -> None:
        system, rest = split_system(
            [Message("system", "Rules", message_id="s"), *turns(30), Message("system", "Rules")]
        )
        kept, _ = fit_budget(system, rest, Budget(max_messages=6))
        assert [m.role for m in kept].count("system") == 1
        assert kept[0].message_id == "s"
        assert kept[1].message_id == "id-0"


class TestTrimLogging:
    def test_a_trim_is_logged_with_counts_and_never_content(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        secret = "my-password-is-hunter2 "
        conversation = [
            Message(m.role, secret + m.content, m.message_id) for m in turns(12, size=30)
        ]
        conversation.append(Message("user", secret * 10))
        with caplog.at_level(logging.INFO, logger="helix_pipeline.history"):
            _, trim = fit_budget([], conversation, Budget(max_messages=4, max_message_chars=100))
        assert trim.dropped_messages == 9 and trim.truncated_messages == 1
        [record] = caplog.records
        assert record.levelno == logging.INFO
        assert record.args == (trim.dropped_messages, trim.dropped_chars, trim.truncated_messages)
        assert "hunter2" not in caplog.text
        assert f"{trim.dropped_messages} messages" in record.getMessage()

    def test_a_truncation_alone_is_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="helix_pipeline.history"):
            fit_budget([], [Message("user", "z" * 20)], Budget(max_message_chars=10))
        assert "1 truncated" in caplog.text
        assert "zzz" not in caplog.text


# ---- properties -------------------------------------------------------------------------------

ROLES = st.sampled_from(["user", "assistant"])


@st.composite
def histories(draw: st.DrawFn, *, max_size: int = 12, max_chars: int = 60) -> list[Message]:
    """Messages with unique texts (a coincidental repeat is another test's business) and ids."""
    roles = draw(st.lists(ROLES, max_size=max_size))
    sizes = draw(st.lists(st.integers(0, max_chars), min_size=len(roles), max_size=len(roles)))
    prefix = draw(st.sampled_from(["s", "n"]))
    return [
        Message(role, f"{prefix}{i}|" + "w" * size, message_id=f"{prefix}-{i}")  # type: ignore[arg-type]
        for i, (role, size) in enumerate(zip(roles, sizes, strict=True))
    ]


def without_ids(messages: list[Message]) -> list[Message]:
    return [m.with_id(None) for m in messages]


def is_subsequence(part: list[str | None], whole: list[str | None]) -> bool:
    items = iter(whole)
    return all(any(x == y for y in items) for x in part)


@st.composite
def budgets(draw: st.DrawFn, system_count: int) -> Budget:
    return Budget(
        max_messages=draw(st.integers(system_count + 2, 20)),
        max_message_chars=draw(st.integers(1, 120)),
        max_total_chars=draw(st.integers(1, 600)),
    )


def check_budget(system: list[Message], conversation: list[Message], budget: Budget) -> None:
    kept, trim = fit_budget(system, conversation, budget)
    ids = [m.message_id for m in kept]
    assert len(kept) <= budget.max_messages
    assert all(len(m.content) <= budget.max_message_chars for m in kept)
    assert total_chars(kept) <= budget.max_total_chars
    assert ids[: len(system)] == [m.message_id for m in system]
    assert all(m.role != "system" for m in kept[len(system) :])
    assert is_subsequence(ids, [m.message_id for m in (*system, *conversation)])
    assert trim.dropped_messages == len(system) + len(conversation) - len(kept)
    if conversation:
        assert ids[-1] == conversation[-1].message_id
    first_user = next((m for m in conversation if m.role == "user"), None)
    if first_user is not None:
        assert first_user.message_id in ids
    if trim.dropped_messages == 0:
        assert ids == [m.message_id for m in (*system, *conversation)]
    elif first_user is not None:
        # A trim drops what came before the first question, and keeps whole turns after it.
        assert ids[len(system)] == first_user.message_id
        after = kept[len(system) + 1 :]
        dropped_after = trim.dropped_messages > conversation.index(first_user)
        if dropped_after and len(after) > 1:
            assert after[0].role == "user"


class TestMergeProperties:
    @settings(max_examples=150, deadline=None)
    @given(histories(), histories(), st.booleans(), st.booleans())
    def test_a_full_resend_plus_new_messages_gives_exactly_stored_plus_new(
        self, stored: list[Message], new: list[Message], complete: bool, strip_ids: bool
    ) -> None:
        new = [Message(m.role, "new " + m.content, f"new-{m.message_id}") for m in new]
        resent = without_ids(stored) if strip_ids else stored
        merge = merge_history(stored, [*resent, *new], complete=complete)
        assert [m.content for m in merge.conversation] == [m.content for m in (*stored, *new)]
        assert merge.base == len(stored)
        assert list(merge.new) == new
        assert merge.attached == 0

    @settings(max_examples=150, deadline=None)
    @given(histories(), histories(), st.data())
    def test_a_client_sending_a_tail_gets_the_stored_history_once_in_front(
        self, stored: list[Message], new: list[Message], data: st.DataObject
    ) -> None:
        new = [Message(m.role, "new " + m.content, f"new-{m.message_id}") for m in new]
        skipped = data.draw(st.integers(min_value=min(1, len(stored)), max_value=len(stored)))
        merge = merge_history(stored, [*stored[skipped:], *new], complete=False)
        assert list(merge.conversation) == [*stored, *new]
        assert merge.base == len(stored)
        assert list(merge.new) == new
        assert merge.attached == skipped

    @settings(max_examples=150, deadline=None)
    @given(histories(max_size=16), histories(max_size=6), st.integers(0, 2), st.data())
    def test_the_merged_history_always_fits_the_budget_and_keeps_its_start(
        self,
        stored: list[Message],
        new: list[Message],
        system_count: int,
        data: st.DataObject,
    ) -> None:
        system = [Message("system", f"rule {i}", f"sys-{i}") for i in range(system_count)]
        new = [Message(m.role, "new " + m.content, f"new-{m.message_id}") for m in new]
        merge = merge_history(stored, [*stored, *new], complete=True)
        check_budget(system, list(merge.conversation), data.draw(budgets(system_count)))


class TestBudgetProperties:
    @settings(max_examples=200, deadline=None)
    @given(histories(max_size=25, max_chars=150), st.integers(0, 3), st.data())
    def test_every_limit_holds_and_the_start_and_newest_survive(
        self, conversation: list[Message], system_count: int, data: st.DataObject
    ) -> None:
        system = [Message("system", f"rule {i} " * 5, f"sys-{i}") for i in range(system_count)]
        check_budget(system, conversation, data.draw(budgets(system_count)))

    @settings(max_examples=100, deadline=None)
    @given(histories(max_size=25, max_chars=150))
    def test_within_the_limits_nothing_changes(self, conversation: list[Message]) -> None:
        assert fit_budget([], conversation, Budget()) == (conversation, Trim())
