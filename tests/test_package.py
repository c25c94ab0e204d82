"""The package's public surface, and its host files staying thin."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import helix_pipeline

ROOT = Path(__file__).resolve().parents[1]
HOST_FILES = sorted((ROOT / "helix_pipeline" / "hosts").glob("[!_]*.py"))
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
