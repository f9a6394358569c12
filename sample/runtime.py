"""Site settings and process control for the sample service, using only the standard library.

A site is a directory laid out by ``sample.site.prepare``. Its ``site.json`` names the python
that runs the service, the containers that ``docker exec`` can enter and the services that
``docker-compose`` can start. The service itself runs as a plain process. Its pid, and on the
next line the APP_VERSION it was started with, are kept in ``run/<service>.pid``.

The ``docker`` and ``docker-compose`` stand-ins import this module, and they may run under a
system python without the project's packages, so it must not import anything outside the
standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SITE_ENV_VAR = "GONOGO_SAMPLE_SITE"
API_SERVICE = "sample-api"
API_IMAGE = "sample-api"

# The directory that contains the ``sample`` package, put on PYTHONPATH of the service.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]

STOP_TIMEOUT = 10.0


class SiteError(Exception):
    """A site is missing, malformed or cannot be changed as requested."""


@dataclass(frozen=True)
class SiteConfig:
    """Settings of one site, read from its ``site.json``."""

    root: Path
    python: str
    compose_dir: Path
    containers: dict[str, dict]
    services: dict[str, dict]

    @property
    def env_file(self) -> Path:
        return self.compose_dir / ".env"

    @property
    def images_file(self) -> Path:
        return self.root / "run" / "images.json"

    def log_file(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.root / "run" / f"{service}.pid"

    def exited_marker(self, service: str) -> Path:
        """File whose presence means the service's container was stopped but not removed."""
        return self.root / "run" / f"{service}.exited"

    def service(self, name: str) -> dict:
        try:
            return self.services[name]
        except KeyError:
            raise SiteError(
                f"service {name!r} is not defined in {self.root / 'site.json'}"
            ) from None

    def app_version(self) -> str:
        """Return APP_VERSION from the compose .env file."""
        version = read_env_file(self.env_file).get("APP_VERSION", "")
        if not version:
            raise SiteError(f"APP_VERSION is missing from {self.env_file}")
        return version


def load_site(root: str | os.PathLike[str]) -> SiteConfig:
    """Read ``site.json`` of the site at ``root``, raising SiteError if it is missing or invalid."""
    root_path = Path(root).resolve()
    path = root_path / "site.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SiteError(f"{path} not found: is {root_path} a prepared sample site?") from None
    except json.JSONDecodeError as error:
        raise SiteError(f"{path} is not valid JSON: {error}") from None

    try:
        return SiteConfig(
            root=root_path,
            python=data["python"],
            compose_dir=Path(data["compose_dir"]),
            containers=data["containers"],
            services=data["services"],
        )
    except KeyError as error:
        raise SiteError(f"{path} is missing the key {error.args[0]!r}") from None


def load_site_from_env() -> SiteConfig:
    """Read the site named by the GONOGO_SAMPLE_SITE environment variable."""
    root = os.environ.get(SITE_ENV_VAR)
    if not root:
        raise SiteError(f"{SITE_ENV_VAR} is not set: set it to the directory of a sample site")
    return load_site(root)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a compose ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return values

    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def service_pid(site: SiteConfig, service: str = API_SERVICE) -> int | None:
    """Return the pid of the running service, or None when it is not running.

    A pid file left behind by a crashed service is ignored, and so is a pid that now belongs to
    another program.
    """
    try:
        pid = int(site.pid_file(service).read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    if _is_service_process(pid, site, service):
        return pid
    return None


def started_version(site: SiteConfig, service: str = API_SERVICE) -> str | None:
    """Return the APP_VERSION the running service was started with, or None if it is not running."""
    if service_pid(site, service) is None:
        return None
    try:
        lines = site.pid_file(service).read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[1] if len(lines) > 1 else None


def start_service(site: SiteConfig, service: str = API_SERVICE) -> tuple[int, bool]:
    """Start the service detached from the caller, replacing a running instance.

    The process gets its own session, /dev/null as stdin and the service log as stdout and
    stderr, so it outlives the shell or SSH session that started it. Returns the new pid and
    whether a running instance was replaced. Does not wait for the service to listen.
    """
    site.service(service)
    version = site.app_version()

    with _site_lock(site):
        replaced = _stop_locked(site, service)
        record_image(site, API_IMAGE, version)
        log_path = site.log_file(service)
        log_path.parent.mkdir(parents=True, exist_ok=True)

        env = dict(os.environ)
        python_path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = (
            f"{PACKAGE_PARENT}{os.pathsep}{python_path}" if python_path else str(PACKAGE_PARENT)
        )
        command = [site.python, "-m", "sample.service", "--site", str(site.root)]
        command += ["--service", service]
        with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
            process = subprocess.Popen(
                command,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=site.root,
                start_new_session=True,
                close_fds=True,
            )
        site.pid_file(service).write_text(f"{process.pid}\n{version}\n")
        site.exited_marker(service).unlink(missing_ok=True)
    return process.pid, replaced


def stop_service(
    site: SiteConfig, service: str = API_SERVICE, *, keep_container: bool = False
) -> bool:
    """Stop the service with SIGTERM, then SIGKILL after STOP_TIMEOUT seconds.

    Returns whether a running instance was stopped. With ``keep_container`` the container is
    left in the exited state, as ``docker stop`` leaves it, until ``remove_container``.
    """
    with _site_lock(site):
        stopped = _stop_locked(site, service)
        if stopped and keep_container:
            site.exited_marker(service).touch()
        elif not keep_container:
            site.exited_marker(service).unlink(missing_ok=True)
    return stopped


def container_exited(site: SiteConfig, service: str = API_SERVICE) -> bool:
    """Return whether the service's container was stopped by ``docker stop`` and not removed."""
    return site.exited_marker(service).exists() and service_pid(site, service) is None


def remove_container(site: SiteConfig, service: str = API_SERVICE) -> None:
    site.exited_marker(service).unlink(missing_ok=True)


def record_image(site: SiteConfig, repository: str, tag: str) -> None:
    """Add ``repository:tag`` to the images the site has pulled, keeping first-pull order."""
    images = pulled_images(site)
    tags = images.setdefault(repository, [])
    if tag not in tags:
        tags.append(tag)
        site.images_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = site.images_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(images, indent=2) + "\n")
        temporary.replace(site.images_file)


def pulled_images(site: SiteConfig) -> dict[str, list[str]]:
    try:
        return json.loads(site.images_file.read_text())
    except FileNotFoundError:
        return {}


def address_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return whether a TCP connection to host:port succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Return whether ``pid`` is a live process, reaping it first if it is our exited child."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in parentheses and may contain spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _stop_locked(site: SiteConfig, service: str) -> bool:
    pid = service_pid(site, service)
    site_pid_file = site.pid_file(service)
    if pid is None:
        site_pid_file.unlink(missing_ok=True)
        return False

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    site_pid_file.unlink(missing_ok=True)
    return True


def _is_service_process(pid: int, site: SiteConfig, service: str) -> bool:
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    words = [word.decode(errors="replace") for word in argv]
    return "sample.service" in words and str(site.root) in words and service in words


@contextlib.contextmanager
def _site_lock(site: SiteConfig) -> Iterator[None]:
    """Serialise starts and stops of one site's services across processes."""
    lock_path = site.root / "run" / "services.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
