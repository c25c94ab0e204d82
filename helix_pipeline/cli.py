"""The ``helix-pipeline`` command: demo, sessions, doctor, install.

Every command writes its results to the ``out`` stream it is given (stdout) and its errors to
stderr, one line, never a traceback for a :class:`~helix_pipeline.errors.HelixPipelineError`.
Exit codes: 0 done, 1 failed (the line says why and what to do), 2 a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TextIO
from uuid import uuid4

import requests

from . import __version__
from .client import HelixClient
from .conversation import ConversationKey, header_safe, helix_session_id
from .errors import ConfigError, HelixPipelineError, InputError, StoreError
from .export import export_jsonl, import_jsonl
from .messages import Message
from .stores import SessionStore, open_store, redact_url
from .valves import HelixValves, default_store_url

__all__ = ["build_parser", "main", "pipeline_files", "plural", "preview", "store_url_from"]

log = logging.getLogger(__name__)

PIPELINE_FILES = ("helix.py", "helix_session_filter.py")
UPLOAD_TIMEOUT_S = (5.0, 300.0)  # the server pip-installs the requirements before it answers
DOCTOR_USER = "helix-pipeline-doctor"
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
        return command(args, sys.stdout)
    except HelixPipelineError as exc:
        sys.stderr.write(f"helix-pipeline: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("helix-pipeline: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `helix-pipeline demo | head`: the reader left, not an error
        _silence_stdout()
        return 0


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
    demo.add_argument("--store", help="session store URL (default: SQLite in a temporary folder)")
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
    doctor.add_argument("--store", help="default: SESSION_STORE_URL, else the default SQLite file")
    doctor.add_argument(
        "--api-key-env",
        default="HELIX_API_KEY",
        metavar="NAME",
        help="environment variable holding Helix's API key (default: HELIX_API_KEY)",
    )
    doctor.set_defaults(command=_doctor)

    install = commands.add_parser(
        "install", help="copy the two pipeline files to a Pipelines folder, or upload them"
    )
    where = install.add_mutually_exclusive_group(required=True)
    where.add_argument("pipelines_dir", nargs="?", type=Path, metavar="PIPELINES_DIR")
    where.add_argument("--url", help="a running Pipelines server, e.g. http://localhost:9099")
    install.add_argument(
        "--api-key-env",
        default="PIPELINES_API_KEY",
        metavar="NAME",
        help="environment variable holding the Pipelines API key (default: PIPELINES_API_KEY)",
    )
    install.set_defaults(command=_install)
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
        help="session store URL (default: SESSION_STORE_URL, else the default SQLite file)",
    )
    actions = sessions.add_subparsers(title="actions", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="conversations, most recent first")
    listing.add_argument("--user", help="only this user's (default: every user)")
    listing.set_defaults(command=_with_store(_list))

    show = actions.add_parser("show", help="one conversation's active branch")
    show.add_argument("--user", required=True)
    show.add_argument("conversation", metavar="CONVERSATION_ID")
    show.set_defaults(command=_with_store(_show))

    export = actions.add_parser("export", help="every message of every branch as JSON Lines")
    export.add_argument("--user", help="only this user's (default: every user)")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    export.set_defaults(command=_with_store(_export))

    importing = actions.add_parser("import", help="read an export into the store (idempotent)")
    importing.add_argument("file", metavar="FILE", help="a JSON Lines export, or - for stdin")
    importing.set_defaults(command=_with_store(_import))

    delete = actions.add_parser("delete", help="delete a user's conversation, or all of them")
    delete.add_argument("--user", required=True)
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("conversation", nargs="?", metavar="CONVERSATION_ID")
    which.add_argument("--all", action="store_true", help="every conversation of the user")
    delete.set_defaults(command=_with_store(_delete))

    purge = actions.add_parser("purge", help="delete conversations inactive for N days")
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
        with args.output.open("w", encoding="utf-8", newline="\n") as file:
            counts = export_jsonl(store, file, user_id=args.user)
        report = out
    target = "stdout" if args.output is None else str(args.output)
    report.write(
        f"Exported {plural(counts.messages, 'message')} ({plural(counts.branches, 'branch')} of "
        f"{plural(counts.conversations, 'conversation')}) to {target}.\n"
    )
    return 0


def _import(args: argparse.Namespace, store: SessionStore, out: TextIO) -> int:
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


# ----------------------------------------------------------------------------------- doctor


@dataclass(frozen=True, slots=True)
class Check:
    """One doctor check: what was checked, whether it passed, and the fix when it did not."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    checks = [*_helix_checks(args), _store_check(store_url_from(args.store))]
    for check in checks:
        out.write(f"{'ok  ' if check.passed else 'FAIL'}  {check.name}: {check.detail}\n")
        if not check.passed:
            out.write(f"      fix: {check.fix}\n")
    failed = sum(not c.passed for c in checks)
    out.write(
        "All checks passed.\n" if not failed else f"{failed} of {len(checks)} checks failed.\n"
    )
    return 0 if not failed else 1


