"""Tests of loading the runbook and environments files and of the problems they report.

Every problem must name the file, the line and the dotted key, so the small files below are
written as text and each test finds the expected line by the text on it.
"""

import textwrap
from pathlib import Path

import pytest

from engine.config import MAX_PHASES, load_config
from engine.yamlfile import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_RUNBOOK = ROOT / "runbooks" / "vvb-v11.yml"
SHIPPED_ENVIRONMENTS = ROOT / "config" / "environments.yml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GONOGO_HOME", "GONOGO_SAMPLE_PORT", "GONOGO_TEST_PORT", "GONOGO_TEST_UNSET"):
        monkeypatch.delenv(name, raising=False)


# --- files that load -------------------------------------------------------------------------


def test_shipped_files_load():
    config = load_config(SHIPPED_RUNBOOK, SHIPPED_ENVIRONMENTS)

    assert config.runbook.name == "vvb-v11"
    assert set(config.environments) == {"staging", "production", "local"}
    assert len(config.runbook.phases) == 11


def test_shipped_environments_expand_defaults():
    config = load_config(SHIPPED_RUNBOOK, SHIPPED_ENVIRONMENTS)
    settings = config.environments["local"].settings

    assert settings["compose_dir"] == ".gonogo/local-site/compose"
    assert settings["health_url"] == "http://127.0.0.1:28461/q/health"


def test_shipped_environments_read_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GONOGO_HOME", "/srv/gonogo")
    monkeypatch.setenv("GONOGO_SAMPLE_PORT", "28080")

    config = load_config(SHIPPED_RUNBOOK, SHIPPED_ENVIRONMENTS)
    settings = config.environments["local"].settings

    assert settings["compose_dir"] == "/srv/gonogo/local-site/compose"
    assert settings["health_url"] == "http://127.0.0.1:28080/q/health"


def test_minimal_files_load(tmp_path: Path):
    config = load_config(*write_pair(tmp_path))

    assert [step.id for _, step in config.runbook.steps()] == ["hello", "health", "go", "tell"]
    assert config.environments["dev"].settings["health_url"] == "http://127.0.0.1:8080/health"


def test_variable_replaces_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GONOGO_TEST_PORT", "9090")

    config = load_config(*write_pair(tmp_path))

    assert config.environments["dev"].settings["health_url"] == "http://127.0.0.1:9090/health"


# --- problems found while reading YAML -------------------------------------------------------


def test_invalid_yaml(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "title: Checks\n", "title: [Checks\n")
    )

    error = load_failing(runbook, environments)

    assert str(error).startswith(f"{runbook}:")
    assert "is not valid YAML" in str(error)


def test_duplicate_key(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK, "title: Say hello\n", "title: Say hello\n        title: Say hello again\n"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "title: Say hello again")
    assert f"{runbook}:{line}: phases[0].steps[0].title:" in str(error)
    assert "duplicate key" in str(error)
    assert len(error.problems) == 1


def test_boolean_key_asks_for_quotes(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "title: Say hello\n", "title: Say hello\n        on: fail\n"),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "on: fail")
    assert f"{runbook}:{line}: phases[0].steps[0]:" in str(error)
    assert "quote it" in str(error)
    assert "'on'" in str(error)


# --- problems found by the schema ------------------------------------------------------------


def test_unknown_step_key(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "title: Say hello\n", "title: Say hello\n        retries: 3\n"),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "retries: 3")
    assert f"{runbook}:{line}: phases[0].steps[0].retries:" in str(error)
    assert "unknown key" in str(error)
    assert len(error.problems) == 1


def test_wrong_type(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "attempts: 3", 'attempts: "many"')
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "attempts:")
    assert f"{runbook}:{line}: phases[0].steps[1].probe.attempts:" in str(error)
    assert "'many'" in str(error)
    assert len(error.problems) == 1


def test_two_kinds(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "{{ greeting }}\n", "{{ greeting }}\n        manual: {}\n"),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "- id: hello")
    assert f"{runbook}:{line}: phases[0].steps[0]:" in str(error)
    assert "exactly one of" in str(error)
    assert "'run', 'manual'" in str(error)


