"""Fault: the ways FakeHelix can be told to fail a chat completion, as real servers fail.

A test sets :attr:`FakeHelix.fault <helix_pipeline.testing.FakeHelix.fault>` for every request or
calls :meth:`FakeHelix.fail_next <helix_pipeline.testing.FakeHelix.fail_next>` for the next few;
the handler (:mod:`.handler`) reads the fault and answers with a status, a cut connection or a
broken stream.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Fault"]


class Fault(str, Enum):
    """Ways a chat completion can fail (:attr:`FakeHelix.fault`, :meth:`FakeHelix.fail_next`).

    Faults apply to ``POST /v1/chat/completions`` only; stream faults (drop, stall, no [DONE],
    malformed chunk, error in stream) act on stream requests, and drop/stall on plain ones too.
    """

    NONE = "none"
    DISCONNECT = "disconnect"  # close the connection without any answer
    SLOW_FIRST_BYTE = "slow_first_byte"  # wait ``fault_delay`` s, then answer normally
    DROP_MID_STREAM = "drop_mid_stream"  # cut the connection after the first chunks
    STALL_MID_STREAM = "stall_mid_stream"  # go silent for ``fault_delay`` s after the first chunk
    NO_DONE = "no_done"  # end the stream cleanly but without the final chunk and [DONE]
    MALFORMED_CHUNK = "malformed_chunk"  # one chunk that is not JSON, the rest normal
    ERROR_IN_STREAM = "error_in_stream"  # an ``{"error": {...}}`` chunk after the first chunk
    JSON_TO_STREAM = "json_to_stream"  # a plain JSON completion to a stream request
    FEHLER = "fehler"  # a 200 completion whose text is Helix's ``Fehler: ...``
    SERVER_ERROR = "server_error"  # 500 with Helix's flat ``{"error", "type", "message"}``
    RATE_LIMITED = "rate_limited"  # 429 with ``Retry-After: <retry_after>``
    BAD_GATEWAY = "bad_gateway"  # 502, plain text
    UNAVAILABLE = "unavailable"  # 503, ``{"detail": ...}``
    PLAIN_TEXT_ERROR = "plain_text_error"  # 500, ``text/plain``
    HTML_ERROR = "html_error"  # 502 from a proxy, ``text/html``
