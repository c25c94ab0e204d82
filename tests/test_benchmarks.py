"""The benchmarks still run, as documented, on tiny sizes (their figures are in benchmarks/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


class TestTheBenchmarksRun:
    def test_overhead_prints_what_the_pipe_adds(self) -> None:
        output = run(
            "overhead.py",
            *("--conversations", "40", "--messages", "6", "--turns", "5"),
            *("--chunk-turns", "5", "--warmup", "2", "--words", "8"),
        )
        assert "non-streaming, whole turn |" in output
        assert "own: inlet + pipe - Helix + outlet" in output
        assert "command: `python benchmarks/overhead.py" in output
        assert "store round trips per non-streaming turn" in output

    def test_turns_prints_own_time_and_round_trips_per_engine(self) -> None:
        output = run(
            "turns.py",
            *("--engines", "memory,sqlite", "--conversations", "30", "--messages", "4"),
            *("--turns", "5", "--counted", "2", "--warmup", "2", "--words", "8"),
        )
        rows = [
            [cell.strip() for cell in line.strip("|").split("|")]
            for line in output.splitlines()
            if "pipe, non-streaming" in line
        ]
        assert [row[2:4] for row in rows] == [["1.000", "1.000"]] * 2, "one read, one write"
        assert "own p50 ms (non-streaming)" in output

    def test_store_scaling_prints_a_row_per_cell_and_skips_what_is_too_big(self) -> None:
        output = run(
            "store_scaling.py",
            *("--engines", "memory,sqlite", "--conversations", "20,40"),
            *("--messages", "2,4", "--turns", "3", "--max-stored", "100"),
        )
        rows = [line for line in output.splitlines() if line.lstrip("| ").startswith("sqlite")]
        assert len(rows) >= 3
        assert "skipped: sqlite 40 x 4: 160 messages is over --max-stored" in output

    @pytest.mark.parametrize("scenario", [pytest.param("temporary", id="temporary-chats")])
    def test_memory_counts_the_conversations_held_in_the_process(self, scenario: str) -> None:
        output = run(
            "memory.py",
            *("--turns", "40", "--early", "5", "--conversations", "10"),
            *("--messages", "4", "--words", "5", "--only", scenario),
        )
        row = next(line for line in output.splitlines() if "temporary chats" in line)
        kept = [cell.strip() for cell in row.strip("|").split("|")][-3:]
        assert kept == ["5", "10", "20"]  # 10 slots, a new chat every 2 turns, none forgotten
