"""Conversation identity, read from the real Open WebUI 0.12.4 payloads and from hostile ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.conversation import (
    ANONYMOUS_USER,
    PRIVATE_KEY,
    ChatKind,
    Conversation,
    ConversationKey,
    clean_id,
    header_safe,
    helix_session_id,
    read_conversation,
    stable_conversation_id,
)
from helix_pipeline.messages import messages_from_dicts

from .conftest import FIXTURES, load_fixture
from .openwebui_releases import OPENWEBUI_0_6, RELEASES, Release, chat_turns, is_task

OWUI = "openwebui-0.12.4"
RUN1 = FIXTURES / OWUI / "run1_forward_headers"
RUN3 = FIXTURES / OWUI / "run3_plain_api"
USER_ID = "55add4cf-2ad0-40f4-9334-c6eb6d9eacf1"
CHAT_A = "8854fe74-68d4-4c99-9c9d-c0d0c58e1887"
CHAT_E = "cd1e8527-676d-43a7-af82-97301c0f2d7f"
TASKS = ("title_generation", "tags_generation", "follow_up_generation", "query_generation")


def example(name: str) -> dict[str, Any]:
    record: dict[str, Any] = load_fixture(f"{OWUI}/examples/{name}.json")
    return record


def records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            yield index, json.loads(line)


def inlet(chat_id: object = CHAT_A, **metadata: object) -> dict[str, Any]:
    """A minimal 0.5+ inlet body with one user message."""
    return {
        "messages": [{"role": "user", "content": "Hello"}],
        "metadata": {"chat_id": chat_id, "message_id": "m-2", **metadata},
    }


def last_user_text(body: dict[str, Any]) -> str:
    texts = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return str(texts[-1])


class TestReadingRealOpenWebUIBodies:
    def test_a_turn_inlet_gives_chat_message_session_and_user_ids(self) -> None:
        record = example("01_filter_inlet_A-t1_chat_backend_model")
        conversation = read_conversation(record["body"], record["user"])
        assert conversation == Conversation(
            kind=ChatKind.SAVED,
            user_id=USER_ID,
            conversation_id=CHAT_A,
            chat_id=CHAT_A,
            task=None,
            message_id="2bf6ab90-bf2e-438d-b58b-849714e0e078",
            user_message_id="ad101b8f-cacc-48e7-bc00-9497760e39f6",
            chat_turn=True,
        )

    def test_a_second_turn_inlet_names_its_own_message_ids(self) -> None:
        record = example("02_filter_inlet_A-t2_chat_backend_model")
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.message_id == "e65aa4f2-4aa9-492e-b315-8f0ddcd59f53"
        assert conversation.user_message_id == "dba86c3d-ca3f-4394-8cb6-92efe66f7d9a"

    def test_an_outlet_gives_the_top_level_chat_id_and_the_assistant_message_id(self) -> None:
        record = example("03_filter_outlet_A-t2")
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.kind is ChatKind.SAVED
        assert conversation.key == ConversationKey(USER_ID, CHAT_A)
        assert conversation.message_id == "e65aa4f2-4aa9-492e-b315-8f0ddcd59f53"

    @pytest.mark.parametrize(
        ("name", "task"),
        [
            pytest.param(
                "04_filter_inlet_A-t1_title_generation_task", "title_generation", id="title"
            ),
            pytest.param(
                "05_filter_inlet_A-t1_follow_up_task", "follow_up_generation", id="follow-up"
            ),
        ],
    )
    def test_a_background_task_is_a_task_of_the_same_chat(self, name: str, task: str) -> None:
        record = example(name)
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.kind is ChatKind.TASK
        assert conversation.is_task
        assert conversation.task == task
        assert conversation.chat_id == CHAT_A
        assert conversation.message_id is None

    def test_a_pipe_body_with_a_top_level_chat_id_is_that_saved_chat(self) -> None:
        record = example("11_pipe_with_inlet_E-t2_pipe_body")
        body = record["body"]
        conversation = read_conversation(body, body["user"])
        assert conversation.kind is ChatKind.SAVED
        assert conversation.key == ConversationKey(USER_ID, CHAT_E)

    def test_a_pipe_body_without_our_key_is_an_api_call_of_its_user(self) -> None:
        body = example("07_pipe_B-t2_stream")["body"]
        conversation = read_conversation(body, body["user"])
        assert conversation.kind is ChatKind.API
        assert conversation.chat_id is None
        assert conversation.user_id == USER_ID

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("21_plain_api_inlet_no_chat", id="inlet-empty-chat-id"),
            pytest.param("22_plain_api_outlet_no_chat", id="outlet-empty-chat-id"),
        ],
    )
    def test_a_plain_api_call_is_an_api_conversation(self, name: str) -> None:
        record = example(name)
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.kind is ChatKind.API
        assert conversation.chat_id is None
        assert conversation.conversation_id.startswith("api-")

    def test_a_plain_api_inlet_and_its_outlet_name_the_same_conversation(self) -> None:
        inlet_record = example("21_plain_api_inlet_no_chat")
        outlet_record = example("22_plain_api_outlet_no_chat")
        assert (
            read_conversation(inlet_record["body"], inlet_record["user"]).key
            == read_conversation(outlet_record["body"], outlet_record["user"]).key
        )

    def test_an_open_webui_0_4_body_with_top_level_ids_is_read(self) -> None:
        body = {
            "chat_id": "c-04",
            "id": "assistant-04",
            "session_id": "socket-04",
            "messages": [{"role": "user", "content": "hi"}],
        }
        conversation = read_conversation(body, {"id": "u-04", "role": "user"})
        assert (conversation.kind, conversation.chat_id) == (ChatKind.SAVED, "c-04")
        assert conversation.message_id == "assistant-04"


def _filter_cases() -> Iterator[Any]:
    for path in (RUN1 / "filter.jsonl", RUN1 / "pipe_inlet.jsonl", RUN3 / "filter.jsonl"):
        for index, record in records(path):
            if record.get("hook") not in ("inlet", "outlet"):
                continue
            yield pytest.param(
                record, id=f"{path.parent.name}-{path.stem}-{index}-{record['hook']}"
            )


class TestEveryRecordedFilterCallClassifies:
    @pytest.mark.parametrize("record", list(_filter_cases()))
    def test_tasks_are_tasks_and_turns_are_their_chat(self, record: dict[str, Any]) -> None:
        body = record["body"]
        metadata = body.get("metadata") or {}
        conversation = read_conversation(body, record["user"])
        assert conversation.user_id == USER_ID
        if metadata.get("task"):
            assert conversation.kind is ChatKind.TASK
            assert conversation.task == metadata["task"]
            assert conversation.chat_id == metadata["chat_id"]
            return
        chat_id = metadata.get("chat_id") if record["hook"] == "inlet" else body["chat_id"]
        if chat_id == "":
            assert conversation.kind is ChatKind.API
            return
        assert conversation.kind is ChatKind.SAVED
        assert conversation.conversation_id == chat_id
        if record["hook"] == "outlet":
            assert conversation.message_id == body["id"]
        else:
            assert conversation.message_id == metadata["message_id"]


def _pipe_cases() -> Iterator[Any]:
    for path in (RUN1 / "pipe.jsonl", RUN3 / "pipe.jsonl"):
        for index, record in records(path):
            yield pytest.param(record, id=f"{path.parent.name}-pipe-{index}")


class TestEveryRecordedPipeCallClassifies:
    @pytest.mark.parametrize("record", list(_pipe_cases()))
    def test_task_prompts_are_tasks_and_turns_are_api_calls(self, record: dict[str, Any]) -> None:
        """These pipes had no inlet of their own: no chat id ever reached them."""
        body = record["body"]
        conversation = read_conversation(body, body["user"])
        # Every chat turn of the capture is labelled "[B-t2] ...", "[X-t1] ..."; task prompts are not.
        expected = ChatKind.API if last_user_text(body).startswith("[") else ChatKind.TASK
        assert conversation.kind is expected
        assert conversation.chat_id is None


def _copied_context_cases() -> Iterator[Any]:
    for index, record in records(RUN1 / "pipe_inlet.jsonl"):
        if record["hook"] == "pipe":
            yield pytest.param(record, id=f"pipe_inlet-{index}")


class TestRecordedPipeBodiesWithACopiedContext:
    """The capture's pipe had its own inlet, which copied the chat context into ``x_owui``."""

    @pytest.mark.parametrize("record", list(_copied_context_cases()))
    def test_the_context_under_our_key_is_read_exactly(self, record: dict[str, Any]) -> None:
        body = dict(record["body"])
        context = body.pop("x_owui")
        del body["chat_id"]
        body[PRIVATE_KEY] = context
        conversation = read_conversation(body, body["user"])
        assert conversation.kind is (ChatKind.TASK if context["task"] else ChatKind.SAVED)
        assert conversation.task == context["task"]
        assert conversation.key == ConversationKey(USER_ID, CHAT_E)
        assert conversation.message_id == context["message_id"]
        assert conversation.user_message_id == context["user_message_id"]

    @pytest.mark.parametrize("record", list(_copied_context_cases()))
    def test_a_top_level_chat_id_and_the_prompt_alone_still_classify(
        self, record: dict[str, Any]
    ) -> None:
        body = record["body"]
        conversation = read_conversation(body, body["user"])
        assert conversation.kind is (ChatKind.TASK if body["x_owui"]["task"] else ChatKind.SAVED)
        assert conversation.chat_id == CHAT_E


