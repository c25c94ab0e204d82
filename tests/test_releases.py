"""Every captured Open WebUI release (0.6.43, 0.10.2, 0.12.4) through the real Pipelines server.

Each release's chat A is replayed from its own captured bodies (``tests/fixtures/``), once
through the Helix pipe (``pipe``: Open WebUI talks to the Pipelines server) and once through the
session filter in front of Open WebUI's own connection to Helix (``filter``: the outlet is what
records the turn): three turns, the regeneration of the third reply, and an edit of the first
message. The checks are what Helix (FakeHelix) received and what the store holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.decorations import strip_decorations
from helix_pipeline.stores import SessionStore
from helix_pipeline.testing import FakeHelix, RecordedRequest

from .openwebui_releases import (
    OPENWEBUI_0_12,
    RELEASES,
    Release,
    as_edit,
    chat_turns,
    message_text,
)
from .openwebui_replay import (
    Exchange,
    OpenWebUI,
    OpenWebUIWithHelixConnection,
)
from .pipelines_server import (
    PIPELINES,
    PipelinesServer,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_run")]

PIPE = "helix.helix-consultant"
FILTER = "helix_session_filter"
EDITED = "[A-t1] EDITED: my name is Bo. What is 3+3?"
EDITED_SECOND = "[A-t2] EDITED: and that number times 100?"
FLOWS = ("pipe", "filter")
CASES = [
    pytest.param(release, flow, id=f"{release}-{flow}") for release in RELEASES for flow in FLOWS
]


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("releases-data")


@pytest.fixture(scope="module")
def server(
    helix: FakeHelix, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelinesServer]:
    env = {
        "HELIX_BASE_URL": helix.url,
        "SESSION_STORE_URL": f"sqlite:///{data_dir / 'sessions.db'}",
        "TASKS": "forward",  # the recorded runs' tasks reach Helix, as they did when recorded
    }
    root = tmp_path_factory.mktemp("releases-server")
    files = [PIPELINES / "helix.py", PIPELINES / "helix_session_filter.py"]
    with PipelinesServer(root, files, env=env) as running:
        yield running


class Chat:
    """One replay of a release's chat A by a new user, through the pipe or the filter."""

    def __init__(
        self, server: PipelinesServer, helix: FakeHelix, release: Release, flow: str
    ) -> None:
        self.helix = helix
        self.user = {
            "id": str(uuid.uuid4()),
            "email": "ana@example.com",
            "name": "Ana",
            "role": "user",
        }
        self.chat_id = str(uuid.uuid4())
        ids = {
            "user": self.user,
            "chat_id": self.chat_id,
            "recorded_chat_id": release.chat_a,
            "recorded_model": release.model,
            "release": release,
        }
        self.ui: OpenWebUI
        if flow == "pipe":
            self.ui = OpenWebUI(server, PIPE, model=PIPE, **ids)
        else:
            self.ui = OpenWebUIWithHelixConnection(
                helix, server, FILTER, model="helix-consultant", **ids
            )
        self.records = release.records()
        self.turns = chat_turns(self.records)
        regen_inlet = self.turns[3][0]
        self.first_three = self.records[: self.records.index(regen_inlet)]

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.user["id"], self.chat_id)

    def helix_turns(self) -> list[RecordedRequest]:
        """What Helix received for chat turns (not background tasks), in order."""
        return [
            r
            for r in self.helix.chat_requests
            if not r.body["messages"][-1]["content"].startswith("### Task:")
        ]


def sent_to_helix(exchange: Exchange) -> list[dict[str, str]]:
    """The role and content of the messages Open WebUI sent for a turn (the inlet's answer)."""
    return [{"role": m["role"], "content": m["content"]} for m in exchange.returned["messages"]]


def outlet_chat(exchanges: list[Exchange]) -> list[tuple[str, str, str | None]]:
    """The chat a turn's outlet reports, as it is stored: role, text and id of each message, the
    text without Helix's progress decorations (Open WebUI shows them as text when it talks to
    Helix itself, through the filter); its reply is the one Helix sent."""
    inlet = next(e for e in exchanges if e.hook == "inlet" and not e.task)
    outlet = next(e for e in exchanges if e.hook == "outlet")
    chat = [(m["role"], message_text(m), m["id"]) for m in outlet.sent["messages"]]
    assert inlet.reply is not None and chat[-1][1] == inlet.reply.content
    return [(role, strip_decorations(text)[0], id_) for role, text, id_ in chat]


def branch(sessions: SessionStore, key: ConversationKey) -> list[tuple[str, str, str | None]]:
    return [(m.role, m.content, m.message_id) for m in sessions.load(key)]


