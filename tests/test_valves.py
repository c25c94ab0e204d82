"""Valves: defaults from the environment, bad values named, stale keys tolerated."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from helix_pipeline.history import Budget
from helix_pipeline.valves import (
    DEFAULT_HEADERS,
    FilterValves,
    HelixValves,
    HistoryValves,
    default_store_url,
    parse_csv,
)

VALVE_NAMES = tuple(HelixValves.model_fields)
ENV_NAMES = (*VALVE_NAMES, "HELIX_DATA_DIR", "PIPELINES_DIR")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No valve's environment variable leaks in from the machine running the tests."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


class TestDefaults:
    def test_the_built_in_defaults_need_no_environment(self) -> None:
        valves = HelixValves()
        assert valves.HISTORY_ENABLED is True
        assert valves.SESSION_STORE_URL == ""
        assert (valves.MAX_HISTORY_MESSAGES, valves.MAX_MESSAGE_CHARS) == (100, 100_000)
        assert valves.MAX_HISTORY_CHARS == 500_000
        assert valves.STORE_TEMPORARY_CHATS is False
        assert valves.SESSION_TTL_DAYS == 0
        assert valves.HELIX_BASE_URL == "http://localhost:8001"
        assert valves.HELIX_MODELS == "helix-consultant"
        assert valves.CONVERSATION_HEADERS == DEFAULT_HEADERS
        assert (valves.CONNECT_TIMEOUT_S, valves.READ_TIMEOUT_S) == (5.0, 120.0)
        assert (valves.MAX_RETRIES, valves.TASKS) == (2, "skip")

    def test_no_secret_has_a_placeholder_default(self) -> None:
        assert HelixValves().HELIX_API_KEY == ""

    def test_the_api_key_is_shown_as_a_password_field(self) -> None:
        schema = HelixValves.model_json_schema()["properties"]["HELIX_API_KEY"]
        assert schema["format"] == "password"

    @pytest.mark.parametrize(
        "model", [pytest.param(HelixValves, id="pipe"), pytest.param(FilterValves, id="filter")]
    )
    def test_every_valve_has_a_description(self, model: type[HistoryValves]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, name

    def test_the_budget_follows_the_valves(self) -> None:
        valves = HistoryValves(
            MAX_HISTORY_MESSAGES=40, MAX_MESSAGE_CHARS=900, MAX_HISTORY_CHARS=5000
        )
        assert valves.budget() == Budget(
            max_messages=40, max_message_chars=900, max_total_chars=5000
        )

    def test_the_header_names_and_models_are_read_from_their_lists(self) -> None:
        valves = HelixValves(CONVERSATION_HEADERS=" X-A ,, X-B ", HELIX_MODELS=" , ")
        assert valves.header_names() == ("X-A", "X-B")
        assert valves.model_ids() == ["helix-consultant"]

    def test_parse_csv_drops_blanks(self) -> None:
        assert parse_csv("a, b,,c ,") == ["a", "b", "c"]


class TestSecretsFromTheEnvironment:
    """The Pipelines server returns valves to anyone (``GET /<id>/valves`` has no authentication)
    and saves them in valves.json, so secrets given in the environment never become valve values."""

    def test_the_api_key_is_used_but_never_copied_into_the_valves(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HELIX_API_KEY", "sk-from-env")
        valves = HelixValves()
        assert valves.HELIX_API_KEY == ""
        assert "sk-from-env" not in valves.model_dump_json()
        assert valves.api_key() == "sk-from-env"

    def test_a_key_set_in_the_valve_wins_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HELIX_API_KEY", "sk-from-env")
        assert HelixValves(HELIX_API_KEY="sk-valve").api_key() == "sk-valve"

    def test_no_key_anywhere_means_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("HELIX_API_KEY", raising=False)
        assert HelixValves().api_key() is None

    def test_the_store_url_is_used_but_never_copied_into_the_valves(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SESSION_STORE_URL", "redis://:hunter2@cache:6379/0")
        valves = HistoryValves()
        assert valves.SESSION_STORE_URL == ""
        assert "hunter2" not in valves.model_dump_json()
        assert valves.store_url() == "redis://:hunter2@cache:6379/0"
        assert HistoryValves(SESSION_STORE_URL="memory://").store_url() == "memory://"


class TestDefaultsFromTheEnvironment:
    @pytest.mark.parametrize(
        ("name", "raw", "value"),
        [
            pytest.param("HISTORY_ENABLED", "false", False, id="bool-false"),
            pytest.param("HISTORY_ENABLED", "OFF", False, id="bool-off"),
            pytest.param("STORE_TEMPORARY_CHATS", "yes", True, id="bool-yes"),
            pytest.param("STORE_TEMPORARY_CHATS", "1", True, id="bool-one"),
            pytest.param("MAX_HISTORY_MESSAGES", "40", 40, id="int"),
            pytest.param("MAX_MESSAGE_CHARS", " 5000 ", 5000, id="int-with-spaces"),
            pytest.param("MAX_HISTORY_CHARS", "80000", 80_000, id="total"),
            pytest.param("SESSION_TTL_DAYS", "30", 30, id="ttl"),
            pytest.param(
                "HELIX_BASE_URL", "https://helix.example/v1", "https://helix.example/v1", id="url"
            ),
            pytest.param(
                "HELIX_BASE_URL", " http://helix:8001 ", "http://helix:8001", id="url-stripped"
            ),
            pytest.param("HELIX_MODELS", "a,b", "a,b", id="models"),
            pytest.param(
                "CONVERSATION_HEADERS", "X-Conversation-ID", "X-Conversation-ID", id="headers"
            ),
            pytest.param("CONNECT_TIMEOUT_S", "2.5", 2.5, id="float"),
            pytest.param("READ_TIMEOUT_S", "600", 600.0, id="float-from-int"),
            pytest.param("MAX_RETRIES", "0", 0, id="no-retries"),
            pytest.param("TASKS", "skip", "skip", id="tasks"),
        ],
    )
    def test_a_variable_of_the_same_name_sets_the_default(
        self, monkeypatch: pytest.MonkeyPatch, name: str, raw: str, value: Any
    ) -> None:
        monkeypatch.setenv(name, raw)
        assert getattr(HelixValves(), name) == value

    def test_an_empty_variable_means_the_built_in_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MAX_RETRIES", "")
        assert HelixValves().MAX_RETRIES == 2

    def test_the_environment_is_read_when_the_valves_are_built(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        before = HelixValves()
        monkeypatch.setenv("READ_TIMEOUT_S", "300")
        assert (before.READ_TIMEOUT_S, HelixValves().READ_TIMEOUT_S) == (120.0, 300.0)

    def test_a_value_given_explicitly_beats_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MAX_HISTORY_MESSAGES", "40")
        assert HistoryValves(MAX_HISTORY_MESSAGES=60).MAX_HISTORY_MESSAGES == 60


class TestABadEnvironmentVariable:
    @pytest.mark.parametrize(
        ("name", "raw"),
        [
            pytest.param("HISTORY_ENABLED", "maybe", id="bool"),
            pytest.param("MAX_HISTORY_MESSAGES", "many", id="int-text"),
            pytest.param("MAX_HISTORY_MESSAGES", "0", id="int-zero"),
            pytest.param("MAX_MESSAGE_CHARS", "-5", id="int-negative"),
            pytest.param("MAX_HISTORY_CHARS", "1e6", id="int-as-float"),
            pytest.param("SESSION_TTL_DAYS", "-1", id="ttl-negative"),
            pytest.param("HELIX_BASE_URL", "ftp://helix", id="url-scheme"),
            pytest.param("HELIX_BASE_URL", "localhost:8001", id="url-without-scheme"),
            pytest.param("CONVERSATION_HEADERS", "X Chat: Id", id="header-name"),
            pytest.param("CONNECT_TIMEOUT_S", "0", id="timeout-zero"),
            pytest.param("READ_TIMEOUT_S", "nan", id="timeout-nan"),
            pytest.param("READ_TIMEOUT_S", "inf", id="timeout-infinite"),
            pytest.param("READ_TIMEOUT_S", "5", id="timeout-under-helixs-heartbeat-gap"),
            pytest.param("MAX_RETRIES", "50", id="retries-above-ten"),
            pytest.param("MAX_RETRIES", "-1", id="retries-negative"),
            pytest.param("TASKS", "sometimes", id="tasks"),
        ],
    )
    def test_falls_back_to_the_default_with_a_warning(
        self,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        name: str,
        raw: str,
    ) -> None:
        default = getattr(HelixValves(), name)
        monkeypatch.setenv(name, raw)
        with caplog.at_level(logging.WARNING, logger="helix_pipeline.valve_env"):
            valves = HelixValves()
        assert getattr(valves, name) == default
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert name in record.getMessage()

    def test_the_warning_never_shows_a_password(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("SESSION_STORE_URL", "mysql://helix:hunter2@db/helix")
        with caplog.at_level(logging.WARNING, logger="helix_pipeline.valve_env"):
            assert HistoryValves().store_url(Path("/srv/pipelines")).startswith("sqlite:///")
        assert "SESSION_STORE_URL" in caplog.text
        assert "hunter2" not in caplog.text

    def test_the_filter_valves_load_too(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAX_HISTORY_MESSAGES", "lots")
        assert FilterValves().MAX_HISTORY_MESSAGES == 100


class TestValidationErrors:
    @pytest.mark.parametrize(
        ("name", "value", "must"),
        [
            pytest.param("MAX_HISTORY_MESSAGES", 0, "greater than 0", id="messages"),
            pytest.param("MAX_MESSAGE_CHARS", -1, "greater than 0", id="chars"),
            pytest.param("MAX_HISTORY_CHARS", 0, "greater than 0", id="total"),
            pytest.param("MAX_HISTORY_CHARS", 10**12, "at most 1,000,000,000", id="total-huge"),
            pytest.param("SESSION_TTL_DAYS", -3, "must be 0", id="ttl"),
            pytest.param("SESSION_TTL_DAYS", 10**9, "up to 36,500", id="ttl-overflows-dates"),
            pytest.param("SESSION_STORE_URL", "mysql://db/x", "must start with one of", id="store"),
            pytest.param("SESSION_STORE_URL", "redis://c:99999/0", "invalid port", id="store-port"),
            pytest.param(
                "SESSION_STORE_URL", "postgresql://[::1/x", "unmatched brackets", id="store-bracket"
            ),
            pytest.param(
                "HELIX_BASE_URL", "helix:8001", "must be an http:// or https:// URL", id="url"
            ),
            pytest.param(
                "CONVERSATION_HEADERS",
                "X Bad",
                "must be comma-separated header names",
                id="headers",
            ),
            pytest.param("CONNECT_TIMEOUT_S", 0, "greater than 0", id="timeout-zero"),
            pytest.param("READ_TIMEOUT_S", float("nan"), "greater than 0", id="timeout-nan"),
            pytest.param("READ_TIMEOUT_S", float("inf"), "greater than 0", id="timeout-infinite"),
            pytest.param("ANSWER_TIMEOUT_S", 1e300, "at most 86,400", id="timeout-overflows"),
            pytest.param("MAX_RETRIES", 11, "from 0 to 10", id="retries"),
            pytest.param("MAX_RETRIES", -1, "from 0 to 10", id="retries-negative"),
            pytest.param("HELIX_BASE_URL", "http://:8001", "has no host", id="url-no-host"),
            pytest.param("HELIX_BASE_URL", "http://[::1", "unmatched brackets", id="url-bracket"),
            pytest.param("HELIX_BASE_URL", "http://h:99999", "invalid port", id="url-port"),
            pytest.param("HELIX_BASE_URL", "ftp://x", "not an http://", id="url-ftp"),
            pytest.param("HELIX_BASE_URL", "", "is empty", id="url-empty"),
            pytest.param("HELIX_BASE_URL", 8001, "valid string", id="url-number"),
            pytest.param(
                "CONVERSATION_HEADERS", "X-A\r\nX-B: 1", "header names", id="headers-newline"
            ),
            pytest.param("CONVERSATION_HEADERS", " , ", "at least one header", id="headers-none"),
            pytest.param("HELIX_MODELS", "helix one", "without spaces", id="models-space"),
            pytest.param("HELIX_API_KEY", "sk\nX-Evil: 1", "printable ASCII", id="key-newline"),
            pytest.param(
                "READ_TIMEOUT_S",
                14.9,
                "at least 15 s: Helix sends a heartbeat only every 10 s",
                id="timeout-under-helixs-heartbeat-gap",
            ),
            pytest.param("HELIX_HEARTBEAT_S", 0, "greater than 0", id="heartbeat-zero"),
            pytest.param("TASKS", "never", "'forward' or 'skip'", id="tasks"),
            pytest.param("MAX_HISTORY_MESSAGES", "many", "valid integer", id="not-a-number"),
        ],
    )
    def test_a_bad_value_names_the_valve_and_what_it_must_be(
        self, name: str, value: object, must: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            HelixValves.model_validate({name: value})
        message = str(caught.value)
        assert name in message
        assert must in message

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            pytest.param("SESSION_STORE_URL", "mysql://helix:hunter2@db/x", id="store-password"),
            pytest.param("SESSION_STORE_URL", "postgresql://u:hunter2@[::1/x", id="store-bracket"),
            pytest.param("HELIX_API_KEY", ["sk-hunter2"], id="api-key"),
        ],
    )
    def test_a_bad_value_is_reported_without_the_secret_in_it(
        self, name: str, value: object
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            HelixValves.model_validate({name: value})
        assert name in str(caught.value)
        assert "hunter2" not in str(caught.value)

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("memory://", id="memory"),
            pytest.param("sqlite:////var/lib/helix/sessions.db", id="sqlite"),
            pytest.param("rediss://cache:6380/1", id="redis-tls"),
            pytest.param("postgresql://helix:pw@db/helix", id="postgres"),
        ],
    )
    def test_every_supported_store_url_is_accepted(self, url: str) -> None:
        accepted = HistoryValves(SESSION_STORE_URL=url).store_url()
        assert accepted == url

    def test_header_names_are_normalised(self) -> None:
        assert HelixValves(CONVERSATION_HEADERS=" X-A , X-B ").CONVERSATION_HEADERS == "X-A,X-B"


class TestSavedValves:
    def test_a_stale_key_from_an_older_version_is_accepted(self) -> None:
        saved = {**HelixValves().model_dump(), "OLD_KEY": 1, "HELIX_TIMEOUT": "30"}
        valves = HelixValves(**saved)
        assert not hasattr(valves, "OLD_KEY")
        assert "OLD_KEY" not in valves.model_dump()

    def test_the_servers_rebuild_from_valves_json_round_trips(self, tmp_path: Path) -> None:
        changed = HelixValves(MAX_RETRIES=5, TASKS="skip", HELIX_MODELS="a,b")
        saved_file = tmp_path / "valves.json"
        saved_file.write_text(json.dumps(changed.model_dump()), encoding="utf-8")
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        rebuilt = HelixValves(**{**HelixValves().model_dump(), **saved})
        assert rebuilt == changed


class TestFilterValves:
    def test_the_pipelines_server_finds_pipelines_and_priority(self) -> None:
        valves = FilterValves()
        assert valves.pipelines == ["helix-consultant"], "Helix's model only, never every model"
        assert valves.priority == 0
        assert {"pipelines", "priority"} <= set(FilterValves.model_json_schema()["properties"])

    def test_each_filter_gets_its_own_pipelines_list(self) -> None:
        one, other = FilterValves(), FilterValves()
        one.pipelines.append("helix.helix-consultant")
        assert other.pipelines == ["helix-consultant"]

    def test_pipelines_and_priority_can_be_set(self) -> None:
        valves = FilterValves(pipelines=["helix.helix-consultant"], priority=-5)
        assert (valves.pipelines, valves.priority) == (["helix.helix-consultant"], -5)

    def test_the_filter_shares_the_history_valves(self) -> None:
        assert set(HistoryValves.model_fields) <= set(FilterValves.model_fields)
        assert "HELIX_BASE_URL" not in FilterValves.model_fields


class TestStoreLocation:
    def test_the_default_store_is_a_sqlite_file_beside_the_pipelines(self, tmp_path: Path) -> None:
        url = HistoryValves().store_url(tmp_path)
        assert url == f"sqlite:///{tmp_path.absolute() / 'helix_data' / 'sessions.db'}"

    def test_helix_data_dir_moves_the_store(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("HELIX_DATA_DIR", str(tmp_path / "data"))
        assert (
            default_store_url(Path("/elsewhere"))
            == f"sqlite:///{tmp_path / 'data' / 'sessions.db'}"
        )

    def test_pipelines_dir_is_used_without_an_explicit_folder(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("PIPELINES_DIR", str(tmp_path))
        assert default_store_url() == f"sqlite:///{tmp_path / 'helix_data' / 'sessions.db'}"

    def test_a_store_url_valve_wins(self, tmp_path: Path) -> None:
        valves = HistoryValves(SESSION_STORE_URL="memory://")
        assert valves.store_url(tmp_path) == "memory://"


class TolerantValves(HelixValves):
    """A pipeline file's Valves while the Pipelines server restores valves.json."""

    tolerant = True


