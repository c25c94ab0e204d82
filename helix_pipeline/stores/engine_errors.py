"""What a store engine says when it cannot start: a URL it cannot use, a driver not installed.

Every engine module imports these from here (not from the ``stores`` package, which imports the
engines), so the package has no import cycle.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..urls import redact_url

__all__ = ["missing_driver", "url_error"]


def url_error(engine: str, url: str, problem: str, fix: str) -> ConfigError:
    """The error for a store URL that cannot work: what is wrong with it, and the form to use."""
    return ConfigError(
        f"Invalid {engine} session store URL {redact_url(url)!r}: {problem}. Set "
        f"SESSION_STORE_URL to {fix}",
        setting="SESSION_STORE_URL",
    )


def missing_driver(engine: str, packages: str, extra: str) -> ConfigError:
    """The error for an engine whose driver is not installed, with the fix for every host.

    ``pip install`` is no advice inside a Pipelines server or Open WebUI: each installs what the
    ``requirements:`` line of a file's frontmatter names, which ``bundle --with`` writes.
    """
    return ConfigError(
        f"The {engine} session store needs {packages}: pip install helix-pipeline[{extra}], or "
        f"in a Pipelines server or Open WebUI load the files helix-pipeline bundle --with {extra} "
        "writes, whose requirements: line installs them",
        setting="SESSION_STORE_URL",
    )
