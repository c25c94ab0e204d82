"""One user never sees another's history, and no secret ever reaches a log line, an error, the
chat, the command line's output or an export.

Isolation is checked through the Helix pipe, the session filter and the real Pipelines server.
Secrets: Helix's API key (so also its bearer token), the Pipelines server's API key and the session
store's password (Redis with ``requirepass``, PostgreSQL with the password in its URL) are planted,
every logger is captured at DEBUG over a run of turns, Helix faults and store outages, and
everything is searched for them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline import cli
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import HelixPipelineError
from helix_pipeline.pipe import HelixPipe
from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix, Fault
from helix_pipeline.testing.openwebui_transport import Chat, InProcess, ask
from helix_pipeline.valves import FilterValves, HelixValves

from .pipelines_server import API_KEY, PIPELINES, PipelinesServer, pipe_bundle_for
from .store_servers import free_port, running_postgres

HELIX_KEY = "sk-helix-SECRETKEY-7f3e9a"
STORE_PASSWORD = "pw-SECRETPASS-4c2b1d"
SECRETS = (HELIX_KEY, STORE_PASSWORD, API_KEY)
ANA = {"id": "user-ana", "name": "Ana", "email": "ana@example.com", "role": "user"}
BEN = {"id": "user-ben", "name": "Ben", "email": "ben@example.com", "role": "user"}
ANA_SECRET = "Ana's private plan: ZEBRA-42"


# -------------------------------------------------------------------------------- isolation


def texts_sent(helix: FakeHelix) -> list[str]:
    return [m["content"] for m in helix.chat_requests[-1].body["messages"]]


def ana_chat(transport: Any) -> Chat:
    chat = Chat(transport, user=ANA)
    chat.turn(ANA_SECRET)
    chat.turn("and what next?")
    return chat


def ben_requests(chat_id: str) -> list[dict[str, Any]]:
    """Ben sends Ana's chat id: as a bare API call, with message ids, and as a task."""
    return [
        {
            "stream": False,
            "messages": [{"role": "user", "content": "what did we say?"}],
            "metadata": {"chat_id": chat_id},
        },
        {
            "stream": True,
            "messages": [{"id": "b1", "role": "user", "content": "go on"}],
            "metadata": {"chat_id": chat_id, "user_message_id": "b1", "message_id": "b2"},
        },
        {
            "stream": False,
            "chat_id": chat_id,
            "messages": [{"role": "user", "content": "and before that?"}],
        },
    ]