@pytest.mark.parametrize(("release", "flow"), CASES)
class TestEveryRelease:
    def test_three_turns_reach_helix_whole_and_are_stored_with_their_text_and_ids(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        release: Release,
        flow: str,
    ) -> None:
        chat = Chat(server, helix, release, flow)

        exchanges = chat.ui.replay(chat.first_three)

        inlets = [e for e in exchanges if e.hook == "inlet" and not e.task]
        received = chat.helix_turns()
        assert [len(r.body["messages"]) for r in received] == [1, 3, 5]
        assert [r.body["messages"] for r in received] == [sent_to_helix(e) for e in inlets]
        last_turn = exchanges[exchanges.index(inlets[-1]) :]
        stored = branch(sessions, chat.key)
        assert stored == outlet_chat(last_turn)
        assert all(text.strip() for _, text, _ in stored), "no reply is stored empty"

    def test_turns_carry_the_chat_id_and_tasks_reach_helix_without_it(
        self, server: PipelinesServer, helix: FakeHelix, release: Release, flow: str
    ) -> None:
        chat = Chat(server, helix, release, flow)

        exchanges = chat.ui.replay(chat.first_three)

        assert [r.header("X-OpenWebUI-Chat-Id") for r in chat.helix_turns()] == [chat.chat_id] * 3
        tasks = [r for r in helix.chat_requests if r not in chat.helix_turns()]
        assert len(tasks) == len([e for e in exchanges if e.task]) > 0
        if flow == "pipe":  # Open WebUI's own connection forwards the header on tasks too
            assert {r.header("X-OpenWebUI-Chat-Id") for r in tasks} == {None}
            assert {r.header("X-Conversation-ID") for r in tasks} == {None}

    def test_a_regeneration_sends_helix_the_chat_up_to_the_question_and_forks_a_branch(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        release: Release,
        flow: str,
    ) -> None:
        chat = Chat(server, helix, release, flow)
        chat.ui.replay(chat.first_three)
        before = branch(sessions, chat.key)

        regenerated = chat.ui.replay(chat.turns[3])

        assert chat.helix_turns()[-1].body["messages"] == sent_to_helix(regenerated[0])
        assert [m["role"] for m in regenerated[0].returned["messages"]] == [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ]
        after = branch(sessions, chat.key)
        assert after == outlet_chat(regenerated)
        assert after[:5] == before[:5] and after[5][2] != before[5][2]
        assert before in [
            [(m.role, m.content, m.message_id) for m in b] for b in sessions.branches(chat.key)
        ], "the regenerated reply's branch is kept"

    def test_an_edit_of_the_first_message_sends_helix_only_the_edit_and_forks_a_branch(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        release: Release,
        flow: str,
    ) -> None:
        chat = Chat(server, helix, release, flow)
        chat.ui.replay(chat.first_three)
        before = branch(sessions, chat.key)

        edited = chat.ui.edit(chat.turns[0], EDITED)

        assert chat.helix_turns()[-1].body["messages"] == [{"role": "user", "content": EDITED}]
        after = branch(sessions, chat.key)
        assert after == outlet_chat(edited)
        assert after[0][:2] == ("user", EDITED)
        assert len(after) == 2 and {i for _, _, i in after}.isdisjoint(i for _, _, i in before)
        assert before in [
            [(m.role, m.content, m.message_id) for m in b] for b in sessions.branches(chat.key)
        ], "the chat before the edit is kept as a branch"

    def test_an_edit_of_the_second_message_keeps_the_first_turn_and_forks_after_it(
        self,
        server: PipelinesServer,
        helix: FakeHelix,
        sessions: SessionStore,
        release: Release,
        flow: str,
    ) -> None:
        chat = Chat(server, helix, release, flow)
        chat.ui.replay(chat.first_three)
        before = branch(sessions, chat.key)

        edited = chat.ui.edit(chat.turns[1], EDITED_SECOND)

        assert chat.helix_turns()[-1].body["messages"] == [
            *({"role": role, "content": text} for role, text, _ in before[:2]),
            {"role": "user", "content": EDITED_SECOND},
        ]
        after = branch(sessions, chat.key)
        assert after == outlet_chat(edited)
        assert after[:2] == before[:2] and after[2][:2] == ("user", EDITED_SECOND)
        assert len(after) == 4


VOLATILE = ("task_id", "timestamp", "variables")
"""Keys whose values change with time alone (and the id of a task run)."""


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(item) for item in value]
    return value


class TestAnEditBuiltFromARecordedTurn:
    def test_is_what_0_12_4_sent_for_its_recorded_edit(self) -> None:
        """0.12.4's capture holds an edit of the second message: the same turn, rebuilt as an
        edit, must be that edit (the other releases' edits are built the same way)."""
        turns = chat_turns(OPENWEBUI_0_12.records())
        second, recorded_edit = turns[1], turns[4]
        question, reply = recorded_edit[1]["body"]["messages"][-2:]

        built = as_edit(second, question["content"], question["id"], reply["id"])

        assert without_volatile(built[0]["body"]) == without_volatile(recorded_edit[0]["body"])
        built_chat, recorded_chat = (
            [(m["id"], m["role"], m["content"]) for m in r["body"]["messages"][:-1]]
            for r in (built[1], recorded_edit[1])
        )
        assert built_chat == recorded_chat
        assert built[1]["body"]["id"] == recorded_edit[1]["body"]["id"]
