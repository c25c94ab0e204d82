"""The package's public surface, its host files staying thin, and its modules and functions small."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import helix_pipeline

ROOT = Path(__file__).resolve().parents[1]
HOST_FILES = sorted((ROOT / "helix_pipeline" / "hosts").glob("[!_]*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(helix_pipeline.__path__, "helix_pipeline.")
    if name.rsplit(".", 1)[-1] not in ("redis", "postgres")  # their drivers are optional extras
    and not name.startswith("helix_pipeline.hosts.")  # host files, loaded by hosts, not an API
)


class TestPublicSurface:
    @pytest.mark.parametrize("module_name", MODULES)
    def test_every_name_in_all_exists(self, module_name: str) -> None:
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{module_name} has no __all__"
        missing = [name for name in exported if not hasattr(module, name)]
        assert missing == []

    def test_the_top_level_exports_the_exception_root_and_the_store_entry_point(self) -> None:
        assert {"HelixPipelineError", "open_store", "SessionStore", "read_conversation"} <= set(
            helix_pipeline.__all__
        )

    def test_every_exception_descends_from_one_root(self) -> None:
        from helix_pipeline import errors

        for name in errors.__all__:
            assert issubclass(getattr(errors, name), errors.HelixPipelineError)


class TestHostFiles:
    @pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
    def test_host_files_stay_thin(self, path: Path) -> None:
        code = path.read_text(encoding="utf-8")
        assert len(code.splitlines()) < 80
        assert "print(" not in code
        assert not re.search(r"^\s*(for|while) ", code, re.MULTILINE), (
            "logic belongs in the library"
        )

    def test_the_package_version_matches_pyproject(self) -> None:
        pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        assert f'version = "{helix_pipeline.__version__}"' in pyproject


def long_modules(folder: Path) -> list[str]:
    """Each module under ``folder`` longer than :data:`MAX_MODULE_LINES`, with its length."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(folder.parent)}: {lines} lines")
    return found


def long_functions(folder: Path) -> list[str]:
    """Each function or method under ``folder`` longer than :data:`MAX_FUNCTION_LINES`."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(folder.parent)}:{node.lineno}"
                    found.append(f"{where} {node.name}: {lines} lines")
    return found


class TestSizes:
    """One module per idea, each a few hundred lines at most, and functions that fit a screen."""

    def test_no_module_of_the_package_is_over_400_lines(self) -> None:
        assert long_modules(ROOT / "helix_pipeline") == []

    @pytest.mark.parametrize("folder", ["helix_pipeline", "benchmarks"])
    def test_no_function_is_over_60_lines(self, folder: str) -> None:
        assert long_functions(ROOT / folder) == []

    def test_the_checks_catch_a_long_module_and_a_long_function(self, tmp_path: Path) -> None:
        folder = tmp_path / "planted"
        (folder / "sub").mkdir(parents=True)
        body = "".join(f"    x{n} = {n}\n" for n in range(MAX_FUNCTION_LINES))
        (folder / "sub" / "long.py").write_text(f"async def planted():\n{body}", encoding="utf-8")
        (folder / "fits.py").write_text("def fits():\n    pass\n" * 100, encoding="utf-8")
        (folder / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
        assert long_functions(folder) == ["planted/sub/long.py:1 planted: 61 lines"]
        assert long_modules(folder) == ["planted/big.py: 401 lines"]
