"""Two Pipelines servers sharing one store, as behind a load balancer: nothing lost or duplicated.

Per engine (SQLite file, Redis, PostgreSQL) two real Open WebUI Pipelines server processes get the
same ``SESSION_STORE_URL`` and one FakeHelix. Eight chats play five turns each at once, every turn
of a chat going to the other server than the one before. Half of them are Open WebUI chats (the
whole chat resent each turn, ids in ``metadata``), half API callers that send only their newest
message, so their history reaches Helix only if the other server's turn is in the store. Then one
chat gets an edit on one server while its next turn runs on the other. The store is read directly
afterwards (:func:`helix_pipeline.stores.open_store`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.messages import Message
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix, RecordedRequest
from helix_pipeline.testing.openwebui import OpenWebUIChat
from helix_pipeline.testing.openwebui_transport import Chat

from .pipelines_server import PipelinesServer, pipe_bundle_for
from .store_servers import store_url

pytestmark = pytest.mark.integration

MODEL = "helix.helix-consultant"
CHATS = 8
TURNS = 5
WAIT_S = 30.0
TRACEBACK = "Traceback (most recent call last)"
ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis"),
    pytest.param("postgres", id="postgres"),
]

Line = list[tuple[str, str, str | None]]
"""A conversation as (role, content, Open WebUI message id) triples, oldest first."""


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """Helix's answer names the question and how many messages came with it."""
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return f"Answer to {question!r} after {len(messages)} messages"


def wire(line: Line) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content, _ in line]


def stored_line(messages: Sequence[Message]) -> Line:
    return [(m.role, m.content, m.message_id) for m in messages]


def shown(line: Line) -> list[str]:
    """A line in brief, for assertion messages: each message's role and last line of text."""
    return [f"{role}: {content.splitlines()[-1]}" for role, content, _ in line]


def new_user() -> dict[str, str]:
    return {"id": str(uuid.uuid4()), "email": "ana@example.com", "name": "Ana", "role": "user"}


class Client:
    """One chat's client: an Open WebUI browser tab (the whole chat resent every turn, ids in
    ``metadata``) or an API client with a chat id (only its newest message), each turn played
    through the driver on whichever server it is given."""

    def __init__(self, chat: OpenWebUIChat) -> None:
        self.chat = chat
        self.user = chat.user
        self.chat_id = chat.chat_id
        self.sent: list[list[dict[str, str]]] = []
        """The whole history as the client holds it when it asks, once per turn."""

    def turn(self, server: PipelinesServer, text: str) -> None:
        self.sent.append([*wire(self.line()), {"role": "user", "content": text}])
        reply = Chat(server.http, self.chat).turn(text)
        assert reply.done, reply.raw[-500:]

    def line(self) -> Line:
        return [(m["role"], m["content"], m["id"]) for m in self.chat.messages]

    def edited(self, keep: int) -> Client:
        """A second tab on the same chat showing its first ``keep`` messages, about to edit."""
        return Client(self.chat.branch(keep))


def browser_tab() -> Client:
    return Client(OpenWebUIChat(model=MODEL, user=new_user()))


def api_caller() -> Client:
    return Client(OpenWebUIChat(model=MODEL, user=new_user(), api_client=True, stream=False))


@dataclass
class Deployment:
    """Two Pipelines servers on one store, and the FakeHelix both call."""

    engine: str
    url: str
    servers: tuple[PipelinesServer, PipelinesServer]
    helix: FakeHelix

    def chat_requests(self, chat_id: str) -> list[RecordedRequest]:
        return [r for r in self.helix.chat_requests if r.header("X-OpenWebUI-Chat-Id") == chat_id]


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix(reply=echo_reply) as fake:
        yield fake


