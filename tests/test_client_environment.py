"""HelixClient reads the proxy settings from the environment once, when it is built."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from helix_pipeline.client import HelixClient
from helix_pipeline.errors import BackendUnavailable
from helix_pipeline.testing import FakeHelix

CLOSED_PROXY = "http://127.0.0.1:9"
"""A proxy nobody answers at (port 9, discard, is closed on loopback)."""


@pytest.fixture
def helix() -> Iterator[FakeHelix]:
    with FakeHelix() as server:
        yield server


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


def client_for(helix: FakeHelix) -> HelixClient:
    return HelixClient(helix.url, max_retries=0, connect_timeout=2, read_timeout=5)


class TestProxySettings:
    def test_a_proxy_set_when_the_client_is_built_is_used(
        self, helix: FakeHelix, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTP_PROXY", CLOSED_PROXY)
        with client_for(helix) as client, pytest.raises(BackendUnavailable):
            client.health()
        assert helix.requests == []

    def test_no_proxy_still_exempts_the_helix_host(
        self, helix: FakeHelix, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTP_PROXY", CLOSED_PROXY)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with client_for(helix) as client:
            assert client.health()["status"] == "healthy"

    def test_the_environment_is_not_read_again_on_each_request(
        self, helix: FakeHelix, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with client_for(helix) as client:
            assert client.health()["status"] == "healthy"
            monkeypatch.setenv("HTTP_PROXY", CLOSED_PROXY)
            assert client.health()["status"] == "healthy"