def _release_cases(hook: str) -> Iterator[Any]:
    """Chat A's turns of every release, as its browser sent them."""
    for release in RELEASES:
        for index, record in enumerate(release.records()):
            if record["hook"] == hook and not is_task(record):
                yield pytest.param(release, record, id=f"{release}-{index}")


class TestEveryReleaseSaysItsBodyIsTheWholeChat:
    """0.6 marks a chat turn with ``parent_message(_id)``, 0.9 and later with ``user_message(_id)``:
    either is Open WebUI's own chat, which always sends the whole chat."""

    @pytest.mark.parametrize(("release", "record"), list(_release_cases("inlet")))
    def test_every_recorded_chat_turn_inlet_is_the_whole_chat(
        self, release: Release, record: dict[str, Any]
    ) -> None:
        conversation = read_conversation(record["body"], record["user"])
        messages = messages_from_dicts(record["body"]["messages"])
        assert conversation.chat_turn
        assert conversation.sends_whole_chat(messages)

    @pytest.mark.parametrize(("release", "record"), list(_release_cases("outlet")))
    def test_every_recorded_outlet_is_the_whole_chat(
        self, release: Release, record: dict[str, Any]
    ) -> None:
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.sends_whole_chat(messages_from_dicts(record["body"]["messages"]))

    def test_0_6_names_the_user_message_in_parent_message(self) -> None:
        turn = chat_turns(OPENWEBUI_0_6.records())[1]
        inlet_body, outlet_body = turn[0]["body"], turn[1]["body"]
        question, reply = outlet_body["messages"][-2:]

        conversation = read_conversation(inlet_body, turn[0]["user"])

        assert inlet_body["metadata"]["parent_message"]["id"] == question["id"]
        assert "user_message" not in inlet_body["metadata"]
        assert conversation.user_message_id == question["id"]
        assert conversation.message_id == reply["id"]

    def test_0_6_first_turn_names_its_user_message_in_parent_message_id(self) -> None:
        first = chat_turns(OPENWEBUI_0_6.records())[0][0]
        conversation = read_conversation(first["body"], first["user"])
        assert conversation.user_message_id == first["body"]["metadata"]["parent_message_id"]

    @pytest.mark.parametrize(
        "metadata",
        [
            pytest.param({"parent_message_id": "u-1"}, id="parent-message-id"),
            pytest.param({"parent_message": {"id": "u-1", "role": "user"}}, id="parent-message"),
            pytest.param({"user_message_id": "u-1"}, id="user-message-id"),
            pytest.param({"user_message": {"id": "u-1", "role": "user"}}, id="user-message"),
        ],
    )
    def test_any_one_marker_is_enough(self, metadata: dict[str, Any]) -> None:
        conversation = read_conversation(inlet(**metadata))
        assert conversation.sends_whole_chat(messages_from_dicts(inlet()["messages"]))

    def test_a_parent_message_of_the_assistant_marks_the_turn_but_is_no_user_message(
        self,
    ) -> None:
        conversation = read_conversation(
            inlet(parent_message={"id": "a-1", "role": "assistant", "parentId": "u-1"})
        )
        assert conversation.chat_turn
        assert conversation.user_message_id is None

    @pytest.mark.parametrize(
        "chat_id", [pytest.param("", id="no-chat"), pytest.param(CHAT_A, id="with-a-chat-id")]
    )
    def test_a_plain_api_inlet_may_be_only_the_newest_message(self, chat_id: str) -> None:
        body = example("21_plain_api_inlet_no_chat")["body"]
        body["metadata"]["chat_id"] = chat_id
        conversation = read_conversation(body)
        assert not conversation.chat_turn
        assert not conversation.sends_whole_chat(messages_from_dicts(body["messages"]))

    def test_a_plain_api_outlet_without_every_id_may_be_only_the_newest_messages(self) -> None:
        body = example("22_plain_api_outlet_no_chat")["body"]
        body["chat_id"] = CHAT_A
        conversation = read_conversation(body)
        assert not conversation.sends_whole_chat(messages_from_dicts(body["messages"]))

    def test_messages_with_ids_without_a_chat_id_may_be_only_the_newest(self) -> None:
        body = {"messages": [{"id": "m-1", "role": "user", "content": "hi"}]}
        assert not read_conversation(body).sends_whole_chat(messages_from_dicts(body["messages"]))


