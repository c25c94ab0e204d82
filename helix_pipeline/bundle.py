"""``helix-pipeline bundle``: one self-contained file per host, carrying the library as source.

A host (the Pipelines server, Open WebUI Functions) loads a single Python file and nothing else.
:func:`build_bundle` writes that file from a host module in :mod:`helix_pipeline.hosts`:

1. the host's frontmatter (its docstring) with ``version:`` and, when a store driver is asked
   for, ``requirements:`` added: everything else the library needs (pydantic, requests) is already
   in a stock Pipelines server and in Open WebUI;
2. the code of :mod:`helix_pipeline.bundle_loader`, then every library module the host needs, as
   readable string literals, and one call that imports them from memory under the build's own
   package name (the loader's docstring states the version policy);
3. the host's code, its ``from helix_pipeline...`` imports pointed at that package name.

The build refuses text that Open WebUI's ``replace_imports`` would rewrite before running a
Function (the plain text ``from utils``, ``from apps``, ``from main`` or ``from config`` anywhere in
the file), for every bundle, so a bundle behaves the same in every host. :data:`BUNDLES` is the
table of files the repository's ``pipelines/`` folder holds; a test keeps them in step.

Why not a bundler from PyPI: stickytape 0.2.1 writes the modules into a temporary folder at import
and removes it afterwards (so a lazy import fails later) and keeps the real package name (so it
collides with an installed ``helix_pipeline``); pinliner 0.2.0 needs ``imp`` and the finder API
that Python 3.12 removed, writes ``.pyc`` files and locates its sources through ``__file__``,
which a Function does not have.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import HelixPipelineError

__all__ = [
    "BUNDLES",
    "DRIVERS",
    "FORBIDDEN_TEXT",
    "BundleError",
    "BundleSpec",
    "build_bundle",
    "bundles",
    "check_bundle_text",
    "package_name",
    "write_bundles",
]

LIBRARY = "helix_pipeline"
LOADER = f"{LIBRARY}.bundle_loader"
FORBIDDEN_TEXT = re.compile(r"from (utils|apps|main|config)")
"""What Open WebUI's ``replace_imports`` rewrites in a Function's text, wherever it stands."""
DRIVERS: dict[str, tuple[str, ...]] = {
    "redis": ("redis>=5",),
    "postgres": ("psycopg[binary]>=3.1", "psycopg-pool>=3.2"),
}
"""``--with`` names and the requirements each adds (the ``redis``/``postgres`` extras)."""
_HOST_IMPORT = re.compile(rf"^from {LIBRARY}(\.[\w.]+)? import ", re.MULTILINE)
_ROOT = Path(__file__).resolve().parent
"""The library's own folder: a bundle is built from the sources of the package running it."""
_BUILT_BY = "# Built by `helix-pipeline bundle` from {host}: edit the sources, not this file."


class BundleError(HelixPipelineError):
    """A bundle cannot be built as asked (a source the hosts would mangle, an unknown option)."""


@dataclass(frozen=True)
class BundleSpec:
    """One file to build: where it goes (relative to the output folder) and from which host."""

    output: str
    host: str
    group: str = "pipelines"


BUNDLES: tuple[BundleSpec, ...] = (
    BundleSpec("helix.py", f"{LIBRARY}.hosts.pipelines_pipe"),
    BundleSpec("helix_session_filter.py", f"{LIBRARY}.hosts.pipelines_filter"),
    BundleSpec("functions/helix.py", f"{LIBRARY}.hosts.functions_pipe", "functions"),
    BundleSpec(
        "functions/helix_session_filter.py", f"{LIBRARY}.hosts.functions_filter", "functions"
    ),
)
"""Every bundle the repository's ``pipelines/`` folder holds, by group (``bundle --functions``)."""


def bundles(groups: Iterable[str] = ("pipelines",)) -> list[BundleSpec]:
    """The table's entries of ``groups``, in table order."""
    wanted = set(groups)
    return [spec for spec in BUNDLES if spec.group in wanted]


def build_bundle(
    host_module_name: str, *, drivers: Sequence[str] = (), label: str | None = None
) -> str:
    """The text of a self-contained file for the host module ``host_module_name``.

    Every bundle of a build embeds the same modules (what all the hosts of :data:`BUNDLES` need),
    so files built together share one package name and one copy when loaded side by side.
    ``label`` names the file in the log line it writes when loaded (default: the host's name).
    """
    unknown = sorted(set(drivers) - set(DRIVERS))
    if unknown:
        raise BundleError(f"unknown driver {', '.join(unknown)}: choose from {', '.join(DRIVERS)}")
    host_path, host_text = _source(host_module_name)
    library = {}
    hosts = {host_module_name, *(spec.host for spec in BUNDLES)}
    for name in sorted(_needed_modules(hosts)):
        path, text = _source(name)
        library[_relative(path)] = text
    package = package_name(library)
    origin = _relative(host_path)
    docstring, host_code = _split_docstring(host_text, origin)
    text = "\n".join(
        [
            _frontmatter(docstring, drivers),
            "",
            "from __future__ import annotations",
            "",
            _BUILT_BY.format(host=origin),
            "",
            _loader_code(),
            "",
            _sources_literal(library),
            "_helix_library = load_embedded(",
            f"    {package!r}, {__version__!r}, {label or host_path.name!r}, _HELIX_SOURCES",
            ")",
            "",
            _point_imports(host_code, package, origin),
        ]
    )
    check_bundle_text(text, host_module_name)
    return text


