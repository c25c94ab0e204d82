"""The HTTP client for Helix's OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``).

One :class:`HelixClient` holds one ``requests.Session`` (connections are reused). The Pipelines
server calls ``pipe()`` from a thread pool, so one client serves many threads at once: a
``requests.Session`` with its connection pool is safe for that in practice (each request takes
its own pooled connection, and the client never mutates the session after construction).

Every ``requests``/``urllib3`` failure and every HTTP error answer is translated in exactly one
place, :mod:`helix_pipeline.wire_errors`, into the :class:`~helix_pipeline.errors.BackendError`
tree. Failures before any byte of the answer (connection refused, 429/502/503/504) are retried
with a small exponential backoff; nothing is retried once the answer began. What is sent (the
payload rules) lives in :mod:`helix_pipeline.payload`, re-exported here.
"""

from __future__ import annotations

import json
import logging
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
from .sse import completion_content, describe_error, iter_deltas
from .urls import helix_base_url, redact_url
from .wire_errors import (
    is_retryable,
    retry_after_seconds,
    status_error,
    summarise_text,
    transport_error,
)

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

logger = logging.getLogger(__name__)

DEFAULT_CONVERSATION_HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024
_MAX_COMPLETION_BODY = 64 * 1024 * 1024


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
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._retry_after_max = retry_after_max
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
            if _is_event_stream(response):
                text = "".join(self._deltas(response))
                return _synthetic_completion(body, text)
            completion = self._read_json(response, "/v1/chat/completions", waited)
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
            if _is_event_stream(response) or not _is_json(response):
                yield from self._deltas(response)
                return
            completion = self._read_json(response, "/v1/chat/completions")
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
                if attempt < self.max_retries and is_retryable(exc):
                    self._wait_before_retry(attempt, None, type(exc).__name__)
                    attempt += 1
                    continue
                raise self._transport_error(exc, waited=read_timeout) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                self._wait_before_retry(attempt, retry_after, f"HTTP {response.status_code}")
                attempt += 1
                continue
            if response.status_code >= 400:
                with response:
                    error_body = self._read_error_body(response)
                    raise status_error(
                        response, error_body, shown_url=self._shown_url, api_key=self.api_key
                    )
            return response

    def _wait_before_retry(self, attempt: int, retry_after: float | None, reason: str) -> None:
        delay = min(self._backoff_base * 2**attempt, self._backoff_max)
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self._retry_after_max)
        logger.warning(
            "Helix at %s: %s, retry %d of %d in %.2f s",
            self._shown_url,
            reason,
            attempt + 1,
            self.max_retries,
            delay,
        )
        self._sleep(delay)

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self._send("GET", path, None, None)
        with response:
            return self._read_json(response, path)

    def _read_json(
        self, response: requests.Response, path: str, read_timeout: float | None = None
    ) -> dict[str, Any]:
        raw = self._read_body(response, _MAX_COMPLETION_BODY, read_timeout)
        try:
            data = json.loads(raw)
        except ValueError:
            raise BackendProtocolError(
                f"Helix's {path} answer is not JSON: {summarise_text(raw)!r}; check that "
                "HELIX_BASE_URL points at Helix",
                status_code=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise BackendProtocolError(
                f"Helix's {path} answer is not a JSON object", status_code=response.status_code
            )
        return data

    def _read_body(
        self, response: requests.Response, limit: int, read_timeout: float | None = None
    ) -> str:
        """The body as text, at most ``limit`` bytes; read failures are translated."""
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in iter_body(response):
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._transport_error(exc, content_began=size > 0, waited=read_timeout) from exc
        encoding = response.encoding or "utf-8"
        try:
            return b"".join(parts)[:limit].decode(encoding, errors="replace")
        except LookupError:
            return b"".join(parts)[:limit].decode("utf-8", errors="replace")

    def _deltas(self, response: requests.Response) -> Iterator[str]:
        """Content deltas of a streamed answer, exactly as Helix sent them."""
        began = False
        try:
            for delta in iter_deltas(iter_body(response)):
                began = True
                yield delta
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._transport_error(exc, content_began=began) from exc

    def _read_error_body(self, response: requests.Response) -> str:
        """Up to 64 KiB of an error answer's body, for its summary; ``""`` if it cannot be read."""
        try:
            return self._read_body(response, _MAX_ERROR_BODY)
        except BackendError:
            return ""

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


def iter_body(response: requests.Response) -> Iterator[bytes]:
    """The body of a ``stream=True`` response, its bytes yielded as they arrive.

    One HTTP chunk at a time, or whatever one socket read returns for a body without chunked
    encoding: never waiting to fill a buffer, so a stream's deltas pass on at once. Read failures
    are raised as ``requests``/``urllib3`` exceptions (translate them with
    :func:`~helix_pipeline.wire_errors.transport_error`).
    """
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if getattr(raw, "chunked", False) or read1 is None:
        yield from response.iter_content(chunk_size=None)
        return
    while True:
        data = read1(65536, decode_content=True)
        if not data:
            return
        yield data


def _synthetic_completion(body: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


def _is_event_stream(response: requests.Response) -> bool:
    return "text/event-stream" in response.headers.get("Content-Type", "").lower()


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "").lower()
