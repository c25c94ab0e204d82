"""The ``fake_helix`` fixture reaches this suite whether or not helix-pipeline is installed.

Installed, pytest loads it through the ``pytest11`` entry point; from a plain checkout, the suite's
own ``conftest.py`` registers it. ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` makes pytest ignore entry
points, which is what a checkout without ``pip install -e .`` looks like to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helix_pipeline import pytest_plugin
from helix_pipeline.testing import FakeHelix

ROOT = Path(__file__).resolve().parents[1]


def test_the_fixture_serves_a_started_fake_helix(
    fake_helix: FakeHelix, request: pytest.FixtureRequest
) -> None:
    assert fake_helix.url.startswith("http://127.0.0.1:")
    assert request.config.pluginmanager.get_name(pytest_plugin) == "helix_pipeline"


@pytest.mark.parametrize(
    "autoload",
    [pytest.param("0", id="entry-point-loaded"), pytest.param("1", id="entry-point-absent")],
)
def test_the_suite_gets_the_fixture_exactly_once(autoload: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    if autoload == "1":
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_pytest_plugin.py::test_the_fixture_serves_a_started_fake_helix",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
