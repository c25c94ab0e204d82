"""A loopback HTTP relay in front of Helix that records every request it passes on.

The demo points the pipe at it, so that its transcript shows what Helix really received, from
FakeHelix or from a real Helix alike. Answers, streams included, go back as they arrive; an
unreachable Helix is a 502.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
import urllib3.exceptions

from ..client import iter_body
from .records import RecordedRequest

__all__ = ["RecordingRelay"]

log = logging.getLogger(__name__)

_HOP_BY_HOP = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}


class RecordingRelay:
    """The relay to ``upstream`` (Helix's base URL, with or without ``/v1``): a context manager."""

    def __init__(self, upstream: str, *, timeout: float = 600.0) -> None:
        base = upstream.rstrip("/")
        self.upstream = base[: -len("/v1")] if base.endswith("/v1") else base
        self.timeout = timeout
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self.session = requests.Session()
        self._server = _RelayServer(("127.0.0.1", 0), _RelayHandler)
        self._server.relay = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests received so far, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> RecordingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.session.close()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    relay: RecordingRelay

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("relay: a connection from %s failed", client_address, exc_info=True)


class _RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RelayServer

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("relay %s", format % args)

    def _relay(self, method: str) -> None:
        relay = self.server.relay
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        relay.record(RecordedRequest(method, self.path, dict(self.headers.items()), body))
        self.close_connection = True
        try:
            answer = relay.session.request(
                method,
                relay.upstream + self.path,
                data=raw or None,
                headers=headers,
                stream=True,
                timeout=(5.0, relay.timeout),
            )
        except requests.RequestException as exc:
            self._unreachable(exc)
            return
        with answer:
            self._pass_on(answer)

    def _unreachable(self, exc: requests.RequestException) -> None:
        detail = json.dumps({"detail": f"relay: Helix unreachable ({type(exc).__name__})"})
        self.send_response(502)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(detail)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(detail.encode())

    def _pass_on(self, answer: requests.Response) -> None:
        """Helix's answer, chunk by chunk as it arrives; a cut stays a cut (no final chunk)."""
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Retry-After"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in iter_body(answer):
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            log.debug("relay: Helix's answer was cut off", exc_info=True)
            return
        self.wfile.write(b"0\r\n\r\n")
