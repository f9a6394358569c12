"""The runbook's database backup step: recorded, proved to restore, and kept to a count.

A failing, empty or truncated dump halts the run. The step runs on this machine against the
sample site. `docker exec` is the stand-in for the docker CLI in sample/bin, so the dump comes
from the real pg_dump and PostgreSQL here.
"""

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from commands import backups as backups_command
from commands import deploy
from commands.context import Reply, Request, Services
from commands.roles import StaticDirectory
from engine import backups
from engine.config import Environment, load_config
from engine.runner import Runner
from sample import site as sample_site
from storage import repository
from storage.db import Database
from storage.models import Backup, Deployment, DeploymentStatus, StepRun, StepStatus
from tests.support.gonogo_server import PROJECT_DIR, free_port
from tests.support.inline import InlineWorker, NoObserver
from tests.support.postgres import scratch_database


@pytest.fixture
def site(tmp_path):
    with scratch_database("gonogo_backup") as database_url:
        prepared = sample_site.prepare(
            tmp_path / "host",
            database_url=database_url,
            redis_url="redis://127.0.0.1:6379/0",
            api_port=free_port(),
        )
        yield prepared


def backup_only_runbook(path):
    shipped = yaml.safe_load((PROJECT_DIR / "runbooks" / "vvb-v11.yml").read_text())
    steps = [step for phase in shipped["phases"] for step in phase["steps"]]
    backup = next(step for step in steps if step["id"] == "backup")
    runbook = {
        "name": "backup-only",
        "title": "Backup",
        "phases": [{"id": "backup", "title": "Backup", "steps": [backup]}],
    }
    path.write_text(yaml.safe_dump(runbook))
    return path


def environments(path, site, *, db_name: str, path_prepend: list[str], backup_retention: int = 5):
    document = {
        "environments": {
            "production": {
                "channel": "C0PRODUCTION",
                "roles": {
                    "deployers": ["U0RELEASE"],
                    "approvers": ["U0APPROVER"],
                    "on_call": ["U0ONCALL"],
                },
                "backup_retention": backup_retention,
                "hosts": {"app": ["local"]},
                "path_prepend": path_prepend + [str(sample_site.BIN_DIR)],
                "command_env": {"GONOGO_SAMPLE_SITE": str(site.root)},
                "settings": {
                    "backup_root": str(site.backups_dir),
                    "compose_dir": str(site.compose_dir),
                    "postgres_container": "sample-postgres",
                    "db_user": "postgres",
                    "db_name": db_name,
                },
            }
        }
    }
    path.write_text(yaml.safe_dump(document))
    return path


@contextmanager
def gonogo_services(
    tmp_path,
    site,
    *,
    db_name: str | None = None,
    path_prepend: list[str] | None = None,
    backup_retention: int = 5,
) -> Iterator[Services]:
    """Yield handler services on a tmp SQLite database, whose worker runs each deployment."""
    config = load_config(
        backup_only_runbook(tmp_path / "runbook.yml"),
        environments(
            tmp_path / "env.yml",
            site,
            db_name=db_name or site.database,
            path_prepend=path_prepend or [],
            backup_retention=backup_retention,
        ),
    )
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    try:
        yield Services(
            config=config,
            db=db,
            worker=InlineWorker(Runner(db, config, owner="test")),
            directory=StaticDirectory(),
            observer=NoObserver(),
        )
    finally:
        db.dispose()


def deploy_release(services: Services, version: str = "v2.0.0") -> tuple[Deployment, StepRun]:
    """Run ``/deploy`` to production to its end; return the deployment and its backup step."""
    deploy.handle(
        services, Request(user_id="U0RELEASE", channel_id="C0", text=f"{version} production")
    )
    with services.db.session() as session:
        deployment = repository.latest_deployment(session, "production")
        step = repository.steps_of(session, deployment.id)[0]
    return deployment, step


def run_backup(tmp_path, site, *, db_name: str, path_prepend: list[str] | None = None):
    with gonogo_services(tmp_path, site, db_name=db_name, path_prepend=path_prepend) as services:
        return deploy_release(services)


def recorded_backup(services: Services, deployment_id: int) -> Backup | None:
    with services.db.session() as session:
        return repository.backup_of(session, deployment_id)


def list_backups(services: Services, user: str = "U0RELEASE", text: str = "production") -> Reply:
    request = Request(user_id=user, channel_id="C0", text=text, command="/backups")
    return backups_command.handle(services, request)


def truncating_pg_dump(directory: Path, keep_bytes: int) -> Path:
    """Write a pg_dump that runs the real one and passes on only its first ``keep_bytes``."""
    real = shutil.which("pg_dump")
    assert real is not None, "pg_dump is not installed; bash tests/run installs it"
    directory.mkdir()
    shim = directory / "pg_dump"
    shim.write_text(f'#!/bin/sh\n"{real}" "$@" | head -c {keep_bytes}\n')
    shim.chmod(0o755)
    return directory


