"""A release target for tests: the sample site served over a real sshd, and a runbook and an
environment that deploy to it and roll it back without anyone pressing buttons."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from sample import site as sample_site
from tests.support.gonogo_server import PROJECT_DIR, free_port
from tests.support.postgres import scratch_database
from tests.support.sshd import SshServer

SHIPPED_RUNBOOK = PROJECT_DIR / "runbooks" / "vvb-v11.yml"
CHANNEL = "C0PRODUCTION"


@contextmanager
def served_site(directory: Path, database_prefix: str, token: str) -> Iterator[tuple]:
    """Yield (site, sshd): a started sample site on a scratch PostgreSQL database, whose
    commands run through a real sshd on 127.0.0.1 with the docker stand-ins on its PATH."""
    with scratch_database(database_prefix) as database_url:
        site = sample_site.prepare(
            directory / "host",
            database_url=database_url,
            redis_url="redis://127.0.0.1:6379/0",
            api_port=free_port(),
            token=token,
        )
        sample_site.start(site.root)
        set_env = {
            "PATH": f"{sample_site.BIN_DIR}:/usr/local/bin:/usr/bin:/bin",
            "GONOGO_SAMPLE_SITE": str(site.root),
        }
        try:
            with SshServer(directory / "sshd", set_env=set_env) as sshd:
                yield site, sshd
        finally:
            sample_site.stop(site.root)


def cut_down_runbook(path: Path) -> Path:
    """Write the shipped runbook's backup, running version, rollout, API health and rollback.

    Probes retry every 0.25 s instead of every 5 s, so a release or a rollback takes seconds.
    """
    shipped = yaml.safe_load(SHIPPED_RUNBOOK.read_text())
    phases = {phase["id"]: phase for phase in shipped["phases"]}
    steps = {step["id"]: step for phase in shipped["phases"] for step in phase["steps"]}
    steps["api-health"]["probe"].update(attempts=20, interval=0.25)
    for step in shipped["rollback"]["verify"]["steps"]:
        if "probe" in step:
            step["probe"].update(attempts=20, interval=0.25)
    verify, health_check = phases["verify"], phases["health-verification"]
    document = {
        "name": shipped["name"],
        "title": "VVB release, cut down to what a rollback needs",
        "phases": [
            phases["backup"],
            {**verify, "steps": [steps["current-version"]]},
            phases["rollout"],
            {**health_check, "steps": [steps["api-health"]]},
        ],
        "post_deployment": [
            {
                "id": "immediate",
                "title": "Immediate validation",
                "from_minute": 0,
                "steps": [
                    {
                        "id": "immediate-checks",
                        "title": "Service answers",
                        "manual": {"items": ["API responds to requests"]},
                    }
                ],
            }
        ],
        "rollback": shipped["rollback"],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def write_environments(path: Path, site, sshd, roles: dict, token_variable: str) -> Path:
    """Write a `production` environment on the served site, without the go/no-go gate."""
    host = f"{sshd.host}:{sshd.port}"
    document = {
        "environments": {
            "production": {
                "channel": CHANNEL,
                "roles": roles,
                "require_approval": False,  # a full rollback still needs a second approver
                "quick_rollback_minutes": 30,
                "ssh": {
                    "user": sshd.user,
                    "key_file": str(sshd.key_file),
                    "known_hosts": str(sshd.known_hosts),
                },
                "hosts": {"app": [host]},
                "settings": {
                    "compose_dir": str(site.compose_dir),
                    "backup_root": str(site.backups_dir),
                    "api_service": "sample-api",
                    "postgres_container": "sample-postgres",
                    "db_user": "postgres",
                    "db_name": site.database,
                    "health_url": f"{site.api_url}/q/health",
                    "api_url": f"{site.api_url}/api/v11",
                },
                "secrets": {"test_token": token_variable},
            }
        }
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
