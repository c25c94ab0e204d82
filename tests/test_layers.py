"""The package's import layers, read from the source (nothing is imported).

Each module may import modules of its own layer or of a lower one, never of a higher one; no
import cycle (imports under ``if TYPE_CHECKING:`` excepted: they never run); and no module takes
another module's private (leading underscore) names, by ``from x import _y`` or by ``x._y``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helix_pipeline"
ROOT = "helix_pipeline"

LAYERS: tuple[tuple[str, ...], ...] = (
    # what Open WebUI and Helix send, parsed; URLs and errors every layer uses
    ("errors", "urls", "messages", "conversation", "chat_body", "decorations", "helix_failures"),
    ("history", "notices", "notices_legacy"),  # the budget, and the notices history keeps apart
    ("stores",),
    (  # the HTTP client to Helix
        "payload", "sse", "wire_errors", "retries", "response_body", "helix_answer", "client",
    ),
    ("service", "valve_rules", "valve_env", "valves", "runtime", "store_location"),  # configured
    (  # what hosts load: the pipe (its turn, what it yields), the filter, the Functions
        "pipe", "pipe_turn", "pipe_items", "session_filter", "functions", "functions_worker",
        "hosts",
    ),
    (  # tools around the pipeline: the command line, its helpers, FakeHelix
        "cli", "cli_sessions", "demo", "doctor", "install", "install_openwebui", "export",
        "bundle", "bundle_loader", "testing", "pytest_plugin",
    ),
)  # fmt: skip
"""Lowest first. A package (``stores``, ``hosts``, ``testing``) places all its modules."""
PACKAGE_LAYER = 2
"""``helix_pipeline/__init__.py`` re-exports the model and the stores."""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of the package
    names: tuple[str, ...]  # the names taken from it (empty for ``import x``)
    line: int
    runtime: bool  # False under ``if TYPE_CHECKING:``


def sources() -> dict[str, tuple[str, bool]]:
    """Every module of the package: its text, and whether it is a package's ``__init__``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path.read_text("utf-8"), package)
    return found


def is_module(name: str) -> bool:
    base = PACKAGE.parent / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def absolute(name: str, package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    anchor = name.split(".") if package else name.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def imports_of(name: str, text: str, package: bool) -> Iterator[Import]:
    """Every import of a package module in one module, wherever it stands (functions too)."""
    tree = ast.parse(text)
    typing_only = type_checking_lines(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(f"{ROOT}."):
                    yield Import(name, alias.name, (), node.lineno, node.lineno not in typing_only)
        elif isinstance(node, ast.ImportFrom):
            source = absolute(name, package, node)
            if source != ROOT and not source.startswith(f"{ROOT}."):
                continue
            runtime = node.lineno not in typing_only
            taken = []
            for alias in node.names:
                if is_module(f"{source}.{alias.name}"):  # from . import submodule
                    yield Import(name, f"{source}.{alias.name}", (), node.lineno, runtime)
                else:
                    taken.append(alias.name)
            if taken:
                yield Import(name, source, tuple(taken), node.lineno, runtime)


def all_imports(modules: dict[str, tuple[str, bool]]) -> list[Import]:
    return [
        found
        for name, (text, package) in modules.items()
        for found in imports_of(name, text, package)
    ]


def layer_of(module: str) -> int | None:
    if module == ROOT:
        return PACKAGE_LAYER
    top = module.split(".")[1]
    return next((index for index, layer in enumerate(LAYERS) if top in layer), None)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def upward_imports(found: list[Import]) -> list[str]:
    problems = []
    for edge in found:
        low, high = layer_of(edge.importer), layer_of(edge.target)
        if low is not None and high is not None and high > low:
            problems.append(
                f"{edge.importer}:{edge.line} (layer {low}) imports {edge.target} (layer {high})"
            )
    return problems


def cycles(found: list[Import]) -> list[list[str]]:
    """Each import cycle among the package's modules at run time, once."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        if edge.runtime and edge.target != edge.importer:
            graph.setdefault(edge.importer, set()).add(edge.target)
    seen: set[frozenset[str]] = set()
    result: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                if frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    result.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its first module
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return result


def private_names(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """``from x import _y`` of another module, and ``x._y`` on a package module bound to ``x``."""
    problems = []
    for name, (text, package) in modules.items():
        found = list(imports_of(name, text, package))
        problems += [
            f"{name}:{edge.line} takes {edge.target}.{taken}"
            for edge in found
            if edge.target != name
            for taken in edge.names
            if is_private(taken)
        ]
        tree = ast.parse(text)
        bound = {  # names that hold a package module: import x.y as z, from . import y
            alias.asname or alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
            if any(edge.line == node.lineno and not edge.names for edge in found)
        }
        problems += [
            f"{name}:{node.lineno} takes {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and is_private(node.attr)
        ]
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in sources() if layer_of(name) is None]
    assert unplaced == [], f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer() -> None:
    problems = upward_imports(all_imports(sources()))
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    found = cycles(all_imports(sources()))
    assert not found, "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_module_takes_another_modules_private_names() -> None:
    problems = private_names(sources())
    assert not problems, "\n".join(problems)


PLANTED = f"{ROOT}.stores.planted"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("from ..client import HelixClient\n", upward_imports),
        ("def f():\n    from ..pipe import HelixPipe\n", upward_imports),
        ("import helix_pipeline.service\n", upward_imports),
        ("from .. import cli\n", upward_imports),
        ("from . import sqlite\n", cycles),
        ("from ..history import _private\n", private_names),
        ("from .. import history\nhistory._private()\n", private_names),
    ],
)
def test_the_checks_catch_what_they_are_for(text: str, check: Callable[..., list[Any]]) -> None:
    """A module planted in the stores layer that reaches up, loops or takes a private name."""
    modules = {**sources(), PLANTED: (text, False)}
    if check is cycles:  # the planted module imports sqlite, and now sqlite imports it
        sqlite_text, _ = modules[f"{ROOT}.stores.sqlite"]
        modules[f"{ROOT}.stores.sqlite"] = (sqlite_text + "\nfrom .planted import helper\n", False)
    argument = modules if check is private_names else all_imports(modules)
    assert PLANTED in str(check(argument))
