"""The demo's recording relay passes Helix's answers on as they arrive and records each request."""

from __future__ import annotations

import threading

import requests

from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.relay import RecordingRelay

from .store_servers import free_port


class TestRecordingRelay:
    def test_passes_a_stream_on_before_it_has_ended(self) -> None:
        hold = threading.Event()
        with FakeHelix(hold=hold) as helix, RecordingRelay(helix.url) as relay:
            response = requests.post(
                f"{relay.url}/v1/chat/completions",
                json={
                    "model": "helix-consultant",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"X-OpenWebUI-Chat-Id": "chat-1"},
                stream=True,
                timeout=10,
            )
            with response:
                lines = response.iter_lines()
                first = next(lines)
                hold.set()
                rest = b"\n".join(lines)

        assert first.startswith(b"data: ")
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert relay.chat_requests()[0].header("X-OpenWebUI-Chat-Id") == "chat-1"
        assert helix.chat_requests[0].header("X-OpenWebUI-Chat-Id") == "chat-1"

    def test_answers_502_when_helix_is_gone(self) -> None:
        with RecordingRelay(f"http://127.0.0.1:{free_port()}/v1") as relay:
            response = requests.get(f"{relay.url}/health", timeout=10)

        assert response.status_code == 502
        assert "unreachable" in response.json()["detail"]
        assert [r.path for r in relay.requests] == ["/health"]
