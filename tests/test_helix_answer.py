"""Reading Helix's answer for the person: the answer shows as it streams, statuses show while
Helix works, and Helix's failure text never shows, however its chunks are cut."""

from __future__ import annotations

import pytest

from helix_pipeline.decorations import Item, Status
from helix_pipeline.helix_answer import AnswerReader, read_whole
from helix_pipeline.testing import (
    CRASH_ANSWER,
    FIRST_CHUNK,
    SEPARATOR,
    UNAVAILABLE_STREAM,
    VALIDATION_HINT,
)

LOGGER = "name 'logger' is not defined"
HINT_CHUNK = VALIDATION_HINT + "\n\n"
STREAMS = {
    "unavailable": [UNAVAILABLE_STREAM],
    "error-mid-stream": [FIRST_CHUNK, ".", f"\n\n**Fehler:** {LOGGER}"],
    "claude-crash": [
        FIRST_CHUNK,
        SEPARATOR,
        HINT_CHUNK,
        SEPARATOR,
        "Verarbeitung ",
        "abgeschlossen.",
    ],
    "timeout": [
        FIRST_CHUNK,
        "\n\n**Timeout** - Verarbeitung hat zu lange gedauert. Bitte versuche es erneut.",
    ],
}
"""Helix b979a99's failure streams, chunk by chunk as it sends them."""


def read(deltas: list[str]) -> tuple[AnswerReader, list[Item]]:
    reader = AnswerReader(clock=lambda: 0.0)
    items = [item for delta in deltas for item in reader.feed(delta)]
    return reader, [*items, *reader.finish()]


def shown(items: list[Item]) -> str:
    return "".join(item for item in items if isinstance(item, str))


def by_characters(deltas: list[str]) -> list[str]:
    return list("".join(deltas))


class TestHelixsFailureStreams:
    @pytest.mark.parametrize("name", list(STREAMS))
    @pytest.mark.parametrize(
        "cut", [pytest.param(False, id="helix-chunks"), pytest.param(True, id="characters")]
    )
    def test_the_failure_is_recognised_and_none_of_its_text_is_shown(
        self, name: str, cut: bool
    ) -> None:
        deltas = by_characters(STREAMS[name]) if cut else STREAMS[name]
        reader, items = read(deltas)
        assert reader.failure is not None
        expected = "no-answer" if name == "claude-crash" else name
        assert reader.failure.form.name == expected
        assert shown(items) == ""
        assert reader.answer == ""

    def test_what_helix_answered_before_its_error_stays_shown(self) -> None:
        reader, items = read(
            [FIRST_CHUNK, SEPARATOR, "Der ", "Anfang ", "steht.", f"\n\n**Fehler:** {LOGGER}"]
        )
        assert reader.failure is not None and reader.failure.detail == LOGGER
        assert shown(items) == reader.answer == "Der Anfang steht."

    def test_an_empty_stream_is_no_failure_and_no_answer(self) -> None:
        reader, items = read([])
        assert (reader.failure, reader.answer, items) == (None, "", [])


class TestAnswers:
    def test_the_answer_flows_word_by_word(self) -> None:
        reader = AnswerReader()
        reader.feed(FIRST_CHUNK)
        reader.feed(SEPARATOR)
        assert reader.feed("Hallo ") == ["Hallo"]
        assert reader.feed("Welt") == [" Welt"]
        assert reader.feed("\n\n") == []
        assert reader.finish() == ["\n\n"]

    def test_a_mention_of_fehler_is_shown_once_the_answer_goes_on(self) -> None:
        reader, items = read(
            [
                FIRST_CHUNK,
                SEPARATOR,
                "Ein ",
                "\n\n**Fehler:** ",
                "ist ",
                "behoben.\n\n",
                "<!-- STEP: what -->",
            ]
        )
        assert reader.failure is None
        assert shown(items) == "Ein \n\n**Fehler:** ist behoben.\n\n<!-- STEP: what -->"

    def test_an_answer_starting_like_a_failure_shows_once_it_outgrows_every_form(self) -> None:
        reader = AnswerReader()
        shown_early = [item for _ in range(300) for item in reader.feed("Fehler: wort ")]
        assert shown(shown_early).startswith("Fehler: wort")  # shown while Helix still streams
        reader.finish()
        assert reader.failure is None

    def test_the_last_status_is_done_only_when_statuses_were_shown(self) -> None:
        with_statuses, _ = read([FIRST_CHUNK, SEPARATOR, "ok"])
        without, _ = read(["ok"])
        assert with_statuses.closing_status("Helix answered") == Status("Helix answered", True)
        assert without.closing_status("Helix answered") is None

    def test_an_unvalidated_answer_is_shown_without_the_hint(self) -> None:
        reader, items = read([FIRST_CHUNK, SEPARATOR, HINT_CHUNK, SEPARATOR, "Die ", "Antwort"])
        assert (reader.failure, shown(items), reader.unvalidated) == (None, "Die Antwort", True)


class TestWholeAnswers:
    @pytest.mark.parametrize(
        ("text", "name"),
        [
            pytest.param(
                "Claude Code ist nicht verfuegbar. Bitte spaeter versuchen.", "unavailable"
            ),
            pytest.param(f"Unerwarteter Fehler: {LOGGER}", "unexpected-error"),
            pytest.param("Fehler bei der Verarbeitung:\n```\nboom\n```", "claude-crash"),
            pytest.param("Fehler: boom", "error"),
            pytest.param("Timeout - die Verarbeitung hat zu lange gedauert.", "timeout"),
            pytest.param("".join(STREAMS["claude-crash"]), "no-answer", id="a-stream-as-text"),
        ],
    )
    def test_a_plain_failure_has_no_answer(self, text: str, name: str) -> None:
        reading = read_whole(text)
        assert reading.failure is not None and reading.failure.form.name == name
        assert reading.answer == ""

    def test_a_plain_unvalidated_answer_loses_its_trailing_hint(self) -> None:
        reading = read_whole(f"Die Antwort{SEPARATOR}{VALIDATION_HINT}")
        assert (reading.answer, reading.failure, reading.unvalidated) == ("Die Antwort", None, True)

    def test_a_crash_answer_after_the_hint_is_still_a_crash(self) -> None:
        reading = read_whole(f"{CRASH_ANSWER}{SEPARATOR}{VALIDATION_HINT}")
        assert reading.failure is not None and reading.failure.form.name == "no-answer"
