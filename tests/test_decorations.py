"""Helix's progress decorations become statuses, wherever the chunk boundaries fall."""

from __future__ import annotations

import pytest

from helix_pipeline.decorations import DecorationFilter, Item, Status, strip_decorations
from helix_pipeline.testing import FIRST_CHUNK, SEPARATOR, VALIDATION_HINT

STEP = "<!-- STEP: what -->"
ANSWER = f"Hallo Welt.\n\n{STEP}"
HELIX_STREAM = [
    FIRST_CHUNK,
    "\n[Read] ",
    ".",
    ".",
    "\n[Bash] ",
    SEPARATOR,
    "Hallo ",
    "Welt.\n\n",
    STEP,
]


def run(deltas: list[str], clock: list[float] | None = None) -> list[Item]:
    times = iter(clock or [0.0] * 100)
    decorations = DecorationFilter(clock=lambda: next(times))
    items: list[Item] = []
    for delta in deltas:
        items.extend(decorations.feed(delta))
    return [*items, *decorations.finish()]


def text_of(items: list[Item]) -> str:
    return "".join(item for item in items if isinstance(item, str))


def statuses_of(items: list[Item]) -> list[str]:
    return [item.description for item in items if isinstance(item, Status)]


class TestHelixsStream:
    def test_the_answer_is_the_text_after_the_separator(self) -> None:
        assert text_of(run(HELIX_STREAM)) == ANSWER

    def test_each_decoration_is_a_status_in_order(self) -> None:
        clock = [0.0, 10.0, 20.0, 20.0]
        assert statuses_of(run(HELIX_STREAM, clock)) == [
            "Helix is starting Claude Code…",
            "Claude Code is using Read…",
            "Helix is still working (10 s)…",
            "Helix is still working (20 s)…",
            "Claude Code is using Bash…",
            "Helix is writing the answer…",
        ]

    def test_statuses_come_before_the_answer_text(self) -> None:
        items = run(HELIX_STREAM)
        first_text = next(i for i, item in enumerate(items) if isinstance(item, str))
        assert all(isinstance(item, Status) for item in items[:first_text])

    @pytest.mark.parametrize("size", [1, 2, 3, 7])
    def test_chunk_boundaries_anywhere_give_the_same_result(self, size: int) -> None:
        whole = "".join(HELIX_STREAM)
        pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
        items = run(pieces)
        assert text_of(items) == ANSWER
        assert statuses_of(items)[0] == "Helix is starting Claude Code…"
        assert statuses_of(items)[-1] == "Helix is writing the answer…"
        assert "Claude Code is using Bash…" in statuses_of(items)

    def test_step_markers_are_answer_text(self) -> None:
        assert STEP in text_of(run(HELIX_STREAM))

    def test_the_validation_hint_is_a_status_and_not_answer_text(self) -> None:
        deltas = [FIRST_CHUNK, SEPARATOR, VALIDATION_HINT + "\n\n", SEPARATOR, "Die ", "Antwort"]
        decorations = DecorationFilter()
        items = [item for delta in deltas for item in decorations.feed(delta)]
        items += decorations.finish()
        assert text_of(items) == "Die Antwort"
        assert "Helix could not fully validate this answer" in statuses_of(items)
        assert decorations.unvalidated

    def test_helixs_error_text_in_the_prelude_ends_the_decorations(self) -> None:
        items = run([FIRST_CHUNK, ".", "\n\n**Fehler:** boom"])
        assert text_of(items) == "**Fehler:** boom"


class TestOtherAnswers:
    @pytest.mark.parametrize(
        "deltas",
        [
            pytest.param(["Claude Code ist nicht verfuegbar."], id="helix-unavailable"),
            pytest.param(["Eine ", "Antwort ", "ohne ", "Deko.\n\n---\n\nmit Linie"], id="plain"),
            pytest.param(["...", "und so weiter"], id="leading-dots"),
            pytest.param(["[Starte", " etwas anderes]"], id="almost-the-first-chunk"),
        ],
    )
    def test_an_answer_without_helixs_first_chunk_passes_unchanged(self, deltas: list[str]) -> None:
        items = run(deltas)
        assert text_of(items) == "".join(deltas)
        assert statuses_of(items) == []

    def test_a_stream_of_decorations_only_has_no_answer_text(self) -> None:
        assert text_of(run([FIRST_CHUNK, ".", "\n\n"])) == ""

    def test_a_status_is_open_webuis_status_event(self) -> None:
        assert Status("Helix is working", done=True).event() == {
            "type": "status",
            "data": {"description": "Helix is working", "done": True},
        }


class TestWholeTexts:
    def test_a_streamed_answer_kept_as_text_loses_its_decorations(self) -> None:
        assert strip_decorations("".join(HELIX_STREAM)) == (ANSWER, False)

    def test_a_plain_answers_trailing_hint_is_removed_and_reported(self) -> None:
        assert strip_decorations(f"Die Antwort{SEPARATOR}{VALIDATION_HINT}") == (
            "Die Antwort",
            True,
        )

    def test_an_answer_is_left_as_it_is(self) -> None:
        assert strip_decorations(ANSWER) == (ANSWER, False)
