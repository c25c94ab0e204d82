"""The ``helix-pipeline`` command: demo, sessions, doctor, install.

Every command writes its results to the ``out`` stream it is given (stdout) and its errors to
stderr: one line, never a traceback. :func:`main` is the one place that turns a
:class:`~helix_pipeline.errors.HelixPipelineError` or an ``OSError`` into that line
(:func:`error_line`). Exit codes: 0 done, 1 failed (the line says why and what to do), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from . import __version__
from .conversation import ConversationKey, header_safe, helix_session_id
from .errors import HelixPipelineError, InputError
from .export import export_jsonl, export_to_file, import_jsonl
from .stores import MemoryStore, SessionStore, open_store, redact_url
from .valves import default_store_url

__all__ = ["build_parser", "error_line", "main", "plural", "preview", "store_url_from"]

log = logging.getLogger(__name__)

PREVIEW_CHARS = 72
HELIX_SEPARATOR = "\n\n---\n\n"

Command = Callable[[argparse.Namespace, TextIO], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has written them
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command: Command = args.command
    try:
        code = command(args, sys.stdout)
        sys.stdout.flush()  # a full disk or a closed reader is reported here, not at exit
        return code
    except KeyboardInterrupt:
        sys.stderr.write("helix-pipeline: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `helix-pipeline demo | head`: the reader left, not an error
        _silence_stdout()
        return 0
    except (HelixPipelineError, OSError) as exc:
        sys.stderr.write(f"helix-pipeline: error: {error_line(exc)}\n")
        _flush_or_silence_stdout()
        return 1


def error_line(exc: HelixPipelineError | OSError) -> str:
    """The one line the command prints for a failure: what went wrong and what to do."""
    if isinstance(exc, HelixPipelineError):
        return " ".join(str(exc).split())
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}: free some space, or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}: run as a user who may, or choose another path"
    return " ".join(f"{exc.strerror or exc}{where}".split())


def _flush_or_silence_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helix-pipeline",
        description="Conversation memory for Helix behind Open WebUI Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"helix-pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="play an Open WebUI chat through the Helix pipe against a local Helix"
    )
    demo.add_argument("--helix-url", help="a running Helix instead of the built-in FakeHelix")
    demo.add_argument(
        "--store", metavar="URL", help="session store URL (default: SQLite in a temporary folder)"
    )
    demo.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream the chat turns, as Open WebUI does by default",
    )
    demo.set_defaults(command=_demo)

    _add_sessions(commands)

    doctor = commands.add_parser("doctor", help="check that Helix and the session store work")
    doctor.add_argument("--helix-url", help="default: HELIX_BASE_URL, else http://localhost:8001")
    doctor.add_argument(
        "--store", metavar="URL", help="default: SESSION_STORE_URL, else the default SQLite file"
    )
    doctor.add_argument(
        "--api-key-env",
        default="HELIX_API_KEY",
        metavar="NAME",
        help="environment variable holding Helix's API key (default: HELIX_API_KEY)",
    )
    doctor.set_defaults(command=_doctor)

    _add_install(commands)
    _add_bundle(commands)
    return parser


# ------------------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo

    return run_demo(out, helix_url=args.helix_url, store_url=args.store, stream=args.stream)


# --------------------------------------------------------------------------------- sessions


def _add_sessions(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser("sessions", help="list, show, export, import or delete chats")
    sessions.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="session store URL (default: SESSION_STORE_URL, else the default SQLite file)",
    )
    actions = sessions.add_subparsers(title="actions", required=True, metavar="ACTION")
    # --store is also taken after the action; SUPPRESS keeps an absent one from hiding the first.
    store_after = argparse.ArgumentParser(add_help=False)
    store_after.add_argument(
        "--store", default=argparse.SUPPRESS, metavar="URL", help="session store URL"
    )

    listing = actions.add_parser(
        "list", parents=[store_after], help="conversations, most recent first"
    )
    listing.add_argument("--user", help="only this user's (default: every user)")
    listing.set_defaults(command=_with_store(_list))

    show = actions.add_parser(
        "show", parents=[store_after], help="one conversation's active branch"
    )
    show.add_argument("--user", required=True)
    show.add_argument("conversation", metavar="CONVERSATION_ID")
    show.set_defaults(command=_with_store(_show))

    export = actions.add_parser(
        "export", parents=[store_after], help="every message of every branch as JSON Lines"
    )
    export.add_argument("--user", help="only this user's (default: every user)")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    export.set_defaults(command=_with_store(_export))

    importing = actions.add_parser(
        "import", parents=[store_after], help="read an export into the store (idempotent)"
    )
    importing.add_argument("file", metavar="FILE", help="a JSON Lines export, or - for stdin")
    importing.set_defaults(command=_with_store(_import))

    delete = actions.add_parser(
        "delete", parents=[store_after], help="delete a user's conversation, or all of them"
    )
    delete.add_argument("--user", required=True)
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("conversation", nargs="?", metavar="CONVERSATION_ID")
    which.add_argument("--all", action="store_true", help="every conversation of the user")
    delete.set_defaults(command=_with_store(_delete))

    purge = actions.add_parser(
        "purge", parents=[store_after], help="delete conversations inactive for N days"
    )
    purge.add_argument("--older-than-days", type=_days, required=True, metavar="N")
    purge.set_defaults(command=_with_store(_purge))


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError("must be a whole number of days, 1 or more")
    return days


def store_url_from(value: str | None) -> str:
    """``--store``, else ``SESSION_STORE_URL``, else the default SQLite file."""
    return value or os.environ.get("SESSION_STORE_URL") or default_store_url()


def _with_store(action: Callable[[argparse.Namespace, SessionStore, TextIO], int]) -> Command:
    def run(args: argparse.Namespace, out: TextIO) -> int:
        store = open_store(store_url_from(args.store))
        try:
            return action(args, store, out)
        finally:
            store.close()

    return run


def _list(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    users = [args.user] if args.user else store.users()
    rows = [(user, s) for user in users for s in store.conversations(user)]
    if not rows:
        whose = f" of user {args.user!r}" if args.user else ""
        out.write(f"No conversations{whose} in {redact_url(store.url)}.\n")
        return 0
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


def _show(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    key = ConversationKey(args.user, args.conversation)
    branches = store.branches(key)
    if not branches:
        raise InputError(
            f"user {args.user!r} has no conversation {args.conversation!r} in "
            f"{redact_url(store.url)}; `helix-pipeline sessions list --user {args.user}` "
            "lists them"
        )
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


def _import(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    if isinstance(store, MemoryStore):
        raise InputError(
            f"{redact_url(store.url)} keeps nothing once this command ends: import into the store "
            "the pipeline uses, e.g. --store sqlite:////abs/path/sessions.db"
        )
    if args.file == "-":
        counts = import_jsonl(store, sys.stdin)
    else:
        try:
            with open(args.file, encoding="utf-8") as file:
                counts = import_jsonl(store, file)
        except OSError as exc:
            raise InputError(f"cannot read {args.file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{args.file} is not UTF-8 text; is it an export?") from exc
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


def _purge(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
    cutoff = datetime.now(timezone.utc) - timedelta(days=args.older_than_days)
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


# ------------------------------------------------------------------------- doctor, install


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    from .doctor import run_doctor

    return run_doctor(
        out,
        helix_url=args.helix_url,
        store_url=store_url_from(args.store),
        api_key_env=args.api_key_env,
    )


def _add_install(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = commands.add_parser(
        "install", help="copy the two pipeline files to a Pipelines folder, or upload them"
    )
    where = install.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "pipelines_dir",
        nargs="?",
        type=Path,
        metavar="PIPELINES_DIR",
        help="the Pipelines server's pipelines folder (created if missing)",
    )
    where.add_argument("--url", help="a running Pipelines server, e.g. http://localhost:9099")
    where.add_argument(
        "--openwebui",
        metavar="URL",
        help="a running Open WebUI, e.g. http://localhost:8080: create or update the Helix "
        "Functions through its admin API, switch them on, and check the Helix model is listed",
    )
    install.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the API key (default: PIPELINES_API_KEY, or with "
        "--openwebui OPENWEBUI_API_KEY, an Open WebUI admin's API key)",
    )
    install.set_defaults(command=_install)


def _install(args: argparse.Namespace, out: TextIO) -> int:
    from .install import install_into, upload

    if args.openwebui is not None:
        from .install_openwebui import install_functions

        install_functions(args.openwebui, args.api_key_env or "OPENWEBUI_API_KEY", out)
    elif args.url is None:
        install_into(args.pipelines_dir, out)
    else:
        upload(args.url, args.api_key_env or "PIPELINES_API_KEY", out)
    return 0


# ------------------------------------------------------------------------------------ bundle


def _add_bundle(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .bundle import DRIVERS

    bundle = commands.add_parser(
        "bundle", help="write the self-contained pipeline files (default: into ./pipelines)"
    )
    bundle.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("pipelines"),
        metavar="DIR",
        help="folder to write them into, created if missing (default: ./pipelines, the folder "
        "a Pipelines server started here loads)",
    )
    bundle.add_argument(
        "--with",
        dest="drivers",
        action="append",
        default=[],
        choices=sorted(DRIVERS),
        help="add a session store driver to the files' requirements line (repeatable)",
    )
    bundle.add_argument(
        "--functions",
        action="store_true",
        help="also write the Open WebUI Functions files (into DIR/functions/)",
    )
    bundle.set_defaults(command=_bundle)


def _bundle(args: argparse.Namespace, out: TextIO) -> int:
    from .bundle import bundles, write_bundles

    groups = ["pipelines", "functions"] if args.functions else ["pipelines"]
    try:
        written = write_bundles(args.output, bundles(groups), drivers=args.drivers)
    except OSError as exc:
        raise InputError(f"cannot write to {args.output}: {exc.strerror}; pass -o DIR") from exc
    for path in written:
        out.write(
            f"Wrote {path} (helix-pipeline {__version__}, {path.stat().st_size // 1024} KiB)\n"
        )
    return 0
