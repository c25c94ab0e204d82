"""The translation of transport failures and HTTP error answers, called directly (no I/O).

The messages themselves are pinned through HelixClient in test_client.py and test_client_wire.py;
these tests pin what the functions take: the timeouts, the body read by the caller, the API key.
"""

from __future__ import annotations

import socket
import time
from email.utils import formatdate

import pytest
import requests
import urllib3.exceptions
from requests.structures import CaseInsensitiveDict

from helix_pipeline.errors import BackendError, BackendProtocolError, BackendUnavailable
from helix_pipeline.wire_errors import (
    is_retryable,
    retry_after_seconds,
    server_unreachable,
    status_error,
    summarise_text,
    transport_error,
)

URL = "http://helix.test:8001"
SECRET = "sk-helix-very-secret-0123456789"


def error_answer(status: int, headers: dict[str, str], reason: str = "Reason") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers = CaseInsensitiveDict(headers)
    return response


def read_timeout() -> requests.ReadTimeout:
    return requests.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."))


class TestTransportError:
    def test_a_silence_at_the_read_timeout_names_read_timeout_s(self) -> None:
        error = transport_error(
            read_timeout(), shown_url=URL, connect_timeout=5.0, read_timeout=120.0
        )
        assert isinstance(error, BackendUnavailable)
        assert "sent nothing for 120 s" in str(error)
        assert "READ_TIMEOUT_S" in str(error)

    def test_a_longer_wait_for_a_whole_answer_names_answer_timeout_s(self) -> None:
        error = transport_error(
            read_timeout(), shown_url=URL, connect_timeout=5.0, read_timeout=120.0, waited=660.0
        )
        assert "sent nothing for 660 s" in str(error)
        assert "ANSWER_TIMEOUT_S" in str(error)

    def test_a_silence_after_the_answer_began_is_an_incomplete_answer(self) -> None:
        error = transport_error(
            read_timeout(),
            shown_url=URL,
            connect_timeout=5.0,
            read_timeout=120.0,
            content_began=True,
        )
        assert isinstance(error, BackendProtocolError)
        assert "in the middle of its answer" in str(error)

    def test_a_connect_timeout_names_the_connect_timeout_given(self) -> None:
        error = transport_error(
            requests.ConnectTimeout("timed out"),
            shown_url=URL,
            connect_timeout=2.5,
            read_timeout=120.0,
        )
        assert f"Helix at {URL} did not accept a connection within 2.5 s" in str(error)


class TestStatusError:
    def test_the_body_read_by_the_caller_is_summarised_without_the_api_key(self) -> None:
        answer = error_answer(401, {"Content-Type": "application/json"})
        body = f'{{"error": {{"message": "Incorrect API key provided: {SECRET}"}}}}'
        error = status_error(answer, body, shown_url=URL, api_key=SECRET)
        assert str(error) == (
            "Helix refused the request as unauthorised (HTTP 401): Incorrect API key provided: "
            "***. Check the HELIX_API_KEY valve."
        )

    def test_an_unread_body_falls_back_to_the_reason_phrase(self) -> None:
        answer = error_answer(503, {"Retry-After": "7"}, reason="Service Unavailable")
        error = status_error(answer, "", shown_url=URL, api_key=None)
        assert isinstance(error, BackendUnavailable)
        assert str(error) == "Helix failed (HTTP 503): Service Unavailable"
        assert error.retry_after == 7.0

    def test_a_404_names_the_shown_url(self) -> None:
        error = status_error(error_answer(404, {}), "Not Found", shown_url=URL, api_key=None)
        assert type(error) is BackendError
        assert f"Helix at {URL} has no such endpoint (HTTP 404)" in str(error)


