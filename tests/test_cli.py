"""The `gonogo` command line: configuration check and start-up errors."""

import os
import subprocess
import sys

from tests.support.gonogo_server import PROJECT_DIR


def run_gonogo(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.main", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_check_accepts_shipped_files():
    completed = run_gonogo("check")

    assert completed.returncode == 0, completed.stderr
    assert "runbook vvb-v11" in completed.stdout
    assert "staging, production, local" in completed.stdout


def test_check_names_file_line_and_key(tmp_path):
    environments = tmp_path / "environments.yml"
    environments.write_text(
        "environments:\n"
        "  staging:\n"
        "    channel: C0STAGING\n"
        "    hosts:\n"
        "      app: [local]\n"
        "    setings: {}\n"
    )
    completed = run_gonogo("check", env={"GONOGO_ENVIRONMENTS": str(environments)})

    assert completed.returncode == 2
    assert f"{environments}:6: environments.staging.setings: unknown key" in completed.stderr


def test_web_without_credentials_explains(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", "import bot.wsgi; bot.wsgi.application"],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env={
            key: value
            for key, value in os.environ.items()
            if key not in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
        }
        | {"GONOGO_HOME": str(tmp_path)},
        timeout=60,
    )

    assert completed.returncode != 0
    assert "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in completed.stderr


def test_web_command_without_credentials(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLACK_")}
    completed = subprocess.run(
        [sys.executable, "-m", "bot.main", "web"],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env=env | {"GONOGO_HOME": str(tmp_path)},
        timeout=60,
    )

    assert completed.returncode == 2
    assert "needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in completed.stdout