class TestProblems:
    def test_valid_valves_have_none(self) -> None:
        assert HelixValves().problems() == {}
        assert FilterValves().problems() == {}

    @pytest.mark.parametrize(
        ("values", "named"),
        [
            pytest.param({"HELIX_BASE_URL": "http://:8001"}, "has no host", id="url"),
            pytest.param({"CONNECT_TIMEOUT_S": "abc"}, "valid number", id="type"),
            pytest.param({"READ_TIMEOUT_S": float("nan")}, "greater than 0", id="nan"),
            pytest.param({"TASKS": "sometimes"}, "'forward' or 'skip'", id="literal"),
            pytest.param({"HELIX_MODELS": None}, "valid string", id="none"),
        ],
    )
    def test_values_set_without_validation_are_named_with_their_rule(
        self, values: dict[str, Any], named: str
    ) -> None:
        valves = HelixValves.model_construct(**values)
        [(name, reason)] = valves.problems().items()
        assert name == next(iter(values))
        assert name in reason and named in reason

    def test_the_model_ids_fall_back_to_the_default_when_the_valve_is_unusable(self) -> None:
        for models in (None, 5, "helix one", ""):
            assert HelixValves.model_construct(HELIX_MODELS=models).model_ids() == [
                "helix-consultant"
            ]


