"""The `local` environment's site: the sample service on this machine, for a first run.

The console session calls prepare_local_site before loading the environments file, because
that file reads GONOGO_HOME, GONOGO_SAMPLE_PORT and the test token from the process
environment.
"""

import os
import secrets
import shutil
from pathlib import Path
from typing import TextIO

import psycopg
import redis

from sample import runtime
from sample import site as sample_site
from sample.runtime import SiteError

TOKEN_VARIABLE = "GONOGO_LOCAL_TEST_TOKEN"
DEFAULT_PORT = "28461"  # an unusual port; GONOGO_SAMPLE_PORT picks another


class LocalSiteError(Exception):
    pass


def prepare_local_site(home: Path, out: TextIO) -> sample_site.Site:
    """Lay out the local site under ``home`` the first time, then start the sample service."""
    os.environ["GONOGO_HOME"] = str(home)
    port = int(os.environ.setdefault("GONOGO_SAMPLE_PORT", DEFAULT_PORT))
    root = home / "local-site"
    fresh = not (root / "site.json").exists()
    try:
        if not fresh:
            site = sample_site.load(root)
        else:
            database = os.environ.get("GONOGO_LOCAL_DATABASE", "gonogo_sample")
            server = os.environ.get(
                "GONOGO_SAMPLE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"
            )
            site = sample_site.prepare(
                root,
                database_url=f"{server.rstrip('/')}/{database}",
                redis_url=os.environ.get("GONOGO_SAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                api_port=port,
                token=os.environ.get(TOKEN_VARIABLE) or secrets.token_urlsafe(24),
            )
            print(f"Prepared the sample site in {root}", file=out)
        os.environ["GONOGO_SAMPLE_PORT"] = str(site.api_port)
        if site.token:
            os.environ[TOKEN_VARIABLE] = site.token
        _check_port_free(root, site.api_port)
        sample_site.start(root)
    except LocalSiteError:
        raise
    except (psycopg.Error, redis.RedisError, SiteError, OSError) as error:
        if fresh:
            # A half-prepared site would be loaded as ready next time, so remove it.
            shutil.rmtree(root, ignore_errors=True)
        raise LocalSiteError(
            f"{error}. It needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 "
            "(or GONOGO_SAMPLE_POSTGRES_URL and GONOGO_SAMPLE_REDIS_URL)."
        ) from None
    print(
        f"Sample service running at {site.api_url} (version in {root / 'compose' / '.env'})",
        file=out,
    )
    return site


def _check_port_free(root: Path, port: int) -> None:
    """Refuse a port that another program holds, so probes never reach a stranger."""
    if runtime.service_pid(runtime.load_site(root)) is not None:
        return  # our own service from an earlier session
    if runtime.address_reachable("127.0.0.1", port):
        raise LocalSiteError(
            f"port {port} on 127.0.0.1 is in use by another program. Set GONOGO_SAMPLE_PORT to "
            f"a free port, then delete {root} so the site is prepared again on that port."
        )
