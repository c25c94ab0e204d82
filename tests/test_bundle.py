"""``helix-pipeline bundle``: self-contained host files, built from the library's own sources.

Here the bundles are built and executed in this process, the way each host runs a file: the
Pipelines server imports it from its path, Open WebUI execs its text into a fresh module with no
``__file__``. ``test_bundle_server.py`` loads them into the real Pipelines server.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import helix_pipeline
from helix_pipeline import bundle as bundle_module
from helix_pipeline.bundle import (
    BUNDLES,
    BundleError,
    build_bundle,
    bundles,
    check_bundle_text,
)
from helix_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
PIPE_HOST = "helix_pipeline.hosts.pipelines_pipe"
FILTER_HOST = "helix_pipeline.hosts.pipelines_filter"


def frontmatter(text: str) -> dict[str, str]:
    """The ``key: value`` lines of the docstring a file starts with, as the server parses them."""
    assert text.startswith('"""\n'), "the Pipelines server reads frontmatter only at the start"
    block = text[3 : text.index('"""', 3)]
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {key.strip().lower(): value.strip() for key, value in pairs}


def embedded_package(text: str) -> str:
    found = re.search(r"^_helix_library = load_embedded\(\n    '(\w+)'", text, re.MULTILINE)
    assert found, "no load_embedded call"
    return found.group(1)


def exec_as_open_webui(text: str, name: str) -> types.ModuleType:
    """Open WebUI's way: the text exec'd into a new module that has no ``__file__``."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(text, name, "exec"), module.__dict__)
    return module


def exec_as_pipelines(path: Path) -> types.ModuleType:
    """The Pipelines server's way: imported from its path under the file's stem."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestCommittedBundles:
    @pytest.mark.parametrize("spec", BUNDLES, ids=lambda spec: spec.output)
    def test_the_committed_file_is_what_the_sources_build(self, spec: Any) -> None:
        committed = (ROOT / "pipelines" / spec.output).read_text(encoding="utf-8")
        built = build_bundle(spec.host, label=Path(spec.output).name)

        assert committed == built, (
            f"pipelines/{spec.output} is stale: run `helix-pipeline bundle --functions` and "
            "commit the result"
        )

    @pytest.mark.parametrize("spec", BUNDLES, ids=lambda spec: spec.output)
    def test_frontmatter_names_this_version_and_requires_nothing(self, spec: Any) -> None:
        fields = frontmatter((ROOT / "pipelines" / spec.output).read_text(encoding="utf-8"))

        assert {"title", "author", "version", "license", "description"} <= set(fields)
        assert fields["version"] == helix_pipeline.__version__
        assert "requirements" not in fields, "pydantic and requests are in every host already"

    def test_the_readme_names_one_file_for_the_pipe_and_one_for_the_filter(self) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")

        assert "pipelines/helix.py" in readme
        assert "pipelines/helix_session_filter.py" in readme


