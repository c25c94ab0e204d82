"""The README's quick start is what CI runs: the two stay in step."""

from __future__ import annotations

import re
from pathlib import Path

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
