"""``helix-pipeline doctor``: every check passes or fails with its fix, and the exit code says so."""

from __future__ import annotations

import re
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


@pytest.fixture(autouse=True)
def no_server_beside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Pipelines folder, store URL or data folder leaks in from the machine running the tests."""
    monkeypatch.setenv("PIPELINES_DIR", str(tmp_path / "no-server"))
    for name in ("SESSION_STORE_URL", "HELIX_DATA_DIR", "HELIX_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def fixes(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("fix:")]


class TestDoctor:
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        url = f"sqlite:///{tmp_path / 'doctor.db'}"
        open_store(url).close()  # an existing store, as the pipeline leaves it
        return url

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

    def test_an_invalid_helix_url_is_not_told_to_start_helix(
        self, store_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["doctor", "--helix-url", "http://:8001", "--store", store_url], capsys)

        assert code == 1
        (fix,) = fixes(out)
        assert fix.startswith("fix: set HELIX_BASE_URL (the valve or the environment variable;")
        assert "start Helix" not in out

    def test_takes_verbose_after_the_command(
        self, fake_helix: FakeHelix, store_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(
            ["doctor", "-v", "--helix-url", fake_helix.url, "--store", store_url], capsys
        )

        assert code == 0, out

    def test_a_missing_api_key_names_the_variable_to_set(
        self, store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("MY_HELIX_KEY", raising=False)
        with FakeHelix(proxy_api_key="k-123") as helix:
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


class TestDoctorNeverCreatesWhatItChecks:
    def test_a_store_in_a_folder_that_does_not_exist_fails_and_stays_uncreated(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "nonexistent" / "dir" / "x.db"

        code, out, _ = run(
            ["doctor", "--helix-url", fake_helix.url, "--store", f"sqlite:///{path}"], capsys
        )

        assert code == 1
        assert "All checks passed" not in out
        assert (
            f"FAIL  session store sqlite:///{path} (--store): no session store at {path}: "
            f"neither the file nor its folder {path.parent} exists"
        ) in out
        assert fixes(out) == [
            "fix: the Helix pipeline creates it with its first recorded chat; if the Pipelines "
            "server has recorded chats, it uses another store: run doctor beside it with "
            "--pipelines-dir (or PIPELINES_DIR) set to its pipelines folder, or --store set to "
            "its SESSION_STORE_URL"
        ]
        assert not (tmp_path / "nonexistent").exists()

    def test_by_default_it_checks_the_file_beside_the_pipelines_without_creating_it(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        pipelines = tmp_path / "pipelines"
        pipelines.mkdir()

        code, out, _ = run(
            ["doctor", "--helix-url", fake_helix.url, "--pipelines-dir", str(pipelines)], capsys
        )

        assert code == 1
        expected = pipelines.absolute() / "helix_data" / "sessions.db"
        assert (
            f"FAIL  session store sqlite:///{expected} (the default file beside the pipelines in "
            f"{pipelines})"
        ) in out
        assert list(pipelines.iterdir()) == []

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("mongodb://x", id="unknown-scheme"),
            pytest.param("sqlite://relative.db", id="two-slashes"),
            pytest.param("redis://[::1", id="unparseable"),
        ],
    )
    def test_an_invalid_store_url_is_told_to_correct_it(
        self, url: str, fake_helix: FakeHelix, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(["doctor", "--helix-url", fake_helix.url, "--store", url], capsys)

        assert code == 1
        (fix,) = fixes(out)
        assert fix.startswith("fix: correct SESSION_STORE_URL (the valve or the environment")

    def test_every_sqlite_example_it_prints_is_an_absolute_path(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        outputs = [
            run(["doctor", "--helix-url", fake_helix.url, "--store", url], capsys)[1]
            for url in ("mongodb://x", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}")
        ]
        (tmp_path / "a-file").write_text("", encoding="utf-8")
        outputs.append(
            run(
                [
                    "doctor",
                    "--helix-url",
                    fake_helix.url,
                    "--store",
                    f"sqlite:///{tmp_path / 'a-file'}",
                ],
                capsys,
            )[1]
        )

        examples = re.findall(r"sqlite:///\S*", " ".join(fixes("\n".join(outputs))))
        assert examples
        assert all(e.startswith("sqlite:////") for e in examples), examples

    def test_saved_valves_it_cannot_read_fail_the_store_check_with_where_to_look(
        self, fake_helix: FakeHelix, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        saved = tmp_path / "pipelines" / "helix" / "valves.json"
        saved.parent.mkdir(parents=True)
        saved.write_text("{cut", encoding="utf-8")
        argv = [
            "doctor",
            "--helix-url",
            fake_helix.url,
            "--pipelines-dir",
            str(tmp_path / "pipelines"),
        ]

        code, out, _ = run(argv, capsys)

        assert code == 1
        assert f"FAIL  session store: cannot read the saved valves {saved}" in out
        assert fixes(out) == [
            "fix: give --pipelines-dir (or PIPELINES_DIR) the Pipelines server's pipelines "
            "folder, or --store a URL; a saved SESSION_STORE_URL valve is corrected in Open WebUI "
            "(Admin Panel > Settings > Pipelines)"
        ]
