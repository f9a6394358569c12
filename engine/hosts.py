"""Running runbook commands on hosts: over SSH through Fabric, or on this machine.

Every command runs as ``bash -eo pipefail -c SCRIPT``, so a failing line or a failing command
inside a pipe fails the step, whatever the login shell of the remote user is.
"""

import logging
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import invoke
import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from engine.config import Environment, SshSettings

logger = logging.getLogger(__name__)

LOCAL = "local"


@dataclass
class CommandResult:
    host: str
    exit_code: int | None  # None when the command did not finish
    stdout: str
    stderr: str
    duration: float
    error: str | None = None  # connection failure or timeout, worded for people

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @property
    def failure(self) -> str:
        """Return why the command failed: the connection error, its last line on stderr, or
        its exit code."""
        last_lines = self.stderr.strip().splitlines()[-1:]
        return self.error or (last_lines or [f"exit code {self.exit_code}"])[0]


def wrap_script(script: str, environment: Environment) -> str:
    """Return the command line that runs ``script`` under bash with the environment's PATH."""
    exports = [
        f"export {name}={shlex.quote(value)}" for name, value in environment.command_env.items()
    ]
    if environment.path_prepend:
        directories = ":".join(shlex.quote(entry) for entry in environment.path_prepend)
        exports.append(f'export PATH={directories}:"$PATH"')
    prefix = "; ".join(exports)
    command = f"bash -eo pipefail -c {shlex.quote(script)}"
    return f"{prefix}; {command}" if prefix else command


def run_command(environment: Environment, host: str, script: str, timeout: float) -> CommandResult:
    """Run ``script`` on ``host`` and return its result.

    A non-zero exit, a timeout and SSH or connection failures come back in the result.
    """
    command = wrap_script(script, environment)
    started = time.monotonic()
    try:
        if host == LOCAL:
            result = invoke.Context().run(
                command, hide=True, warn=True, timeout=timeout, in_stream=False
            )
        else:
            assert environment.ssh is not None  # the loader requires ssh for remote hosts
            known_hosts = Path(environment.ssh.known_hosts).expanduser()
            if not known_hosts.is_file():
                message = f"ssh.known_hosts file {known_hosts} does not exist; create it"
                return CommandResult(host, None, "", "", 0.0, error=message)
            with _connect(host, environment.ssh) as connection:
                result = connection.run(
                    command, hide=True, warn=True, timeout=timeout, in_stream=False
                )
    except CommandTimedOut as error:
        return CommandResult(
            host,
            None,
            error.result.stdout,
            error.result.stderr,
            time.monotonic() - started,
            error=f"timed out after {timeout:g} s on {host}",
        )
    except (TimeoutError, paramiko.SSHException, OSError, EOFError) as error:
        logger.warning("SSH to %s failed: %s", host, error)
        message = describe_ssh_error(host, error)
        return CommandResult(host, None, "", "", time.monotonic() - started, error=message)
    duration = time.monotonic() - started
    return CommandResult(host, result.exited, result.stdout, result.stderr, duration)


def describe_ssh_error(host: str, error: BaseException) -> str:
    if isinstance(error, paramiko.BadHostKeyException):
        return f"the host key of {host} does not match known_hosts; check the host first"
    if isinstance(error, paramiko.SSHException) and "not found in known_hosts" in str(error):
        return f"{host} is not in the known_hosts file; add its checked host key there"
    if isinstance(error, paramiko.AuthenticationException):
        return f"SSH authentication to {host} failed; check ssh.user and ssh.key_file"
    if isinstance(error, TimeoutError):
        return f"connecting to {host} timed out; check the address and ssh.connect_timeout"
    return f"SSH connection to {host} failed: {error}"


def _connect(host: str, ssh: SshSettings) -> Connection:
    address, _, port = host.partition(":")
    key_file = str(Path(ssh.key_file).expanduser())
    connection = Connection(
        address,
        user=ssh.user,
        port=int(port) if port else ssh.port,
        connect_timeout=ssh.connect_timeout,
        connect_kwargs={
            "key_filename": [key_file],
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": ssh.connect_timeout,
            "auth_timeout": ssh.connect_timeout,
        },
    )
    # Fabric accepts unknown host keys by default; a deployment tool must not.
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    connection.client.load_host_keys(os.fspath(Path(ssh.known_hosts).expanduser()))
    return connection
