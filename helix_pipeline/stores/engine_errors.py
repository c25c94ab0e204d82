"""What a store engine says when it cannot start: a URL it cannot use.

Every engine module imports these from here (not from the ``stores`` package, which imports the
engines), so the package has no import cycle.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..urls import redact_url

__all__ = ["url_error"]


def url_error(engine: str, url: str, problem: str, fix: str) -> ConfigError:
    """The error for a store URL that cannot work: what is wrong with it, and the form to use."""
    return ConfigError(
        f"Invalid {engine} session store URL {redact_url(url)!r}: {problem}. Set "
        f"SESSION_STORE_URL to {fix}",
        setting="SESSION_STORE_URL",
    )
