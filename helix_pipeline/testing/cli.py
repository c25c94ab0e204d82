"""``python -m helix_pipeline.testing``: FakeHelix in the foreground, for local trials.

:func:`main` parses the options (host, port, header mode, API key, heartbeats, delays, a fault),
logs every request at INFO and serves until interrupted. ``__main__.py`` calls it. A port that is
taken or out of range, or a host that is not this machine's, ends it with one line saying what to
change and exit code 1 (2 for a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import threading
from collections.abc import Sequence

from .faults import Fault
from .helix_rules import HEADER_BY_MODE
from .server import FakeHelix

__all__ = ["listen_problem", "main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m helix_pipeline.testing``: run FakeHelix in the foreground, logging requests."""
    parser = argparse.ArgumentParser(
        prog="python -m helix_pipeline.testing",
        description="Run FakeHelix, a Helix look-alike for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8001, help="1 to 65535 (default: 8001)")
    parser.add_argument("--header-mode", choices=sorted(HEADER_BY_MODE), default="current")
    parser.add_argument(
        "--proxy-api-key",
        default=None,
        help="act as a proxy that requires 'Authorization: Bearer <key>' (Helix checks none)",
    )
    parser.add_argument("--heartbeats", type=int, default=1, help="'.' heartbeats per stream")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--separator-delay", type=float, default=1.0, help="seconds from first chunk to '---'"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="seconds between words")
    parser.add_argument("--fault", choices=[f.value for f in Fault], default=Fault.NONE.value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    helix = FakeHelix(
        header_mode=args.header_mode,
        proxy_api_key=args.proxy_api_key,
        heartbeats=args.heartbeats,
        heartbeat_interval=args.heartbeat_interval,
        separator_delay=args.separator_delay,
        chunk_delay=args.chunk_delay,
        fault=Fault(args.fault),
        host=args.host,
        port=args.port,
    )
    try:
        helix.start()
    except OSError as exc:
        parser.exit(1, f"{parser.prog}: error: {listen_problem(args.host, args.port, exc)}\n")
    logger.info("FakeHelix on %s (header mode %s)", helix.url, args.header_mode)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        logger.info("FakeHelix stopped")
    finally:
        helix.stop()


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port: give a number from 1 to 65535")
    return port


def listen_problem(host: str, port: int, exc: OSError) -> str:
    """Why FakeHelix cannot listen on ``host:port``, and what to change."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use: stop what listens there, or pick another --port"
    if exc.errno == errno.EACCES:
        return (
            f"no permission to listen on port {port} (below 1024 needs root): pick another --port"
        )
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"{host!r} is not an address of this machine: use --host 127.0.0.1"
    return f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --port"
