"""Messages normalised from what Open WebUI and OpenAI clients send, and when two are the same."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace
from inspect import Parameter, signature
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.messages import Message, content_to_text, message_from_dict, messages_from_dicts

from .conftest import load_fixture


def outlet_messages() -> list[dict[str, Any]]:
    record = load_fixture("openwebui-0.12.4/examples/03_filter_outlet_A-t2.json")
    messages: list[dict[str, Any]] = record["body"]["messages"]
    return messages


class TestContentToText:
    @pytest.mark.parametrize(
        ("content", "text"),
        [
            pytest.param("plain text", "plain text", id="string"),
            pytest.param(None, "", id="none"),
            pytest.param([], "", id="empty-list"),
            pytest.param(
                [{"type": "text", "text": "Look at"}, {"type": "text", "text": "this"}],
                "Look at\nthis",
                id="text-parts-joined-by-lines",
            ),
            pytest.param(
                [{"type": "input_text", "text": "in"}, {"type": "output_text", "text": "out"}],
                "in\nout",
                id="responses-api-parts",
            ),
            pytest.param(
                [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
                "What is in\n[image]",
                id="image-becomes-placeholder",
            ),
            pytest.param([{"type": "input_image", "image_url": "x"}], "[image]", id="input-image"),
            pytest.param(["bare string part"], "bare string part", id="string-part"),
            pytest.param(
                [{"type": "file", "file": {}}, {"type": "text", "text": None}, 7, None],
                "",
                id="unknown-parts-left-out",
            ),
            pytest.param(42, "42", id="number"),
            pytest.param(10**5000, "", id="huge-int"),
        ],
    )
    def test_content_becomes_text(self, content: object, text: str) -> None:
        assert content_to_text(content) == text

    def test_image_data_never_reaches_the_text(self) -> None:
        data_url = "data:image/png;base64," + "A" * 10_000
        text = content_to_text([{"type": "image_url", "image_url": {"url": data_url}}])
        assert "base64" not in text


class TestMessageFromDict:
    @pytest.mark.parametrize(
        ("role", "expected"),
        [
            pytest.param("system", "system", id="system"),
            pytest.param("user", "user", id="user"),
            pytest.param("assistant", "assistant", id="assistant"),
            pytest.param("developer", "system", id="developer-is-system"),
        ],
    )
    def test_known_roles_map_to_helix_roles(self, role: str, expected: str) -> None:
        message = message_from_dict({"role": role, "content": "text"})
        assert message == Message(role=expected, content="text")  # type: ignore[arg-type]

    @pytest.mark.parametrize("role", [pytest.param(r, id=r) for r in ("tool", "function")])
    def test_a_tool_result_is_forwarded_as_an_assistant_note(self, role: str) -> None:
        message = message_from_dict({"role": role, "content": '{"temp": 21}', "tool_call_id": "c1"})
        assert message is not None
        assert message.role == "assistant"
        assert message.content == '[tool result]\n{"temp": 21}'

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param({"role": "critic", "content": "x"}, id="unknown-role"),
            pytest.param({"role": "USER", "content": "x"}, id="upper-case-role"),
            pytest.param({"role": None, "content": "x"}, id="null-role"),
            pytest.param({"role": ["user"], "content": "x"}, id="list-role"),
            pytest.param({"content": "x"}, id="no-role"),
            pytest.param("user: x", id="a-string"),
            pytest.param(None, id="none"),
            pytest.param(["user", "x"], id="a-list"),
        ],
    )
    def test_what_is_not_a_message_is_dropped(self, raw: object) -> None:
        assert message_from_dict(raw) is None

    def test_the_open_webui_id_is_kept_and_other_keys_are_not(self) -> None:
        message = message_from_dict(outlet_messages()[1])
        assert message == Message(
            role="assistant",
            content="backend reply #1 to: [A-t1] Hello, my name is Ana. What is 2+2?",
            message_id="2bf6ab90-bf2e-438d-b58b-849714e0e078",
        )
        assert message.to_wire() == {"role": "assistant", "content": message.content}

    @pytest.mark.parametrize(
        "message_id",
        [pytest.param("", id="empty"), pytest.param(7, id="int"), pytest.param({}, id="dict")],
    )
    def test_an_id_that_is_not_a_string_is_left_out(self, message_id: object) -> None:
        message = message_from_dict({"role": "user", "content": "x", "id": message_id})
        assert message is not None and message.message_id is None

    def test_list_content_reaches_helix_as_a_string(self) -> None:
        raw = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        message = message_from_dict(raw)
        assert message is not None
        assert message.to_wire() == {"role": "user", "content": "hi"}

    @settings(max_examples=150, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["role", "content", "id", "name"]),
            st.none()
            | st.text()
            | st.integers()
            | st.sampled_from(
                ["system", "user", "assistant", "tool", "developer", "function", "ipython"]
            )
            | st.lists(st.dictionaries(st.sampled_from(["type", "text"]), st.text()), max_size=3),
        )
    )
    def test_only_helix_roles_and_string_content_ever_come_out(self, raw: dict[str, Any]) -> None:
        message = message_from_dict(raw)
        if message is not None:
            assert message.role in ("system", "user", "assistant")
            assert isinstance(message.content, str)
            wire = message.to_wire()
            assert set(wire) == {"role", "content"}


# Values a message's keys take in Open WebUI's bodies and in malformed ones.
_VALUES = (
    st.none()
    | st.text(max_size=5)
    | st.sampled_from(["", " ", "user", "assistant", "system", "developer", "tool", "USER"])
    | st.integers()
    | st.booleans()
    | st.lists(
        st.dictionaries(
            st.sampled_from(["type", "text", "content"]),
            st.sampled_from(["text", "output_text", "image_url", "message", "hi", ""]) | st.none(),
        ),
        max_size=2,
    )
)
_RAW_MESSAGES = st.dictionaries(
    st.sampled_from(["role", "content", "id", "output", "name"]), _VALUES
)


class StrRole(str):
    """A string of another class: read like any string, though not by the plain-dict shortcut."""


class TestPlainDictsReadLikeAnyMapping:
    """A plain dict (what Open WebUI sends) is read by a shortcut; any other mapping by the
    general rules. Both must give the same message for the same keys and values."""

    @settings(max_examples=400, deadline=None)
    @given(_RAW_MESSAGES)
    def test_well_formed_and_malformed_dicts_give_the_general_result(
        self, raw: dict[str, Any]
    ) -> None:
        assert message_from_dict(raw) == message_from_dict(MappingProxyType(raw))

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param({"role": "user", "content": "hi", "id": "m1"}, id="open-webui"),
            pytest.param({"role": "developer", "content": "be brief"}, id="alias-role"),
            pytest.param({"role": "user", "content": "hi", "id": ""}, id="empty-id"),
            pytest.param({"role": "user", "content": "hi", "id": 7}, id="int-id"),
            pytest.param({"role": "assistant", "content": "", "output": []}, id="empty-content"),
            pytest.param({"role": "tool", "content": "21"}, id="tool-role"),
            pytest.param({"role": "critic", "content": "x"}, id="unknown-role"),
            pytest.param({"role": StrRole("user"), "content": StrRole("x")}, id="str-subclasses"),
            pytest.param({"role": "user", "content": ["a"]}, id="list-content"),
        ],
    )
    def test_each_kind_of_dict_gives_the_general_result(self, raw: dict[str, Any]) -> None:
        assert message_from_dict(raw) == message_from_dict(MappingProxyType(raw))

    def test_a_list_of_dicts_reads_as_the_same_list_of_mappings(self) -> None:
        raw = [*outlet_messages(), {"role": "assistant", "content": None}, "junk", {"role": 3}]
        assert messages_from_dicts(raw) == messages_from_dicts(
            [MappingProxyType(item) if isinstance(item, dict) else item for item in raw]
        )


class TestMessageObjects:
    def test_the_constructor_takes_the_fields_in_order_with_their_defaults(self) -> None:
        parameters = list(signature(Message).parameters.values())
        assert [(p.name, p.default) for p in parameters] == [
            (f.name, Parameter.empty if f.default is f.default_factory else f.default)
            for f in fields(Message)
        ]

    def test_every_field_is_set_and_none_can_be_changed(self) -> None:
        message = Message("user", "x", "m1", True, 1.5)
        assert (message.role, message.content, message.message_id) == ("user", "x", "m1")
        assert (message.partial, message.created_at) == (True, 1.5)
        assert replace(message, content="y") == Message("user", "y", "m1", True, 1.5)
        with pytest.raises(FrozenInstanceError):
            message.content = "changed"  # type: ignore[misc]
        assert hash(message) == hash(Message("user", "x", "m1", True, 1.5))


class TestAReplyInOutput:
    """Open WebUI 0.10's outlet keeps an assistant reply in ``output``, with ``content: ""``."""

    def test_every_reply_of_a_recorded_0_10_outlet_reads_its_output_text(self) -> None:
        record = load_fixture("openwebui-0.10.2/03_chat_outlet_A-t2.json")
        raw = record["body"]["body"]["messages"]
        replies = [m for m in raw if m["role"] == "assistant"]
        assert replies and all(m["content"] == "" for m in replies)

        messages = messages_from_dicts(raw)

        assert [m.content for m in messages if m.role == "assistant"] == [
            m["output"][0]["content"][0]["text"] for m in replies
        ]
        assert [m.message_id for m in messages] == [m["id"] for m in raw]

    def test_content_wins_when_it_holds_text(self) -> None:
        raw = {
            "role": "assistant",
            "content": "the content",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "other"}]}],
        }
        assert message_from_dict(raw) == Message("assistant", "the content")

    def test_only_message_items_give_text_one_line_each(self) -> None:
        raw = {
            "role": "assistant",
            "content": None,
            "output": [
                {"type": "reasoning", "content": [{"type": "output_text", "text": "thinking"}]},
                {"type": "message", "content": [{"type": "output_text", "text": "first"}]},
                {"type": "function_call", "name": "f", "arguments": "{}"},
                {"type": "message", "content": [{"type": "output_text", "text": "second"}]},
                "junk",
            ],
        }
        assert message_from_dict(raw) == Message("assistant", "first\nsecond")

    @pytest.mark.parametrize(
        "output",
        [None, "text", {"type": "message"}, [], [{"type": "message", "content": None}]],
        ids=["none", "string", "dict", "empty", "no-content"],
    )
    def test_an_output_without_text_leaves_the_reply_empty(self, output: object) -> None:
        assert message_from_dict({"role": "assistant", "content": "", "output": output}) == (
            Message("assistant", "")
        )