class TestThePrivateKeyRoundTrip:
    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("01_filter_inlet_A-t1_chat_backend_model", id="turn"),
            pytest.param("02_filter_inlet_A-t2_chat_backend_model", id="turn-with-parent"),
            pytest.param("04_filter_inlet_A-t1_title_generation_task", id="task"),
            pytest.param("21_plain_api_inlet_no_chat", id="api"),
        ],
    )
    def test_the_pipe_reads_back_what_its_inlet_stored(self, name: str) -> None:
        record = example(name)
        at_inlet = read_conversation(record["body"], record["user"])
        # What reaches pipe(): no metadata, our key (through JSON), the messages, the user.
        pipe_body = {
            "model": "helix.helix-consultant",
            "messages": record["body"]["messages"],
            PRIVATE_KEY: json.loads(json.dumps(at_inlet.to_private())),
            "user": record["user"],
        }
        assert read_conversation(pipe_body, pipe_body["user"]) == at_inlet
        assert read_conversation(pipe_body) == at_inlet

    def test_the_private_form_holds_every_field(self) -> None:
        record = example("02_filter_inlet_A-t2_chat_backend_model")
        conversation = read_conversation(record["body"], record["user"])
        assert conversation.to_private() == {**asdict(conversation), "kind": "saved"}

    def test_the_private_form_is_plain_json(self) -> None:
        record = example("01_filter_inlet_A-t1_chat_backend_model")
        private = read_conversation(record["body"], record["user"]).to_private()
        assert private["kind"] == "saved"
        assert json.loads(json.dumps(private)) == private

    def test_the_user_dict_wins_over_a_user_id_in_the_body(self) -> None:
        body = inlet(user_id="someone-else")
        body[PRIVATE_KEY] = {"user_id": "forged"}
        assert read_conversation(body, {"id": "real-user"}).user_id == "real-user"

    def test_without_a_user_dict_the_metadata_user_id_is_used(self) -> None:
        assert read_conversation(inlet(user_id="meta-user")).user_id == "meta-user"

    def test_without_any_user_id_the_user_is_anonymous(self) -> None:
        assert read_conversation({"messages": []}).user_id == ANONYMOUS_USER


