"""helix-pipeline: conversation memory for the Helix agent backend behind Open WebUI."""

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
