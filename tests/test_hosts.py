"""Running commands on hosts: on this machine, and over a real sshd with checked host keys."""

import socket
import subprocess

import pytest

from engine.config import Environment, SshSettings
from engine.hosts import run_command
from tests.support.sshd import SshServer


def local_environment(**overrides) -> Environment:
    return Environment(name="test", channel="C0TEST", hosts={"app": ["local"]}, **overrides)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def ssh_environment(sshd, **ssh_overrides) -> Environment:
    settings = {
        "user": sshd.user,
        "port": sshd.port,
        "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts),
        "connect_timeout": 5,
    } | ssh_overrides
    return Environment(
        name="test", channel="C0TEST", hosts={"app": [sshd.host]}, ssh=SshSettings(**settings)
    )


def test_local_output_and_exit_code():
    result = run_command(local_environment(), "local", "echo out; echo err >&2; exit 3", 10)

    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert not result.ok


def test_failure_inside_pipe_fails():
    result = run_command(local_environment(), "local", "false | cat", 10)

    assert result.exit_code == 1


def test_failing_line_stops_script():
    result = run_command(local_environment(), "local", "false\necho not reached", 10)

    assert result.exit_code == 1
    assert "not reached" not in result.stdout


def test_command_timeout_is_reported():
    result = run_command(local_environment(), "local", "sleep 5", 0.5)

    assert result.exit_code is None
    assert result.error == "timed out after 0.5 s on local"


def test_command_env_and_path_are_quoted(tmp_path):
    environment = local_environment(
        command_env={"GREETING": "it's $(not run)"}, path_prepend=[str(tmp_path / "a b")]
    )
    result = run_command(environment, "local", 'echo "$GREETING"; echo "$PATH"', 10)
    greeting, path = result.stdout.splitlines()

    assert greeting == "it's $(not run)"
    assert path.startswith(f"{tmp_path / 'a b'}:")


def test_ssh_runs_command(sshd):
    result = run_command(ssh_environment(sshd), f"{sshd.host}", "echo over ssh; exit 4", 10)

    assert result.stdout == "over ssh\n"
    assert result.exit_code == 4


def test_ssh_port_in_host_name(sshd):
    environment = ssh_environment(sshd, port=1)
    result = run_command(environment, f"{sshd.host}:{sshd.port}", "echo port from host", 10)

    assert result.stdout == "port from host\n"


def test_ssh_unknown_host_key_rejected(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = run_command(ssh_environment(sshd, known_hosts=str(empty)), sshd.host, "true", 10)

    assert result.exit_code is None
    assert "is not in the known_hosts file" in result.error


def test_ssh_missing_known_hosts_file(sshd, tmp_path):
    missing = tmp_path / "nowhere" / "known_hosts"
    result = run_command(ssh_environment(sshd, known_hosts=str(missing)), sshd.host, "true", 10)

    assert f"ssh.known_hosts file {missing} does not exist" in result.error


def test_ssh_wrong_key_rejected(sshd, tmp_path):
    other_key = tmp_path / "other_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    result = run_command(ssh_environment(sshd, key_file=str(other_key)), sshd.host, "true", 10)

    assert "authentication" in result.error


def test_ssh_connection_refused(sshd):
    environment = ssh_environment(sshd)
    closed_port = _closed_port()
    result = run_command(environment, f"127.0.0.1:{closed_port}", "true", 10)

    assert result.exit_code is None
    assert f"127.0.0.1:{closed_port}" in result.error


def test_ssh_command_timeout(sshd):
    result = run_command(ssh_environment(sshd), sshd.host, "sleep 30", 2)

    assert result.error == f"timed out after 2 s on {sshd.host}", result
    assert result.duration < 15


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
