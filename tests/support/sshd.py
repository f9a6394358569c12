"""A real OpenSSH server on loopback, for tests that run commands over SSH.

`SshServer` writes its own host key, client key, authorized_keys and sshd_config into a
temporary directory and runs `/usr/sbin/sshd -D -e` as a child process, so the tests exercise the
same SSH stack as production hosts without touching the system's SSH configuration.
"""

from __future__ import annotations

import getpass
import logging
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

SSHD = Path("/usr/sbin/sshd")

# sshd needs this privilege separation directory. Debian creates it only through its service
# unit, which tests do not use.
PRIVSEP_DIR = Path("/run/sshd")

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
_POLL_SECONDS = 0.05

# A free port is found by binding port 0 and closing the socket, so another process may take
# it before sshd binds it. Startup is retried on a new port when that happens.
_PORT_ATTEMPTS = 3

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SshServerError(RuntimeError):
    """sshd could not be set up or started. The message includes the tail of its log."""


class SshServer:
    """An sshd on 127.0.0.1 that accepts the current user with a generated ed25519 key.

    Use it as a context manager, or call `start()` and `stop()`. `set_env` becomes a `SetEnv`
    line, which sets environment variables in every session (for example PATH). No variables
    from the client are accepted, because the config has no `AcceptEnv`.

    NOTE: With `UsePAM no`, sshd rejects an account whose password field in /etc/shadow starts
    with "!" (locked), so the current user's account must not be locked.
    """

    def __init__(self, tmp_dir: Path, *, set_env: dict[str, str] | None = None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.set_env = dict(set_env or {})
        _check_set_env(self.set_env)

        self.host = "127.0.0.1"
        self.port = 0
        self.user = getpass.getuser()
        self.key_file = self.tmp_dir / "client_ed25519"
        self.known_hosts = self.tmp_dir / "known_hosts"
        self.log = self.tmp_dir / "sshd.log"

        self._host_key = self.tmp_dir / "host_ed25519"
        self._authorized_keys = self.tmp_dir / "authorized_keys"
        self._config = self.tmp_dir / "sshd_config"
        self._pid_file = self.tmp_dir / "sshd.pid"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    def start(self) -> SshServer:
        """Generate keys and config, start sshd and wait until it sends its SSH banner."""
        if self._process is not None:
            raise SshServerError("sshd is already running; call stop() first")
        if not SSHD.exists():
            raise SshServerError(
                f"{SSHD} not found; install openssh-server (apt-get install openssh-server)"
            )

        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._generate_keys()

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = _free_port(self.host)
            self._write_config()
            if self._launch():
                break
            logger.warning(
                "sshd could not bind port %s (attempt %s of %s); retrying on another port",
                self.port,
                attempt,
                _PORT_ATTEMPTS,
            )
        else:
            raise SshServerError(
                f"sshd could not bind a free port in {_PORT_ATTEMPTS} attempts:\n{self.log_tail()}"
            )

        host_key_type, host_key_data = self._host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_key_type} {host_key_data}\n")
        logger.info("sshd started on %s:%s (pid %s)", self.host, self.port, self._process.pid)
        return self

    def stop(self) -> None:
        """Stop sshd and wait for it to exit. Sessions it forked end with it."""
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("sshd (pid %s) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._process = None
        self._close_log()
        logger.info("sshd on port %s stopped", self.port)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def connect_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for `paramiko.SSHClient.connect` (and fabric's
        `connect_kwargs`) that log in with the generated key and nothing else."""
        return {"key_filename": str(self.key_file), "look_for_keys": False, "allow_agent": False}

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of sshd's log, for error messages."""
        if not self.log.exists():
            return "(no sshd log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _generate_keys(self) -> None:
        for key in (self._host_key, self.key_file):
            if not key.exists():
                _run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)]
                )
        self._authorized_keys.write_text(self.key_file.with_suffix(".pub").read_text())

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f'HostKey "{self._host_key}"',
            f'PidFile "{self._pid_file}"',
            f'AuthorizedKeysFile "{self._authorized_keys}"',
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The key files live in a test's temporary directory, whose modes sshd would reject.
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]
        if self.set_env:
            # sshd uses only the first SetEnv line, so all variables go on one line.
            pairs = " ".join(f'"{name}={value}"' for name, value in self.set_env.items())
            lines.append(f"SetEnv {pairs}")
        self._config.write_text("\n".join(lines) + "\n")

        # OpenSSH 9.8 and later delay clients after failed logins, which would slow down tests
        # that fail on purpose. Older versions reject the option, so it is added only if valid.
        check = subprocess.run(
            [str(SSHD), "-t", "-f", str(self._config), "-o", "PerSourcePenalties=no"],
            capture_output=True,
        )
        if check.returncode == 0:
            lines.append("PerSourcePenalties no")
            self._config.write_text("\n".join(lines) + "\n")
        else:
            _run([str(SSHD), "-t", "-f", str(self._config)])

    def _launch(self) -> bool:
        """Start sshd and wait for its banner. Return False if the port was already taken."""
        self._close_log()
        self._log_handle = self.log.open("ab")
        log_start = self._log_handle.tell()
        self._process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self._config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=self._log_handle,
        )

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _sends_banner(self.host, self.port):
            # Waiting on the process paces the polling and notices an early exit.
            try:
                self._process.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise SshServerError(
                    f"sshd did not answer on port {self.port} within {START_TIMEOUT_SECONDS} s:\n"
                    f"{self.log_tail()}"
                ) from None
            self._process = None
            self._close_log()
            with self.log.open("rb") as log:
                log.seek(log_start)
                if b"Address already in use" in log.read():
                    return False
            raise SshServerError(f"sshd exited during startup:\n{self.log_tail()}")
        return True

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def _check_set_env(set_env: dict[str, str]) -> None:
    for name, value in set_env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name for SetEnv: {name!r}")
        if '"' in value or "\n" in value:
            raise ValueError(f"SetEnv value for {name} must not contain quotes or newlines")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _sends_banner(host: str, port: int) -> bool:
    """Return whether the server at host:port accepts a connection and sends an SSH banner."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as connection:
            return connection.recv(64).startswith(b"SSH-")
    except OSError:
        # Refused until sshd listens. Also covers a timeout while it starts up.
        return False


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SshServerError(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr}"
        )
