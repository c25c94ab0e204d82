"""Helix's failure texts are recognised by their exact form and place, and nothing else is."""

from __future__ import annotations

import pytest

from helix_pipeline.helix_failures import FORMS, MAX_FORM_CHARS, hold_from, recognise
from helix_pipeline.testing import CRASH_ANSWER, UNAVAILABLE_JSON, UNAVAILABLE_STREAM

LOGGER = "name 'logger' is not defined"
STEP = "<!-- STEP: what -->"


class TestEachOfHelixsForms:
    @pytest.mark.parametrize(
        ("text", "name", "detail"),
        [
            pytest.param(UNAVAILABLE_STREAM, "unavailable", "", id="unavailable-stream"),
            pytest.param(UNAVAILABLE_JSON, "unavailable", "Bitte spaeter versuchen.", id="json"),
            pytest.param(f"\n\n**Fehler:** {LOGGER}", "error-mid-stream", LOGGER, id="fehler-bold"),
            pytest.param(
                "\n\n**Timeout** - Verarbeitung hat zu lange gedauert. Bitte versuche es erneut.",
                "timeout",
                "Bitte versuche es erneut.",
                id="timeout-stream",
            ),
            pytest.param(
                "Timeout - die Verarbeitung hat zu lange gedauert.", "timeout", "", id="timeout"
            ),
            pytest.param(
                "Fehler bei der Verarbeitung:\n```\nSegmentation fault\n```",
                "claude-crash",
                "Segmentation fault",
                id="claude-crash-stderr",
            ),
            pytest.param("Fehler: Claude hit a limit", "error", "Claude hit a limit", id="fehler"),
            pytest.param("Fehler: No user message found", "error", "No user message found"),
            pytest.param(f"Unerwarteter Fehler: {LOGGER}", "unexpected-error", LOGGER),
            pytest.param(CRASH_ANSWER, "no-answer", "", id="verarbeitung-abgeschlossen"),
            pytest.param(
                "Ich habe deine Anfrage analysiert, aber keine Antwort generiert.",
                "no-answer",
                "",
                id="keine-antwort",
            ),
        ],
    )
    def test_the_form_is_recognised_with_its_detail(
        self, text: str, name: str, detail: str
    ) -> None:
        failure = recognise(text)
        assert failure is not None
        assert (failure.form.name, failure.detail) == (name, detail)
        assert text[: failure.start].strip() == ""

    def test_a_failure_after_part_of_the_answer_starts_where_helix_stopped(self) -> None:
        text = f"Hier ist der Anfang der Antwort\n\n**Fehler:** {LOGGER}"
        failure = recognise(text)
        assert failure is not None
        assert text[: failure.start] == "Hier ist der Anfang der Antwort\n\n"

    def test_every_form_says_what_happened_and_what_to_do(self) -> None:
        for form in FORMS:
            assert form.happened and not form.happened.endswith(".")
            assert form.advice.endswith(".")
            assert "Fehler" not in form.happened + form.advice  # the person reads English

    def test_the_message_quotes_helix_only_where_it_helps(self) -> None:
        crash = recognise(f"Unerwarteter Fehler: {LOGGER}")
        unavailable = recognise(UNAVAILABLE_JSON)
        assert crash is not None and unavailable is not None
        assert crash.message == (
            f"Helix failed while it worked on the answer: {LOGGER}. "
            "Look at Helix's log for the cause, then ask again."
        )
        assert "Bitte" not in unavailable.message

    def test_a_long_detail_is_cut_to_one_short_line(self) -> None:
        failure = recognise("Fehler bei der Verarbeitung:\n```\n" + "x\n" * 400 + "```")
        assert failure is not None
        assert len(failure.detail) <= 300 and "\n" not in failure.detail


class TestAnswersAreNotFailures:
    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("Der Fehler: liegt in Zeile 3.", id="fehler-mid-sentence"),
            pytest.param("Fehlerbehandlung: so geht's", id="fehlerbehandlung"),
            pytest.param("Fehler", id="just-the-word"),
            pytest.param("Antwort mit **Fehler:** mitten im Satz", id="bold-mid-sentence"),
            pytest.param(f"**Fehler:** gefunden\n\nDie Lösung ist ...\n\n{STEP}", id="with-step"),
            pytest.param(f"Fehler: im Code\n\n{STEP}", id="fehler-then-step-marker"),
            pytest.param(f"{CRASH_ANSWER} Die Datei ist geschrieben.", id="more-than-crash-text"),
            pytest.param("Claude Code ist verfuegbar.", id="available"),
            pytest.param("", id="empty"),
        ],
    )
    def test_an_ordinary_answer_is_not_a_failure(self, text: str) -> None:
        assert recognise(text) is None

    def test_a_fehler_paragraph_that_is_not_the_last_one_is_an_answer(self) -> None:
        assert recognise("Intro\n\n**Fehler:** gefunden\n\nDie Lösung folgt.") is None

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("Fehler: " + "x" * MAX_FORM_CHARS, id="start-form"),
            pytest.param("Intro\n\n**Fehler:** " + "x" * MAX_FORM_CHARS, id="paragraph-form"),
        ],
    )
    def test_text_longer_than_any_of_helixs_forms_is_an_answer(self, text: str) -> None:
        assert recognise(text) is None

    def test_helix_fallback_text_with_only_a_step_marker_is_still_no_answer(self) -> None:
        failure = recognise(f"{CRASH_ANSWER}\n\n{STEP}")
        assert failure is not None and failure.form.name == "no-answer"


class TestHoldingBackWhileStreaming:
    @pytest.mark.parametrize(
        "text",
        [
            "Claude",
            "Claude Code ist nicht",
            UNAVAILABLE_STREAM,
            "Fehl",
            "Fehler: x",
            "  ",
            "Verarb",
        ],
    )
    def test_the_beginning_of_a_failure_at_the_start_is_held(self, text: str) -> None:
        assert hold_from(text, 0) == 0

    @pytest.mark.parametrize(
        ("text", "shown", "held"),
        [
            pytest.param("Hallo Welt", 0, 10, id="plain-text-flows"),
            pytest.param("Hallo\n\n**Feh", 0, 5, id="a-paragraph-opening-cut-short"),
            pytest.param("Hallo\n\n**Fehler:** boom", 5, 5, id="a-paragraph-failure"),
            pytest.param("Hallo\n\n", 5, 5, id="white-space-at-the-end-waits"),
            pytest.param("Hallo ", 0, 5, id="a-trailing-space-waits"),
            pytest.param(f"Hallo\n\n**Fehler:** a\n\n{STEP}", 5, 99, id="step-marker-frees-it"),
            pytest.param(f"{CRASH_ANSWER} Die", 0, 31, id="crash-text-continued"),
        ],
    )
    def test_only_what_may_start_a_failure_is_held(self, text: str, shown: int, held: int) -> None:
        assert hold_from(text, shown) == min(held, len(text))

    @pytest.mark.parametrize(
        "opening",
        [pytest.param("Fehler: ", id="start"), pytest.param("A\n\n**Fehler:** ", id="par")],
    )
    def test_no_more_than_the_longest_form_is_ever_held(self, opening: str) -> None:
        text = opening + "x" * (MAX_FORM_CHARS + 1)
        assert hold_from(text, 0) == len(text)

    def test_everything_held_is_either_an_answer_or_a_failure_at_the_end(self) -> None:
        text = "Teil\n\n**Fehler:** kaputt"
        failure = recognise(text)
        assert failure is not None
        assert text[hold_from(text, 0) : failure.start] == "\n\n"  # the blank line waits too
