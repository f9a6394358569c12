"""The console session: a whole local release typed as text, on the same handlers as Slack."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sample import site as sample_site
from tests.support.gonogo_server import PROJECT_DIR, free_port
from tests.support.postgres import server_url

# Manual checks before the gate, then the gate, then those after it in the `local` environment.
# Items a person ticks: code review 4, testing 5, documentation 5, and the 3 infrastructure
# items the bot cannot check here (NGINX, two TLS certificates without a configured address).
CHECKS_BEFORE_NOTICE = 17
CHECKS_BEFORE_GATE = 4  # the validation meeting, the staging workflow's 2 items, staging Grafana
CHECKS_AFTER_GATE = 3


@pytest.fixture
def console_env(tmp_path):
    database = f"gonogo_console_{os.getpid()}_{free_port()}"
    env = {
        **os.environ,
        "GONOGO_HOME": str(tmp_path / "home"),
        "GONOGO_SAMPLE_PORT": str(free_port()),
        "GONOGO_LOCAL_DATABASE": database,
        "GONOGO_SAMPLE_POSTGRES_URL": server_url().rsplit("/", 1)[0],
        "GONOGO_UPDATE_INTERVAL": "0.1",
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DATABASE_URL", "GONOGO_LOCAL_TEST_TOKEN"):
        env.pop(name, None)
    yield env
    site_root = tmp_path / "home" / "local-site"
    if (site_root / "site.json").exists():
        sample_site.teardown(site_root)


def run_console(env, script: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "bot.main"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_DIR,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_console_deploys_sample(console_env):
    script = "/deploy v11.0.0 local\nwait\n"
    script += "press 1\nwait\n" * CHECKS_BEFORE_NOTICE
    script += "press 1\nsubmit Sunday 10:00-10:30 UTC | Quick rollback from the backup\nwait\n"
    script += "press 1\nwait\n" * CHECKS_BEFORE_GATE
    script += "press 1\nas U0APPROVER\npress 1\nwait\nas U0RELEASE\n"
    script += "press 1\nwait\n" * CHECKS_AFTER_GATE
    script += "press 1\nwait\nas U0VALIDATOR\npress 1\nwait\nas U0APPROVER\npress 1\nwait\n"
    # The approver may not roll back; on call may, quickly, right after the release.
    script += "/rollback local\nas U0ONCALL\n/rollback local\nsubmit\nwait\n"
    output = run_console(console_env, script)

    assert "Started deployment #1" in output
    assert "You need the approver role" in output  # the requester pressed Approve
    assert "== v11.0.0 → local: Deployed ==" in output
    assert "DEPLOYMENT LOG - v11.0.0" in output
    assert "Authorized by: U0APPROVER" in output
    assert "Maintenance window: Sunday 10:00-10:30 UTC" in output  # the notice and the log
    assert "You need the deployer or on-call engineer role in `local` to roll back" in output
    assert "── form: Quick rollback ──" in output
    assert "back to `v10.4.2`" in output
    assert "Started rollback #2 of `v11.0.0` (quick)" in output
    assert "== Quick rollback of v11.0.0 in local: Rolled back ==" in output
    assert "ROLLBACK LOG - v11.0.0" in output
    site = sample_site.load(Path(console_env["GONOGO_HOME"]) / "local-site")
    assert site.version == "v10.4.2"


def test_console_rejects_bad_input(console_env):
    output = run_console(
        console_env,
        "/deploy v11 local\n/deploy v11.0.0 moon\n/launch now\npress 4\nas nobody\nhello\n",
    )

    assert "Version `v11` does not match" in output
    assert "Environment `moon` is not defined" in output
    assert "Unknown command `/launch`" in output
    assert "There is no button 4" in output
    assert "`nobody` is not a Slack user ID" in output
    assert "Unknown input `hello`" in output
    assert "Started deployment" not in output


def test_console_redraws_after_restart(console_env):
    first = run_console(console_env, "/deploy v11.0.0 local\nwait\n")
    second = run_console(console_env, "wait\npress 1\nwait\n/deploy-cancel local\nwait\n")

    assert "Waiting for a check" in first
    assert "Waiting for a check" in second  # the open checklist is drawn again on start
    assert "Recorded: *All commits reviewed and approved* ticked." in second
    assert "Cancelling deployment #1" in second
    assert "== v11.0.0 → local: Cancelled ==" in second
