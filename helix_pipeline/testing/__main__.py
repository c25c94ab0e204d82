"""Runs FakeHelix in the foreground: ``python -m helix_pipeline.testing --port 8001``.

The command itself lives in :mod:`.cli` (so importing the package never imports ``__main__``);
``--help`` lists the options.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]


if __name__ == "__main__":
    main()
