"""JSON Lines export and import: every branch, in order, nothing duplicated, nothing secret."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helix_pipeline.conversation import ConversationKey
from helix_pipeline.errors import InputError, StoreUnavailable
from helix_pipeline.export import (
    FORMAT,
    ExportCounts,
    ImportCounts,
    export_jsonl,
    export_to_file,
    import_jsonl,
    message_records,
    read_records,
)
from helix_pipeline.messages import Message
from helix_pipeline.stores import MemoryStore, SessionStore, open_store

from .store_servers import store_url

ANA = ConversationKey("ana", "chat-1")
ANA_OTHER = ConversationKey("ana", "chat-2")
BEN = ConversationKey("ben", "chat-1")

Row = tuple[str, str, str | None, bool]


def rows(branches: Sequence[Sequence[Message]]) -> list[list[Row]]:
    return [[(m.role, m.content, m.message_id, m.partial) for m in branch] for branch in branches]


def fill(store: SessionStore) -> None:
    """Ana's chat with a regeneration and an edit (three branches), her second chat, Ben's chat."""
    store.record(
        ANA,
        [
            Message("system", "Be brief."),
            Message("user", "Hello, I am Ana. 2+2?", "u1"),
            Message("assistant", "4", "a1"),
            Message("user", "Times 10?", "u2"),
            Message("assistant", "4", "a2", partial=True),
        ],
    )
    store.record(ANA, [Message("assistant", "40", "a2-regen")], after=4)
    store.record(
        ANA, [Message("user", "Times 100?", "u2-edit"), Message("assistant", "400", "a3")], after=3
    )
    store.record(ANA_OTHER, [Message("user", "Grüße, 世界", None)])
    store.record(BEN, [Message("user", "Ben's secret plan", "b1")])


@pytest.fixture(params=["memory", "sqlite"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'source.db'}"
    store = open_store(url)
    fill(store)
    yield store
    store.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[SessionStore]:
    store = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    yield store
    store.close()


def exported(store: SessionStore, user_id: str | None = None) -> str:
    out = io.StringIO()
    export_jsonl(store, out, user_id=user_id)
    return out.getvalue()


def message_lines(text: str) -> list[dict[str, object]]:
    """The message records of an export, without its format line and end record."""
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0] == {"format": FORMAT, "version": 1}
    assert "end" in records[-1]
    return records[1:-1]


class TestExport:
    def test_every_message_of_every_branch_is_one_line(self, source: SessionStore) -> None:
        out = io.StringIO()
        counts = export_jsonl(source, out)

        records = message_lines(out.getvalue())
        assert counts == ExportCounts(conversations=3, branches=5, messages=len(records))
        assert len(records) == 5 + 5 + 5 + 1 + 1

    def test_it_starts_with_its_format_and_ends_with_its_counts(self, source: SessionStore) -> None:
        lines = exported(source).splitlines()

        assert lines[0] == '{"format":"helix-pipeline sessions export","version":1}'
        assert json.loads(lines[-1]) == {
            "end": "helix-pipeline sessions export",
            "conversations": 3,
            "branches": 5,
            "messages": 17,
        }

    def test_a_line_holds_exactly_the_documented_fields(self, source: SessionStore) -> None:
        first = message_lines(exported(source, "ana"))[0]

        assert set(first) == {
            "user",
            "conversation",
            "branch",
            "position",
            "role",
            "content",
            "message_id",
            "partial",
            "created_at",
        }
        assert str(first["created_at"]).endswith("+00:00")

    def test_branches_and_positions_follow_the_store(self, source: SessionStore) -> None:
        records = [r for r in message_records(source, "ana") if r["conversation"] == "chat-1"]

        assert [(r["branch"], r["position"]) for r in records] == [
            (branch, position) for branch in range(3) for position in range(5)
        ]
        assert [r["message_id"] for r in records if r["position"] == 4] == ["a2", "a2-regen", "a3"]
        assert [r["partial"] for r in records if r["position"] == 4] == [True, False, False]

    def test_one_user_export_holds_nobody_else(self, source: SessionStore) -> None:
        text = exported(source, "ana")

        assert {record["user"] for record in message_lines(text)} == {"ana"}
        assert "Ben's secret plan" not in text

    def test_non_ascii_text_is_written_readably(self, source: SessionStore) -> None:
        assert "Grüße, 世界" in exported(source)

    def test_an_unknown_user_exports_no_message(self, source: SessionStore) -> None:
        assert message_lines(exported(source, "nobody")) == []


class TestImport:
    def test_a_round_trip_keeps_every_branch_in_order(
        self, source: SessionStore, target: SessionStore
    ) -> None:
        counts = import_jsonl(target, io.StringIO(exported(source)))

        assert counts == ImportCounts(
            conversations=3, branches=5, messages=17, skipped_branches=0, checked=True
        )
        for key in (ANA, ANA_OTHER, BEN):
            assert rows(target.branches(key)) == rows(source.branches(key))
        assert rows([target.load(ANA)]) == rows([source.load(ANA)])

    def test_importing_twice_duplicates_nothing(
        self, source: SessionStore, target: SessionStore
    ) -> None:
        text = exported(source)
        import_jsonl(target, io.StringIO(text))

        again = import_jsonl(target, io.StringIO(text))

        assert again == ImportCounts(conversations=0, branches=0, messages=0, skipped_branches=5)
        assert rows(target.branches(ANA)) == rows(source.branches(ANA))
        assert exported(target).count("\n") == exported(source).count("\n")

    def test_a_store_holding_the_first_branch_gets_only_the_newer_ones(
        self, source: SessionStore, target: SessionStore
    ) -> None:
        target.record(ANA, source.branches(ANA)[0])

        counts = import_jsonl(target, io.StringIO(exported(source, "ana")))

        assert counts.skipped_branches == 1
        assert rows(target.branches(ANA)) == rows(source.branches(ANA))

    def test_a_round_trip_into_memory_matches_too(self, source: SessionStore) -> None:
        memory = open_store("memory://")
        import_jsonl(memory, io.StringIO(exported(source)))

        assert rows(memory.branches(ANA)) == rows(source.branches(ANA))

    def test_blank_lines_are_ignored(self, source: SessionStore, target: SessionStore) -> None:
        text = exported(source, "ben").replace("\n", "\n\n")

        assert import_jsonl(target, io.StringIO(text)).messages == 1


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="into-sqlite"),
        pytest.param("redis", id="into-redis"),
        pytest.param("postgres", id="into-postgres"),
    ]
)
def any_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """An empty store of another engine (skipped where its server cannot be started)."""
    store = open_store(store_url(request.param, tmp_path, request))
    yield store
    store.close()


def activity(store: SessionStore) -> dict[tuple[str, str], datetime]:
    """Every conversation's last activity, by user and conversation id."""
    return {
        (user, summary.conversation_id): summary.last_activity
        for user in store.users()
        for summary in store.conversations(user)
    }


