"""The HTTP client for Helix's OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``).

One :class:`HelixClient` holds one ``requests.Session`` (connections are reused). The Pipelines
server calls ``pipe()`` from a thread pool, so one client serves many threads at once: a
``requests.Session`` with its connection pool is safe for that in practice (each request takes
its own pooled connection, and the client never mutates the session after construction).

Every ``requests``/``urllib3`` failure and every HTTP error answer is translated in exactly one
place, :meth:`HelixClient._to_backend_error`, into the :class:`~helix_pipeline.errors.BackendError`
tree. Failures before any byte of the answer (connection refused, 429/502/503/504) are retried
with a small exponential backoff; nothing is retried once the answer began.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .conversation import PRIVATE_KEY, header_safe
from .errors import BackendError, BackendProtocolError, BackendUnavailable, ConfigError
from .sse import completion_content, describe_error, iter_deltas
from .stores import redact_url

__all__ = [
    "DEFAULT_CONVERSATION_HEADERS",
    "DEFAULT_MODEL",
    "FORWARDED_FIELDS",
    "NEVER_FORWARDED",
    "HelixClient",
    "build_payload",
    "completion_text",
]

logger = logging.getLogger(__name__)

DEFAULT_CONVERSATION_HEADERS = ("X-OpenWebUI-Chat-Id", "X-Conversation-ID")
DEFAULT_MODEL = "helix-consultant"
FORWARDED_FIELDS = ("temperature", "max_tokens", "top_p", "stop")
"""Body fields forwarded to Helix besides ``model``, ``messages`` and ``stream``."""
NEVER_FORWARDED = frozenset({"tools", "tool_choice", "metadata", "features", "user", PRIVATE_KEY})
"""Open WebUI's own keys, which other OpenAI-compatible servers reject; never sent to Helix."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_HELIX_ERROR = re.compile(r"\s*(?:❌\s*)?(?:Unerwarteter )?Fehler(?: bei der Verarbeitung)?:")
"""How Helix words its own failures in a 200 answer ("Fehler: ...", and in its non-streaming
path also "Fehler bei der Verarbeitung: ..." and "Unerwarteter Fehler: ...")."""
_MAX_ERROR_BODY = 64 * 1024
_MAX_COMPLETION_BODY = 64 * 1024 * 1024
_MAX_SUMMARY = 300
_HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def build_payload(
    messages: Sequence[Mapping[str, Any]],
    body: Mapping[str, Any],
    *,
    stream: bool,
    extra_fields: Iterable[str] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """The request body for Helix: only what an OpenAI-compatible server may receive.

    ``messages`` are reduced to ``role`` and ``content``. From ``body`` only ``model`` (unless
    ``model`` is given), ``temperature``, ``max_tokens``, ``top_p``, ``stop`` and the named
    ``extra_fields`` are copied, and only when set; ``tools``, ``metadata``, ``features``, ``user``
    and private keys (``_...``) never are.
    """
    names = _check_extra_fields(extra_fields)
    chosen_model = model or body.get("model")
    payload: dict[str, Any] = {
        "model": chosen_model if isinstance(chosen_model, str) and chosen_model else DEFAULT_MODEL,
        "messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
        "stream": stream,
    }
    for name in (*FORWARDED_FIELDS, *names):
        value = body.get(name)
        if value is not None:
            payload[name] = value
    return payload


def completion_text(completion: Mapping[str, Any]) -> str:
    """The answer text of a non-streaming completion (``""`` when Helix sent ``null``)."""
    return completion_content(completion) or ""


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
        self.base_url = _normalise_base_url(base_url)
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
        self.extra_fields = _check_extra_fields(extra_fields)
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
        messages: Sequence[Mapping[str, Any]],
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

        ``conversation_id=None`` sends no conversation header (background tasks). A 200 whose text
        starts with ``Fehler:`` is Helix's own error and raises :class:`BackendError`.
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
        _raise_for_helix_error(completion_text(completion))
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
            _raise_for_helix_error(text)
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
                if attempt < self.max_retries and _is_retryable(exc):
                    self._wait_before_retry(attempt, None, type(exc).__name__)
                    attempt += 1
                    continue
                raise self._to_backend_error(exc, read_timeout=read_timeout) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                self._wait_before_retry(attempt, retry_after, f"HTTP {response.status_code}")
                attempt += 1
                continue
            if response.status_code >= 400:
                with response:
                    raise self._to_backend_error(response)
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
                f"Helix's {path} answer is not JSON: {_summarise_text(raw)!r}; check that "
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
            for chunk in _body_chunks(response):
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._to_backend_error(
                exc, content_began=size > 0, read_timeout=read_timeout
            ) from exc
        encoding = response.encoding or "utf-8"
        try:
            return b"".join(parts)[:limit].decode(encoding, errors="replace")
        except LookupError:
            return b"".join(parts)[:limit].decode("utf-8", errors="replace")

    def _deltas(self, response: requests.Response) -> Iterator[str]:
        """Content deltas of a streamed answer; a ``Fehler:`` answer raises instead."""
        began = checked = False
        deltas = iter_deltas(_body_chunks(response))
        try:
            for delta in deltas:
                if not checked and delta.strip():
                    checked = True
                    if _HELIX_ERROR.match(delta):
                        _raise_for_helix_error(delta + _rest(deltas, 2_000))
                began = True
                yield delta
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._to_backend_error(exc, content_began=began) from exc

    # ------------------------------------------------------------------------ error mapping

    def _to_backend_error(
        self,
        failure: requests.RequestException | urllib3.exceptions.HTTPError | requests.Response,
        *,
        content_began: bool = False,
        read_timeout: float | None = None,
    ) -> BackendError:
        """The one translation of a transport failure or an HTTP error answer into our errors."""
        if isinstance(failure, requests.Response):
            return self._status_error(failure)
        url = self._shown_url
        waited = read_timeout or self.read_timeout
        # A non-streaming answer waits for the whole answer (ANSWER_TIMEOUT_S), a stream per pause.
        valve = "READ_TIMEOUT_S" if waited == self.read_timeout else "ANSWER_TIMEOUT_S"
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
                f"The host name of Helix at {url} cannot be resolved: check the HELIX_BASE_URL "
                "valve."
            )
        if _has_cause(failure, urllib3.exceptions.NewConnectionError, ConnectionRefusedError):
            return BackendUnavailable(
                f"Helix at {url} refused the connection: is it running? Check the "
                "HELIX_BASE_URL valve."
            )
        if _has_cause(failure, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
            return BackendUnavailable(
                f"Helix at {url} did not accept a connection within {self.connect_timeout:g} s: "
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

    def _status_error(self, response: requests.Response) -> BackendError:
        status = response.status_code
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        body = self._read_error_body(response)
        summary = self._redact(_summarise_body(body, response.headers.get("Content-Type", "")))
        summary = summary or response.reason or "no details"
        if status in (401, 403):
            message = (
                f"Helix refused the request as unauthorised (HTTP {status}): {summary}. "
                "Check the HELIX_API_KEY valve."
            )
        elif status == 404:
            message = (
                f"Helix at {self._shown_url} has no such endpoint (HTTP 404): {summary}. "
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

    def _read_error_body(self, response: requests.Response) -> str:
        try:
            return self._read_body(response, _MAX_ERROR_BODY)
        except BackendError:
            return ""

    def _redact(self, text: str) -> str:
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text


# ---------------------------------------------------------------------------------- helpers


def _normalise_base_url(base_url: str) -> str:
    url = (base_url or "").strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            "HELIX_BASE_URL must be an http:// or https:// URL such as http://127.0.0.1:8001, "
            f"got {redact_url(url)!r}",
            setting="HELIX_BASE_URL",
        )
    return url


def _check_extra_fields(extra_fields: Iterable[str]) -> tuple[str, ...]:
    names = tuple(name.strip() for name in extra_fields if name and name.strip())
    for name in names:
        if name in NEVER_FORWARDED or name.startswith("_") or name in ("model", "messages"):
            raise ConfigError(
                f"The extra field {name!r} cannot be forwarded to Helix: remove it from the "
                "forwarded extra fields (Open WebUI's own and private keys are never sent).",
                setting="extra_fields",
            )
    return names


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


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """Body bytes as they arrive: one HTTP chunk at a time, or whatever one socket read returns
    for a body without chunked encoding (never waiting to fill a buffer)."""
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


def _rest(deltas: Iterator[str], limit: int) -> str:
    parts: list[str] = []
    size = 0
    for delta in deltas:
        parts.append(delta)
        size += len(delta)
        if size >= limit:
            break
    return "".join(parts)


def _raise_for_helix_error(text: str) -> None:
    """Helix reports its own failures as a 200 answer that starts with ``Fehler:``."""
    if _HELIX_ERROR.match(text):
        raise BackendError(f"Helix reported an error: {_summarise_text(text)}", status_code=200)


def _synthetic_completion(body: Mapping[str, Any], text: str) -> dict[str, Any]:
    _raise_for_helix_error(text)
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


def _is_retryable(exc: requests.RequestException) -> bool:
    """Only failures to connect or to get any answer; never TLS errors or read timeouts."""
    return isinstance(exc, requests.ConnectionError) and not (
        isinstance(exc, requests.exceptions.SSLError) or _is_read_timeout(exc)
    )


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


def _retry_after_seconds(value: str | None) -> float | None:
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
            return _summarise_text(json.dumps(payload, ensure_ascii=False))
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        text = html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text)))
    return _summarise_text(text)


def _summarise_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 1].rstrip() + "…"