def test_no_kind(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "        notify:\n          to: [operations]\n          text: Released {{ version }}"
            " to {{ environment }}\n",
            "",
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "- id: tell")
    assert f"{runbook}:{line}: phases[0].steps[3]:" in str(error)
    assert "found none" in str(error)


def test_invalid_version_pattern(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK, "title: Mini release\n", "title: Mini release\nversion_pattern: '^v(\\d+$'\n"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "version_pattern:")
    assert f"{runbook}:{line}: version_pattern:" in str(error)
    assert "not a valid regex" in str(error)


def test_duplicate_step_ids(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "- id: tell", "- id: hello  # again")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "# again")
    assert f"{runbook}:{line}: phases[0].steps[3].id:" in str(error)
    assert "'hello' is used twice" in str(error)


def test_log_names_unknown_step(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=RUNBOOK + "deployment_log:\n  docker_pull: pull-image\n"
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "docker_pull:")
    assert f"{runbook}:{line}: deployment_log.docker_pull:" in str(error)
    assert "'pull-image'" in str(error)


def test_too_many_phases(tmp_path: Path):
    phases = "".join(
        f"  - id: phase-{index}\n    title: Phase {index}\n    steps:\n"
        f"      - id: check-{index}\n        title: Check {index}\n        manual: {{}}\n"
        for index in range(MAX_PHASES + 1)
    )
    runbook, environments = write_pair(
        tmp_path, runbook=f"name: long\ntitle: Long release\nphases:\n{phases}"
    )

    error = load_failing(runbook, environments)

    assert f"{runbook}:3: phases:" in str(error)
    assert f"at most {MAX_PHASES} items" in str(error)


def test_unset_variable(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS,
            "      farewell: bye\n",
            "      farewell: bye\n      token_file: ${GONOGO_TEST_UNSET}/token\n",
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "token_file:")
    assert f"{environments}:{line}: environments.dev.settings.token_file:" in str(error)
    assert "GONOGO_TEST_UNSET is not set" in str(error)
    assert len(error.problems) == 1


# --- problems found by checking the files against each other ---------------------------------


def test_placeholder_typo(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "{{ greeting }}", "{{ greetng }}")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "command: echo")
    key = "phases[0].steps[0].run.command (step hello)"
    assert f"{runbook}:{line}: {key}:" in str(error)
    assert "{{ greetng }} names no setting" in str(error)
    assert "in environment 'dev'" in str(error)
    assert "in environment 'qa'" in str(error)
    assert len(error.problems) == 2


def test_placeholder_missing_in_one_environment(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "{{ greeting }}", "{{ farewell }}")
    )

    error = load_failing(runbook, environments)

    assert len(error.problems) == 1
    assert "{{ farewell }}" in str(error)
    assert "in environment 'qa'" in str(error)


def test_capture_used_before_its_step(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "{{ greeting }}", "{{ running_version }}")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "command: echo")
    assert f"{runbook}:{line}: phases[0].steps[0].run.command (step hello):" in str(error)
    assert "{{ running_version }} names no setting" in str(error)


def test_requires_undefined_setting(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "title: Service is healthy\n",
            "title: Service is healthy\n        requires: [grafana_url]\n",
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "requires:")
    assert f"{runbook}:{line}: phases[0].steps[1].requires (step health):" in str(error)
    assert "setting 'grafana_url' is not defined in environment 'dev'" in str(error)


def test_undefined_host_role(tmp_path: Path):
    runbook, environments = write_pair(tmp_path, runbook=edit(RUNBOOK, "hosts: app", "hosts: db"))

    error = load_failing(runbook, environments)

    line = line_of(runbook, "hosts: db")
    assert f"{runbook}:{line}: phases[0].steps[0].run.hosts (step hello):" in str(error)
    assert "host role 'db' is not defined in environment 'dev'" in str(error)


def test_undefined_notify_channel(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "to: [operations]", "to: [operations, finance]")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "to: [operations, finance]")
    assert f"{runbook}:{line}: phases[0].steps[3].notify.to (step tell):" in str(error)
    assert "notify channel 'finance' is not defined in environment 'dev'" in str(error)


