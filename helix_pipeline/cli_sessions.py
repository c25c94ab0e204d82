"""``helix-pipeline sessions``: list, show, export, import, delete and purge stored chats.

Each action opens the store the Pipelines server beside it uses (:mod:`.store_location`), or
``--store``, and says on stderr which one. Only ``import`` may create a store: the others refuse a
URL that names no existing store, saying so, and never create a file or a folder by looking.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import TextIO

from .conversation import ConversationKey, header_safe, helix_session_id
from .errors import InputError
from .export import ReadExport, export_jsonl, export_to_file, import_records, read_records
from .messages import Message
from .store_location import StoreChoice, choose_store, pipelines_dir_from
from .stores import MemoryStore, SessionStore, missing_store, open_store
from .urls import redact_url

__all__ = ["add_sessions", "plural", "preview"]

PREVIEW_CHARS = 72
HELIX_SEPARATOR = "\n\n---\n\n"

Action = Callable[[argparse.Namespace, SessionStore, TextIO], int]


def add_sessions(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``sessions`` command and its actions, each with ``--store`` / ``--pipelines-dir``."""
    sessions = commands.add_parser(
        "sessions", help="list, show, export, import, delete or purge stored chats"
    )
    _store_options(sessions, default=None)
    actions = sessions.add_subparsers(title="actions", required=True, metavar="ACTION")
    # The options are also taken after the action; SUPPRESS keeps absent ones from hiding the first.
    after = argparse.ArgumentParser(add_help=False)
    _store_options(after, default=argparse.SUPPRESS)

    def action(name: str, help: str, run: Action) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[after], help=help)
        parser.set_defaults(command=_with_store(run, creates=False))
        return parser

    listing = action("list", "conversations, most recent first", _list)
    listing.add_argument("--user", help="only this user's (default: every user)")
    show = action("show", "one conversation's active branch, and its Helix session", _show)
    show.add_argument("--user", help="whose conversation (default: whoever has it)")
    show.add_argument("conversation", metavar="CONVERSATION_ID")
    export = action("export", "every message of every branch as JSON Lines", _export)
    export.add_argument("--user", help="only this user's (default: every user)")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    importing = actions.add_parser(
        "import", parents=[after], help="read an export into the store (idempotent)"
    )
    importing.add_argument("file", metavar="FILE", help="a JSON Lines export, or - for stdin")
    importing.set_defaults(command=_import)
    delete = action("delete", "delete a user's conversation, or all of them", _delete)
    delete.add_argument("--user", required=True)
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("conversation", nargs="?", metavar="CONVERSATION_ID")
    which.add_argument("--all", action="store_true", help="every conversation of the user")
    delete.add_argument("--yes", action="store_true", help="do not ask before deleting --all")
    purge = action("purge", "delete conversations inactive for N days", _purge)
    purge.add_argument("--older-than-days", type=_days, required=True, metavar="N")
    purge.add_argument("--dry-run", action="store_true", help="only list what would be deleted")


def _store_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "--store",
        default=default,
        metavar="URL",
        help="session store URL (default: the store of the Pipelines server in --pipelines-dir)",
    )
    parser.add_argument(
        "--pipelines-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="the Pipelines server's folder, whose store to open (default: PIPELINES_DIR, else "
        "./pipelines): its saved SESSION_STORE_URL valve, else SESSION_STORE_URL, else "
        "DIR/helix_data/sessions.db",
    )


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError("must be a whole number of days, 1 or more")
    return days


def _with_store(action: Action, *, creates: bool) -> Callable[[argparse.Namespace, TextIO], int]:
    def run(args: argparse.Namespace, out: TextIO) -> int:
        choice = choose_store(args.store, pipelines_dir_from(args.pipelines_dir))
        missing = None if creates else missing_store(choice.url)
        if missing is not None:
            raise InputError(f"{missing} ({choice.source}); {_look_elsewhere(choice)}")
        store = open_store(choice.url)
        sys.stderr.write(f"Session store: {choice.describe()}\n")
        try:
            return action(args, store, out)
        finally:
            store.close()

    return run