class TestRestoringSavedValves:
    def test_a_strict_class_refuses_what_a_tolerant_one_keeps_as_a_problem(self) -> None:
        saved = {"HELIX_BASE_URL": "http://[::1", "MAX_RETRIES": "many", "priority": "x"}
        with pytest.raises(ValidationError):
            HelixValves(**saved)
        valves = TolerantValves(**saved)
        assert valves.HELIX_BASE_URL == "http://localhost:8001"
        assert valves.MAX_RETRIES == 2
        assert set(valves.problems()) == {"HELIX_BASE_URL", "MAX_RETRIES"}

    def test_the_good_saved_values_are_kept(self) -> None:
        valves = TolerantValves(HELIX_BASE_URL="ftp://x", MAX_RETRIES=5, TASKS="skip")
        assert (valves.MAX_RETRIES, valves.TASKS) == (5, "skip")
        assert list(valves.problems()) == ["HELIX_BASE_URL"]

    def test_each_refused_value_is_logged_without_a_password(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="helix_pipeline.valves"):
            TolerantValves(SESSION_STORE_URL="mysql://u:hunter2@db/x", CONNECT_TIMEOUT_S=-1)
        assert "SESSION_STORE_URL" in caplog.text and "CONNECT_TIMEOUT_S" in caplog.text
        assert "hunter2" not in caplog.text

    def test_a_tolerant_class_still_reports_problems_strictly(self) -> None:
        valves = TolerantValves.model_construct(MAX_RETRIES=-1)
        assert list(valves.problems()) == ["MAX_RETRIES"]


