"""The shared URL rules: Helix's base URL, and URLs made safe to show."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from helix_pipeline.client import HelixClient
from helix_pipeline.errors import ConfigError
from helix_pipeline.urls import (
    authority_problem,
    helix_base_url,
    hide_secret,
    redact_url,
    url_scheme,
)
from helix_pipeline.valves import HelixValves

HOSTILE_BASE_URLS = [
    pytest.param("http://:8001", "has no host", id="no-host"),
    pytest.param("http://[::1", "unmatched brackets", id="open-bracket"),
    pytest.param("http://::1]:8001", "unmatched brackets", id="close-bracket"),
    pytest.param("http://h[::1]:8001", "unmatched brackets", id="bracket-inside-host"),
    pytest.param("ftp://x", "not an http:// or https:// URL", id="ftp"),
    pytest.param("localhost:8001", "not an http:// or https:// URL", id="no-scheme"),
    pytest.param("http://h:99999", "invalid port", id="port-too-big"),
    pytest.param("http://h:0", "invalid port", id="port-zero"),
    pytest.param("http://h:abc", "invalid port", id="port-text"),
    pytest.param("http://h:", "invalid port", id="port-empty"),
    pytest.param("http://h:8001?x=1", "query or fragment", id="query"),
    pytest.param("http://h:8001#top", "query or fragment", id="fragment"),
    pytest.param("http://he lix:8001", "white space", id="space"),
    pytest.param("http://helix:8001\r\nX-Evil: 1", "white space", id="newline"),
    pytest.param("http://helix\x00:8001", "control characters", id="nul"),
    pytest.param("", "is empty", id="empty"),
    pytest.param("   ", "is empty", id="blank"),
    pytest.param("/v1", "is empty", id="only-v1"),
    pytest.param("http://", "has no host", id="scheme-only"),
    pytest.param("http://user:pw@", "has no host", id="credentials-only"),
]


class TestHelixBaseUrl:
    @pytest.mark.parametrize(
        ("given", "base"),
        [
            pytest.param("http://localhost:8001", "http://localhost:8001", id="plain"),
            pytest.param(" http://helix:8001/ ", "http://helix:8001", id="spaces-and-slash"),
            pytest.param("http://helix:8001/v1", "http://helix:8001", id="v1"),
            pytest.param("https://helix.example/v1/", "https://helix.example", id="v1-slash"),
            pytest.param("http://h/prefix/v1", "http://h/prefix", id="path-prefix"),
            pytest.param("http://[::1]:8001", "http://[::1]:8001", id="ipv6"),
            pytest.param("HTTP://Helix:8001", "HTTP://Helix:8001", id="upper-case-scheme"),
            pytest.param("http://u:p@helix:8001", "http://u:p@helix:8001", id="credentials"),
        ],
    )
    def test_a_usable_url_is_normalised(self, given: str, base: str) -> None:
        assert helix_base_url(given) == base

    @pytest.mark.parametrize(("url", "problem"), HOSTILE_BASE_URLS)
    def test_an_unusable_url_is_a_config_error_that_names_the_setting_and_the_problem(
        self, url: str, problem: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            helix_base_url(url, setting="--helix-url")
        assert caught.value.setting == "--helix-url"
        assert str(caught.value).startswith("--helix-url must be an http:// or https:// URL")
        assert problem in str(caught.value)

    @pytest.mark.parametrize(("url", "problem"), HOSTILE_BASE_URLS)
    def test_the_valve_and_the_client_refuse_exactly_what_the_rule_refuses(
        self, url: str, problem: str
    ) -> None:
        with pytest.raises(ValidationError, match=problem):
            HelixValves(HELIX_BASE_URL=url)
        with pytest.raises(ConfigError, match=problem):
            HelixClient(url)

    def test_whatever_the_valve_accepts_the_client_accepts(self) -> None:
        for url in ("http://[::1]:8001/v1", "https://h:1", "http://h:65535/x/"):
            valves = HelixValves(HELIX_BASE_URL=url)
            with HelixClient(valves.HELIX_BASE_URL) as client:
                assert client.base_url == helix_base_url(url)

    def test_a_password_never_shows_in_the_error(self) -> None:
        with pytest.raises(ConfigError) as caught:
            helix_base_url("ftp://user:hunter2@helix")
        assert "hunter2" not in str(caught.value)
        with pytest.raises(ConfigError) as caught:
            helix_base_url("http://user:hunter2@[::1")
        assert "hunter2" not in str(caught.value)

    def test_a_huge_url_is_shown_cut(self) -> None:
        with pytest.raises(ConfigError) as caught:
            helix_base_url("ftp://" + "x" * 100_000)
        assert len(str(caught.value)) < 500


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            pytest.param("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0", id="redis"),
            pytest.param("postgresql://u:hunter2@db/x", "postgresql://u:***@db/x", id="postgres"),
            pytest.param("http://u:hunter2@[::1/x", "http://u:***@[::1/x", id="unparseable"),
            pytest.param("http://u@h:1", "http://u@h:1", id="user-only"),
            pytest.param("sqlite:////var/x.db", "sqlite:////var/x.db", id="no-password"),
        ],
    )
    def test_a_password_becomes_stars(self, url: str, shown: str) -> None:
        assert redact_url(url) == shown

    def test_the_stores_still_offer_it(self) -> None:
        from helix_pipeline import stores

        assert stores.redact_url is redact_url


class TestAnyUrl:
    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            pytest.param("redis://cache:6379/0", None, id="redis"),
            pytest.param("postgresql://u:p@[::1]:5432/db", None, id="ipv6"),
            pytest.param("sqlite:////var/x.db", None, id="sqlite"),
            pytest.param("redis://cache:99999/0", "invalid port", id="port"),
            pytest.param("redis://cache:/0", "invalid port", id="port-empty"),
            pytest.param("postgresql://[::1/db", "unmatched brackets", id="bracket"),
            pytest.param("postgresql://h]/db", "unmatched brackets", id="closing-bracket"),
        ],
    )
    def test_the_host_and_port_part_is_checked(self, url: str, problem: str | None) -> None:
        found = authority_problem(url)
        assert found is None if problem is None else problem in (found or "")

    @pytest.mark.parametrize(
        ("url", "scheme"),
        [("Redis://h", "redis"), ("postgresql://[::1", "postgresql"), ("/tmp/x.db", "")],
    )
    def test_the_scheme_is_read_from_any_url(self, url: str, scheme: str) -> None:
        assert url_scheme(url) == scheme


@pytest.mark.parametrize(
    ("text", "secret", "shown"),
    [
        pytest.param(
            "could not translate host name: Servname not supported for ai_socktype",
            "p",
            "could not translate host name: Servname not supported for ai_socktype",
            id="inside-a-word",
        ),
        pytest.param(
            'password authentication failed for user "a"',
            "a",
            'password authentication failed for user "***"',
            id="quoted",
        ),
        pytest.param(
            "postgresql://helix:p@127.0.0.1/db failed",
            "p",
            "postgresql://helix:***@127.0.0.1/db failed",
            id="url",
        ),
        pytest.param("host=db password=p port=5", "p", "host=db password=*** port=5", id="keyword"),
        pytest.param('bad token "p@ss"', "p%40ss", 'bad token "***"', id="percent-decoded"),
        pytest.param("long-secret-42 here", "long-secret-42", "*** here", id="long"),
        pytest.param("anything", None, "anything", id="no-secret"),
    ],
)
def test_hide_secret_hides_copies_not_letters_of_words(
    text: str, secret: str | None, shown: str
) -> None:
    assert hide_secret(text, secret) == shown
