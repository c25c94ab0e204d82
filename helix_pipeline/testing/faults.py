"""Fault: the ways FakeHelix can be told to fail a chat completion.

A test sets :attr:`FakeHelix.fault <helix_pipeline.testing.FakeHelix.fault>` for every request or
calls :meth:`FakeHelix.fail_next <helix_pipeline.testing.FakeHelix.fail_next>` for the next few;
the handler (:mod:`.handler`) reads the fault and answers with a status, a cut connection or a
broken stream.

Three families, named for who fails that way:

- **Helix's own forms**, exactly as the real app (uke16/Helix at b979a99) answers when something
  goes wrong inside it: ``unavailable``, ``error-before-first-chunk``, ``error-mid-stream``,
  ``claude-crash``, ``claude-error-result``, ``timeout``, ``unvalidated`` and ``server-error``.
- **The network** between us and any server: ``disconnect``, ``slow-first-byte``,
  ``drop-mid-stream``, ``stall-mid-stream``, ``no-done``, ``malformed-chunk``, ``json-to-stream``.
- **What real Helix never does**, kept for what sits in front of it or replaces it: ``proxy-...``
  (a reverse proxy's 429, 502, 503 and plain-text or HTML error pages) and
  ``openai-compatible-...`` (another OpenAI-compatible server's error chunk). An API key check is
  :attr:`FakeHelix.proxy_api_key`, for the same reason.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["HELIX_FORMS", "Fault"]


class Fault(str, Enum):
    """Ways a chat completion can fail (:attr:`FakeHelix.fault`, :meth:`FakeHelix.fail_next`).

    Faults apply to ``POST /v1/chat/completions`` only. Each of Helix's own forms answers a stream
    request and a plain one differently, as Helix does; see the comment beside each.
    """

    NONE = "none"
    # -- Helix's own failures (b979a99) ---------------------------------------------------------
    UNAVAILABLE = "unavailable"
    """Its Claude CLI check failed: a stream holding only ``Claude Code ist nicht verfuegbar.``;
    JSON ``Claude Code ist nicht verfuegbar. Bitte spaeter versuchen.``"""
    ERROR_BEFORE_FIRST_CHUNK = "error-before-first-chunk"
    """An exception before the stream's first chunk: 200 and an empty, properly closed stream;
    JSON: the 500 of ``server-error`` (the same code runs outside any handler there)."""
    ERROR_MID_STREAM = "error-mid-stream"
    """An exception after the stream began: ``[Starte Claude Code...]``, then the content
    ``\\n\\n**Fehler:** <error_text>``, a finish chunk and ``[DONE]``; JSON
    ``Unerwarteter Fehler: <error_text>``."""
    CLAUDE_CRASH = "claude-crash"
    """Claude Code crashed: the stream shows the validation hint, then ``Verarbeitung
    abgeschlossen.`` (Helix's text when no answer was found); JSON
    ``Fehler bei der Verarbeitung:\\n```\\n<crash_stderr>\\n````."""
    CLAUDE_ERROR_RESULT = "claude-error-result"
    """Claude Code ended with an error result: JSON ``Fehler: <error_text>``; a stream answers as
    for ``claude-crash`` (Helix's streaming path does not look at the error flag)."""
    TIMEOUT = "timeout"
    """Claude Code ran past Helix's 600 s: ``\\n\\n**Timeout** - Verarbeitung hat zu lange
    gedauert. Bitte versuche es erneut.`` after the first chunk; JSON ``Timeout - die Verarbeitung
    hat zu lange gedauert.``"""
    UNVALIDATED = "unvalidated"
    """Not a failure: the answer comes whole, but Helix adds its validation hint (before the
    answer in a stream, after it in JSON)."""
    SERVER_ERROR = "server-error"
    """An exception outside the stream: 500 with Helix's compact body ``{"error":"Internal Server
    Error","type","message","path","timestamp"}``, a server file path in its message."""
    # -- the network, for any server ------------------------------------------------------------
    DISCONNECT = "disconnect"  # close the connection without any answer
    SLOW_FIRST_BYTE = "slow-first-byte"  # wait ``fault_delay`` s, then answer normally
    DROP_MID_STREAM = "drop-mid-stream"  # cut the connection after the answer's first word
    STALL_MID_STREAM = "stall-mid-stream"  # go silent ``fault_delay`` s after the first word
    NO_DONE = "no-done"  # end the stream cleanly but without the final chunk and [DONE]
    MALFORMED_CHUNK = "malformed-chunk"  # one chunk that is not JSON, the rest normal
    JSON_TO_STREAM = "json-to-stream"  # a whole JSON completion to a stream request
    # -- what real Helix never sends: a proxy in front, or another OpenAI-compatible server ---
    PROXY_RATE_LIMITED = "proxy-rate-limited"  # 429 with ``Retry-After: <retry_after>``
    PROXY_BAD_GATEWAY = "proxy-bad-gateway"  # 502, plain text
    PROXY_UNAVAILABLE = "proxy-unavailable"  # 503, ``{"detail": ...}`` and Retry-After
    PROXY_PLAIN_TEXT_ERROR = "proxy-plain-text-error"  # 500, ``text/plain``
    PROXY_HTML_ERROR = "proxy-html-error"  # 502, an nginx ``text/html`` page
    OPENAI_COMPATIBLE_ERROR_CHUNK = "openai-compatible-error-chunk"
    """An ``{"error": {...}}`` chunk after the answer's first word, as some OpenAI-compatible
    servers send; real Helix reports errors in content (``error-mid-stream``)."""


HELIX_FORMS = (
    Fault.UNAVAILABLE,
    Fault.ERROR_BEFORE_FIRST_CHUNK,
    Fault.ERROR_MID_STREAM,
    Fault.CLAUDE_CRASH,
    Fault.CLAUDE_ERROR_RESULT,
    Fault.TIMEOUT,
    Fault.SERVER_ERROR,
)
"""The failures real Helix (b979a99) produces itself, for tests that walk through all of them."""
