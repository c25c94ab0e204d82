"""The URL rules every layer shares: Helix's base URL, and a URL made safe to show.

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