class TestRetryRules:
    @pytest.mark.parametrize(
        ("failure", "retryable"),
        [
            pytest.param(requests.ConnectionError("refused"), True, id="connection-refused"),
            pytest.param(requests.exceptions.SSLError("handshake"), False, id="tls"),
            pytest.param(read_timeout(), False, id="read-timeout"),
            pytest.param(requests.exceptions.InvalidURL("bad"), False, id="not-a-connection"),
        ],
    )
    def test_only_failures_to_connect_are_retryable(
        self, failure: requests.RequestException, retryable: bool
    ) -> None:
        assert is_retryable(failure) is retryable

    def test_a_retry_after_date_in_the_future_is_the_seconds_until_then(self) -> None:
        seconds = retry_after_seconds(formatdate(time.time() + 60, usegmt=True))
        assert seconds is not None
        assert 55.0 <= seconds <= 61.0


class TestSummariseText:
    def test_long_text_is_put_on_one_line_and_cut_to_300_characters(self) -> None:
        summary = summarise_text("word\n\t " * 200)
        assert len(summary) == 300
        assert summary.endswith("…")
        assert "\n" not in summary


def refused() -> requests.ConnectionError:
    return requests.ConnectionError(urllib3.exceptions.NewConnectionError(None, "refused"))


def unresolvable() -> requests.ConnectionError:
    reason = socket.gaierror("Name or service not known")
    return requests.ConnectionError(
        urllib3.exceptions.NameResolutionError("helix.test", None, reason)
    )


FAILURES = [
    pytest.param(
        read_timeout(),
        BackendUnavailable,
        "sent nothing for 120 s",
        "did not answer in time",
        id="read-timeout",
    ),
    pytest.param(
        unresolvable(),
        BackendUnavailable,
        "host name of Helix",
        "host name cannot be resolved",
        id="unresolvable",
    ),
    pytest.param(
        refused(),
        BackendUnavailable,
        "refused the connection: is it running?",
        "it refused the connection",
        id="refused",
    ),
    pytest.param(
        requests.ConnectTimeout("timed out"),
        BackendUnavailable,
        "within 5 s",
        "did not accept a connection in time",
        id="connect-timeout",
    ),
    pytest.param(
        requests.exceptions.ChunkedEncodingError("cut"),
        BackendProtocolError,
        "closed the connection in the middle of its answer",
        "closed the connection in the middle of its answer",
        id="cut-off",
    ),
    pytest.param(
        requests.exceptions.SSLError("handshake"),
        BackendUnavailable,
        "TLS handshake",
        "TLS handshake failed",
        id="tls",
    ),
    pytest.param(
        requests.ConnectionError("reset"),
        BackendUnavailable,
        "dropped the connection",
        "the connection dropped",
        id="dropped",
    ),
    pytest.param(
        requests.exceptions.InvalidURL("bad"),
        BackendProtocolError,
        "failed (InvalidURL)",
        "the request failed (InvalidURL)",
        id="other",
    ),
]


class TestEachFailureKind:
    """One classification of a failure, told for Helix (the valve to check) or for another server."""

    @pytest.mark.parametrize(("failure", "kind", "for_helix", "for_others"), FAILURES)
    def test_helix_is_told_what_happened_and_which_valve_to_check(
        self, failure: requests.RequestException, kind: type, for_helix: str, for_others: str
    ) -> None:
        error = transport_error(failure, shown_url=URL, connect_timeout=5.0, read_timeout=120.0)
        assert type(error) is kind
        assert for_helix in str(error)
        assert URL in str(error)

    @pytest.mark.parametrize(("failure", "kind", "for_helix", "for_others"), FAILURES)
    def test_another_server_is_told_what_happened_and_how_to_fix_it(
        self, failure: requests.RequestException, kind: type, for_helix: str, for_others: str
    ) -> None:
        error = server_unreachable(failure, server="Open WebUI", fix="check --url")
        assert str(error).startswith("cannot reach Open WebUI: ")
        assert for_others in str(error)
        assert str(error).endswith("; check --url")

    def test_a_dropped_connection_after_the_answer_began_is_an_incomplete_answer(self) -> None:
        error = transport_error(
            requests.ConnectionError("reset"),
            shown_url=URL,
            connect_timeout=5.0,
            read_timeout=120.0,
            content_began=True,
        )
        assert isinstance(error, BackendProtocolError)
        assert "closed the connection in the middle of its answer" in str(error)