@pytest.fixture(scope="module", params=ENGINES)
def deployment(
    request: pytest.FixtureRequest, helix: FakeHelix, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    engine: str = request.param
    root = tmp_path_factory.mktemp(f"workers-{engine}")
    url = store_url(engine, root, request)
    env = {"HELIX_BASE_URL": helix.url, "SESSION_STORE_URL": url}
    first, second = (
        PipelinesServer(root / name, [pipe_bundle_for(url, root / "bundle")], env=env)
        for name in ("a", "b")
    )
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for started in [pool.submit(first.start), pool.submit(second.start)]:
                started.result()
        yield Deployment(engine, url, (first, second), helix)
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def store(deployment: Deployment) -> Iterator[SessionStore]:
    """The shared store, opened beside the two servers."""
    opened = open_store(deployment.url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(autouse=True)
def clean_run(deployment: Deployment) -> Iterator[None]:
    """A fresh FakeHelix record per test, and no traceback in either server's log."""
    deployment.helix.reset()
    deployment.helix.reply = echo_reply
    marks = [server.log_mark() for server in deployment.servers]
    yield
    deployment.helix.reply = echo_reply
    for server, mark in zip(deployment.servers, marks, strict=True):
        assert TRACEBACK not in server.log(mark), server.log(mark)


def mixed_clients() -> list[Client]:
    """Open WebUI chats and API callers, alternately: each kind starts on both servers."""
    return [browser_tab() if number % 4 < 2 else api_caller() for number in range(CHATS)]


def play(clients: Sequence[Client], servers: Sequence[PipelinesServer]) -> None:
    """Every client plays its turns in its own thread, all at once; turn ``t`` of client ``n``
    goes to server ``(n + t) % 2``, so each chat alternates between the two servers."""
    start = threading.Barrier(len(clients), timeout=WAIT_S)

    def run(number: int, client: Client) -> None:
        start.wait()
        for turn in range(TURNS):
            client.turn(servers[(number + turn) % len(servers)], f"chat {number} question {turn}")

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        for played in [pool.submit(run, n, c) for n, c in enumerate(clients)]:
            played.result()


def tally(store: SessionStore, clients: Sequence[Client]) -> tuple[int, int]:
    """Messages of finished turns missing from the active branch, and messages stored twice."""
    lost = duplicated = 0
    for client in clients:
        stored = stored_line(store.load(ConversationKey(client.user["id"], client.chat_id)))
        expected = client.line()
        lost += sum(1 for message in expected if message not in stored)
        duplicated += len(stored) - len(set(stored))
    return lost, duplicated


class TestChatsSpreadOverTwoServers:
    def test_every_turn_is_stored_once_in_order_whichever_server_took_it(
        self, deployment: Deployment, store: SessionStore
    ) -> None:
        clients = mixed_clients()

        play(clients, deployment.servers)

        assert tally(store, clients) == (0, 0)
        for client in clients:
            branches = store.branches(ConversationKey(client.user["id"], client.chat_id))
            assert [stored_line(b) for b in branches] == [client.line()]

    def test_helix_gets_the_whole_history_each_turn_even_when_the_other_server_stored_it(
        self, deployment: Deployment
    ) -> None:
        clients = mixed_clients()

        play(clients, deployment.servers)

        assert len(deployment.helix.chat_requests) == CHATS * TURNS
        for client in clients:
            received = [r.body["messages"] for r in deployment.chat_requests(client.chat_id)]
            assert received == client.sent


RACES = [
    pytest.param("edit", id="edit-finishes-first"),
    pytest.param("turn", id="next-turn-finishes-first"),
    pytest.param(None, id="either-finishes-first"),
]


class Gate:
    """Holds Helix's answers until both racing requests have arrived (both servers have loaded
    the same stored branch); then answers ``first``'s request, and the other one only once the
    first client's whole turn, outlet included, is over. With ``first=None`` both go at once."""

    def __init__(self, first: str | None) -> None:
        self.first = first
        self.arrived = threading.Barrier(2, timeout=WAIT_S)
        self.first_done = threading.Event()

    def reply(self, messages: list[dict[str, Any]]) -> str:
        self.arrived.wait()
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        held = self.first is not None and question != self.first
        if held and not self.first_done.wait(WAIT_S):
            raise TimeoutError("the first racing turn never finished")
        return echo_reply(messages)

    def play(self, client: Client, server: PipelinesServer, text: str) -> None:
        try:
            client.turn(server, text)
        finally:
            if text == self.first:
                self.first_done.set()


class TestAnEditRacingTheNextTurn:
    @pytest.mark.parametrize("first", RACES)
    def test_both_branches_stay_whole_and_none_mixes_the_two(
        self, deployment: Deployment, store: SessionStore, first: str | None
    ) -> None:
        server_a, server_b = deployment.servers
        tab = browser_tab()
        tab.turn(server_a, "What is 2+2?")
        tab.turn(server_b, "And 3+3?")
        editing = tab.edited(keep=2)
        questions = {"turn": "And 4+4?", "edit": "And 5+5, I meant?"}
        gate = Gate(questions[first] if first else None)
        deployment.helix.reply = gate.reply

        with ThreadPoolExecutor(max_workers=2) as pool:
            racing = [
                pool.submit(gate.play, tab, server_a, questions["turn"]),
                pool.submit(gate.play, editing, server_b, questions["edit"]),
            ]
            for raced in racing:
                raced.result()

        lines = [tab.line(), editing.line()]
        assert [len(line) for line in lines] == [6, 4]
        branches = [
            stored_line(b) for b in store.branches(ConversationKey(tab.user["id"], tab.chat_id))
        ]
        for branch in branches:
            assert any(branch == line[: len(branch)] for line in lines), shown(branch)
            ids = [message_id for *_, message_id in branch]
            assert len(ids) == len(set(ids)), shown(branch)
        assert tab.line() in branches
        assert editing.line() in branches
        assert branches[-1] == stored_line(store.load(ConversationKey(tab.user["id"], tab.chat_id)))
        if first is None:
            assert branches[-1] in lines
        else:
            finished_last = editing if first == "turn" else tab
            assert branches[-1] == finished_last.line()
        received = {
            r.body["messages"][-1]["content"]: r.body["messages"]
            for r in deployment.chat_requests(tab.chat_id)
        }
        assert received[questions["turn"]] == wire(tab.line()[:5])
        assert received[questions["edit"]] == wire(editing.line()[:3])
