"""Notices in the wording of the releases before notices carried a mark (0.1.0 up to the mark).

Open WebUI keeps every notice it was shown in its chats and sends it back on each later turn, so a
chat from before the upgrade still holds these texts, forever. Without this, such a chat would fork
its stored history once and send its old notices to Helix on every turn after.

The texts below are what those releases wrote, frozen: they are history, not the current wording.
Rewording a notice in :mod:`helix_pipeline.notices` never changes them; nothing new is written in
this form.
"""

from __future__ import annotations

import re

__all__ = ["without_legacy_notice"]

_WARNING = "⚠️"
_POINTERS = (
    "(Details are in the Pipelines server log.)",
    "(Details are in Open WebUI's log.)",
)
_CUT_OFF = f"\n\n{_WARNING} The answer was cut off: "
_TRIM_LINE = re.compile(r"\n\n_\(Helix gets a shortened history: [^\n]*\)_\Z")


def without_legacy_notice(content: str) -> str | None:
    """An assistant message's ``content`` without an unmarked notice at its end; ``None`` when
    the whole message is one. Content without one comes back unchanged."""
    if content.endswith(")_"):
        content = _TRIM_LINE.sub("", content)
    if not content.endswith(_POINTERS):
        return content
    if content.startswith(_WARNING):
        return None
    cut = content.rfind(_CUT_OFF)
    return content[:cut] if cut >= 0 else content