class TestClassification:
    @pytest.mark.parametrize(
        ("chat_id", "kind"),
        [
            pytest.param(CHAT_A, ChatKind.SAVED, id="uuid"),
            pytest.param("local", ChatKind.TEMPORARY, id="local"),
            pytest.param("local:4f1a", ChatKind.TEMPORARY, id="local-colon"),
            pytest.param("temporary:4f1a", ChatKind.TEMPORARY, id="temporary-colon"),
            pytest.param("localhost-chat", ChatKind.SAVED, id="local-prefix-without-colon"),
            pytest.param("channel:general", ChatKind.CHANNEL, id="channel"),
            pytest.param("", ChatKind.API, id="empty"),
            pytest.param("   ", ChatKind.API, id="blank"),
            pytest.param(None, ChatKind.API, id="null"),
        ],
    )
    def test_the_chat_id_decides_the_kind(self, chat_id: str | None, kind: ChatKind) -> None:
        assert read_conversation(inlet(chat_id)).kind is kind

    def test_a_missing_chat_id_is_an_api_call(self) -> None:
        assert read_conversation({"messages": [{"role": "user", "content": "x"}]}).kind is (
            ChatKind.API
        )

    @pytest.mark.parametrize(
        "chat_id",
        [
            pytest.param("local:1", id="temporary"),
            pytest.param("channel:1", id="channel"),
            pytest.param(CHAT_A, id="saved"),
        ],
    )
    def test_chats_of_open_webuis_own_kinds_are_neither_tasks_nor_api_calls(
        self, chat_id: str
    ) -> None:
        conversation = read_conversation(inlet(chat_id))
        assert conversation.kind in (ChatKind.SAVED, ChatKind.TEMPORARY, ChatKind.CHANNEL)

    @pytest.mark.parametrize("task", [pytest.param(t, id=t) for t in (*TASKS, "autocomplete")])
    def test_metadata_task_makes_any_chat_a_task(self, task: str) -> None:
        conversation = read_conversation(inlet(task=task, message_id=None))
        assert conversation.kind is ChatKind.TASK
        assert conversation.task == task

    def test_a_lone_task_prompt_without_a_message_id_is_a_task(self) -> None:
        body = {"messages": [{"role": "user", "content": "  ### Task:\nSuggest a title"}]}
        conversation = read_conversation(body)
        assert (conversation.kind, conversation.task) == (ChatKind.TASK, "unknown")

    def test_a_task_prompt_as_a_list_of_parts_is_a_task(self) -> None:
        content = [{"type": "text", "text": "### Task:\nGenerate tags"}]
        assert read_conversation({"messages": [{"role": "user", "content": content}]}).is_task

    def test_a_task_prompt_followed_by_more_turns_is_a_chat(self) -> None:
        body = {
            "messages": [
                {"role": "user", "content": "### Task: plan my week"},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "Thanks"},
            ]
        }
        assert read_conversation(body).kind is ChatKind.API

    def test_a_chat_turn_whose_text_starts_like_a_task_prompt_is_a_chat_turn(self) -> None:
        record = example("01_filter_inlet_A-t1_chat_backend_model")
        body = json.loads(json.dumps(record["body"]))
        body["messages"][0]["content"] = "### Task: please write a haiku"
        conversation = read_conversation(body, record["user"])
        assert conversation.kind is ChatKind.SAVED
        assert conversation.task is None


