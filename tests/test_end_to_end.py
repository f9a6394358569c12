"""A whole release through Slack's HTTP interface, against real servers on loopback.

gonogo runs under gunicorn as in production. The target host is a real OpenSSH sshd on
127.0.0.1 with key authentication and a checked host key. On it, the sample service plays
the v11 API on this machine's PostgreSQL and Redis. No container engine runs here, so a
stand-in for the docker CLI (sample/bin/docker and docker-compose) maps `docker exec` and
`docker-compose` onto the sample service. Slack is the loopback stand-in in tests/support.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from sqlmodel import select

from sample import site as sample_site
from storage.db import Database
from storage.models import Deployment, DeploymentStatus, SignOff, StepRun, StepStatus
from tests.support.gonogo_server import PROJECT_DIR, GonogoServer
from tests.support.postgres import scratch_database
from tests.support.slack_requests import SlackRequester
from tests.support.slack_standin import SlackStandIn
from tests.support.target import served_site

SIGNING_SECRET = "e2e-signing-secret"
REQUESTER = "U0RELEASE"
APPROVER = "U0APPROVER"
VALIDATOR = "U0VALIDATOR"
SIGNERS = {  # who presses each slot of the final sign-off
    "signoff.sign.deployed_by": REQUESTER,
    "signoff.sign.validated_by": VALIDATOR,
    "signoff.sign.authorized_by": APPROVER,
}
CHANNEL = "C0PRODUCTION"
TEST_TOKEN = "e2e-api-token-7f3a"
NOTICE_WINDOW = "Sunday 10:00-10:30 UTC, approvals paused"
SEED_ROWS = 3
RUN_TIMEOUT = 240.0


@pytest.fixture
def target(tmp_path):
    """A prepared sample site served over a real sshd, with a scratch PostgreSQL database."""
    with served_site(tmp_path, "gonogo_e2e_site", TEST_TOKEN) as served:
        yield served


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        standin.add_usergroup("S0APPROVERS", "release-approvers", [APPROVER, REQUESTER])
        yield standin


def write_environments(path: Path, site, sshd) -> Path:
    host = f"{sshd.host}:{sshd.port}"
    settings = {
        "compose_dir": str(site.compose_dir),
        "backup_root": str(site.backups_dir),
        "repo_dir": str(site.repo_dir),
        "git_remote": "origin",
        "api_service": "sample-api",
        "api_image": "sample-api",
        "postgres_container": "sample-postgres",
        "redis_container": "sample-redis",
        "db_user": "postgres",
        "db_name": site.database,
        "health_url": f"{site.api_url}/q/health",
        "api_url": f"{site.api_url}/api/v11",
        "webhooks_url": f"{site.api_url}/webhooks",
        "prometheus_url": None,
        "grafana_url": None,
        "staging_grafana_url": None,
        "tls_staging": None,
        "tls_production": None,
        "backup_min_free_gb": 0,
    }
    document = {
        "environments": {
            "production": {
                "channel": CHANNEL,
                "notify_channels": {"operations": "C0OPERATIONS", "validators": "C0VALIDATORS"},
                "roles": {
                    "deployers": [REQUESTER],
                    "approvers": ["@release-approvers"],
                    "validators": [VALIDATOR],
                },
                "require_approval": True,
                "ssh": {
                    "user": sshd.user,
                    "key_file": str(sshd.key_file),
                    "known_hosts": str(sshd.known_hosts),
                    "connect_timeout": 10,
                },
                "hosts": {"app": [host], "repo": [host]},
                "settings": settings,
                "secrets": {"test_token": "GONOGO_E2E_TEST_TOKEN"},
                "contacts": {
                    name: REQUESTER for name in ("operations", "database", "network", "on_call")
                },
            }
        }
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def fast_runbook(path: Path) -> Path:
    """Write the shipped runbook with short waits and three health attempts."""
    document = yaml.safe_load((PROJECT_DIR / "runbooks" / "vvb-v11.yml").read_text())
    for phase in document["phases"]:
        for step in phase["steps"]:
            if "wait" in step:
                step["wait"]["seconds"] = 0.1
            if step["id"] == "api-health":
                step["probe"].update(attempts=3, interval=0.2)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def start_server(
    tmp_path, slack, environments: Path, database_url: str, runbook: Path | None = None
):
    env = {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "DATABASE_URL": database_url,
        "GONOGO_ENVIRONMENTS": str(environments),
        "GONOGO_RUNBOOK": str(runbook or PROJECT_DIR / "runbooks" / "vvb-v11.yml"),
        "GONOGO_UPDATE_INTERVAL": "0.2",
        "GONOGO_POST_INTERVAL": "0.2",
        "GONOGO_E2E_TEST_TOKEN": TEST_TOKEN,
        "GONOGO_HOME": str(tmp_path / "home"),
    }
    return GonogoServer(tmp_path, env)


def checklist(slack):
    messages = [m for m in slack.messages(CHANNEL) if m.blocks and m.blocks[0]["type"] == "header"]
    return messages[0] if messages else None


def buttons(message) -> list[dict]:
    found = []
    for block in message.blocks or []:
        if block["type"] == "actions":
            found += block["elements"]
        elif block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
    return found


def header(message) -> str:
    return message.blocks[0]["text"]["text"]


def drive_until_finished(slack, requester: SlackRequester, server: GonogoServer) -> list[str]:
    """Press the checklist's buttons until the deployment ends; return the rejections seen."""
    rejections: list[str] = []
    pressed: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        message = checklist(slack)
        if message is not None and header(message).split(": ")[-1] in (
            "Deployed",
            "Failed",
            "Rejected",
        ):
            return rejections
        current = buttons(message) if message else []
        fresh = [
            button
            for button in current
            if button["value"] + button["action_id"] not in pressed
            and button["action_id"] != "signoff.reject"  # the happy path signs; it never rejects
        ]
        if not fresh:
            time.sleep(0.1)
            continue
        button = fresh[0]
        if button["action_id"] == "gate.reject":
            button = next(b for b in fresh if b["action_id"] == "gate.approve")
        if button["action_id"] == "notice.write":
            write_notice(slack, requester, message, button)
        elif button["action_id"] == "gate.approve":
            rejections.append(press(slack, requester, message, button, REQUESTER))
            press(slack, requester, message, button, APPROVER)
            pressed.add(button["value"] + "gate.reject")
        else:
            press(slack, requester, message, button, SIGNERS.get(button["action_id"], REQUESTER))
        pressed.add(button["value"] + button["action_id"])
    raise AssertionError(f"the deployment did not finish in time:\n{server.tail()}")


