"""Opening the Redis store: the driver, the URL's own options, what each failure means, and
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