class TestReadTimeoutAndHelixsHeartbeat:
    def test_fifteen_seconds_is_the_least_for_helixs_ten_second_heartbeat(self) -> None:
        assert HelixValves(READ_TIMEOUT_S=15).READ_TIMEOUT_S == 15.0

    def test_a_helix_with_faster_heartbeats_allows_a_shorter_read_timeout(self) -> None:
        valves = HelixValves(HELIX_HEARTBEAT_S=0.1, READ_TIMEOUT_S=0.3)
        assert (valves.HELIX_HEARTBEAT_S, valves.READ_TIMEOUT_S) == (0.1, 0.3)

    def test_the_environment_is_held_to_the_same_rule(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HELIX_HEARTBEAT_S", "2")
        monkeypatch.setenv("READ_TIMEOUT_S", "3")
        assert HelixValves().READ_TIMEOUT_S == 3.0
        monkeypatch.setenv("READ_TIMEOUT_S", "2.5")
        assert HelixValves().READ_TIMEOUT_S == 120.0

    def test_a_saved_read_timeout_under_the_gap_is_a_named_problem_not_a_failed_start(
        self,
    ) -> None:
        valves = TolerantValves.model_validate({"READ_TIMEOUT_S": 5})
        assert valves.READ_TIMEOUT_S == 120.0
        assert "at least 15 s" in valves.problems()["READ_TIMEOUT_S"]
