"""Store URLs for the contract suite: one per engine, on throwaway servers where one is needed.

Memory and SQLite need nothing. Redis and PostgreSQL are started on free loopback ports when their
binaries are installed, else taken from ``HELIX_TEST_REDIS_URL`` / ``HELIX_TEST_POSTGRES_URL``,
else the test is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ENGINES = ("memory", "sqlite", "redis", "postgres")


def store_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty store URL for ``engine``."""
    if engine == "memory":
        return "memory://"
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    pytest.skip(f"the {engine} store is not built yet")
