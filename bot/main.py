"""The `gonogo` command: a console session, the Socket Mode worker, or a configuration check."""

import argparse
import logging
import sys
from pathlib import Path

from bot.runtime import Settings
from engine.runner import missing_secrets
from engine.yamlfile import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gonogo",
        description="Slack ChatOps bot that runs release runbooks. Without Slack credentials "
        "in the environment, `gonogo` starts a console session.",
    )
    parser.add_argument(
        "mode",
        nargs="?",
        choices=["console", "socket", "web", "check"],
        help="console: type commands here; socket: connect to Slack over Socket Mode; "
        "web: serve Slack's HTTP requests with gunicorn; check: validate the configuration",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level, e.g. INFO")
    arguments = parser.parse_args(argv)
    settings = Settings.from_environ()
    mode = arguments.mode or ("socket" if settings.bot_token and settings.app_token else "console")
    level = arguments.log_level.upper() if mode == "console" else "INFO"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        if mode == "check":
            return check(settings)
        if mode == "console":
            from bot.console import run_console

            return run_console(settings)
        if mode == "socket":
            from bot.socket_mode import run_socket_mode

            return run_socket_mode(settings)
        from bot.web import run_web

        return run_web(settings)
    except ConfigError as error:
        print(f"gonogo: the configuration is invalid:\n{error}", file=sys.stderr)
        return 2


def check(settings: Settings) -> int:
    config = settings.load_config()
    steps = config.runbook.steps()
    print(
        f"{settings.runbook_file}: runbook {config.runbook.name}, "
        f"{len(config.runbook.phases)} phases, {len(steps)} steps"
    )
    print(f"{settings.environments_file}: environments {', '.join(config.environments)}")
    for warning in runtime_warnings(config):
        print(f"warning: {warning}")
    return 0


def runtime_warnings(config) -> list[str]:
    """Return what this host lacks to run each environment: secrets, SSH key and known_hosts."""
    warnings = []
    for name, environment in config.environments.items():
        for secret, variable in missing_secrets(config.runbook, environment):
            warnings.append(f"environment {name}: secret {secret} needs {variable}, which is unset")
        if environment.ssh is not None:
            for key in ("key_file", "known_hosts"):
                path = Path(getattr(environment.ssh, key)).expanduser()
                if not path.is_file():
                    warnings.append(f"environment {name}: ssh.{key} {path} does not exist")
    return warnings


if __name__ == "__main__":
    sys.exit(main())
