"""Stand-ins for the ``docker`` and ``docker-compose`` CLIs on machines without a container engine.

They implement only the commands that gonogo's sample runbook uses, against a sample site named
by the GONOGO_SAMPLE_SITE environment variable (see ``sample.site``):

- ``sample-postgres`` and ``sample-redis`` are the machine's own PostgreSQL and Redis servers.
  ``docker exec`` runs the command on this machine with environment variables, and for
  ``redis-cli`` with arguments, that point it at those servers.
- ``sample-api`` is the ``sample.service`` process, which ``docker-compose up -d`` starts at the
  APP_VERSION in the compose ``.env`` file.

Only the standard library may be imported here, because the scripts in ``sample/bin`` run
under whatever ``python3`` is first on PATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sample import runtime
from sample.runtime import API_IMAGE, API_SERVICE, SiteConfig, SiteError

DOCKER_USAGE = """\
Usage: docker COMMAND [ARGS...]

Stand-in for the docker CLI on machines without a container engine. It maps the
commands below onto the gonogo sample site named by GONOGO_SAMPLE_SITE.

Commands:
  exec [-i] [-t] [-e KEY=VALUE] [-w DIR] CONTAINER COMMAND [ARG...]
                 Run COMMAND on this machine with the container's environment
  ps [-a] [-q]   List running containers
  images [REPOSITORY[:TAG]]
                 List pulled images
  stop NAME...   Stop the sample-api container
  rm [-f] NAME...
                 Remove a stopped sample-api container
  compose ...    Same as docker-compose
"""

COMPOSE_USAGE = """\
Usage: docker-compose [-f FILE] [-p NAME] COMMAND [ARGS...]

Stand-in for the docker-compose CLI on machines without a container engine. It
manages the compose project of the gonogo sample site named by GONOGO_SAMPLE_SITE
and must run in that project's directory, or be given its file with -f.

Commands:
  pull [SERVICE...]            Record the APP_VERSION image as pulled
  up -d [--no-deps] [SERVICE...]
                               (Re)start sample-api at APP_VERSION from .env
  ps                           List the project's containers
  logs [--tail N] [SERVICE...] Print service logs
  stop [SERVICE...]            Stop sample-api and keep its container
  restart [SERVICE...]         Stop and start sample-api
  down                         Stop and remove sample-api
