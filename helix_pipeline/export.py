"""Conversations as JSON Lines: one line per stored message, every branch, nothing secret.

The first line names the format (``{"format": "helix-pipeline sessions export", "version": 1}``)
and the last one counts what the file holds (``{"end": "helix-pipeline sessions export",
"conversations": 3, "branches": 4, "messages": 6}``): a file cut short, or missing lines, is
refused by :func:`read_records` naming the line. An export written before these two records existed
is still read, unchecked (:attr:`ReadExport.checked` is false). :func:`export_to_file` writes a
temporary file beside the target and renames it, so the target is never left half written.

Every other line is an object with ``user``, ``conversation``, ``branch`` (0 = oldest), ``position``
(0 = first message of that branch), ``role``, ``content``, ``message_id``, ``partial`` and
``created_at`` (ISO 8601, UTC). The store's URL is never written. :func:`import_jsonl` reads such a
file back into any store, branch by branch in order; a branch the store already holds is skipped,
so importing the same file twice changes nothing. Imported messages keep their ``created_at``
(a time without an offset is read as UTC; ``null`` gets the time of the import), and so each
conversation keeps its last activity for listing and for ``SESSION_TTL_DAYS``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .conversation import ConversationKey
from .errors import InputError
from .messages import Message, Role
from .stores import SessionStore

__all__ = [
    "FORMAT",
    "ExportCounts",
    "ImportCounts",
    "ReadExport",
    "export_jsonl",
    "export_to_file",
    "import_jsonl",
    "import_records",
    "message_records",
    "read_records",
]

FORMAT = "helix-pipeline sessions export"
VERSION = 1

FIELDS = (
    "user",
    "conversation",
    "branch",
    "position",
    "role",
    "content",
    "message_id",
    "partial",
    "created_at",
)
_ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ExportCounts:
    """What :func:`export_jsonl` wrote."""

    conversations: int
    branches: int
    messages: int


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What :func:`import_jsonl` did: branches recorded, and branches the store already held.

    ``checked`` is false for an export from before the end record existed: it was imported, but
    could not be checked for being complete.
    """

    conversations: int
    branches: int
    messages: int
    skipped_branches: int
    checked: bool = True


@dataclass(frozen=True, slots=True)
class ReadExport:
    """A parsed export: each conversation's branches, oldest first, and whether it was checked
    complete against its end record (false for an export written before end records existed)."""

    conversations: dict[ConversationKey, list[list[Message]]]
    checked: bool


