"""``helix-pipeline install``: the shipped pipeline files, copied to a folder or uploaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import helix_pipeline
from helix_pipeline.cli import main
from helix_pipeline.install import pipeline_files
from helix_pipeline.testing import FakeHelix

from .pipelines_server import API_KEY, TRACEBACK, PipelinesServer
from .store_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
PURELIB = sysconfig.get_paths()["purelib"]
PIPELINE_NAMES = ["helix.py", "helix_session_filter.py"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``helix-pipeline argv`` in-process: exit code, stdout, stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class UploadServer:
    """A stand-in for the Pipelines server's ``POST /pipelines/upload``, keeping what it got."""

    def __init__(self, api_key: str, *, loads: bool = True) -> None:
        self.api_key = api_key
        self.loads = loads
        self.uploads: list[tuple[str | None, bytes]] = []
        self.problems: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/pipelines/upload":
                    owner.problems.append(f"path {self.path}")
                    self.answer(404, {"detail": "Not Found"})
                elif self.headers.get("Authorization") != f"Bearer {owner.api_key}":
                    self.answer(401, {"detail": "Invalid API key"})
                else:
                    fields = form_fields(self.headers["Content-Type"], body)
                    if set(fields) != {"file"}:
                        owner.problems.append(f"fields {sorted(fields)}")
                    owner.uploads.extend(fields.values())
                    self.answer(200, {"status": True, "detail": "Pipeline uploaded successfully"})

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {owner.api_key}":
                    self.answer(401, {"detail": "Invalid API key"})
                    return
                loaded = [str(name)[:-3] for name, _ in owner.uploads] if owner.loads else []
                if self.path == "/pipelines":
                    data = [{"id": name, "name": name, "type": "pipe"} for name in loaded]
                elif self.path == "/models":
                    data = [{"id": f"{name}.helix-consultant"} for name in loaded]
                else:
                    owner.problems.append(f"GET {self.path}")
                    data = []
                self.answer(200, {"data": data})

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> UploadServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def form_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields: name -> (file name, content)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


