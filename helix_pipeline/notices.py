"""The one short message the person in the chat sees when a turn fails.

It says what went wrong and what to do; the details go to the log. Never a traceback, never a
secret (error messages are built without them, see :mod:`helix_pipeline.errors`).
"""

from __future__ import annotations

from .errors import ConfigError, HelixPipelineError

__all__ = ["EMPTY_ANSWER", "UNEXPECTED", "notice_for"]

_DETAILS = "(Details are in the Pipelines server log.)"
EMPTY_ANSWER = "⚠️ Helix sent an empty answer. Please try again."
UNEXPECTED = f"⚠️ helix-pipeline hit an unexpected error and could not answer. {_DETAILS}"


def notice_for(exc: HelixPipelineError, *, cut_off: bool = False) -> str:
    """The chat message for ``exc``; ``cut_off`` when part of the answer was already shown."""
    if cut_off:
        return (
            f"\n\n⚠️ The answer was cut off: {exc.message} "
            f"What arrived above is kept; ask again to continue. {_DETAILS}"
        )
    if isinstance(exc, ConfigError):
        return f"⚠️ helix-pipeline is misconfigured: {exc.message} {_DETAILS}"
    return f"⚠️ {exc.message} {_DETAILS}"
