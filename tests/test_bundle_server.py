"""The bundles in the real Pipelines server, with nothing of ours installed in its Python.

Each way an admin installs a file: the upload (Open WebUI's *Admin > Settings > Pipelines*),
``POST /pipelines/add`` with a URL, and the official image's start script with ``PIPELINES_URLS``.
Then an upgrade, a file whose requirements cannot be installed, and ``bundle --with``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline import bundle as bundle_module
from helix_pipeline.bundle import build_bundle
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix, RecordedRequest

from .openwebui_replay import OpenWebUI, OpenWebUIWithHelixConnection, recorded, stored
from .pipelines_server import (
    PIPELINES,
    TRACEBACK,
    FileServer,
    PipelinesServer,
    pipe_bundle_for,
    start_script_requirements,
)
from .store_servers import store_url

pytestmark = pytest.mark.integration

PIPE, FILTER = PIPELINES / "helix.py", PIPELINES / "helix_session_filter.py"
PIPE_MODEL = "helix.helix-consultant"
CHAT_A = "8854fe74-68d4-4c99-9c9d-c0d0c58e1887"
A_THREE_TURNS = recorded("run1_forward_headers/filter.jsonl", CHAT_A)[:11]
CONVERSATION_HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")


@pytest.fixture(scope="module")
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as fake:
        yield fake


@pytest.fixture
def env(helix: FakeHelix, tmp_path: Path) -> dict[str, str]:
    helix.reset()
    return {"HELIX_BASE_URL": helix.url, "HELIX_DATA_DIR": str(tmp_path / "data")}


def new_user() -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "email": "ana@example.com", "name": "Ana", "role": "user"}


def turns_to_helix(helix: FakeHelix) -> list[RecordedRequest]:
    return [
        r for r in helix.chat_requests if not r.body["messages"][-1]["content"].startswith("###")
    ]


def chat_through_the_pipe(server: PipelinesServer, helix: FakeHelix) -> dict[str, Any]:
    """Three recorded turns through the pipe: Helix gets the chat id and the whole history."""
    chat_id, user = str(uuid.uuid4()), new_user()
    ui = OpenWebUI(
        server,
        PIPE_MODEL,
        user=user,
        chat_id=chat_id,
        recorded_chat_id=CHAT_A,
        model=PIPE_MODEL,
        recorded_model="helix-test",
    )
    ui.replay(A_THREE_TURNS)

    turns = turns_to_helix(helix)
    assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
    for request in turns:
        assert [request.header(h) for h in CONVERSATION_HEADERS] == [chat_id, chat_id]
    history = turns[2].body["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant", "user"]
    assert "Helix reply #1" in history[1]["content"]
    if "SESSION_STORE_URL" not in server.extra_env:
        assert_recorded(server, user, chat_id)
    return user


def chat_through_the_filter(server: PipelinesServer, helix: FakeHelix) -> None:
    """Three recorded turns to Helix as an OpenAI connection, the filter keeping the history."""
    chat_id, user = str(uuid.uuid4()), new_user()
    ui = OpenWebUIWithHelixConnection(
        helix,
        server,
        "helix_session_filter",
        user=user,
        chat_id=chat_id,
        recorded_chat_id=CHAT_A,
        model="helix-consultant",
        recorded_model="helix-test",
    )
    ui.replay(A_THREE_TURNS)

    turns = turns_to_helix(helix)
    assert [len(r.body["messages"]) for r in turns] == [1, 3, 5]
    assert all(r.header("X-OpenWebUI-Chat-Id") == chat_id for r in turns)
    assert_recorded(server, user, chat_id)


def assert_recorded(server: PipelinesServer, user: dict[str, Any], chat_id: str) -> None:
    """The chat's three turns are in the server's default store (``HELIX_DATA_DIR``)."""
    store = open_store(f"sqlite:///{server.extra_env['HELIX_DATA_DIR']}/sessions.db")
    try:
        assert [role for role, _ in stored(store, user, chat_id)] == ["user", "assistant"] * 3
    finally:
        store.close()


def assert_loaded_cleanly(server: PipelinesServer, ids: set[str]) -> None:
    assert set(server.pipeline_ids()) == ids
    assert server.failed() == []
    assert "helix-pipeline 0.1.0 embedded in it" in server.log()
    assert TRACEBACK not in server.log()


class TestAStockServerLoadsTheBundles:
    def test_its_python_has_no_helix_pipeline(self, tmp_path: Path) -> None:
        server = PipelinesServer(tmp_path, [])
        probe = (tmp_path / "probe.py").resolve()
        probe.write_text("import importlib.util as u; print(u.find_spec('helix_pipeline'))\n")

        found = subprocess.run(
            [str(server.venv.python), str(probe)],
            cwd=tmp_path,
            env=server._environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == "None"

    def test_by_upload(self, env: dict[str, str], helix: FakeHelix, tmp_path: Path) -> None:
        with PipelinesServer(tmp_path / "server", [], env=env) as server:
            server.upload(PIPE)
            server.upload(FILTER)

            assert_loaded_cleanly(server, {"helix", "helix_session_filter"})
            chat_through_the_pipe(server, helix)
            helix.reset()
            chat_through_the_filter(server, helix)

    def test_by_url_with_pipelines_add(
        self, env: dict[str, str], helix: FakeHelix, tmp_path: Path
    ) -> None:
        with (
            FileServer(PIPELINES) as files,
            PipelinesServer(tmp_path / "server", [], env=env) as server,
        ):
            answer = server.add(files.url("helix.py"))

            assert "Pipeline added successfully" in answer["detail"]
            assert_loaded_cleanly(server, {"helix"})
            chat_through_the_pipe(server, helix)

    def test_by_the_start_script_with_pipelines_urls(
        self, env: dict[str, str], helix: FakeHelix, tmp_path: Path
    ) -> None:
        with FileServer(PIPELINES) as files:
            urls = ";".join(files.url(name) for name in ("helix.py", "helix_session_filter.py"))
            server = PipelinesServer(
                tmp_path / "server", [], env={**env, "PIPELINES_URLS": urls}, start_script=True
            )
            with server:
                assert_loaded_cleanly(server, {"helix", "helix_session_filter"})
                assert "pip install" not in server.log(), "nothing to install"
                chat_through_the_pipe(server, helix)
                helix.reset()
                chat_through_the_filter(server, helix)


class TestUpgrade:
    def test_a_newer_bundle_replaces_an_older_one_without_a_failed_load(
        self,
        env: dict[str, str],
        helix: FakeHelix,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(bundle_module, "__version__", "9.9.9")
        newer = tmp_path / "newer" / "helix.py"
        newer.parent.mkdir()
        newer.write_text(build_bundle(bundle_module.BUNDLES[0].host, label="helix.py"))

        with PipelinesServer(tmp_path / "server", [PIPE, FILTER], env=env) as server:
            mark = server.log_mark()
            server.upload(newer)

            assert set(server.pipeline_ids()) == {"helix", "helix_session_filter"}
            assert server.failed() == []
            log = server.log(mark)
            assert "helix.py runs helix-pipeline 9.9.9 embedded in it" in log
            assert "helix_session_filter.py runs helix-pipeline 0.1.0 embedded in it" in log
            assert TRACEBACK not in log
            chat_through_the_pipe(server, helix)


class TestRequirements:
    def test_the_start_script_reads_no_requirements_from_our_files(self) -> None:
        for path in (PIPE, FILTER):
            assert start_script_requirements(path.read_text(encoding="utf-8")) == []

    def test_a_bundle_with_a_driver_makes_the_server_install_it(
        self,
        env: dict[str, str],
        helix: FakeHelix,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        url = store_url("redis", tmp_path, request)
        with_redis = pipe_bundle_for(url, tmp_path / "with-redis")
        with PipelinesServer(
            tmp_path / "server", [], env={**env, "SESSION_STORE_URL": url}
        ) as server:
            server.upload(with_redis)

            assert set(server.pipeline_ids()) == {"helix"}
            assert "Installing requirement: redis>=5" in server.log()
            user = chat_through_the_pipe(server, helix)
        store = open_store(url)
        assert len(store.conversations(user["id"])) == 1, "the turns went to Redis"
        store.close()