class TestInstall:
    def test_the_files_are_the_repositorys_pipeline_files(self) -> None:
        files = pipeline_files(with_filter=True)

        assert [file.name for file in files] == PIPELINE_NAMES
        for file in files:
            assert file.data == (ROOT / "pipelines" / file.name).read_bytes()

    def test_writes_the_pipe_alone_into_a_pipelines_folder(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = tmp_path / "pipelines-dir" / "new"

        code, out, _ = run(["install", str(folder)], capsys)

        assert code == 0
        assert [p.name for p in folder.iterdir()] == ["helix.py"]
        assert (folder / "helix.py").read_bytes() == (ROOT / "pipelines" / "helix.py").read_bytes()
        assert f"Wrote {folder / 'helix.py'}: the Helix pipe, helix-pipeline 0.1.0" in out
        assert "Nothing to pip install" in out
        assert "restart it, or POST /pipelines/reload" in out
        assert "installs helix-pipeline" not in out

    def test_with_the_filter_and_a_driver_it_says_what_the_server_will_install(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "failed").mkdir()
        (tmp_path / "failed" / "helix.py").write_text("old", encoding="utf-8")

        code, out, _ = run(["install", str(tmp_path), "--filter", "--with", "redis"], capsys)

        assert code == 0
        assert sorted(p.name for p in tmp_path.glob("*.py")) == PIPELINE_NAMES
        assert "requirements: redis>=5" in (tmp_path / "helix_session_filter.py").read_text()
        assert "makes the server pip install redis>=5 when it loads them" in out
        assert f"{tmp_path / 'failed' / 'helix.py'} is an older copy that failed to load" in out

    def test_a_folder_it_cannot_write_fails_in_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("x", encoding="utf-8")

        code, _, err = run(["install", str(blocker / "pipelines")], capsys)

        assert code == 1
        assert "PIPELINES_DIR" in err and err.count("\n") == 1

    @pytest.mark.parametrize(
        ("flags", "names"),
        [
            pytest.param([], ["helix.py"], id="pipe-alone"),
            pytest.param(["--filter"], PIPELINE_NAMES, id="with-filter"),
        ],
    )
    def test_uploads_as_the_file_field_with_the_bearer_key_and_checks_what_loaded(
        self,
        flags: list[str],
        names: list[str],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("PIPELINES_API_KEY", "pipe-key-1")
        with UploadServer("pipe-key-1") as server:
            code, out, err = run(["install", "--url", server.url + "/", *flags], capsys)

        assert code == 0, err
        assert server.problems == []
        assert server.uploads == [
            (name, (ROOT / "pipelines" / name).read_bytes()) for name in names
        ]
        assert out.count("Installed ") == len(names)
        assert (
            "Installed helix.py (the Helix pipe): loaded as helix; models: helix.helix-consultant"
            in out
        )
        assert "pipe-key-1" not in out + err

    def test_a_file_the_server_did_not_load_fails_and_says_where_to_look(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("PIPELINES_API_KEY", "k")
        with UploadServer("k", loads=False) as server:
            code, out, err = run(["install", "--url", server.url], capsys)

        assert code == 1
        assert "took helix.py but did not load it: it moved the file to failed/" in err
        assert "after 'Error loading module: helix'" in err
        assert err.count("\n") == 1
        assert "Installed" not in out

    def test_a_refused_key_names_the_variable_and_never_shows_it(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("OTHER_KEY", "wrong-key")
        with UploadServer("right-key") as server:
            code, out, err = run(
                ["install", "--url", server.url, "--api-key-env", "OTHER_KEY"], capsys
            )

        assert code == 1
        assert "OTHER_KEY" in err and "401" in err
        assert "wrong-key" not in out + err
        assert server.uploads == []

    def test_a_missing_key_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("PIPELINES_API_KEY", raising=False)

        code, _, err = run(["install", "--url", "http://127.0.0.1:9099"], capsys)

        assert code == 1
        assert "PIPELINES_API_KEY" in err

    def test_an_unreachable_server_fails_in_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("PIPELINES_API_KEY", "k")

        code, _, err = run(["install", "--url", f"http://127.0.0.1:{free_port()}"], capsys)

        assert code == 1
        assert "cannot reach the Pipelines server" in err and err.count("\n") == 1
        assert "it refused the connection; check --url" in err  # wire_errors said what happened

    def test_a_folder_and_a_url_together_are_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run(["install", str(tmp_path), "--url", "http://x"], capsys)[0] == 2

    @pytest.mark.slow
    def test_a_built_wheel_builds_the_same_pipeline_files(self, tmp_path: Path) -> None:
        source = tmp_path / "src"
        shutil.copytree(
            ROOT,
            source,
            symlinks=True,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.db"
            ),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                str(source),
                "-w",
                str(tmp_path / "dist"),
                "--no-deps",
                "-q",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = (tmp_path / "dist").glob("helix_pipeline-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            entry_points = archive.read(
                f"helix_pipeline-{helix_pipeline.__version__}.dist-info/entry_points.txt"
            ).decode()
            archive.extractall(tmp_path / "unpacked")
        assert "helix-pipeline = helix_pipeline.cli:main" in entry_points

        built = subprocess.run(
            [
                sys.executable,
                "-S",  # no .pth files: the editable install's finder stays out of the way
                "-c",
                "import sys, helix_pipeline.cli as cli; print(cli.__file__); "
                "sys.exit(cli.main(sys.argv[1:]))",
                "bundle",
                "-o",
                str(tmp_path / "out"),
            ],
            env={**os.environ, "PYTHONPATH": f"{tmp_path / 'unpacked'}{os.pathsep}{PURELIB}"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

        assert built.stdout.startswith(str(tmp_path / "unpacked")), "ran from the wheel"
        for name in PIPELINE_NAMES:
            shipped = (tmp_path / "out" / name).read_bytes()
            assert shipped == (ROOT / "pipelines" / name).read_bytes()


@pytest.mark.integration
class TestInstallIntoTheRealPipelinesServer:
    def test_uploaded_files_load_as_the_helix_models_and_the_filter(
        self,
        fake_helix: FakeHelix,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        env = {"HELIX_BASE_URL": fake_helix.url, "HELIX_DATA_DIR": str(tmp_path / "data")}
        monkeypatch.setenv("PIPELINES_API_KEY", API_KEY)
        with PipelinesServer(tmp_path / "server", [], env=env) as server:
            code, out, err = run(["install", "--url", server.url, "--filter"], capsys)
            models = {model["id"] for model in server.models()}
            log = server.log()
            failed = server.failed()

        assert code == 0, err
        assert "Installed helix.py (the Helix pipe): loaded as helix; models: helix." in out
        assert "Installed helix_session_filter.py (the session filter): loaded as" in out
        assert {"helix.helix-consultant", "helix_session_filter"} <= models
        assert TRACEBACK not in log
        assert failed == []

    def test_a_server_that_cannot_load_the_file_fails_with_the_reason(
        self,
        fake_helix: FakeHelix,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A server that cannot reach an index: the redis driver of --with cannot be installed."""
        (tmp_path / "no-wheels").mkdir()
        env = {"HELIX_BASE_URL": fake_helix.url, "PIP_FIND_LINKS": str(tmp_path / "no-wheels")}
        monkeypatch.setenv("PIPELINES_API_KEY", API_KEY)
        with PipelinesServer(tmp_path / "server", [], env=env) as server:
            code, out, err = run(["install", "--url", server.url, "--with", "redis"], capsys)
            failed = server.failed()
            log = server.log()

        assert code == 1
        assert failed == ["helix.py"]
        assert "Error loading module: helix" in log
        assert "took helix.py but did not load it: it moved the file to failed/" in err
        assert "asked the server to pip install redis>=5" in err
        assert "PIPELINES_REQUIREMENTS_PATH" in err
        assert "Installed" not in out