class TestStableIdWithoutAChatId:
    def api_body(self, *texts: str) -> dict[str, Any]:
        roles = ("user", "assistant")
        return {
            "messages": [
                {"role": "system", "content": "You are Helix."},
                *({"role": roles[i % 2], "content": t} for i, t in enumerate(texts)),
            ]
        }

    def test_the_same_user_and_first_message_give_the_same_id(self) -> None:
        first = read_conversation(self.api_body("Plan a trip"), {"id": "u1"})
        later = read_conversation(self.api_body("Plan a trip", "Where to?", "Rome"), {"id": "u1"})
        assert first.conversation_id == later.conversation_id

    def test_another_user_with_the_same_message_gets_another_id(self) -> None:
        mine = read_conversation(self.api_body("Plan a trip"), {"id": "u1"})
        theirs = read_conversation(self.api_body("Plan a trip"), {"id": "u2"})
        assert mine.conversation_id != theirs.conversation_id

    def test_another_first_message_gets_another_id(self) -> None:
        one = read_conversation(self.api_body("Plan a trip"), {"id": "u1"})
        other = read_conversation(self.api_body("Plan a party"), {"id": "u1"})
        assert one.conversation_id != other.conversation_id

    def test_the_id_does_not_depend_on_the_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        before = stable_conversation_id("u1", "Plan a trip")
        monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
        monkeypatch.setattr(time, "time_ns", lambda: 4_000_000_000 * 10**9)
        assert stable_conversation_id("u1", "Plan a trip") == before

    def test_user_and_message_cannot_be_shifted_into_each_other(self) -> None:
        assert stable_conversation_id("ab", "c") != stable_conversation_id("a", "bc")

    def test_the_id_is_a_short_ascii_token(self) -> None:
        conversation_id = stable_conversation_id("u1", "Ünïcødé \x00 " * 10_000)
        assert conversation_id.startswith("api-")
        assert len(conversation_id) == 36
        assert conversation_id.isascii() and conversation_id.isprintable()


