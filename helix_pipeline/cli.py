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
from pathlib import Path
from typing import TextIO

from . import __version__
from .cli_sessions import add_sessions, plural, preview
from .errors import HelixPipelineError, InputError

__all__ = ["build_parser", "error_line", "main", "plural", "preview"]

log = logging.getLogger(__name__)

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
        "demo",
        help="play an Open WebUI chat through the Helix pipe and print what Helix received",
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

    add_sessions(commands)

    doctor = commands.add_parser("doctor", help="check that Helix and the session store work")
    doctor.add_argument("--helix-url", help="default: HELIX_BASE_URL, else http://localhost:8001")
    doctor.add_argument(
        "--store", metavar="URL", help="default: the store of the Pipelines server (below)"
    )
    doctor.add_argument(
        "--pipelines-dir",
        type=Path,
        metavar="DIR",
        help="the Pipelines server's folder, whose store to check (default: PIPELINES_DIR, else "
        "./pipelines): its saved SESSION_STORE_URL valve, else SESSION_STORE_URL, else "
        "DIR/helix_data/sessions.db",
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
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Also take ``-v`` after every command and action (``helix-pipeline doctor -v``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="log what happens (INFO)",
                )
                _verbose_everywhere(command)


# ------------------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo

    return run_demo(out, helix_url=args.helix_url, store_url=args.store, stream=args.stream)


# ------------------------------------------------------------------------- doctor, install


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    from .doctor import run_doctor

    return run_doctor(
        out,
        helix_url=args.helix_url,
        store_url=args.store,
        pipelines_dir=args.pipelines_dir,
        api_key_env=args.api_key_env,
    )


def _add_install(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:

    install = commands.add_parser(
        "install",
        help="write the Helix pipe's file (and the filter's) into a Pipelines folder, or upload "
        "it to a running server and check that the server loaded it",
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
        "--filter",
        "--with-filter",
        dest="with_filter",
        action="store_true",
        help="also install the session filter (helix_session_filter.py)",
    )
    _add_drivers_option(install)
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
        install_into(args.pipelines_dir, out, with_filter=args.with_filter, drivers=args.drivers)
    else:
        upload(
            args.url,
            args.api_key_env or "PIPELINES_API_KEY",
            out,
            with_filter=args.with_filter,
            drivers=args.drivers,
        )
    return 0


# ------------------------------------------------------------------------------------ bundle


def _add_bundle(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:

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
    _add_drivers_option(bundle)
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


def _add_drivers_option(parser: argparse.ArgumentParser) -> None:
    from .bundle import DRIVERS

    parser.add_argument(
        "--with",
        dest="drivers",
        action="append",
        default=[],
        choices=sorted(DRIVERS),
        help="add a session store driver to the files' requirements line (repeatable)",
    )