# --- several problems at once ----------------------------------------------------------------


def test_schema_problems_in_one_pass(tmp_path: Path):
    runbook_text = edit(RUNBOOK, "title: Say hello\n", "title: Say hello\n        retries: 3\n")
    runbook_text = edit(runbook_text, "attempts: 3", 'attempts: "many"')
    environments_text = edit(
        ENVIRONMENTS, "      farewell: bye\n", "      token: ${GONOGO_TEST_UNSET}\n"
    )
    runbook, environments = write_pair(
        tmp_path, runbook=runbook_text, environments=environments_text
    )

    error = load_failing(runbook, environments)
    text = str(error)

    assert f"{runbook}:{line_of(runbook, 'retries:')}: phases[0].steps[0].retries:" in text
    assert f"{runbook}:{line_of(runbook, 'attempts:')}: phases[0].steps[1].probe.attempts:" in text
    assert f"{environments}:{line_of(environments, 'token:')}: environments.dev.settings" in text
    assert len(error.problems) == 3


def test_reference_problems_in_one_pass(tmp_path: Path):
    runbook_text = edit(RUNBOOK, "{{ greeting }}", "{{ greetng }}")
    runbook_text = edit(runbook_text, "to: [operations]", "to: [finance]")
    runbook, environments = write_pair(tmp_path, runbook=runbook_text)

    error = load_failing(runbook, environments)
    keys = [problem.path for problem in error.problems]

    assert keys.count("phases[0].steps[0].run.command (step hello)") == 2
    assert keys.count("phases[0].steps[3].notify.to (step tell)") == 2
    assert len(error.problems) == 4


# --- helpers and payloads --------------------------------------------------------------------


def write_pair(
    directory: Path, *, runbook: str | None = None, environments: str | None = None
) -> tuple[Path, Path]:
    """Write a runbook and an environments file; either defaults to the valid one below."""
    runbook_path = directory / "runbook.yml"
    environments_path = directory / "environments.yml"
    runbook_path.write_text(RUNBOOK if runbook is None else runbook, encoding="utf-8")
    environments_path.write_text(
        ENVIRONMENTS if environments is None else environments, encoding="utf-8"
    )
    return runbook_path, environments_path


def load_failing(runbook: Path, environments: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(runbook, environments)
    return caught.value


def edit(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old`` in ``text``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(path: Path, fragment: str) -> int:
    """Return the number of the one line of ``path`` that contains ``fragment``."""
    numbers = [
        number
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if fragment in line
    ]
    assert len(numbers) == 1, f"{fragment!r} is on lines {numbers} of {path}"
    return numbers[0]


RUNBOOK = textwrap.dedent(
    """\
    name: mini
    title: Mini release
    phases:
      - id: checks
        title: Checks
        steps:
          - id: hello
            title: Say hello
            run:
              hosts: app
              command: echo {{ version }} {{ greeting }}
          - id: health
            title: Service is healthy
            probe:
              url: '{{ health_url }}'
              attempts: 3
              capture:
                running_version: version
          - id: go
            title: Go or no go
            gate:
              prompt: Roll out {{ version }} over {{ running_version }}?
          - id: tell
            title: Tell operations
            notify:
              to: [operations]
              text: Released {{ version }} to {{ environment }}
    """
)

ENVIRONMENTS = textwrap.dedent(
    """\
    environments:
      dev:
        channel: C0DEV
        notify_channels:
          operations: C0OPS
        roles:
          approvers: [U0APPROVER]
        hosts:
          app: [local]
        settings:
          greeting: hello
          farewell: bye
          health_url: http://127.0.0.1:${GONOGO_TEST_PORT:-8080}/health
      qa:
        channel: C0QA
        notify_channels:
          operations: C0OPS
        roles:
          approvers: ['@qa-approvers']
        hosts:
          app: [local]
        settings:
          greeting: hello
          health_url: http://127.0.0.1:8081/health
    """
)