class TestHelixSessionId:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            pytest.param(
                "550e8400-e29b-41d4-a716-446655440000",
                "conv-550e8400-e29b-41d4-a716-446655440000",
                id="uuid-unchanged",
            ),
            pytest.param("abc_123", "conv-abc-123", id="underscore-becomes-hyphen"),
            pytest.param("abc/123", "conv-abc-123", id="slash-collides-with-underscore"),
            pytest.param("../../etc/passwd", "conv-etc-passwd", id="path-traversal"),
            pytest.param("  spaced id ", "conv-spaced-id", id="spaces"),
            pytest.param("Ünïcødé-χ", "conv-n-c-d", id="non-ascii"),
            pytest.param("---", "conv-session", id="only-hyphens"),
            pytest.param("", "conv-session", id="empty"),
            pytest.param("A-B", "conv-A-B", id="case-kept"),
            pytest.param("a" * 100, "conv-" + "a" * 59, id="100-chars-cut-to-59"),
            # Helix strips before it cuts: a hyphen at the cut stays at the end.
            pytest.param("x" * 58 + "-" + "y" * 41, "conv-" + "x" * 58 + "-", id="cut-at-hyphen"),
            pytest.param("local:9f8e", "conv-local-9f8e", id="temporary-chat"),
        ],
    )
    def test_matches_what_helix_derives(self, raw: str, expected: str) -> None:
        assert helix_session_id(raw) == expected

    @settings(max_examples=150, deadline=None)
    @given(st.text())
    def test_is_always_a_short_safe_directory_name(self, raw: str) -> None:
        session_id = helix_session_id(raw)
        assert session_id.startswith("conv-")
        assert len(session_id) <= 64
        rest = session_id.removeprefix("conv-")
        assert rest and "--" not in rest and not rest.startswith("-")
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in rest)