def _helix_checks(args: argparse.Namespace) -> list[Check]:
    url = args.helix_url or HelixValves().HELIX_BASE_URL
    key_env: str = args.api_key_env
    reach_fix = (
        "start Helix (it listens on port 8001 by default), or set HELIX_BASE_URL (the "
        "HELIX_BASE_URL valve) to where it listens; --helix-url tries another address"
    )
    key_fix = (
        f"put Helix's API key in the environment variable {key_env} (in the pipeline: the "
        "HELIX_API_KEY valve)"
    )
    shown = redact_url(url)
    try:
        client = HelixClient(
            url,
            api_key=os.environ.get(key_env) or None,
            connect_timeout=3.0,
            read_timeout=10.0,
            max_retries=0,
        )
    except ConfigError as exc:
        return [Check("Helix", False, str(exc), reach_fix)]
    with client:
        try:
            health = client.health()
        except HelixPipelineError as exc:
            refused = getattr(exc, "status_code", None) in (401, 403)
            return [Check("Helix", False, str(exc), key_fix if refused else reach_fix)]
        checks = [Check("Helix", True, f"{shown} answered GET /health with {health}")]
        try:
            models = client.models()
        except HelixPipelineError as exc:
            refused = getattr(exc, "status_code", None) in (401, 403)
            fix = key_fix if refused else "check that HELIX_BASE_URL points at Helix itself"
            return [*checks, Check("Helix models", False, str(exc), fix)]
    if not models:
        fix = "check Helix's configuration; the HELIX_MODELS valve names the models to offer"
        return [*checks, Check("Helix models", False, "GET /v1/models lists no model", fix)]
    return [*checks, Check("Helix models", True, ", ".join(models))]


def _store_check(url: str) -> Check:
    name = f"session store {redact_url(url)}"
    fix = (
        "set SESSION_STORE_URL (the SESSION_STORE_URL valve) to a store this process can "
        "write, e.g. sqlite:///var/lib/pipelines/sessions.db; Redis and PostgreSQL need "
        "`pip install helix-pipeline[redis]` / `helix-pipeline[postgres]`"
    )
    key = ConversationKey(DOCTOR_USER, f"probe-{uuid4().hex}")
    try:
        store = open_store(url)
    except HelixPipelineError as exc:
        return Check(name, False, f"cannot open it: {exc}", fix)
    try:
        store.record(key, [Message("user", "helix-pipeline doctor probe")])
        wrote = [m.content for m in store.load(key)] == ["helix-pipeline doctor probe"]
        deleted = store.delete(key)
    except StoreError as exc:
        return Check(name, False, f"cannot write to it: {exc}", fix)
    finally:
        store.close()
    if not (wrote and deleted):
        return Check(name, False, "a probe conversation did not read back as written", fix)
    return Check(name, True, "opened, wrote and deleted a probe conversation")


# ---------------------------------------------------------------------------------- install


def pipeline_files() -> dict[str, bytes]:
    """The two pipeline files a Pipelines server loads, as shipped inside the package."""
    folder = resources.files("helix_pipeline") / "pipelines"
    return {name: (folder / name).read_bytes() for name in PIPELINE_FILES}


def _install(args: argparse.Namespace, out: TextIO) -> int:
    files = pipeline_files()
    if args.url is None:
        folder: Path = args.pipelines_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
                out.write(f"Installed {folder / name}\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot write to {folder}: {exc.strerror}; pass the Pipelines server's "
                "PIPELINES_DIR folder, writable by you",
                setting="PIPELINES_DIR",
            ) from exc
        out.write(
            "Restart the Pipelines server to load them (it installs helix-pipeline from their "
            "requirements line).\n"
        )
        return 0
    key_env: str = args.api_key_env
    api_key = os.environ.get(key_env)
    if not api_key:
        raise ConfigError(
            f"set the environment variable {key_env} to the Pipelines server's API key (its "
            "PIPELINES_API_KEY), or name another variable with --api-key-env",
            setting=key_env,
        )
    for name, data in files.items():
        detail = _upload(args.url, api_key, key_env, name, data)
        out.write(f"Uploaded {name}: {detail}\n")
    return 0


def _upload(url: str, api_key: str, key_env: str, name: str, data: bytes) -> str:
    """``POST /pipelines/upload`` one file; the server's answer, or an error saying what to do."""
    endpoint = f"{url.rstrip('/')}/pipelines/upload"
    shown = redact_url(endpoint)
    try:
        response = requests.post(
            endpoint,
            files={"file": (name, data, "text/x-python")},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=UPLOAD_TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise HelixPipelineError(
            f"cannot reach the Pipelines server at {shown} ({type(exc).__name__}); check --url "
            "and that the server runs"
        ) from exc
    with response:
        try:
            answer = response.json()
        except ValueError:
            answer = None
    detail = answer.get("detail") if isinstance(answer, dict) else None
    text = detail if isinstance(detail, str) else response.text[:200].strip()
    if response.status_code in (401, 403):
        raise ConfigError(
            f"the Pipelines server at {shown} refused the API key in {key_env} "
            f"({response.status_code}); set {key_env} to its PIPELINES_API_KEY",
            setting=key_env,
        )
    if response.status_code != 200:
        raise HelixPipelineError(
            f"uploading {name} to {shown} failed with HTTP {response.status_code}: {text}"
        )
    return text or "uploaded"
