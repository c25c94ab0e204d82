"""The overlap of a partial resend with the stored branch: same answers as pairwise, in linear time."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from helix_pipeline.history import _overlap, merge_history
from helix_pipeline.messages import Message


def pairwise_overlap(stored: Sequence[Message], incoming: Sequence[Message]) -> int:
    """The definition: the longest run ending ``stored`` that starts ``incoming``."""
    for size in range(min(len(stored), len(incoming)), 0, -1):
        if all(s.same_as(i) for s, i in zip(stored[-size:], incoming[:size], strict=True)):
            return size
    return 0


def random_messages(rng: random.Random, count: int, *, ids: bool, partial: bool) -> list[Message]:
    return [
        Message(
            rng.choice(("user", "assistant")),
            rng.choice(("a", "b", " a ", "a\n", "ab")),
            message_id=rng.choice((None, "x", "y")) if ids else None,
            partial=partial and rng.random() < 0.2,
        )
        for _ in range(count)
    ]


class TestTheOverlapMatchesItsDefinition:
    @pytest.mark.parametrize(
        ("stored_ids", "incoming_ids", "partial"),
        [
            pytest.param(False, False, False, id="no-ids"),
            pytest.param(True, False, False, id="ids-stored-only"),
            pytest.param(False, True, False, id="ids-incoming-only"),
            pytest.param(True, True, False, id="ids-on-both-sides"),
            pytest.param(False, False, True, id="partial-replies-stored"),
        ],
    )
    def test_on_random_conversations(
        self, stored_ids: bool, incoming_ids: bool, partial: bool
    ) -> None:
        rng = random.Random(f"{stored_ids}{incoming_ids}{partial}")
        for _ in range(500):
            stored = random_messages(rng, rng.randint(1, 12), ids=stored_ids, partial=partial)
            incoming = random_messages(rng, rng.randint(1, 12), ids=incoming_ids, partial=False)
            if rng.random() < 0.5:  # make a real overlap likely
                cut = rng.randint(0, len(stored))
                incoming = [*stored[cut:], *incoming]
            assert _overlap(stored, incoming) == pairwise_overlap(stored, incoming)

    def test_surrounding_white_space_is_ignored(self) -> None:
        stored = [Message("user", "q1"), Message("assistant", "a1 ")]
        incoming = [Message("user", " q1"), Message("assistant", "a1"), Message("user", "q2")]
        assert _overlap(stored, incoming) == 2

    def test_a_role_change_breaks_the_run(self) -> None:
        stored = [Message("user", "same"), Message("assistant", "same")]
        incoming = [Message("user", "same"), Message("user", "same")]
        assert _overlap(stored, incoming) == pairwise_overlap(stored, incoming) == 0


class TestAPartialResendOfRepeatedText:
    def test_needs_no_pairwise_comparisons(self, monkeypatch: pytest.MonkeyPatch) -> None:
        compared = 0
        same_as = Message.same_as

        def counting(self: Message, other: Message) -> bool:
            nonlocal compared
            compared += 1
            return same_as(self, other)

        monkeypatch.setattr(Message, "same_as", counting)
        stored = [
            Message("user", "first"),
            *(Message("user", "ok") for _ in range(999)),
            Message("user", "end"),
        ]
        incoming = [Message("user", "ok") for _ in range(1000)]
        merge = merge_history(stored, incoming, complete=False)
        assert merge.attached == len(stored)  # no overlap: every incoming message is new
        assert compared <= len(incoming)  # pairwise comparison from each size took ~500,000