class TestBuild:
    def test_the_library_is_embedded_as_readable_source(self) -> None:
        text = build_bundle(PIPE_HOST)
        tree = ast.parse(text)
        sources = next(
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_HELIX_SOURCES" for t in node.targets)
        )
        embedded = ast.literal_eval(sources)

        for path, source in embedded.items():
            assert source == (ROOT / path).read_text(encoding="utf-8")
        assert "helix_pipeline/pipe.py" in embedded
        assert "helix_pipeline/session_filter.py" in embedded, "one set for every bundle"
        assert not any(path.startswith("helix_pipeline/testing") for path in embedded)
        assert "helix_pipeline/cli.py" not in embedded
        assert 'class HelixPipe:\n    """' in text, "readable, not encoded"

    def test_bundles_built_together_share_one_package_name(self) -> None:
        names = {embedded_package(build_bundle(spec.host)) for spec in BUNDLES}

        assert len(names) == 1
        assert names.pop().startswith(
            f"helix_pipeline__{helix_pipeline.__version__.replace('.', '_')}__"
        )

    def test_another_version_gets_another_package_name(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = embedded_package(build_bundle(PIPE_HOST))
        monkeypatch.setattr(bundle_module, "__version__", "9.9.9")

        later = build_bundle(PIPE_HOST)

        assert embedded_package(later).startswith("helix_pipeline__9_9_9__")
        assert frontmatter(later)["version"] == "9.9.9"
        assert embedded_package(later) != now

    @pytest.mark.parametrize(
        ("drivers", "line"),
        [
            pytest.param(["redis"], "redis>=5", id="redis"),
            pytest.param(["postgres"], "psycopg[binary]>=3.1, psycopg-pool>=3.2", id="postgres"),
            pytest.param(
                ["redis", "postgres", "redis"],
                "redis>=5, psycopg[binary]>=3.1, psycopg-pool>=3.2",
                id="both",
            ),
        ],
    )
    def test_a_driver_adds_its_requirements_line(self, drivers: list[str], line: str) -> None:
        assert frontmatter(build_bundle(PIPE_HOST, drivers=drivers))["requirements"] == line

    def test_an_unknown_driver_is_refused(self) -> None:
        with pytest.raises(BundleError, match="choose from redis, postgres"):
            build_bundle(PIPE_HOST, drivers=["mysql"])

    @pytest.mark.parametrize("phrase", ["from utils", "from apps", "from main", "from config"])
    def test_text_open_webui_would_rewrite_is_refused(self, phrase: str) -> None:
        text = build_bundle(PIPE_HOST).replace(
            "class HelixPipe:\n", f"class HelixPipe:\n    # read {phrase}uration\n", 1
        )

        with pytest.raises(BundleError, match=f"'{phrase}' on line \\d+: Open WebUI rewrites"):
            check_bundle_text(text, "helix.py")

    @pytest.mark.parametrize("spec", BUNDLES, ids=lambda spec: spec.output)
    def test_no_bundle_holds_text_open_webui_would_rewrite(self, spec: Any) -> None:
        text = (ROOT / "pipelines" / spec.output).read_text(encoding="utf-8")

        assert not re.search(r"from (utils|apps|main|config)", text)


@pytest.mark.usefixtures("isolated_imports")
class TestLoading:
    def test_a_bundle_runs_without_file_as_open_webui_execs_it(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        module = exec_as_open_webui(build_bundle(PIPE_HOST, label="helix.py"), "function_helix")

        assert "__file__" not in module.__dict__
        pipeline = module.Pipeline()
        package = embedded_package(build_bundle(PIPE_HOST))
        assert type(pipeline._helix).__module__ == f"{package}.pipe"
        assert not hasattr(sys.modules[f"{package}.pipe"], "__file__"), "nothing on disk"
        assert "helix.py runs helix-pipeline 0.1.0 embedded in it" in caplog.text

    def test_a_bundle_never_uses_the_installed_library_and_says_so(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        module = exec_as_pipelines(ROOT / "pipelines" / "helix.py")

        valves_base = module.Pipeline.Valves.__mro__[1]
        assert valves_base is not helix_pipeline.valves.HelixValves
        assert valves_base.__module__.startswith("helix_pipeline__")
        assert (
            f"the installed helix_pipeline {helix_pipeline.__version__} (the same version) is "
            "not used by this file" in caplog.text
        )

    def test_the_pipe_and_the_filter_of_one_build_share_one_copy(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        pipe = exec_as_pipelines(ROOT / "pipelines" / "helix.py")
        filter_ = exec_as_pipelines(ROOT / "pipelines" / "helix_session_filter.py")

        pipe_package = type(pipe.Pipeline()._helix).__module__.rsplit(".", 1)[0]
        filter_package = type(filter_.Pipeline()._filter).__module__.rsplit(".", 1)[0]
        assert pipe_package == filter_package
        assert pipe.HelixValves.__mro__[1] is filter_.FilterValves.__mro__[1], "one HistoryValves"
        assert "helix_session_filter.py runs helix-pipeline 0.1.0 embedded in it, shared with " in (
            caplog.text
        )

    def test_files_of_two_versions_each_run_their_own(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        old = exec_as_open_webui(build_bundle(FILTER_HOST, label="old.py"), "old")
        monkeypatch.setattr(bundle_module, "__version__", "9.9.9")
        new = exec_as_open_webui(build_bundle(PIPE_HOST, label="new.py"), "new")

        old_module = type(old.Pipeline()._filter).__module__
        new_module = type(new.Pipeline()._helix).__module__
        assert old_module.startswith("helix_pipeline__0_1_0__")
        assert new_module.startswith("helix_pipeline__9_9_9__")
        assert "old.py runs helix-pipeline 0.1.0 embedded in it" in caplog.text
        assert (
            "new.py runs helix-pipeline 9.9.9 embedded in it "
            f"({new_module.rsplit('.', 1)[0]}); the installed helix_pipeline 0.1.0 is not used"
        ) in caplog.text


class TestCommand:
    def test_writes_the_pipelines_bundles_into_the_folder(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["bundle", "-o", str(tmp_path / "out")])
        out = capsys.readouterr().out

        assert code == 0
        for spec in bundles(["pipelines"]):
            written = tmp_path / "out" / spec.output
            assert written.read_bytes() == (ROOT / "pipelines" / spec.output).read_bytes()
            assert f"Wrote {written} (helix-pipeline {helix_pipeline.__version__}, " in out

    def test_with_a_driver_the_files_require_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["bundle", "-o", str(tmp_path), "--with", "redis"]) == 0

        for spec in bundles(["pipelines"]):
            text = (tmp_path / spec.output).read_text(encoding="utf-8")
            assert frontmatter(text)["requirements"] == "redis>=5"

    def test_a_folder_it_cannot_write_fails_in_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("x", encoding="utf-8")

        code = main(["bundle", "-o", str(blocker / "out")])
        err = capsys.readouterr().err

        assert code == 1
        assert "cannot write to" in err and "-o DIR" in err and err.count("\n") == 1
