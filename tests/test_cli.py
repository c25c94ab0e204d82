"""The ``helix-pipeline`` command in-process: sessions, doctor, install, and how it fails."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import helix_pipeline
from helix_pipeline import cli, cli_sessions
from helix_pipeline.cli import main, plural, preview
from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import StoreError
from helix_pipeline.messages import Message
from helix_pipeline.stores import MemoryStore, SessionStore, open_store
from helix_pipeline.testing import FakeHelix
from helix_pipeline.testing.openwebui_transport import ask

from .pipelines_server import PIPELINES, PipelinesServer

ROOT = Path(__file__).resolve().parents[1]
ANA = ConversationKey("ana", "chat-1")
ANA_OTHER = ConversationKey("ana", "chat-2")
BEN = ConversationKey("ben", "chat-1")
PIPELINE_NAMES = ["helix.py", "helix_session_filter.py"]
time_now = time.time()
MODEL = "helix.helix-consultant"
ANA_USER = {"id": "u-ana", "email": "ana@example.com", "name": "Ana", "role": "user"}
RUN_MAIN = "import sys; from helix_pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


STORE_LINE = "Session store: "


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout, and stderr without the ``Session store:`` line (TestWhichStore's)."""
    code = main(argv)
    captured = capsys.readouterr()
    err = "".join(
        line for line in captured.err.splitlines(keepends=True) if not line.startswith(STORE_LINE)
    )
    return code, captured.out, err


@pytest.fixture(autouse=True)
def no_server_beside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Pipelines folder, store URL or data folder leaks in from the machine running the tests."""
    monkeypatch.setenv("PIPELINES_DIR", str(tmp_path / "no-server"))
    for name in ("SESSION_STORE_URL", "HELIX_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def fill(store: SessionStore) -> None:
    """Ana's chat with a regenerated answer (two branches), her second chat, and Ben's chat."""
    store.record(
        ANA,
        [
            Message("user", "What is 2+2?", "u1"),
            Message("assistant", "[Starte Claude Code...]\n\n---\n\nIt is 4.\n<!-- STEP: x -->"),
        ],
    )
    store.record(ANA, [Message("assistant", "Four.", "a1-regen")], after=1)
    store.record(ANA_OTHER, [Message("user", "Hello", "u9")])
    store.record(BEN, [Message("user", "Ben's question", "b1")])


class Terminal(io.StringIO):
    """Standard input that is a terminal, holding what the person types."""

    def isatty(self) -> bool:
        return True


class KeptMemoryStore(MemoryStore):
    """A memory store that outlives the command's ``close()``, so the test can look inside."""

    def close(self) -> None:
        pass


@pytest.fixture(params=["sqlite", "memory"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, SessionStore]]:
    """A filled store of each engine and the ``--store`` URL the command opens it by."""
    opened: SessionStore
    if request.param == "memory":
        opened = KeptMemoryStore("memory://")
        monkeypatch.setattr(cli_sessions, "open_store", lambda url: opened)
        url = "memory://"
    else:
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        opened = open_store(url)
    fill(opened)
    yield url, opened
    opened.close()


