"""``helix-pipeline doctor``: every check passes or fails with its fix, and the exit code says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from helix_pipeline.cli import main
from helix_pipeline.stores import open_store
from helix_pipeline.testing import FakeHelix

from .store_servers import free_port


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``helix-pipeline argv`` in-process: exit code, stdout, stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestDoctor:
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'doctor.db'}"

    def test_passes_when_helix_and_the_store_work(
        self, fake_helix: FakeHelix, store_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["doctor", "--helix-url", fake_helix.url, "--store", store_url], capsys)

        assert code == 0, out
        assert "ok    Helix models: helix-consultant" in out
        assert "ok    session store" in out
        assert out.endswith("All checks passed.\n")
        store = open_store(store_url)
        assert store.users() == [], "the probe conversation was deleted"
        store.close()

    def test_reads_helix_base_url_from_the_environment(
        self,
        fake_helix: FakeHelix,
        store_url: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("HELIX_BASE_URL", fake_helix.url)

        assert run(["doctor", "--store", store_url], capsys)[0] == 0

    def test_a_helix_that_is_down_fails_and_names_helix_base_url(
        self, store_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = f"http://127.0.0.1:{free_port()}"

        code, out, _ = run(["doctor", "--helix-url", url, "--store", store_url], capsys)

        assert code == 1
        assert "FAIL  Helix:" in out
        fix = next(line for line in out.splitlines() if line.strip().startswith("fix:"))
        assert "HELIX_BASE_URL" in fix
        assert "ok    session store" in out
        assert out.endswith("1 of 2 checks failed.\n")

    def test_a_missing_api_key_names_the_variable_to_set(
        self, store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("MY_HELIX_KEY", raising=False)
        with FakeHelix(api_key="k-123") as helix:
            argv = ["doctor", "--helix-url", helix.url, "--store", store_url]
            failed = run([*argv, "--api-key-env", "MY_HELIX_KEY"], capsys)
            monkeypatch.setenv("MY_HELIX_KEY", "k-123")
            passed = run([*argv, "--api-key-env", "MY_HELIX_KEY"], capsys)

        assert failed[0] == 1
        assert "fix: put Helix's API key in the environment variable MY_HELIX_KEY" in failed[1]
        assert passed[0] == 0, passed[1]
        assert "k-123" not in failed[1] + passed[1]

    def test_a_store_it_cannot_write_fails_and_names_session_store_url(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder", encoding="utf-8")
        url = f"sqlite:///{blocker / 'sessions.db'}"

        code, out, _ = run(["doctor", "--helix-url", fake_helix.url, "--store", url], capsys)

        assert code == 1
        assert "FAIL  session store" in out
        assert "SESSION_STORE_URL" in out
