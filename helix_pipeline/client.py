"""The HTTP client for Helix's OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``).

One :class:`HelixClient` holds one ``requests.Session`` (connections are reused). The Pipelines
server calls ``pipe()`` from a thread pool, so one client serves many threads at once: a
``requests.Session`` with its connection pool is safe for that in practice (each request takes
its own pooled connection, and the client never mutates the session after construction).

Every ``requests``/``urllib3`` failure and every HTTP error answer is translated in exactly one
place, :mod:`helix_pipeline.wire_errors`, into the :class:`~helix_pipeline.errors.BackendError`
tree. Failures before any byte of the answer (connection refused, 429/502/503/504) are retried
(:mod:`helix_pipeline.retries`); nothing is retried once the answer began. What is sent (the
payload rules) lives in :mod:`helix_pipeline.payload`, re-exported here; how an answer's body is
read, in :mod:`helix_pipeline.response_body`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .conversation import header_safe
from .errors import BackendError, BackendProtocolError, ConfigError
from .messages import Message
from .payload import (
    DEFAULT_MODEL,
    FORWARDED_FIELDS,
    NEVER_FORWARDED,
    build_payload,
    check_extra_fields,
    completion_text,
)
from .response_body import BodyReader, is_event_stream, is_json, iter_body
from .retries import RETRY_STATUSES, RetryPolicy
from .sse import completion_content, describe_error
from .urls import helix_base_url, redact_url
from .wire_errors import is_retryable, retry_after_seconds, status_error, transport_error

__all__ = [
    "DEFAULT_CONVERSATION_HEADERS",
    "DEFAULT_MODEL",
    "FORWARDED_FIELDS",
    "NEVER_FORWARDED",
    "HelixClient",
    "build_payload",
    "completion_text",
    "iter_body",
]

DEFAULT_CONVERSATION_HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")


class HelixClient:
    """A client for one Helix server; close it (or use ``with``) to release its connections."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        conversation_headers: Sequence[str] = DEFAULT_CONVERSATION_HEADERS,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_retries: int = 2,
        extra_fields: Iterable[str] = (),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        retry_after_max: float = 30.0,
        completion_timeout: float | None = None,
    ) -> None:
        """``read_timeout`` is an idle timeout: the longest silence between two bytes, not the
        length of the whole answer (Helix may work for 600 s, sending a heartbeat every 10 s).
        A non-streaming answer comes in one piece when Helix is done (Helix allows itself 600 s),
        with no heartbeat: give ``completion_timeout`` (e.g. 660) to let :meth:`complete` wait
        ``max(read_timeout, completion_timeout)`` for it."""
        self.base_url = helix_base_url(base_url)
        self.api_key = api_key or None
        self.conversation_headers = tuple(h.strip() for h in conversation_headers if h.strip())
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ConfigError(
                "CONNECT_TIMEOUT_S and READ_TIMEOUT_S must be greater than 0 seconds",
                setting="READ_TIMEOUT_S" if read_timeout <= 0 else "CONNECT_TIMEOUT_S",
            )
        if max_retries < 0:
            raise ConfigError("max_retries must be 0 or more", setting="max_retries")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.completion_timeout = completion_timeout
        self.max_retries = max_retries
        self.extra_fields = check_extra_fields(extra_fields)
        self._retries = RetryPolicy(max_retries, backoff_base, backoff_max, retry_after_max, sleep)
        self._body = BodyReader(self._transport_error)
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _read_environment_once(session, self.base_url)
        self._session = session
        self._shown_url = redact_url(self.base_url)

    def __repr__(self) -> str:
        return f"HelixClient({self._shown_url!r})"

    def __enter__(self) -> HelixClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections (a session passed in by the caller stays open)."""
        if self._owns_session:
            self._session.close()

    # ----------------------------------------------------------------------------- public calls

    def models(self) -> list[str]:
        """The model ids Helix offers (``["helix-consultant"]``)."""
        data = self._get_json("/v1/models")
        items = data.get("data")
        if not isinstance(items, list):
            raise BackendProtocolError("Helix's /v1/models answer has no 'data' list")
        return [item["id"] for item in items if isinstance(item, Mapping) and "id" in item]

    def health(self) -> dict[str, Any]:
        """Helix's ``/health`` answer (``{"status": "healthy"}``)."""
        return self._get_json("/health")

    def build_payload(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        body: Mapping[str, Any],
        *,
        stream: bool,
        model: str | None = None,
    ) -> dict[str, Any]:
        """:func:`build_payload` with this client's extra fields."""
        return build_payload(
            messages, body, stream=stream, extra_fields=self.extra_fields, model=model
        )

    def complete(
        self, payload: Mapping[str, Any], *, conversation_id: str | None
    ) -> dict[str, Any]:
        """One non-streaming completion (``payload["stream"]`` is forced to false).

        ``conversation_id=None`` sends no conversation header (background tasks). Helix words
        most of its own failures as answer text: :mod:`helix_pipeline.helix_answer` reads them.
        """
        body = {**payload, "stream": False}
        waited = max(self.read_timeout, self.completion_timeout or 0.0)
        response = self._send("POST", "/v1/chat/completions", body, conversation_id, waited)
        with response:
            if is_event_stream(response):
                text = "".join(self._body.deltas(response))
                return _synthetic_completion(body, text)
            completion = self._body.json_object(response, "/v1/chat/completions", waited)
        error = describe_error(completion)
        if error is not None:
            raise BackendError(f"Helix reported an error: {error}", status_code=200)
        if not isinstance(completion.get("choices"), list):
            raise BackendProtocolError(
                "Helix answered without a completion (no 'choices'); check that HELIX_BASE_URL "
                "points at Helix",
                status_code=response.status_code,
            )
        return completion

    def stream(self, payload: Mapping[str, Any], *, conversation_id: str | None) -> Iterator[str]:
        """The answer's content deltas, each yielded as soon as it arrives.

        A generator: the request is sent when iteration starts, so errors surface from the loop.
        Closing the generator early closes the connection. ``[DONE]`` is never yielded.
        """
        body = {**payload, "stream": True}
        response = self._send("POST", "/v1/chat/completions", body, conversation_id)
        with response:
            if is_event_stream(response) or not is_json(response):
                yield from self._body.deltas(response)
                return
            completion = self._body.json_object(response, "/v1/chat/completions")
            error = describe_error(completion)
            if error is not None:
                raise BackendError(f"Helix reported an error: {error}", status_code=200)
            text = completion_content(completion)
            if text is None:
                raise BackendProtocolError(
                    "Helix answered a stream request with JSON but no answer"
                )
            if text:
                yield text

    # ------------------------------------------------------------------------------ transport

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _headers(self, conversation_id: str | None, *, stream: bool) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": "helix-pipeline",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if conversation_id:
            value = header_safe(conversation_id)
            for name in self.conversation_headers:
                headers[name] = value
        return headers

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        conversation_id: str | None,
        read_timeout: float | None = None,
    ) -> requests.Response:
        """Send, retrying only while no answer has begun; a 2xx response is returned unread."""
        read_timeout = read_timeout or self.read_timeout
        stream = bool(body and body.get("stream"))
        headers = self._headers(conversation_id, stream=stream)
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method,
                    self._url(path),
                    json=body,
                    headers=headers,
                    timeout=(self.connect_timeout, read_timeout),
                    stream=True,
                )
            except requests.RequestException as exc:
                if self._retries.allows(attempt) and is_retryable(exc):
                    reason = type(exc).__name__
                    self._retries.wait(attempt, None, reason=reason, shown_url=self._shown_url)
                    attempt += 1
                    continue
                raise self._transport_error(exc, waited=read_timeout) from exc
            if response.status_code in RETRY_STATUSES and self._retries.allows(attempt):
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                reason = f"HTTP {response.status_code}"
                self._retries.wait(attempt, retry_after, reason=reason, shown_url=self._shown_url)
                attempt += 1
                continue
            if response.status_code >= 400:
                with response:
                    error_body = self._body.error_text(response)
                    raise status_error(
                        response, error_body, shown_url=self._shown_url, api_key=self.api_key
                    )
            return response

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self._send("GET", path, None, None)
        with response:
            return self._body.json_object(response, path)

    def _transport_error(
        self,
        exc: requests.RequestException | urllib3.exceptions.HTTPError,
        *,
        content_began: bool = False,
        waited: float | None = None,
    ) -> BackendError:
        """:func:`~helix_pipeline.wire_errors.transport_error` for this client."""
        return transport_error(
            exc,
            shown_url=self._shown_url,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            waited=waited,
            content_began=content_began,
        )


# ---------------------------------------------------------------------------------- helpers


def _read_environment_once(session: requests.Session, base_url: str) -> None:
    """Take the proxy and CA bundle settings for ``base_url`` from the environment now.

    With ``trust_env`` on, requests reads every proxy variable (and ``REQUESTS_CA_BUNDLE``) again
    on each call: 0.1 ms a turn with 35 variables (benchmarks/overhead.py). Every request goes to
    ``base_url``, and a new client is built when a valve changes, so once is enough. Helix takes
    the API key, never ``~/.netrc``, which requests would otherwise also read per call.
    """
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    session.trust_env = False


def _synthetic_completion(body: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
