"""``python -m helix_pipeline.testing`` fails in one line that says what to change."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from helix_pipeline.testing.cli import main


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


class TestItCannotListen:
    def test_a_port_in_use_names_the_port_and_the_option_to_change(
        self, taken_port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, err = fails(["--port", str(taken_port)], capsys)

        assert code == 1
        assert err == (
            f"python -m helix_pipeline.testing: error: port {taken_port} on 127.0.0.1 is in use: "
            "stop what listens there, or pick another --port\n"
        )

    @pytest.mark.parametrize("port", ["80001", "0", "-1", "http"])
    def test_a_port_out_of_range_is_a_usage_error(
        self, port: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, err = fails(["--port", port], capsys)

        assert code == 2
        assert err.splitlines()[-1] == (
            "python -m helix_pipeline.testing: error: argument --port: "
            f"{port!r} is not a port: give a number from 1 to 65535"
        )

    def test_a_host_that_is_not_this_machine_says_which_host_to_use(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, err = fails(["--host", "no-such-host.invalid", "--port", "8001"], capsys)

        assert code == 1
        assert err.endswith("is not an address of this machine: use --host 127.0.0.1\n")
        assert err.count("\n") == 1

    def test_run_as_a_module_there_is_no_traceback(self, taken_port: int) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "helix_pipeline.testing", "--port", str(taken_port)],
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )

        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.endswith("pick another --port\n")
