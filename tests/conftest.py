"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helix_pipeline import pytest_plugin
from helix_pipeline.stores import SessionStore, open_store
from helix_pipeline.testing import FakeHelix

from .pipelines_server import TRACEBACK, PipelinesServer
from .store_servers import (  # noqa: F401  (session fixtures)
    ENGINES,
    postgres_server,
    redis_cluster_server,
    redis_server,
    store_url,
)

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``fake_helix`` fixture for this suite even when helix-pipeline is not installed.

    Installed, its ``pytest11`` entry point has registered it already (under the same name), and
    registering a module twice is an error: only register it when that has not happened.
    """
    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "helix_pipeline")


def load_fixture(name: str) -> Any:
    """A real Open WebUI 0.12.4 payload from ``tests/fixtures/`` (see its README)."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Undo what executing bundles adds to ``sys.modules`` and ``sys.meta_path``."""
    modules = set(sys.modules)
    finders = list(sys.meta_path)
    yield
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.meta_path[:] = finders


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """An empty store of each engine in turn: the contract suite runs once per engine."""
    opened = open_store(store_url(request.param, tmp_path, request))
    try:
        yield opened
    finally:
        opened.close()


# -- for the modules that run the real Pipelines server: they define ``helix``, ``server`` and
# -- ``data_dir`` (the folder of the server's SQLite file) and use these.


@pytest.fixture
def clean_run(helix: FakeHelix, server: PipelinesServer) -> Iterator[None]:
    """A fresh FakeHelix record per test, and no traceback in the server's log."""
    helix.reset()
    mark = server.log_mark()
    yield
    assert TRACEBACK not in server.log(mark), server.log(mark)


@pytest.fixture
def sessions(data_dir: Path, server: PipelinesServer) -> Iterator[SessionStore]:
    """The server's SQLite session file, opened beside it."""
    opened = open_store(f"sqlite:///{data_dir / 'sessions.db'}")
    yield opened
    opened.close()