def _look_elsewhere(choice: StoreChoice) -> str:
    if choice.source == "--store":
        return "check the URL given to --store"
    return (
        "the Helix pipeline creates it with its first recorded chat; to read the store of a "
        "Pipelines server, give --pipelines-dir its pipelines folder (or set PIPELINES_DIR), or "
        "--store its SESSION_STORE_URL"
    )


def _again(args: argparse.Namespace, rest: str) -> str:
    """The command to run next, keeping the store options that were given (password hidden)."""
    options = ""
    if args.store:
        options += f" --store {redact_url(args.store)}"
    if args.pipelines_dir:
        options += f" --pipelines-dir {args.pipelines_dir}"
    return f"`helix-pipeline sessions{options} {rest}`"


def _list(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    users = [args.user] if args.user else store.users()
    rows = [(user, s) for user in users for s in store.conversations(user)]
    if not rows:
        whose = f" of user {args.user!r}" if args.user else ""
        out.write(f"No conversations{whose} in {redact_url(store.url)}.\n")
        return 0
    rows.sort(key=lambda row: (-row[1].last_activity.timestamp(), row[0], row[1].conversation_id))
    width = max(len("USER"), *(len(user) for user, _ in rows))
    id_width = max(len("CONVERSATION"), *(len(s.conversation_id) for _, s in rows))
    out.write(
        f"{'USER':<{width}}  {'CONVERSATION':<{id_width}}  MESSAGES  BRANCHES  LAST ACTIVITY\n"
    )
    for user, summary in rows:
        out.write(
            f"{user:<{width}}  {summary.conversation_id:<{id_width}}  "
            f"{summary.message_count:>8}  {summary.branch_count:>8}  "
            f"{_when(summary.last_activity)}\n"
        )
    return 0


def _find(
    args: argparse.Namespace, store: SessionStore
) -> tuple[ConversationKey, list[list[Message]]]:
    """The conversation ``show`` means: the given user's, else the one user who has it."""
    users = [args.user] if args.user else store.users()
    found = [
        (key, branches)
        for key in (ConversationKey(user, args.conversation) for user in users)
        if (branches := store.branches(key))
    ]
    if len(found) == 1:
        return found[0]
    if found:
        owners = ", ".join(key.user_id for key, _ in found)
        raise InputError(
            f"{len(found)} users have a conversation {args.conversation!r} ({owners}): add "
            f"--user to say whose, e.g. "
            f"{_again(args, f'show --user {found[0][0].user_id} {args.conversation}')}"
        )
    if args.user:
        nobody = f"user {args.user!r} has no conversation {args.conversation!r}"
    else:
        nobody = f"no user has a conversation {args.conversation!r}"
    listing = _again(args, f"list --user {args.user}" if args.user else "list")
    raise InputError(f"{nobody} in {redact_url(store.url)}; {listing} lists them")


def _show(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    key, branches = _find(args, store)
    active = branches[-1]
    out.write(f"Conversation {key.conversation_id} of user {key.user_id}\n")
    out.write(f"Helix session: {helix_session_id(header_safe(key.conversation_id))}\n")
    older = len(branches) - 1
    out.write(
        f"Active branch: {plural(len(active), 'message')} ({plural(older, 'older branch')})\n"
    )
    for position, message in enumerate(active):
        note = "  [cut off]" if message.partial else ""
        out.write(f"  {position:>3}  {message.role:<9}  {preview(message.content)}{note}\n")
    return 0


def _export(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    if args.output is None:
        counts = export_jsonl(store, out, user_id=args.user)
        report: TextIO = sys.stderr
    else:
        counts = export_to_file(store, args.output, user_id=args.user)
        report = out
    target = "stdout" if args.output is None else str(args.output)
    report.write(
        f"Exported {plural(counts.messages, 'message')} ({plural(counts.branches, 'branch')} of "
        f"{plural(counts.conversations, 'conversation')}) to {target}.\n"
    )
    return 0


def _import(args: argparse.Namespace, out: TextIO) -> int:
    """Read and check the whole file first: a file that cannot be imported opens no store."""
    if args.file == "-":
        parsed = read_records(sys.stdin)
    else:
        try:
            with open(args.file, encoding="utf-8") as file:
                parsed = read_records(file)
        except OSError as exc:
            raise InputError(
                f"cannot read {args.file}: {exc.strerror}; give the path of an export "
                "(`helix-pipeline sessions export -o FILE` writes one), or - for stdin"
            ) from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{args.file} is not UTF-8 text; is it an export?") from exc
    return _with_store(partial(_import_into, parsed), creates=True)(args, out)


def _import_into(
    parsed: ReadExport, args: argparse.Namespace, store: SessionStore, out: TextIO
) -> int:
    if isinstance(store, MemoryStore):
        raise InputError(
            f"{redact_url(store.url)} keeps nothing once this command ends: import into the store "
            "the pipeline uses, e.g. --store sqlite:////abs/path/sessions.db"
        )
    counts = import_records(store, parsed)
    out.write(
        f"Imported {plural(counts.messages, 'message')} ({plural(counts.branches, 'branch')} of "
        f"{plural(counts.conversations, 'conversation')}) into {redact_url(store.url)}; "
        f"{plural(counts.skipped_branches, 'branch')} held already.\n"
    )
    if not counts.checked:
        sys.stderr.write(
            f"helix-pipeline: warning: {args.file} has no end record (an export from an older "
            "helix-pipeline), so it could not be checked for being complete\n"
        )
    return 0


def _delete(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    if args.all:
        ids = [s.conversation_id for s in store.conversations(args.user)]
        if ids and not args.yes:
            _confirm(f"Delete all {plural(len(ids), 'conversation')} of user {args.user}")
        deleted = sum(store.delete(ConversationKey(args.user, cid)) for cid in ids)
        out.write(f"Deleted {plural(deleted, 'conversation')} of user {args.user}.\n")
        return 0
    if not store.delete(ConversationKey(args.user, args.conversation)):
        raise InputError(
            f"user {args.user!r} has no conversation {args.conversation!r} in "
            f"{redact_url(store.url)}; nothing deleted"
        )
    out.write(f"Deleted conversation {args.conversation} of user {args.user}.\n")
    return 0


def _confirm(question: str) -> None:
    """Ask on the terminal; without one (a script, a pipe) refuse and name ``--yes``."""
    stdin = sys.stdin
    if stdin is None or stdin.closed or not stdin.isatty():
        raise InputError(
            f"{question}? Nothing deleted: there is no terminal to ask; add --yes to confirm"
        )
    sys.stderr.write(f"{question}? This cannot be undone. [y/N] ")
    sys.stderr.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise InputError("not confirmed; nothing deleted")


def _purge(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    cutoff = datetime.now(timezone.utc) - timedelta(days=args.older_than_days)
    if args.dry_run:
        old = [
            (user, s.conversation_id)
            for user in store.users()
            for s in store.conversations(user)
            if s.last_activity < cutoff
        ]
        for user, conversation in old:
            out.write(f"would delete {conversation} of user {user}\n")
        out.write(
            f"Would purge {plural(len(old), 'conversation')} inactive since before "
            f"{_when(cutoff)} from {redact_url(store.url)}; nothing deleted (--dry-run).\n"
        )
        return 0
    purged = store.purge(cutoff)
    out.write(
        f"Purged {plural(purged, 'conversation')} inactive since before {_when(cutoff)} "
        f"from {redact_url(store.url)}.\n"
    )
    return 0


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first line worth reading of a message, cut to ``limit`` characters.

    Helix's answers open with a start notice and a ``---`` separator and carry ``<!-- STEP -->``
    markers: the preview starts after the separator and skips the markers.
    """
    answer = text.rsplit(HELIX_SEPARATOR, 1)[-1]
    lines = (s.strip() for s in answer.splitlines())
    line = next((s for s in lines if s and not s.startswith("<!--")), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``, ``0 branches``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('ch', 's')) else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
