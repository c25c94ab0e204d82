"""The one exception tree of helix-pipeline.

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
