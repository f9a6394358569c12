"""Rollback of a release on a real target: the sample site behind a real sshd, with the data in
the machine's PostgreSQL. `docker` and `docker-compose` on the target are the stand-ins in
sample/bin.

The release here is the shipped runbook cut down to what a rollback needs (backup, the running
version, the rollout and a health check), so it runs with no one pressing buttons.
"""

import threading
from datetime import timedelta

import httpx
import psycopg
import pytest
import yaml

from commands import decisions, rollback
from commands.context import Request, Services
from commands.deploy_log import render_log
from commands.roles import StaticDirectory
from engine.clock import Clock
from engine.config import load_config
from engine.runner import Runner
from storage import repository
from storage.db import Database
from storage.models import Deployment, DeploymentStatus, StepStatus
from tests.support.inline import InlineWorker, NoObserver
from tests.support.postgres import scratch_database
from tests.support.target import cut_down_runbook, served_site, write_environments

REQUESTER, ON_CALL, APPROVER, OUTSIDER = "U0RELEASE", "U0ONCALL", "U0APPROVER", "U0OUTSIDER"
CHANNEL = "C0PRODUCTION"
TOKEN = "rollback-test-token-4c1d"
SEED_ROWS = 3


class ShiftedClock(Clock):
    """The real clock moved on by ``offset``, which a test changes to step past a window."""

    def __init__(self):
        self.offset = timedelta(0)

    def now(self):
        return super().now() + self.offset


@pytest.fixture
def target(tmp_path):
    with served_site(tmp_path, "gonogo_rollback_site", TOKEN) as served:
        yield served


def environments(path, site, sshd):
    roles = {"deployers": [REQUESTER], "approvers": [APPROVER, REQUESTER], "on_call": [ON_CALL]}
    return write_environments(path, site, sshd, roles, "GONOGO_ROLLBACK_TEST_TOKEN")


@pytest.fixture
def bot(tmp_path, target, monkeypatch):
    """Handler services with a real runner, on SQLite, for the target above."""
    site, sshd = target
    monkeypatch.setenv("GONOGO_ROLLBACK_TEST_TOKEN", TOKEN)
    config = load_config(
        cut_down_runbook(tmp_path / "runbook.yml"),
        environments(tmp_path / "environments.yml", site, sshd),
    )
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    clock = ShiftedClock()
    services = Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
        clock=clock,
    )
    yield services, site
    db.dispose()


def release(services) -> Deployment:
    reply = run(services, "/deploy", "v11.0.0 production", REQUESTER)
    assert "Started deployment #1" in reply.text
    deployment = stored(services, 1)
    if deployment.status != DeploymentStatus.SUCCEEDED:
        with services.db.session() as session:
            for step in repository.steps_of(session, 1):
                print(step.step_id, step.status, step.output_tail)
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    return deployment


def run(services, command: str, text: str, user: str):
    from commands import slash_commands

    request = Request(user_id=user, channel_id=CHANNEL, text=text, command=command)
    return slash_commands(services.config)[command](services, request)


def confirm(services, user: str, mode: str | None = None, release_id: int = 1):
    """Open the rollback form as ``user``, fill in its plan and submit it."""
    reply = run(services, "/rollback", f"production {mode or ''}".strip(), user)
    assert reply.form is not None, reply.text
    assert reply.form.text == "Working out the plan…"
    form = reply.follow_up()
    submitted = rollback.submit(
        services,
        Request(user_id=user, channel_id="", text=form.metadata, action_id=form.callback_id),
    )
    return form, submitted


def press_gate(services, deployment_id: int, user: str) -> str:
    value = decisions.button_value(deployment_id, "confirm-restore")
    request = Request(user_id=user, channel_id=CHANNEL, text=value, action_id=decisions.APPROVE)
    return decisions.handle(services, request).text


def stored(services, deployment_id: int) -> Deployment:
    with services.db.session() as session:
        return repository.get_deployment(session, deployment_id)


def approval_ids(site) -> list[int]:
    with psycopg.connect(site.database_url) as connection:
        rows = connection.execute("SELECT id FROM vvb_approval_request ORDER BY id").fetchall()
    return [row[0] for row in rows]


