"""Session stores: one protocol, one module per engine, opened from a URL.

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
