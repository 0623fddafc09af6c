"""User mistakes through the real command line: one readable line, a non-zero exit, no traceback.

Each case runs ``python -m supervisor ...`` as a user would, with no config file and no K3S_*
variable from the test environment. Mistakes caught before anything starts print exactly one line;
those found by a starting component (an unreachable database, a taken port) may follow the
component's own log lines, but the last line is still the single error and no secret appears.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "k3s-supervisor: error: "
SECRET = "hunter2"


def run_supervisor(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("K3S_")}
    env.update({"K3S_CONFIG_FILE": "", "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *, contains: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX), result.stderr
    assert contains in lines[0]
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unknown_flag() -> None:
    result = run_supervisor("start", "--no-such-flag")
    assert_one_line_error(result, contains="unrecognized arguments: --no-such-flag")
    assert result.returncode == 2


def test_unknown_flag_of_a_component() -> None:
    assert_one_line_error(run_supervisor("run", "kine", "--profile", "edge"), contains="--profile")


def test_missing_command() -> None:
    assert_one_line_error(run_supervisor(), contains="required")


def test_unknown_profile() -> None:
    assert_one_line_error(run_supervisor("start", "--profile", "cloud"), contains="invalid choice: 'cloud'")


@pytest.mark.parametrize("endpoint", ["mysql://x@nohost", f"mysql://root:{SECRET}@nohost", "nohost:3306"])
def test_malformed_datastore_endpoint(tmp_path: Path, endpoint: str) -> None:
    result = run_supervisor("run", "kine", "-d", str(tmp_path), "--datastore-endpoint", endpoint)
    assert_one_line_error(result, contains="malformed datastore-endpoint")


def test_malformed_datastore_endpoint_under_start(tmp_path: Path) -> None:
    result = run_supervisor("start", "-d", str(tmp_path), "--datastore-endpoint", "mysql://x@nohost")
    assert_one_line_error(result, contains="malformed datastore-endpoint")
    assert not (tmp_path / "server").exists()  # refused before anything started


def test_data_dir_under_a_file(tmp_path: Path) -> None:
    # The unwritable case even root cannot get around (permission bits do not stop root).
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_supervisor("run", "kine", "-d", str(blocker / "k3s"))
    assert_one_line_error(result, contains="cannot create data dir")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(run_supervisor("start", "-d", str(blocker)), contains="cannot create data dir")


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_supervisor("start", "-c", str(tmp_path / "absent.yaml"))
    assert_one_line_error(result, contains="does not exist")


def test_unknown_config_key(tmp_path: Path) -> None:
    conf = tmp_path / "config.yaml"
    conf.write_text(f"datastore-endpiont: postgres://k3s:{SECRET}@db/k3s\n")
    assert_one_line_error(
        run_supervisor("start", "-c", str(conf)), contains="unknown key 'datastore-endpiont'"
    )


def test_bad_duration(tmp_path: Path) -> None:
    result = run_supervisor("run", "kine", "-d", str(tmp_path), "--compact-interval", "soon")
    assert_one_line_error(result, contains="invalid duration")


def test_agent_profile_not_implemented(tmp_path: Path) -> None:
    result = run_supervisor("start", "-d", str(tmp_path), "--profile", "agent")
    assert_one_line_error(result, contains="agent profile")


def test_nats_port_in_use(tmp_path: Path, taken_port: int) -> None:
    result = run_supervisor("run", "nats", "-d", str(tmp_path), "--nats-port", str(taken_port))
    assert_one_line_error(result, contains=f"cannot listen on 127.0.0.1:{taken_port}: Address already in use")


def assert_last_line_error(result: subprocess.CompletedProcess[str], *, contains: str) -> None:
    """For failures found by a starting component, after its own log lines."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert lines and lines[-1].startswith(PREFIX) and contains in lines[-1], result.stderr
    assert sum(line.startswith(PREFIX) for line in lines) == 1
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


def test_unreachable_database(tmp_path: Path) -> None:
    endpoint = f"postgres://kine:{SECRET}@127.0.0.1:1/k3s"
    result = run_supervisor("run", "kine", "-d", str(tmp_path), "--datastore-endpoint", endpoint)
    assert_last_line_error(result, contains="127.0.0.1:1")


def test_unreachable_database_under_start(tmp_path: Path) -> None:
    endpoint = f"postgres://kine:{SECRET}@127.0.0.1:1/k3s"
    result = run_supervisor("start", "-d", str(tmp_path), "--datastore-endpoint", endpoint)
    assert result.stderr.strip().splitlines()[-1].startswith(f"{PREFIX}kine failed to start: ")
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    assert result.returncode == 2


def test_kine_listen_port_in_use(tmp_path: Path, taken_port: int) -> None:
    result = run_supervisor("run", "kine", "-d", str(tmp_path), "--listen-address", f"127.0.0.1:{taken_port}")
    assert_last_line_error(result, contains=f"127.0.0.1:{taken_port}")
