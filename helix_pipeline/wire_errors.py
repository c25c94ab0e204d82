"""The one translation of ``requests``/``urllib3`` failures and HTTP error answers into our errors.

:func:`transport_error` maps a failure to connect, to send or to read (refused, unresolvable,
timed out, cut off, TLS) and :func:`status_error` maps an HTTP error answer (4xx, 5xx) to the
:class:`~helix_pipeline.errors.BackendError` tree, each with a message that names the valve to
check. Both are plain functions that do no I/O: the caller passes what they need (the URL to show,
the timeouts, the error body it read, the API key to keep out of the message) and raises the
result ``from`` the original exception. :func:`is_retryable` and :func:`retry_after_seconds` tell
the caller's retry loop which failures may be sent again, and when. A failure is classified once
(:data:`_CLASSIFIED`), then told from a table: for Helix with the valve to check, or for another
server (:func:`server_unreachable`) with the fix its caller gives.
"""

from __future__ import annotations

import enum
import html
import json
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import requests
import urllib3.exceptions
from requests.exceptions import ChunkedEncodingError
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
)

from .errors import BackendError, BackendProtocolError, BackendUnavailable, HelixPipelineError
from .sse import describe_error

__all__ = [
    "is_retryable",
    "retry_after_seconds",
    "server_unreachable",
    "status_error",
    "summarise_text",
    "transport_error",
]

_MAX_SUMMARY = 300
_HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def _is_read_timeout(exc: BaseException) -> bool:
    return _has_cause(exc, requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError)


def _has_cause(exc: BaseException, *kinds: type[BaseException]) -> bool:
    """Whether ``exc`` or anything it wraps (args, ``reason``, ``__cause__``) is one of ``kinds``."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kinds):
            return True
        pending.extend(item.args)
        pending.extend((getattr(item, "reason", None), item.__cause__, item.__context__))
    return False


class _Failure(enum.Enum):
    """What went wrong on the wire, whichever server it was: one classification for every message."""

    READ_TIMEOUT = "read timeout"
    SILENT_MIDWAY = "silent in the middle of the answer"
    UNRESOLVABLE = "host name not resolved"
    REFUSED = "connection refused"
    CONNECT_TIMEOUT = "connect timeout"
    CUT_OFF = "closed in the middle of the answer"
    TLS = "TLS handshake failed"
    DROPPED = "dropped before answering"
    OTHER = "other"


_CLASSIFIED: tuple[tuple[_Failure, Callable[[BaseException], bool]], ...] = (
    (_Failure.READ_TIMEOUT, _is_read_timeout),
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    (_Failure.UNRESOLVABLE, lambda failure: _has_cause(failure, NameResolutionError)),
    (
        _Failure.REFUSED,
        lambda failure: _has_cause(failure, NewConnectionError, ConnectionRefusedError),
    ),
    (
        _Failure.CONNECT_TIMEOUT,
        lambda failure: _has_cause(failure, requests.ConnectTimeout, ConnectTimeoutError),
    ),
    (_Failure.CUT_OFF, lambda failure: isinstance(failure, (ChunkedEncodingError, ProtocolError))),
    (_Failure.TLS, lambda failure: isinstance(failure, requests.exceptions.SSLError)),
    (_Failure.DROPPED, lambda failure: isinstance(failure, requests.ConnectionError)),
)
"""The first match names the failure; none is :attr:`_Failure.OTHER`."""

_AFTER_THE_ANSWER_BEGAN = {
    _Failure.READ_TIMEOUT: _Failure.SILENT_MIDWAY,
    _Failure.TLS: _Failure.CUT_OFF,
    _Failure.DROPPED: _Failure.CUT_OFF,
    _Failure.OTHER: _Failure.CUT_OFF,
}
"""Failures that mean an incomplete answer once part of it had arrived."""

_FOR_HELIX: dict[_Failure, tuple[type[BackendError], str]] = {
    _Failure.READ_TIMEOUT: (
        BackendUnavailable,
        "Helix at {url} sent nothing for {waited:g} s: it may be busy or stuck. Raise the {valve} "
        "valve if its answers take longer to start.",
    ),
    _Failure.SILENT_MIDWAY: (
        BackendProtocolError,
        "Helix at {url} went silent for {waited:g} s in the middle of its answer, so the answer "
        "is incomplete; raise the READ_TIMEOUT_S valve if Helix needs longer pauses.",
    ),
    _Failure.UNRESOLVABLE: (
        BackendUnavailable,
        "The host name of Helix at {url} cannot be resolved: check the HELIX_BASE_URL valve.",
    ),
    _Failure.REFUSED: (
        BackendUnavailable,
        "Helix at {url} refused the connection: is it running? Check the HELIX_BASE_URL valve.",
    ),
    _Failure.CONNECT_TIMEOUT: (
        BackendUnavailable,
        "Helix at {url} did not accept a connection within {connect_timeout:g} s: is it running "
        "and reachable? Check the HELIX_BASE_URL valve, or raise CONNECT_TIMEOUT_S.",
    ),
    _Failure.CUT_OFF: (
        BackendProtocolError,
        "Helix at {url} closed the connection in the middle of its answer, so the answer is "
        "incomplete; look at Helix's log for the cause.",
    ),
    _Failure.TLS: (
        BackendUnavailable,
        "The TLS handshake with Helix at {url} failed: check http:// versus https:// in the "
        "HELIX_BASE_URL valve.",
    ),
    _Failure.DROPPED: (
        BackendUnavailable,
        "Helix at {url} dropped the connection before answering: is it running? Check the "
        "HELIX_BASE_URL valve and Helix's log.",
    ),
    _Failure.OTHER: (
        BackendProtocolError,
        "The request to Helix at {url} failed ({name}); check the HELIX_BASE_URL valve.",
    ),
}
"""Each failure as Helix's: our error and a message naming the valve to check."""