"""

COMPOSE_FILE_NAMES = ("docker-compose.yml", "docker-compose.yaml", "compose.yaml", "compose.yml")

# Compose service names, and the short names the runbook also uses, mapped to container names.
SERVICE_ALIASES = {"postgres": "sample-postgres", "redis": "sample-redis"}

LOG_PREFIX_WIDTH = 12

SEE_HELP = "See 'docker --help'."


class UsageError(Exception):
    """A command line the stand-in cannot run; the message is printed as is."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def docker_main(argv: Sequence[str]) -> int:
    """Run one ``docker`` command line and return its exit status."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(DOCKER_USAGE, end="")
        return 0
    if args[0] in ("-v", "--version", "version"):
        print("Docker version 0.0.0-standin (gonogo sample stand-in, no container engine)")
        return 0

    command, rest = args[0], args[1:]
    if command == "compose":
        return compose_main(rest)
    handler = DOCKER_COMMANDS.get(command)
    if handler is None:
        return _fail(f"docker: '{command}' is not a command this stand-in supports.\n{SEE_HELP}")
    return _run(lambda: handler(runtime.load_site_from_env(), rest), program="docker")


def compose_main(argv: Sequence[str]) -> int:
    """Run one ``docker-compose`` command line and return its exit status."""
    args = list(argv)
    compose_file: str | None = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-h", "--help"):
            print(COMPOSE_USAGE, end="")
            return 0
        if option in ("-v", "--version"):
            return _compose_version()
        if option in ("-f", "--file", "-p", "--project-name"):
            if not args:
                return _fail(f"flag needs an argument: {option}")
            value = args.pop(0)
            if option in ("-f", "--file"):
                compose_file = value
        elif option.startswith(("--file=", "--project-name=")):
            if option.startswith("--file="):
                compose_file = option.split("=", 1)[1]
        else:
            return _fail(f"unknown flag: {option}")

    if not args:
        print(COMPOSE_USAGE, end="", file=sys.stderr)
        return 1
    command, rest = args[0], args[1:]
    if command == "version":
        return _compose_version()
    handler = COMPOSE_COMMANDS.get(command)
    if handler is None:
        return _fail(f"unknown docker-compose command: {command!r}\nSee 'docker-compose --help'.")

    def run() -> int:
        site = runtime.load_site_from_env()
        _check_project(site, compose_file)
        return handler(site, rest)

    return _run(run, program="docker-compose")


# docker commands


def docker_exec(site: SiteConfig, args: list[str]) -> int:
    """Replace this process with the command, so its exit status becomes ours.

    NOTE: stdin is passed through with or without ``-i``, whereas real docker attaches it only
    with ``-i``. Runbooks that restore a dump with ``docker exec ... psql < dump.sql`` rely on it.
    """
    extra_env: dict[str, str] = {}
    workdir: str | None = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "--":
            break
        if option in ("-e", "--env", "-w", "--workdir"):
            if not args:
                raise UsageError(f"flag needs an argument: {option}\n{SEE_HELP}", 125)
            value = args.pop(0)
        elif option.startswith(("--env=", "--workdir=")):
            option, value = option.split("=", 1)
        elif option.startswith("-e") and len(option) > 2:
            option, value = "-e", option[2:]
        elif option in ("--interactive", "--tty") or set(option[1:]) <= {"i", "t"}:
            continue
        else:
            raise UsageError(f"unknown flag: {option}\n{SEE_HELP}", 125)

        if option in ("-e", "--env"):
            key, has_value, env_value = value.partition("=")
            extra_env[key] = env_value if has_value else os.environ.get(key, "")
        else:
            workdir = value

    if len(args) < 2:
        raise UsageError(f"docker: 'docker exec' requires at least 2 arguments.\n{SEE_HELP}")
    name, command = args[0], args[1:]
    state = _container_state(site, name)
    if state is None:
        raise UsageError(f"Error response from daemon: No such container: {name}")
    if state != "running":
        raise UsageError(f"Error response from daemon: container {name} is not running")

    env = dict(os.environ)
    env.update(_container_env(site, name))
    env.update(extra_env)
    program = command[0]
    program_args = site.containers.get(name, {}).get("args", {}).get(os.path.basename(program), [])
    executable = shutil.which(program, path=env.get("PATH"))
    if executable is None:
        raise UsageError(
            "OCI runtime exec failed: exec failed: unable to start container process:"
            f' exec: "{program}": executable file not found in $PATH: unknown',
            127,
        )

    if workdir is not None:
        os.chdir(workdir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(executable, [program, *program_args, *command[1:]], env)
    return 0  # not reached: execve does not return


def docker_ps(site: SiteConfig, args: list[str]) -> int:
    show_all = quiet = False
    for option in args:
        if option in ("-a", "--all"):
            show_all = True
        elif option in ("-q", "--quiet"):
            quiet = True
        elif option in ("-aq", "-qa"):
            show_all = quiet = True
        else:
            raise UsageError(f"unknown flag: {option}\n{SEE_HELP}", 125)

    rows = []
    for name in _container_names(site):
        state = _container_state(site, name)
        if state is None or (state != "running" and not show_all):
            continue
        status = _container_status(site, name) if state == "running" else "Exited (0)"
        rows.append([_container_id(name), _container_image(site, name), status, name])

    if quiet:
        for row in rows:
            print(row[0])
    else:
        _print_table(["CONTAINER ID", "IMAGE", "STATUS", "NAMES"], rows)
    return 0


def docker_images(site: SiteConfig, args: list[str]) -> int:
    if len(args) > 1 or (args and args[0].startswith("-")):
        raise UsageError(f"usage: docker images [REPOSITORY[:TAG]]\n{SEE_HELP}", 125)
    filter_repository, _, filter_tag = (args[0] if args else "").partition(":")

    images: list[tuple[str, str]] = []
    for repository, tags in runtime.pulled_images(site).items():
        images += [(repository, tag) for tag in reversed(tags)]
    for container in site.containers.values():
        repository, _, tag = container.get("image", "").partition(":")
        if repository:
            images.append((repository, tag or "latest"))

    rows = []
    for repository, tag in images:
        if filter_repository and repository != filter_repository:
            continue
        if filter_tag and tag != filter_tag:
            continue
        rows.append([repository, tag, _container_id(f"{repository}:{tag}")])
    _print_table(["REPOSITORY", "TAG", "IMAGE ID"], rows)
    return 0


def docker_stop(site: SiteConfig, args: list[str]) -> int:
    if not args:
        raise UsageError(f"docker: 'docker stop' requires at least 1 argument.\n{SEE_HELP}")

    failed = False
    for name in args:
        state = _container_state(site, name)
        if state is None:
            _error(f"Error response from daemon: No such container: {name}")
            failed = True
        elif name != API_SERVICE:
            _error(_machine_server_message(site, name, "stop"))
            failed = True
        else:
            runtime.stop_service(site, keep_container=True)
            print(name)
    return 1 if failed else 0


def docker_rm(site: SiteConfig, args: list[str]) -> int:
    force = False
    names = []
    for arg in args:
        if arg in ("-f", "--force"):
            force = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown flag: {arg}\n{SEE_HELP}", 125)
        else:
            names.append(arg)
    if not names:
        raise UsageError(f"docker: 'docker rm' requires at least 1 argument.\n{SEE_HELP}")

    failed = False
    for name in names:
        state = _container_state(site, name)
        if state is None:
            _error(f"Error response from daemon: No such container: {name}")
            failed = True
        elif name != API_SERVICE:
            _error(_machine_server_message(site, name, "remove"))
            failed = True
        elif state == "running" and not force:
            _error(
                f'Error response from daemon: cannot remove container "/{name}": container is'
                " running: stop the container before removing or force remove"
            )
            failed = True
        else:
            runtime.stop_service(site)
            runtime.remove_container(site)
            print(name)
    return 1 if failed else 0


DOCKER_COMMANDS: dict[str, Callable[[SiteConfig, list[str]], int]] = {
    "exec": docker_exec,
    "ps": docker_ps,
    "images": docker_images,
    "stop": docker_stop,
    "rm": docker_rm,
}


# docker-compose commands


def compose_pull(site: SiteConfig, args: list[str]) -> int:
    services = _compose_services(site, _reject_options(args, "pull"))
    for service in services:
        if service == API_SERVICE:
            runtime.record_image(site, API_IMAGE, site.app_version())
        print(f"Pulling {service} ... done")
    return 0


def compose_up(site: SiteConfig, args: list[str]) -> int:
    detached = no_deps = False
    names = []
    for arg in args:
        if arg in ("-d", "--detach"):
            detached = True
        elif arg == "--no-deps":
            no_deps = True
        elif arg in ("--force-recreate", "--remove-orphans"):
            continue
        elif arg.startswith("-"):
            raise UsageError(f"unknown flag for up: {arg}")
        else:
            names.append(arg)
    if not detached:
        raise UsageError("this stand-in runs services only in the background: use 'up -d'")

    services = _compose_services(site, names)
    if API_SERVICE in services and not no_deps:
        dependencies = [name for name in site.containers if name not in services]
        services = dependencies + services
    # The API depends on the others, so it starts last.
    services.sort(key=lambda name: name == API_SERVICE)

    for service in services:
        if service != API_SERVICE:
            if _container_state(site, service) != "running":
                raise UsageError(_machine_server_message(site, service, "start"))
            print(f"{service} is up-to-date")
            continue
        _, replaced = runtime.start_service(site)
        print(f"{'Recreating' if replaced else 'Creating'} {service} ... done")
    return 0


def compose_ps(site: SiteConfig, args: list[str]) -> int:
    _reject_options(args, "ps")
    rows = []
    for name in _compose_services(site, []):
        state = _container_state(site, name)
        if state is None:
            continue
        status = _container_status(site, name) if state == "running" else "Exited (0)"
        ports = ""
        if name == API_SERVICE:
            port = site.service(API_SERVICE)["port"]
            ports = f"127.0.0.1:{port}->{port}/tcp"
        rows.append([name, _container_image(site, name), name, status, ports])
    _print_table(["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"], rows)
    return 0


def compose_logs(site: SiteConfig, args: list[str]) -> int:
    tail: int | None = None
    prefix = True
    names = []
    while args:
        arg = args.pop(0)
        if arg in ("--tail", "-n"):
            if not args:
                raise UsageError(f"flag needs an argument: {arg}")
            tail = _parse_tail(args.pop(0))
        elif arg.startswith(("--tail=", "-n=")):
            tail = _parse_tail(arg.split("=", 1)[1])
        elif arg == "--no-log-prefix":
            prefix = False
        elif arg.startswith("-"):
            raise UsageError(f"unknown flag for logs: {arg}")
        else:
            names.append(arg)

    for service in _compose_services(site, names):
        if service != API_SERVICE:
            continue
        try:
            lines = site.log_file(service).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        label = f"{service.ljust(LOG_PREFIX_WIDTH)}| " if prefix else ""
        for line in lines:
            print(f"{label}{line}")
    return 0


def compose_stop(site: SiteConfig, args: list[str]) -> int:
    for service in _compose_services(site, _reject_options(args, "stop")):
        if service != API_SERVICE:
            _error(f"{service}: the machine's own server, left running")
        elif runtime.stop_service(site, keep_container=True):
            print(f"Stopping {service} ... done")
    return 0


def compose_restart(site: SiteConfig, args: list[str]) -> int:
    for service in _compose_services(site, _reject_options(args, "restart")):
        if service != API_SERVICE:
            _error(f"{service}: the machine's own server, left running")
            continue
        runtime.start_service(site)
        print(f"Restarting {service} ... done")
    return 0


def compose_down(site: SiteConfig, args: list[str]) -> int:
    for arg in args:
        if arg in ("-v", "--volumes"):
            raise UsageError(
                "this stand-in cannot remove volumes, because the database is the machine's own"
                " PostgreSQL server"
            )
        if arg != "--remove-orphans":
            raise UsageError(f"unknown argument for down: {arg}")

    had_container = runtime.service_pid(site) is not None or runtime.container_exited(site)
    if runtime.stop_service(site):
        print(f"Stopping {API_SERVICE} ... done")
    runtime.remove_container(site)
    if had_container:
        print(f"Removing {API_SERVICE} ... done")
    return 0


COMPOSE_COMMANDS: dict[str, Callable[[SiteConfig, list[str]], int]] = {
    "pull": compose_pull,
    "up": compose_up,
    "ps": compose_ps,
    "logs": compose_logs,
    "stop": compose_stop,
    "restart": compose_restart,
    "down": compose_down,
}


# Helpers


def _run(action: Callable[[], int], *, program: str) -> int:
    try:
        return action()
    except UsageError as error:
        return _fail(str(error), error.exit_code)
    except SiteError as error:
        return _fail(f"{program}: {error}")


def _check_project(site: SiteConfig, compose_file: str | None) -> None:
    """Raise UsageError unless the compose file is the site's, like compose's own lookup."""
    if compose_file is not None:
        path = Path(compose_file)
        if not path.is_file():
            raise UsageError(f"open {path.resolve()}: no such file or directory")
    else:
        candidates = [Path.cwd() / name for name in COMPOSE_FILE_NAMES]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            raise UsageError(
                "no configuration file provided: not found"
                f" (looked for {', '.join(COMPOSE_FILE_NAMES)} in {Path.cwd()})"
            )

    project_dir = path.resolve().parent
    if project_dir != site.compose_dir.resolve():
        raise UsageError(
            f"this stand-in manages only the compose project in {site.compose_dir},"
            f" not {project_dir}"
        )


def _compose_services(site: SiteConfig, names: list[str]) -> list[str]:
    """Return the named services, or all of them, with aliases resolved."""
    known = [API_SERVICE, *site.containers]
    if not names:
        return known
    services = []
    for name in names:
        service = SERVICE_ALIASES.get(name, name)
        if service not in known:
            raise UsageError(f"no such service: {name}")
        services.append(service)
    return services


def _reject_options(args: list[str], command: str) -> list[str]:
    for arg in args:
        if arg.startswith("-"):
            raise UsageError(f"unknown flag for {command}: {arg}")
    return args


def _parse_tail(value: str) -> int | None:
    if value == "all":
        return None
    try:
        lines = int(value)
    except ValueError:
        raise UsageError(f"invalid --tail value {value!r}: expected a number or 'all'") from None
    return lines if lines >= 0 else None


def _container_names(site: SiteConfig) -> list[str]:
    return [API_SERVICE, *site.containers]


def _container_state(site: SiteConfig, name: str) -> str | None:
    """Return "running", "exited" or None when no such container exists."""
    if name == API_SERVICE:
        if runtime.service_pid(site) is not None:
            return "running"
        return "exited" if runtime.container_exited(site) else None

    container = site.containers.get(name)
    if container is None:
        return None
    address = container.get("address")
    if address and not runtime.address_reachable(address["host"], int(address["port"])):
        return "exited"
    return "running"


def _container_env(site: SiteConfig, name: str) -> dict[str, str]:
    if name == API_SERVICE:
        return {"APP_VERSION": site.app_version()}
    return dict(site.containers[name].get("env", {}))


def _container_image(site: SiteConfig, name: str) -> str:
    if name == API_SERVICE:
        return f"{API_IMAGE}:{runtime.started_version(site) or site.app_version()}"
    return site.containers[name].get("image", name)


def _container_status(site: SiteConfig, name: str) -> str:
    if name != API_SERVICE:
        return "Up"
    try:
        started = site.pid_file(API_SERVICE).stat().st_mtime
    except FileNotFoundError:
        return "Up"
    return f"Up {_describe_duration(time.time() - started)}"


def _describe_duration(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        count, unit = int(seconds), "second"
    elif seconds < 3600:
        count, unit = int(seconds // 60), "minute"
    else:
        count, unit = int(seconds // 3600), "hour"
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _container_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _machine_server_message(site: SiteConfig, name: str, action: str) -> str:
    address = site.containers.get(name, {}).get("address", {})
    where = f" at {address['host']}:{address['port']}" if address else ""
    return (
        f"Error response from daemon: {name} is this machine's own server{where}."
        f" This stand-in cannot {action} it."
    )


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("   ".join(cells).rstrip())


def _compose_version() -> int:
    print("Docker Compose version 0.0.0-standin (gonogo sample stand-in, no container engine)")
    return 0


def _error(message: str) -> None:
    print(message, file=sys.stderr)


def _fail(message: str, exit_code: int = 1) -> int:
    _error(message)
    return exit_code
