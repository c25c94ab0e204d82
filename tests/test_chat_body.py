"""The repair of bodies the Pipelines server's schema refuses (checked against the real server in
tests/test_valves_real_server.py)."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.chat_body import NO_MESSAGES, nothing_to_send, repair_chat_body
from helix_pipeline.conversation import PRIVATE_KEY

USER = {"role": "user", "content": "hi"}


class TestRepairChatBody:
    def test_an_acceptable_body_is_left_as_it_is(self) -> None:
        parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]
        messages = [USER, {"role": "user", "content": parts, "id": "m1"}]
        body = {"messages": messages, "stream": True}
        assert repair_chat_body(body) == []
        assert body["messages"] is messages

    @pytest.mark.parametrize(
        ("messages", "repaired"),
        [
            pytest.param(
                [{"role": "assistant", "content": None, "tool_calls": []}],
                [{"role": "assistant", "content": "", "tool_calls": []}],
                id="content-null",
            ),
            pytest.param([{"role": "user"}], [{"role": "user", "content": ""}], id="missing"),
            pytest.param(
                [{"role": "user", "content": 5}], [{"role": "user", "content": "5"}], id="int"
            ),
            pytest.param(
                [{"role": "user", "content": [5, {"type": "text", "text": "a"}]}],
                [{"role": "user", "content": "a"}],
                id="junk-parts",
            ),
            pytest.param([USER, "hi", {"content": "x"}, {"role": 1}], [USER], id="dropped"),
            pytest.param([None, USER, None], [USER], id="null-entries-dropped"),
        ],
    )
    def test_messages_become_what_the_server_accepts(
        self, messages: list[Any], repaired: list[Any]
    ) -> None:
        body = {"messages": messages}
        repair_chat_body(body)
        assert body["messages"] == repaired

    @pytest.mark.parametrize("messages", [None, "hi", {"role": "user"}, 5])
    def test_a_missing_list_becomes_empty_with_a_note(self, messages: Any) -> None:
        body = {"messages": messages}
        assert repair_chat_body(body) == [NO_MESSAGES]
        assert body["messages"] == []
        assert repair_chat_body(other := {}) == [NO_MESSAGES] and other["messages"] == []

    @pytest.mark.parametrize(
        ("stream", "now"), [(None, True), ("false", False), ("abc", True), (0, False)]
    )
    def test_stream_becomes_a_boolean(self, stream: Any, now: bool) -> None:
        body = {"messages": [], "stream": stream}
        repair_chat_body(body)
        assert body["stream"] is now

    def test_the_original_messages_are_not_changed(self) -> None:
        message = {"role": "user", "content": None}
        repair_chat_body({"messages": [message]})
        assert message["content"] is None


_VALUES = (
    st.none()
    | st.sampled_from(["", "user", "assistant", "hi"])
    | st.integers()
    | st.lists(
        st.one_of(
            st.integers(),
            st.dictionaries(
                st.sampled_from(["type", "text"]), st.sampled_from(["text", "image_url", "a"])
            ),
        ),
        max_size=2,
    )
)
_MESSAGES = st.lists(
    st.dictionaries(st.sampled_from(["role", "content", "id"]), _VALUES) | st.none(), max_size=4
)


class TestPlainDictsAreRepairedLikeAnyMapping:
    """Plain dicts whose role and content are strings (what Open WebUI sends) are kept by a
    shortcut; the general rules must keep them too, and treat every other dict the same way."""

    @settings(max_examples=300, deadline=None)
    @given(_MESSAGES)
    def test_the_same_repairs_and_messages_as_for_other_mappings(self, messages: list[Any]) -> None:
        plain = {"messages": copy.deepcopy(messages)}
        general = {
            "messages": [MappingProxyType(m) if isinstance(m, dict) else m for m in messages]
        }
        assert repair_chat_body(plain) == repair_chat_body(general)
        assert plain["messages"] == [dict(m) for m in general["messages"]]

    def test_a_well_formed_open_webui_body_is_kept_as_it_is(self) -> None:
        messages = [{"role": "user", "content": "hi", "id": "m1"}, {"role": "x", "content": ""}]
        body = {"messages": messages, "stream": False}
        assert repair_chat_body(body) == []
        assert body["messages"] is messages and body == {"messages": messages, "stream": False}


class TestNothingToSend:
    def test_it_says_why(self) -> None:
        missing = nothing_to_send({PRIVATE_KEY: {"repairs": [NO_MESSAGES]}})
        assert NO_MESSAGES in str(missing)
        assert "no user message" in str(nothing_to_send({}))