class TestIsolation:
    @pytest.fixture
    def helix(self) -> Iterator[FakeHelix]:
        with FakeHelix() as server:
            yield server

    def test_another_user_with_the_same_chat_id_never_gets_the_history_through_the_pipe(
        self, helix: FakeHelix, tmp_path: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        valves = HelixValves(HELIX_BASE_URL=helix.url, SESSION_STORE_URL=url)
        pipe = HelixPipe(lambda: valves)
        try:
            chat = ana_chat(InProcess(pipe))
            for request in ben_requests(chat.chat_id):
                shown = ask(InProcess(pipe), request, dict(BEN)).content
                assert "ZEBRA" not in shown
                assert not any("ZEBRA" in text for text in texts_sent(helix))
                pipe.outlet(
                    {
                        "chat_id": chat.chat_id,
                        "id": "x",
                        "messages": [
                            {"role": "user", "content": "forged"},
                            {"role": "assistant", "content": "x"},
                        ],
                    },
                    dict(BEN),
                )
        finally:
            pipe.shutdown()
        store = open_store(url)
        try:
            ana = [m.content for m in store.load(ConversationKey(ANA["id"], chat.chat_id))]
        finally:
            store.close()
        assert ana[0] == ANA_SECRET and "forged" not in ana and len(ana) == 4

    def test_another_user_with_the_same_chat_id_never_gets_the_history_through_the_filter(
        self, tmp_path: Path
    ) -> None:
        valves = FilterValves(SESSION_STORE_URL=f"sqlite:///{tmp_path / 'sessions.db'}")
        session_filter = SessionFilter(lambda: valves)
        chat_id = "chat-of-ana"
        ana_messages = [
            {"id": "u1", "role": "user", "content": ANA_SECRET},
            {"id": "a1", "role": "assistant", "content": "noted"},
        ]
        session_filter.outlet({"chat_id": chat_id, "id": "a1", "messages": ana_messages}, ANA)
        try:
            for request in ben_requests(chat_id):
                sent = list(request["messages"])
                out = session_filter.inlet(request, dict(BEN))
                assert out["messages"] == sent
            own = session_filter.inlet(
                {
                    "metadata": {"chat_id": chat_id},
                    "messages": [{"role": "user", "content": "next"}],
                },
                dict(ANA),
            )
            assert own["messages"][0]["content"] == ANA_SECRET, "the filter attaches history"
        finally:
            session_filter.shutdown()

    @pytest.mark.integration
    def test_another_user_with_the_same_chat_id_never_gets_it_through_the_pipelines_server(
        self, helix: FakeHelix, tmp_path: Path
    ) -> None:
        env = {"HELIX_BASE_URL": helix.url, "HELIX_DATA_DIR": str(tmp_path / "data")}
        with PipelinesServer(tmp_path, [PIPELINES / "helix.py"], env=env) as server:
            chat = ana_chat(server.http)
            ben = Chat(server.http, user=BEN, chat_id=chat.chat_id)
            shown = ben.turn("what did Ana say?")
            assert "ZEBRA" not in shown.content
            assert not any("ZEBRA" in text for text in texts_sent(helix))
            assert server.tracebacks() == 0


# ---------------------------------------------------------------------------------- secrets


@contextlib.contextmanager
def redis_with_password() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own that requires ``STORE_PASSWORD``; its URL carries it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis", reason="pip install helix-pipeline[redis]")
    folder = Path(tempfile.mkdtemp(prefix="helix-redis-pw-"))
    port = free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--requirepass",
        STORE_PASSWORD,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield f"redis://:{STORE_PASSWORD}@127.0.0.1:{port}/0", process
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


class Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    root = logging.getLogger()
    handler = Everything()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_turns_and_faults(pipe: HelixPipe, helix: FakeHelix, shown: list[str]) -> None:
    chat = Chat(InProcess(pipe), user=ANA)
    shown.append(chat.turn("hello").content)
    for fault in Fault:
        helix.fault = fault
        try:
            shown.append(chat.turn(f"during {fault.value}").content)
            shown.append(chat.turn(f"during {fault.value}", stream=False).content)
        finally:
            helix.fault = Fault.NONE
    shown.append(chat.turn("after the faults").content)


class TestSecrets:
    @pytest.fixture
    def helix(self) -> Iterator[FakeHelix]:
        with FakeHelix(proxy_api_key=HELIX_KEY, fault_delay=3.0, retry_after=0.01) as server:
            yield server

    def test_no_secret_in_logs_chat_or_errors_over_turns_faults_and_a_redis_outage(
        self, helix: FakeHelix, all_logs: Everything
    ) -> None:
        shown: list[str] = []
        with redis_with_password() as (url, process):
            valves = HelixValves(
                HELIX_BASE_URL=helix.url,
                HELIX_API_KEY=HELIX_KEY,
                SESSION_STORE_URL=url,
                HELIX_HEARTBEAT_S=0.1,  # FakeHelix's heartbeats are fast
                READ_TIMEOUT_S=0.3,
                MAX_RETRIES=1,
            )
            pipe = HelixPipe(lambda: valves)
            try:
                pipe.startup()
                run_turns_and_faults(pipe, helix, shown)
                process.terminate()
                process.wait(timeout=10)
                shown.append(Chat(InProcess(pipe), user=ANA).turn("store down").content)
                wrong = HelixValves(
                    **{**valves.model_dump(), "HELIX_API_KEY": "wrong-" + HELIX_KEY}
                )
                shown.append(
                    HelixPipe(lambda: wrong).pipe(
                        "x",
                        "m",
                        [],
                        {"messages": [{"role": "user", "content": "x"}], "stream": False},
                    )
                )
            finally:
                pipe.shutdown()
        assert any("refused" in line or "unavailable" in line for line in all_logs.lines)
        assert any(":***@" in line for line in all_logs.lines), "the store URL was never logged"
        assert len(all_logs.lines) > 50, "the run logged too little to prove anything"
        assert not leaks("\n".join(all_logs.lines)), "a secret reached the log"
        assert not leaks("\n".join(shown)), "a secret reached the chat"

    def test_no_secret_in_error_messages_of_bad_store_urls(self) -> None:
        urls = [
            f"redis://:{STORE_PASSWORD}@127.0.0.1:{free_port()}/0",
            f"postgresql://helix:{STORE_PASSWORD}@127.0.0.1:{free_port()}/helix",
            f"mysql://helix:{STORE_PASSWORD}@127.0.0.1/helix",
            f"redis://:{STORE_PASSWORD}@127.0.0.1:not-a-port/0",
        ]
        for url in urls:
            with pytest.raises(HelixPipelineError) as caught:
                open_store(url).load(ConversationKey("u", "c"))
            assert not leaks(str(caught.value)), url
            with pytest.raises(ValueError) as invalid:
                HelixValves(SESSION_STORE_URL=f"x{url}")  # an unknown scheme
            assert not leaks(str(invalid.value))

    def test_no_secret_in_the_command_lines_output_or_export(
        self,
        helix: FakeHelix,
        all_logs: Everything,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("HELIX_API_KEY", HELIX_KEY)
        outputs: list[str] = []
        with redis_with_password() as (url, process):
            valves = HelixValves(
                HELIX_BASE_URL=helix.url, HELIX_API_KEY=HELIX_KEY, SESSION_STORE_URL=url
            )
            pipe = HelixPipe(lambda: valves)
            try:
                chat = Chat(InProcess(pipe), user=ANA)
                chat.turn("hello")
            finally:
                pipe.shutdown()
            commands = [
                ["sessions", "--store", url, "list"],
                ["sessions", "--store", url, "show", "--user", ANA["id"], chat.chat_id],
                ["sessions", "--store", url, "export"],
                ["doctor", "--helix-url", helix.url, "--store", url],
            ]
            for command in commands:
                assert cli.main(command) == 0, capsys.readouterr()
                captured = capsys.readouterr()
                outputs += [captured.out, captured.err]
            assert chat.chat_id in outputs[0] and "hello" in outputs[4]
            helix.proxy_api_key = "another-key"  # Helix now refuses ours: the doctor reports it
            process.terminate()
            process.wait(timeout=10)
            for command in commands[:1] + commands[3:]:
                assert cli.main(command) != 0
                captured = capsys.readouterr()
                outputs += [captured.out, captured.err]
        assert "***" in "".join(outputs), "the store URL was not shown redacted"
        assert not leaks("\n".join(outputs)), "a secret reached the command line's output"
        assert not leaks("\n".join(all_logs.lines)), "a secret reached the log"

    def test_no_secret_in_errors_or_logs_of_a_postgres_store_with_a_password(
        self, helix: FakeHelix, all_logs: Everything
    ) -> None:
        pytest.importorskip("psycopg", reason="pip install helix-pipeline[postgres]")
        with running_postgres() as server:
            if server.port is None:
                pytest.skip("the PostgreSQL server from HELIX_TEST_POSTGRES_URL cannot restart")
            url = server.fresh_url().replace("postgres@", f"postgres:{STORE_PASSWORD}@", 1)
            valves = HelixValves(
                HELIX_BASE_URL=helix.url, HELIX_API_KEY=HELIX_KEY, SESSION_STORE_URL=url
            )
            pipe = HelixPipe(lambda: valves)
            shown: list[str] = []
            try:
                chat = Chat(InProcess(pipe), user=ANA)
                shown.append(chat.turn("hello").content)
                server.stop()
                shown.append(chat.turn("while the database is down").content)
            finally:
                pipe.shutdown()
        assert "Helix reply" in shown[-1]
        assert any("unavailable" in line for line in all_logs.lines)
        assert not leaks("\n".join(all_logs.lines + shown))

    @pytest.mark.integration
    def test_no_secret_in_the_pipelines_servers_log(self, helix: FakeHelix, tmp_path: Path) -> None:
        with redis_with_password() as (url, process):
            env = {
                "HELIX_BASE_URL": helix.url,
                "HELIX_API_KEY": HELIX_KEY,
                "SESSION_STORE_URL": url,
                "HELIX_HEARTBEAT_S": "0.1",
                "READ_TIMEOUT_S": "0.3",
                "MAX_RETRIES": "1",
            }
            pipe = pipe_bundle_for(url, tmp_path / "bundle")
            with PipelinesServer(tmp_path, [pipe], env=env) as server:
                chat = Chat(server.http, user=ANA)
                shown = [chat.turn("hello").content]
                # GET /<id>/valves needs no key: secrets from the environment must not be there.
                exposed = json.dumps(server.valves("helix"))
                for fault in (Fault.SERVER_ERROR, Fault.DROP_MID_STREAM, Fault.UNAVAILABLE):
                    helix.fault = fault
                    shown.append(chat.turn(f"during {fault.value}").content)
                    helix.fault = Fault.NONE
                process.terminate()
                process.wait(timeout=10)
                shown.append(chat.turn("store down").content)
                helix.proxy_api_key = "another-key"
                shown.append(chat.turn("refused").content)
                log = server.log()
        assert "Helix reply" in shown[0] and "HELIX_API_KEY" in shown[-1]
        assert "unavailable" in log
        assert not leaks(log), "a secret reached the Pipelines server's log"
        assert not leaks(exposed), "a secret from the environment is readable in the valves"
        assert not leaks("\n".join(shown))