def message_records(store: SessionStore, user_id: str | None = None) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per stored message: every user (or ``user_id``), every branch."""
    users = [user_id] if user_id is not None else store.users()
    for user in users:
        for summary in store.conversations(user):
            key = ConversationKey(user, summary.conversation_id)
            for branch, messages in enumerate(store.branches(key)):
                for position, message in enumerate(messages):
                    yield _record(key, branch, position, message)


def export_jsonl(store: SessionStore, out: TextIO, *, user_id: str | None = None) -> ExportCounts:
    """Write the format line, :func:`message_records` and the end record to ``out``, one compact
    JSON object a line."""
    _write_line(out, {"format": FORMAT, "version": VERSION})
    conversations: set[tuple[str, str]] = set()
    branches: set[tuple[str, str, int]] = set()
    messages = 0
    for record in message_records(store, user_id):
        _write_line(out, record)
        conversations.add((record["user"], record["conversation"]))
        branches.add((record["user"], record["conversation"], record["branch"]))
        messages += 1
    counts = ExportCounts(len(conversations), len(branches), messages)
    _write_line(out, _end_record(counts))
    return counts


def export_to_file(store: SessionStore, path: Path, *, user_id: str | None = None) -> ExportCounts:
    """:func:`export_jsonl` into ``path`` atomically: a temporary file in the same folder, flushed
    to disk, then renamed over ``path``. A failure leaves ``path`` as it was.

    Raises :class:`InputError` saying what to change when ``path`` cannot be written.
    """
    if path.is_dir():
        raise InputError(f"{path} is a folder: give -o a file name, e.g. {path / 'sessions.jsonl'}")
    folder = path.parent
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(_cannot_write(path, exc, folder)) from exc
    try:
        with open(handle, "w", encoding="utf-8", newline="\n") as file:
            counts = export_jsonl(store, file, user_id=user_id)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise InputError(_cannot_write(path, exc, folder)) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return counts


def _cannot_write(path: Path, exc: OSError, folder: Path) -> str:
    reason = exc.strerror or str(exc)
    if not folder.is_dir():
        return f"cannot write {path}: the folder {folder} does not exist; create it or choose another -o"
    return f"cannot write {path}: {reason}; choose another -o, or free or grant access to {folder}"


def _write_line(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def _end_record(counts: ExportCounts) -> dict[str, Any]:
    return {
        "end": FORMAT,
        "conversations": counts.conversations,
        "branches": counts.branches,
        "messages": counts.messages,
    }


def read_records(lines: Iterable[str]) -> ReadExport:
    """Parse an export into each conversation's branches, oldest first; blank lines are skipped.

    Raises :class:`InputError` naming the line of the first record that cannot be used, or the
    last line of a file that ends without its end record (cut short), or the end record when its
    counts differ from what the file holds (lines lost).
    """
    found: dict[ConversationKey, dict[int, dict[int, Message]]] = {}
    started = last = end_line = 0
    end: dict[str, Any] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last, raw = number, _json(line, number)
        if end is not None:
            raise InputError(
                f"line {number} comes after the end record on line {end_line}: two exports joined, "
                "or a damaged file? Import each export by itself"
            )
        if isinstance(raw, dict) and "format" in raw:
            if started or found:
                raise InputError(
                    f"line {number}: a second format line; import each export by itself"
                )
            started = _check_format(raw, number)
        elif isinstance(raw, dict) and "end" in raw:
            if not started:
                raise InputError(
                    f"line {number} is an end record, but the file does not start with the format "
                    "line: its beginning is missing; export it again"
                )
            end, end_line = raw, number
        else:
            _add(found, _parse(raw, number), number)
    if not last:
        raise InputError("the file is empty: there is nothing to import; is this an export?")
    if started and end is None:
        raise InputError(
            f"the export ends at line {last} without its end record: the file was cut short; "
            "export it again"
        )
    result = _ordered(found)
    if end is not None:
        _check_counts(end, end_line, result)
    return ReadExport(result, checked=bool(started))


def _json(line: str, number: int) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"line {number} is not JSON ({exc.msg}): the file was cut short or is not an export"
        ) from exc


def _check_format(raw: dict[str, Any], number: int) -> int:
    """The format line's number, once it is known to be ours and a version this code reads."""
    version = raw.get("version")
    if raw["format"] != FORMAT or not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"line {number}: not a {FORMAT} (format {raw['format']!r})")
    if version > VERSION:
        raise InputError(
            f"line {number}: this export is format version {version}, newer than this "
            f"helix-pipeline reads ({VERSION}); upgrade helix-pipeline to import it"
        )
    return number


def _add(
    found: dict[ConversationKey, dict[int, dict[int, Message]]],
    parsed: tuple[ConversationKey, int, int, Message],
    number: int,
) -> None:
    key, branch, position, message = parsed
    positions = found.setdefault(key, {}).setdefault(branch, {})
    if position in positions:
        raise InputError(
            f"line {number}: branch {branch} of conversation {key.conversation_id!r} "
            f"has two messages at position {position}"
        )
    positions[position] = message


def _ordered(
    found: dict[ConversationKey, dict[int, dict[int, Message]]],
) -> dict[ConversationKey, list[list[Message]]]:
    result: dict[ConversationKey, list[list[Message]]] = {}
    for key, branches in found.items():
        ordered: list[list[Message]] = []
        for branch in sorted(branches):
            positions = branches[branch]
            if sorted(positions) != list(range(len(positions))):
                raise InputError(
                    f"branch {branch} of conversation {key.conversation_id!r} has gaps in its "
                    "positions; export the whole conversation again"
                )
            ordered.append([positions[p] for p in range(len(positions))])
        result[key] = ordered
    return result


