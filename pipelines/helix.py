"""
title: Helix
author: helix-pipeline developers
license: MIT
description: Helix agent backend with conversation memory: every turn reaches Helix with the chat's id and its full, deduplicated history.
version: 0.1.0
"""

from __future__ import annotations

# Built by `helix-pipeline bundle` from helix_pipeline/hosts/pipelines_pipe.py: edit the sources, not this file.

import importlib.abc
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType


class EmbeddedLibrary(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """A finder and loader for one package whose modules are given as source strings.

    ``sources`` maps a path inside the library (``helix_pipeline/stores/__init__.py``) to its text;
    the modules are importable as ``package`` and ``package.<dotted path>``.
    """

    def __init__(self, package: str, sources: Mapping[str, str]) -> None:
        self.package = package
        self._sources: dict[str, str] = {}
        self._packages: set[str] = set()
        self._paths: dict[str, str] = {}
        for path, text in sources.items():
            parts = path.removesuffix(".py").split("/")[1:]
            if parts and parts[-1] == "__init__":
                parts.pop()
                self._packages.add(".".join([package, *parts]))
            name = ".".join([package, *parts])
            self._sources[name] = text
            self._paths[name] = path

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self._sources:
            return None
        return importlib.util.spec_from_loader(
            fullname, self, origin=self._filename(fullname), is_package=self.is_package(fullname)
        )

    def is_package(self, fullname: str) -> bool:
        return fullname in self._packages

    def get_source(self, fullname: str) -> str:
        try:
            return self._sources[fullname]
        except KeyError:
            raise ImportError(f"{fullname} is not embedded here", name=fullname) from None

    def get_code(self, fullname: str) -> CodeType:
        return compile(
            self.get_source(fullname), self._filename(fullname), "exec", dont_inherit=True
        )

    def _filename(self, fullname: str) -> str:
        """What tracebacks show; not ``<...>``, so that they can show the source lines too."""
        return f"{self._paths[fullname]} (embedded as {self.package})"


def load_embedded(package: str, version: str, label: str, sources: Mapping[str, str]) -> ModuleType:
    """The library ``package`` of this bundle, imported from ``sources`` unless already loaded."""
    log = logging.getLogger(package)
    loaded = sys.modules.get(package)
    if loaded is not None:
        log.info(
            "%s runs helix-pipeline %s embedded in it, shared with another file of the same "
            "build already loaded (%s)",
            label,
            version,
            package,
        )
        return loaded
    if not any(getattr(finder, "package", None) == package for finder in sys.meta_path):
        sys.meta_path.insert(0, EmbeddedLibrary(package, sources))
    module = importlib.import_module(package)
    log.info(
        "%s runs helix-pipeline %s embedded in it (%s)%s",
        label,
        version,
        package,
        _installed_note(version),
    )
    return module


def _installed_note(version: str) -> str:
    """A note for the log when an installed ``helix_pipeline`` is present (bundles never use it)."""
    if importlib.util.find_spec("helix_pipeline") is None:
        return ""
    try:
        installed = importlib.metadata.version("helix-pipeline")
    except importlib.metadata.PackageNotFoundError:
        installed = "of unknown version"
    same = " (the same version)" if installed == version else ""
    return f"; the installed helix_pipeline {installed}{same} is not used by this file"


_HELIX_SOURCES = {
    'helix_pipeline/__init__.py': r'''"""helix-pipeline: conversation memory for the Helix agent backend behind Open WebUI."""

from __future__ import annotations

from .conversation import (
    ChatKind,
    Conversation,
    ConversationKey,
    helix_session_id,
    read_conversation,
)
from .errors import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    ConfigError,
    HelixPipelineError,
    InputError,
    StoreError,
    StoreUnavailable,
)
from .messages import Message
from .stores import SessionStore, open_store

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailable",
    "ChatKind",
    "ConfigError",
    "Conversation",
    "ConversationKey",
    "HelixPipelineError",
    "InputError",
    "Message",
    "SessionStore",
    "StoreError",
    "StoreUnavailable",
    "__version__",
    "helix_session_id",
    "open_store",
    "read_conversation",
]
''',
    'helix_pipeline/chat_body.py': r'''"""What the Pipelines server's ``/chat/completions`` accepts, and the repair of a body it refuses.

Read from the server (open-webui/pipelines at 26b8f20, ``schemas.py`` and
``utils/pipelines/main.py``) and checked against it: ``messages`` must be a list of objects, each
with a string ``role`` and a ``content`` that is a string or a list; ``stream`` a boolean. Anything
else is refused with a 422 before ``pipe()`` runs, so the person sees nothing useful: an
assistant message of a tool call (``content: null``) is enough. The server also reads the last
user message's list parts as ``part["type"]`` and ``part["text"]``: a part without them is a 500.

Open WebUI calls the pipe model's own inlet first, so the Helix pipe repairs the body there with
:func:`repair_chat_body`, and ``pipe()`` then answers with a clear message where nothing is left
to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conversation import PRIVATE_KEY
from .errors import InputError
from .messages import content_to_text

__all__ = ["NO_MESSAGES", "REPAIRS_KEY", "nothing_to_send", "repair_chat_body"]

NO_MESSAGES = "the request had no 'messages' list"
"""The repair note that ``pipe()`` turns into its answer when nothing is left to send."""
REPAIRS_KEY = "repairs"
"""Where in the private key (:data:`~helix_pipeline.conversation.PRIVATE_KEY`) the inlet leaves
its repair notes for ``pipe()``."""
_FALSE_WORDS = frozenset({"false", "0", "no", "off", "f", "n", ""})


def repair_chat_body(body: dict[str, Any]) -> list[str]:
    """Make ``body`` acceptable to the Pipelines server, in place; what was repaired, for the log.

    ``messages`` missing or not a list becomes ``[]`` (noted as :data:`NO_MESSAGES`); an entry that
    is not an object or has no string role is dropped; ``content`` that is ``null``, missing, or of
    another type becomes text; ``stream`` that is not a boolean becomes one.
    """
    repairs: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        kept = _repaired_messages(messages, repairs)
        if kept is not None:
            body["messages"] = kept
    else:
        body["messages"] = []
        repairs.append(NO_MESSAGES)
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        body["stream"] = _as_bool(stream)
        repairs.append("'stream' was not true or false")
    return repairs


def _repaired_messages(messages: list[Any], repairs: list[str]) -> list[Any] | None:
    """The messages the server accepts; ``None`` when every one is acceptable as it is (the
    common case: then nothing is copied)."""
    for index, message in enumerate(messages):
        repaired = _repair_message(message, repairs)
        if repaired is None or repaired is not message:  # dropped (``None`` too) or repaired
            kept = messages[:index]
            if repaired is not None:
                kept.append(repaired)
            for later in messages[index + 1 :]:
                repaired = _repair_message(later, repairs)
                if repaired is not None:
                    kept.append(repaired)
            return kept
    return None


def _repair_message(message: object, repairs: list[str]) -> object | None:
    """``message`` itself when acceptable, a repaired copy, or ``None`` to drop it."""
    if (  # what Open WebUI sends, checked first: the general path below keeps it as it is too
        message.__class__ is dict
        and message.get("role").__class__ is str
        and message.get("content").__class__ is str
    ):
        return message
    if not isinstance(message, Mapping):
        repairs.append("a message that is not an object was dropped")
        return None
    if not isinstance(message.get("role"), str):
        repairs.append("a message without a role was dropped")
        return None
    content = message.get("content")
    if isinstance(content, str) or (isinstance(content, list) and _parts_readable(content)):
        return message
    if content is not None:
        repairs.append(f"a message's content ({type(content).__name__}) was turned into text")
    return {**message, "content": content_to_text(content)}


def _parts_readable(parts: list[Any]) -> bool:
    """Whether the server can read every part: an object with a string ``type``, and ``text``
    when it is a text part."""
    return all(
        isinstance(part, Mapping)
        and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str))
        for part in parts
    )


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    if value is None:
        return True  # the server's own default
    return bool(value) if isinstance(value, (int, float)) else True


def nothing_to_send(body: Mapping[str, Any]) -> InputError:
    """The error ``pipe()`` answers with when no user message is left: why, and what to do."""
    private = body.get(PRIVATE_KEY)
    repairs = private.get(REPAIRS_KEY) if isinstance(private, Mapping) else None
    why = NO_MESSAGES if isinstance(repairs, list) and NO_MESSAGES in repairs else None
    return InputError(
        f"There is nothing to send to Helix: {why or 'the request holds no user message'}. "
        "Type a message and send it again."
    )
''',
    'helix_pipeline/client.py': r'''"""The HTTP client for Helix's OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``).

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
''',
    'helix_pipeline/conversation.py': r'''"""Which conversation a request belongs to, read from what Open WebUI really sends.

Open WebUI (0.5 and later) puts the chat id and the message ids in ``body["metadata"]`` of the
inlet; 0.3/0.4 and every outlet put ``chat_id`` and ``id`` at the top level; ``pipe()`` never sees
``metadata``, so the Helix pipe's inlet copies the context into :data:`PRIVATE_KEY`. Every value is
treated as hostile: non-strings, huge strings and control characters never crash anything, and an
id is only ever a store key or a header value, never part of a file path.

The user message a chat turn answers is ``metadata.user_message`` / ``user_message_id`` from 0.9
on, and ``metadata.parent_message`` / ``parent_message_id`` in 0.6 (the parent of the reply being
made). Either set marks a turn of Open WebUI's own chat, which always sends the whole chat:
:meth:`Conversation.sends_whole_chat` is the one rule that decides it.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from .messages import Message, content_to_text

__all__ = [
    "PRIVATE_KEY",
    "ChatKind",
    "Conversation",
    "ConversationKey",
    "header_safe",
    "helix_session_id",
    "read_conversation",
    "stable_conversation_id",
]

PRIVATE_KEY = "helix_conversation"
"""The top-level body key the Helix pipe's inlet fills so that ``pipe()`` learns the conversation."""

MAX_ID_CHARS = 200
ANONYMOUS_USER = "anonymous"
_TASK_PROMPT_PREFIX = "### Task:"
_HELIX_ID_MAX = 64 - len("conv-")
_HELIX_SAFE = frozenset(string.ascii_letters + string.digits + "-")
_HEADER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.:~@+=")


class ChatKind(str, Enum):
    """What kind of request this is, which decides whether and where history is kept."""

    SAVED = "saved"
    TEMPORARY = "temporary"
    CHANNEL = "channel"
    TASK = "task"
    API = "api"


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """A store key: one user's one conversation. Another user's key never names the same rows."""

    user_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """Everything helix-pipeline knows about the conversation of one request."""

    kind: ChatKind
    user_id: str
    conversation_id: str
    chat_id: str | None = None
    task: str | None = None
    message_id: str | None = None
    user_message_id: str | None = None
    chat_turn: bool = False
    """The body carries Open WebUI's chat-turn markers (``user_message``/``user_message_id`` from
    0.9, ``parent_message``/``parent_message_id`` in 0.6): it holds the whole chat."""

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.user_id, self.conversation_id)

    @property
    def is_task(self) -> bool:
        return self.kind is ChatKind.TASK

    def sends_whole_chat(self, messages: Sequence[Message]) -> bool:
        """Whether ``messages`` are the whole chat, not only its newest part: the one rule.

        Open WebUI's own chat says so with its turn markers (:attr:`chat_turn`, or the id of the
        user message) on every release, and its outlets with an id on every message. Without either, the messages may be a plain
        API client's newest ones, and the stored history goes in front of them unless they resend
        its start (:func:`~helix_pipeline.history.merge_history` checks that).
        """
        if self.chat_turn or self.user_message_id:
            return True
        return (
            self.kind is not ChatKind.API and bool(messages) and all(m.message_id for m in messages)
        )

    def to_private(self) -> dict[str, Any]:
        """The JSON-safe form the pipe's inlet stores under :data:`PRIVATE_KEY`."""
        data = {name: getattr(self, name) for name in _FIELDS}  # asdict() deep-copies: slow
        data["kind"] = self.kind.value
        return data


_FIELDS = tuple(field.name for field in fields(Conversation))


def read_conversation(body: object, user: object = None) -> Conversation:
    """Read the conversation of an inlet, outlet or pipe body; never raises.

    Sources, in order: our own :data:`PRIVATE_KEY` (a pipe body), ``metadata`` (an inlet from 0.5
    on), then the top level (an outlet, or Open WebUI 0.3/0.4).
    """
    body_map: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    private = _mapping(body_map.get(PRIVATE_KEY))
    metadata = _mapping(body_map.get("metadata"))
    sources = (private, metadata, body_map)

    def first(*names: str) -> str | None:
        for source in sources:
            for name in names:
                value = clean_id(source.get(name))
                if value is not None:
                    return value
        return None

    user_id = clean_id(_mapping(user).get("id")) or first("user_id") or ANONYMOUS_USER
    chat_id = first("chat_id")
    task = first("task")
    user_message = _user_message(metadata)
    # An outlet's top-level ``id`` is the assistant message; an inlet's ``message_id`` likewise.
    message_id = first("message_id") or clean_id(body_map.get("id"))
    messages = body_map.get("messages")
    # Tasks carry no message id; a chat turn whose own text starts with ``### Task:`` is no task.
    if task is None and message_id is None and _looks_like_task(messages):
        task = "unknown"
    kind = _classify(chat_id, task)
    conversation_id = chat_id or stable_conversation_id(user_id, _first_user_text(messages))
    return Conversation(
        kind=kind,
        user_id=user_id,
        conversation_id=conversation_id,
        chat_id=chat_id,
        task=task,
        message_id=message_id,
        user_message_id=first("user_message_id") or clean_id(user_message.get("id")),
        chat_turn=private.get("chat_turn") is True or _has_turn_markers(metadata),
    )


def clean_id(value: object) -> str | None:
    """A usable id from any value: ``None`` for empty or non-scalar values.

    Strings are stripped of surrounding white space; ids longer than 200 characters or holding
    control characters are replaced by a digest, so the same input always gives the same id.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if abs(value) >= 10**MAX_ID_CHARS:  # no id is that long, and str() refuses > 4300 digits
            return None
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"sha256-{digest[:40]}"
    return value


def stable_conversation_id(user_id: str, first_user_message: str) -> str:
    """A conversation id for callers that send no chat id: same user and first message, same id."""
    seed = f"{user_id}\x00{first_user_message}".encode("utf-8", "surrogatepass")
    return f"api-{hashlib.sha256(seed).hexdigest()[:32]}"


def helix_session_id(raw: str) -> str:
    """The session id Helix derives from a conversation header value (``conv-...``).

    Helix keeps ASCII letters, digits and ``-``, turns anything else into ``-``, collapses runs,
    strips the ends, falls back to ``session``, cuts to 59 characters and prefixes ``conv-``.
    """
    safe = "".join(c if c in _HELIX_SAFE else "-" for c in raw)
    while "--" in safe:
        safe = safe.replace("--", "-")
    safe = safe.strip("-") or "session"
    return f"conv-{safe[:_HELIX_ID_MAX]}"


def header_safe(value: str) -> str:
    """``value`` if it can travel in an HTTP header as it is, else a deterministic ASCII form.

    ``requests`` refuses header values that are not latin-1, and control characters would break
    the request; such ids are percent-encoded as UTF-8 (stable, reversible, and distinct per id).
    """
    if all(c in _HEADER_SAFE for c in value):
        return value
    return "".join(
        c if c in _HEADER_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in value
    )


def _classify(chat_id: str | None, task: str | None) -> ChatKind:
    if task is not None:
        return ChatKind.TASK
    if chat_id is None:
        return ChatKind.API
    if chat_id == "local" or chat_id.startswith(("local:", "temporary:")):
        return ChatKind.TEMPORARY
    if chat_id.startswith("channel:"):
        return ChatKind.CHANNEL
    return ChatKind.SAVED


def _user_message(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """The user message this turn answers: ``user_message`` (0.9 on), else 0.6's
    ``parent_message`` when it is the user's (the parent of the reply being made)."""
    user_message = _mapping(metadata.get("user_message"))
    if user_message:
        return user_message
    parent = _mapping(metadata.get("parent_message"))
    return parent if parent.get("role") == "user" else {}


def _has_turn_markers(metadata: Mapping[str, Any]) -> bool:
    """Whether an inlet's metadata names the user message of an Open WebUI chat turn."""
    return bool(
        _mapping(metadata.get("user_message"))
        or _mapping(metadata.get("parent_message"))
        or clean_id(metadata.get("user_message_id"))
        or clean_id(metadata.get("parent_message_id"))
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _user_texts(messages: object) -> list[str]:
    if not isinstance(messages, list):
        return []
    return [
        content_to_text(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "user"
    ]


def _first_user_text(messages: object) -> str:
    texts = _user_texts(messages)
    return texts[0] if texts else ""


def _looks_like_task(messages: object) -> bool:
    """A background task's one user message is a prompt that starts with ``### Task:``."""
    texts = _user_texts(messages)
    return len(texts) == 1 and texts[0].lstrip().startswith(_TASK_PROMPT_PREFIX)
''',
    'helix_pipeline/decorations.py': r'''"""Helix's progress decorations, turned from answer text into status events.

While Claude Code works, Helix streams decorations in the answer's text (uke16/Helix b979a99):
the first chunk ``[Starte Claude Code...]``, tool markers such as ``\\n[Read] ``, a ``.``
heartbeat every 10 s, then the separator ``\\n\\n---\\n\\n`` before the answer; when its check of
the answer fails it adds the hint ``⚠️ **Hinweis:** Die Antwort konnte nicht vollständig validiert
werden.`` (before the answer in a stream, after it in a plain answer). None of that is the answer.

:class:`DecorationFilter` reads a stream's content deltas, wherever their chunk boundaries fall,
and gives back two kinds of items: answer text (``str``) and :class:`Status` (what Helix is doing,
for the host to show as a status line). :func:`strip_decorations` does the same to a whole text.
An answer that does not begin with Helix's first chunk (another server, an old build) passes
through unchanged, and Helix's ``<!-- STEP: ... -->`` markers are answer text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SEPARATOR",
    "START",
    "VALIDATION_HINT",
    "DecorationFilter",
    "Item",
    "Status",
    "strip_decorations",
]

START = "[Starte Claude Code...]"
SEPARATOR = "\n\n---\n\n"
VALIDATION_HINT = "⚠️ **Hinweis:** Die Antwort konnte nicht vollständig validiert werden."
_TOOL = re.compile(r"\n\[([^\]\n]{1,80})\] ")
_TOOL_BEGUN = re.compile(r"\n(?:\[[^\]\n]{0,80}\]?)?\Z")
_TRAILING_HINT = re.compile(r"\s*-{3}\s*" + re.escape(VALIDATION_HINT) + r"\s*\Z")


@dataclass(frozen=True, slots=True)
class Status:
    """What Helix is doing, for a status line above the answer; ``done`` on the last one."""

    description: str
    done: bool = False

    def event(self) -> dict[str, Any]:
        """Open WebUI's status event (``__event_emitter__`` takes it as is; a Pipelines pipe
        yields it as ``{"event": ...}``)."""
        return {"type": "status", "data": {"description": self.description, "done": self.done}}


Item = str | Status
"""What the filter gives back: answer text, or a status."""


class DecorationFilter:
    """Splits Helix's streamed content into answer text and :class:`Status` items.

    ``feed`` each delta, then ``finish`` once the stream ended. Text that may still turn out to
    be a decoration (``\\n\\n--``, ``[Starte``) waits for the next delta.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._buffer = ""
        self._state = "first"  # first, prelude, hint, after-hint, answer
        self.unvalidated = False
        """Helix said it could not fully validate the answer."""

    def feed(self, delta: str) -> list[Item]:
        self._buffer += delta
        return self._drain(final=False)

    def finish(self) -> list[Item]:
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[Item]:
        items: list[Item] = []
        while self._buffer and self._state != "answer":
            step = getattr(self, "_" + self._state.replace("-", "_"))
            if not step(items, final):
                break
        if self._state == "answer" and self._buffer:
            items.append(self._buffer)
            self._buffer = ""
        elif final:
            self._buffer = ""  # only white space or a decoration cut short is left
        return items

    def _take(self, count: int) -> None:
        self._buffer = self._buffer[count:]

    # Each state reads the buffer's head: True when it consumed something or changed state.

    def _first(self, items: list[Item], final: bool) -> bool:
        head = self._buffer.lstrip()
        if head.startswith(START):
            self._take(len(self._buffer) - len(head) + len(START))
            self._state = "prelude"
            items.append(Status("Helix is starting Claude Code…"))
            return True
        if not final and START.startswith(head):
            return False
        self._state = "answer"
        return True

    def _prelude(self, items: list[Item], final: bool) -> bool:
        buffer = self._buffer
        if buffer.startswith(SEPARATOR):
            self._take(len(SEPARATOR))
            self._state = "hint"
            items.append(Status("Helix is writing the answer…"))
        elif buffer.startswith("."):
            self._take(len(buffer) - len(buffer.lstrip(".")))
            seconds = int(self._clock() - self._started)
            items.append(Status(f"Helix is still working ({seconds} s)…"))
        elif match := _TOOL.match(buffer):
            self._take(match.end())
            items.append(Status(f"Claude Code is using {match.group(1)}…"))
        elif buffer[0].isspace():
            if not final and (SEPARATOR.startswith(buffer) or _TOOL_BEGUN.match(buffer)):
                return False
            self._take(1)
        else:  # anything else ends the decorations (Helix's error texts come this way)
            self._state = "answer"
        return True

    def _hint(self, items: list[Item], final: bool) -> bool:
        if self._buffer.startswith(VALIDATION_HINT):
            self._take(len(VALIDATION_HINT))
            self._state = "after-hint"
            self.unvalidated = True
            items.append(Status("Helix could not fully validate this answer"))
            return True
        if not final and VALIDATION_HINT.startswith(self._buffer):
            return False
        self._state = "answer"
        return True

    def _after_hint(self, items: list[Item], final: bool) -> bool:
        buffer = self._buffer
        if buffer.startswith(SEPARATOR):
            self._take(len(SEPARATOR))
            self._state = "answer"
        elif not final and SEPARATOR.startswith(buffer):
            return False
        elif buffer[0].isspace():
            self._take(1)
        else:
            self._state = "answer"
        return True


def strip_decorations(text: str) -> tuple[str, bool]:
    """A whole answer without Helix's decorations, and whether it carried the validation hint
    (which a plain answer carries at its end)."""
    if VALIDATION_HINT not in text and not text.lstrip().startswith(START):
        return text, False  # the common case, an answer without decorations: nothing to scan
    decorations = DecorationFilter()
    items = [*decorations.feed(text), *decorations.finish()]
    answer = "".join(item for item in items if isinstance(item, str))
    stripped = _TRAILING_HINT.sub("", answer)
    return stripped, decorations.unvalidated or stripped != answer
''',
    'helix_pipeline/errors.py': r'''"""The one exception tree of helix-pipeline.

Every error this package raises on purpose is a ``HelixPipelineError``; the pipeline files catch
only that at their boundary and turn it into one short message for the person in the chat.

    HelixPipelineError
    ├── ConfigError(HelixPipelineError, ValueError)   a valve, URL or setting is wrong
    ├── InputError(HelixPipelineError, ValueError)    a request body cannot be used as it is
    ├── StoreError                                    the session store failed
    │   └── StoreUnavailable                          the store cannot be reached at all
    └── BackendError                                  Helix failed, refused or answered garbage
        ├── BackendUnavailable                        no connection, or a timeout before any answer
        └── BackendProtocolError                      an answer we cannot read (bad JSON, cut stream)

Context travels as keyword-only attributes (``status_code=``, ``conversation_id=``, ...), never
inside the message text, and never a secret.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendUnavailable",
    "ConfigError",
    "HelixPipelineError",
    "InputError",
    "StoreError",
    "StoreUnavailable",
]


class HelixPipelineError(Exception):
    """Base of every error helix-pipeline raises on purpose."""

    def __init__(self, message: str, *, conversation_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.conversation_id = conversation_id

    def __str__(self) -> str:
        return self.message


class ConfigError(HelixPipelineError, ValueError):
    """A valve, store URL or environment variable has a value that cannot work."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InputError(HelixPipelineError, ValueError):
    """A request body or message list that cannot be used as it is."""


class StoreError(HelixPipelineError):
    """The session store could not read or write (the message names the store, never a password)."""

    def __init__(
        self,
        message: str,
        *,
        store: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        super().__init__(message, conversation_id=conversation_id)
        self.store = store


class StoreUnavailable(StoreError):
    """The store's engine cannot be reached or opened at all."""


class BackendError(HelixPipelineError):
    """Helix failed, refused the request, or answered something that is not a completion."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        conversation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, conversation_id=conversation_id)
        self.status_code = status_code
        self.retry_after = retry_after


class BackendUnavailable(BackendError):
    """Helix could not be reached, or did not answer in time, before any byte of an answer."""


class BackendProtocolError(BackendError):
    """Helix answered, but with something we cannot read (broken JSON, a stream cut short)."""
''',
    'helix_pipeline/functions.py': r'''"""The Helix pipe and the session filter as Open WebUI Functions, inside Open WebUI itself.

``hosts/functions_pipe.py`` and ``hosts/functions_filter.py`` are thin shells around
:class:`FunctionPipe` and :class:`FunctionFilter`. They run the same history service, Helix client
and valves as the Pipelines files (:class:`~helix_pipeline.pipe.HelixPipe`,
:class:`~helix_pipeline.session_filter.SessionFilter`), with what Functions add: the conversation
comes straight from ``__metadata__``; progress, trims and failures are status lines through
``__event_emitter__`` instead of text in the answer; each person has their own memory switch
(``UserValves``). Open WebUI calls a Function on its event loop, so every blocking step (the store,
Helix) runs in a thread: a turn never holds up another person's requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from .conversation import Conversation, read_conversation
from .errors import HelixPipelineError
from .functions_worker import Put, items_from_thread
from .notices import UNEXPECTED, for_open_webui, is_notice, notice_for, trim_notice, visible
from .pipe import HelixPipe
from .service import Turn
from .session_filter import SessionFilter
from .valves import HelixValves, HistoryValves

__all__ = [
    "WORKING",
    "FunctionFilter",
    "FunctionFilterValves",
    "FunctionPipe",
    "MemorySwitch",
    "open_webui_data_dir",
    "status_lines",
]

log = logging.getLogger(__name__)

Emitter = Callable[[dict[str, Any]], Awaitable[Any]]
V = TypeVar("V", bound=BaseModel)

WORKING = "Helix is working..."


class MemorySwitch(BaseModel):
    """Each person's own setting (Open WebUI: Settings > Functions or the chat's controls)."""

    HISTORY_ENABLED: bool = Field(
        default=True,
        description="Helix remembers your chats: their history is kept and sent with every turn. "
        "Off: nothing of your chats is stored, and Helix gets only what Open WebUI sends.",
    )


class FunctionFilterValves(HistoryValves):
    """The session filter's valves as a Function (Open WebUI chooses its models, not a valve)."""

    priority: int = Field(default=0, description="Order among filters: lower runs first.")


def open_webui_data_dir() -> Path:
    """Open WebUI's data folder: the default session store goes in ``helix_data/`` there."""
    env = sys.modules.get("open_webui.env")  # already imported when running inside Open WebUI
    data_dir = getattr(env, "DATA_DIR", None) or os.environ.get("DATA_DIR") or "data"
    return Path(data_dir)


class _SteadyValves(Generic[V]):
    """The current valves, as the same object while their values stay the same.

    Open WebUI builds a new ``Valves`` object for every call; what is built from the valves
    (store, client) is rebuilt only when they really change.
    """

    def __init__(self, current: Callable[[], V]) -> None:
        self._current = current
        self._last: V | None = None

    def __call__(self) -> V:
        valves = self._current()
        last = self._last
        if last is not None and (valves is last or valves == last):
            return last
        self._last = valves
        return valves


def status_lines(turn: Turn) -> list[str]:
    """What a turn's status says before Helix answers: earlier messages attached, trims."""
    lines: list[str] = []
    if turn.store is not None:
        earlier = sum(1 for m in turn.outgoing if m.role != "system") - 1
        if earlier > 0:
            lines.append(f"Helix: {earlier} earlier message{'s' if earlier != 1 else ''} attached")
    trim = trim_notice(turn.trim)  # the one wording, the Pipelines pipe's too
    if trim:
        lines.append(trim)
    return lines


def _memory_on(user: object) -> bool:
    """The person's own switch (``__user__["valves"]``); on when absent."""
    valves = user.get("valves") if isinstance(user, Mapping) else None
    return getattr(valves, "HISTORY_ENABLED", True) is not False


class _Status:
    """Status lines to the chat; a no-op without an emitter (API callers, background tasks)."""

    def __init__(self, emitter: object) -> None:
        self._emitter: Emitter | None = emitter if callable(emitter) else None
        self.shown = False

    @property
    def available(self) -> bool:
        return self._emitter is not None

    async def __call__(self, description: str, *, done: bool = False) -> None:
        await self.event({"type": "status", "data": {"description": description, "done": done}})

    async def event(self, event: Mapping[str, Any]) -> None:
        if self._emitter is None:
            return
        try:
            await self._emitter(dict(event))
            self.shown = True
        except Exception:  # the boundary: a lost status line must never cost the answer
            log.exception("could not send a status event to Open WebUI")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What the worker thread reports once the history is merged (for the status lines)."""

    turn: Turn


class FunctionPipe:
    """The runtime behind ``hosts/functions_pipe.py``: ``valves`` returns the Function's valves."""

    def __init__(self, valves: Callable[[], HelixValves], *, data_dir: Path | None = None) -> None:
        self._helix = HelixPipe(_SteadyValves(valves), pipelines_dir=data_dir)
        self._started = threading.Event()

    def models(self) -> list[dict[str, str]]:
        """One model per Helix model; never waits on Helix (see :meth:`HelixPipe.models`)."""
        self._start()
        return self._helix.models()

    def _start(self) -> None:
        """Once per instance, in the background: ask Helix for its models, purge old chats."""
        if self._started.is_set():
            return
        self._started.set()
        threading.Thread(target=self._startup, name="helix-startup", daemon=True).start()

    def _startup(self) -> None:
        try:
            self._helix.startup()
        except Exception:  # a background thread: log, never raise into nothing
            log.exception("helix-pipeline could not start up")

    async def pipe(
        self,
        body: Mapping[str, Any],
        *,
        user: object = None,
        metadata: object = None,
        chat_id: object = None,
        task: object = None,
        emitter: object = None,
    ) -> str | AsyncIterator[str]:
        """Answer one turn: an async iterator of text when streaming, else the text. Never raises."""
        self._start()
        meta = dict(metadata) if isinstance(metadata, Mapping) else {}
        if chat_id is not None:
            meta.setdefault("chat_id", chat_id)
        if task is not None:
            meta.setdefault("task", task)
        messages = body.get("messages")
        conversation = read_conversation({"metadata": meta, "messages": messages}, user)
        model = str(body.get("model") or "")
        model_id = model.split(".", 1)[1] if "." in model else model
        memory = _memory_on(user)

        def produce(put: Put) -> None:
            self._produce(
                put,
                conversation=conversation,
                messages=messages,
                body=body,
                model_id=model_id,
                memory=memory,
            )

        chunks = self._answer(produce, _Status(emitter))
        if body.get("stream", True) is not False:
            return chunks
        return "".join([chunk async for chunk in chunks])

    def _produce(
        self,
        put: Put,
        *,
        conversation: Conversation,
        messages: Any,
        body: Mapping[str, Any],
        model_id: str,
        memory: bool,
    ) -> None:
        """In the worker thread: prepare the turn, then hand over Helix's answer chunk by chunk."""
        try:
            prepared = self._helix.prepare(
                conversation, messages, body, model_id=model_id or None, memory=memory
            )
            if not put(_Prepared(prepared.turn)):
                return  # the person left before Helix was asked: nothing to send or record
            answer = self._helix.answer(prepared)
        except HelixPipelineError as exc:
            log.warning("turn failed before reaching Helix: %s", exc)
            put(notice_for(exc))
            return
        except Exception:  # the boundary: the person gets one short message, the log the rest
            log.exception("unexpected error in the Helix Function")
            put(UNEXPECTED)
            return
        if isinstance(answer, str):
            put(answer)
            return
        _drain(answer, put)

    async def _answer(self, produce: Callable[[Put], None], status: _Status) -> AsyncIterator[str]:
        """Turn the worker's items into text for the answer and status lines for the chat."""
        closed = False  # a status line that ends the turn was shown (a failure, or the pipe's own)
        context: list[str] = []
        # aclosing: when Open WebUI closes this generator, the worker hears it at once, not when
        # the event loop gets round to finalising a forgotten inner generator.
        async with aclosing(items_from_thread(produce, name="helix-turn")) as items:
            async for item in items:
                if isinstance(item, _Prepared):
                    context = status_lines(item.turn)
                    for line in context:
                        await status(line)
                    await status(WORKING)
                elif isinstance(item, Mapping) and isinstance(item.get("event"), Mapping):
                    event = item["event"]
                    closed = closed or _closes_turn(event)
                    await status.event(event)
                elif isinstance(item, str) and item:
                    text = for_open_webui(item)
                    if status.available and is_notice(text):
                        closed = True
                        await status(visible(text).strip(), done=True)
                    else:
                        yield text
        if not closed and status.shown:
            await status(context[0] if context else "Helix answered", done=True)


def _closes_turn(event: Mapping[str, Any]) -> bool:
    """Whether an event from the answer is a status line with ``done`` set."""
    data = event.get("data")
    return event.get("type") == "status" and isinstance(data, Mapping) and data.get("done") is True


def _drain(chunks: Iterator[Any], put: Put) -> None:
    """Hand over every chunk; stop as soon as nobody listens (closing records what arrived)."""
    try:
        for chunk in chunks:
            if not put(chunk):
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class FunctionFilter:
    """The runtime behind ``hosts/functions_filter.py``: the session filter, off the event loop."""

    def __init__(
        self, valves: Callable[[], FunctionFilterValves], *, data_dir: Path | None = None
    ) -> None:
        self._filter = SessionFilter(_SteadyValves(valves), pipelines_dir=data_dir)

    async def inlet(
        self, body: Any, *, user: object = None, metadata: object = None, emitter: object = None
    ) -> Any:
        """Attach the stored history (and say so in a status line). Never raises."""
        if not isinstance(body, dict) or not _memory_on(user):
            return body
        view = body if "metadata" in body or not isinstance(metadata, Mapping) else {}
        if view is not body:
            view.update(body)
            view["metadata"] = metadata
        try:
            turn = await asyncio.to_thread(self._filter.attach, view, user)
        except Exception:  # the boundary: an inlet that raises stops the chat in Open WebUI
            log.exception("could not attach history in the session filter's inlet")
            return body
        if view is not body:
            body["messages"] = view["messages"]
        if turn is not None:
            status = _Status(emitter)
            for line in status_lines(turn):
                await status(line, done=True)
        return body

    async def outlet(self, body: Any, *, user: object = None) -> Any:
        """Record the finished turn. Never raises; the body is returned unchanged."""
        if not isinstance(body, dict) or not _memory_on(user):
            return body
        return await asyncio.to_thread(self._filter.outlet, body, user)
''',
    'helix_pipeline/functions_worker.py': r'''"""Blocking work for Open WebUI's event loop: one thread per chat turn, items handed over as they come.

Open WebUI runs a Function's ``pipe()`` on its event loop; Helix may take minutes to answer, and
``requests`` and the stores block. :func:`items_from_thread` runs the blocking producer in a thread
of its own (not the loop's default executor, which twenty long turns would fill, starving Open
WebUI's own use of it) and yields what it produces without ever blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

__all__ = ["Put", "items_from_thread"]

log = logging.getLogger(__name__)

Put = Callable[[Any], bool]
"""Hands one item to the event loop; returns False once nobody is listening any more."""

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def items_from_thread(
    produce: Callable[[Put], None], *, name: str
) -> AsyncGenerator[Any, None]:
    """Run ``produce(put)`` in a new daemon thread and yield every item it puts, in order.

    An exception in ``produce`` is raised here. When the consumer stops early (the person closed
    the chat, Open WebUI cancelled the task), ``put`` starts returning False, so the producer can
    stop and clean up in its own thread.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    listening = threading.Event()
    listening.set()

    def put(item: Any) -> bool:
        if not listening.is_set():
            return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: Open WebUI is shutting down
            listening.clear()
            return False
        return True

    def work() -> None:
        try:
            produce(put)
        except BaseException as exc:  # handed to the consumer, which raises it on the loop
            put(_Failed(exc))
        finally:
            put(_END)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        listening.clear()
''',
    'helix_pipeline/helix_answer.py': r'''"""Reading Helix's answer for the person: decorations become statuses, failures become notices.

:class:`AnswerReader` is what a host (the Pipelines pipe, an Open WebUI Function) puts between
Helix's content deltas and the chat. It runs the deltas through
:class:`~helix_pipeline.decorations.DecorationFilter` and holds back any text that may be the
start of one of Helix's failure texts (:mod:`helix_pipeline.helix_failures`), so the person sees
the answer as it arrives and statuses while Helix works, but never Helix's failure text itself.
When the stream ends, :attr:`AnswerReader.failure` says whether the answer was a failure and
:attr:`AnswerReader.answer` holds what was shown: the answer to record, without decorations.
:func:`read_whole` does the same for a plain (non-streaming) answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .decorations import DecorationFilter, Item, Status, strip_decorations
from .helix_failures import HelixFailure, hold_from, recognise

__all__ = ["AnswerReader", "Reading", "read_whole"]


class AnswerReader:
    """Helix's streamed content deltas in; text to show and :class:`Status` items out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._decorations = DecorationFilter(clock)
        self._shown: list[str] = []
        self._shown_chars = 0
        self._tail = ""
        """The last two characters shown: a blank line may straddle what is shown and held."""
        self._held = ""
        self._statuses = 0
        self.failure: HelixFailure | None = None
        """Set by :meth:`finish` when the answer was one of Helix's failure texts."""

    def feed(self, delta: str) -> list[Item]:
        """The items to show now for ``delta`` (possibly none: text may be held back)."""
        return self._pass(self._decorations.feed(delta), final=False)

    def finish(self) -> list[Item]:
        """The stream ended (completely or not): the last items, and :attr:`failure` decided."""
        return self._pass(self._decorations.finish(), final=True)

    @property
    def answer(self) -> str:
        """The answer text shown so far: no decorations, no failure text."""
        return "".join(self._shown)

    @property
    def unvalidated(self) -> bool:
        return self._decorations.unvalidated

    def closing_status(self, outcome: str) -> Status | None:
        """The last status (``done``), when statuses were shown; ``outcome`` describes the end."""
        return Status(outcome, done=True) if self._statuses else None

    def _pass(self, items: Iterable[Item], *, final: bool) -> list[Item]:
        shown: list[Item] = []
        for item in items:
            if isinstance(item, Status):
                self._statuses += 1
                shown.append(item)
            else:
                self._held += item
        if final:
            text = self.answer + self._held  # once per answer: the whole text is judged
            self.failure = recognise(text)
            end = len(text) if self.failure is None else len(text[: self.failure.start].rstrip())
            release = max(end - self._shown_chars, 0)
        else:  # only the held text and the two characters before it are looked at
            window = self._tail + self._held
            release = hold_from(window, len(self._tail)) - len(self._tail)
        if release > 0:
            text, self._held = self._held[:release], self._held[release:]
            self._shown.append(text)
            self._shown_chars += len(text)
            self._tail = (self._tail + text)[-2:]
            shown.append(text)
        return shown


@dataclass(frozen=True, slots=True)
class Reading:
    """A whole answer read: the answer without decorations, and the failure it reports."""

    answer: str
    failure: HelixFailure | None
    unvalidated: bool


def read_whole(text: str) -> Reading:
    """:class:`AnswerReader`'s verdict on a plain answer that came in one piece."""
    answer, unvalidated = strip_decorations(text)
    failure = recognise(answer)
    if failure is not None:
        answer = answer[: failure.start].rstrip()
    return Reading(answer, failure, unvalidated)
''',
    'helix_pipeline/helix_failures.py': r'''"""Helix's own failure texts, as data, and the one place that recognises them in an answer.

Helix (uke16/Helix at b979a99, ``src/helix/api/routes/openai.py``) reports most of its failures
as ordinary answer text with HTTP 200: ``Claude Code ist nicht verfuegbar.``, ``\\n\\n**Fehler:**
<exception>`` at the end of a stream, ``Fehler bei der Verarbeitung:`` and its siblings in a plain
answer, ``Verarbeitung abgeschlossen.`` when Claude Code left no answer. :data:`FORMS` lists each
one with where it stands in the answer, what it means and what to do about it.

Every form is anchored on Helix's exact wording *and* its place, so that an answer which merely
mentions "Fehler" is an answer: a form stands at the start of the answer (``start``), is the whole
answer (``whole``), or is the answer's last paragraph (``paragraph``: after a blank line, or the
whole answer). A text that holds one of Helix's ``<!-- STEP: ... -->`` markers after the form's
opening, or runs longer than :data:`MAX_FORM_CHARS`, is Helix's consultant speaking, never a
failure.

:func:`recognise` judges a whole answer; :func:`hold_from` tells a stream reader how much of an
answer still growing may be shown now without ever showing the start of a failure text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["FORMS", "MAX_FORM_CHARS", "FailureForm", "HelixFailure", "hold_from", "recognise"]

Place = Literal["start", "whole", "paragraph"]

STEP_MARKER = "<!-- STEP:"
MAX_FORM_CHARS = 2_000
"""The longest text a failure form may have: Helix's own are short (its stderr is cut to 500
characters, an exception's text is one line). Longer text is an answer, so a stream never holds
back more than this."""
_MAX_DETAIL = 300
_CODE_FENCE = re.compile(r"^\s*```\w*\s*|\s*```\s*$")
_STEP = re.compile(r"<!--\s*STEP:.*?-->", re.DOTALL)


@dataclass(frozen=True, slots=True)
class FailureForm:
    """One way Helix words a failure, and what the person should be told about it."""

    name: str
    opening: str
    """Helix's exact text that starts the form (the whole text for ``whole`` forms)."""
    place: Place
    happened: str
    """What happened, as a sentence fragment that the form's detail may follow after a colon."""
    advice: str
    """What to do, one sentence."""
    quotes: bool = True
    """Whether Helix's text after the opening (an exception, stderr) is worth quoting."""


_LOOK_AT_LOG = "Look at Helix's log for the cause, then ask again."
FORMS: tuple[FailureForm, ...] = (
    FailureForm(
        "unavailable",
        "Claude Code ist nicht verfuegbar.",
        "start",
        "Helix could not start Claude Code (it says Claude Code is not available)",
        "Check that the Claude Code CLI works on the Helix server, then ask again.",
        quotes=False,
    ),
    FailureForm(
        "error-mid-stream",
        "**Fehler:** ",
        "paragraph",
        "Helix failed while it worked on the answer",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "timeout",
        "**Timeout** - Verarbeitung hat zu lange gedauert.",
        "paragraph",
        "Helix stopped Claude Code because it took longer than Helix allows",
        "Ask again, perhaps for a smaller step.",
        quotes=False,
    ),
    FailureForm(
        "timeout",
        "Timeout - die Verarbeitung hat zu lange gedauert.",
        "start",
        "Helix stopped Claude Code because it took longer than Helix allows",
        "Ask again, perhaps for a smaller step.",
        quotes=False,
    ),
    FailureForm(
        "claude-crash",
        "Fehler bei der Verarbeitung:",
        "start",
        "Claude Code failed on the Helix server",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "unexpected-error",
        "Unerwarteter Fehler: ",
        "start",
        "Helix failed while it worked on the answer",
        _LOOK_AT_LOG,
    ),
    FailureForm("error", "Fehler: ", "start", "Helix reported an error", _LOOK_AT_LOG),
    FailureForm(
        "no-answer",
        "Verarbeitung abgeschlossen.",
        "whole",
        "Claude Code ended without an answer (it may have crashed)",
        _LOOK_AT_LOG,
    ),
    FailureForm(
        "no-answer",
        "Ich habe deine Anfrage analysiert, aber keine Antwort generiert.",
        "whole",
        "Claude Code ended without an answer",
        _LOOK_AT_LOG,
    ),
)


@dataclass(frozen=True, slots=True)
class HelixFailure:
    """A failure found in an answer: its form, where its text starts, and Helix's detail."""

    form: FailureForm
    start: int
    detail: str = ""

    @property
    def message(self) -> str:
        """What happened and what to do, for the person (the notice adds its frame)."""
        detail = f": {self.detail}" if self.detail and self.form.quotes else ""
        return f"{self.form.happened}{detail}. {self.form.advice}"


def recognise(text: str) -> HelixFailure | None:
    """The Helix failure ``text`` reports, or ``None`` when it is an answer.

    The failure's ``start`` splits ``text``: what comes before it is what Helix answered before
    it failed (empty for every form but ``paragraph``).
    """
    begin = len(text) - len(text.lstrip())
    head = text[begin:]
    start: int | None = None
    rest: str | None = None  # the last paragraph, looked for once
    bare: str | None = None  # the head without STEP markers, made once
    for form in FORMS:
        if form.place == "paragraph":
            if rest is None:
                start = _last_paragraph(text, 0)
                rest = text[start:] if start is not None else ""
            if rest.startswith(form.opening) and _may_be_failure(rest):
                return HelixFailure(form, start or 0, _detail(rest[len(form.opening) :]))
        elif len(head) > MAX_FORM_CHARS:
            continue
        elif form.place == "whole":
            if bare is None:
                bare = _STEP.sub("", head).strip()
            if bare == form.opening:
                return HelixFailure(form, begin)
        elif head.startswith(form.opening) and _may_be_failure(head):
            return HelixFailure(form, begin, _detail(head[len(form.opening) :]))
    return None


def hold_from(text: str, shown: int) -> int:
    """How far ``text``, an answer still streaming of which ``shown`` characters are already
    shown, may be shown now: the index where a failure text may be starting, or where white space
    at its end begins. Held text is shown once the stream goes on to prove it an answer, or at
    its end. Never more than :data:`MAX_FORM_CHARS` are held for a failure.
    """
    if shown == 0:
        head = text.lstrip()
        if not head or any(_may_be(head, form) for form in FORMS if form.place != "paragraph"):
            return 0
    start = _last_paragraph(text, shown)
    if start is not None:
        rest = text[start:]
        for form in FORMS:
            if form.place == "paragraph" and (
                (rest and form.opening.startswith(rest))
                or (rest.startswith(form.opening) and _may_be_failure(rest))
            ):
                return _content_end(text, shown, start)  # the blank line before it waits too
    return _content_end(text, shown, len(text))  # white space waits for what follows it


def _may_be(head: str, form: FailureForm) -> bool:
    """Whether an answer that begins ``head`` (and may grow) can still turn out to be ``form``."""
    if form.opening.startswith(head):
        return True
    if len(head) > MAX_FORM_CHARS or not head.startswith(form.opening):
        return False
    rest = head[len(form.opening) :]
    if form.place == "start":
        return STEP_MARKER not in rest
    rest = _STEP.sub("", rest).lstrip()  # "whole": only white space and STEP markers may follow
    return not rest or STEP_MARKER.startswith(rest[: len(STEP_MARKER)])


def _may_be_failure(rest: str) -> bool:
    """Whether text from a form's opening on is short and unmarked enough to be Helix's own."""
    return len(rest.rstrip()) <= MAX_FORM_CHARS and STEP_MARKER not in rest


def _last_paragraph(text: str, lower: int) -> int | None:
    """Where the last paragraph of ``text`` starts (after its last blank line, white space at
    the end aside); ``None`` when that is before ``lower``, which is more than 0."""
    end = _content_end(text, lower, len(text))
    found = text.rfind("\n\n", max(lower - 2, 0), end)
    if found >= 0:
        return found + 2
    return 0 if lower == 0 else None


def _content_end(text: str, lower: int, upper: int) -> int:
    """``upper`` moved back over white space, but not below ``lower``."""
    while upper > lower and text[upper - 1].isspace():
        upper -= 1
    return upper


def _detail(text: str) -> str:
    """Helix's detail after a form's opening: one line, code fences removed, cut short."""
    text = " ".join(_CODE_FENCE.sub("", text.strip()).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1].rstrip() + "…"
''',
    'helix_pipeline/history.py': r'''"""History merge: the stored branch and the incoming messages become what goes to Helix.

Helix keeps no history of its own, so every request must carry the whole conversation, without
duplicates and within Helix's limits. :func:`merge_history` decides what is new and where it
belongs; :func:`fit_budget` trims what goes out. Neither does any I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .messages import Message

__all__ = ["Budget", "Merge", "Trim", "fit_budget", "merge_history", "split_system"]

log = logging.getLogger(__name__)

TRUNCATION_NOTE = "\n[... truncated by helix-pipeline: {dropped} characters left out]"


@dataclass(frozen=True, slots=True)
class Budget:
    """What Helix accepts: at most 100 messages of at most 100,000 characters each."""

    max_messages: int = 100
    max_message_chars: int = 100_000
    max_total_chars: int = 500_000


@dataclass(frozen=True, slots=True)
class Merge:
    """The result of merging: the conversation as it now stands, and what of it is new.

    ``conversation`` holds no system messages (they are never stored); ``new`` are the incoming
    messages that follow the first ``base`` messages of the stored branch.
    """

    conversation: tuple[Message, ...]
    base: int
    new: tuple[Message, ...]
    attached: int
    """How many stored messages were put in front of what the client sent (0 for a full resend)."""


@dataclass(frozen=True, slots=True)
class Trim:
    """What :func:`fit_budget` left out, in counts (never content)."""

    dropped_messages: int = 0
    dropped_chars: int = 0
    truncated_messages: int = 0

    def __bool__(self) -> bool:
        return bool(self.dropped_messages or self.truncated_messages)


def split_system(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """System messages (first occurrence of each text, in order) and the rest."""
    system: list[Message] = []
    seen: set[str] = set()
    rest: list[Message] = []
    for message in messages:
        if message.role != "system":
            rest.append(message)
        elif message.content not in seen:
            seen.add(message.content)
            system.append(message)
    return system, rest


def merge_history(
    stored: Sequence[Message], incoming: Sequence[Message], *, complete: bool
) -> Merge:
    """Merge the stored active branch with the incoming (system-free) messages.

    - the client resent the history (Open WebUI does): nothing is added or duplicated;
    - the incoming messages diverge from the stored branch (an edit, a regeneration): they win;
    - the client sent only its newest messages (``complete`` is false and the first incoming
      message is not the first stored one): the stored history goes before them, overlapping
      messages once.

    ``complete`` says the caller always sends the whole conversation (Open WebUI with message ids),
    so a first message that differs is an edit of the first turn, not a continuation.
    """
    stored, incoming = list(stored), list(incoming)
    common = _common_prefix(stored, incoming)
    if common == len(stored) or common > 0 or complete or not stored:
        return Merge(tuple(incoming), common, tuple(incoming[common:]), attached=0)
    overlap = _overlap(stored, incoming)
    new = incoming[overlap:]
    return Merge(tuple(stored + new), len(stored), tuple(new), attached=len(stored) - overlap)


def fit_budget(
    system: Sequence[Message], conversation: Sequence[Message], budget: Budget
) -> tuple[list[Message], Trim]:
    """Trim the oldest turns until Helix's limits hold; keep the system messages, the first user
    message (Helix takes it as the session's request) and the newest message.

    What is kept after the first user message starts with a user message.
    """
    limit = budget.max_message_chars
    sizes = [len(m.content) for m in (*system, *conversation)]
    truncated = sum(size > limit for size in sizes)
    if truncated:
        system = [_truncate(m, limit) for m in system]
        conversation = [_truncate(m, limit) for m in conversation]
        total = sum(len(m.content) for m in (*system, *conversation))
    else:  # the common case: nothing to cut, nothing to copy
        total = sum(sizes)
    if len(system) + len(conversation) <= budget.max_messages and total <= budget.max_total_chars:
        kept, trim = [*system, *conversation], Trim(truncated_messages=truncated)
        _log_trim(trim)
        return kept, trim

    first_user = next((i for i, m in enumerate(conversation) if m.role == "user"), None)
    pinned = [conversation[first_user]] if first_user is not None else []
    tail = conversation[first_user + 1 :] if first_user is not None else list(conversation)
    dropped_before = first_user or 0
    dropped_chars = sum(len(m.content) for m in conversation[:dropped_before])

    fixed = len(system) + len(pinned)
    fixed_chars = sum(len(m.content) for m in (*system, *pinned))
    room = max(1, budget.max_messages - fixed)
    start = max(0, len(tail) - room)
    tail_chars = sum(len(m.content) for m in tail[start:])
    while start < len(tail) - 1 and fixed_chars + tail_chars > budget.max_total_chars:
        tail_chars -= len(tail[start].content)
        start += 1
    if start > 0:
        # Keep whole turns: what follows the first user message starts with a user message.
        while start < len(tail) - 1 and tail[start].role != "user":
            tail_chars -= len(tail[start].content)
            start += 1
    dropped = tail[:start]
    kept = [*system, *pinned, *tail[start:]]
    if fixed_chars + tail_chars > budget.max_total_chars:
        kept, extra = _shrink_to(kept, budget.max_total_chars)
        truncated += extra
    trim = Trim(
        dropped_messages=dropped_before + len(dropped),
        dropped_chars=dropped_chars + sum(len(m.content) for m in dropped),
        truncated_messages=truncated,
    )
    _log_trim(trim)
    return kept, trim


def _log_trim(trim: Trim) -> None:
    if trim:
        log.info(
            "history trimmed to Helix's limits: %d messages (%d chars) dropped, %d truncated",
            trim.dropped_messages,
            trim.dropped_chars,
            trim.truncated_messages,
        )


def _common_prefix(stored: Sequence[Message], incoming: Sequence[Message]) -> int:
    count = 0
    for mine, theirs in zip(stored, incoming, strict=False):
        if not mine.same_as(theirs):
            break
        count += 1
    return count


def _overlap(stored: Sequence[Message], incoming: Sequence[Message]) -> int:
    """The longest run that ends the stored branch and starts the incoming messages."""
    limit = min(len(stored), len(incoming))
    tail, head = stored[len(stored) - limit :], incoming[:limit]
    if not any(m.partial for m in tail) and (
        all(m.message_id is None for m in head) or all(m.message_id is None for m in tail)
    ):
        # Role and stripped text alone decide ``same_as`` here: an exact key, so linear time.
        return _overlap_of_keys([(m.role, m.content.strip()) for m in tail], head)
    # Ids on both sides or a partial reply: compare pairwise, quadratic in the worst case.
    for size in range(limit, 0, -1):
        if all(s.same_as(i) for s, i in zip(tail[-size:], head[:size], strict=True)):
            return size
    return 0


def _overlap_of_keys(tail: list[tuple[str, str]], head: Sequence[Message]) -> int:
    """The longest suffix of ``tail`` that is a prefix of ``head``'s keys (Knuth-Morris-Pratt).

    Comparing runs of messages pairwise from each possible size takes time quadratic in the
    number of messages: 50 ms for 1,000 messages of the same text, from a caller that sends only
    part of its history. The prefix function of ``head + [separator] + tail`` gives it in one pass.
    """
    keys: list[object] = [(m.role, m.content.strip()) for m in head]
    keys.append(object())  # a separator equal to nothing: no match runs across it
    keys.extend(tail)
    prefix = [0] * len(keys)
    for index in range(1, len(keys)):
        length = prefix[index - 1]
        while length and keys[index] != keys[length]:
            length = prefix[length - 1]
        if keys[index] == keys[length]:
            length += 1
        prefix[index] = length
    return prefix[-1]


def _truncate(message: Message, limit: int) -> Message:
    if len(message.content) <= limit:
        return message
    # The note counts what it replaces, and a longer count makes a longer note: settle both.
    keep = limit
    while True:
        note = TRUNCATION_NOTE.format(dropped=len(message.content) - keep)
        shorter = max(0, limit - len(note))
        if shorter == keep:
            break
        keep = shorter
    return replace(message, content=message.content[:keep] + note[: limit - keep])


def _shrink_to(messages: list[Message], total: int) -> tuple[list[Message], int]:
    """Cut the longest messages until the total fits (when even the newest turn is too long)."""
    messages = list(messages)
    shrunk = 0
    while (excess := sum(len(m.content) for m in messages) - total) > 0:
        index = max(range(len(messages)), key=lambda i: len(messages[i].content))
        longest = messages[index]
        target = max(0, len(longest.content) - excess)
        if target == len(longest.content) or not longest.content:
            break
        messages[index] = _truncate(longest, target)
        shrunk += 1
        if len(messages[index].content) >= len(longest.content):
            break
    return messages, shrunk
''',
    'helix_pipeline/messages.py': r'''"""Chat messages as helix-pipeline handles them: one role, text content, an optional id.

Open WebUI and OpenAI clients send messages in many shapes (content as a list of parts, roles such
as ``tool`` or ``developer``, extra keys). Helix accepts only ``system``/``user``/``assistant`` and
string content, so every incoming message is normalised here, once, into a :class:`Message`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = ["Message", "Role", "content_to_text", "message_from_dict", "messages_from_dicts"]

Role = Literal["system", "user", "assistant"]

_ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_IMAGE_PLACEHOLDER = "[image]"


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """One chat message: what Helix sees (role, content) plus what the store keeps beside it."""

    role: Role
    content: str
    message_id: str | None = None
    partial: bool = False
    created_at: float | None = None

    def __init__(
        self,
        role: Role,
        content: str,
        message_id: str | None = None,
        partial: bool = False,
        created_at: float | None = None,
    ) -> None:
        # A turn builds a hundred messages: setting the slots directly costs half the frozen
        # dataclass's own __init__ (which goes through object.__setattr__ for each field).
        _set_role(self, role)
        _set_content(self, content)
        _set_message_id(self, message_id)
        _set_partial(self, partial)
        _set_created_at(self, created_at)

    def to_wire(self) -> dict[str, str]:
        """The message as Helix takes it: role and string content only."""
        return {"role": self.role, "content": self.content}

    def with_id(self, message_id: str | None) -> Message:
        return replace(self, message_id=message_id)

    def same_as(self, other: Message) -> bool:
        """Whether ``other`` is this (stored) message sent again.

        Ids decide when both sides have one. Otherwise role and text decide, ignoring surrounding
        white space; a stored partial reply also matches a longer text that starts with it (Open WebUI
        keeps what was streamed, plus our error note, as the assistant message).
        """
        if self.role != other.role:
            return False
        if self.message_id and other.message_id:
            return self.message_id == other.message_id
        mine, theirs = self.content.strip(), other.content.strip()
        if mine == theirs:
            return True
        return self.partial and bool(mine) and theirs.startswith(mine)


# The slots' own setters, in field order (an added field breaks this line, not the messages).
_set_role, _set_content, _set_message_id, _set_partial, _set_created_at = (
    vars(Message)[field.name].__set__ for field in fields(Message)
)


def content_to_text(content: object) -> str:
    """Turn OpenAI content (a string, a list of parts, or ``None``) into plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for part in content if (text := _part_to_text(part)))
    try:
        return str(content)
    except ValueError:  # an int beyond str()'s 4,300 digits, possibly inside a dict
        return ""


def _part_to_text(part: object) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping):
        return ""
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = part.get("text")
        return text if isinstance(text, str) else ""
    if kind in ("image_url", "input_image", "image"):
        return _IMAGE_PLACEHOLDER
    return ""


def _output_text(output: object) -> str:
    """The text of a message's ``output`` items (Open WebUI 0.10 keeps an assistant reply there,
    with ``content: ""``): the text parts of its ``message`` items, as in :func:`content_to_text`."""
    if not isinstance(output, list):
        return ""
    texts = (
        content_to_text(item.get("content"))
        for item in output
        if isinstance(item, Mapping) and item.get("type", "message") == "message"
    )
    return "\n".join(text for text in texts if text)


def message_from_dict(raw: object) -> Message | None:
    """Normalise one OpenAI-style message dict; ``None`` for something that is not a message.

    The text is ``content``, else (when that is empty) the ``output`` items Open WebUI 0.10 puts
    an assistant reply in.

    Roles Helix does not know are never forwarded as such: ``developer`` becomes ``system``, and a
    ``tool``/``function`` result becomes an assistant message that says what it is.
    """
    # Run for every message of every turn: a plain dict with a known role, text and a string id
    # (what Open WebUI sends) is read inline; anything else takes the general path below, which
    # gives the same message for it.
    if raw.__class__ is dict:
        role_raw, content, message_id = raw.get("role"), raw.get("content"), raw.get("id")
        if (
            role_raw.__class__ is str
            and content.__class__ is str
            and content
            and (message_id is None or message_id.__class__ is str)
            and (role := _ROLE_ALIASES.get(role_raw)) is not None
        ):
            return Message(role, content, message_id or None)
    return _any_message(raw)


def _any_message(raw: object) -> Message | None:
    if not isinstance(raw, Mapping):
        return None
    role_raw = raw.get("role")
    content = content_to_text(raw.get("content")) or _output_text(raw.get("output"))
    role = _ROLE_ALIASES.get(role_raw) if isinstance(role_raw, str) else None
    if role is None:
        if role_raw in ("tool", "function"):
            role, content = "assistant", f"[tool result]\n{content}"
        else:
            return None
    message_id = raw.get("id")
    return Message(
        role, content, message_id if isinstance(message_id, str) and message_id else None
    )


def messages_from_dicts(raw: Any) -> list[Message]:
    """Normalise a message list, dropping entries that are not messages at all."""
    if not isinstance(raw, Iterable) or isinstance(raw, (str, bytes, Mapping)):
        return []
    return [m for item in raw if (m := message_from_dict(item)) is not None]
''',
    'helix_pipeline/notices.py': r'''"""The one short message the person in the chat sees when a turn fails.

It says what went wrong and what to do; the details go to the log. Never a traceback, never a
secret (error messages are built without them, see :mod:`helix_pipeline.errors`), never a file
path of the server (Helix's 500 quotes its own: :func:`notice_for` replaces them).

Every notice is marked by data, not by its words: it is wrapped in :data:`OPEN` and :data:`CLOSE`,
two invisible characters each, which Open WebUI stores and sends back verbatim and the browser does
not show. :func:`without_notices` finds notices by that mark alone, so their wording can change
freely; it takes out only a well-formed span (an opening, words without mark characters, a
closing), so Helix's own text keeps any stray mark character. Chats from before the mark keep
their notices in the old wording, which :mod:`helix_pipeline.notices_legacy` recognises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from .decorations import strip_decorations
from .errors import ConfigError, HelixPipelineError
from .history import Trim
from .messages import Message
from .notices_legacy import without_legacy_notice

__all__ = [
    "CLOSE",
    "EMPTY_ANSWER",
    "OPEN",
    "UNEXPECTED",
    "for_open_webui",
    "is_notice",
    "notice_for",
    "trim_line",
    "trim_notice",
    "visible",
    "without_notices",
    "without_server_paths",
]

_SEPARATOR_CHAR = "\u2063"  # INVISIBLE SEPARATOR: never in prose, invisible in every browser
_NO_BREAK_CHAR = "\ufeff"  # ZERO WIDTH NO-BREAK SPACE: whitespace to the markdown renderer
OPEN = _SEPARATOR_CHAR + _NO_BREAK_CHAR
"""Opens a notice. Its no-break space faces the words: Open WebUI's markdown (marked 9) reads it as
white space, so emphasis at the edge of a notice (the trim line's ``_(...)_``) still renders."""
CLOSE = _NO_BREAK_CHAR + _SEPARATOR_CHAR
"""Closes a notice."""
_WITHOUT_MARK = str.maketrans("", "", _SEPARATOR_CHAR + _NO_BREAK_CHAR)
_NOTICE = re.compile(f"(?:\n\n)?{OPEN}[^{_SEPARATOR_CHAR}{_NO_BREAK_CHAR}]*{CLOSE}")
"""A marked notice, with the blank line that sets it apart from an answer it follows."""

_WARNING = "⚠️"
_DETAILS = "(Details are in the Pipelines server log.)"
_DETAILS_OPEN_WEBUI = "(Details are in Open WebUI's log.)"
"""The same notices from an Open WebUI Function, which runs inside Open WebUI."""
_AFTER_ANSWER = "\n\n"


def _marked(words: str) -> str:
    """``words`` as a notice: between the marks, any mark character in them taken out."""
    return f"{OPEN}{words.translate(_WITHOUT_MARK)}{CLOSE}"


EMPTY_ANSWER = _marked(
    f"{_WARNING} Helix answered nothing: its answer ended before any text. Look at Helix's log for "
    f"the cause, then ask again. {_DETAILS}"
)
UNEXPECTED = _marked(
    f"{_WARNING} helix-pipeline hit an unexpected error and could not answer. {_DETAILS}"
)


_SERVER_PATH = re.compile(
    r"""(?<![\w.:/])(?:/(?:home|root|usr|var|opt|srv|tmp|app|etc|mnt|data|run|Users|private)"""
    r"""(?:/[^\s'"/]+)+/?|[A-Za-z]:\\[^\s'"]+)"""
)
_STACK_FRAME = re.compile(
    r"""\s*(?:Traceback \(most recent call last\):|File "[^"]*", line \d+[^\n]*)"""
)


def notice_for(exc: HelixPipelineError, *, cut_off: bool = False) -> str:
    """The chat message for ``exc``; ``cut_off`` when part of the answer was already shown."""
    message = without_server_paths(exc.message)
    if cut_off:
        return _AFTER_ANSWER + _marked(
            f"{_WARNING} The answer was cut off: {_sentence(message)} "
            f"What arrived above is kept; ask again to continue. {_DETAILS}"
        )
    if isinstance(exc, ConfigError):
        return _marked(f"{_WARNING} helix-pipeline is misconfigured: {message} {_DETAILS}")
    return _marked(f"{_WARNING} {message} {_DETAILS}")


def without_server_paths(text: str) -> str:
    """``text`` with file paths of a server and stack frames replaced (the log keeps them)."""
    return _SERVER_PATH.sub("(a file on the server)", _STACK_FRAME.sub("", text))


def is_notice(text: str) -> bool:
    """Whether ``text`` (one chunk of an answer, as the pipe yields it) is one notice."""
    return _NOTICE.fullmatch(text) is not None


def visible(text: str) -> str:
    """``text`` as the person reads it: each notice's words without its (invisible) mark."""
    return _NOTICE.sub(lambda notice: notice[0].translate(_WITHOUT_MARK), text)


def for_open_webui(text: str) -> str:
    """``text`` with a notice's pointer to the log naming Open WebUI's log instead."""
    pointer = _DETAILS + CLOSE
    if text.endswith(pointer) and is_notice(text):
        return text[: -len(pointer)] + _DETAILS_OPEN_WEBUI + CLOSE
    return text


def trim_notice(trim: Trim) -> str | None:
    """One short line saying how Helix's history was cut to fit its limits, or ``None``."""
    parts: list[str] = []
    if trim.dropped_messages:
        noun = "message" if trim.dropped_messages == 1 else "messages"
        parts.append(
            f"{trim.dropped_messages} older {noun} left out "
            "(MAX_HISTORY_MESSAGES, MAX_HISTORY_CHARS)"
        )
    if trim.truncated_messages:
        noun = "message" if trim.truncated_messages == 1 else "messages"
        parts.append(f"{trim.truncated_messages} long {noun} shortened (MAX_MESSAGE_CHARS)")
    return f"Helix gets a shortened history: {', '.join(parts)}" if parts else None


def trim_line(trim: Trim) -> str | None:
    """:func:`trim_notice` as a line to end a plain (non-streaming) answer with, where no status
    line can be shown; :func:`without_notices` takes it off again before the history."""
    notice = trim_notice(trim)
    return f"{_AFTER_ANSWER}{_marked(f'_({notice})_')}" if notice else None


def _sentence(text: str) -> str:
    """``text`` ending with a full stop, so that the next sentence does not run on."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def without_notices(messages: Sequence[Message]) -> list[Message]:
    """The messages without the notices this pipeline put in assistant replies, and without
    Helix's progress decorations.

    Open WebUI keeps a notice as (the end of) the assistant message and sends it back next turn;
    it is not part of the conversation, so it is neither stored nor sent to Helix. A reply cut off
    by an error keeps the text that arrived before the notice. Decorations
    (:mod:`helix_pipeline.decorations`) reach Open WebUI's copy when a host showed them as text
    (a plain answer's validation hint, answers from before the pipe turned them into statuses).
    """
    result: list[Message] = []
    for message in messages:
        if message.role != "assistant":
            result.append(message)
            continue
        content = message.content
        if OPEN in content:
            content = _NOTICE.sub("", content)
            if not content.strip():
                continue  # the whole reply was a notice
        kept = without_legacy_notice(content)
        if kept is None:
            continue
        answer, _ = strip_decorations(kept)
        unchanged = answer == message.content
        result.append(message if unchanged else replace(message, content=answer))
    return result
''',
    'helix_pipeline/notices_legacy.py': r'''"""Notices in the wording of the releases before notices carried a mark (0.1.0 up to the mark).

Open WebUI keeps every notice it was shown in its chats and sends it back on each later turn, so a
chat from before the upgrade still holds these texts, forever. Without this, such a chat would fork
its stored history once and send its old notices to Helix on every turn after.

The texts below are what those releases wrote, frozen: they are history, not the current wording.
Rewording a notice in :mod:`helix_pipeline.notices` never changes them; nothing new is written in
this form.
"""

from __future__ import annotations

import re

__all__ = ["without_legacy_notice"]

_WARNING = "⚠️"
_POINTERS = (
    "(Details are in the Pipelines server log.)",
    "(Details are in Open WebUI's log.)",
)
_CUT_OFF = f"\n\n{_WARNING} The answer was cut off: "
_TRIM_LINE = re.compile(r"\n\n_\(Helix gets a shortened history: [^\n]*\)_\Z")


def without_legacy_notice(content: str) -> str | None:
    """An assistant message's ``content`` without an unmarked notice at its end; ``None`` when
    the whole message is one. Content without one comes back unchanged."""
    if content.endswith(")_"):
        content = _TRIM_LINE.sub("", content)
    if not content.endswith(_POINTERS):
        return content
    if content.startswith(_WARNING):
        return None
    cut = content.rfind(_CUT_OFF)
    return content[:cut] if cut >= 0 else content
''',
    'helix_pipeline/payload.py': r'''"""What is sent to Helix: the request body rules, and the answer text of a completion.

Helix speaks the OpenAI chat completions API, and other OpenAI-compatible servers reject Open
WebUI's own keys (``tools``, ``metadata``, ...): :func:`build_payload` copies only what such a
server may receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .conversation import PRIVATE_KEY
from .errors import ConfigError
from .messages import Message
from .sse import completion_content

__all__ = [
    "DEFAULT_MODEL",
    "FORWARDED_FIELDS",
    "NEVER_FORWARDED",
    "build_payload",
    "check_extra_fields",
    "completion_text",
]

DEFAULT_MODEL = "helix-consultant"
FORWARDED_FIELDS = ("temperature", "max_tokens", "top_p", "stop")
"""Body fields forwarded to Helix besides ``model``, ``messages`` and ``stream``."""
NEVER_FORWARDED = frozenset({"tools", "tool_choice", "metadata", "features", "user", PRIVATE_KEY})
"""Open WebUI's own keys, which other OpenAI-compatible servers reject; never sent to Helix."""


def build_payload(
    messages: Sequence[Message | Mapping[str, Any]],
    body: Mapping[str, Any],
    *,
    stream: bool,
    extra_fields: Iterable[str] = (),
    model: str | None = None,
) -> dict[str, Any]:
    """The request body for Helix: only what an OpenAI-compatible server may receive.

    ``messages`` (:class:`Message` objects or dicts) are reduced to ``role`` and ``content``.
    From ``body`` only ``model`` (unless ``model`` is given), ``temperature``, ``max_tokens``,
    ``top_p``, ``stop`` and the named ``extra_fields`` are copied, and only when set; ``tools``,
    ``metadata``, ``features``, ``user`` and private keys (``_...``) never are.
    """
    names = check_extra_fields(extra_fields)
    chosen_model = model or body.get("model")
    payload: dict[str, Any] = {
        "model": chosen_model if isinstance(chosen_model, str) and chosen_model else DEFAULT_MODEL,
        "messages": [
            m.to_wire()
            if isinstance(m, Message)
            else {"role": m.get("role"), "content": m.get("content")}
            for m in messages
        ],
        "stream": stream,
    }
    for name in (*FORWARDED_FIELDS, *names):
        value = body.get(name)
        if value is not None:
            payload[name] = value
    return payload


def check_extra_fields(extra_fields: Iterable[str]) -> tuple[str, ...]:
    """The extra field names, stripped; :class:`ConfigError` for one that must never be sent."""
    names = tuple(name.strip() for name in extra_fields if name and name.strip())
    for name in names:
        if name in NEVER_FORWARDED or name.startswith("_") or name in ("model", "messages"):
            raise ConfigError(
                f"The extra field {name!r} cannot be forwarded to Helix: remove it from the "
                "forwarded extra fields (Open WebUI's own and private keys are never sent).",
                setting="extra_fields",
            )
    return names


def completion_text(completion: Mapping[str, Any]) -> str:
    """The answer text of a non-streaming completion (``""`` when Helix sent ``null``)."""
    return completion_content(completion) or ""
''',
    'helix_pipeline/pipe.py': r'''"""The Helix manifold pipe: conversation memory around every call to Helix.

``pipelines/helix.py`` is a thin shell around :class:`HelixPipe`. The flow of one chat turn:
``inlet`` copies the conversation context out of ``metadata`` (which never reaches ``pipe()``);
``pipe`` prepares the turn and has Helix answer it (:mod:`helix_pipeline.pipe_turn`);
``outlet`` attaches Open WebUI's message ids. This module is what the Pipelines server calls: the
parts built from the valves, the model list, and the three hooks. None of them ever raises: a
failure becomes one short chat message, the details go to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .chat_body import REPAIRS_KEY, repair_chat_body
from .client import HelixClient
from .conversation import PRIVATE_KEY, Conversation, read_conversation
from .errors import ConfigError, HelixPipelineError
from .notices import UNEXPECTED, notice_for, trim_line, trim_notice
from .payload import DEFAULT_MODEL
from .pipe_items import PipeItem, after_status, shown_text
from .pipe_turn import PipeParts, PreparedTurn, answer_turn, prepare_turn
from .runtime import Reconfigurable, build_history, unusable_valves
from .valves import HelixValves

__all__ = ["HelixPipe", "PipeItem", "PreparedTurn", "shown_text"]

log = logging.getLogger(__name__)

MODELS_TTL_S = 300.0


def _client_for(valves: HelixValves) -> HelixClient:
    return HelixClient(
        valves.HELIX_BASE_URL,
        api_key=valves.api_key(),
        conversation_headers=valves.header_names(),
        connect_timeout=valves.CONNECT_TIMEOUT_S,
        read_timeout=valves.READ_TIMEOUT_S,
        completion_timeout=valves.ANSWER_TIMEOUT_S,
        max_retries=valves.MAX_RETRIES,
    )


_CLIENT_VALVES = (
    "HELIX_BASE_URL",
    "HELIX_API_KEY",
    "CONVERSATION_HEADERS",
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "ANSWER_TIMEOUT_S",
    "MAX_RETRIES",
)


class HelixPipe:
    """The runtime behind ``pipelines/helix.py``; ``valves`` returns the pipeline's current valves."""

    def __init__(
        self, valves: Callable[[], HelixValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._pipelines_dir = pipelines_dir
        self._valves = valves
        self._parts: Reconfigurable[HelixValves, PipeParts | ConfigError] = Reconfigurable(
            valves, self._build
        )
        self._models: list[str] | None = None
        self._models_at = 0.0
        self._refreshing = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def startup(self) -> None:
        """Ask Helix for its models (briefly) and purge conversations past ``SESSION_TTL_DAYS``.

        Never raises: an exception in ``on_startup`` stops the whole Pipelines server.
        """
        try:
            parts = self._current()
            self.refresh_models()
            parts.history.purge_older_than(parts.valves.SESSION_TTL_DAYS)
        except HelixPipelineError as exc:
            log.warning("starting without Helix's models or a purge: %s", exc)
        except Exception:  # the boundary: the server's startup must go on
            log.exception("unexpected error while starting the Helix pipe")

    def shutdown(self) -> None:
        parts = self._parts.get()
        if isinstance(parts, PipeParts):
            parts.client.close()
            parts.history.close()

    def _current(self) -> PipeParts:
        """The parts built from the current valves; a :class:`ConfigError` if a valve is unusable."""
        parts = self._parts.get()
        if isinstance(parts, ConfigError):
            raise ConfigError(parts.message, setting=parts.setting)
        return parts

    def _build(
        self,
        valves: HelixValves,
        old_valves: HelixValves | None,
        old: PipeParts | ConfigError | None,
    ) -> PipeParts | ConfigError:
        previous = old if isinstance(old, PipeParts) else None
        unusable = unusable_valves(valves)
        if unusable is None:
            try:
                return self._build_parts(valves, old_valves, previous)
            except ConfigError as exc:  # the valves' rules are the client's: should not happen
                log.warning("the valves cannot be used: %s", exc)
                unusable = exc
        if previous is not None:
            previous.client.close()
            previous.history.close()
        self._models_at = 0.0  # ask the next Helix for its models once the valves are corrected
        return unusable

    def _build_parts(
        self, valves: HelixValves, old_valves: HelixValves | None, old: PipeParts | None
    ) -> PipeParts:
        history = build_history(
            valves, self._pipelines_dir, old.history if old else None, old_valves
        )
        same_client = (
            old is not None
            and old_valves is not None
            and all(getattr(valves, name) == getattr(old_valves, name) for name in _CLIENT_VALVES)
        )
        if old is not None and same_client:
            client = old.client
        else:
            if old is not None:
                old.client.close()
                self._models_at = 0.0  # another Helix may offer other models
            client = _client_for(valves)
        return PipeParts(valves, history, client)

    # -- models --------------------------------------------------------------------------------

    def models(self) -> list[dict[str, str]]:
        """The manifold's models: Helix's own list (cached), else the ``HELIX_MODELS`` valve.

        The Pipelines server calls this on every request (its middleware), so it never waits on
        Helix (a stale list is refreshed in the background) and never raises: an exception here is
        an HTTP 500 for every endpoint, the valve update that would repair it included.
        """
        try:
            parts = self._parts.get()
            if isinstance(parts, ConfigError):
                ids = self._valves().model_ids()
            else:
                stale = time.monotonic() - self._models_at > MODELS_TTL_S
                if stale and not self._refreshing.locked():
                    threading.Thread(
                        target=self.refresh_models, name="helix-models", daemon=True
                    ).start()
                ids = self._models or parts.valves.model_ids()
        except Exception:  # the boundary: see above
            log.exception("unexpected error while listing the models; offering %s", DEFAULT_MODEL)
            ids = [DEFAULT_MODEL]
        return [{"id": model_id, "name": model_id} for model_id in ids]

    def refresh_models(self) -> None:
        """Ask Helix for its models now; never raises (it runs after every valve update)."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            parts = self._current()
            self._models_at = time.monotonic()
            self._models = parts.client.models() or None
        except HelixPipelineError as exc:
            log.info("using the HELIX_MODELS valve: could not list Helix's models: %s", exc)
            self._models = None
        except Exception:  # the boundary: a raising on_valves_updated answers the update with 500
            log.exception("unexpected error while asking Helix for its models")
            self._models = None
        finally:
            self._refreshing.release()

    # -- the three hooks -----------------------------------------------------------------------

    def inlet(self, body: Any, user: Any) -> Any:
        """Copy the conversation context into the body's private key, the only way to ``pipe()``."""
        if not isinstance(body, dict):
            return body
        try:
            repairs = repair_chat_body(body)  # else the server refuses it before pipe() runs
            private = read_conversation(body, user).to_private()
            if repairs:
                log.info("repaired an inlet body the Pipelines server would refuse: %s", repairs)
                private[REPAIRS_KEY] = repairs
            body[PRIVATE_KEY] = private
        except Exception:  # the boundary: an inlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not read the conversation of an inlet body")
        return body

    def outlet(self, body: Any, user: Any) -> Any:
        """Attach Open WebUI's message ids to the recorded turn; idempotent; body unchanged."""
        if not isinstance(body, dict):
            return body
        try:
            self._current().history.reconcile_outlet(body, user)
        except HelixPipelineError as exc:
            log.warning("could not reconcile an outlet body: %s", exc)
        except Exception:  # the boundary: an outlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not reconcile an outlet body")
        return body

    def pipe(
        self, user_message: Any, model_id: Any, messages: Any, body: Any
    ) -> str | Iterator[PipeItem]:
        """Answer one chat turn: a generator when streaming, a string otherwise. Never raises."""
        try:
            return self._pipe(model_id, messages, body if isinstance(body, Mapping) else {})
        except HelixPipelineError as exc:
            log.warning("turn failed before reaching Helix: %s", exc)
            return notice_for(exc)
        except Exception:  # the boundary: pipe() must never raise
            log.exception("unexpected error in pipe()")
            return UNEXPECTED

    def _pipe(
        self, model_id: Any, messages: Any, body: Mapping[str, Any]
    ) -> str | Iterator[PipeItem]:
        conversation = read_conversation(body, body.get("user"))
        prepared = self.prepare(
            conversation, body.get("messages", messages), body, model_id=model_id
        )
        answer = self.answer(prepared)
        if isinstance(answer, str):  # a plain answer has no status line: the trim ends the text
            return answer + (trim_line(prepared.turn.trim) or "") if answer else answer
        trimmed = trim_notice(prepared.turn.trim)
        return answer if trimmed is None else after_status(trimmed, answer)

    def prepare(
        self,
        conversation: Conversation,
        messages: Any,
        body: Mapping[str, Any],
        *,
        model_id: Any = None,
        memory: bool = True,
    ) -> PreparedTurn:
        """The turn ready for Helix (:func:`~helix_pipeline.pipe_turn.prepare_turn`), made with
        the parts of the current valves; raises :class:`HelixPipelineError`."""
        return prepare_turn(
            self._current(), conversation, messages, body, model_id=model_id, memory=memory
        )

    def answer(self, prepared: PreparedTurn) -> str | Iterator[PipeItem]:
        """Helix's answer to a prepared turn (:func:`~helix_pipeline.pipe_turn.answer_turn`)."""
        return answer_turn(prepared)
''',
    'helix_pipeline/pipe_items.py': r'''"""What the Pipelines pipe yields: answer text, and status events for the server to send on.

The Pipelines server forwards a dict yielded by ``pipe()`` as ``data: {"event": ...}``, which Open
WebUI shows as a status line; an Open WebUI Function says the same through its event emitter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .decorations import Item, Status

__all__ = ["PipeItem", "after_status", "for_host", "shown_text"]

PipeItem = str | dict[str, Any]
"""What the streaming ``pipe()`` yields: answer text, or a status event for the Pipelines server
to send on as ``data: {"event": ...}`` (Open WebUI shows it as a status line)."""


def shown_text(result: str | Iterable[PipeItem]) -> str:
    """The text a person sees of a ``pipe()`` result: the strings joined, status events left out."""
    if isinstance(result, str):
        return result
    return "".join(item for item in result if isinstance(item, str))


def for_host(items: Iterable[Item | None]) -> Iterator[PipeItem]:
    """Items as the Pipelines server sends them on: non-empty text, statuses as event dicts."""
    for item in items:
        if isinstance(item, Status):
            yield {"event": item.event()}
        elif item:
            yield item


def after_status(line: str, answer: Iterator[PipeItem]) -> Iterator[PipeItem]:
    """``answer`` after a status ``line`` (a shortened history), ending with a ``done`` status.

    The Pipelines host's own status; an Open WebUI Function says it through its event emitter.
    """
    yield {"event": Status(line).event()}
    closed = False
    for item in answer:
        if isinstance(item, dict):
            data = item.get("event", {}).get("data", {})
            closed = closed or data.get("done") is True
        yield item
    if not closed:
        yield {"event": Status(line, done=True).event()}
''',
    'helix_pipeline/pipe_turn.py': r'''"""One chat turn of the Helix pipe: prepared from the history, then answered by Helix.

:func:`prepare_turn` loads and merges the history and builds Helix's payload (the store is read
there); :func:`answer_turn` sends it, streams the reply back as it arrives and records the turn.
Failures while answering become one short notice in the chat; the details go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .chat_body import nothing_to_send
from .client import HelixClient, completion_text
from .conversation import ChatKind, Conversation
from .errors import BackendError, HelixPipelineError
from .helix_answer import AnswerReader, read_whole
from .helix_failures import HelixFailure
from .messages import messages_from_dicts
from .notices import EMPTY_ANSWER, UNEXPECTED, notice_for
from .pipe_items import PipeItem, for_host
from .service import HistoryService, Turn
from .valves import HelixValves

__all__ = ["PipeParts", "PreparedTurn", "answer_turn", "prepare_turn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipeParts:
    """What the pipe builds from its valves: the history service and Helix's client."""

    valves: HelixValves
    history: HistoryService
    client: HelixClient


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    """One chat turn ready for Helix (:func:`prepare_turn`), sent by :func:`answer_turn`.

    ``turn`` tells what the history service did (``attached``, ``trim``); ``local_answer`` is set
    when the turn is answered without Helix (a background task with ``TASKS=skip``).
    """

    parts: PipeParts
    turn: Turn
    payload: dict[str, Any]
    header_id: str | None
    stream: bool = True
    local_answer: str | None = None


def prepare_turn(
    parts: PipeParts,
    conversation: Conversation,
    messages: Any,
    body: Mapping[str, Any],
    *,
    model_id: Any = None,
    memory: bool = True,
) -> PreparedTurn:
    """Load and merge the history and build Helix's payload; the store is read here.

    ``memory=False`` (a person's own switch) forwards the turn as it came and records nothing.
    Raises :class:`HelixPipelineError` (e.g. a valve Helix's client refuses).
    """
    incoming = messages_from_dicts(messages)
    if not any(message.role == "user" for message in incoming):
        raise nothing_to_send(body)
    stream = body.get("stream", True) is not False
    header_id: str | None = conversation.conversation_id
    if conversation.is_task:
        if parts.valves.TASKS == "skip":
            log.debug("answering background task %s locally", conversation.task)
            turn = parts.history.passthrough(conversation, ())
            return PreparedTurn(parts, turn, {}, None, stream=stream, local_answer="")
        turn, header_id = parts.history.passthrough(conversation, incoming), None
    elif parts.history.enabled and memory:
        turn = parts.history.prepare(conversation, incoming)
    else:
        turn = parts.history.passthrough(conversation, incoming)
    payload = parts.client.build_payload(turn.outgoing, body, model=_model(model_id), stream=stream)
    log.info(
        "conversation %s (%s): %d messages to Helix, %d attached from the store",
        conversation.conversation_id,
        conversation.kind.value,
        len(turn.outgoing),
        turn.attached,
    )
    return PreparedTurn(parts, turn, payload, header_id, stream=stream)


def answer_turn(prepared: PreparedTurn) -> str | Iterator[PipeItem]:
    """Send a prepared turn to Helix: a generator of text and status events (``{"event": ...}``,
    :func:`~helix_pipeline.pipe_items.shown_text` keeps the text) when streaming, else the text.

    Blocks on Helix (the generator, on each chunk); records the turn when the answer is in.
    """
    if prepared.local_answer is not None:  # a stream of nothing: never a blank chunk
        return iter(()) if prepared.stream and not prepared.local_answer else prepared.local_answer
    if prepared.stream:
        return _stream(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)
    return _complete(prepared.parts, prepared.turn, prepared.payload, prepared.header_id)


def _complete(parts: PipeParts, turn: Turn, payload: dict[str, Any], header_id: str | None) -> str:
    try:
        text = completion_text(parts.client.complete(payload, conversation_id=header_id))
    except HelixPipelineError as exc:
        log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
        parts.history.record(turn, None)
        return notice_for(exc)
    reading = read_whole(text)
    if reading.failure is not None:
        _failed(parts, turn, reading.failure, reading.answer)
        return reading.answer + _failure_notice(reading.failure, reading.answer)
    parts.history.record(turn, reading.answer or None)
    return reading.answer or EMPTY_ANSWER


def _stream(
    parts: PipeParts, turn: Turn, payload: dict[str, Any], header_id: str | None
) -> Iterator[PipeItem]:
    reader = AnswerReader()
    finished = False
    try:
        for delta in parts.client.stream(payload, conversation_id=header_id):
            yield from for_host(reader.feed(delta))
        yield from for_host(reader.finish())
        finished = True
    except HelixPipelineError as exc:
        log.warning("Helix failed for conversation %s: %s", _cid(turn.conversation), exc)
        finished = True
        yield from for_host(reader.finish())
        parts.history.record(turn, reader.answer.strip() or None, partial=True)
        yield from for_host([reader.closing_status("Helix's answer was cut off")])
        yield notice_for(exc, cut_off=bool(reader.answer.strip()))
        return
    except Exception:  # the boundary: a generator that raises cuts the stream
        log.exception("unexpected error while streaming from Helix")
        finished = True
        parts.history.record(turn, reader.answer.strip() or None, partial=True)
        yield UNEXPECTED
        return
    finally:
        if not finished:  # the client went away (GeneratorExit): keep what was streamed
            parts.history.record(turn, reader.answer.strip() or None, partial=True)
    yield from _close_stream(parts, turn, reader)


def _close_stream(parts: PipeParts, turn: Turn, reader: AnswerReader) -> Iterator[PipeItem]:
    """The end of a stream Helix finished: the closing status, and a notice when it failed or
    said nothing; the turn is recorded."""
    if reader.failure is not None:
        _failed(parts, turn, reader.failure, reader.answer)
        yield from for_host([reader.closing_status("Helix did not answer")])
        yield _failure_notice(reader.failure, reader.answer)
        return
    reply = reader.answer
    parts.history.record(turn, reply or None)
    done = "Helix answered" if reply.strip() else "Helix answered nothing"
    if reader.unvalidated and reply.strip():
        done = "Helix answered, but could not fully validate the answer"
    yield from for_host([reader.closing_status(done)])
    if not reply.strip():
        yield EMPTY_ANSWER


def _failed(parts: PipeParts, turn: Turn, failure: HelixFailure, answer: str) -> None:
    """Record the person's message (and what Helix answered before it failed), log why."""
    log.warning(
        "Helix failed for conversation %s: its answer is its %r failure text (%s)",
        _cid(turn.conversation),
        failure.form.name,
        failure.detail or failure.form.opening.strip(),
    )
    parts.history.record(turn, answer.strip() or None, partial=True)


def _failure_notice(failure: HelixFailure, answer: str) -> str:
    return notice_for(BackendError(failure.message, status_code=200), cut_off=bool(answer.strip()))


def _cid(conversation: Conversation) -> str:
    return conversation.conversation_id if conversation.kind is not ChatKind.TASK else "(task)"


def _model(model_id: object) -> str | None:
    """The sub id the server passes (always a string from the Pipelines server), else none."""
    return model_id if isinstance(model_id, str) and model_id else None
''',
    'helix_pipeline/response_body.py': r'''"""Reading the body of Helix's HTTP responses: bytes as they arrive, bounded text, JSON, deltas.

Every response is requested with ``stream=True``: :func:`iter_body` passes each piece on as soon
as it arrives, so a streamed answer's deltas reach the person at once. A failure while reading is
a ``requests``/``urllib3`` exception; :class:`BodyReader` hands it to the client's translation
(:func:`helix_pipeline.wire_errors.transport_error`), saying whether part of the answer had come.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import requests
import urllib3.exceptions

from .errors import BackendError, BackendProtocolError
from .sse import iter_deltas
from .wire_errors import summarise_text

__all__ = [
    "MAX_COMPLETION_BODY",
    "MAX_ERROR_BODY",
    "BodyReader",
    "Translate",
    "is_event_stream",
    "is_json",
    "iter_body",
]

MAX_ERROR_BODY = 64 * 1024
"""Read of an error answer: enough for its summary."""
MAX_COMPLETION_BODY = 64 * 1024 * 1024
"""Read of a JSON answer: a whole completion, but not an endless body."""


class Translate(Protocol):
    """The client's translation of a failure to read into our error."""

    def __call__(
        self,
        exc: requests.RequestException | urllib3.exceptions.HTTPError,
        *,
        content_began: bool = False,
        waited: float | None = None,
    ) -> BackendError: ...


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


def is_event_stream(response: requests.Response) -> bool:
    return "text/event-stream" in response.headers.get("Content-Type", "").lower()


def is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "").lower()


@dataclass(frozen=True, slots=True)
class BodyReader:
    """Reads response bodies; a failure to read becomes our error through ``translate``."""

    translate: Translate

    def text(self, response: requests.Response, limit: int, waited: float | None = None) -> str:
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
            raise self.translate(exc, content_began=size > 0, waited=waited) from exc
        encoding = response.encoding or "utf-8"
        try:
            return b"".join(parts)[:limit].decode(encoding, errors="replace")
        except LookupError:
            return b"".join(parts)[:limit].decode("utf-8", errors="replace")

    def json_object(
        self, response: requests.Response, path: str, waited: float | None = None
    ) -> dict[str, Any]:
        """The body as a JSON object; anything else is a :class:`BackendProtocolError`."""
        raw = self.text(response, MAX_COMPLETION_BODY, waited)
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

    def deltas(self, response: requests.Response) -> Iterator[str]:
        """Content deltas of a streamed answer, exactly as Helix sent them."""
        began = False
        try:
            for delta in iter_deltas(iter_body(response)):
                began = True
                yield delta
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self.translate(exc, content_began=began) from exc

    def error_text(self, response: requests.Response) -> str:
        """Up to 64 KiB of an error answer's body, for its summary; ``""`` if it cannot be read."""
        try:
            return self.text(response, MAX_ERROR_BODY)
        except BackendError:
            return ""
''',
    'helix_pipeline/retries.py': r'''"""When a request to Helix is sent again: only before any answer began, a few times, backing off.

Which failures qualify is read from the wire (:func:`helix_pipeline.wire_errors.is_retryable`,
:data:`RETRY_STATUSES`); :class:`RetryPolicy` says how often and how long to wait in between,
honouring Helix's ``Retry-After`` up to a cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RETRY_STATUSES", "RetryPolicy"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""HTTP answers that say "not now" before any answer began: sent again while retries are left."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` more sends, waiting ``backoff_base * 2**attempt`` (capped at
    ``backoff_max``) or Helix's ``Retry-After`` (capped at ``retry_after_max``) in between."""

    max_retries: int = 2
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    retry_after_max: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def allows(self, attempt: int) -> bool:
        """Whether a failed send number ``attempt`` (from 0) may be sent again."""
        return attempt < self.max_retries

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before sending again after the failed send number ``attempt``."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return min(self.backoff_base * 2.0**attempt, self.backoff_max)

    def wait(self, attempt: int, retry_after: float | None, *, reason: str, shown_url: str) -> None:
        """Log why the request to Helix at ``shown_url`` is sent again, then wait :meth:`delay`."""
        delay = self.delay(attempt, retry_after)
        log.warning(
            "Helix at %s: %s, retry %d of %d in %.2f s",
            shown_url,
            reason,
            attempt + 1,
            self.max_retries,
            delay,
        )
        self.sleep(delay)
''',
    'helix_pipeline/runtime.py': r'''"""What a pipeline instance builds from its valves, rebuilt when an admin changes them.

The Pipelines server replaces ``pipeline.valves`` after loading ``valves.json`` and on every update,
so pipelines read their valves through a callable and rebuild only what a changed valve affects: a
store is reopened only when its URL changes. Valves that break their rules (restored from an old
``valves.json``, set with ``model_construct``) build nothing: :func:`unusable_valves` turns them
into one :class:`~helix_pipeline.errors.ConfigError` that the pipelines report in the chat, since
an exception there would make the Pipelines server answer 500 to every request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .errors import ConfigError
from .service import HistoryService
from .stores import open_store
from .stores.lazy import LazyStore
from .urls import redact_url
from .valves import HistoryValves

__all__ = ["Reconfigurable", "build_history", "unusable_valves"]

WHERE_TO_FIX = "An admin can correct it in Admin Panel > Settings > Pipelines."

log = logging.getLogger(__name__)

V = TypeVar("V", bound=HistoryValves)
R = TypeVar("R")


def build_history(
    valves: HistoryValves,
    pipelines_dir: Path | None,
    previous: HistoryService | None = None,
    previous_valves: HistoryValves | None = None,
) -> HistoryService:
    """A history service for ``valves``, keeping ``previous``'s stores when their URL is unchanged."""
    url = valves.store_url(pipelines_dir)
    unchanged = (
        previous_valves is not None
        and previous_valves.store_url(pipelines_dir) == url
        and previous_valves.SESSION_TTL_DAYS == valves.SESSION_TTL_DAYS
    )
    if previous is not None and unchanged:
        store = previous.store
        temporary = previous.temporary_store
    else:
        if previous is not None:
            previous.close()
        ttl_days = valves.SESSION_TTL_DAYS
        store = LazyStore(redact_url(url), lambda: open_store(url, ttl_days=ttl_days))
        temporary = None
    return HistoryService(
        store,
        budget=valves.budget(),
        store_temporary=valves.STORE_TEMPORARY_CHATS,
        enabled=valves.HISTORY_ENABLED,
        temporary_store=temporary,
    )


def unusable_valves(valves: HistoryValves) -> ConfigError | None:
    """One error naming each valve that breaks its rule and what it must be; ``None`` if all are
    usable. Each problem is logged once here (callers build once per valves object)."""
    problems = valves.problems()
    if not problems:
        return None
    for name, reason in problems.items():
        log.warning(
            "the %s valve is unusable, turns are refused until it is corrected: %s", name, reason
        )
    reasons = "; ".join(_sentence_body(reason) for reason in problems.values())
    return ConfigError(f"{reasons}. {WHERE_TO_FIX}", setting=next(iter(problems)))


def _sentence_body(text: str) -> str:
    return text.rstrip().rstrip(".")


class Reconfigurable(Generic[V, R]):
    """Holds the object built from the current valves; rebuilds it when the valves object changes."""

    def __init__(
        self, valves: Callable[[], V], build: Callable[[V, V | None, R | None], R]
    ) -> None:
        self._valves = valves
        self._build = build
        self._lock = threading.Lock()
        self._seen: V | None = None
        self._built: R | None = None

    def get(self) -> R:
        valves = self._valves()
        built = self._built
        if valves is self._seen and built is not None:
            return built
        with self._lock:
            if valves is not self._seen or self._built is None:
                log.debug("building %s from new valves", type(self).__name__)
                self._built = self._build(valves, self._seen, self._built)
                self._seen = valves
            return self._built
''',
    'helix_pipeline/service.py': r'''"""The history service: load, merge, budget and record, whatever store sits behind it.

Both pipeline files use it: the Helix pipe around its call to Helix, the session filter in its inlet
and outlet. It never raises for a store failure: a turn whose store is down goes to Helix without
stored history, and the log says so.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import Any

from .conversation import ChatKind, Conversation, ConversationKey, read_conversation
from .errors import StoreError
from .history import Budget, Trim, fit_budget, merge_history, split_system
from .messages import Message, messages_from_dicts
from .notices import without_notices
from .stores import Branch, MemoryStore, SessionStore

__all__ = ["TEMPORARY_CONVERSATIONS", "HistoryService", "Turn"]

log = logging.getLogger(__name__)

TEMPORARY_CONVERSATIONS = 1_000
"""Temporary chats kept in memory at most; beyond it the least recently used one is forgotten."""

_CONTENT = attrgetter("content")

RECENT_CONVERSATIONS = 256
RECENT_CHARACTERS = 8_000_000
"""Bounds of what a service remembers of the branches it just read or recorded (the outlet's
shortcut): conversations, and characters of message text in all."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One prepared chat turn: what goes to Helix, and what to record once the reply is in."""

    conversation: Conversation
    outgoing: tuple[Message, ...]
    new: tuple[Message, ...]
    store: SessionStore | None
    attached: int = 0
    trim: Trim = field(default_factory=Trim)
    prefix: tuple[Message, ...] = ()
    """The stored messages that ``new`` follows, as this turn loaded them (ids included):
    recording checks them against the branch then active, which another worker may have changed."""
    branch: Branch | None = None
    """The stored branch as this turn read it, with its version (``None`` if it could not)."""

    def wire_messages(self) -> list[dict[str, str]]:
        return [m.to_wire() for m in self.outgoing]


class HistoryService:
    """Conversation memory for one pipeline instance.

    ``store`` keeps saved chats, channels and API conversations; temporary chats go to an
    in-memory store bounded to :data:`TEMPORARY_CONVERSATIONS` chats unless ``store_temporary`` is
    on; background tasks are never stored.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        budget: Budget | None = None,
        store_temporary: bool = False,
        enabled: bool = True,
        temporary_store: SessionStore | None = None,
    ) -> None:
        self.store = store
        self.budget = budget or Budget()
        self.store_temporary = store_temporary
        self.enabled = enabled
        self.temporary_store = temporary_store or MemoryStore(
            "memory://temporary", max_conversations=TEMPORARY_CONVERSATIONS
        )
        self._recent = RecentBranches()

    def store_for(self, conversation: Conversation) -> SessionStore | None:
        """Where this conversation's history lives; ``None`` for what is never recorded."""
        if not self.enabled or conversation.kind is ChatKind.TASK:
            return None
        if conversation.kind is ChatKind.TEMPORARY and not self.store_temporary:
            return self.temporary_store
        return self.store

    def prepare(self, conversation: Conversation, incoming: Sequence[Message]) -> Turn:
        """Merge the stored history into the incoming messages and fit Helix's limits."""
        system, chat = split_system(without_notices(incoming))
        store = self.store_for(conversation)
        branch = self._read(store, conversation) if store is not None else None
        stored = branch.messages if branch is not None else ()
        merge = merge_history(stored, chat, complete=conversation.sends_whole_chat(chat))
        if merge.attached:
            log.info(
                "attached %d stored messages to conversation %s",
                merge.attached,
                conversation.conversation_id,
            )
        new = tuple(self._with_ids(merge.new, conversation))
        outgoing, trim = fit_budget(system, merge.conversation, self.budget)
        return Turn(
            conversation=conversation,
            outgoing=tuple(outgoing),
            new=new,
            store=store,
            attached=merge.attached,
            trim=trim,
            prefix=tuple(stored[: merge.base]),
            branch=branch,
        )

    def passthrough(self, conversation: Conversation, incoming: Sequence[Message]) -> Turn:
        """A turn that is forwarded as it came (history off, or a background task)."""
        system, chat = split_system(incoming)
        outgoing, trim = fit_budget(system, chat, self.budget)
        return Turn(conversation, tuple(outgoing), (), None, trim=trim)

    def record(self, turn: Turn, reply: str | None, *, partial: bool = False) -> bool:
        """Record the turn's new messages and Helix's reply in one transaction; whether it worked.

        A reply that was cut off is recorded with ``partial=True``; ``None`` records only the user's
        messages (Helix failed before answering).
        """
        if turn.store is None:
            return False
        messages = list(turn.new)
        if reply is not None and (reply or not partial):
            messages.append(
                Message(
                    "assistant",
                    reply,
                    message_id=turn.conversation.message_id,
                    partial=partial,
                )
            )
        if not messages:
            return True
        key = turn.conversation.key
        try:
            # The prefix, not ``after=len(turn.prefix)``: if another worker recorded an edit of
            # this chat since prepare(), the turn forks from where it diverges instead of joining
            # the edit. While nobody did, ``base`` spares the store reading the branch again.
            result = turn.store.record(key, [*turn.prefix, *messages], after=0, base=turn.branch)
        except StoreError as exc:
            self._recent.forget(turn.store, key)
            log.warning(
                "could not record a turn of conversation %s in %s: %s",
                turn.conversation.conversation_id,
                turn.store.url,
                exc,
            )
            return False
        self._recent.remember(turn.store, key, result.active)
        return True

    def reconcile(self, conversation: Conversation, messages: Sequence[Message]) -> bool:
        """Record a finished exchange as Open WebUI's outlet reports it (with its message ids).

        Open WebUI's outlet holds the whole chat, every message with its id: it is matched against
        the stored branch from the start, so ids attach to what the pipe recorded and nothing is
        stored twice. It is matched against the branch this service just read or recorded for the
        chat, when it has it: then the store is touched only if the outlet brings something new,
        and is not read again. An API caller's outlet (with or without a chat id) holds only what
        it sent, its own messages without ids: it is merged like an incoming request against the
        branch read now, so the history the turn was answered with stays in front of it.
        """
        store = self.store_for(conversation)
        if store is None:
            return False
        _, chat = split_system(without_notices(messages))
        if not chat:
            return True
        key = conversation.key
        try:
            complete = conversation.sends_whole_chat(chat)
            recent = self._recent.get(store, key) if complete else None
            branch = store.read(key) if recent is None else recent
            # The whole chat is matched from its start; only a part goes after the history.
            after = 0 if complete else merge_history(branch.messages, chat, complete=False).attached
            if not branch.unchanged_by(chat, after=after):
                branch = store.record(key, chat, after=after, base=branch).active
            elif branch is recent:
                return True
        except StoreError as exc:
            self._recent.forget(store, key)
            log.warning(
                "could not record the outlet of conversation %s in %s: %s",
                conversation.conversation_id,
                store.url,
                exc,
            )
            return False
        self._recent.remember(store, key, branch)
        return True

    def reconcile_outlet(self, body: Mapping[str, Any], user: object) -> bool:
        """:meth:`reconcile` for an Open WebUI outlet body (its ``chat_id``, ``id`` and messages)."""
        conversation = read_conversation(body, user)
        raw = body.get("messages")
        if self._just_recorded(conversation, raw):
            return True
        return self.reconcile(conversation, messages_from_dicts(raw))

    def _just_recorded(self, conversation: Conversation, raw: object) -> bool:
        """Whether an outlet's messages are, one for one by role and id, the branch this service
        last read or recorded for the chat: then it brings nothing to record (what
        :meth:`reconcile` would find), and its messages need not even be normalised."""
        store = self.store_for(conversation)
        if store is None or not isinstance(raw, list):
            return False
        branch = self._recent.get(store, conversation.key)
        if branch is None or len(raw) != len(branch.messages):
            return False
        try:
            for item, stored in zip(raw, branch.messages, strict=True):  # lengths checked above
                if (
                    stored.message_id is None
                    or item["id"] != stored.message_id
                    or item["role"] != stored.role
                ):
                    return False
        except (TypeError, KeyError, IndexError):  # not a message dict: the full path decides
            return False
        return True

    def purge_older_than(self, days: int) -> int:
        """Delete conversations inactive for ``days`` days (0 keeps everything); how many."""
        if days <= 0:
            return 0
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        try:
            removed = self.store.purge(cutoff)
        except StoreError as exc:
            log.warning("could not purge old conversations from %s: %s", self.store.url, exc)
            return 0
        if removed:
            log.info("purged %d conversations inactive for %d days", removed, days)
        return removed

    def close(self) -> None:
        for store in (self.store, self.temporary_store):
            try:
                store.close()
            except StoreError as exc:
                log.warning("closing %s failed: %s", store.url, exc)

    def _read(self, store: SessionStore, conversation: Conversation) -> Branch | None:
        try:
            branch = store.read(conversation.key)
        except StoreError as exc:
            log.warning(
                "session store %s unavailable, forwarding conversation %s without stored history: %s",
                store.url,
                conversation.conversation_id,
                exc,
            )
            return None
        self._recent.remember(store, conversation.key, branch)
        return branch

    @staticmethod
    def _with_ids(new: Sequence[Message], conversation: Conversation) -> list[Message]:
        """Give the turn's own user message the id Open WebUI assigned it (the last user message)."""
        result = list(new)
        if conversation.user_message_id:
            for index in range(len(result) - 1, -1, -1):
                if result[index].role == "user":
                    if result[index].message_id is None:
                        result[index] = replace(
                            result[index], message_id=conversation.user_message_id
                        )
                    break
        return result


class RecentBranches:
    """The branch a service last read or recorded per conversation, least recently used out.

    Bounded to :data:`RECENT_CONVERSATIONS` conversations and :data:`RECENT_CHARACTERS`
    characters of message text; a longer branch is not kept. Each entry remembers its store.
    """

    def __init__(
        self, conversations: int = RECENT_CONVERSATIONS, characters: int = RECENT_CHARACTERS
    ) -> None:
        self._limit = conversations
        self._characters_limit = characters
        self._characters = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[ConversationKey, tuple[SessionStore, Branch, int]] = OrderedDict()

    def get(self, store: SessionStore, key: ConversationKey) -> Branch | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] is not store:
                return None
            self._items.move_to_end(key)
            return item[1]

    def remember(self, store: SessionStore, key: ConversationKey, branch: Branch) -> None:
        size = sum(map(len, map(_CONTENT, branch.messages)))
        with self._lock:
            self._drop(key)
            if size > self._characters_limit:
                return
            self._items[key] = (store, branch, size)
            self._characters += size
            while len(self._items) > self._limit or self._characters > self._characters_limit:
                self._drop(next(iter(self._items)))

    def forget(self, store: SessionStore, key: ConversationKey) -> None:
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] is store:
                self._drop(key)

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: ConversationKey) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._characters -= item[2]
''',
    'helix_pipeline/session_filter.py': r'''"""The history service as an Open WebUI filter, for a Helix reached through Open WebUI's own
OpenAI connection (with ``ENABLE_FORWARD_USER_INFO_HEADERS=true`` carrying the chat id).

``inlet`` attaches the stored history to ``messages`` when the client did not send it; ``outlet``
records the turn. It adds no top-level keys: providers reject unknown arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conversation import read_conversation
from .decorations import strip_decorations
from .errors import ConfigError, HelixPipelineError
from .messages import messages_from_dicts
from .runtime import Reconfigurable, build_history, unusable_valves
from .service import HistoryService, Turn
from .valves import HistoryValves

__all__ = ["SessionFilter"]

log = logging.getLogger(__name__)


class SessionFilter:
    """The runtime behind ``pipelines/helix_session_filter.py``.

    With an unusable valve it passes every body through unchanged and says why in the log: a
    filter has no answer of its own to put a notice in.
    """

    def __init__(
        self, valves: Callable[[], HistoryValves], *, pipelines_dir: Path | None = None
    ) -> None:
        self._pipelines_dir = pipelines_dir
        self._valves = valves
        self._history: Reconfigurable[HistoryValves, HistoryService | ConfigError] = Reconfigurable(
            valves, self._build
        )

    def _build(
        self,
        valves: HistoryValves,
        old_valves: HistoryValves | None,
        old: HistoryService | ConfigError | None,
    ) -> HistoryService | ConfigError:
        previous = old if isinstance(old, HistoryService) else None
        unusable = unusable_valves(valves)
        if unusable is None:
            return build_history(valves, self._pipelines_dir, previous, old_valves)
        if previous is not None:
            previous.close()
        return unusable

    def _current(self) -> HistoryService:
        history = self._history.get()
        if isinstance(history, ConfigError):
            raise ConfigError(history.message, setting=history.setting)
        return history

    def startup(self) -> None:
        """Purge conversations past ``SESSION_TTL_DAYS``; never raises (it would stop the server)."""
        try:
            history = self._current()
            history.purge_older_than(self._valves().SESSION_TTL_DAYS)
        except HelixPipelineError as exc:
            log.warning("starting the session filter without a purge: %s", exc)
        except Exception:  # the boundary: the server's startup must go on
            log.exception("unexpected error while starting the session filter")

    def shutdown(self) -> None:
        history = self._history.get()
        if isinstance(history, HistoryService):
            history.close()

    def inlet(self, body: Any, user: Any) -> Any:
        """Put the stored history in front of what the client sent, when it sent less. Never raises."""
        if not isinstance(body, dict):
            return body
        try:
            self.attach(body, user)
        except HelixPipelineError as exc:
            log.warning("the session filter passed a body on without history: %s", exc)
        except Exception:  # the boundary: an inlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not attach history in the session filter's inlet")
        return body

    def attach(self, body: dict[str, Any], user: Any) -> Turn | None:
        """The inlet's work: replace ``body["messages"]`` when history was attached or trimmed;
        else leave them as they came, but for Helix's progress decorations in its answers.

        The turn tells what was done; ``None`` for a task or with the history switched off.
        Raises :class:`~helix_pipeline.errors.ConfigError` naming an unusable valve.
        """
        history = self._current()
        conversation = read_conversation(body, user)
        if conversation.is_task or not history.enabled:
            return None
        turn = history.prepare(conversation, messages_from_dicts(body.get("messages")))
        if turn.attached or turn.trim:
            body["messages"] = turn.wire_messages()
        else:  # as it came (ids, files), but Helix's answers without their decorations
            _without_decorations(body.get("messages"))
        return turn

    def outlet(self, body: Any, user: Any) -> Any:
        """Record the finished turn with Open WebUI's message ids. Never raises; body unchanged."""
        if not isinstance(body, dict):
            return body
        try:
            self._current().reconcile_outlet(body, user)
        except HelixPipelineError as exc:
            log.warning("the session filter did not record a turn: %s", exc)
        except Exception:  # the boundary: an outlet that raises is an HTTP 500 in Open WebUI
            log.exception("could not record the turn in the session filter's outlet")
        return body


def _without_decorations(messages: object) -> None:
    """Helix's progress decorations out of the assistant messages' text, in place."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, str):
                answer, _ = strip_decorations(content)
                if answer != content:
                    message["content"] = answer
''',
    'helix_pipeline/sse.py': r'''"""Reading an OpenAI-style chat stream (server-sent events) from Helix, byte by byte.

Three layers, each usable alone: :func:`iter_lines` turns raw body chunks into text lines (UTF-8
split anywhere, ``\\n``, ``\\r\\n`` or ``\\r``), :func:`iter_events` turns lines into events (blank
lines and ``:`` comments skipped, multi-line ``data`` joined), and :func:`iter_deltas` turns events
into the content deltas of the answer. It stops at ``data: [DONE]`` without forwarding it, skips
``"role": null`` / ``"content": null`` deltas, logs and skips a chunk that is not JSON, raises
:class:`~helix_pipeline.errors.BackendError` for an error object in the stream, and also accepts a
plain JSON completion sent to a stream request. Helix's status chunk (``[Starte Claude Code...]``),
its ``.`` heartbeats and its ``<!-- STEP: ... -->`` markers are content and pass through unchanged
(:mod:`helix_pipeline.helix_answer` reads them for the person).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BackendError, BackendProtocolError

__all__ = [
    "DONE",
    "ServerSentEvent",
    "completion_content",
    "describe_error",
    "iter_deltas",
    "iter_events",
    "iter_lines",
]

logger = logging.getLogger(__name__)

DONE = "[DONE]"
"""The data of the event that ends an OpenAI-style stream; never forwarded."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_STRAY_CHARS = 1_000_000
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` unless named) and its data."""

    data: str
    event: str = "message"


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines from body chunks, whatever the chunk boundaries; the last line may lack a break.

    Invalid UTF-8 becomes U+FFFD rather than failing the answer.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    after_cr = False
    for chunk in chunks:
        text = decoder.decode(chunk)
        if after_cr and text.startswith("\n"):
            text = text[1:]  # the second half of a CRLF split across two chunks
        if not text:
            continue
        after_cr = text.endswith("\r")
        *lines, buffer = _LINE_BREAK.split(buffer + text)
        yield from lines
    buffer += decoder.decode(b"", final=True)
    if buffer:
        yield buffer


def iter_events(lines: Iterable[str], stray: list[str] | None = None) -> Iterator[ServerSentEvent]:
    """Events from SSE lines, as the HTML standard parses them.

    An event is dispatched at a blank line, and also at the end of the stream (a server that ends
    without the final blank line still delivered its data). Lines that are no SSE field at all
    (such as a JSON body sent instead of a stream) are appended to ``stray`` when it is given.
    """
    data: list[str] = []
    event = ""
    stray_chars = 0
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), event or "message")
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name in ("id", "retry"):
            continue
        elif stray is not None and stray_chars < _MAX_STRAY_CHARS:
            stray.append(line)
            stray_chars += len(line)
    if data:
        yield ServerSentEvent("\n".join(data), event or "message")


def iter_deltas(chunks: Iterable[bytes]) -> Iterator[str]:
    """The content deltas of an OpenAI chat stream, in order, as they arrive.

    Raises :class:`BackendError` for an error object (or an ``error`` event) in the stream, and
    :class:`BackendProtocolError` for a stream that ends without ``[DONE]`` before any content
    arrived. A stream cut short after content arrived simply ends: the caller keeps what came.
    """
    stray: list[str] = []
    seen_event = False
    delivered = False
    for event in iter_events(iter_lines(chunks), stray):
        seen_event = True
        data = event.data.strip()
        if data == DONE:
            return
        if event.event == "error":
            raise BackendError(f"Helix reported an error in its answer: {_error_text(data)}")
        try:
            chunk = json.loads(data)
        except ValueError:
            logger.warning(
                "Skipped a malformed chunk in Helix's stream (%d chars, not JSON): %.80r",
                len(data),
                data,
            )
            continue
        error = describe_error(chunk)
        if error is not None:
            raise BackendError(f"Helix reported an error in its answer: {error}")
        text = completion_content(chunk)
        if text:
            delivered = True
            yield text
    if not seen_event and stray:
        yield from _plain_json_reply("\n".join(stray))
        return
    if not delivered:
        raise BackendProtocolError(
            "Helix answered nothing: its stream ended before any text (Helix does this when an "
            "error stops it before its first chunk). Look at Helix's log for the cause, then "
            "ask again."
        )


def completion_content(payload: object) -> str | None:
    """The text of a stream chunk (``choices[0].delta.content``) or of a whole completion
    (``choices[0].message.content``); ``None`` when there is none (``"content": null``)."""
    if not isinstance(payload, Mapping):
        return None
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    choice: Mapping[str, Any] = choices[0]
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, Mapping):
            content = part.get("content")
            return content if isinstance(content, str) else None
    text = choice.get("text")
    return text if isinstance(text, str) else None


def describe_error(payload: object) -> str | None:
    """A short readable summary of an error body, or ``None`` if ``payload`` is no error.

    Understands FastAPI (``{"detail": "..."}`` and the 422 ``{"detail": [...]}`` list), Helix's
    flat 500 (``{"error", "type", "message"}``) and OpenAI (``{"error": {"message"}}``).
    """
    if not isinstance(payload, Mapping):
        return None
    detail = payload.get("detail")
    if isinstance(detail, str) and detail.strip():
        return _cut(detail)
    if isinstance(detail, list) and detail:
        return _validation_summary(detail)
    error = payload.get("error")
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("detail") or error.get("type")
        return _cut(str(message)) if message else _cut(json.dumps(error))
    if isinstance(error, str) and error.strip():
        message = payload.get("message")
        kind = payload.get("type")
        if isinstance(message, str) and message.strip():
            prefix = f"{kind}: " if isinstance(kind, str) and kind and kind not in message else ""
            return _cut(f"{prefix}{message}")
        return _cut(error)
    return None


def _validation_summary(items: list[Any], shown: int = 3) -> str:
    """``messages.0.content: Input should be a valid string`` for each of the first few items."""
    parts: list[str] = []
    for item in items[:shown]:
        if not isinstance(item, Mapping):
            parts.append(str(item))
            continue
        location = item.get("loc")
        path = (
            ".".join(str(p) for p in location if p != "body") if isinstance(location, list) else ""
        )
        message = str(item.get("msg") or item.get("type") or "invalid")
        parts.append(f"{path}: {message}" if path else message)
    if len(items) > shown:
        parts.append(f"and {len(items) - shown} more")
    return _cut("; ".join(parts))


def _plain_json_reply(body: str) -> Iterator[str]:
    """A whole JSON completion (or error) sent to a stream request: its content, once."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise BackendProtocolError(
            "Helix answered a stream request with something that is neither an event stream "
            f"nor JSON: {_cut(' '.join(body.split()), 200)!r}; check that HELIX_BASE_URL points "
            "at Helix."
        ) from None
    error = describe_error(payload)
    if error is not None:
        raise BackendError(f"Helix reported an error: {error}")
    text = completion_content(payload)
    if text is None:
        raise BackendProtocolError("Helix answered a stream request with JSON that holds no answer")
    if text:
        yield text


def _error_text(data: str) -> str:
    try:
        payload = json.loads(data)
    except ValueError:
        return _cut(data)
    return describe_error(payload) or _cut(data)


def _cut(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
''',
    'helix_pipeline/stores/__init__.py': r'''"""Session stores: one protocol, one module per engine, opened from a URL.

==============================  ==========================================  =========================
URL                             engine                                      extra
==============================  ==========================================  =========================
``memory://``                   in-process dict (tests, temporary chats)    none
``sqlite:////abs/path.db``      embedded SQLite file (the default)          none
``redis://host:6379/0``         Redis (``rediss://`` for TLS)               ``helix-pipeline[redis]``
``postgresql://user@host/db``   PostgreSQL                                  ``helix-pipeline[postgres]``
==============================  ==========================================  =========================

``sqlite:///rel.db`` is relative to the working folder, ``?timeout=S`` its busy timeout. Redis
takes ``?ttl_days=``, ``?prefix=`` and ``?cluster=true``; every engine's errors name the URL with
its password as ``***``.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..urls import authority_problem, redact_url, url_scheme
from .base import Branch, ConversationSummary, RecordResult, SessionStore
from .engine_errors import url_error
from .memory import MemoryStore

__all__ = [
    "Branch",
    "ConversationSummary",
    "MemoryStore",
    "RecordResult",
    "SessionStore",
    "missing_store",
    "open_store",
    "redact_url",
    "url_error",
]

SUPPORTED_SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgresql", "postgres")


def open_store(url: str, *, ttl_days: float | None = None) -> SessionStore:
    """Open the store a URL names. Engines other than memory and SQLite are imported lazily.

    ``ttl_days`` (``SESSION_TTL_DAYS``) sets how long Redis keeps keys unless the URL says
    ``?ttl_days=``; the other engines purge by :meth:`SessionStore.purge` instead.
    """
    scheme = url_scheme(url)
    problem = authority_problem(url) if scheme not in ("memory", "sqlite") else None
    if problem is not None:  # e.g. an unclosed [ of an IPv6 address, which urlsplit refuses
        raise ConfigError(
            f"Invalid session store URL {redact_url(url)!r}: it {problem}. Set SESSION_STORE_URL "
            "to a URL such as sqlite:////abs/path.db or redis://host:6379/0",
            setting="SESSION_STORE_URL",
        )
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        return RedisStore.from_url(url, ttl_days=ttl_days)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise ConfigError(
        f"Unsupported session store URL {redact_url(url)!r}: SESSION_STORE_URL must start with "
        + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES),
        setting="SESSION_STORE_URL",
    )


def missing_store(url: str) -> str | None:
    """Why ``url`` names no existing store, or ``None`` when it does (or the engine cannot tell).

    Only an SQLite file can be absent: a command that reads (``sessions list``, ``doctor``) asks
    this first, so that it never creates the file or its folder by opening it. Redis and
    PostgreSQL live on a server, whose own errors say when it is missing. Raises
    :class:`ConfigError` for a URL that cannot name a store at all.
    """
    if url_scheme(url) != "sqlite" or authority_problem(url) is not None:
        return None  # a server's own errors say it is missing; open_store, what is wrong
    from .sqlite import sqlite_path

    path, _ = sqlite_path(url)
    if path.is_file():
        return None
    if path.exists():
        return f"{path} is not a file, so it cannot be an SQLite session store"
    if path.parent.is_dir():
        return f"no session store at {path}: the file does not exist"
    if path.parent.exists():
        return f"no session store at {path}: {path.parent} is a file, not a folder"
    return f"no session store at {path}: neither the file nor its folder {path.parent} exists"
''',
    'helix_pipeline/stores/base.py': r'''"""The session store protocol, and the branch rules every engine shares.

A conversation is a list of branches; the newest branch is the active one. Branches are
self-contained (a new branch copies the prefix it shares with its parent), so loading the active
branch is one indexed read. Nothing is ever updated in place except a message's Open WebUI id, and
nothing is deleted except by :meth:`SessionStore.delete` or :meth:`SessionStore.purge`.

Every change gives the conversation a new *version*. :meth:`SessionStore.read` returns the active
branch with its version; a writer that hands that :class:`Branch` back to
:meth:`SessionStore.record` as ``base`` has its turn appended without the branch being read
again, unless another writer moved it since: then the record reads the branch and plans as usual
(so a turn prepared before another worker's edit forks instead of joining the edit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..conversation import ConversationKey
from ..messages import Message

__all__ = [
    "Branch",
    "ConversationSummary",
    "RecordPlan",
    "RecordResult",
    "SessionStore",
    "applied",
    "plan_record",
]


@dataclass(frozen=True, slots=True)
class Branch:
    """A conversation's active branch as one read (or write) left it, and its version.

    ``version`` is opaque: equal versions of one conversation mean the same branch, messages and
    ids included. ``None`` means there was no conversation.
    """

    messages: tuple[Message, ...] = ()
    version: object = None

    def unchanged_by(self, messages: Sequence[Message], *, after: int | None = None) -> bool:
        """Whether recording ``messages`` after ``after`` onto this branch would store nothing."""
        if after == 0 and _same_ids(self.messages, messages):
            return True  # what an outlet resends once its turn is recorded: decided by ids alone
        return not plan_record(self.messages, messages, after).changes_anything


def _same_ids(stored: Sequence[Message], incoming: Sequence[Message]) -> bool:
    """Whether both hold the same messages by role and id, every one with an id."""
    return len(stored) == len(incoming) and all(
        s.message_id is not None and s.message_id == i.message_id and s.role == i.role
        for s, i in zip(stored, incoming, strict=True)
    )


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of a user's conversation list."""

    conversation_id: str
    message_count: int
    branch_count: int
    last_activity: datetime


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What :meth:`SessionStore.record` did: messages appended, ids attached, whether it forked;
    and the active branch it left (not compared: it carries the store's own times and version)."""

    branch: int
    appended: int
    ids_attached: int
    forked: bool
    active: Branch = field(default=Branch(), compare=False, repr=False)


@runtime_checkable
class SessionStore(Protocol):
    """Where conversations live. Every engine (memory, SQLite, Redis, PostgreSQL) behaves the same.

    Methods raise :class:`~helix_pipeline.errors.StoreError` and nothing else on failure.
    """

    url: str
    """The store's URL without any password, for logs and messages."""

    def load(self, key: ConversationKey) -> list[Message]:
        """The active branch of a conversation, oldest first; ``[]`` if there is none."""
        ...

    def read(self, key: ConversationKey) -> Branch:
        """The active branch with its version, in one read; an empty ``Branch()`` if none."""
        ...

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        """Record ``messages`` as following the first ``after`` messages of the active branch.

        ``after=None`` appends to the end. Messages that match what is already stored at their place
        (see :meth:`Message.same_as`) are kept once, gaining the Open WebUI id if they had none; a
        message whose id is already in the branch is not stored twice. The first message that
        differs starts a new branch (a copy of the common prefix plus the rest), which becomes
        active; the old branch stays readable. One atomic transaction.

        A stored message keeps the ``created_at`` it was given (an import restores the original
        times); one without gets the current time. The conversation's last activity becomes the
        latest of its previous last activity and the times of the messages stored or given an id,
        so an ordinary turn makes it now, and an imported conversation keeps its own age for
        :meth:`conversations` and :meth:`purge`.

        ``base`` is the branch as the caller read it: while the conversation is still at its
        version, the store plans against it instead of reading the branch again. The result's
        ``active`` is the branch as this call left it, with its new version.
        """
        ...

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        """Every branch of a conversation, oldest first; the last one is the active branch."""
        ...

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        """A user's conversations, most recently active first."""
        ...

    def users(self) -> list[str]:
        """Every user id with at least one stored conversation."""
        ...

    def delete(self, key: ConversationKey) -> bool:
        """Delete a conversation with all its branches; whether there was one."""
        ...

    def purge(self, before: datetime) -> int:
        """Delete every conversation whose last activity is older than ``before``; how many."""
        ...

    def close(self) -> None:
        """Release connections and files. The store is not used again."""
        ...


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """How to apply a :meth:`SessionStore.record` call to an active branch.

    ``fork_at`` is ``None`` to append ``new`` to the active branch, or the length of the prefix a
    new branch copies before ``new``. ``attach`` lists ``(position, message_id)`` pairs of stored
    messages that gain an Open WebUI id, and ``attached_at`` the ``created_at`` of the incoming
    message that brought each id.
    """

    new: tuple[Message, ...]
    fork_at: int | None
    attach: tuple[tuple[int, str], ...]
    attached_at: tuple[float | None, ...] = ()

    @property
    def changes_anything(self) -> bool:
        return bool(self.new) or bool(self.attach) or self.fork_at is not None

    def stamped(self, now: float) -> tuple[Message, ...]:
        """The new messages as stored: each keeps its ``created_at``, or gets ``now``."""
        return tuple(
            m if m.created_at is not None else replace(m, created_at=now) for m in self.new
        )

    def last_activity(self, now: float, previous: float | None = None) -> float:
        """The conversation's last activity once this plan is applied at ``now``.

        The latest of ``previous`` and the times of the messages stored or given an id (each its
        own ``created_at``, or ``now`` without one).
        """
        times = [m.created_at for m in self.new] + list(self.attached_at)
        latest = [now if t is None else t for t in times] or [now]
        return max(latest) if previous is None else max(previous, *latest)


def plan_record(
    active: Sequence[Message], messages: Sequence[Message], after: int | None
) -> RecordPlan:
    """Decide, engine-independently, what recording ``messages`` after ``after`` means."""
    stored_count, count = len(active), len(messages)
    start = stored_count if after is None else max(0, min(after, stored_count))
    attach: list[tuple[int, str]] = []
    attached_at: list[float | None] = []
    position = start
    index = 0
    # Walk the stored messages at the same places while they match (the very objects, when the
    # caller hands back the branch it read: nothing to compare then, and no id to attach).
    while index < count and position < stored_count:
        incoming, stored = messages[index], active[position]
        if stored is not incoming:
            if not stored.same_as(incoming):
                break
            if incoming.message_id and not stored.message_id:
                attach.append((position, incoming.message_id))
                attached_at.append(incoming.created_at)
        position += 1
        index += 1
    known_ids = {m.message_id for m in active if m.message_id} if index < count else set()
    rest = [m for m in messages[index:] if not (m.message_id and m.message_id in known_ids)]
    if not rest:
        return RecordPlan(
            new=(), fork_at=None, attach=tuple(attach), attached_at=tuple(attached_at)
        )
    fork_at = position if position < len(active) else None
    return RecordPlan(
        new=tuple(rest), fork_at=fork_at, attach=tuple(attach), attached_at=tuple(attached_at)
    )


def applied(
    active: Sequence[Message], plan: RecordPlan, stamped: Sequence[Message]
) -> tuple[Message, ...]:
    """The active branch once ``plan`` is applied to ``active``, its new messages ``stamped``."""
    messages = list(active)
    for position, message_id in plan.attach:
        messages[position] = messages[position].with_id(message_id)
    if plan.fork_at is not None:
        del messages[plan.fork_at :]
    return (*messages, *stamped)
''',
    'helix_pipeline/stores/engine_errors.py': r'''"""What a store engine says when it cannot start: a URL it cannot use, a driver not installed.

Every engine module imports these from here (not from the ``stores`` package, which imports the
engines), so the package has no import cycle.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..urls import redact_url

__all__ = ["missing_driver", "url_error"]


def url_error(engine: str, url: str, problem: str, fix: str) -> ConfigError:
    """The error for a store URL that cannot work: what is wrong with it, and the form to use."""
    return ConfigError(
        f"Invalid {engine} session store URL {redact_url(url)!r}: {problem}. Set "
        f"SESSION_STORE_URL to {fix}",
        setting="SESSION_STORE_URL",
    )


def missing_driver(engine: str, packages: str, extra: str) -> ConfigError:
    """The error for an engine whose driver is not installed, with the fix for every host.

    ``pip install`` is no advice inside a Pipelines server or Open WebUI: each installs what the
    ``requirements:`` line of a file's frontmatter names, which ``bundle --with`` writes.
    """
    return ConfigError(
        f"The {engine} session store needs {packages}: pip install helix-pipeline[{extra}], or "
        f"in a Pipelines server or Open WebUI load the files helix-pipeline bundle --with {extra} "
        "writes, whose requirements: line installs them",
        setting="SESSION_STORE_URL",
    )
''',
    'helix_pipeline/stores/lazy.py': r'''"""A store that opens its engine on first use, and rests it after finding it unreachable.

The Pipelines server instantiates pipelines at load time, where an exception moves the file to
``failed/``. Opening the real engine lazily keeps loading free of I/O, and lets a store that was
down at startup (a read-only folder, a Redis not yet up) recover by itself.

It is also the one circuit breaker between the pipelines and their store: after a failed open, or
a read that found the engine unreachable, every call fails at once with that error for
``retry_s`` seconds, so that a down engine costs one timeout, not one per store call of every turn.
(A failed write does not rest it: a full disk fails writes that reads survive.) Open WebUI resends
the whole chat, so turns answered meanwhile are recorded by the first turn after the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..messages import Message
from .base import Branch, ConversationSummary, RecordResult, SessionStore

__all__ = ["RETRY_OPEN_S", "LazyStore"]

RETRY_OPEN_S = 5.0
"""Seconds a store found unreachable is left alone before it is asked again (the default
``retry_s``)."""

T = TypeVar("T")


class LazyStore:
    """Opens ``open_engine()`` when first needed; rests ``retry_s`` after finding it unreachable."""

    def __init__(
        self, url: str, open_engine: Callable[[], SessionStore], *, retry_s: float | None = None
    ) -> None:
        self.url = url
        self._open_engine = open_engine
        self._retry_s = RETRY_OPEN_S if retry_s is None else retry_s
        self._engine: SessionStore | None = None
        self._failure: StoreUnavailable | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def engine(self) -> SessionStore:
        """The open engine, opening it now if needed; raises the failure that rests it."""
        failure = self._failure
        if failure is not None and time.monotonic() - self._failed_at < self._retry_s:
            raise failure
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is not None:
                return self._engine
            try:
                self._engine = self._open_engine()
            except (StoreError, ConfigError) as exc:
                failure = StoreUnavailable(str(exc), store=self.url)
                self._rest(failure)
                raise failure from exc
            self._failure = None
            return self._engine

    def _reading(self, read: Callable[[SessionStore], T]) -> T:
        """Run a read on the engine; an unreachable engine rests."""
        try:
            return read(self.engine())
        except StoreUnavailable as exc:
            if exc is not self._failure:
                self._rest(exc)
            raise

    def _rest(self, failure: StoreUnavailable) -> None:
        self._failure, self._failed_at = failure, time.monotonic()

    def load(self, key: ConversationKey) -> list[Message]:
        return self._reading(lambda engine: engine.load(key))

    def read(self, key: ConversationKey) -> Branch:
        return self._reading(lambda engine: engine.read(key))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        return self.engine().record(key, messages, after=after, base=base)

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        return self._reading(lambda engine: engine.branches(key))

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        return self._reading(lambda engine: engine.conversations(user_id))

    def users(self) -> list[str]:
        return self._reading(lambda engine: engine.users())

    def delete(self, key: ConversationKey) -> bool:
        return self.engine().delete(key)

    def purge(self, before: datetime) -> int:
        return self.engine().purge(before)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
''',
    'helix_pipeline/stores/memory.py': r'''"""The in-memory store: the reference implementation of the protocol, and the test fake."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from ..conversation import ConversationKey
from ..errors import ConfigError
from ..messages import Message
from .base import Branch, ConversationSummary, RecordResult, plan_record

__all__ = ["MemoryStore"]


class MemoryStore:
    """Conversations in a dict, guarded by one lock. Lost when the process ends.

    ``max_conversations`` bounds the store: beyond it, the least recently used conversation (the
    one loaded or recorded longest ago) is forgotten. ``None`` keeps every conversation.
    """

    def __init__(self, url: str = "memory://", *, max_conversations: int | None = None) -> None:
        if max_conversations is not None and max_conversations < 1:
            raise ConfigError(
                f"max_conversations must be 1 or more (or None to keep every conversation), "
                f"got {max_conversations}",
                setting="max_conversations",
            )
        self.url = url
        self.max_conversations = max_conversations
        self._lock = threading.Lock()
        # Insertion order is recency order when bounded: the first key is the least recently used.
        self._branches: dict[ConversationKey, list[list[Message]]] = {}
        self._touched: dict[ConversationKey, float] = {}
        self._versions: dict[ConversationKey, int] = {}
        self._changes = itertools.count(1)
        """Versions: one counter for the whole store, so a conversation deleted and recorded
        again never repeats one."""

    def load(self, key: ConversationKey) -> list[Message]:
        return list(self.read(key).messages)

    def read(self, key: ConversationKey) -> Branch:
        with self._lock:
            branches = self._branches.get(key)
            if not branches:
                return Branch()
            self._used(key)
            return Branch(tuple(branches[-1]), self._versions[key])

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        """Record under the store's lock; ``base`` changes nothing here (reading costs nothing)."""
        now = time.time()
        with self._lock:
            branches = self._branches.setdefault(key, [[]])
            self._used(key)
            active = branches[-1]
            plan = plan_record(active, messages, after)
            for position, message_id in plan.attach:
                active[position] = active[position].with_id(message_id)
            stamped = plan.stamped(now)
            if plan.fork_at is not None:
                branches.append([*active[: plan.fork_at], *stamped])
            else:
                active.extend(stamped)
            if plan.changes_anything:
                self._touched[key] = plan.last_activity(now, self._touched.get(key))
                self._versions[key] = next(self._changes)
                self._forget_least_recently_used()
            elif not active:
                del self._branches[key]
            kept = key in self._branches
            return RecordResult(
                branch=len(branches) - 1 if kept else 0,
                appended=len(stamped),
                ids_attached=len(plan.attach),
                forked=plan.fork_at is not None,
                active=Branch(tuple(branches[-1]), self._versions[key]) if kept else Branch(),
            )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with self._lock:
            return [list(branch) for branch in self._branches.get(key, [])]

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._lock:
            rows = [
                ConversationSummary(
                    conversation_id=key.conversation_id,
                    message_count=len(branches[-1]),
                    branch_count=len(branches),
                    last_activity=datetime.fromtimestamp(self._touched[key], timezone.utc),
                )
                for key, branches in self._branches.items()
                if key.user_id == user_id
            ]
        return sorted(rows, key=lambda row: row.last_activity, reverse=True)

    def users(self) -> list[str]:
        with self._lock:
            return sorted({key.user_id for key in self._branches})

    def delete(self, key: ConversationKey) -> bool:
        with self._lock:
            self._touched.pop(key, None)
            self._versions.pop(key, None)
            return self._branches.pop(key, None) is not None

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        with self._lock:
            old = [key for key, touched in self._touched.items() if touched < cutoff]
            for key in old:
                del self._branches[key]
                del self._touched[key]
                del self._versions[key]
            return len(old)

    def _used(self, key: ConversationKey) -> None:
        """Make ``key`` the most recently used conversation (the last in the dict)."""
        if self.max_conversations is not None:
            self._branches[key] = self._branches.pop(key)

    def _forget_least_recently_used(self) -> None:
        if self.max_conversations is None:
            return
        while len(self._branches) > self.max_conversations:
            oldest = next(iter(self._branches))
            del self._branches[oldest]
            self._touched.pop(oldest, None)
            self._versions.pop(oldest, None)

    def close(self) -> None:
        with self._lock:
            self._branches.clear()
            self._touched.clear()
            self._versions.clear()
''',
    'helix_pipeline/stores/migrations.py': r'''"""Schema migrations of the SQL stores: named functions, each applied once, in order, on open.

A migration is a function ``mNNN_what_it_does(db)`` appended to its engine's list; its name is
recorded in the engine's migrations table in the same transaction that applies it, under a lock
that makes processes opening one database at once apply each migration exactly once. So a
migration is either fully applied and recorded or not at all. Never edit a migration that has
shipped: add a new one. One runner, :func:`migrate`, serves both engines: SQLite's migrations
are here (:data:`SQLITE`), PostgreSQL's in :mod:`~helix_pipeline.stores.postgres_migrations`.

Schema (version ``m003``), table names ``conversations``/``messages`` in SQLite and
``helix_conversations``/``helix_messages`` in PostgreSQL:

- conversations: one row per (user id, conversation id) with the active branch number, the
  message count of that branch, the last activity (Unix seconds) and a revision that every change
  moves on (``m003``): listing and purging never touch the messages, and a writer tells from the
  row alone whether the branch it read is still the active one. PostgreSQL finds a row by ``key_hash``
  (SHA-256 of both ids, unique) and lists by ``user_hash``; ids are UTF-8 ``bytea`` there.
- messages: one row per message of a branch; ``(conversation, branch, position)`` is unique and
  indexed, so loading the active branch is one index range read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["SQLITE", "Migration", "Schema", "migrate"]

Migration = Callable[[Any], None]
"""A schema change: ``mNNN_what_it_does(db)``, run inside the migration transaction."""


@dataclass(frozen=True)
class Schema:
    """One engine's migrations, and how it records and serialises them."""

    migrations: tuple[Migration, ...]
    table_exists: str
    create_table: str
    insert: str
    insert_params: Callable[[str], tuple[Any, ...]]
    exclusive: Callable[[Any], AbstractContextManager[None]]
    table: str

    def applied(self, db: Any) -> set[str]:
        """The names recorded in the migrations table (empty for a new database)."""
        if db.execute(self.table_exists, (self.table,)).fetchone()[0] is None:
            return set()
        return {name for (name,) in db.execute(f"SELECT name FROM {self.table}")}


def migrate(db: Any, schema: Schema, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded; the names applied now (``[]`` when up to date).

    ``db`` must be in autocommit mode. ``migrations`` defaults to the engine's own list.
    """
    wanted = schema.migrations if migrations is None else tuple(migrations)
    if {migration.__name__ for migration in wanted} <= schema.applied(db):
        return []
    applied: list[str] = []
    with schema.exclusive(db):
        db.execute(schema.create_table)
        done = schema.applied(db)
        for migration in wanted:
            if migration.__name__ in done:
                continue
            migration(db)
            db.execute(schema.insert, schema.insert_params(migration.__name__))
            applied.append(migration.__name__)
    return applied


# -- SQLite ----------------------------------------------------------------------------------


def m001_create_conversations(db: Any) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            active_branch INTEGER NOT NULL,
            message_count INTEGER NOT NULL,
            last_activity REAL NOT NULL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX conversations_by_key ON conversations (user_id, conversation_id)"
    )
    db.execute("CREATE INDEX conversations_by_activity ON conversations (last_activity)")


def m002_create_messages(db: Any) -> None:
    db.execute(
        """
        CREATE TABLE messages (
            conversation INTEGER NOT NULL REFERENCES conversations (id),
            branch INTEGER NOT NULL,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            message_id TEXT,
            partial INTEGER NOT NULL,
            created_at REAL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX messages_by_branch ON messages (conversation, branch, position)"
    )


def m003_add_revision(db: Any) -> None:
    db.execute("ALTER TABLE conversations ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")


@contextmanager
def _sqlite_exclusive(db: Any) -> Iterator[None]:
    """``BEGIN IMMEDIATE``: the file's write lock, held until the migrations are committed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


SQLITE = Schema(
    migrations=(m001_create_conversations, m002_create_messages, m003_add_revision),
    table="schema_migrations",
    table_exists="SELECT max(name) FROM sqlite_master WHERE type = 'table' AND name = ?",
    create_table=(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    ),
    insert="INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
    insert_params=lambda name: (name, time.time()),
    exclusive=_sqlite_exclusive,
)
''',
    'helix_pipeline/stores/postgres.py': r'''"""The PostgreSQL store (``postgresql://``; needs ``pip install helix-pipeline[postgres]``).

Connections come from a psycopg ``ConnectionPool`` (autocommit, 3 s connect timeout); a connection
whose socket shows the server went away is tested before use and replaced, so the store recovers
by itself when the server comes back. Every ``record`` is one transaction that locks the
conversation's row (``SELECT ... FOR UPDATE``), so concurrent writers of one conversation
serialise, even across processes and hosts (waiting at most ``lock_timeout``, 10 s, for each
other); loading the active branch is one indexed query.
Every psycopg error is translated into a :class:`~helix_pipeline.errors.StoreError` in
:meth:`PostgresStore._translated`, and nowhere else.

Ids, texts and message ids are stored as UTF-8 ``bytea`` (``surrogatepass``): PostgreSQL ``text``
cannot hold NUL characters, and ids may hold anything. Conversations are found by a SHA-256 digest
of (user id, conversation id), so ids of any length fit the unique index. The schema comes from
the named migrations of :mod:`~helix_pipeline.stores.postgres_migrations`, applied on open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..urls import hide_secret, redact_url
from .engine_errors import missing_driver, url_error
from .migrations import migrate
from .postgres_migrations import POSTGRES
from .sql import Dialect, Queries, SQLStore

__all__ = ["LOAD_ACTIVE_BRANCH", "PostgresStore"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 3.0
LOCK_TIMEOUT_S = 10


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _key_params(key: ConversationKey) -> tuple[bytes, bytes, bytes]:
    pair = json.dumps([key.user_id, key.conversation_id], ensure_ascii=False)
    return _digest(_bytes(pair)), _bytes(key.user_id), _bytes(key.conversation_id)


DIALECT = Dialect(
    name="PostgreSQL",
    conversations="helix_conversations",
    messages="helix_messages",
    placeholder="%s",
    key_match="c.key_hash = ? AND c.user_id = ? AND c.conversation_id = ?",
    user_match="user_hash = ? AND user_id = ?",
    key_params=_key_params,
    user_params=lambda user_id: (_digest(_bytes(user_id)), _bytes(user_id)),
    text_param=_bytes,
    lock_row=" FOR UPDATE",
    cascades=True,
)
_QUERIES = Queries(DIALECT)

LOAD_ACTIVE_BRANCH = _QUERIES.load_active
"""The one query :meth:`PostgresStore.load` runs: two unique-index lookups."""


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise missing_driver("PostgreSQL", "psycopg and psycopg_pool", "postgres") from exc
    return psycopg, psycopg_pool


class PostgresStore(SQLStore):
    """Conversations in PostgreSQL (``postgresql://user[:password]@host:5432/database``)."""

    dialect = DIALECT
    queries = _QUERIES

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 8,
        connect_timeout: int = CONNECT_TIMEOUT_S,
        pool_timeout: float = POOL_TIMEOUT_S,
        lock_timeout: float = LOCK_TIMEOUT_S,
    ) -> None:
        """Connect, apply pending migrations, and start the pool.

        Raises :class:`ConfigError` when psycopg is missing, :class:`StoreUnavailable` when the
        server cannot be reached or refuses the login.
        """
        if urlsplit(url).scheme.lower() not in ("postgresql", "postgres"):
            raise _url_error(url, "it must start with postgresql://")
        psycopg, pool_module = _import_driver()
        self.url = redact_url(url)
        self._password = urlsplit(url).password
        self._psycopg = psycopg
        self._pool_timeout_error = pool_module.PoolTimeout
        self._lock_timeout_ms = max(1, round(lock_timeout * 1000))
        connect_options: dict[str, Any] = {"autocommit": True}
        with self._translated("opening the database"):
            try:
                if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
                    connect_options["connect_timeout"] = connect_timeout
                first = psycopg.connect(url, **connect_options)
            except psycopg.ProgrammingError as exc:
                raise _url_error(url, "PostgreSQL cannot read it") from exc
            with first:
                applied = migrate(first, POSTGRES)
            self._pool: Any = pool_module.ConnectionPool(
                url,
                kwargs=connect_options,
                min_size=1,
                max_size=max_connections,
                timeout=pool_timeout,
                reconnect_timeout=pool_timeout,
                check=_check_if_readable,
                configure=self._configure,
                name="helix-session-store",
                open=False,
            )
            self._pool.open(wait=False)
        if applied:
            logger.info("Session store %s: applied migrations %s", self.url, ", ".join(applied))

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Open ``postgresql://...``; libpq reads the URL, its query parameters included.

        ``connect_timeout`` defaults to 3 s unless the URL sets it.
        """
        return cls(url)

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def _create(self, db: Any, key: ConversationKey, now: float, revision: int) -> int | None:
        key_hash, user_id, conversation_id = _key_params(key)
        created = db.execute(
            "INSERT INTO helix_conversations (key_hash, user_hash, user_id, conversation_id, "
            "active_branch, message_count, last_activity, revision) "
            "VALUES (%s, %s, %s, %s, 0, 0, %s, %s) ON CONFLICT (key_hash) DO NOTHING RETURNING id",
            (key_hash, _digest(user_id), user_id, conversation_id, now, revision),
        ).fetchone()
        return None if created is None else int(created[0])

    @contextmanager
    def _connection(self, doing: str, key: ConversationKey | None = None) -> Iterator[Any]:
        with self._translated(doing, key), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _transaction(self, doing: str, key: ConversationKey | None = None) -> Iterator[Any]:
        with self._translated(doing, key), self._pool.connection() as conn, conn.transaction():
            yield conn

    def _configure(self, conn: Any) -> None:
        """Settings of every pooled connection: a writer waits at most ``lock_timeout`` for
        another's lock on a conversation, so a stuck transaction cannot hang chat turns forever.
        """
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")

    @contextmanager
    def _translated(self, doing: str, key: ConversationKey | None = None) -> Iterator[None]:
        """The one place that turns psycopg and pool errors into :class:`StoreError`."""
        try:
            yield
        except self._psycopg.Error as exc:
            detail = hide_secret(" ".join(str(exc).split()), self._password)
            # A failed login has no SQLSTATE in psycopg: libpq's message tells the cause.
            sqlstate = getattr(exc, "sqlstate", None) or ""
            conversation_id = key.conversation_id if key is not None else None
            where = f"The PostgreSQL session store {self.url} failed while {doing} ({detail})"
            if isinstance(exc, self._pool_timeout_error):
                hint = (
                    "no connection could be opened or freed in time; check that PostgreSQL is "
                    "running and reachable at the host and port of SESSION_STORE_URL (or, under "
                    "heavy load, that it accepts enough connections)"
                )
            elif sqlstate.startswith("28") or any(
                words in detail for words in ("authentication failed", "no password supplied")
            ):
                hint = "check the user name and password in SESSION_STORE_URL"
            elif sqlstate == "3D000" or ("database" in detail and "does not exist" in detail):
                hint = "create the database, or name an existing one in SESSION_STORE_URL"
            elif sqlstate == "55P03":
                raise StoreError(
                    f"{where}: another writer held this conversation for over "
                    f"{self._lock_timeout_ms / 1000:g} s; retry, and look for a stuck transaction "
                    "in pg_stat_activity",
                    store=self.url,
                    conversation_id=conversation_id,
                ) from exc
            elif isinstance(exc, self._psycopg.OperationalError) and (
                not sqlstate or sqlstate.startswith(("08", "57P"))
            ):
                hint = (
                    "check that PostgreSQL is running and reachable at the host and port of "
                    "SESSION_STORE_URL"
                )
            else:
                raise StoreError(where, store=self.url, conversation_id=conversation_id) from exc
            raise StoreUnavailable(
                f"{where}: {hint}", store=self.url, conversation_id=conversation_id
            ) from exc


def _check_if_readable(conn: Any) -> None:
    """Ping a pooled connection before use only if its socket has something to read.

    An idle connection has nothing to read unless the server closed it (a restart sends a
    termination notice): then the ping fails and the pool replaces the connection.
    """
    try:
        readable = bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        readable = True
    if readable:
        conn.execute("")


def _url_error(url: str, problem: str) -> ConfigError:
    return url_error("PostgreSQL", url, problem, "postgresql://user[:password]@host:5432/database")
''',
    'helix_pipeline/stores/postgres_migrations.py': r'''"""Schema migrations of the PostgreSQL store, run by :func:`~helix_pipeline.stores.migrations.migrate`.

Named functions, applied once each, in order, recorded in ``helix_schema_migrations``; the schema
is described in :mod:`~helix_pipeline.stores.migrations`. Never edit a shipped migration: add a
new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .migrations import Schema

__all__ = ["POSTGRES"]

_MIGRATION_LOCK = 0x48454C4958  # pg_advisory_xact_lock key: "HELIX"


def m001_create_conversations(conn: Any) -> None:
    conn.execute(
        """
        CREATE TABLE helix_conversations (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            key_hash bytea NOT NULL,
            user_hash bytea NOT NULL,
            user_id bytea NOT NULL,
            conversation_id bytea NOT NULL,
            active_branch integer NOT NULL,
            message_count integer NOT NULL,
            last_activity double precision NOT NULL
        )
        """
    )
    conn.execute("CREATE UNIQUE INDEX helix_conversations_by_key ON helix_conversations (key_hash)")
    conn.execute(
        "CREATE INDEX helix_conversations_by_user ON helix_conversations (user_hash, last_activity)"
    )
    conn.execute(
        "CREATE INDEX helix_conversations_by_activity ON helix_conversations (last_activity)"
    )


def m002_create_messages(conn: Any) -> None:
    conn.execute(
        """
        CREATE TABLE helix_messages (
            conversation bigint NOT NULL
                REFERENCES helix_conversations (id) ON DELETE CASCADE,
            branch integer NOT NULL,
            position integer NOT NULL,
            role text NOT NULL,
            content bytea NOT NULL,
            message_id bytea,
            partial boolean NOT NULL,
            created_at double precision,
            PRIMARY KEY (conversation, branch, position)
        )
        """
    )


def m003_add_revision(conn: Any) -> None:
    conn.execute("ALTER TABLE helix_conversations ADD COLUMN revision bigint NOT NULL DEFAULT 0")


@contextmanager
def _postgres_exclusive(conn: Any) -> Iterator[None]:
    """A transaction holding an advisory lock, so concurrent openers migrate one at a time."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        yield


POSTGRES = Schema(
    migrations=(m001_create_conversations, m002_create_messages, m003_add_revision),
    table="helix_schema_migrations",
    table_exists="SELECT to_regclass(%s)",
    create_table=(
        "CREATE TABLE IF NOT EXISTS helix_schema_migrations ("
        "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ),
    insert="INSERT INTO helix_schema_migrations (name) VALUES (%s)",
    insert_params=lambda name: (name,),
    exclusive=_postgres_exclusive,
)
''',
    'helix_pipeline/stores/redis.py': r'''"""The Redis store (``redis://`` or ``rediss://``; needs ``pip install helix-pipeline[redis]``).

Keys are laid out in :mod:`.redis_keys`; all of one conversation share a hash tag, so a turn is
one ``WATCH``/``MULTI`` transaction (retried on conflict) that also works on Redis Cluster.
Reading the active branch with its version is one ``MULTI`` (``HMGET``, ``LRANGE``); a record
given that branch (``base``) checks the version in the meta hash and appends without reading the
list again. The index keys change through Lua scripts after the conversation's own transaction:
it may briefly list a conversation that is gone (skipped and cleaned up when read), and a process
killed between the two leaves a conversation unlisted until its next turn or expiry. Keys expire
``ttl_days`` after the last change (``0`` keeps them). Needs Redis 6.2 or newer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ..conversation import ConversationKey
from ..errors import StoreError
from ..messages import Message
from ..urls import redact_url
from .base import Branch, ConversationSummary, RecordPlan, RecordResult, applied, plan_record
from .redis_keys import (
    INDEX_SCRIPT,
    UNINDEX_SCRIPT,
    VERSION_FIELDS,
    Keys,
    decode_message,
    encode_message,
    pair,
    to_bytes,
    to_text,
    version_of,
)
from .redis_setup import back_off, failure, import_redis, url_error, url_options

__all__ = ["DEFAULT_TTL_DAYS", "RedisStore"]

DEFAULT_TTL_DAYS = 0.0
"""Days a conversation is kept after its last change: 0, forever, unless ``ttl_days`` says otherwise."""

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
_MAX_ATTEMPTS = 50


class RedisStore:
    """Conversations in Redis, safe for threads, processes and several Pipelines servers."""

    def __init__(
        self,
        url: str,
        *,
        ttl_days: float = DEFAULT_TTL_DAYS,
        prefix: str = "helix",
        cluster: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        command_timeout: float = COMMAND_TIMEOUT_S,
        display_url: str | None = None,
    ) -> None:
        """Connect to the Redis server at ``url`` (no ``ttl_days``/``prefix`` in its query);
        ``cluster=True`` for a Redis Cluster, ``url`` naming any node; ``display_url`` to show.

        Raises :class:`ConfigError` when the redis package is missing or a setting is invalid,
        :class:`StoreUnavailable` when the server cannot be reached.
        """
        if not ttl_days >= 0 or ttl_days == float("inf"):
            raise url_error(url, "ttl_days must be a number of days, 0 (keep forever) or more")
        if not prefix or any(c in prefix for c in "{}"):
            raise url_error(url, "prefix must be a non-empty string without { or }")
        redis = import_redis()
        self.url = redact_url(display_url or url)
        self.ttl_seconds = round(ttl_days * 86_400)
        self.prefix = prefix
        self.keys = Keys(prefix)
        """The names of this store's keys."""
        self._password = urlsplit(url).password
        self._errors = redis.exceptions
        client_class = redis.cluster.RedisCluster if cluster else redis.Redis
        with self._translated("connecting"):
            try:
                # One quick retry without back-off: a connection a server restart cut is replaced
                # at once, and a server that is down is reported at once.
                self._client: Any = client_class.from_url(
                    url,
                    socket_connect_timeout=connect_timeout,
                    socket_timeout=command_timeout,
                    retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1),
                )
                self._client.ping()
            except (ValueError, TypeError) as exc:
                # redis-py hands unknown URL parameters on to its connections: a TypeError.
                raise url_error(url, f"redis-py cannot use it ({exc})") from exc
        self._index = self._client.register_script(INDEX_SCRIPT)
        self._unindex = self._client.register_script(UNINDEX_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, ttl_days: float | None = None) -> RedisStore:
        """Open ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS).

        Query parameters of our own: ``ttl_days`` (default: the ``ttl_days`` argument, which the
        pipelines set from ``SESSION_TTL_DAYS``, else ``0`` = never expire),
        ``prefix`` (default ``helix``) and ``cluster`` (``true`` for Redis Cluster); any other
        is passed on to redis-py.
        """
        plain, options = url_options(url, ttl_days)
        return cls(plain, display_url=url, **options)

    def load(self, key: ConversationKey) -> list[Message]:
        with self._translated("loading a conversation", key):
            raw = self._client.lrange(self.keys.active(key), 0, -1)
        return [decode_message(item) for item in raw]

    def read(self, key: ConversationKey) -> Branch:
        # One round trip, the version read first: a write in between makes it older than the
        # list, which a record given this branch then finds moved, and reads again.
        with self._translated("loading a conversation", key):
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(self.keys.meta(key), VERSION_FIELDS)
            pipe.lrange(self.keys.active(key), 0, -1)
            fields, raw = pipe.execute()
        return Branch(tuple(map(decode_message, raw)), version_of(*fields))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        with (
            self._translated("recording a turn", key),
            self._client.pipeline(transaction=True) as pipe,
        ):
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    result, indexed = self._record_once(pipe, key, messages, after, base)
                except self._errors.WatchError:
                    pipe.reset()
                    back_off(attempt)
                    continue
                if indexed is not None:
                    self._add_to_index(key, *indexed)
                return result
        raise StoreError(
            f"The Redis session store {self.url} could not record a turn: the conversation kept "
            f"changing under {_MAX_ATTEMPTS} attempts; retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _record_once(
        self,
        pipe: Any,
        key: ConversationKey,
        messages: Sequence[Message],
        after: int | None,
        base: Branch | None,
    ) -> tuple[RecordResult, tuple[float, bytes] | None]:
        """One attempt under ``WATCH``: the result, and the last activity and token to index
        (``None`` if nothing changed). Raises ``WatchError`` if another writer came in between."""
        meta_key = self.keys.meta(key)
        pipe.watch(meta_key)
        meta = pipe.hgetall(meta_key)
        version = version_of(*(meta.get(name.encode()) for name in VERSION_FIELDS))
        branches = int(meta[b"branches"]) if meta else 0
        if base is not None and base.version == version:
            active: Sequence[Message] = base.messages
        elif branches:
            active = [decode_message(raw) for raw in pipe.lrange(self.keys.active(key), 0, -1)]
        else:
            active = ()
        plan = plan_record(active, messages, after)
        if not plan.changes_anything:
            pipe.reset()
            unchanged = Branch(tuple(active), version)
            return RecordResult(max(branches - 1, 0), 0, 0, False, active=unchanged), None
        now = time.time()
        stamped = plan.stamped(now)
        previous = float(meta[b"touched"]) if b"touched" in meta else None
        touched = plan.last_activity(now, previous)
        new = applied(active, plan, stamped)
        branches = branches + 1 if plan.fork_at is not None else max(branches, 1)
        fields: dict[str, Any] = {
            "user": to_bytes(key.user_id),
            "conversation": to_bytes(key.conversation_id),
            "branches": branches,
            "count": len(new),
            "touched": repr(touched),
            "token": meta.get(b"token") or uuid.uuid4().hex.encode(),
            "rev": int(meta.get(b"rev", 0)) + 1,
        }
        pipe.multi()
        self._queue_changes(pipe, key, plan, new=new, appended=len(stamped), branches=branches)
        pipe.hset(meta_key, mapping=fields)
        if self.ttl_seconds:
            # Counted from the last activity, which an import may have set in the past.
            expires_ms = round((touched + self.ttl_seconds) * 1000)
            for name in (meta_key, self.keys.active(key), *self.keys.older(key, branches)):
                pipe.pexpireat(name, expires_ms)
        pipe.execute()
        version = version_of(*(fields[name] for name in VERSION_FIELDS))
        result = RecordResult(
            branch=branches - 1,
            appended=len(stamped),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
            active=Branch(new, version),
        )
        return result, (touched, fields["token"])

    def _queue_changes(
        self,
        pipe: Any,
        key: ConversationKey,
        plan: RecordPlan,
        *,
        new: Sequence[Message],
        appended: int,
        branches: int,
    ) -> None:
        """Queue the list changes that make ``new`` the active branch (``branches`` in all)."""
        active_key = self.keys.active(key)
        for position, _message_id in plan.attach:
            pipe.lset(active_key, position, encode_message(new[position]))
        if plan.fork_at is not None:
            # Not pipe.rename(): redis-py blocks that name in cluster pipelines, as keys may be
            # in two slots; ours share one hash tag.
            pipe.execute_command("RENAME", active_key, self.keys.branch(key, branches - 2))
            pipe.rpush(active_key, *map(encode_message, new))
        elif appended:
            pipe.rpush(active_key, *map(encode_message, new[len(new) - appended :]))

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        meta_key = self.keys.meta(key)
        with self._translated("loading the branches of a conversation", key):
            count = int(self._client.hget(meta_key, "branches") or 0)
            for attempt in range(_MAX_ATTEMPTS):
                if not count:
                    return []
                pipe = self._client.pipeline(transaction=True)
                pipe.hget(meta_key, "branches")
                for name in (*self.keys.older(key, count), self.keys.active(key)):
                    pipe.lrange(name, 0, -1)
                now_count, *lists = pipe.execute()
                if int(now_count or 0) == count:
                    return [[decode_message(item) for item in raw] for raw in lists]
                count = int(now_count or 0)  # a fork or a delete came in between: read again
                back_off(attempt)
        raise StoreError(
            f"The Redis session store {self.url} could not read the branches of a conversation: "
            f"it kept changing under {_MAX_ATTEMPTS} attempts; retry",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._translated("listing conversations"):
            tokens = self._client.hgetall(self.keys.user_index(user_id))
            ids = [to_text(raw) for raw in tokens]
            pipe = self._client.pipeline(transaction=False)
            for conversation_id in ids:
                key = ConversationKey(user_id, conversation_id)
                pipe.hmget(self.keys.meta(key), ["count", "branches", "touched"])
            metas = pipe.execute()
            summaries: list[ConversationSummary] = []
            for conversation_id, (count, branches, touched) in zip(ids, metas, strict=True):
                if touched is None:
                    self._remove_from_index(
                        ConversationKey(user_id, conversation_id),
                        tokens[to_bytes(conversation_id)],
                    )
                    continue
                summaries.append(
                    ConversationSummary(
                        conversation_id=conversation_id,
                        message_count=int(count),
                        branch_count=int(branches),
                        last_activity=datetime.fromtimestamp(float(touched), timezone.utc),
                    )
                )
        return sorted(summaries, key=lambda row: row.last_activity, reverse=True)

    def users(self) -> list[str]:
        with self._translated("listing users"):
            users_key = self.keys.index("users")
            if self.ttl_seconds:
                horizon = time.time() - self.ttl_seconds
                self._client.zremrangebyscore(users_key, "-inf", f"({horizon!r}")
            candidates = [to_text(raw) for raw in self._client.zrange(users_key, 0, -1)]
            pipe = self._client.pipeline(transaction=False)
            for user_id in candidates:
                pipe.exists(self.keys.user_index(user_id))
            alive = pipe.execute()
        return sorted(user for user, exists in zip(candidates, alive, strict=True) if exists)

    def delete(self, key: ConversationKey) -> bool:
        with self._translated("deleting a conversation", key):
            return self._delete_if(key, before=None)

    def purge(self, before: datetime) -> int:
        cutoff = before.timestamp()
        purged = 0
        with self._translated("purging old conversations"):
            raw_pairs = self._client.zrangebyscore(self.keys.index("convs"), "-inf", f"({cutoff!r}")
            for raw in raw_pairs:
                user_id, conversation_id = json.loads(to_text(raw))
                key = ConversationKey(user_id, conversation_id)
                seen = self._client.hget(self.keys.user_index(user_id), to_bytes(conversation_id))
                if self._delete_if(key, before=cutoff, index_token=seen or b""):
                    purged += 1
        return purged

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"

    def _delete_if(
        self, key: ConversationKey, *, before: float | None, index_token: bytes | None = None
    ) -> bool:
        """Delete a conversation (only if idle since ``before``, when given); whether it did.

        A conversation that is gone but still indexed under ``index_token`` leaves the index.
        """
        meta_key = self.keys.meta(key)
        with self._client.pipeline(transaction=True) as pipe:
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    pipe.watch(meta_key)
                    meta = pipe.hgetall(meta_key)
                    if not meta:
                        pipe.reset()
                        if index_token is not None:
                            self._remove_from_index(key, index_token)
                        return False
                    if before is not None and float(meta[b"touched"]) >= before:
                        pipe.reset()
                        return False
                    branches = int(meta[b"branches"])
                    pipe.multi()
                    pipe.delete(meta_key, self.keys.active(key), *self.keys.older(key, branches))
                    pipe.execute()
                except self._errors.WatchError:
                    pipe.reset()
                    back_off(attempt)
                    continue
                self._remove_from_index(key, meta[b"token"])
                return True
        raise StoreError(
            f"The Redis session store {self.url} could not delete a conversation: it kept "
            f"changing under {_MAX_ATTEMPTS} attempts; retry",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _add_to_index(self, key: ConversationKey, touched: float, token: bytes) -> None:
        self._index(
            keys=self.keys.indexes(key.user_id),
            args=[
                to_bytes(key.user_id),
                to_bytes(key.conversation_id),
                pair(key),
                repr(touched),
                token,
                self.ttl_seconds,
                repr(touched - self.ttl_seconds),
            ],
        )

    def _remove_from_index(self, key: ConversationKey, token: bytes) -> None:
        self._unindex(
            keys=self.keys.indexes(key.user_id),
            args=[to_bytes(key.user_id), to_bytes(key.conversation_id), pair(key), token],
        )

    @contextmanager
    def _translated(self, doing: str, key: ConversationKey | None = None) -> Iterator[None]:
        """The one place that turns redis-py errors into :class:`StoreError`."""
        try:
            yield
        except (self._errors.RedisError, self._errors.RedisClusterException) as exc:
            raise failure(
                self._errors, exc, url=self.url, password=self._password, doing=doing, key=key
            ) from exc
        except TypeError as exc:  # redis-py passes unknown URL parameters on to its connections
            raise url_error(self.url, f"Redis does not know one of its parameters ({exc})") from exc
''',
    'helix_pipeline/stores/redis_keys.py': r'''"""The Redis store's keys, index scripts and message encoding (no I/O, no redis import).

Ids never appear in key names: ``C`` below is a SHA-256 digest of the pair (user id, conversation
id) and ``U`` one of the user id, so hostile ids cannot collide, glob or break a hash tag. ``P`` is
the key prefix (``?prefix=``, default ``helix``).

========================  ================================================================
``P:{C}:meta``            hash: user, conversation, branches, count, touched, token, rev
``P:{C}:active``          list: the active branch, one JSON message per item
``P:{C}:b:N``             list: older branch ``N`` (0 is the first)
``P:{idx}:users``         sorted set: user id -> its newest activity
``P:{idx}:convs``         sorted set: JSON ``[user, conversation]`` -> last activity (purge)
``P:{idx}:user:U``        hash: conversation id -> token of the conversation's incarnation
========================  ================================================================

Every key of one conversation shares the hash tag ``{C}``, so a turn is one transaction that also
works on Redis Cluster. The index keys share the tag ``{idx}`` and change through the two scripts
below, after the conversation's own transaction. ``token`` names one incarnation of a conversation
(a new one after a delete) and ``rev`` counts its changes: with ``branches`` and ``count`` they
are the version a writer checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..conversation import ConversationKey
from ..messages import Message

__all__ = [
    "INDEX_SCRIPT",
    "UNINDEX_SCRIPT",
    "VERSION_FIELDS",
    "Keys",
    "decode_message",
    "encode_message",
    "pair",
    "to_bytes",
    "to_text",
    "version_of",
]

# KEYS: users, convs, user hash. ARGV: user, conversation, pair, touched, token, ttl, horizon.
INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
end
return 1
"""

# KEYS: users, convs, user hash. ARGV: user, conversation, pair, token the caller saw ('' for
# none: then only a purge candidate without a user-index entry is dropped).
UNINDEX_SCRIPT = """
local seen = redis.call('HGET', KEYS[3], ARGV[2])
if seen ~= ARGV[4] and not (seen == false and ARGV[4] == '') then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""

VERSION_FIELDS = ("token", "rev", "branches", "count")
"""The meta fields that make a conversation's version, in :func:`version_of`'s order."""


def version_of(token: Any, rev: Any, branches: Any, count: Any) -> object:
    """The version of a conversation from its meta fields; ``None`` when there is none."""
    if token is None:
        return None
    return (bytes(token), int(rev or 0), int(branches or 0), int(count or 0))


@dataclass(frozen=True)
class Keys:
    """The names of the keys under one prefix."""

    prefix: str

    def meta(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:meta"

    def active(self, key: ConversationKey) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:active"

    def branch(self, key: ConversationKey, branch: int) -> str:
        return f"{self.prefix}:{{{_digest(pair(key))}}}:b:{branch}"

    def older(self, key: ConversationKey, branches: int) -> list[str]:
        """The keys of every branch but the active one, oldest first."""
        return [self.branch(key, branch) for branch in range(branches - 1)]

    def index(self, name: str) -> str:
        return f"{self.prefix}:{{idx}}:{name}"

    def user_index(self, user_id: str) -> str:
        return self.index(f"user:{_digest(to_bytes(user_id))}")

    def indexes(self, user_id: str) -> list[str]:
        """The ``KEYS`` of both index scripts."""
        return [self.index("users"), self.index("convs"), self.user_index(user_id)]


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def to_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def pair(key: ConversationKey) -> bytes:
    return to_bytes(json.dumps([key.user_id, key.conversation_id], ensure_ascii=False))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def encode_message(message: Message) -> bytes:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.message_id is not None:
        data["id"] = message.message_id
    if message.partial:
        data["partial"] = True
    if message.created_at is not None:
        data["at"] = message.created_at
    return to_bytes(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def decode_message(raw: bytes) -> Message:
    data = json.loads(to_text(raw))
    return Message(
        role=data["role"],
        content=data["content"],
        message_id=data.get("id"),
        partial=bool(data.get("partial", False)),
        created_at=data.get("at"),
    )
''',
    'helix_pipeline/stores/redis_setup.py': r'''"""Opening the Redis store: the driver, the URL's own options, what each failure means, and
how long to wait after a conflict.

No I/O here: :mod:`~helix_pipeline.stores.redis` calls these while it connects and whenever
redis-py raises.
"""

from __future__ import annotations

import random
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from .engine_errors import missing_driver
from .engine_errors import url_error as _store_url_error

__all__ = ["back_off", "failure", "import_redis", "url_error", "url_options"]

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_RESPONSE_HINTS = (
    # (words in Redis's answer, unavailable?, what to do)
    ("OOM", False, "Redis is out of memory: raise its maxmemory, or lower ttl_days"),
    ("READONLY", True, "SESSION_STORE_URL names a read-only replica: point it at the primary"),
    ("DB index is out of range", True, "use a database number the server has (/0 to /15)"),
    ("MOVED", True, "SESSION_STORE_URL names a Redis Cluster node: add ?cluster=true"),
)


def import_redis() -> Any:
    """The redis package, or a :class:`ConfigError` naming the extra to install."""
    try:
        import redis
    except ImportError as exc:
        raise missing_driver("Redis", "the redis package", "redis") from exc
    return redis


def url_error(url: str, problem: str) -> ConfigError:
    return _store_url_error(
        "Redis",
        url,
        problem,
        "redis://[:password@]host:6379/0 (or rediss:// for TLS), optionally with "
        "?ttl_days=N&prefix=NAME",
    )


def url_options(url: str, ttl_days: float | None) -> tuple[str, dict[str, Any]]:
    """The URL without our own parameters (``ttl_days``, ``prefix``, ``cluster``), and those
    as :class:`~helix_pipeline.stores.redis.RedisStore` arguments; ``ttl_days`` is the default."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise url_error(url, "it must start with redis:// or rediss://")
    options: dict[str, Any] = {} if ttl_days is None else {"ttl_days": float(ttl_days)}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "ttl_days":
            try:
                options["ttl_days"] = float(value)
            except ValueError:
                options["ttl_days"] = -1.0
        elif name == "prefix":
            options["prefix"] = value
        elif name == "cluster":
            if value.lower() not in _BOOLEANS:
                raise url_error(url, "cluster must be true or false")
            options["cluster"] = _BOOLEANS[value.lower()]
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), options


def failure(
    errors: Any,
    exc: Exception,
    *,
    url: str,
    password: str | None,
    doing: str,
    key: ConversationKey | None,
) -> StoreError:
    """The :class:`StoreError` for a redis-py error (``errors`` is ``redis.exceptions``)."""
    detail = str(exc)
    if password:
        detail = detail.replace(password, "***")
    where = f"The Redis session store {url} failed while {doing} ({detail})"
    unavailable, hint = _hint(errors, exc, detail)
    error = StoreUnavailable if unavailable else StoreError
    return error(
        f"{where}: {hint}" if hint else where,
        store=url,
        conversation_id=key.conversation_id if key is not None else None,
    )


def _hint(errors: Any, exc: Exception, detail: str) -> tuple[bool, str]:
    """Whether ``exc`` means Redis cannot be used at all, and what to check."""
    if isinstance(exc, errors.AuthenticationError):
        return True, "check the user name and password in SESSION_STORE_URL"
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return True, (
            "the server's TLS certificate is not trusted: add "
            "?ssl_ca_certs=/path/to/ca.pem to SESSION_STORE_URL"
        )
    if isinstance(exc, (errors.ConnectionError, errors.TimeoutError)) or (
        isinstance(exc, errors.RedisClusterException) and "connect" in detail
    ):
        return True, (
            "check that Redis is running and reachable at the host and port of "
            "SESSION_STORE_URL (and that rediss:// is used exactly when it expects TLS)"
        )
    for words, unavailable, hint in _RESPONSE_HINTS:
        if words in detail:
            return unavailable, hint
    return False, ""


def back_off(attempt: int) -> None:
    """After a WATCH conflict: retry at once, then after short random pauses (no lockstep)."""
    if attempt:
        time.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))
''',
    'helix_pipeline/stores/sql.py': r'''"""The SQL store: one implementation for SQLite and PostgreSQL, parameterised by a :class:`Dialect`.

The statements, the recording of a turn, the regrouping of branches and the conversion of rows live
here once. An engine module (:mod:`.sqlite`, :mod:`.postgres`) brings its dialect (table names,
placeholder, how a key is matched and its ids encoded, row locking), its connections and
transactions, the creation of a conversation row, and the translation of its driver's errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, NamedTuple

from ..conversation import ConversationKey
from ..errors import StoreError
from ..messages import Message
from .base import Branch, ConversationSummary, RecordPlan, RecordResult, applied, plan_record

__all__ = ["Dialect", "Queries", "SQLStore", "message_from_row", "new_revision", "text"]

_MESSAGE_COLUMNS = "m.role, m.content, m.message_id, m.partial, m.created_at"
_VERSION_COLUMNS = "c.id, c.active_branch, c.message_count, c.revision"
_CREATE_ATTEMPTS = 3


class _Row(NamedTuple):
    """A conversation's row as a writer locked it; ``last_activity`` is ``None`` if created now."""

    id: int
    branch: int
    length: int
    revision: int
    last_activity: float | None

    @property
    def version(self) -> tuple[int, int, int, int]:
        # The branch and count too, so that a writer that does not move the revision (an older
        # release sharing the database) still changes the version.
        return (self.id, self.branch, self.length, self.revision)


def new_revision() -> int:
    """Where a new conversation's revision starts: random, so that a conversation deleted and
    created again (SQLite may reuse its row id) never repeats a version."""
    return random.getrandbits(48)


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL engines, written with ``?`` placeholders."""

    name: str
    conversations: str
    messages: str
    placeholder: str
    key_match: str
    """Matches one conversation row ``c`` by its key (see ``key_params``)."""
    user_match: str
    """Matches the conversation rows of one user (see ``user_params``)."""
    key_params: Callable[[ConversationKey], tuple[Any, ...]]
    user_params: Callable[[str], tuple[Any, ...]]
    text_param: Callable[[str], Any]
    """A text (content, message id) as the engine stores it."""
    lock_row: str
    """What makes ``SELECT`` lock the row for the transaction (empty where the whole file is)."""
    cascades: bool
    """Whether deleting a conversation row deletes its messages."""


class Queries:
    """Every statement of the SQL store, in one dialect."""

    def __init__(self, d: Dialect) -> None:
        def sql(template: str) -> str:
            text = template.format(c=d.conversations, m=d.messages, key=d.key_match)
            return text.replace("?", d.placeholder)

        self.load_active = sql(
            f"SELECT {_MESSAGE_COLUMNS}, {_VERSION_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id AND m.branch = c.active_branch WHERE {key} ORDER BY m.position"
        )
        self.load_all = sql(
            f"SELECT m.branch, {_MESSAGE_COLUMNS} FROM {{c}} AS c JOIN {{m}} AS m "
            "ON m.conversation = c.id WHERE {key} ORDER BY m.branch, m.position"
        )
        self.find = sql(
            f"SELECT {_VERSION_COLUMNS}, c.last_activity FROM {{c}} AS c WHERE {{key}}" + d.lock_row
        )
        self.read_branch = sql(
            "SELECT role, content, message_id, partial, created_at FROM {m} "
            "WHERE conversation = ? AND branch = ? ORDER BY position"
        )
        columns = "conversation, branch, position, role, content, message_id, partial, created_at"
        self.insert_message = sql(f"INSERT INTO {{m}} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self.copy_prefix = sql(
            f"INSERT INTO {{m}} ({columns}) SELECT conversation, ?, position, role, content, "
            "message_id, partial, created_at FROM {m} "
            "WHERE conversation = ? AND branch = ? AND position < ?"
        )
        self.attach_id = sql(
            "UPDATE {m} SET message_id = ? WHERE conversation = ? AND branch = ? AND position = ?"
        )
        self.update_conversation = sql(
            "UPDATE {c} SET active_branch = ?, message_count = ?, revision = ?, last_activity = ? "
            "WHERE id = ?"
        )
        self.list_conversations = sql(
            "SELECT conversation_id, message_count, active_branch + 1, last_activity FROM {c} "
            f"WHERE {d.user_match} ORDER BY last_activity DESC, id"
        )
        self.list_users = sql("SELECT DISTINCT user_id FROM {c}")
        self.delete_messages = sql("DELETE FROM {m} WHERE conversation = ?")
        self.delete_conversation = sql("DELETE FROM {c} WHERE id = ?")
        self.purge_messages = sql(
            "DELETE FROM {m} WHERE conversation IN (SELECT id FROM {c} WHERE last_activity < ?)"
        )
        self.purge_conversations = sql("DELETE FROM {c} WHERE last_activity < ?")


class SQLStore:
    """The session store on a SQL engine; subclasses bring connections and the dialect."""

    dialect: ClassVar[Dialect]
    queries: ClassVar[Queries]
    url: str

    # -- what an engine provides ---------------------------------------------------------------

    def _connection(
        self, doing: str, key: ConversationKey | None = None
    ) -> AbstractContextManager[Any]:
        """A connection for one read, its driver's errors translated."""
        raise NotImplementedError

    def _transaction(
        self, doing: str, key: ConversationKey | None = None
    ) -> AbstractContextManager[Any]:
        """A connection inside one write transaction, committed on leaving, errors translated."""
        raise NotImplementedError

    def _create(self, db: Any, key: ConversationKey, now: float, revision: int) -> int | None:
        """Insert the conversation's row (branch 0, no messages, ``revision``); its id, or
        ``None`` if another writer just did."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------

    def load(self, key: ConversationKey) -> list[Message]:
        return list(self.read(key).messages)

    def read(self, key: ConversationKey) -> Branch:
        with self._connection("loading a conversation", key) as db:
            rows = db.execute(self.queries.load_active, self.dialect.key_params(key)).fetchall()
        if not rows:
            return Branch()
        return Branch(tuple(map(message_from_row, rows)), tuple(rows[0][5:]))

    def record(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        after: int | None = None,
        base: Branch | None = None,
    ) -> RecordResult:
        with self._transaction("recording a turn", key) as db:
            row, active, plan = self._locked(db, key, messages, after, base)
            if row is None or not plan.changes_anything:
                version = None if row is None else row.version
                return RecordResult(
                    branch=0 if row is None else row.branch,
                    appended=0,
                    ids_attached=0,
                    forked=False,
                    active=Branch(tuple(active), version),
                )
            now = time.time()
            stamped = plan.stamped(now)
            written = self._apply(db, row, len(active), plan, stamped=stamped, now=now)
        return RecordResult(
            branch=written.branch,
            appended=len(stamped),
            ids_attached=len(plan.attach),
            forked=plan.fork_at is not None,
            active=Branch(applied(active, plan, stamped), written.version),
        )

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        with self._connection("loading the branches of a conversation", key) as db:
            rows = db.execute(self.queries.load_all, self.dialect.key_params(key)).fetchall()
        branches: list[list[Message]] = []
        for branch, *columns in rows:
            while len(branches) <= branch:
                branches.append([])
            branches[branch].append(message_from_row(columns))
        return branches

    def conversations(self, user_id: str) -> list[ConversationSummary]:
        with self._connection("listing conversations") as db:
            rows = db.execute(
                self.queries.list_conversations, self.dialect.user_params(user_id)
            ).fetchall()
        return [
            ConversationSummary(
                conversation_id=text(conversation_id),
                message_count=message_count,
                branch_count=branch_count,
                last_activity=datetime.fromtimestamp(last_activity, timezone.utc),
            )
            for conversation_id, message_count, branch_count, last_activity in rows
        ]

    def users(self) -> list[str]:
        with self._connection("listing users") as db:
            rows = db.execute(self.queries.list_users).fetchall()
        return sorted(text(user_id) for (user_id,) in rows)

    def delete(self, key: ConversationKey) -> bool:
        with self._transaction("deleting a conversation", key) as db:
            found = db.execute(self.queries.find, self.dialect.key_params(key)).fetchone()
            if found is None:
                return False
            if not self.dialect.cascades:
                db.execute(self.queries.delete_messages, (found[0],))
            db.execute(self.queries.delete_conversation, (found[0],))
        return True

    def purge(self, before: datetime) -> int:
        cutoff = (before.timestamp(),)
        with self._transaction("purging old conversations") as db:
            if not self.dialect.cascades:
                db.execute(self.queries.purge_messages, cutoff)
            return int(db.execute(self.queries.purge_conversations, cutoff).rowcount)

    # -- recording -----------------------------------------------------------------------------

    def _locked(
        self,
        db: Any,
        key: ConversationKey,
        messages: Sequence[Message],
        after: int | None,
        base: Branch | None,
    ) -> tuple[_Row | None, Sequence[Message], RecordPlan]:
        """Lock the conversation's row (creating it if this call records something), take its
        active branch (``base`` while its version holds, else read), and plan the record.

        The row is ``None`` when the conversation does not exist and recording changes nothing.
        """
        params = self.dialect.key_params(key)
        for _attempt in range(_CREATE_ATTEMPTS):
            found = db.execute(self.queries.find, params).fetchone()
            if found is not None:
                row = _Row(
                    int(found[0]), int(found[1]), int(found[2]), int(found[3]), float(found[4])
                )
                if base is not None and base.version == row.version:
                    active: Sequence[Message] = base.messages
                else:
                    active = self._read_branch(db, row.id, row.branch)
                return row, active, plan_record(active, messages, after)
            plan = plan_record((), messages, after)
            if not plan.changes_anything:
                return None, (), plan
            revision = new_revision()
            created = self._create(db, key, time.time(), revision)
            if created is not None:
                return _Row(created, 0, 0, revision, None), (), plan
            # Another writer created it since our look-up: lock its row instead.
        raise StoreError(
            f"The {self.dialect.name} session store {self.url} could not create a conversation "
            "row; retry the request",
            store=self.url,
            conversation_id=key.conversation_id,
        )

    def _apply(
        self,
        db: Any,
        row: _Row,
        length: int,
        plan: RecordPlan,
        *,
        stamped: Sequence[Message],
        now: float,
    ) -> _Row:
        """Write ``plan`` onto the locked row's active branch of ``length`` messages; the row as
        it now stands."""
        as_text = self.dialect.text_param
        conversation, branch, start = row.id, row.branch, length
        with closing(db.cursor()) as cursor:
            if plan.attach:
                cursor.executemany(
                    self.queries.attach_id,
                    [(as_text(mid), conversation, branch, pos) for pos, mid in plan.attach],
                )
            if plan.fork_at is not None:
                cursor.execute(
                    self.queries.copy_prefix, (branch + 1, conversation, branch, plan.fork_at)
                )
                branch, start = branch + 1, plan.fork_at
            cursor.executemany(
                self.queries.insert_message,
                [
                    (
                        conversation,
                        branch,
                        position,
                        message.role,
                        as_text(message.content),
                        None if message.message_id is None else as_text(message.message_id),
                        message.partial,
                        message.created_at,
                    )
                    for position, message in enumerate(stamped, start)
                ],
            )
            written = _Row(
                conversation,
                branch,
                start + len(stamped),
                row.revision + 1,
                plan.last_activity(now, row.last_activity),
            )
            cursor.execute(self.queries.update_conversation, (*written[1:], conversation))
        return written

    def _read_branch(self, db: Any, conversation: int, branch: int) -> list[Message]:
        rows = db.execute(self.queries.read_branch, (conversation, branch)).fetchall()
        return [message_from_row(row) for row in rows]


def message_from_row(row: Sequence[Any]) -> Message:
    """A message from its first columns ``role, content, message_id, partial, created_at``."""
    # Run for every message of every load: the common case (text, not bytes) is checked inline,
    # which takes a quarter off reading a 50-message branch.
    role, content, message_id, partial, created_at = row[:5]
    return Message(
        role,
        content if content.__class__ is str else text(content),
        message_id if message_id is None or message_id.__class__ is str else text(message_id),
        bool(partial),
        created_at,
    )


def text(value: str | bytes | memoryview) -> str:
    """A stored text: as it is, or decoded from UTF-8 bytes (lone surrogates included)."""
    if isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "surrogatepass")
''',
    'helix_pipeline/stores/sqlite.py': r'''"""The SQLite store: conversations in one local file, safe for threads and for several processes.

The file runs in WAL mode (readers never wait for the writer), every ``record`` is one
``BEGIN IMMEDIATE`` transaction (concurrent writers queue for up to ``busy_timeout`` seconds), and
connections come from a small pool, one per concurrent caller, so the Pipelines server's thread pool
never shares a connection between threads. Every ``sqlite3`` and file-system error is translated
into a :class:`~helix_pipeline.errors.StoreError` in :func:`_translated_errors`, and nowhere else.

Ids and texts are only ever SQL parameters. Strings that are not valid Unicode (lone surrogates,
which JSON can carry) are stored as UTF-8 blobs with ``surrogatepass`` so that they round-trip too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import overload
from urllib.parse import parse_qsl

from ..conversation import ConversationKey
from ..errors import ConfigError, StoreError, StoreUnavailable
from .engine_errors import url_error
from .migrations import SQLITE, migrate
from .sql import Dialect, Queries, SQLStore

__all__ = ["DEFAULT_BUSY_TIMEOUT", "LOAD_ACTIVE_BRANCH", "SQLiteStore", "sqlite_path"]

logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another connection's write transaction before giving up."""

_SCHEME = "sqlite://"


@overload
def _text_param(value: str) -> str | bytes: ...
@overload
def _text_param(value: None) -> None: ...
def _text_param(value: str | None) -> str | bytes | None:
    """``value`` as SQLite takes it: text, or UTF-8 bytes when it holds lone surrogates."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _key_params(key: ConversationKey) -> tuple[str | bytes, str | bytes]:
    return _text_param(key.user_id), _text_param(key.conversation_id)


DIALECT = Dialect(
    name="SQLite",
    conversations="conversations",
    messages="messages",
    placeholder="?",
    key_match="c.user_id = ? AND c.conversation_id = ?",
    user_match="user_id = ?",
    key_params=_key_params,
    user_params=lambda user_id: (_text_param(user_id),),
    text_param=_text_param,
    lock_row="",  # BEGIN IMMEDIATE holds the whole file
    cascades=False,
)
_QUERIES = Queries(DIALECT)

LOAD_ACTIVE_BRANCH = _QUERIES.load_active
"""The one query :meth:`SQLiteStore.load` runs: two index lookups, whatever the database size."""


def sqlite_path(url: str) -> tuple[Path, float]:
    """The file and the busy timeout an ``sqlite://`` URL names; :class:`ConfigError` if it is
    not one (``sqlite:///rel.db`` is relative to the working folder, ``sqlite:////abs.db`` not)."""
    if not url.lower().startswith(_SCHEME):
        raise _url_error(url, "it must start with sqlite:///")
    rest, _, query = url[len(_SCHEME) :].partition("?")
    if not rest.startswith("/"):
        raise _url_error(url, "it needs three slashes before a path (sqlite:///sessions.db)")
    path = rest[1:]
    if not path or path == ":memory:":
        raise _url_error(url, "it names no file (use memory:// for a store that is not kept)")
    busy_timeout = DEFAULT_BUSY_TIMEOUT
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "timeout":
            raise _url_error(url, f"unknown parameter {name!r} (only ?timeout=SECONDS)")
        try:
            busy_timeout = float(value)
        except ValueError:
            busy_timeout = -1.0
        if not 0 <= busy_timeout < float("inf"):
            raise _url_error(url, "timeout must be a number of seconds, 0 or more")
    return Path(path), busy_timeout


class SQLiteStore(SQLStore):
    """Conversations in a SQLite file (``sqlite:///path/to/sessions.db``)."""

    dialect = DIALECT
    queries = _QUERIES

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        url: str | None = None,
    ) -> None:
        """Open (creating the file and its folder if needed) and migrate the database at ``path``.

        Raises :class:`StoreUnavailable` when the file cannot be created, opened or written.
        """
        self.path = Path(path)
        self.url = url or f"{_SCHEME}/{self.path}"
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        """Queues this store's own writers fairly (SQLite's busy handler polls, and starves some)."""
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        with _translated_errors(self, "creating its folder"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection("opening the database") as db:
            self._use_wal(db)
            applied = migrate(db, SQLITE)
        if applied:
            logger.info("Session store %s: applied migrations %s", self.url, ", ".join(applied))

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        The only query parameter is ``timeout`` (seconds, default 10), the busy timeout.
        """
        path, busy_timeout = sqlite_path(url)
        return cls(path, busy_timeout=busy_timeout, url=url)

    def _create(
        self, db: sqlite3.Connection, key: ConversationKey, now: float, revision: int
    ) -> int:
        cursor = db.execute(
            "INSERT INTO conversations (user_id, conversation_id, active_branch, "
            "message_count, last_activity, revision) VALUES (?, ?, 0, 0, ?, ?)",
            (*_key_params(key), now, revision),
        )
        return int(cursor.lastrowid or 0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    @contextmanager
    def _connection(
        self, doing: str, key: ConversationKey | None = None
    ) -> Iterator[sqlite3.Connection]:
        """A pooled connection for one operation; dropped (rolling back) if anything fails."""
        with self._lock:
            if self._closed:
                raise StoreError(
                    f"The session store {self.url} is closed; open a new one to keep using it",
                    store=self.url,
                )
            db = self._idle.pop() if self._idle else None
        with _translated_errors(self, doing, key):
            if db is None:
                db = self._connect()
            try:
                yield db
            except BaseException:
                db.close()
                raise
        with self._lock:
            if self._closed:
                db.close()
            else:
                self._idle.append(db)

    @contextmanager
    def _transaction(
        self, doing: str, key: ConversationKey | None = None
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the write lock first, so writers serialise.

        Threads of this process queue on :attr:`_writer` first: with 16 concurrent writers,
        SQLite's own busy handler (sleep and retry) let some wait over a second (p99 1.1 s per
        record, against 0.12 s with the queue).
        """
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreError(
                f"The SQLite session store {self.path} failed while {doing}: other threads held "
                f"the write lock longer than the busy timeout of {self.busy_timeout:g} s; retry, "
                "or raise it with ?timeout=SECONDS in SESSION_STORE_URL",
                store=self.url,
                conversation_id=key.conversation_id if key is not None else None,
            )
        try:
            with self._connection(doing, key) as db:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
        finally:
            self._writer.release()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # the pool hands a connection to one thread at a time
        )
        try:
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (kept in the file), retrying while another opener is busy.

        SQLite answers "database is locked" at once, without waiting, when two connections switch
        a new file at the same moment; so wait here, as long as the busy timeout allows.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_BUSY_NAMES) or any(word in str(exc) for word in _BUSY_WORDS)


def _url_error(url: str, problem: str) -> ConfigError:
    return url_error(
        "SQLite", url, problem, "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


_BUSY_NAMES = ("SQLITE_BUSY", "SQLITE_LOCKED")
_BUSY_WORDS = ("locked", "busy")
_HINTS = (
    # (SQLite error names, words of the message on Python 3.10, unavailable?, what to do)
    (
        _BUSY_NAMES,
        _BUSY_WORDS,
        False,
        "another connection kept the database locked longer than the busy timeout of "
        "{timeout:g} s; retry, or raise it with ?timeout=SECONDS in SESSION_STORE_URL",
    ),
    (
        ("SQLITE_NOTADB", "SQLITE_CORRUPT"),
        ("not a database", "malformed"),
        True,
        "the file is not a SQLite database or is damaged; move it away or point "
        "SESSION_STORE_URL at another file",
    ),
    (
        ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"),
        ("readonly", "read-only", "permission"),
        True,
        "the file or its folder is read-only; make both writable by the Pipelines server's user "
        "or point SESSION_STORE_URL at a writable path",
    ),
    (
        ("SQLITE_CANTOPEN",),
        ("unable to open",),
        True,
        "check that its folder exists and is writable and that the path is not a folder, or "
        "point SESSION_STORE_URL at another file",
    ),
    (
        ("SQLITE_FULL",),
        ("disk is full",),
        True,
        "free some disk space or point SESSION_STORE_URL at another disk",
    ),
)


@contextmanager
def _translated_errors(
    store: SQLiteStore, doing: str, key: ConversationKey | None = None
) -> Iterator[None]:
    """The one place that turns ``sqlite3`` and file-system errors into :class:`StoreError`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        conversation_id = key.conversation_id if key is not None else None
        where = f"The SQLite session store {store.path} failed while {doing}"
        if isinstance(exc, OSError):
            raise StoreUnavailable(
                f"{where}: {exc.strerror or exc}; create the folder or point SESSION_STORE_URL "
                "at a writable path",
                store=store.url,
                conversation_id=conversation_id,
            ) from exc
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        for names, words, unavailable, hint in _HINTS:
            if name.startswith(names) or any(word in text for word in words):
                error = StoreUnavailable if unavailable else StoreError
                raise error(
                    f"{where} ({exc}): " + hint.format(timeout=store.busy_timeout),
                    store=store.url,
                    conversation_id=conversation_id,
                ) from exc
        raise StoreError(
            f"{where}: {exc}", store=store.url, conversation_id=conversation_id
        ) from exc
''',
    'helix_pipeline/urls.py': r'''"""The URL rules every layer shares: Helix's base URL, and a URL made safe to show.

A bottom-layer module (it imports nothing of ours but :mod:`helix_pipeline.errors`): the
``HELIX_BASE_URL`` valve, the HTTP client, the CLI and the demo all call :func:`helix_base_url`,
so a URL the valve accepts is a URL the client can use. Two copies of this rule once let
``http://:8001`` pass the valve and fail the client on every request of the Pipelines server.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError

__all__ = [
    "EXAMPLE_BASE_URL",
    "authority_problem",
    "helix_base_url",
    "hide_secret",
    "redact_url",
    "url_scheme",
]

EXAMPLE_BASE_URL = "http://localhost:8001"
_MAX_SHOWN = 200


def helix_base_url(value: str, *, setting: str = "HELIX_BASE_URL") -> str:
    """``value`` as the base every Helix path is appended to; :class:`ConfigError` if unusable.

    Surrounding white space, trailing slashes and a final ``/v1`` are dropped
    (``http://helix:8001/v1/`` -> ``http://helix:8001``). The URL must be ``http``/``https`` with a
    host, a port from 1 to 65535 if any, matching brackets around an IPv6 address, no query or
    fragment, and no white space or control characters. The error names ``setting``.
    """
    if not isinstance(value, str):
        raise _invalid(setting, "", "is not text")
    url = value.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    problem = _problem(url)
    if problem is not None:
        raise _invalid(setting, url, problem)
    return url


def _problem(url: str) -> str | None:
    """What makes ``url`` unusable as Helix's base URL, or ``None``."""
    if not url:
        return "is empty"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains white space or control characters"
    problem = authority_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return "has a query or fragment" if parts.query or parts.fragment or "?" in url else None


def authority_problem(url: str) -> str | None:
    """What is wrong with the host and port part of ``url`` (unmatched brackets, a port outside
    1 to 65535), or ``None``; for any scheme. ``redis://:99999`` and ``http://[::1`` fail here,
    where ``urlsplit`` would raise or the connection would fail on every request."""
    unmatched = "has unmatched brackets (an IPv6 address is written [::1])"
    try:
        parts = urlsplit(url)
    except ValueError:  # urllib's only complaint here: an unmatched '[' or ']'
        return unmatched
    host_and_port = parts.netloc.rsplit("@", 1)[-1]
    bracketed = "[" in host_and_port or "]" in host_and_port
    if bracketed and not (host_and_port.startswith("[") and "]" in host_and_port):
        return unmatched
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or host_and_port.endswith(":"):
        return "has an invalid port (it must be a number from 1 to 65535)"
    return None


def _invalid(setting: str, url: str, problem: str) -> ConfigError:
    shown = redact_url(url)
    if len(shown) > _MAX_SHOWN:
        shown = f"{shown[:_MAX_SHOWN]}..."
    got = f" {shown!r}" if shown else ""
    return ConfigError(
        f"{setting} must be an http:// or https:// URL such as {EXAMPLE_BASE_URL}; "
        f"the URL{got} {problem}",
        setting=setting,
    )


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case (``""`` without ``://``); never raises, unlike
    ``urlsplit``, which refuses an unmatched bracket anywhere in the URL."""
    scheme, sep, _ = url.partition("://")
    return scheme.strip().lower() if sep else ""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unmatched brackets: find the user information by hand
        scheme, sep, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def hide_secret(text: str, secret: str | None) -> str:
    """``text`` with each standalone copy of ``secret`` (as given and percent-decoded) as ``***``.

    Standalone means no letter, digit or ``_`` touches it: a password quoted in a driver's message,
    between ``:`` and ``@`` of a URL or after ``password=`` is hidden, while a short one inside a
    word is not a copy of it (password ``p`` once turned "Servname not supported" into
    "Servname not su***orted", and ``a`` hid "authentication failed" from the check that reads it).
    """
    if not secret:
        return text
    for form in dict.fromkeys((secret, unquote(secret))):
        text = re.sub(rf"(?<!\w){re.escape(form)}(?!\w)", "***", text)
    return text
''',
    'helix_pipeline/valve_env.py': r'''"""Valve defaults from environment variables, and the secrets read from them when needed.

A valve's default is the environment variable of the same name, held to the valve's own rule
(:data:`~helix_pipeline.valve_rules.RULES`): a bad variable never stops the pipeline from loading,
it is logged and the built-in default is used. Secrets (``HELIX_API_KEY``, a ``SESSION_STORE_URL``
with a password) are read from the environment when needed, never copied into a valve: the
Pipelines server returns valves unauthenticated (``GET /<id>/valves``) and saves them in
``valves.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .valve_rules import HELIX_HEARTBEAT_S, RULES, check_read_timeout

__all__ = [
    "DATA_FOLDER",
    "api_key_from_env",
    "default_store_url",
    "from_env",
    "read_timeout_from_env",
    "store_url_from_env",
]

log = logging.getLogger(__name__)

DATA_FOLDER = "helix_data"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def default_store_url(pipelines_dir: Path | None = None) -> str:
    """An SQLite file in a data folder beside the pipelines (``HELIX_DATA_DIR`` overrides)."""
    data_dir = os.environ.get("HELIX_DATA_DIR")
    if data_dir:
        folder = Path(data_dir)
    else:
        base = pipelines_dir or Path(os.environ.get("PIPELINES_DIR", "./pipelines"))
        folder = base / DATA_FOLDER
    return f"sqlite:///{folder.absolute() / 'sessions.db'}"


def from_env(name: str, default: Any) -> Callable[[], Any]:
    """A default factory: the environment variable ``name`` converted like ``default``, if valid.

    The variable must pass the valve's own rule (:data:`RULES`); else it is logged and ignored.
    """

    def factory() -> Any:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = _converted(name, raw, default)
            rule = RULES.get(name)
            if rule is not None:
                value = rule(value)
        except ValueError as exc:  # ConfigError is a ValueError too
            log.warning("ignoring environment variable %s: %s; using %r", name, exc, default)
            return default
        return value

    return factory


def _converted(name: str, raw: str, default: Any) -> Any:
    """``raw`` as the type of ``default``; a :class:`ValueError` if it is not one."""
    if isinstance(default, bool):
        if raw.strip().lower() not in (*_TRUE, *_FALSE):
            raise ValueError(f"{name} must be true or false")
        return raw.strip().lower() in _TRUE
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def read_timeout_from_env() -> float:
    """READ_TIMEOUT_S's default: its environment variable, if it passes the heartbeat rule too."""
    value: float = from_env("READ_TIMEOUT_S", 120.0)()
    try:
        return check_read_timeout(value, from_env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S)())
    except ValueError as exc:
        log.warning("ignoring environment variable READ_TIMEOUT_S: %s; using 120.0", exc)
        return 120.0


store_url_from_env: Callable[[], str] = from_env("SESSION_STORE_URL", "")
"""The ``SESSION_STORE_URL`` environment variable, if it passes the valve's rule; else empty."""
api_key_from_env: Callable[[], str] = from_env("HELIX_API_KEY", "")
"""The ``HELIX_API_KEY`` environment variable, if it passes the valve's rule; else empty."""
''',
    'helix_pipeline/valve_rules.py': r'''"""What each valve's value must be: one rule per valve, its message naming the valve.

:data:`RULES` is used by the valve's validator and by its environment variable alike, so a value
that passes one passes the other; the rule of ``HELIX_BASE_URL`` is the client's own
(:func:`helix_pipeline.urls.helix_base_url`). ``READ_TIMEOUT_S`` has one more rule that reads a
second valve: :func:`check_read_timeout`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .urls import authority_problem, helix_base_url, redact_url, url_scheme

__all__ = [
    "DEFAULT_HEADERS",
    "HEARTBEAT_MARGIN",
    "HELIX_HEARTBEAT_S",
    "MAX_LIMIT",
    "MAX_TIMEOUT_S",
    "MAX_TTL_DAYS",
    "RULES",
    "check_models",
    "check_read_timeout",
    "parse_csv",
]

DEFAULT_HEADERS = "X-OpenWebUI-Chat-Id,X-Conversation-ID"
HELIX_HEARTBEAT_S = 10.0
"""How often Helix (b979a99) sends a heartbeat while Claude Code works, in seconds."""
HEARTBEAT_MARGIN = 1.5
"""READ_TIMEOUT_S must be this many heartbeat gaps at least: a late heartbeat must not cut."""
MAX_TIMEOUT_S = 86_400.0
"""A day: beyond it a socket timeout overflows on some platforms, and no answer takes that long."""
MAX_LIMIT = 1_000_000_000
MAX_TTL_DAYS = 36_500


def parse_csv(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def check_read_timeout(value: float, heartbeat: float) -> float:
    """``READ_TIMEOUT_S`` as given, unless it would cut Helix's normal pause between heartbeats."""
    floor = heartbeat * HEARTBEAT_MARGIN
    if value < floor:
        raise ValueError(
            f"READ_TIMEOUT_S must be at least {floor:g} s: Helix sends a heartbeat only every "
            f"{heartbeat:g} s while it works (HELIX_HEARTBEAT_S), so a shorter wait cuts healthy "
            "answers"
        )
    return value


def check_models(value: str) -> str:
    """``HELIX_MODELS``: comma-separated ids a URL path and a model list can carry."""
    for model_id in parse_csv(value):
        if "/" in model_id or not all(c.isprintable() and not c.isspace() for c in model_id):
            raise ValueError(
                "HELIX_MODELS must be comma-separated model ids without spaces, slashes or "
                "control characters, e.g. helix-consultant"
            )
    return value


def _check_url(value: str) -> str:
    helix_base_url(value)  # the client's own rule: what passes here, the client can use
    return value.strip()


def _check_headers(value: str) -> str:
    names = parse_csv(value)
    if not names:
        raise ValueError(
            "CONVERSATION_HEADERS must name at least one header, e.g. " + DEFAULT_HEADERS
        )
    for name in names:
        if not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise ValueError(
                f"CONVERSATION_HEADERS must be comma-separated header names; {name!r} is not one"
            )
    return ",".join(names)


def _check_api_key(value: str) -> str:
    if not all(c.isascii() and c.isprintable() and not c.isspace() for c in value):
        # Never echo the key: this message reaches logs and the chat.
        raise ValueError("HELIX_API_KEY must be printable ASCII characters without spaces")
    return value


def _check_store_url(value: str) -> str:
    from .stores import SUPPORTED_SCHEMES

    if not value:
        return value  # empty: the environment variable, else the default file
    if url_scheme(value) not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"SESSION_STORE_URL must start with one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)}; got {redact_url(value)!r}"
        )
    problem = authority_problem(value) if url_scheme(value) not in ("memory", "sqlite") else None
    if problem is not None:
        raise ValueError(f"SESSION_STORE_URL {redact_url(value)!r} {problem}")
    return value


def _check_tasks(value: str) -> str:
    if value not in ("forward", "skip"):
        raise ValueError("TASKS must be 'forward' or 'skip'")
    return value


def _number(name: str, high: float, must: str, *, zero: bool) -> Callable[[Any], Any]:
    """The rule of a numeric valve: finite, above 0 (or 0 itself if ``zero``), at most ``high``.

    NaN and infinity would break socket timeouts; huge values overflow them and date arithmetic.
    """

    def check(value: Any) -> Any:
        above = value >= 0 if zero else value > 0
        if not (math.isfinite(value) and above and value <= high):
            raise ValueError(f"{name} must be {must}")
        return value

    return check


RULES: dict[str, Callable[[Any], Any]] = {
    "HELIX_BASE_URL": _check_url,
    "HELIX_API_KEY": _check_api_key,
    "HELIX_MODELS": check_models,
    "CONVERSATION_HEADERS": _check_headers,
    "SESSION_STORE_URL": _check_store_url,
    "TASKS": _check_tasks,
    "MAX_RETRIES": _number("MAX_RETRIES", 10, "a whole number from 0 to 10", zero=True),
    "SESSION_TTL_DAYS": _number(
        "SESSION_TTL_DAYS",
        MAX_TTL_DAYS,
        f"0 (keep forever) or a number of days up to {MAX_TTL_DAYS:,}",
        zero=True,
    ),
    **{
        name: _number(
            name, MAX_LIMIT, f"a whole number greater than 0 and at most {MAX_LIMIT:,}", zero=False
        )
        for name in ("MAX_HISTORY_MESSAGES", "MAX_MESSAGE_CHARS", "MAX_HISTORY_CHARS")
    },
    **{
        name: _number(
            name,
            MAX_TIMEOUT_S,
            f"a number of seconds greater than 0 and at most {MAX_TIMEOUT_S:,.0f}",
            zero=False,
        )
        for name in ("CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "ANSWER_TIMEOUT_S", "HELIX_HEARTBEAT_S")
    },
}
"""One rule per valve, used by the valve's validator and by its environment variable."""
''',
    'helix_pipeline/valves.py': r'''"""Valves: the settings an admin sees in Open WebUI (Admin > Settings > Pipelines).

Every valve has a description, a default from the environment variable of the same name
(:mod:`helix_pipeline.valve_env`), and one rule (:mod:`helix_pipeline.valve_rules`) whose message
names the valve and says what the value must be. A bad saved value never stops the Pipelines
server from starting (see :attr:`HistoryValves.tolerant`), and :meth:`HistoryValves.problems`
tells the runtime which valves are unusable, however they were set. There is no
``extra="forbid"``: the Pipelines server overlays a saved ``valves.json``, and a stale key from an
older version must not break loading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import ModelWrapValidatorHandler  # pydantic<2.9: not top-level
from typing_extensions import Self

from .history import Budget
from .payload import DEFAULT_MODEL
from .urls import EXAMPLE_BASE_URL
from .valve_env import (
    api_key_from_env,
    default_store_url,
    from_env,
    read_timeout_from_env,
    store_url_from_env,
)
from .valve_rules import (
    DEFAULT_HEADERS,
    HELIX_HEARTBEAT_S,
    RULES,
    check_models,
    check_read_timeout,
    parse_csv,
)

__all__ = [
    "DEFAULT_HEADERS",
    "FilterValves",
    "HelixValves",
    "HistoryValves",
    "default_store_url",
    "parse_csv",
]

log = logging.getLogger(__name__)

_STRICT = "helix_strict"
"""Validation context key: refuse bad values even while the valves class is tolerant."""


class HistoryValves(BaseModel):
    """The valves of the history service, shared by the Helix pipe and the session filter."""

    # A validation error must not echo the value: it may be a store URL with its password.
    model_config = ConfigDict(hide_input_in_errors=True)

    tolerant: ClassVar[bool] = False
    """While true, a value that breaks its valve's rule is replaced by the default and kept in
    :meth:`problems` instead of refused. The pipeline files set it until ``on_startup``: the
    Pipelines server rebuilds the valves from ``valves.json`` before that, and an error there stops
    the whole server from starting. After it, an admin's bad value is refused, naming the valve."""
    _refused: dict[str, str] = PrivateAttr(default_factory=dict)

    HISTORY_ENABLED: bool = Field(
        default_factory=from_env("HISTORY_ENABLED", True),
        description="On: attach the stored history and record every turn. Off: forward untouched, record nothing.",
    )
    SESSION_STORE_URL: str = Field(
        default="",
        description="Where conversations are kept: sqlite:////abs/path.db, redis://host:6379/0 or "
        "postgresql://user:pass@host/db when several workers share it. Empty: the SESSION_STORE_URL "
        "environment variable, else an SQLite file beside the pipelines. Put a URL with a password "
        "in the environment: the Pipelines server shows valves to anyone who can reach it.",
    )
    MAX_HISTORY_MESSAGES: int = Field(
        default_factory=from_env("MAX_HISTORY_MESSAGES", 100),
        description="Most messages sent to Helix in one request (Helix accepts at most 100).",
    )
    MAX_MESSAGE_CHARS: int = Field(
        default_factory=from_env("MAX_MESSAGE_CHARS", 100_000),
        description="Longest message sent to Helix, in characters; longer ones are truncated (Helix accepts 100,000).",
    )
    MAX_HISTORY_CHARS: int = Field(
        default_factory=from_env("MAX_HISTORY_CHARS", 500_000),
        description="Total characters of history sent to Helix; the oldest turns are left out beyond it.",
    )
    STORE_TEMPORARY_CHATS: bool = Field(
        default_factory=from_env("STORE_TEMPORARY_CHATS", False),
        description="Keep temporary chats in the session store too (off: in memory only, gone on restart).",
    )
    SESSION_TTL_DAYS: int = Field(
        default_factory=from_env("SESSION_TTL_DAYS", 0),
        description="Delete conversations inactive for this many days (checked at startup); 0 keeps them forever.",
    )

    @field_validator("*")
    @classmethod
    def _follows_its_rule(cls, value: Any, info: ValidationInfo) -> Any:
        rule = RULES.get(info.field_name or "")
        value = value if rule is None else rule(value)
        heartbeat = info.data.get("HELIX_HEARTBEAT_S")
        if info.field_name == "READ_TIMEOUT_S" and heartbeat:  # declared before it
            check_read_timeout(value, heartbeat)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate_saved_values(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        try:
            return handler(data)
        except ValidationError as exc:
            strict = isinstance(info.context, Mapping) and info.context.get(_STRICT)
            if not cls.tolerant or strict or not isinstance(data, Mapping):
                raise
            refused = _reasons(exc)
        for name, reason in refused.items():
            log.warning("the saved %s valve is refused, its default is used: %s", name, reason)
        valves = handler({k: v for k, v in data.items() if k not in refused})
        valves._refused = refused
        return valves

    def problems(self) -> dict[str, str]:
        """Each valve that breaks its rule, with what it must be; empty when every valve is usable.

        Checks the values as they are now, so values set without validation (``model_construct``)
        are caught too, plus the saved values that were replaced by defaults while :attr:`tolerant`.
        """
        values = {name: getattr(self, name, None) for name in type(self).model_fields}
        try:
            type(self).model_validate(values, context={_STRICT: True})
        except ValidationError as exc:
            return {**self._refused, **_reasons(exc)}
        return dict(self._refused)

    def budget(self) -> Budget:
        return Budget(
            max_messages=self.MAX_HISTORY_MESSAGES,
            max_message_chars=self.MAX_MESSAGE_CHARS,
            max_total_chars=self.MAX_HISTORY_CHARS,
        )

    def store_url(self, pipelines_dir: Path | None = None) -> str:
        """The valve, else the ``SESSION_STORE_URL`` environment variable, else the default file."""
        return self.SESSION_STORE_URL or store_url_from_env() or default_store_url(pipelines_dir)


class HelixValves(HistoryValves):
    """The valves of the Helix manifold pipe."""

    HELIX_BASE_URL: str = Field(
        default_factory=from_env("HELIX_BASE_URL", EXAMPLE_BASE_URL),
        description="Where Helix listens, with or without /v1, e.g. http://localhost:8001.",
    )
    HELIX_API_KEY: str = Field(
        default="",
        description="Sent as 'Authorization: Bearer <key>'. Empty: the HELIX_API_KEY environment "
        "variable, which stays out of the valves (the Pipelines server shows valves to anyone who "
        "can reach it); no key if neither is set.",
        json_schema_extra={"format": "password"},
    )
    HELIX_MODELS: str = Field(
        default_factory=from_env("HELIX_MODELS", "helix-consultant"),
        description="Models to offer when Helix cannot be asked for its list (comma separated).",
    )
    CONVERSATION_HEADERS: str = Field(
        default_factory=from_env("CONVERSATION_HEADERS", DEFAULT_HEADERS),
        description="Headers that carry the chat id to Helix (comma separated). Current Helix reads "
        "X-OpenWebUI-Chat-Id, the ADR-029 build X-Conversation-ID.",
    )
    CONNECT_TIMEOUT_S: float = Field(
        default_factory=from_env("CONNECT_TIMEOUT_S", 5.0),
        description="Seconds to wait for a connection to Helix.",
    )
    HELIX_HEARTBEAT_S: float = Field(
        default_factory=from_env("HELIX_HEARTBEAT_S", HELIX_HEARTBEAT_S),
        description="Seconds between the heartbeats Helix sends while it works (10 in Helix). "
        "READ_TIMEOUT_S must be at least 1.5 times this.",
    )
    READ_TIMEOUT_S: float = Field(
        default_factory=read_timeout_from_env,
        description="Seconds Helix may stay silent before the turn fails (Helix sends a heartbeat every 10 s, "
        "so at least 15; a whole answer may take 600 s).",
    )
    ANSWER_TIMEOUT_S: float = Field(
        default_factory=from_env("ANSWER_TIMEOUT_S", 660.0),
        description="Seconds a non-streaming answer (every background task, and chats with streaming "
        "off) may take in all: Helix sends nothing until it is done, and may work 600 s.",
    )
    MAX_RETRIES: int = Field(
        default_factory=from_env("MAX_RETRIES", 2),
        description="Retries when Helix cannot be reached or answers 429/502/503/504 before any answer began.",
    )
    TASKS: Literal["forward", "skip"] = Field(
        default_factory=from_env("TASKS", "skip"),
        description="Background tasks (titles, tags, follow-ups): 'skip' answers them locally with an "
        "empty result (Open WebUI then titles the chat with its first message); 'forward' sends each "
        "to Helix without the conversation header, where it is a full Claude Code run. Or set Open "
        "WebUI's task model to a small model.",
    )

    def api_key(self) -> str | None:
        """The valve, else the ``HELIX_API_KEY`` environment variable; ``None`` without either."""
        return self.HELIX_API_KEY or api_key_from_env() or None

    def header_names(self) -> tuple[str, ...]:
        return tuple(parse_csv(self.CONVERSATION_HEADERS))

    def model_ids(self) -> list[str]:
        """The ``HELIX_MODELS`` valve's ids; the default model when it is empty or unusable."""
        try:
            ids = parse_csv(check_models(self.HELIX_MODELS))
        except (ValueError, AttributeError, TypeError):  # set without validation: not a usable list
            ids = []
        return ids or [DEFAULT_MODEL]


class FilterValves(HistoryValves):
    """The valves of the session filter. ``pipelines`` and ``priority`` are the Pipelines server's."""

    pipelines: list[str] = Field(
        default_factory=lambda: ["helix-consultant"],
        description=(
            "Model ids (as Open WebUI lists them) whose chats this filter gives memory and "
            "records. Default: helix-consultant, the model Helix serves, and nothing else; "
            "['*'] would record every model's chats (gpt-4o's too) in the Helix store."
        ),
    )
    priority: int = Field(default=0, description="Order among filters: lower runs first.")


def _reasons(exc: ValidationError) -> dict[str, str]:
    """Valve name -> why its value was refused: our rule's own words, else pydantic's."""
    reasons: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "valves"
        context = error.get("ctx") or {}
        if error["type"] == "value_error" and "error" in context:
            reason = str(context["error"])
        else:
            reason = f"{name} is invalid: {error['msg']}"
        reasons.setdefault(name, reason)
    return reasons
''',
    'helix_pipeline/wire_errors.py': r'''"""The one translation of ``requests``/``urllib3`` failures and HTTP error answers into our errors.

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
''',
}

_helix_library = load_embedded(
    'helix_pipeline__0_1_0__79da463e4a', '0.1.0', 'helix.py', _HELIX_SOURCES
)

import asyncio
from collections.abc import Iterator
from typing import Any

from helix_pipeline__0_1_0__79da463e4a.pipe import HelixPipe
from helix_pipeline__0_1_0__79da463e4a.valves import HelixValves

__all__ = ["Pipeline"]


class Pipeline:
    class Valves(HelixValves):
        """Helix connection and conversation memory (Admin > Settings > Pipelines)."""

        tolerant = True  # until on_startup: a bad value in valves.json must not stop the server

    def __init__(self) -> None:
        self.type = "manifold"
        self.id = "helix"
        self.name = "Helix: "
        self.valves = self.Valves()
        self._helix = HelixPipe(lambda: self.valves)
        self.pipelines = self._helix.models

    async def on_startup(self) -> None:
        self.Valves.tolerant = False  # valves.json is restored: refuse an admin's bad value
        await asyncio.to_thread(self._helix.startup)

    async def on_shutdown(self) -> None:
        await asyncio.to_thread(self._helix.shutdown)

    async def on_valves_updated(self) -> None:
        await asyncio.to_thread(self._helix.refresh_models)

    async def inlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return self._helix.inlet(body, user)

    async def outlet(self, body: dict[str, Any], user: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._helix.outlet, body, user)

    def pipe(
        self, user_message: str, model_id: str, messages: list[dict[str, Any]], body: dict[str, Any]
    ) -> str | Iterator[str | dict[str, Any]]:
        return self._helix.pipe(user_message, model_id, messages, body)