def entry_blocks(reply: Reply) -> list[str]:
    """Return the text of each listed backup's section, skipping the heading and the note."""
    return [block["text"]["text"] for block in reply.blocks[2:] if block["type"] == "section"]


def test_backup_writes_dump(tmp_path, site):
    deployment, step = run_backup(tmp_path, site, db_name=site.database)
    dump = site.backups_dir / deployment.variables["backup_location"].rsplit("/", 1)[-1]

    assert step.status == StepStatus.PASSED
    assert deployment.variables["backup_location"] == deployment.variables["backup_dir"]
    assert (dump / "db_backup.sql").stat().st_size > 0
    assert (dump / "row_count.txt").read_text().strip() == "3"
    assert (dump / "docker-compose.yml").exists()


def test_failing_dump_halts(tmp_path, site):
    deployment, step = run_backup(tmp_path, site, db_name="no_such_database")

    assert deployment.status == DeploymentStatus.FAILED
    assert step.status == StepStatus.FAILED
    assert step.exit_code != 0
    assert "no_such_database" in step.output_tail


def test_empty_dump_halts(tmp_path, site):
    # A pg_dump that succeeds without writing anything, ahead of the real one on PATH.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "pg_dump").write_text("#!/bin/sh\nexit 0\n")
    (shim / "pg_dump").chmod(0o755)
    with gonogo_services(tmp_path, site, path_prepend=[str(shim)]) as services:
        deployment, step = deploy_release(services)
        backup = recorded_backup(services, deployment.id)

    assert deployment.status == DeploymentStatus.FAILED
    assert step.exit_code == 1
    assert "The database dump is empty." in step.output_tail
    assert backup is None


def test_backup_recorded_with_checksum(tmp_path, site):
    with gonogo_services(tmp_path, site) as services:
        deployment, step = deploy_release(services)
        backup = recorded_backup(services, deployment.id)
    dump = (Path(backup.location) / backup.dump).read_bytes()

    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert backup.location == deployment.variables["backup_dir"]
    assert backup.host == "local"
    assert backup.dump == "db_backup.sql"
    assert backup.size_bytes == len(dump)
    assert backup.sha256 == hashlib.sha256(dump).hexdigest()
    assert backup.row_count == 3
    assert backup.verified_at is not None
    assert backup.verification == "restored into a scratch database by the restore check"
    assert backup.removed_at is None
    assert f"SHA-256 {backup.sha256}" in step.output_tail
    assert "Restored into a scratch database: 3 approval rows" in step.output_tail
    assert "Rows a full rollback must find: 3" in step.output_tail


def test_truncated_dump_rejected(tmp_path, site):
    shim = truncating_pg_dump(tmp_path / "shim", keep_bytes=1000)
    with gonogo_services(tmp_path, site, path_prepend=[str(shim)]) as services:
        deployment, step = deploy_release(services)
        backup = recorded_backup(services, deployment.id)
        listing = list_backups(services)

    assert deployment.status == DeploymentStatus.FAILED
    assert step.status == StepStatus.FAILED
    assert f"the backup at {backup.location} does not restore" in deployment.error
    assert "it is truncated" in step.output_tail
    assert backup.size_bytes == 1000
    assert backup.verified_at is None
    assert backup.verification.startswith("the restore check failed")
    assert Path(backup.location).is_dir()  # kept for a person to look at
    assert "Did not restore cleanly" in entry_blocks(listing)[0]


def test_retention_removes_oldest(tmp_path, site):
    with gonogo_services(tmp_path, site, backup_retention=2) as services:
        releases = [deploy_release(services, f"v2.0.{n}") for n in range(3)]
        records = [recorded_backup(services, deployment.id) for deployment, _ in releases]
    oldest, middle, newest = records
    last_step = releases[-1][1]

    assert [d.status for d, _ in releases] == [DeploymentStatus.SUCCEEDED] * 3
    assert sorted(site.backups_dir.iterdir()) == [Path(middle.location), Path(newest.location)]
    assert not Path(oldest.location).exists()
    assert oldest.removed_at is not None
    assert middle.removed_at is None
    assert newest.removed_at is None
    assert f"keeping the newest 2: {oldest.location}" in last_step.output_tail


def test_remove_stays_under_backup_root(tmp_path):
    root = tmp_path / "backups"
    inside = root / "backup-20240501-120000-d7"
    outside = tmp_path / "elsewhere" / "backup-20240501-120000-d7"
    unnamed = root / "keep-me"
    for folder in (inside, outside, unnamed):
        folder.mkdir(parents=True)
        (folder / "db_backup.sql").write_text("-- dump\n")
    environment = Environment(
        channel="C0", hosts={"app": ["local"]}, settings={"backup_root": f"{root}/"}
    )
    escaping = f"{inside}/../../elsewhere/backup-20240501-120000-d7"

    assert backups.removable(environment, str(inside)) is True
    assert backups.removable(environment, str(outside)) is False
    assert backups.removable(environment, str(unnamed)) is False
    assert backups.removable(environment, str(root)) is False
    assert backups.removable(environment, escaping) is False
    assert "not a backup folder under backup_root" in backups.remove(
        environment, "local", str(outside)
    )
    assert backups.remove(environment, "local", escaping) is not None
    assert backups.remove(environment, "local", str(unnamed)) is not None
    assert (outside / "db_backup.sql").exists()
    assert (unnamed / "db_backup.sql").exists()
    assert backups.remove(environment, "local", str(inside)) is None
    assert not inside.exists()