def _check_counts(
    end: dict[str, Any], number: int, held: dict[ConversationKey, list[list[Message]]]
) -> None:
    """The end record's counts match what the file holds, or the file lost lines."""
    found = {
        "conversations": len(held),
        "branches": sum(len(branches) for branches in held.values()),
        "messages": sum(len(b) for branches in held.values() for b in branches),
    }
    for name, count in found.items():
        expected = end.get(name)
        if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
            raise InputError(f"line {number}: the end record's {name!r} must be a whole number")
        if expected != count:
            raise InputError(
                f"line {number}: the end record counts {expected} {name} but the file holds "
                f"{count}: lines are missing or were added; export it again"
            )


def import_jsonl(store: SessionStore, lines: Iterable[str]) -> ImportCounts:
    """Record every branch of an export into ``store``, oldest first; branches it holds are skipped.

    The whole file is parsed before anything is written, so a broken file writes nothing.
    """
    return import_records(store, read_records(lines))


def import_records(store: SessionStore, parsed: ReadExport) -> ImportCounts:
    """Record a parsed export (:func:`read_records`) into ``store``, as :func:`import_jsonl`."""
    conversations = branches = messages = skipped = 0
    for key, exported in parsed.conversations.items():
        held = [_comparable(branch) for branch in store.branches(key)]
        wrote = False
        for branch in exported:
            if _comparable(branch) in held:
                skipped += 1
                continue
            # Recording a whole branch from the start forks it off the active branch at the first
            # message that differs, which recreates the exported branch as the newest one.
            store.record(key, branch, after=0)
            held.append(_comparable(branch))
            branches += 1
            messages += len(branch)
            wrote = True
        conversations += wrote
    return ImportCounts(conversations, branches, messages, skipped, parsed.checked)


def _record(key: ConversationKey, branch: int, position: int, message: Message) -> dict[str, Any]:
    created = (
        datetime.fromtimestamp(message.created_at, timezone.utc).isoformat()
        if message.created_at is not None
        else None
    )
    return {
        "user": key.user_id,
        "conversation": key.conversation_id,
        "branch": branch,
        "position": position,
        "role": message.role,
        "content": message.content,
        "message_id": message.message_id,
        "partial": message.partial,
        "created_at": created,
    }


def _parse(raw: object, number: int) -> tuple[ConversationKey, int, int, Message]:
    if not isinstance(raw, dict):
        raise InputError(f"line {number} is not a JSON object; is this an export?")
    missing = [name for name in FIELDS if name not in raw]
    if missing:
        raise InputError(f"line {number} lacks {', '.join(missing)}; is this an export?")
    user, conversation = raw["user"], raw["conversation"]
    if not (isinstance(user, str) and user and isinstance(conversation, str) and conversation):
        raise InputError(f"line {number}: 'user' and 'conversation' must be non-empty strings")
    branch, position = raw["branch"], raw["position"]
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (branch, position)
    ):
        raise InputError(f"line {number}: 'branch' and 'position' must be whole numbers, 0 or more")
    role = raw["role"]
    if role not in _ROLES:
        raise InputError(f"line {number}: 'role' must be one of {', '.join(_ROLES)}, not {role!r}")
    content, message_id = raw["content"], raw["message_id"]
    if not isinstance(content, str):
        raise InputError(f"line {number}: 'content' must be a string")
    if message_id is not None and not (isinstance(message_id, str) and message_id):
        raise InputError(f"line {number}: 'message_id' must be a non-empty string or null")
    if not isinstance(raw["partial"], bool):
        raise InputError(f"line {number}: 'partial' must be true or false")
    message = Message(
        role,
        content,
        message_id=message_id,
        partial=raw["partial"],
        created_at=_timestamp(raw["created_at"], number),
    )
    return ConversationKey(user, conversation), branch, position, message


def _timestamp(created_at: object, number: int) -> float | None:
    """An export's ``created_at`` as Unix seconds; ``None`` stays ``None``."""
    if created_at is None:
        return None
    problem = f"line {number}: 'created_at' must be an ISO 8601 string or null"
    if not isinstance(created_at, str):
        raise InputError(problem)
    text = created_at[:-1] + "+00:00" if created_at.endswith(("Z", "z")) else created_at
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{problem}, not {created_at!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _comparable(branch: Sequence[Message]) -> tuple[tuple[str, str, str | None, bool], ...]:
    """A branch without its times, for telling whether a store already holds it."""
    return tuple((m.role, m.content, m.message_id, m.partial) for m in branch)