HOSTILE = [
    pytest.param(None, id="none"),
    pytest.param(True, id="bool"),
    pytest.param(3.5, id="float"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(10**5000, id="huge-int"),
    pytest.param(b"bytes-id", id="bytes"),
    pytest.param({"id": "x"}, id="dict"),
    pytest.param(["x", "y"], id="list"),
    pytest.param("x" * 100_000, id="100-kb-string"),
    pytest.param("chat\x00id", id="nul-byte"),
    pytest.param("../../etc/passwd", id="path-separators"),
    pytest.param("C:\\Windows\\system32", id="backslashes"),
    pytest.param("\ud800broken\udfff", id="lone-surrogates"),
    pytest.param("line\r\nX-Injected: 1", id="crlf"),
    pytest.param("Ünïcødé-χ", id="non-latin-1"),
]


class TestHostileValues:
    @pytest.mark.parametrize("value", HOSTILE)
    def test_clean_id_never_fails_and_gives_a_short_printable_id(self, value: object) -> None:
        cleaned = clean_id(value)
        assert cleaned is None or (
            isinstance(cleaned, str) and 0 < len(cleaned) <= 200 and cleaned.isprintable()
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("  abc  ", "abc", id="stripped"),
            pytest.param(42, "42", id="int"),
            pytest.param("", None, id="empty"),
            pytest.param(True, None, id="bool-is-no-id"),
            pytest.param({"id": "x"}, None, id="dict-is-no-id"),
            pytest.param("../../etc/passwd", "../../etc/passwd", id="kept-as-a-key"),
        ],
    )
    def test_clean_id_keeps_plain_ids_and_drops_non_ids(
        self, value: object, expected: str | None
    ) -> None:
        assert clean_id(value) == expected

    def test_clean_id_replaces_long_or_control_ids_by_a_stable_digest(self) -> None:
        long_id = "x" * 100_000
        assert clean_id(long_id) == clean_id(long_id)
        assert clean_id(long_id) != clean_id("x" * 99_999)
        assert clean_id("a\x00b") != clean_id("a\x00c")
        assert str(clean_id("a\x00b")).startswith("sha256-")

    @pytest.mark.parametrize("value", HOSTILE)
    def test_read_conversation_never_fails_wherever_the_value_is(self, value: object) -> None:
        bodies: list[object] = [
            value,
            {"chat_id": value, "id": value, "session_id": value},
            {"metadata": value},
            {"metadata": {"chat_id": value, "task": value, "user_message": value}},
            {PRIVATE_KEY: value},
            {PRIVATE_KEY: {"chat_id": value, "user_id": value}},
            {"messages": value},
            {"messages": [value, {"role": "user", "content": value}]},
            {"messages": [{"role": value, "content": [value, {"type": "text", "text": value}]}]},
        ]
        for body in bodies:
            conversation = read_conversation(body, value)
            assert isinstance(conversation.conversation_id, str)
            assert conversation.conversation_id
            assert len(conversation.conversation_id) <= 200
            assert len(conversation.user_id) <= 200

    def test_a_hostile_chat_id_becomes_a_bounded_stable_key(self) -> None:
        body = inlet("x" * 100_000)
        first, again = read_conversation(body), read_conversation(body)
        assert first.conversation_id == again.conversation_id
        assert len(first.conversation_id) <= 200

    @settings(max_examples=150, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "chat_id",
                            "metadata",
                            "messages",
                            "role",
                            "content",
                            "id",
                            "task",
                            "user_id",
                            "type",
                            "text",
                            PRIVATE_KEY,
                        ]
                    ),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=25,
        ),
        st.none() | st.dictionaries(st.just("id"), st.text() | st.integers(), max_size=1),
    )
    def test_read_conversation_never_fails_on_any_json(self, body: object, user: object) -> None:
        conversation = read_conversation(body, user)
        assert conversation.kind in ChatKind
        assert conversation.conversation_id


SURROGATE_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


class TestHeaderSafe:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("550e8400-e29b-41d4-a716-446655440000", id="uuid"),
            pytest.param("local:abc", id="temporary"),
            pytest.param("channel:general", id="channel"),
            pytest.param("api-0123abcd", id="api"),
        ],
    )
    def test_ordinary_ids_travel_unchanged(self, value: str) -> None:
        assert header_safe(value) == value

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("Ü", "%C3%9C", id="non-latin-1-percent-encoded"),
            pytest.param("a b", "a%20b", id="space"),
            pytest.param("a\x00b", "a%00b", id="nul"),
            pytest.param("a\r\nb", "a%0D%0Ab", id="crlf"),
            pytest.param("50%", "50%25", id="percent-itself"),
            pytest.param("../x", "..%2Fx", id="slash"),
        ],
    )
    def test_other_ids_are_percent_encoded_as_utf_8(self, value: str, expected: str) -> None:
        assert header_safe(value) == expected

    @pytest.mark.parametrize("value", [p for p in HOSTILE if isinstance(p.values[0], str)])
    def test_hostile_strings_give_latin_1_header_values(self, value: str) -> None:
        safe = header_safe(value)
        safe.encode("latin-1")
        assert safe.isprintable() and "\r" not in safe and "\n" not in safe

    @settings(max_examples=150, deadline=None)
    @given(SURROGATE_TEXT)
    def test_is_latin_1_printable_and_deterministic(self, value: str) -> None:
        safe = header_safe(value)
        safe.encode("latin-1")
        assert safe.isascii() and (safe.isprintable() or not safe)
        assert header_safe(value) == safe

    @settings(max_examples=150, deadline=None)
    @given(SURROGATE_TEXT, SURROGATE_TEXT)
    def test_distinct_ids_stay_distinct(self, one: str, other: str) -> None:
        if one != other:
            assert header_safe(one) != header_safe(other)
