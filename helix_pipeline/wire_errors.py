"""The one translation of ``requests``/``urllib3`` failures and HTTP error answers into our errors.

:func:`transport_error` maps a failure to connect, to send or to read (refused, unresolvable,
timed out, cut off, TLS) and :func:`status_error` maps an HTTP error answer (4xx, 5xx) to the
:class:`~helix_pipeline.errors.BackendError` tree, each with a message that names the valve to
check. Both are plain functions that do no I/O: the caller passes what they need (the URL to show,
the timeouts, the error body it read, the API key to keep out of the message) and raises the
result ``from`` the original exception. :func:`is_retryable` and :func:`retry_after_seconds` tell
the caller's retry loop which failures may be sent again, and when.
"""

from __future__ import annotations

import html
import json
import re
import time
from email.utils import parsedate_to_datetime

import requests
import urllib3.exceptions

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
    url = shown_url
    waited = waited or read_timeout
    valve = "READ_TIMEOUT_S" if waited == read_timeout else "ANSWER_TIMEOUT_S"
    if _is_read_timeout(failure):
        if content_began:
            return BackendProtocolError(
                f"Helix at {url} went silent for {waited:g} s in the middle of its "
                "answer, so the answer is incomplete; raise the READ_TIMEOUT_S valve if Helix "
                "needs longer pauses."
            )
        return BackendUnavailable(
            f"Helix at {url} sent nothing for {waited:g} s: it may be busy or "
            f"stuck. Raise the {valve} valve if its answers take longer to start."
        )
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if _has_cause(failure, urllib3.exceptions.NameResolutionError):
        return BackendUnavailable(
            f"The host name of Helix at {url} cannot be resolved: check the HELIX_BASE_URL valve."
        )
    if _has_cause(failure, urllib3.exceptions.NewConnectionError, ConnectionRefusedError):
        return BackendUnavailable(
            f"Helix at {url} refused the connection: is it running? Check the HELIX_BASE_URL valve."
        )
    if _has_cause(failure, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
        return BackendUnavailable(
            f"Helix at {url} did not accept a connection within {connect_timeout:g} s: "
            "is it running and reachable? Check the HELIX_BASE_URL valve, or raise "
            "CONNECT_TIMEOUT_S."
        )
    if content_began or isinstance(
        failure, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)
    ):
        return BackendProtocolError(
            f"Helix at {url} closed the connection in the middle of its answer, so the answer "
            "is incomplete; look at Helix's log for the cause."
        )
    if isinstance(failure, requests.exceptions.SSLError):
        return BackendUnavailable(
            f"The TLS handshake with Helix at {url} failed: check http:// versus https:// in "
            "the HELIX_BASE_URL valve."
        )
    if isinstance(failure, requests.ConnectionError):
        return BackendUnavailable(
            f"Helix at {url} dropped the connection before answering: is it running? Check "
            "the HELIX_BASE_URL valve and Helix's log."
        )
    return BackendProtocolError(
        f"The request to Helix at {url} failed ({type(failure).__name__}); check the "
        "HELIX_BASE_URL valve."
    )


def server_unreachable(
    failure: requests.RequestException, *, server: str, fix: str
) -> HelixPipelineError:
    """Our error for a server other than Helix (the Pipelines server, Open WebUI) that a command
    could not talk to: ``cannot reach <server>``, what happened, then ``fix``."""
    if _has_cause(failure, urllib3.exceptions.NameResolutionError):
        happened = "its host name cannot be resolved"
    elif _has_cause(failure, urllib3.exceptions.NewConnectionError, ConnectionRefusedError):
        happened = "it refused the connection"
    elif _has_cause(failure, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
        happened = "it did not accept a connection in time"
    elif _is_read_timeout(failure):
        happened = "it did not answer in time"
    elif isinstance(failure, requests.exceptions.SSLError):
        happened = "the TLS handshake failed (http:// or https://?)"
    elif isinstance(failure, requests.ConnectionError):
        happened = "the connection dropped before it answered"
    else:
        happened = f"the request failed ({type(failure).__name__})"
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