def write_bundles(
    folder: Path, specs: Sequence[BundleSpec], *, drivers: Sequence[str] = ()
) -> list[Path]:
    """Build ``specs`` into ``folder`` (created if needed); the paths written."""
    written = []
    for spec in specs:
        text = build_bundle(spec.host, drivers=drivers, label=Path(spec.output).name)
        target = folder / spec.output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def package_name(library: dict[str, str]) -> str:
    """``helix_pipeline__<version>__<hash>``: one name per build, so each build runs its own code."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(library):
        digest.update(f"\0{path}\0{library[path]}".encode())
    version = re.sub(r"\W", "_", __version__)
    return f"{LIBRARY}__{version}__{digest.hexdigest()[:10]}"


# -- what goes in ---------------------------------------------------------------------------------


def _module_path(name: str) -> Path | None:
    """The source file of the library module ``name``, or None when there is no such module."""
    parts = name.split(".")
    if parts[0] != LIBRARY:
        return None
    base = _ROOT.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _source(name: str) -> tuple[Path, str]:
    path = _module_path(name)
    if path is None:
        raise BundleError(f"cannot find the source of {name} in {_ROOT}")
    return path, path.read_text(encoding="utf-8")


def _relative(path: Path) -> str:
    """``helix_pipeline/...`` for a file of the library, wherever the package is installed."""
    return path.relative_to(_ROOT.parent).as_posix()


def _needed_modules(hosts: set[str]) -> set[str]:
    """Every library module the hosts import, directly or not (lazy imports included)."""
    needed: set[str] = set()
    pending = sorted(name for host in hosts for name in _imports_of(host))
    while pending:
        name = pending.pop()
        if name in needed or name in hosts:
            continue
        needed.add(name)
        pending.extend(_imports_of(name))
    return needed


def _imports_of(name: str) -> set[str]:
    """The library modules ``name`` imports (its parent packages included), read from its AST."""
    path, text = _source(name)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target == LIBRARY or target.startswith(f"{LIBRARY}."):
                found.update(_existing_with_parents(target))
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _existing_with_parents(name: str) -> set[str]:
    parts = name.split(".")
    found = set()
    for end in range(1, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if _module_path(candidate) is None:
            break
        found.add(candidate)
    return found


# -- what comes out -------------------------------------------------------------------------------


def _split_docstring(text: str, label: str) -> tuple[str, str]:
    """The host's docstring (its frontmatter) and the code after it, without the future import."""
    tree = ast.parse(text)
    docstring = ast.get_docstring(tree, clean=False)
    first = tree.body[0] if tree.body else None
    if docstring is None or not isinstance(first, ast.Expr) or first.end_lineno is None:
        raise BundleError(f"{label} must start with its frontmatter docstring")
    code = "\n".join(text.splitlines()[first.end_lineno :])
    code = code.replace("from __future__ import annotations\n", "", 1)
    return docstring, code.strip("\n") + "\n"


def _frontmatter(docstring: str, drivers: Sequence[str]) -> str:
    """The host's frontmatter with this build's ``version:`` and ``requirements:`` lines."""
    keep = [
        line
        for line in docstring.strip("\n").splitlines()
        if line.split(":", 1)[0].strip().lower() not in ("version", "requirements")
    ]
    keep.append(f"version: {__version__}")
    requirements = [req for name in dict.fromkeys(drivers) for req in DRIVERS[name]]
    if requirements:
        keep.append(f"requirements: {', '.join(requirements)}")
    return '"""\n' + "\n".join(keep) + '\n"""'


def _loader_code() -> str:
    """The loader module's code, without its docstring and its future import."""
    _, code = _split_docstring(_source(LOADER)[1], LOADER)
    code = re.sub(r"^__all__ = .*\n", "", code, flags=re.MULTILINE)
    return re.sub(r"\n{4,}", "\n\n\n", code).strip("\n") + "\n"


def _sources_literal(library: dict[str, str]) -> str:
    entries = [f"    {path!r}: {_literal(text)},\n" for path, text in library.items()]
    return "_HELIX_SOURCES = {\n" + "".join(entries) + "}\n"


def _literal(text: str) -> str:
    """A readable string literal for a module's text: raw triple quotes when they fit."""
    for quote in ("'''", '"""'):
        if quote not in text and not text.endswith("\\") and quote[0] not in text[-1:]:
            literal = f"r{quote}{text}{quote}"
            if ast.literal_eval(literal) == text:
                return literal
    return repr(text)


def _point_imports(code: str, package: str, label: str) -> str:
    """The host's code importing ``package`` where it imported the library."""
    pointed = _HOST_IMPORT.sub(lambda m: f"from {package}{m.group(1) or ''} import ", code)
    for node in ast.walk(ast.parse(pointed)):
        names = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if any(name == LIBRARY or name.startswith(f"{LIBRARY}.") for name in names):
            raise BundleError(
                f"{label} imports {LIBRARY} in a form the bundler cannot point at the embedded "
                f"copy: write `from {LIBRARY}.<module> import <name>` on one line"
            )
    return pointed


def check_bundle_text(text: str, name: str) -> None:
    """Refuse a bundle ``name`` that a host would rewrite, or that is not valid Python."""
    for number, line in enumerate(text.splitlines(), 1):
        found = FORBIDDEN_TEXT.search(line)
        if found:
            raise BundleError(
                f"the bundle of {name} has {found.group(0)!r} on line {number}: "
                f"Open WebUI rewrites that text before running a Function; reword it in the "
                f"library source ({line.strip()[:80]!r})"
            )
    compile(text, name, "exec", dont_inherit=True)