def times(store: SessionStore, key: ConversationKey) -> list[tuple[int, datetime]]:
    """Each message's creation time to the microsecond (as an export holds it), by branch."""
    return [
        (n, datetime.fromtimestamp(m.created_at, timezone.utc))
        for n, branch in enumerate(store.branches(key))
        for m in branch
        if m.created_at is not None
    ]


class TestImportKeepsTheOriginalTimes:
    def test_messages_keep_their_creation_times(
        self, source: SessionStore, any_target: SessionStore
    ) -> None:
        import_jsonl(any_target, io.StringIO(exported(source)))

        for key in (ANA, ANA_OTHER, BEN):
            assert times(any_target, key) == times(source, key)
            assert len(times(any_target, key)) == sum(map(len, source.branches(key)))

    def test_conversations_keep_their_last_activity(
        self, source: SessionStore, any_target: SessionStore
    ) -> None:
        import_jsonl(any_target, io.StringIO(exported(source)))

        assert activity(any_target) == activity(source)
        assert [c.conversation_id for c in any_target.conversations("ana")] == [
            c.conversation_id for c in source.conversations("ana")
        ]

    def test_a_second_export_is_the_same_file(
        self, source: SessionStore, target: SessionStore
    ) -> None:
        text = exported(source)
        import_jsonl(target, io.StringIO(text))

        assert exported(target) == text


