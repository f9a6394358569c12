"""Secrets of the configured environments never reach the log output."""

import io
import logging

import pytest

from bot.runtime import mask_secrets_in_logs
from engine.config import Config, Environment, Runbook

SECRET = "s3cr3t-token-value"


@pytest.fixture
def log_stream(monkeypatch):
    monkeypatch.setenv("GONOGO_TEST_SECRET", SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    config = Config(
        runbook=Runbook.model_validate(
            {
                "name": "tiny",
                "title": "Tiny",
                "phases": [
                    {
                        "id": "p",
                        "title": "P",
                        "steps": [{"id": "s", "title": "S", "wait": {"seconds": 1}}],
                    }
                ],
            }
        ),
        environments={
            "production": Environment(
                name="production",
                channel="C0",
                hosts={"app": ["local"]},
                secrets={"token": "GONOGO_TEST_SECRET"},
            )
        },
        runbook_file="runbook.yml",
        environments_file="environments.yml",
    )
    mask_secrets_in_logs(config)
    yield stream
    root.removeHandler(handler)


def test_secret_masked_in_message(log_stream):
    logging.getLogger("gonogo.test").warning("probe sent Bearer %s to %s", SECRET, "host")

    assert SECRET not in log_stream.getvalue()
    assert "probe sent Bearer ******** to host" in log_stream.getvalue()


def test_other_messages_unchanged(log_stream):
    logging.getLogger("gonogo.test").warning("step %s passed", "backup")

    assert log_stream.getvalue() == "step backup passed\n"
