"""The SSE reader on byte-level input: any chunk boundaries, any line breaks, Helix's quirks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from helix_pipeline.errors import BackendError, BackendProtocolError
from helix_pipeline.sse import (
    ServerSentEvent,
    completion_content,
    describe_error,
    iter_deltas,
    iter_events,
    iter_lines,
)


def chunk(content: str | None, role: str | None = None, finish: str | None = None) -> str:
    """One Helix stream event, written as Helix writes it (default json.dumps)."""
    payload = {
        "id": "chatcmpl-1a2b3c4d",
        "object": "chat.completion.chunk",
        "created": 1764115200,
        "model": "helix-consultant",
        "choices": [
            {"index": 0, "delta": {"role": role, "content": content}, "finish_reason": finish}
        ],
    }
    return f"data: {json.dumps(payload)}\n\n"


def sse_body(*deltas: str, done: bool = True) -> bytes:
    """A whole Helix stream: the deltas, the final chunk with nulls, and ``[DONE]``."""
    events = [chunk(d, role="assistant" if i == 0 else None) for i, d in enumerate(deltas)]
    events.append(chunk(None, finish="stop"))
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def split_every(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class TestLines:
    @pytest.mark.parametrize(
        "chunks",
        [
            pytest.param([b"a\nb\n"], id="lf"),
            pytest.param([b"a\r\nb\r\n"], id="crlf"),
            pytest.param([b"a\rb\r"], id="cr"),
            pytest.param([b"a\r", b"\nb\r\n"], id="crlf-split-between-chunks"),
            pytest.param([b"a", b"\n", b"b", b"\n"], id="line-split-between-chunks"),
            pytest.param([b"a\nb"], id="last-line-without-break"),
        ],
    )
    def test_every_line_break_style_gives_the_same_lines(self, chunks: list[bytes]) -> None:
        assert list(iter_lines(chunks)) == ["a", "b"]

    def test_a_multibyte_character_split_between_chunks_is_decoded_whole(self) -> None:
        data = "Grüße ✓\n".encode()
        assert list(iter_lines(split_every(data, 1))) == ["Grüße ✓"]

    def test_invalid_utf8_becomes_a_replacement_character_instead_of_failing(self) -> None:
        assert list(iter_lines([b"ok \xff\n"])) == ["ok \ufffd"]

    def test_blank_lines_are_kept_because_they_end_events(self) -> None:
        assert list(iter_lines([b"data: x\n\ndata: y\r\n\r\n"])) == ["data: x", "", "data: y", ""]


class TestEvents:
    def test_comments_and_blank_lines_are_skipped(self) -> None:
        lines = [": keep-alive", "", "", "data: one", "", ":ping", "data: two", ""]
        assert [e.data for e in iter_events(lines)] == ["one", "two"]

    def test_multi_line_data_is_joined_with_newlines(self) -> None:
        assert list(iter_events(["data: a", "data:b", ""])) == [ServerSentEvent("a\nb")]

    def test_event_names_ids_and_retry_are_read_but_not_data(self) -> None:
        events = list(iter_events(["event: error", "id: 7", "retry: 10", "data: x", ""]))
        assert events == [ServerSentEvent("x", "error")]

    def test_an_event_without_the_final_blank_line_is_still_delivered(self) -> None:
        assert [e.data for e in iter_events(["data: last"])] == ["last"]

    def test_lines_that_are_no_field_are_collected_as_stray(self) -> None:
        stray: list[str] = []
        assert list(iter_events(['{"a": 1,', ' "b": 2}'], stray)) == []
        assert stray == ['{"a": 1,', ' "b": 2}']


class TestDeltas:
    @pytest.mark.parametrize("size", [1, 3, 7, 64, 100_000])
    def test_deltas_are_the_same_whatever_the_chunk_size(self, size: int) -> None:
        body = sse_body("[Starte Claude Code...]\n\n", ".", "\n\n---\n\n", "Hallo ", "Welt")
        assert list(iter_deltas(split_every(body, size))) == [
            "[Starte Claude Code...]\n\n",
            ".",
            "\n\n---\n\n",
            "Hallo ",
            "Welt",
        ]

    def test_crlf_streams_are_read_like_lf_streams(self) -> None:
        body = sse_body("a", "b").replace(b"\n", b"\r\n")
        assert list(iter_deltas([body])) == ["a", "b"]

    def test_done_stops_reading_and_is_never_forwarded(self) -> None:
        body = sse_body("a") + chunk("after done").encode()
        assert list(iter_deltas([body])) == ["a"]

    def test_null_role_null_content_and_empty_content_yield_nothing(self) -> None:
        body = (chunk(None, role="assistant") + chunk("") + chunk("x") + chunk(None)).encode()
        assert list(iter_deltas([body + b"data: [DONE]\n\n"])) == ["x"]

    def test_helix_markers_and_white_space_pass_through_unchanged(self) -> None:
        deltas = ["\n\n", "<!-- STEP: what -->", "  "]
        assert list(iter_deltas([sse_body(*deltas)])) == deltas

    def test_non_ascii_escaped_by_json_dumps_arrives_as_text(self) -> None:
        assert list(iter_deltas([sse_body("Grüße ✓")])) == ["Grüße ✓"]

    def test_comment_and_keep_alive_lines_between_chunks_are_ignored(self) -> None:
        body = b": ping\n\n" + chunk("a").encode() + b":\n\n" + sse_body("b")
        assert list(iter_deltas([body])) == ["a", "b"]

    def test_a_stream_that_ends_without_done_keeps_what_arrived(self) -> None:
        assert list(iter_deltas([sse_body("a", "b", done=False)])) == ["a", "b"]

    def test_a_stream_that_ends_without_done_or_content_is_a_protocol_error(self) -> None:
        with pytest.raises(BackendProtocolError, match="Helix answered nothing") as caught:
            list(iter_deltas([chunk(None, role="assistant").encode()]))
        assert "Helix's log" in str(caught.value)
        assert "HELIX_BASE_URL" not in str(caught.value)

    def test_an_empty_body_is_helix_answering_nothing(self) -> None:
        with pytest.raises(BackendProtocolError, match="Helix answered nothing"):
            list(iter_deltas([]))

    def test_an_empty_answer_with_done_is_simply_empty(self) -> None:
        assert list(iter_deltas([sse_body()])) == []

    def test_a_malformed_chunk_is_logged_and_skipped(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        body = chunk("a").encode() + b'data: {"broken": \n\n' + sse_body("b")
        with caplog.at_level(logging.WARNING, logger="helix_pipeline.sse"):
            assert list(iter_deltas([body])) == ["a", "b"]
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "malformed chunk" in caplog.records[0].getMessage()

    def test_a_chunk_of_unknown_shape_is_skipped(self) -> None:
        body = b'data: {"usage": {"total_tokens": 3}}\n\n' + sse_body("a")
        assert list(iter_deltas([body])) == ["a"]

    @pytest.mark.parametrize(
        ("event", "message"),
        [
            pytest.param(
                'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
                "overloaded",
                id="openai-error-object",
            ),
            pytest.param(
                'data: {"error": "Internal server error", "type": "RuntimeError", '
                '"message": "boom"}\n\n',
                "RuntimeError: boom",
                id="helix-flat-error",
            ),
            pytest.param(
                "event: error\ndata: upstream gone\n\n", "upstream gone", id="error-event"
            ),
        ],
    )
    def test_an_error_inside_the_stream_raises(self, event: str, message: str) -> None:
        body = chunk("a").encode() + event.encode() + sse_body("b")
        deltas = iter_deltas([body])
        assert next(deltas) == "a"
        with pytest.raises(BackendError, match=message):
            next(deltas)

    def test_a_plain_json_completion_sent_instead_of_a_stream_is_yielded_once(self) -> None:
        completion = {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
        }
        body = json.dumps(completion, indent=2).encode()
        assert list(iter_deltas(split_every(body, 5))) == ["whole"]

    def test_a_plain_json_error_sent_instead_of_a_stream_raises(self) -> None:
        with pytest.raises(BackendError, match="Too many messages"):
            list(iter_deltas([b'{"detail": "Too many messages: 120. Maximum allowed: 100"}']))

    def test_text_that_is_neither_a_stream_nor_json_is_a_protocol_error(self) -> None:
        with pytest.raises(BackendProtocolError, match="neither an event stream nor JSON"):
            list(iter_deltas([b"<html>oops</html>"]))

    def test_nothing_at_all_is_a_protocol_error(self) -> None:
        with pytest.raises(BackendProtocolError):
            list(iter_deltas([]))


class TestPayloadShapes:
    @pytest.mark.parametrize(
        ("payload", "text"),
        [
            pytest.param({"choices": [{"delta": {"content": "d"}}]}, "d", id="stream-delta"),
            pytest.param({"choices": [{"message": {"content": "m"}}]}, "m", id="completion"),
            pytest.param({"choices": [{"text": "t"}]}, "t", id="legacy-text"),
            pytest.param({"choices": [{"delta": {"content": None}}]}, None, id="null-content"),
            pytest.param({"choices": []}, None, id="no-choices"),
            pytest.param(["not", "a", "mapping"], None, id="list"),
        ],
    )
    def test_completion_content_reads_every_openai_shape(self, payload: object, text: str) -> None:
        assert completion_content(payload) == text

    @pytest.mark.parametrize(
        ("payload", "summary"),
        [
            pytest.param({"detail": "Too many messages: 120"}, "Too many messages: 120", id="400"),
            pytest.param(
                {
                    "detail": [
                        {
                            "type": "string_type",
                            "loc": ["body", "messages", 0, "content"],
                            "msg": "Input should be a valid string",
                        }
                    ]
                },
                "messages.0.content: Input should be a valid string",
                id="422",
            ),
            pytest.param(
                {"error": "Internal server error", "type": "KeyError", "message": "'x'"},
                "KeyError: 'x'",
                id="helix-500",
            ),
            pytest.param({"error": {"message": "bad key"}}, "bad key", id="openai"),
            pytest.param({"error": "just a string"}, "just a string", id="error-string"),
            pytest.param({"choices": []}, None, id="no-error"),
        ],
    )
    def test_describe_error_summarises_every_error_shape(
        self, payload: object, summary: str | None
    ) -> None:
        assert describe_error(payload) == summary

    def test_a_long_422_list_names_the_first_three_and_counts_the_rest(self) -> None:
        items = [{"loc": ["body", "messages", i, "content"], "msg": "bad"} for i in range(5)]
        summary = describe_error({"detail": items})
        assert summary is not None
        assert summary.count("bad") == 3
        assert summary.endswith("and 2 more")
