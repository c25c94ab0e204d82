"""When a request to Helix is sent again: only before any answer began, a few times, backing off.

Which failures qualify is read from the wire (:func:`helix_pipeline.wire_errors.is_retryable`,
:data:`RETRY_STATUSES`); :class:`RetryPolicy` says how often and how long to wait in between,
honouring Helix's ``Retry-After`` up to a cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RETRY_STATUSES", "RetryPolicy"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""HTTP answers that say "not now" before any answer began: sent again while retries are left."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` more sends, waiting ``backoff_base * 2**attempt`` (capped at
    ``backoff_max``) or Helix's ``Retry-After`` (capped at ``retry_after_max``) in between."""

    max_retries: int = 2
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    retry_after_max: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def allows(self, attempt: int) -> bool:
        """Whether a failed send number ``attempt`` (from 0) may be sent again."""
        return attempt < self.max_retries

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before sending again after the failed send number ``attempt``."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return min(self.backoff_base * 2.0**attempt, self.backoff_max)

    def wait(self, attempt: int, retry_after: float | None, *, reason: str, shown_url: str) -> None:
        """Log why the request to Helix at ``shown_url`` is sent again, then wait :meth:`delay`."""
        delay = self.delay(attempt, retry_after)
        log.warning(
            "Helix at %s: %s, retry %d of %d in %.2f s",
            shown_url,
            reason,
            attempt + 1,
            self.max_retries,
            delay,
        )
        self.sleep(delay)
