"""The runbook's database backup step fails loudly: a failing or empty dump halts the run.

The step runs on this machine against the sample site. `docker exec` is the stand-in for the
docker CLI in sample/bin, so the dump comes from the real pg_dump and PostgreSQL here.
"""

import pytest
import yaml

from commands import deploy
from commands.context import Request, Services
from commands.roles import StaticDirectory
from engine.config import load_config
from engine.runner import Runner
from sample import site as sample_site
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus, StepStatus
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


def environments(path, site, *, db_name: str, path_prepend: list[str]):
    document = {
        "environments": {
            "production": {
                "channel": "C0PRODUCTION",
                "roles": {"deployers": ["U0RELEASE"]},
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


def run_backup(tmp_path, site, *, db_name: str, path_prepend: list[str] | None = None):
    config = load_config(
        backup_only_runbook(tmp_path / "runbook.yml"),
        environments(tmp_path / "env.yml", site, db_name=db_name, path_prepend=path_prepend or []),
    )
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    services = Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
    )
    deploy.handle(services, Request(user_id="U0RELEASE", channel_id="C0", text="v2.0.0 production"))
    with db.session() as session:
        deployment = repository.get_deployment(session, 1)
        step = repository.steps_of(session, 1)[0]
    db.dispose()
    return deployment, step


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
    deployment, step = run_backup(tmp_path, site, db_name=site.database, path_prepend=[str(shim)])

    assert deployment.status == DeploymentStatus.FAILED
    assert step.exit_code == 1
    assert "The database dump is empty." in step.output_tail
