"""``python -m helix_pipeline.testing``: FakeHelix in the foreground, for local trials.

:func:`main` parses the options (host, port, header mode, API key, heartbeats, delays, a fault),
logs every request at INFO and serves until interrupted. ``__main__.py`` calls it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .faults import Fault
from .helix_rules import _HEADER_BY_MODE
from .server import FakeHelix

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m helix_pipeline.testing``: run FakeHelix in the foreground, logging requests."""
    parser = argparse.ArgumentParser(
        prog="python -m helix_pipeline.testing",
        description="Run FakeHelix, a Helix look-alike for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--header-mode", choices=sorted(_HEADER_BY_MODE), default="current")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--heartbeats", type=int, default=1, help="'.' heartbeats per stream")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="seconds between words")
    parser.add_argument("--fault", choices=[f.value for f in Fault], default=Fault.NONE.value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    helix = FakeHelix(
        header_mode=args.header_mode,
        api_key=args.api_key,
        heartbeats=args.heartbeats,
        heartbeat_interval=args.heartbeat_interval,
        chunk_delay=args.chunk_delay,
        fault=Fault(args.fault),
        host=args.host,
        port=args.port,
    )
    logger.info(
        "FakeHelix on http://%s:%d (header mode %s)", args.host, args.port, args.header_mode
    )
    try:
        helix.serve_forever()
    except KeyboardInterrupt:
        logger.info("FakeHelix stopped")