def write_approvals(site, count: int) -> None:
    for number in range(count):
        reply = httpx.post(
            f"{site.api_url}/api/v11/approvals",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "versionId": f"after-release-{number}",
                "changeType": "SECONDARY_TOKEN_CREATE",
                "totalValidators": 3,
                "expiryDeadline": "2030-01-01T00:00:00Z",
            },
            timeout=10,
        )
        assert reply.status_code in (200, 201), reply.text


def running_version(site) -> str:
    return httpx.get(f"{site.api_url}/q/health", timeout=10).json()["version"]


def test_full_rollback_restores_earlier_rows(bot):
    services, site = bot
    release(services)
    before = approval_ids(site)
    assert len(before) == SEED_ROWS
    write_approvals(site, 2)
    assert len(approval_ids(site)) == SEED_ROWS + 2
    assert running_version(site) == "v11.0.0"

    form, submitted = confirm(services, REQUESTER, "full")
    assert form.metadata == "1:full"
    assert "back to `v10.4.2`" in form.text
    with services.db.session() as session:
        backup = repository.backup_of(session, 1)
    assert backup.sha256 in form.text
    assert f"{SEED_ROWS} approval rows" in form.text
    assert "second person with the approver role" in form.text
    assert "Started rollback #2" in submitted.text

    # Nothing is restored until a second approver confirms; the requester cannot.
    rollback_run = stored(services, 2)
    assert rollback_run.status == DeploymentStatus.WAITING
    assert len(approval_ids(site)) == SEED_ROWS + 2
    assert "cannot approve" in press_gate(services, 2, REQUESTER)
    assert "approver role" in press_gate(services, 2, ON_CALL)
    assert stored(services, 2).status == DeploymentStatus.WAITING
    assert len(approval_ids(site)) == SEED_ROWS + 2
    press_gate(services, 2, APPROVER)

    rollback_run = stored(services, 2)
    assert rollback_run.status == DeploymentStatus.SUCCEEDED, rollback_run.error
    assert approval_ids(site) == before
    assert running_version(site) == "v10.4.2"
    assert rollback_run.variables["version_after_rollback"] == "v10.4.2"
    assert rollback_run.variables["approval_rows_after_rollback"] == str(SEED_ROWS)
    assert rollback_run.variables["api_approvals_after_rollback"] == str(SEED_ROWS)

    with services.db.session() as session:
        release_run = repository.get_deployment(session, 1)
        steps = repository.steps_of(session, 1)
        rollback_steps = repository.steps_of(session, 2)
        sign_offs = repository.sign_offs_of(session, 2)
    log = render_log(services.config, release_run, steps, [])
    assert "ROLLBACK #2 (full): SUCCEEDED" in log
    assert "Version after rollback: v10.4.2" in log
    assert f"Approval rows after rollback: {SEED_ROWS}" in log
    rollback_log = render_log(services.config, rollback_run, rollback_steps, sign_offs)
    assert f"Second approver: approved by {APPROVER}" in rollback_log
    assert backup.sha256 in rollback_log


def test_quick_rollback_keeps_data(bot):
    services, site = bot
    release(services)
    write_approvals(site, 1)

    run(services, "/postdeploy", "production", REQUESTER)
    assert stored(services, 2).status == DeploymentStatus.WAITING  # a window of checks
    form, submitted = confirm(services, REQUESTER)
    assert form.metadata == "1:quick"
    assert "Quick rollback is open until" in form.text
    assert stored(services, 2).status == DeploymentStatus.CANCELLED  # it checked v11.0.0
    rollback_run = stored(services, 3)
    assert rollback_run.status == DeploymentStatus.SUCCEEDED, rollback_run.error
    assert running_version(site) == "v10.4.2"
    assert len(approval_ids(site)) == SEED_ROWS + 1  # a quick rollback leaves the data alone
    status = run(services, "/deploy-status", "production", REQUESTER).text
    assert f"Rollback #3 (quick) by <@{REQUESTER}>: *succeeded*" in status

    # Rolled back already: a second rollback is refused.
    form = run(services, "/rollback", "production", ON_CALL).follow_up()
    assert "already rolled back by deployment #3" in form.text
    assert not form.submit