class TestCreationTimesInAFile:
    @pytest.mark.parametrize(
        ("written", "seconds"),
        [
            pytest.param("2024-03-01T12:00:00.250000+00:00", 0.25, id="as-exported"),
            pytest.param("2024-03-01T13:00:00+01:00", 0.0, id="another-offset"),
            pytest.param("2024-03-01T12:00:00Z", 0.0, id="zulu"),
            pytest.param("2024-03-01T12:00:00", 0.0, id="no-offset-is-utc"),
        ],
    )
    def test_is_read_as_that_moment(self, written: str, seconds: float) -> None:
        ((message,),) = read_records([line(created_at=written)]).conversations[ANA]

        noon = datetime(2024, 3, 1, 12, tzinfo=timezone.utc).timestamp()
        assert message.created_at == noon + seconds

    def test_null_is_left_for_the_store_to_stamp(self) -> None:
        ((message,),) = read_records([line(created_at=None)]).conversations[ANA]

        assert message.created_at is None


def line(**changes: object) -> str:
    record: dict[str, object] = {
        "user": "ana",
        "conversation": "chat-1",
        "branch": 0,
        "position": 0,
        "role": "user",
        "content": "hi",
        "message_id": None,
        "partial": False,
        "created_at": None,
    }
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v != "<drop>"})


class TestABrokenFile:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            pytest.param("not json", "line 1 is not JSON", id="not-json"),
            pytest.param("[1, 2]", "line 1 is not a JSON object", id="not-an-object"),
            pytest.param(line(role="<drop>"), "line 1 lacks role", id="missing-field"),
            pytest.param(line(role="tool"), "'role' must be one of", id="unknown-role"),
            pytest.param(line(user=""), "'user' and 'conversation'", id="empty-user"),
            pytest.param(line(branch=-1), "'branch' and 'position'", id="negative-branch"),
            pytest.param(line(position=True), "'branch' and 'position'", id="boolean-position"),
            pytest.param(line(content=["a"]), "'content' must be a string", id="list-content"),
            pytest.param(line(message_id=""), "'message_id'", id="empty-message-id"),
            pytest.param(line(partial="no"), "'partial' must be true or false", id="text-partial"),
            pytest.param(line(created_at=12.5), "'created_at'", id="numeric-created-at"),
            pytest.param(line(created_at="yesterday"), "'created_at'", id="text-created-at"),
            pytest.param(line(position=1), "has gaps in its positions", id="gap"),
            pytest.param(line() + "\n" + line(), "two messages at position 0", id="duplicate"),
        ],
    )
    def test_is_refused_with_the_reason(self, text: str, problem: str) -> None:
        with pytest.raises(InputError, match=problem):
            read_records(text.splitlines())

    def test_names_the_line_of_the_first_bad_record(self) -> None:
        with pytest.raises(InputError, match="line 3"):
            read_records([line(), "", line(position=1, role="robot")])

    def test_writes_nothing_at_all(self, target: SessionStore) -> None:
        with pytest.raises(InputError):
            import_jsonl(target, [line(), line(conversation="chat-2"), "{"])

        assert target.users() == []