class TestMessagesFromDicts:
    def test_a_real_outlet_history_keeps_order_roles_and_ids(self) -> None:
        raw = outlet_messages()
        messages = messages_from_dicts(raw)
        assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
        assert [m.message_id for m in messages] == [r["id"] for r in raw]
        assert [m.content for m in messages] == [r["content"] for r in raw]

    def test_entries_that_are_not_messages_are_dropped_in_place(self) -> None:
        raw = [{"role": "user", "content": "a"}, "junk", None, {"role": "x"}, {"role": "assistant"}]
        assert messages_from_dicts(raw) == [
            Message(role="user", content="a"),
            Message(role="assistant", content=""),
        ]

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(None, id="none"),
            pytest.param("user: hi", id="string"),
            pytest.param(b"bytes", id="bytes"),
            pytest.param({"role": "user", "content": "hi"}, id="one-dict"),
            pytest.param(42, id="int"),
        ],
    )
    def test_a_value_that_is_no_list_gives_no_messages(self, raw: object) -> None:
        assert messages_from_dicts(raw) == []

    def test_a_tuple_or_generator_of_messages_is_read(self) -> None:
        raw = ({"role": "user", "content": str(i)} for i in range(3))
        assert [m.content for m in messages_from_dicts(raw)] == ["0", "1", "2"]


