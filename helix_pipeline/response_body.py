"""Reading the body of Helix's HTTP responses: bytes as they arrive, bounded text, JSON, deltas.

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