def write_notice(slack, requester: SlackRequester, message, button) -> None:
    """Press "Write the notice" and submit the form Slack would show."""
    opened = len(slack.calls("views.open"))
    response = requester.action(
        button["action_id"],
        button["value"],
        user_id=REQUESTER,
        channel_id=CHANNEL,
        message_ts=message.ts,
    )
    assert response.status_code == 200
    calls = slack.wait_for(lambda: slack.calls("views.open")[opened:], timeout=10)
    view = calls[0].args["view"]
    submitted = requester.view_submission(
        view["callback_id"],
        {
            "maintenance_window": {"value": NOTICE_WINDOW},
            "rollback_plan": {"value": "Quick rollback from the backup"},
        },
        user_id=REQUESTER,
        private_metadata=view["private_metadata"],
    )
    assert submitted.status_code == 200


def press(slack, requester: SlackRequester, message, button, user: str) -> str:
    name = f"press-{button['value']}-{button['action_id']}-{user}"
    response = requester.action(
        button["action_id"],
        button["value"],
        user_id=user,
        channel_id=CHANNEL,
        message_ts=message.ts,
        response_url=slack.response_url(name),
    )
    assert response.status_code == 200
    replies = slack.wait_for(lambda: slack.responses(name), timeout=10)
    return replies[-1]["text"]