def test_removable_without_backup_root(tmp_path):
    environment = Environment(channel="C0", hosts={"app": ["local"]})

    assert backups.removable(environment, str(tmp_path / "backup-20240501-120000-d7")) is False


def test_backups_lists_recorded(tmp_path, site):
    with gonogo_services(tmp_path, site, backup_retention=2) as services:
        releases = [deploy_release(services, f"v2.0.{n}") for n in range(3)]
        records = [recorded_backup(services, deployment.id) for deployment, _ in releases]
        reply = list_backups(services)
        by_channel = list_backups(services, text="")
    entries = entry_blocks(reply)

    assert reply.blocks[0]["text"]["text"] == "Backups of production, newest first"
    assert "keeps the newest 2 verified backups" in reply.blocks[1]["text"]["text"]
    assert len(entries) == 3
    versions = ["v2.0.2", "v2.0.1", "v2.0.0"]
    for entry, record, version in zip(entries, reversed(records), versions, strict=True):
        assert f"*Deployment #{record.deployment_id}* · `{version}`" in entry
        assert backups.describe(record.size_bytes) in entry
        assert f"SHA-256 `{record.sha256[:12]}`" in entry
        assert "3 rows" in entry
    assert "Verified on" in entries[0]
    assert "Verified on" in entries[1]
    assert "Removed by the retention count" in entries[2]
    assert "Removed by" not in entries[1]
    assert "Deployment #1" in reply.text
    assert by_channel.blocks is None  # C0 is no environment's channel


def test_backups_from_channel(tmp_path, site):
    with gonogo_services(tmp_path, site) as services:
        deployment, _ = deploy_release(services)
        request = Request(user_id="U0ONCALL", channel_id="C0PRODUCTION", command="/backups")
        reply = backups_command.handle(services, request)

    assert f"*Deployment #{deployment.id}*" in entry_blocks(reply)[0]


def test_backups_roles(tmp_path, site):
    with gonogo_services(tmp_path, site) as services:
        stranger = list_backups(services, user="U0STRANGER")
        approver = list_backups(services, user="U0APPROVER")
        on_call = list_backups(services, user="U0ONCALL")

    assert "You need the deployer, approver or on-call engineer role" in stranger.text
    assert stranger.blocks is None
    assert "has no recorded backups" in approver.text
    assert "has no recorded backups" in on_call.text


def test_backups_none_recorded(tmp_path, site):
    with gonogo_services(tmp_path, site) as services:
        reply = list_backups(services)

    assert reply.text.startswith("`production` has no recorded backups.")
    assert "`/backup production`" in reply.text
    assert "`/deploy <version> production`" in reply.text
    assert reply.blocks is None


def test_backups_within_slack_limits(tmp_path, site):
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with gonogo_services(tmp_path, site) as services:
        with services.db.session() as session:
            for number in range(60):
                store_backup(session, start + timedelta(hours=number), number)
            session.commit()
        reply = list_backups(services)
    sections = [block["text"]["text"] for block in reply.blocks if block["type"] == "section"]

    assert len(reply.blocks) <= 50
    assert len(reply.blocks[0]["text"]["text"]) <= 150
    assert max(len(text) for text in sections) <= 3000
    assert len(reply.text) <= 3900
    assert len(entry_blocks(reply)) == backups_command.MAX_LISTED
    assert "*Deployment #60*" in entry_blocks(reply)[0]
    assert "Only the newest 45 backups are listed" in reply.blocks[-1]["elements"][0]["text"]
    assert "This text lists only the newest" in reply.text


def store_backup(session, taken_at: datetime, number: int) -> None:
    """Store a finished deployment and a verified backup of it, as a long history would."""
    deployment = Deployment(
        runbook="backup-only",
        environment="production",
        version=f"v1.{number}.0",
        status=DeploymentStatus.SUCCEEDED,
        requested_by="U0RELEASE",
        request_channel="C0",
        channel="C0PRODUCTION",
        created_at=taken_at,
        updated_at=taken_at,
    )
    session.add(deployment)
    session.flush()
    location = f"/var/backups/gonogo/backup-{taken_at:%Y%m%d-%H%M%S}-d{deployment.id}"
    repository.save_backup(
        session,
        Backup(
            deployment_id=deployment.id,
            environment="production",
            host="app-1.example.internal",
            location=location,
            dump="db_backup.sql",
            size_bytes=123_456_789 + number,
            sha256=hashlib.sha256(str(number).encode()).hexdigest(),
            row_count=1000 + number,
            taken_at=taken_at,
            verified_at=taken_at + timedelta(minutes=5),
            verification="restored into a scratch database by the restore check",
        ),
    )
