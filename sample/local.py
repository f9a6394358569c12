"""The `local` environment's site: the sample service on this machine, for a first run.

The console session calls prepare_local_site before loading the environments file, because
that file reads GONOGO_HOME, GONOGO_SAMPLE_PORT and the test token from the process
environment.
"""

import os
import secrets
from pathlib import Path
from typing import TextIO

import psycopg
import redis

from sample import site as sample_site
from sample.runtime import SiteError

TOKEN_VARIABLE = "GONOGO_LOCAL_TEST_TOKEN"
DEFAULT_PORT = "18080"


class LocalSiteError(Exception):
    pass


def prepare_local_site(home: Path, out: TextIO) -> sample_site.Site:
    """Lay out the local site under ``home`` the first time, then start the sample service."""
    os.environ["GONOGO_HOME"] = str(home)
    port = int(os.environ.setdefault("GONOGO_SAMPLE_PORT", DEFAULT_PORT))
    root = home / "local-site"
    try:
        if (root / "site.json").exists():
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
        sample_site.start(root)
    except (psycopg.Error, redis.RedisError, SiteError, OSError) as error:
        raise LocalSiteError(
            f"{error}. It needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 "
            "(or GONOGO_SAMPLE_POSTGRES_URL and GONOGO_SAMPLE_REDIS_URL)."
        ) from None
    print(
        f"Sample service running at {site.api_url} (version in {root / 'compose' / '.env'})",
        file=out,
    )
    return site
