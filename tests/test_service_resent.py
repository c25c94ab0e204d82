"""HistoryService.prepare_body: a resent chat's stored messages are taken from the store's read,
and the turn is the one the general path (normalise, take out notices, merge) makes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from helix_pipeline.conversation import ChatKind, Conversation
from helix_pipeline.errors import BackendError
from helix_pipeline.history import Trim
from helix_pipeline.messages import Message, messages_from_dicts
from helix_pipeline.notices import notice_for, trim_line
from helix_pipeline.service import HistoryService, Turn
from helix_pipeline.stores import MemoryStore

SAVED = Conversation(ChatKind.SAVED, "user-a", "chat-1", chat_id="chat-1", chat_turn=True)
NOTICE = notice_for(BackendError("Helix failed."), cut_off=True)
TRIM_LINE = trim_line(Trim(dropped_messages=1)) or ""


def stored_service(messages: list[Message], conversation: Conversation = SAVED) -> HistoryService:
    store = MemoryStore()
    if messages:
        store.record(conversation.key, messages, after=0)
    return HistoryService(store)


def chat_of(texts: list[str]) -> list[Message]:
    roles = ("user", "assistant")
    return [Message(roles[i % 2], text, message_id=f"m-{i}") for i, text in enumerate(texts)]


def same_turn(fast: Turn, slow: Turn) -> None:
    """What a turn sends and records, and from which branch."""
    assert fast.wire_messages() == slow.wire_messages()
    assert [m.role for m in fast.outgoing] == [m.role for m in slow.outgoing]
    assert fast.new == slow.new
    assert fast.prefix == slow.prefix
    assert (fast.attached, fast.trim, fast.branch) == (slow.attached, slow.trim, slow.branch)


class TestAResentChat:
    def test_takes_the_stored_messages_as_the_read_gave_them(self) -> None:
        service = stored_service(chat_of(["hi", "hello", "how are you?", "fine"]))
        raw: list[Any] = [{"role": "system", "content": "be brief"}]
        raw += [{"role": m.role, "content": m.content} for m in chat_of(["hi", "hello"])]
        raw += [{"role": "assistant", "content": "how are you?"}, {"role": "user", "content": "x"}]
        turn = service.prepare_body(SAVED, raw)
        assert turn.branch is not None
        stored = turn.branch.messages
        assert turn.outgoing[1:3] == stored[:2] and turn.outgoing[1] is stored[0]
        assert turn.outgoing[2] is stored[1]
        assert turn.outgoing[3] is not stored[2]  # not the stored message's role: an edit
        assert [m.content for m in turn.new] == ["how are you?", "x"]
        same_turn(turn, service.prepare(SAVED, messages_from_dicts(raw)))

    def test_with_a_notice_in_a_stored_reply_is_made_the_general_way(self) -> None:
        service = stored_service(chat_of(["hi", f"hello{NOTICE}"]))
        raw = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": f"hello{NOTICE}"},
            {"role": "user", "content": "and now?"},
        ]
        turn = service.prepare_body(SAVED, raw)
        assert turn.wire_messages()[1] == {"role": "assistant", "content": "hello"}
        same_turn(turn, service.prepare(SAVED, messages_from_dicts(raw)))


_TEXTS = st.sampled_from(["hi", " hi ", "hello", "", "x" * 3, f"ok{NOTICE}", NOTICE, TRIM_LINE])
_STORED = st.lists(
    # A system message is never stored by the service, but a store may hold one.
    st.tuples(
        st.sampled_from(["user", "assistant", "system"]), _TEXTS, st.booleans(), st.booleans()
    ),
    max_size=6,
)


@st.composite
def resent(draw: st.DrawFn, stored: list[Message]) -> list[Any]:
    """What a client may send for ``stored``: each message again (as it is, without or with
    another id, its text changed, a notice added), system messages and junk among them."""
    raw: list[Any] = []
    for message in stored:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        change = draw(st.sampled_from(["same", "id", "other-id", "text", "notice", "role", "drop"]))
        if change == "drop":
            continue
        if change == "id" and message.message_id:
            entry["id"] = message.message_id
        elif change == "other-id":
            entry["id"] = "another"
        elif change == "text":
            entry["content"] = draw(_TEXTS)
        elif change == "notice":
            entry["content"] += draw(st.sampled_from([NOTICE, TRIM_LINE]))
        elif change == "role":
            entry["role"] = draw(st.sampled_from(["system", "developer", "tool", "critic"]))
        raw.append(entry)
        if draw(st.booleans()):
            raw.append(draw(st.sampled_from([{"role": "system", "content": "s"}, None, "junk"])))
    raw += draw(st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": _TEXTS})))
    return raw


class TestTheShortcut:
    @settings(max_examples=300, deadline=None)
    @given(
        _STORED,
        st.data(),
        st.sampled_from(
            [
                SAVED,
                Conversation(ChatKind.SAVED, "user-a", "chat-1", chat_id="chat-1"),
                Conversation(ChatKind.API, "user-a", "api-1"),
            ]
        ),
    )
    def test_makes_the_turn_the_general_path_makes(
        self,
        stored_spec: list[tuple[str, str, bool, bool]],
        data: st.DataObject,
        conversation: Conversation,
    ) -> None:
        stored = [
            Message(role, text, message_id=f"m-{i}" if has_id else None, partial=partial)  # type: ignore[arg-type]
            for i, (role, text, has_id, partial) in enumerate(stored_spec)
        ]
        service = stored_service(stored, conversation)
        raw = data.draw(resent(stored))
        fast = service.prepare_body(conversation, raw)
        same_turn(fast, service.prepare(conversation, messages_from_dicts(raw)))