class TestSameAs:
    def test_ids_decide_when_both_messages_have_one(self) -> None:
        stored = Message("user", "Hello", message_id="m1")
        assert stored.same_as(Message("user", "Hello, edited", message_id="m1"))
        assert not stored.same_as(Message("user", "Hello", message_id="m2"))

    @pytest.mark.parametrize(
        ("stored_id", "incoming_id"),
        [
            pytest.param("m1", None, id="only-stored-has-an-id"),
            pytest.param(None, "m1", id="only-incoming-has-an-id"),
            pytest.param(None, None, id="neither-has-an-id"),
        ],
    )
    def test_without_two_ids_the_text_decides(
        self, stored_id: str | None, incoming_id: str | None
    ) -> None:
        stored = Message("user", "Hello", message_id=stored_id)
        assert stored.same_as(Message("user", "Hello", message_id=incoming_id))
        assert not stored.same_as(Message("user", "Hello there", message_id=incoming_id))

    def test_surrounding_white_space_is_ignored(self) -> None:
        assert Message("assistant", "  Four.\n").same_as(Message("assistant", "Four."))

    def test_inner_white_space_and_case_count(self) -> None:
        assert not Message("user", "a b").same_as(Message("user", "a  b"))
        assert not Message("user", "Yes").same_as(Message("user", "yes"))

    def test_another_role_is_never_the_same_message(self) -> None:
        assert not Message("user", "Hi", message_id="m1").same_as(
            Message("assistant", "Hi", message_id="m1")
        )

    def test_a_stored_partial_reply_matches_the_longer_text_open_webui_kept(self) -> None:
        stored = Message("assistant", "backend reply #1 to: [A-t1] Hel", partial=True)
        kept = Message("assistant", "backend reply #1 to: [A-t1] Hel\n\n(Helix stopped: timeout)")
        assert stored.same_as(kept)

    def test_a_complete_stored_reply_does_not_match_a_longer_text(self) -> None:
        stored = Message("assistant", "backend reply #1")
        assert not stored.same_as(Message("assistant", "backend reply #1 and more"))

    def test_a_partial_reply_does_not_match_a_text_that_starts_otherwise(self) -> None:
        stored = Message("assistant", "The answer is 4", partial=True)
        assert not stored.same_as(Message("assistant", "The answer"))
        assert not stored.same_as(Message("assistant", "Another answer is 4"))

    def test_an_empty_partial_reply_does_not_match_every_reply(self) -> None:
        assert not Message("assistant", "  ", partial=True).same_as(Message("assistant", "Hi"))

    def test_only_the_stored_side_being_partial_counts(self) -> None:
        incoming = Message("assistant", "Hel", partial=True)
        assert not Message("assistant", "Hello").same_as(incoming)

    def test_with_id_sets_only_the_id(self) -> None:
        message = Message("user", "x", partial=True, created_at=1.0)
        assert message.with_id("m9") == Message("user", "x", "m9", partial=True, created_at=1.0)