class TestTheCommand:
    def test_version_prints_the_package_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(["--version"], capsys) == (
            0,
            f"helix-pipeline {helix_pipeline.__version__}\n",
            "",
        )

    def test_no_command_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run([], capsys)

        assert code == 2
        assert "usage: helix-pipeline" in err

    def test_an_unknown_store_scheme_fails_in_one_line_naming_the_setting(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["sessions", "--store", "mongodb://x", "list"], capsys)

        assert (code, out) == (1, "")
        assert err.count("\n") == 1
        assert "SESSION_STORE_URL" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("url", "shown"),
        [("redis://[::1", "redis://[::1"), ("redis://:s3cret@[::1/0", "redis://:***@[::1/0")],
    )
    def test_a_store_url_that_does_not_parse_fails_in_one_line(
        self, url: str, shown: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["sessions", "--store", url, "list"], capsys)

        assert (code, out) == (1, "")
        assert err == (
            f"helix-pipeline: error: Invalid session store URL {shown!r}: it has unmatched "
            "brackets (an IPv6 address is written [::1]). Set SESSION_STORE_URL to a URL such as "
            "sqlite:////abs/path.db or redis://host:6379/0\n"
        )

    @pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
    @pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
    def test_a_full_disk_under_stdout_fails_in_one_line(
        self, unbuffered: str, tmp_path: Path
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if unbuffered:
            env["PYTHONUNBUFFERED"] = unbuffered
        command = [sys.executable, "-c", RUN_MAIN, "sessions", "--store"]
        open_store(f"sqlite:///{tmp_path / 's.db'}").close()
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                [*command, f"sqlite:///{tmp_path / 's.db'}", "export"],
                stdout=full,
                stderr=subprocess.PIPE,
                env=env,
                check=False,
                text=True,
                timeout=60,
            )

        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == (
            "helix-pipeline: error: no space left on the device: free some space, or write elsewhere"
        )
        assert "Traceback" not in result.stderr
        assert "Exception ignored" not in result.stderr

    def test_an_error_is_always_one_line(self) -> None:
        assert cli.error_line(StoreError("cannot open\n\tIs the server running?")) == (
            "cannot open Is the server running?"
        )

    def test_the_help_names_every_sessions_action(self, capsys: pytest.CaptureFixture[str]) -> None:
        top = run(["--help"], capsys)[1]
        sessions = run(["sessions", "--help"], capsys)[1]

        assert "sessions     list, show, export, import, delete or purge stored chats" in top
        for action in ("list", "show", "export", "import", "delete", "purge"):
            assert f"    {action} " in sessions

    @pytest.mark.parametrize(
        "argv",
        [
            pytest.param(["sessions", "--store", "memory://", "list", "-v"], id="after-an-action"),
            pytest.param(["sessions", "-v", "--store", "memory://", "list"], id="after-sessions"),
            pytest.param(["-v", "sessions", "--store", "memory://", "list"], id="before"),
        ],
    )
    def test_verbose_is_taken_after_any_command(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run(argv, capsys)[0] == 0


class TestSessionsList:
    def test_lists_every_users_conversations_with_counts(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["sessions", "--store", store[0], "list"], capsys)

        assert code == 0
        rows = [line.split()[:4] for line in out.splitlines()[1:]]
        assert sorted(rows) == [
            ["ana", "chat-1", "2", "2"],
            ["ana", "chat-2", "1", "1"],
            ["ben", "chat-1", "1", "1"],
        ]
        assert out.splitlines()[0].split() == [
            "USER",
            "CONVERSATION",
            "MESSAGES",
            "BRANCHES",
            "LAST",
            "ACTIVITY",
        ]
        assert out.splitlines()[1].endswith("UTC")

    def test_lists_only_the_given_user(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        _, out, _ = run(["sessions", "--store", store[0], "list", "--user", "ben"], capsys)

        assert [line.split()[0] for line in out.splitlines()[1:]] == ["ben"]

    def test_the_store_may_also_follow_the_action(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["sessions", "list", "--user", "ben", "--store", store[0]], capsys)

        assert code == 0
        assert [line.split()[0] for line in out.splitlines()[1:]] == ["ben"]

    def test_says_so_when_there_is_nothing(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(["sessions", "--store", "memory://", "list"], capsys)

        assert (code, out) == (0, "No conversations in memory://.\n")

    def test_never_prints_the_store_password(self, capsys: pytest.CaptureFixture[str]) -> None:
        _, out, err = run(["sessions", "--store", "memory://admin:s3cret@host", "list"], capsys)

        assert "memory://admin:***@host" in out
        assert "s3cret" not in out + err

    def test_the_store_defaults_to_session_store_url(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"sqlite:///{tmp_path / 'from-env.db'}"
        seeded = open_store(url)
        fill(seeded)
        seeded.close()
        monkeypatch.setenv("SESSION_STORE_URL", url)

        _, out, _ = run(["sessions", "list", "--user", "ben"], capsys)

        assert "chat-1" in out

    def test_without_it_the_default_sqlite_file_is_used(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HELIX_DATA_DIR", str(tmp_path / "data"))
        open_store(f"sqlite:///{tmp_path / 'data' / 'sessions.db'}").close()

        _, out, _ = run(["sessions", "list"], capsys)

        assert out == f"No conversations in sqlite:///{tmp_path / 'data' / 'sessions.db'}.\n"

    def test_the_most_recent_conversation_comes_first_whoever_it_belongs_to(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"sqlite:///{tmp_path / 'order.db'}"
        seeded = open_store(url)
        for days_ago, key in [(3, ANA), (1, BEN), (2, ANA_OTHER), (5, ConversationKey("zed", "z"))]:
            with monkeypatch.context() as patch:
                patch.setattr(time, "time", lambda d=days_ago: time_now - d * 86400)
                seeded.record(key, [Message("user", "hi")])
        seeded.close()

        _, out, _ = run(["sessions", "--store", url, "list"], capsys)

        rows = [line.split()[:2] for line in out.splitlines()[1:]]
        assert rows == [["ben", "chat-1"], ["ana", "chat-2"], ["ana", "chat-1"], ["zed", "z"]]


class TestSessionsShow:
    def test_shows_the_active_branch_the_older_ones_and_the_helix_session(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(
            ["sessions", "--store", store[0], "show", "--user", "ana", "chat-1"], capsys
        )

        assert code == 0
        assert out.splitlines()[:3] == [
            "Conversation chat-1 of user ana",
            "Helix session: conv-chat-1",
            "Active branch: 2 messages (1 older branch)",
        ]
        assert out.splitlines()[3].split() == ["0", "user", "What", "is", "2+2?"]
        assert out.splitlines()[4].split() == ["1", "assistant", "Four."]

    def test_the_helix_session_follows_helix_normalisation(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        memory = KeptMemoryStore()
        memory.record(ConversationKey("ana", "abc_123"), [Message("user", "hi")])
        monkeypatch.setattr(cli_sessions, "open_store", lambda url: memory)

        _, out, _ = run(
            ["sessions", "--store", "memory://", "show", "--user", "ana", "abc_123"], capsys
        )

        assert "Helix session: conv-abc-123" in out

    @pytest.mark.parametrize(
        ("user", "conversation"),
        [
            pytest.param("ana", "chat-9", id="unknown-chat"),
            pytest.param("ben", "chat-2", id="another-users-chat"),
        ],
    )
    def test_a_conversation_the_user_does_not_have_is_an_error(
        self,
        user: str,
        conversation: str,
        store: tuple[str, SessionStore],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, out, err = run(
            ["sessions", "--store", store[0], "show", "--user", user, conversation], capsys
        )

        assert (code, out) == (1, "")
        assert f"`helix-pipeline sessions --store {store[0]} list --user {user}` lists them" in err

    def test_without_user_it_finds_the_one_user_who_has_the_chat(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["sessions", "--store", store[0], "show", "chat-2"], capsys)

        assert code == 0
        assert out.splitlines()[0] == "Conversation chat-2 of user ana"

    def test_without_user_a_chat_of_several_users_names_them(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["sessions", "--store", store[0], "show", "chat-1"], capsys)

        assert (code, out) == (1, "")
        assert err == (
            "helix-pipeline: error: 2 users have a conversation 'chat-1' (ana, ben): add --user "
            f"to say whose, e.g. `helix-pipeline sessions --store {store[0]} show --user ana "
            "chat-1`\n"
        )

    def test_without_user_an_unknown_chat_says_no_user_has_it(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(["sessions", "--store", store[0], "show", "chat-9"], capsys)

        assert code == 1
        assert "no user has no conversation" not in err
        assert "no user has a conversation 'chat-9'" in err
        assert f"`helix-pipeline sessions --store {store[0]} list` lists them" in err

    def test_the_hint_hides_the_store_password(self, capsys: pytest.CaptureFixture[str]) -> None:
        url = "memory://admin:s3cret@host"

        _, _, err = run(["sessions", "--store", url, "show", "chat-9"], capsys)

        assert "--store memory://admin:***@host list" in err
        assert "s3cret" not in err


class TestSessionsExport:
    def test_writes_json_lines_to_stdout_and_the_summary_to_stderr(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["sessions", "--store", store[0], "export"], capsys)

        assert code == 0
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == 1 + (2 + 2 + 1 + 1) + 1
        assert records[-1]["messages"] == 6
        assert err == "Exported 6 messages (4 branches of 3 conversations) to stdout.\n"

    def test_writes_one_users_messages_to_a_file(
        self, store: tuple[str, SessionStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        target = tmp_path / "ben.jsonl"

        code, out, _ = run(
            ["sessions", "--store", store[0], "export", "--user", "ben", "-o", str(target)], capsys
        )

        assert code == 0
        _, record, _ = [
            json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()
        ]
        assert (record["user"], record["content"], record["message_id"]) == (
            "ben",
            "Ben's question",
            "b1",
        )
        assert out == f"Exported 1 message (1 branch of 1 conversation) to {target}.\n"

    @pytest.mark.parametrize(
        ("where", "problem"),
        [
            pytest.param(
                "no-such-dir/x.jsonl",
                "/no-such-dir does not exist; create it or choose another -o",
                id="missing-folder",
            ),
            pytest.param(".", "is a folder: give -o a file name, e.g. ", id="a-folder"),
        ],
    )
    def test_a_place_it_cannot_write_fails_in_one_line_saying_what_to_do(
        self,
        where: str,
        problem: str,
        store: tuple[str, SessionStore],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        target = tmp_path / where

        code, out, err = run(["sessions", "--store", store[0], "export", "-o", str(target)], capsys)

        assert (code, out) == (1, "")
        assert err.startswith("helix-pipeline: error: ")
        assert problem in err
        assert err.count("\n") == 1


class TestSessionsImport:
    @pytest.fixture
    def export_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
        source_url = f"sqlite:///{tmp_path / 'source.db'}"
        source = open_store(source_url)
        fill(source)
        source.close()
        target = tmp_path / "all.jsonl"
        assert run(["sessions", "--store", source_url, "export", "-o", str(target)], capsys)[0] == 0
        return target

    def test_an_export_moves_to_another_sqlite_store_with_its_branches(
        self, export_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"sqlite:///{tmp_path / 'target.db'}"

        code, out, _ = run(["sessions", "--store", url, "import", str(export_file)], capsys)

        assert code == 0
        assert out.startswith("Imported 6 messages (4 branches of 3 conversations) into sqlite:")
        original, copy = open_store(f"sqlite:///{tmp_path / 'source.db'}"), open_store(url)
        try:
            for key in (ANA, ANA_OTHER, BEN):
                assert [
                    [(m.role, m.content, m.message_id) for m in b] for b in copy.branches(key)
                ] == [
                    [(m.role, m.content, m.message_id) for m in b] for b in original.branches(key)
                ]
        finally:
            original.close()
            copy.close()

    def test_importing_twice_duplicates_nothing(
        self, export_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"sqlite:///{tmp_path / 'target.db'}"
        run(["sessions", "--store", url, "import", str(export_file)], capsys)

        code, out, _ = run(["sessions", "--store", url, "import", str(export_file)], capsys)

        assert code == 0
        assert "Imported 0 messages (0 branches of 0 conversations)" in out
        assert out.endswith("; 4 branches held already.\n")
        _, listing, _ = run(["sessions", "--store", url, "list", "--user", "ana"], capsys)
        rows = {line.split()[1]: line.split()[2:4] for line in listing.splitlines()[1:]}
        assert rows == {"chat-1": ["2", "2"], "chat-2": ["1", "1"]}

    def test_reads_stdin_for_a_dash(
        self,
        export_file: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(export_file.read_text(encoding="utf-8")))
        url = f"sqlite:///{tmp_path / 'target.db'}"

        code, out, err = run(["sessions", "--store", url, "import", "-"], capsys)

        assert (code, err) == (0, "")
        assert out.startswith("Imported 6 messages")

    def test_the_summary_never_shows_the_store_password(
        self, export_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = "sqlite://admin:s3cret@/" + str(export_file.parent / "target.db")
        target = open_store(f"sqlite:///{export_file.parent / 'target.db'}")
        target.url = url
        monkeypatch.setattr(cli_sessions, "open_store", lambda _: target)

        code, out, err = run(["sessions", "--store", url, "import", str(export_file)], capsys)

        assert code == 0
        assert "into sqlite://admin:***@/" in out
        assert "s3cret" not in out + err + export_file.read_text(encoding="utf-8")

    def test_into_memory_is_refused_since_it_keeps_nothing(
        self, export_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(
            ["sessions", "--store", "memory://", "import", str(export_file)], capsys
        )

        assert (code, out) == (1, "")
        assert err == (
            "helix-pipeline: error: memory:// keeps nothing once this command ends: import into "
            "the store the pipeline uses, e.g. --store sqlite:////abs/path/sessions.db\n"
        )

    def test_a_cut_export_is_refused_naming_the_line_and_writes_nothing(
        self, export_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = export_file.read_text(encoding="utf-8").splitlines(keepends=True)
        export_file.write_text("".join(lines[:5]), encoding="utf-8")
        url = f"sqlite:///{tmp_path / 'target.db'}"

        code, out, err = run(["sessions", "--store", url, "import", str(export_file)], capsys)

        assert (code, out) == (1, "")
        assert "the export ends at line 5 without its end record: the file was cut short" in err
        assert not (tmp_path / "target.db").exists()

    @pytest.mark.parametrize(
        "content", [pytest.param(None, id="missing-file"), pytest.param(b"{cut", id="cut")]
    )
    def test_a_file_it_cannot_import_creates_no_store(
        self, content: bytes | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "export.jsonl"
        if content is not None:
            path.write_bytes(content)
        target = tmp_path / "new" / "target.db"

        code, _, _ = run(
            ["sessions", "--store", f"sqlite:///{target}", "import", str(path)], capsys
        )

        assert code == 1
        assert not target.parent.exists()

    def test_an_export_without_an_end_record_is_imported_with_a_warning(
        self, export_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = export_file.read_text(encoding="utf-8").splitlines(keepends=True)
        export_file.write_text("".join(lines[1:-1]), encoding="utf-8")
        url = f"sqlite:///{tmp_path / 'target.db'}"

        code, out, err = run(["sessions", "--store", url, "import", str(export_file)], capsys)

        assert code == 0
        assert out.startswith("Imported 6 messages")
        assert err == (
            f"helix-pipeline: warning: {export_file} has no end record (an export from an older "
            "helix-pipeline), so it could not be checked for being complete\n"
        )

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            pytest.param(None, "cannot read", id="missing-file"),
            pytest.param(b"{broken\n", "line 1 is not JSON", id="not-json"),
            pytest.param(b"\xff\xfe\x00", "not UTF-8", id="binary"),
        ],
    )
    def test_an_unreadable_file_fails_in_one_line(
        self,
        content: bytes | None,
        problem: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path = tmp_path / "export.jsonl"
        if content is not None:
            path.write_bytes(content)
        url = f"sqlite:///{tmp_path / 'target.db'}"

        code, _, err = run(["sessions", "--store", url, "import", str(path)], capsys)

        assert code == 1
        assert problem in err
        assert err.count("\n") == 1


class TestSessionsDelete:
    def test_deletes_one_conversation_and_nobody_elses(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        url, opened = store

        code, out, _ = run(
            ["sessions", "--store", url, "delete", "--user", "ana", "chat-1"], capsys
        )

        assert code == 0
        assert out == "Deleted conversation chat-1 of user ana.\n"
        assert opened.branches(ANA) == []
        assert opened.load(ANA_OTHER) and opened.load(BEN)

    def test_all_deletes_every_conversation_of_the_user_only(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        url, opened = store

        code, out, _ = run(
            ["sessions", "--store", url, "delete", "--user", "ana", "--all", "--yes"], capsys
        )

        assert code == 0
        assert out == "Deleted 2 conversations of user ana.\n"
        assert opened.conversations("ana") == []
        assert opened.users() == ["ben"]

    def test_all_without_a_terminal_to_ask_is_refused_naming_yes(
        self,
        store: tuple[str, SessionStore],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        url, opened = store
        monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))

        code, out, err = run(
            ["sessions", "--store", url, "delete", "--user", "ana", "--all"], capsys
        )

        assert (code, out) == (1, "")
        assert err == (
            "helix-pipeline: error: Delete all 2 conversations of user ana? Nothing deleted: "
            "there is no terminal to ask; add --yes to confirm\n"
        )
        assert len(opened.conversations("ana")) == 2

    @pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("\n", False), ("no\n", False)])
    def test_all_asks_on_a_terminal_first(
        self,
        answer: str,
        deleted: bool,
        store: tuple[str, SessionStore],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        url, opened = store
        monkeypatch.setattr(sys, "stdin", Terminal(answer))

        code, out, err = run(
            ["sessions", "--store", url, "delete", "--user", "ana", "--all"], capsys
        )

        assert err.startswith(
            "Delete all 2 conversations of user ana? This cannot be undone. [y/N] "
        )
        assert (code, opened.conversations("ana") == []) == (0 if deleted else 1, deleted)
        if not deleted:
            assert out == ""
            assert err.endswith("helix-pipeline: error: not confirmed; nothing deleted\n")

    def test_an_unknown_conversation_is_an_error(
        self, store: tuple[str, SessionStore], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(
            ["sessions", "--store", store[0], "delete", "--user", "ben", "chat-2"], capsys
        )

        assert code == 1
        assert "nothing deleted" in err

    @pytest.mark.parametrize(
        "argv",
        [
            pytest.param(["--user", "ana"], id="neither"),
            pytest.param(["--user", "ana", "--all", "chat-1"], id="both"),
            pytest.param(["chat-1"], id="no-user"),
        ],
    )
    def test_needs_a_user_and_exactly_one_target(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run(["sessions", "--store", "memory://", "delete", *argv], capsys)[0] == 2


class TestSessionsPurge:
    def test_purges_only_conversations_inactive_for_longer(
        self,
        store: tuple[str, SessionStore],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        url, opened = store
        old = ConversationKey("carl", "ancient")
        forty_days_ago = time.time() - 40 * 86400
        with monkeypatch.context() as patch:
            patch.setattr(time, "time", lambda: forty_days_ago)
            opened.record(old, [Message("user", "long ago")])

        code, out, _ = run(["sessions", "--store", url, "purge", "--older-than-days", "30"], capsys)

        assert code == 0
        assert out.startswith("Purged 1 conversation inactive since before ")
        assert opened.load(old) == []
        assert sorted(opened.users()) == ["ana", "ben"]

    def test_a_dry_run_lists_what_it_would_delete_and_deletes_nothing(
        self,
        store: tuple[str, SessionStore],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        url, opened = store
        old = ConversationKey("carl", "ancient")
        with monkeypatch.context() as patch:
            patch.setattr(time, "time", lambda: time_now - 40 * 86400)
            opened.record(old, [Message("user", "long ago")])
        argv = ["sessions", "--store", url, "purge", "--older-than-days", "30", "--dry-run"]

        code, out, _ = run(argv, capsys)

        assert code == 0
        assert out.splitlines()[0] == "would delete ancient of user carl"
        assert out.splitlines()[1].startswith("Would purge 1 conversation inactive since before ")
        assert out.endswith("; nothing deleted (--dry-run).\n")
        assert len(out.splitlines()) == 2
        assert opened.load(old) != []

    @pytest.mark.parametrize("days", ["0", "-3", "soon"])
    def test_needs_a_positive_number_of_days(
        self, days: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(
            ["sessions", "--store", "memory://", "purge", "--older-than-days", days], capsys
        )

        assert code == 2
        assert "1 or more" in err


class TestReadableOutput:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            pytest.param("plain answer", "plain answer", id="plain"),
            pytest.param("\n\n  first\nsecond", "first", id="first-non-empty-line"),
            pytest.param(
                "[Starte Claude Code...]\n\n---\n\n<!-- STEP: a -->\nThe answer.",
                "The answer.",
                id="helix-notice-and-markers",
            ),
            pytest.param("x" * 100, "x" * 71 + "…", id="long"),
        ],
    )
    def test_a_preview_is_the_first_line_worth_reading(self, text: str, shown: str) -> None:
        assert preview(text) == shown

    @pytest.mark.parametrize(
        ("count", "noun", "text"),
        [
            pytest.param(1, "message", "1 message", id="one"),
            pytest.param(0, "message", "0 messages", id="none"),
            pytest.param(2, "branch", "2 branches", id="branches"),
        ],
    )
    def test_counts_read_as_english(self, count: int, noun: str, text: str) -> None:
        assert plural(count, noun) == text


def seeded(path: Path, key: ConversationKey = BEN) -> str:
    """An SQLite store at ``path`` holding one conversation; its URL."""
    url = f"sqlite:///{path}"
    store = open_store(url)
    store.record(key, [Message("user", "hello")])
    store.close()
    return url


def save_valves(pipelines: Path, pipeline_id: str, **values: object) -> Path:
    """A ``valves.json`` as the Pipelines server saves it for ``pipeline_id``."""
    path = pipelines / pipeline_id / "valves.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"HISTORY_ENABLED": True, **values}), encoding="utf-8")
    return path


def store_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout, and the ``Session store:`` line the command wrote on stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith(STORE_LINE)]
    return code, captured.out, lines[0] if lines else captured.err


class TestWhichStore:
    @pytest.fixture
    def pipelines(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        folder = tmp_path / "pipelines"
        folder.mkdir()
        monkeypatch.setenv("PIPELINES_DIR", str(folder))
        return folder

    def test_the_store_given_is_named_with_its_password_hidden(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        _, _, line = store_line(["sessions", "--store", "memory://me:s3cret@x", "list"], capsys)

        assert line == "Session store: memory://me:***@x (--store)"

    def test_beside_a_server_it_opens_the_default_file_of_its_pipelines_folder(
        self, pipelines: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = pipelines.absolute() / "helix_data" / "sessions.db"
        seeded(path)

        code, out, line = store_line(["sessions", "list"], capsys)

        assert code == 0
        assert line == (
            f"Session store: sqlite:///{path} (the default file beside the pipelines in "
            f"{pipelines})"
        )
        assert "ben" in out

    def test_the_pipes_saved_valve_wins(
        self, pipelines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = seeded(tmp_path / "elsewhere.db")
        saved = save_valves(pipelines, "helix", SESSION_STORE_URL=url)
        save_valves(pipelines, "helix_session_filter", SESSION_STORE_URL="memory://")

        _, out, line = store_line(["sessions", "list"], capsys)

        assert line == f"Session store: {url} (the SESSION_STORE_URL valve in {saved})"
        assert "ben" in out

    def test_without_the_pipes_valves_the_filters_are_read(
        self, pipelines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = seeded(tmp_path / "filter.db")
        saved = save_valves(pipelines, "helix_session_filter", SESSION_STORE_URL=url)

        _, _, line = store_line(["sessions", "list"], capsys)

        assert line == f"Session store: {url} (the SESSION_STORE_URL valve in {saved})"

    def test_an_empty_valve_falls_back_to_the_environment_then_to_helix_data_dir(
        self,
        pipelines: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        save_valves(pipelines, "helix", SESSION_STORE_URL="")
        url = seeded(tmp_path / "env.db")
        monkeypatch.setenv("SESSION_STORE_URL", url)
        from_env = store_line(["sessions", "list"], capsys)[2]
        monkeypatch.delenv("SESSION_STORE_URL")
        monkeypatch.setenv("HELIX_DATA_DIR", str(tmp_path / "data"))
        seeded(tmp_path / "data" / "sessions.db")
        from_data_dir = store_line(["sessions", "list"], capsys)[2]

        assert from_env == f"Session store: {url} (the SESSION_STORE_URL environment variable)"
        assert from_data_dir == (
            f"Session store: sqlite:///{tmp_path / 'data' / 'sessions.db'} (the default file in "
            "HELIX_DATA_DIR)"
        )

    def test_pipelines_dir_option_beats_the_environment_also_after_the_action(
        self, pipelines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        other = tmp_path / "other"
        url = seeded(tmp_path / "other.db")
        saved = save_valves(other, "helix", SESSION_STORE_URL=url)

        before = store_line(["sessions", "--pipelines-dir", str(other), "list"], capsys)[2]
        after = store_line(["sessions", "list", "--pipelines-dir", str(other)], capsys)[2]

        assert before == after == f"Session store: {url} (the SESSION_STORE_URL valve in {saved})"

    @pytest.mark.parametrize(
        "argv",
        [
            pytest.param(["list"], id="list"),
            pytest.param(["show", "chat-1"], id="show"),
            pytest.param(["export"], id="export"),
            pytest.param(["delete", "--user", "ben", "chat-1"], id="delete"),
            pytest.param(["purge", "--older-than-days", "3"], id="purge"),
        ],
    )
    def test_a_command_that_reads_never_creates_the_store_or_its_folder(
        self, argv: list[str], pipelines: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(["sessions", *argv], capsys)

        path = pipelines.absolute() / "helix_data" / "sessions.db"
        assert (code, out) == (1, "")
        assert err.startswith(
            f"helix-pipeline: error: no session store at {path}: neither the file nor its folder "
            f"{path.parent} exists (the default file beside the pipelines in {pipelines}); the "
            "Helix pipeline creates it with its first recorded chat"
        )
        assert list(pipelines.iterdir()) == []

    def test_a_missing_file_given_by_store_says_to_check_that_url(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "typo.db"

        code, _, err = run(["sessions", "--store", f"sqlite:///{path}", "list"], capsys)

        assert code == 1
        assert err == (
            f"helix-pipeline: error: no session store at {path}: the file does not exist "
            "(--store); check the URL given to --store\n"
        )
        assert not path.exists()

    def test_import_creates_the_store_it_names(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = seeded(tmp_path / "source.db")
        run(["sessions", "--store", source, "export", "-o", str(tmp_path / "all.jsonl")], capsys)
        target = tmp_path / "new" / "sessions.db"

        code, out, _ = run(
            ["sessions", "--store", f"sqlite:///{target}", "import", str(tmp_path / "all.jsonl")],
            capsys,
        )

        assert code == 0
        assert out.startswith("Imported 1 message")
        assert target.is_file()

    def test_a_file_as_the_pipelines_folder_is_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        not_a_folder = tmp_path / "pipelines.txt"
        not_a_folder.write_text("", encoding="utf-8")

        code, _, err = run(["sessions", "--pipelines-dir", str(not_a_folder), "list"], capsys)

        assert code == 1
        assert err == (
            f"helix-pipeline: error: {not_a_folder} is not a folder: give --pipelines-dir (or "
            "PIPELINES_DIR) the Pipelines server's pipelines folder, or --store a store URL\n"
        )

    @pytest.mark.parametrize(
        ("saved", "problem"),
        [
            pytest.param("{not json", "cannot read the saved valves", id="not-json"),
            pytest.param(
                json.dumps({"SESSION_STORE_URL": "mongodb://x"}),
                "the SESSION_STORE_URL valve in",
                id="bad-valve",
            ),
        ],
    )
    def test_saved_valves_it_cannot_use_fail_in_one_line_naming_the_file(
        self, saved: str, problem: str, pipelines: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = pipelines / "helix" / "valves.json"
        path.parent.mkdir()
        path.write_text(saved, encoding="utf-8")

        code, _, err = run(["sessions", "list"], capsys)

        assert code == 1
        assert problem in err
        assert str(path) in err
        assert err.count("\n") == 1


@pytest.mark.integration
class TestBesideARealPipelinesServer:
    """The real Pipelines server records a chat; the command, given only its folder, finds it."""

    def turn(self, server: PipelinesServer, chat_id: str) -> None:
        body = {
            "model": MODEL,
            "stream": False,
            "messages": [{"role": "user", "content": "Hello"}],
            "metadata": {"chat_id": chat_id, "user_id": "u-ana", "message_id": f"m-{chat_id}"},
        }
        assert ask(server.http, body, ANA_USER).status_code == 200

    def test_sessions_open_the_servers_store_by_default_and_after_a_valve_change(
        self,
        fake_helix: FakeHelix,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        moved = tmp_path / "moved.db"
        with PipelinesServer(
            tmp_path / "server", [PIPELINES / "helix.py"], env={"HELIX_BASE_URL": fake_helix.url}
        ) as server:
            self.turn(server, "chat-default")
            default = store_line(
                ["sessions", "--pipelines-dir", str(server.pipelines_dir), "list"], capsys
            )
            valves = server.valves("helix")
            server.update_valves("helix", {**valves, "SESSION_STORE_URL": f"sqlite:///{moved}"})
            self.turn(server, "chat-moved")
            monkeypatch.setenv("PIPELINES_DIR", str(server.pipelines_dir))
            after = store_line(["sessions", "list"], capsys)

        data = server.pipelines_dir / "helix_data" / "sessions.db"
        assert default[2] == (
            f"Session store: sqlite:///{data} (the default file beside the pipelines in "
            f"{server.pipelines_dir})"
        )
        assert [line.split()[:2] for line in default[1].splitlines()[1:]] == [
            ["u-ana", "chat-default"]
        ]
        saved = server.pipelines_dir / "helix" / "valves.json"
        assert (
            after[2] == f"Session store: sqlite:///{moved} (the SESSION_STORE_URL valve in {saved})"
        )
        assert [line.split()[:2] for line in after[1].splitlines()[1:]] == [["u-ana", "chat-moved"]]