def stored(database_url: str):
    db = Database(database_url)
    with db.session() as session:
        deployment = session.exec(select(Deployment)).one()
        steps = list(session.exec(select(StepRun).order_by(StepRun.position)))
        sign_offs = list(session.exec(select(SignOff)))
    db.dispose()
    return deployment, steps, sign_offs


def test_release_to_production(tmp_path, target, slack):
    site, sshd = target
    environments = write_environments(tmp_path / "environments.yml", site, sshd)
    with scratch_database("gonogo_e2e_bot") as bot_database:
        with start_server(tmp_path, slack, environments, bot_database) as server:
            with SlackRequester(server.url + "/slack/events", SIGNING_SECRET) as requester:
                started = time.monotonic()
                response = requester.command(
                    "/deploy", "v11.0.0 production", user_id=REQUESTER, channel_id="C0REQUEST"
                )
                acknowledged = time.monotonic() - started
                rejections = drive_until_finished(slack, requester, server)
                slack.wait_for(
                    lambda: any("DEPLOYMENT LOG" in m.text for m in thread_of(slack)), timeout=30
                )
        deployment, steps, sign_offs = stored(bot_database)

    assert response.status_code == 200
    assert "Started deployment #1" in response.text
    assert acknowledged < 3.0
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert [s.step_id for s in steps if s.status != StepStatus.PASSED] == []
    assert any("cannot approve" in text for text in rejections)

    # The run waited for the approval: the rollout began after the approver's press.
    approval = next(s for s in sign_offs if s.step_id == "go-no-go")
    rollout = next(s for s in steps if s.step_id == "pin-version")
    assert approval.user_id == APPROVER
    assert rollout.started_at > approval.decided_at

    # The backup exists and restores into a scratch database.
    backup_dir = Path(deployment.variables["backup_location"])
    dump = backup_dir / "db_backup.sql"
    assert dump.stat().st_size > 0
    with scratch_database("gonogo_e2e_restore") as restore_url:
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", restore_url, "-f", str(dump)],
            check=True,
            capture_output=True,
        )
        with psycopg.connect(restore_url) as connection:
            restored = connection.execute("SELECT COUNT(*) FROM vvb_approval_request").fetchone()[0]
    assert restored == SEED_ROWS

    # The service reports the new version; the git tag reached the origin repository.
    health = httpx_get_json(f"{site.api_url}/q/health")
    assert health["version"] == "v11.0.0"
    tags = subprocess.run(
        ["git", "tag", "--list"], cwd=site.origin_dir, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "v11.0.0" in tags
    assert deployment.variables["previous_version"] == sample_site.DEFAULT_VERSION

    # Slack saw the one checklist message pass through every step, and the log at the end.
    message = checklist(slack)
    assert len([m for m in slack.messages(CHANNEL) if m.blocks]) == 1
    # A phase that finishes between two coalesced updates may only ever show as done.
    final = str(message.versions[-1].blocks)
    for step in steps:
        assert f":white_check_mark: *{step.phase_title}*" in final, step.step_id
    seen = "\n".join(str(version.blocks) for version in message.versions)
    slow = [step for step in steps if (step.finished_at - step.started_at).total_seconds() > 2]
    assert slow, "some step takes long enough to be drawn while it runs"
    for step in slow:
        assert step.title in seen, step.step_id
    assert header(message) == "v11.0.0 → production: Deployed"
    assert buttons(message) == []
    thread_texts = [m.text for m in thread_of(slack)]
    for step in steps:
        if step.kind in ("run", "probe"):
            assert any(step.title in text for text in thread_texts), step.step_id
    verdict = next(text for text in thread_texts if "*Go/no-go criteria* done" in text)
    assert "GO\nMust have:" in verdict
    assert "- [met] All services are healthy" in verdict
    log = next(text for text in thread_texts if "DEPLOYMENT LOG - v11.0.0" in text)
    assert f"Authorized by: {APPROVER}" in log
    assert f"Previous version: {sample_site.DEFAULT_VERSION}" in log
    assert str(backup_dir) in log
    assert "- API Health: PASS" in log
    notice = slack.messages("C0OPERATIONS")[0].text
    assert f"Maintenance window: {NOTICE_WINDOW}." in notice
    assert notice.startswith(f"<@{REQUESTER}> <@{REQUESTER}> Release v11.0.0")
    assert slack.violations == []
    assert TEST_TOKEN not in "\n".join(str(call.args) for call in slack.calls())


def test_unhealthy_release_halts(tmp_path, target, slack):
    site, sshd = target
    with site.env_file.open("a") as env_file:
        env_file.write("SAMPLE_HEALTH=down\n")  # the next start of the service reports DOWN
    environments = write_environments(tmp_path / "environments.yml", site, sshd)
    runbook = fast_runbook(tmp_path / "runbook.yml")
    database_url = f"sqlite:///{tmp_path / 'gonogo.db'}"
    slack.rate_limit("chat.update", count=2, retry_after=1)
    with start_server(tmp_path, slack, environments, database_url, runbook) as server:
        with SlackRequester(server.url + "/slack/events", SIGNING_SECRET) as requester:
            response = requester.command("/deploy", "v11.0.0 production", user_id=REQUESTER)
            drive_until_finished(slack, requester, server)
            slack.wait_for(lambda: any(m.reply_broadcast for m in thread_of(slack)), timeout=30)
    deployment, steps, _ = stored(database_url)

    assert response.status_code == 200
    assert deployment.status == DeploymentStatus.FAILED
    failed = [s.step_id for s in steps if s.status == StepStatus.FAILED]
    assert failed == ["api-health"]
    later = [
        s
        for s in steps
        if s.position > steps[[s.step_id for s in steps].index("api-health")].position
    ]
    assert {s.status for s in later} == {StepStatus.NOT_RUN}
    alert = next(m for m in thread_of(slack) if m.reply_broadcast)
    assert "API server is healthy" in alert.text
    assert f"<@{REQUESTER}>" in alert.text
    assert header(checklist(slack)) == "v11.0.0 → production: Failed"
    assert "POST /api/v11/approvals" not in site.log_file.read_text()
    assert [call.status for call in slack.calls("chat.update")][:2] == [429, 429]


def test_bad_requests_run_nothing(tmp_path, target, slack):
    site, sshd = target
    environments = write_environments(tmp_path / "environments.yml", site, sshd)
    database_url = f"sqlite:///{tmp_path / 'gonogo.db'}"
    with start_server(tmp_path, slack, environments, database_url) as server:
        events = server.url + "/slack/events"
        with SlackRequester(events, SIGNING_SECRET) as requester:
            bad_version = requester.command("/deploy", "11.0 production", user_id=REQUESTER)
            unknown = requester.command("/deploy", "v11.0.0 prod", user_id=REQUESTER)
            no_role = requester.command("/deploy", "v11.0.0 production", user_id="U0STRANGER")
            unsigned = requester.command(
                "/deploy", "v11.0.0 production", user_id=REQUESTER, unsigned=True
            )
            stale = requester.command(
                "/deploy", "v11.0.0 production", user_id=REQUESTER, stale=True
            )
            forged = requester.command(
                "/deploy", "v11.0.0 production", user_id=REQUESTER, bad_signature=True
            )
    db = Database(database_url)
    with db.session() as session:
        deployments = list(session.exec(select(Deployment)))
    db.dispose()

    assert "`11.0`" in bad_version.text
    assert "v11.0.0" in bad_version.text
    assert "`prod`" in unknown.text
    assert "`production`" in unknown.text
    assert "deployer" in no_role.text
    assert unsigned.status_code == 401
    assert stale.status_code == 401
    assert forged.status_code == 401
    assert deployments == []
    assert slack.calls("chat.postMessage") == []


def thread_of(slack):
    message = checklist(slack)
    return slack.thread(CHANNEL, message.ts) if message else []


def httpx_get_json(url: str):
    return httpx.get(url, timeout=5).json()