def test_quick_rollback_after_window_offers_full(bot):
    services, site = bot
    release(services)
    services.clock.offset = timedelta(minutes=31)

    default = run(services, "/rollback", "production", ON_CALL).follow_up()
    assert "window closed" in default.text
    reply = run(services, "/rollback", "production quick", ON_CALL)
    form = reply.follow_up()
    assert "window closed" in form.text
    assert form.metadata == "1:full"  # the full rollback is what is offered
    assert form.submit == "Ask for approval"

    # A quick confirmation left open past the window is refused when submitted.
    refused = rollback.submit(
        services,
        Request(user_id=ON_CALL, channel_id="", text="1:quick", action_id=rollback.CONFIRM),
    )
    assert "window closed" in refused.text
    assert stored(services, 2) is None
    assert running_version(site) == "v11.0.0"


def test_rollback_changed_backup_not_restored(bot):
    services, site = bot
    release(services)
    write_approvals(site, 2)
    with services.db.session() as session:
        backup = repository.backup_of(session, 1)
    dump = f"{backup.location}/{backup.dump}"
    with open(dump, "r+b") as handle:
        handle.truncate(backup.size_bytes // 2)

    # The plan measures the dump again and offers nothing to confirm.
    form = run(services, "/rollback", "production full", ON_CALL).follow_up()
    assert "has changed since it was taken" in form.text
    assert not form.submit

    # A form opened before the dump changed is caught by the rollback's own check.
    request = Request(user_id=ON_CALL, channel_id="", text="1:full", action_id=rollback.CONFIRM)
    assert "Started rollback #2" in rollback.submit(services, request).text
    press_gate(services, 2, APPROVER)

    rollback_run = stored(services, 2)
    assert rollback_run.status == DeploymentStatus.FAILED
    with services.db.session() as session:
        steps = {step.step_id: step for step in repository.steps_of(session, 2)}
    assert steps["check-backup"].status == StepStatus.FAILED
    assert "has changed since it was taken" in steps["check-backup"].output_tail
    assert steps["restore-database"].status == StepStatus.NOT_RUN
    assert len(approval_ids(site)) == SEED_ROWS + 2  # nothing was restored


def test_rollback_needs_the_role(bot):
    services, site = bot
    release(services)

    reply = run(services, "/rollback", "production", OUTSIDER)
    assert reply.form is None
    assert "deployer or on-call engineer role" in reply.text
    button = rollback.open_form(
        services, Request(user_id=OUTSIDER, channel_id=CHANNEL, text="1", action_id=rollback.OPEN)
    )
    assert button.form is None
    assert "role" in button.text
    submitted = rollback.submit(
        services,
        Request(user_id=OUTSIDER, channel_id="", text="1:quick", action_id=rollback.CONFIRM),
    )
    assert "role" in submitted.text
    assert stored(services, 2) is None


def test_rollback_before_rollout_rejected(bot):
    services, site = bot
    # Stop the release before its rollout: the backup runs, the rollout does not.
    from commands import deploy

    deploy.start(
        services,
        Request(user_id=REQUESTER, channel_id=CHANNEL, text="", command="/deploy"),
        "v11.0.0",
        "production",
        target_position=1,
    )
    assert stored(services, 1).status == DeploymentStatus.PAUSED
    form = run(services, "/rollback", "production", ON_CALL).follow_up()
    assert "never reached its rollout" in form.text
    assert not form.submit


def test_rollback_concurrent_confirmations_start_one(tmp_path, target, monkeypatch):
    site, sshd = target
    monkeypatch.setenv("GONOGO_ROLLBACK_TEST_TOKEN", TOKEN)
    config = load_config(
        cut_down_runbook(tmp_path / "runbook.yml"),
        environments(tmp_path / "environments.yml", site, sshd),
    )
    with scratch_database("gonogo_rollback_bot") as database_url:
        db = Database(database_url)
        db.migrate()
        started: list[int] = []

        class Recorder(InlineWorker):
            def submit(self, deployment_id: int) -> None:
                if deployment_id != 1:
                    started.append(deployment_id)
                else:
                    super().submit(deployment_id)

        services = Services(
            config=config,
            db=db,
            worker=Recorder(Runner(db, config, owner="test")),
            directory=StaticDirectory(),
            observer=NoObserver(),
        )
        release(services)
        barrier = threading.Barrier(2)
        replies: dict[str, str] = {}

        def submit(user: str) -> None:
            barrier.wait()
            request = Request(
                user_id=user, channel_id="", text="1:quick", action_id=rollback.CONFIRM
            )
            replies[user] = rollback.submit(services, request).text

        threads = [threading.Thread(target=submit, args=(user,)) for user in (ON_CALL, REQUESTER)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        with services.db.session() as session:
            rollbacks = repository.children_of(session, 1)
        db.dispose()
    assert len(rollbacks) == 1
    assert started == [rollbacks[0].id]
    texts = sorted(replies.values())
    assert sum(text.startswith("Started rollback") for text in texts) == 1, texts
    refused = next(text for text in texts if not text.startswith("Started rollback"))
    assert "already has an active deployment" in refused or "still going" in refused, texts


def test_older_release_not_rolled_back_over_newer(bot):
    services, site = bot
    release(services)
    run(services, "/deploy", "v11.0.1 production", REQUESTER)
    assert stored(services, 2).status == DeploymentStatus.SUCCEEDED

    button = rollback.open_form(
        services, Request(user_id=ON_CALL, channel_id=CHANNEL, text="1", action_id=rollback.OPEN)
    )
    form = button.follow_up()
    request = Request(user_id=ON_CALL, channel_id="", text="1:quick", action_id=rollback.CONFIRM)
    submitted = rollback.submit(services, request)
    latest = run(services, "/rollback", "production", ON_CALL).follow_up()

    assert "Deployment #2 of `v11.0.1` has been rolled out" in form.text
    assert not form.submit
    assert "has been rolled out" in submitted.text
    assert latest.metadata == "2:quick"  # the command offers the newest release
    assert running_version(site) == "v11.0.1"


def test_rolled_back_release_runs_no_more_phases(bot, tmp_path):
    services, site = bot
    # A health check that expects another version halts the release after its rollout.
    document = yaml.safe_load((tmp_path / "runbook.yml").read_text())
    health = document["phases"][3]["steps"][0]["probe"]
    health.update(expect_json={"version": "v0.0.1"}, attempts=2)
    (tmp_path / "runbook.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    services.config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    services.worker = InlineWorker(Runner(services.db, services.config, owner="test"))
    run(services, "/deploy", "v11.0.0 production", REQUESTER)
    assert stored(services, 1).status == DeploymentStatus.FAILED

    confirm(services, ON_CALL)
    again = run(services, "/healthcheck", "production", REQUESTER)

    assert stored(services, 2).status == DeploymentStatus.SUCCEEDED
    assert "was rolled back by deployment #2" in again.text
    assert stored(services, 1).status == DeploymentStatus.FAILED
    assert running_version(site) == "v10.4.2"


def test_confirmed_rollback_ends_waiting_release(bot):
    services, site = bot
    from commands import deploy

    # Pause the release right after its rollout, still holding the environment.
    positions = [phase for phase, _ in services.config.runbook.steps()]
    last_rollout = max(i for i, phase in enumerate(positions) if phase.id == "rollout")
    request = Request(user_id=REQUESTER, channel_id=CHANNEL, text="", command="/deploy")
    deploy.start(services, request, "v11.0.0", "production", target_position=last_rollout)
    assert stored(services, 1).status == DeploymentStatus.PAUSED

    form, submitted = confirm(services, ON_CALL)
    with services.db.session() as session:
        holder = repository.active_deployment(session, "production")

    assert "Started rollback #2" in submitted.text
    assert stored(services, 1).status == DeploymentStatus.CANCELLED
    assert stored(services, 1).error == f"cancelled by {ON_CALL}"
    assert stored(services, 2).status == DeploymentStatus.SUCCEEDED
    assert holder is None  # the rollback took the lock over, then let it go
    assert running_version(site) == "v10.4.2"