class TestACutOrDamagedExport:
    def test_a_file_cut_after_any_line_is_refused_naming_its_last_line(
        self, source: SessionStore
    ) -> None:
        lines = exported(source).splitlines()

        for kept in range(1, len(lines)):
            with pytest.raises(InputError, match=f"ends at line {kept} without its end record"):
                read_records(lines[:kept])

    def test_a_file_cut_inside_a_line_is_refused_naming_that_line(
        self, source: SessionStore
    ) -> None:
        text = exported(source)

        with pytest.raises(InputError, match=f"line {text.count(chr(10))} is not JSON"):
            read_records(text[:-20].splitlines())

    def test_a_lost_line_is_caught_by_the_end_records_counts(self, source: SessionStore) -> None:
        lines = [line for line in exported(source).splitlines() if "Ben's secret" not in line]

        with pytest.raises(
            InputError, match=f"line {len(lines)}: the end record counts 3 conversations but"
        ):
            read_records(lines)

    def test_two_exports_joined_are_refused(self, source: SessionStore) -> None:
        lines = exported(source, "ben").splitlines()

        with pytest.raises(InputError, match="line 4 comes after the end record on line 3"):
            read_records(lines + lines)

    def test_a_file_without_its_beginning_is_refused(self, source: SessionStore) -> None:
        lines = exported(source).splitlines()[5:]

        with pytest.raises(InputError, match="does not start with the format line"):
            read_records(lines)

    def test_a_newer_format_asks_for_an_upgrade(self) -> None:
        newer = json.dumps({"format": FORMAT, "version": 2})

        with pytest.raises(InputError, match="upgrade helix-pipeline"):
            read_records([newer, line(), json.dumps({"end": FORMAT})])

    def test_an_empty_file_is_refused(self) -> None:
        with pytest.raises(InputError, match="the file is empty"):
            read_records(["", "\n"])

    def test_a_cut_file_writes_nothing(self, source: SessionStore, target: SessionStore) -> None:
        lines = exported(source).splitlines()[:-1]

        with pytest.raises(InputError):
            import_jsonl(target, lines)

        assert target.users() == []


class TestAnExportFromBeforeTheEndRecord:
    def test_is_imported_and_reported_unchecked(
        self, source: SessionStore, target: SessionStore
    ) -> None:
        old = exported(source).splitlines()[1:-1]

        counts = import_jsonl(target, old)

        assert (counts.messages, counts.checked) == (17, False)
        assert rows(target.branches(ANA)) == rows(source.branches(ANA))


class BreaksAtBen(MemoryStore):
    """A store that fails when the export reaches Ben, after Ana's lines were written."""

    def branches(self, key: ConversationKey) -> list[list[Message]]:
        if key.user_id == "ben":
            raise StoreUnavailable("the store went away", store=self.url)
        return super().branches(key)


class TestExportToAFile:
    def test_writes_the_whole_export(self, source: SessionStore, tmp_path: Path) -> None:
        path = tmp_path / "out" / "all.jsonl"
        path.parent.mkdir()

        counts = export_to_file(source, path)

        assert path.read_text(encoding="utf-8") == exported(source)
        assert counts.messages == 17
        assert [p.name for p in path.parent.iterdir()] == ["all.jsonl"]

    def test_a_failure_half_way_leaves_the_old_file_and_no_temporary_one(
        self, tmp_path: Path
    ) -> None:
        store = BreaksAtBen()
        fill(store)
        path = tmp_path / "all.jsonl"
        path.write_text("the previous export\n", encoding="utf-8")

        with pytest.raises(StoreUnavailable):
            export_to_file(store, path)

        assert path.read_text(encoding="utf-8") == "the previous export\n"
        assert [p.name for p in tmp_path.iterdir()] == ["all.jsonl"]

    def test_a_folder_is_refused_with_a_file_name_to_use(
        self, source: SessionStore, tmp_path: Path
    ) -> None:
        with pytest.raises(InputError, match=r"is a folder: give -o a file name, e\.g\. "):
            export_to_file(source, tmp_path)

    def test_a_missing_folder_is_named(self, source: SessionStore, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"the folder .*no-such-dir does not exist; create it"):
            export_to_file(source, tmp_path / "no-such-dir" / "all.jsonl")

        assert not (tmp_path / "no-such-dir").exists()
