"""The README's quick start is what CI runs: the two stay in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helix_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the quick start has a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


class TestQuickStart:
    def test_it_is_exactly_two_commands(self) -> None:
        commands = quick_start_commands()
        assert len(commands) == 2
        assert "helix-pipeline demo" in commands[0]
        assert "pytest" in commands[1]

    def test_ci_runs_the_readme_commands_verbatim(self) -> None:
        ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        for command in quick_start_commands():
            assert command in ci


def demo_sample() -> list[list[str]]:
    """The quick start's sample of the demo's output, in the pieces between its ``...`` lines."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1]
    block = re.search(r"```text\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    assert block is not None, "the quick start shows the demo's output"
    pieces: list[list[str]] = [[]]
    for line in block.group(1).splitlines():
        if line == "...":
            pieces.append([])
        else:
            pieces[-1].append(normalised(line))
    return pieces


def normalised(line: str) -> str:
    """``line`` with what differs from run to run (ids, the port, the temporary folder) masked."""
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)
    return re.sub(r"helix-demo-[^/]+", "helix-demo-<folder>", line)


class TestTheDemoSample:
    def test_each_piece_is_what_the_demo_prints(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["demo"]) == 0
        printed = [normalised(line) for line in capsys.readouterr().out.splitlines()]

        for piece in demo_sample():
            starts = [i for i, line in enumerate(printed) if line == piece[0]]
            assert any(printed[i : i + len(piece)] == piece for i in starts), "\n".join(piece)


class TestTheLayout:
    def test_names_every_module_of_the_package_and_no_other(self) -> None:
        """The README's module table is the map a reader trusts: a new module lands in it."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        table = readme.split("| Module | What it is |", 1)[1].split("\n\n", 1)[0]
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        named = {
            name.split("/")[0]
            for row in rows
            for name in re.findall(r"`([\w/]+)`", row.split("|")[1])
        }
        package = ROOT / "helix_pipeline"
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
        assert modules - named == set(), "modules the README's layout table does not name"
        assert named - modules == set(), "names in the layout table that are no module"