_FOR_OTHERS = {
    _Failure.READ_TIMEOUT: "it did not answer in time",
    _Failure.SILENT_MIDWAY: "it went silent in the middle of its answer",
    _Failure.UNRESOLVABLE: "its host name cannot be resolved",
    _Failure.REFUSED: "it refused the connection",
    _Failure.CONNECT_TIMEOUT: "it did not accept a connection in time",
    _Failure.CUT_OFF: "it closed the connection in the middle of its answer",
    _Failure.TLS: "the TLS handshake failed (http:// or https://?)",
    _Failure.DROPPED: "the connection dropped before it answered",
    _Failure.OTHER: "the request failed ({name})",
}
"""Each failure as another server's (the Pipelines server, Open WebUI): what happened."""


def _classify(failure: BaseException, *, content_began: bool = False) -> _Failure:
    found = next((kind for kind, test in _CLASSIFIED if test(failure)), _Failure.OTHER)
    return _AFTER_THE_ANSWER_BEGAN.get(found, found) if content_began else found


def transport_error(
    failure: requests.RequestException | urllib3.exceptions.HTTPError,
    *,
    shown_url: str,
    connect_timeout: float,
    read_timeout: float,
    waited: float | None = None,
    content_began: bool = False,
) -> BackendError:
    """Our error for a failure to connect, send or read, its message naming the valve to check.

    ``shown_url`` is Helix's URL as it may be shown (without credentials). ``waited`` is the read
    timeout this request used when it was not ``read_timeout``: a non-streaming answer waits for
    the whole answer (ANSWER_TIMEOUT_S), a stream only per pause (READ_TIMEOUT_S).
    ``content_began`` says part of the answer had arrived, so it is incomplete.
    """
    waited = waited or read_timeout
    kind, message = _FOR_HELIX[_classify(failure, content_began=content_began)]
    return kind(
        message.format(
            url=shown_url,
            waited=waited,
            valve="READ_TIMEOUT_S" if waited == read_timeout else "ANSWER_TIMEOUT_S",
            connect_timeout=connect_timeout,
            name=type(failure).__name__,
        )
    )


def server_unreachable(
    failure: requests.RequestException, *, server: str, fix: str
) -> HelixPipelineError:
    """Our error for a server other than Helix (the Pipelines server, Open WebUI) that a command
    could not talk to: ``cannot reach <server>``, what happened, then ``fix``."""
    happened = _FOR_OTHERS[_classify(failure)].format(name=type(failure).__name__)
    return HelixPipelineError(f"cannot reach {server}: {happened}; {fix}")


def status_error(
    response: requests.Response, body: str, *, shown_url: str, api_key: str | None
) -> BackendError:
    """Our error for an HTTP error answer (status 400 or more), given the part of its ``body``
    that was read (``""`` if none could be).

    The message summarises the body (a JSON error's text, an HTML page's words, plain text), with
    ``api_key`` replaced by ``***``. 502, 503 and 504 are :class:`BackendUnavailable`; the
    ``Retry-After`` header travels as ``retry_after``.
    """
    status = response.status_code
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    summary = _summarise_body(body, response.headers.get("Content-Type", ""))
    if api_key:
        summary = summary.replace(api_key, "***")
    summary = summary or response.reason or "no details"
    if status in (401, 403):
        message = (
            f"Helix refused the request as unauthorised (HTTP {status}): {summary}. "
            "Check the HELIX_API_KEY valve."
        )
    elif status == 404:
        message = (
            f"Helix at {shown_url} has no such endpoint (HTTP 404): {summary}. "
            "Check the HELIX_BASE_URL valve."
        )
    elif status == 429:
        message = f"Helix is rate limiting requests (HTTP 429): {summary}. Try again later."
    elif status < 500:
        message = f"Helix rejected the request: {summary}"
    else:
        message = f"Helix failed (HTTP {status}): {summary}"
    kind = BackendUnavailable if status in (502, 503, 504) else BackendError
    return kind(message, status_code=status, retry_after=retry_after)


def is_retryable(exc: requests.RequestException) -> bool:
    """Only failures to connect or to get any answer; never TLS errors or read timeouts."""
    return isinstance(exc, requests.ConnectionError) and not (
        isinstance(exc, requests.exceptions.SSLError) or _is_read_timeout(exc)
    )


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number or an HTTP date; ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def summarise_text(text: str) -> str:
    """``text`` on one line, whitespace collapsed, cut to 300 characters (ending in ``…``)."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 1].rstrip() + "…"


def _summarise_body(body: str, content_type: str) -> str:
    """A short readable summary of an error body: JSON error shapes, HTML or plain text."""
    text = body.strip()
    if not text:
        return ""
    if text.startswith(("{", "[")) or "json" in content_type.lower():
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if payload is not None:
            described = describe_error(payload)
            if described is not None:
                return described
            return summarise_text(json.dumps(payload, ensure_ascii=False))
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        text = html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text)))
    return summarise_text(text)
