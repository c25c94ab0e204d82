"""SessionFilter in-process: unusable valves never make a hook raise."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest

from helix_pipeline.session_filter import SessionFilter
from helix_pipeline.valves import FilterValves

BODY = {
    "messages": [{"role": "user", "content": "hello"}],
    "metadata": {"chat_id": "chat-1", "message_id": "a1"},
}


class TestUnusableValves:
    def test_bodies_pass_unchanged_the_log_names_the_valve_and_a_fix_works_at_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        current = {"valves": FilterValves.model_construct(MAX_HISTORY_MESSAGES=-1, pipelines="*")}
        session_filter = SessionFilter(lambda: current["valves"])
        with caplog.at_level(logging.WARNING, logger="helix_pipeline"):
            session_filter.startup()
            body = copy.deepcopy(BODY)
            assert session_filter.inlet(body, {"id": "u"}) == BODY
            assert session_filter.outlet(body, {"id": "u"}) == BODY
            session_filter.shutdown()
        assert "MAX_HISTORY_MESSAGES" in caplog.text and "pipelines" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        current["valves"] = FilterValves(SESSION_STORE_URL=f"sqlite:///{tmp_path / 's.db'}")
        turn = {**copy.deepcopy(BODY), "metadata": {"chat_id": "chat-1"}}
        outlet = {
            "chat_id": "chat-1",
            "id": "a1",
            "messages": [
                {"role": "user", "content": "hello", "id": "u1"},
                {"role": "assistant", "content": "hi!", "id": "a1"},
            ],
        }
        session_filter.inlet(turn, {"id": "u"})
        session_filter.outlet(outlet, {"id": "u"})
        later = {
            "messages": [{"role": "user", "content": "and now?"}],
            "metadata": {"chat_id": "chat-1"},
        }
        assert [m["content"] for m in session_filter.inlet(later, {"id": "u"})["messages"]] == [
            "hello",
            "hi!",
            "and now?",
        ]
        session_filter.shutdown()
