"""Tests of the stricter configuration checks: templates, YAML types, capture regexes,
path_prepend, roles, one-pass reporting, message wording and the version pattern.

The runbook and environments payloads and the helpers come from tests.test_config, so each test
shows only the edit that makes a file invalid.
"""

import subprocess
from pathlib import Path

import pytest

from engine.config import Runbook, load_config, version_matches
from tests.test_config import (
    ENVIRONMENTS,
    RUNBOOK,
    SHIPPED_ENVIRONMENTS,
    SHIPPED_RUNBOOK,
    edit,
    line_of,
    load_failing,
    write_pair,
)

HELLO_COMMAND = "phases[0].steps[0].run.command (step hello)"


# --- placeholders and titles -----------------------------------------------------------------


def test_placeholder_with_hyphen(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "{{ greeting }}", "{{ greet-ing }}")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "command: echo")
    assert f"{runbook}:{line}: {HELLO_COMMAND}:" in str(error)
    assert "'{{ greet-ing }}' is not a valid placeholder" in str(error)
    assert len(error.problems) == 1


def test_placeholder_missing_brace(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "{{ greeting }}", "{{ greeting }")
    )

    error = load_failing(runbook, environments)

    assert f"{HELLO_COMMAND}: '{{{{ greeting }}' is not a valid placeholder" in str(error)
    assert len(error.problems) == 1


def test_stray_closing_braces(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "to {{ environment }}\n", "to {{ environment }} }}\n"),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "text: Released")
    assert f"{runbook}:{line}: phases[0].steps[3].notify.text (step tell):" in str(error)
    assert "'}}' is not a valid placeholder" in str(error)


def test_empty_placeholder(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "over {{ running_version }}", "over {{ }}")
    )

    error = load_failing(runbook, environments)

    assert "phases[0].steps[2].gate.prompt (step go):" in str(error)
    assert "'{{ }}' is not a valid placeholder" in str(error)


def test_single_braces_allowed(tmp_path: Path):
    command = "command: |\n            { echo {{ version }}; echo ${HOME}; } | awk '{ print $1 }'"
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "command: echo {{ version }} {{ greeting }}", command)
    )

    config = load_config(runbook, environments)

    assert config.runbook.step("hello").run.command.startswith("{ echo")


def test_placeholder_in_json_value(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "attempts: 3\n",
            "attempts: 3\n          json:\n            owner: '{{ requested-by }}'\n",
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "owner:")
    assert f"{runbook}:{line}: phases[0].steps[1].probe.json.owner (step health):" in str(error)
    assert "'{{ requested-by }}'" in str(error)


def test_placeholder_in_checklist_item(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=RUNBOOK + REVIEW_STEP,
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "Version {{")
    assert f"{runbook}:{line}: phases[0].steps[4].manual.items[1].text (step review):" in str(error)


def test_brace_advice_is_valid_shell(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK, "echo {{ version }}", "docker ps --format '{{.Names}}' {{ version }}"
        ),
    )

    error = load_failing(runbook, environments)
    example = error.problems[0].message.split("as in ")[1]
    printed = subprocess.run(
        ["bash", "-c", f"printf %s {example}"], capture_output=True, text=True, timeout=30
    )

    assert "'{{.Names}}' is not a valid placeholder" in str(error)
    assert printed.stdout == "{{.Names}}"


def test_braces_split_by_quotes_load(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "echo {{ version }}", "docker ps --format '{''{.Names}''}'"),
    )

    config = load_config(runbook, environments)

    assert "'{''{.Names}''}'" in config.runbook.step("hello").run.command


def test_step_title_placeholder(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "title: Say hello", "title: Say {{ greeting }}")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "title: Say")
    assert f"{runbook}:{line}: phases[0].steps[0].title:" in str(error)
    assert "'{{' is not allowed" in str(error)


def test_phase_title_placeholder(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "title: Checks", "title: Checks for {{ version }}")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "title: Checks")
    assert f"{runbook}:{line}: phases[0].title:" in str(error)
    assert "'{{' is not allowed" in str(error)


# --- YAML types --------------------------------------------------------------------------------


def test_float_setting(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 3.10")
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "farewell:")
    assert f"{environments}:{line}: environments.dev.settings.farewell:" in str(error)
    assert "YAML reads 3.10 as the number 3.1" in str(error)
    assert "quote it: '3.10'" in str(error)
    assert len(error.problems) == 1


def test_boolean_setting(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: no")
    )

    error = load_failing(runbook, environments)

    assert "environments.dev.settings.farewell:" in str(error)
    assert "YAML reads no as the boolean false" in str(error)
    assert "quote it: 'no'" in str(error)
    assert len(error.problems) == 1


def test_date_setting(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 2026-05-01")
    )

    error = load_failing(runbook, environments)

    assert "quote it: '2026-05-01'" in str(error)


def test_octal_setting(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 010")
    )

    error = load_failing(runbook, environments)

    assert "YAML reads 010 as the number 8" in str(error)
    assert "quote it: '010'" in str(error)


def test_integer_and_null_settings_load(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 10\n      grafana_url: null"),
    )

    settings = load_config(runbook, environments).environments["dev"].settings

    assert settings["farewell"] == 10
    assert settings["grafana_url"] is None


def test_quoted_settings_stay_text(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: '3.10'\n      remote: 'no'"),
    )

    settings = load_config(runbook, environments).environments["dev"].settings

    assert settings["farewell"] == "3.10"
    assert settings["remote"] == "no"


def test_float_where_string_required(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK, "title: Mini release\n", "title: Mini release\nversion_pattern: 3.10\n"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "version_pattern:")
    assert f"{runbook}:{line}: version_pattern:" in str(error)
    assert "a string is required here, so quote it: '3.10'" in str(error)


def test_boolean_in_list_of_strings(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "to: [operations]", "to: [operations, off]")
    )

    error = load_failing(runbook, environments)

    assert "phases[0].steps[3].notify.to[1]:" in str(error)
    assert "quote it: 'off'" in str(error)


def test_merge_key(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS, "  qa:\n    channel: C0QA\n", "  qa:\n    <<: {channel: C0QA}\n"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "<<:")
    assert f"{environments}:{line}: environments.qa: merge keys (<<) are not supported" in str(
        error
    )
    assert "keys must be strings" not in str(error)


def test_unsupported_tag(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: !!binary Ynll"),
    )

    error = load_failing(runbook, environments)

    assert "environments.dev.settings.farewell: YAML tag !!binary is not supported" in str(error)


def test_impossible_date(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 2026-02-30")
    )

    error = load_failing(runbook, environments)

    assert "YAML reads 2026-02-30 as a date but cannot convert it, so quote it" in str(error)


def test_number_key_asks_for_quotes(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: bye\n      404: x")
    )

    error = load_failing(runbook, environments)

    assert "environments.dev.settings: keys must be strings" in str(error)
    assert "YAML reads '404' as a number, so quote it" in str(error)


# --- capture regexes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("'^version (\\S+)$'", None),
        ("'^version (?P<value>\\S+) (?:build \\d+)$'", None),
        ("'^version \\S+$'", "has 0 groups but needs exactly one"),
        ("'^(version) (\\S+)$'", "has 2 groups but needs exactly one"),
        ("'^version (\\S+$'", "is not a valid regex"),
    ],
)
def test_capture_regex(tmp_path: Path, pattern: str, expected: str | None):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "{{ greeting }}\n",
            f"{{{{ greeting }}}}\n          capture:\n            printed: {pattern}\n",
        ),
    )

    if expected is None:
        assert load_config(runbook, environments).runbook.step("hello").run.capture
        return
    error = load_failing(runbook, environments)

    line = line_of(runbook, "printed:")
    assert f"{runbook}:{line}: phases[0].steps[0].run.capture.printed: {expected}" in str(error)


# --- path_prepend --------------------------------------------------------------------------------


def test_path_prepend_missing(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "  dev:\n", "  dev:\n    path_prepend: [bin]\n")
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "path_prepend:")
    assert f"{environments}:{line}: environments.dev.path_prepend[0]:" in str(error)
    assert f"'bin' resolves to {tmp_path.resolve() / 'bin'}, which does not exist" in str(error)


def test_path_prepend_file(tmp_path: Path):
    (tmp_path / "bin").write_text("not a directory\n")
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "  dev:\n", "  dev:\n    path_prepend: [bin]\n")
    )

    error = load_failing(runbook, environments)

    assert f"{tmp_path.resolve() / 'bin'}, which is not a directory" in str(error)


def test_path_prepend_directory_loads(tmp_path: Path):
    (tmp_path / "bin").mkdir()
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "  dev:\n", "  dev:\n    path_prepend: [bin]\n")
    )

    config = load_config(runbook, environments)

    assert config.environments["dev"].path_prepend == [str(tmp_path.resolve() / "bin")]


def test_path_prepend_remote_unchecked(tmp_path: Path):
    remote = (
        "  dev:\n    path_prepend: [/opt/tools/bin]\n"
        "    ssh: {user: deploy, key_file: id, known_hosts: known_hosts}\n"
    )
    environments_text = edit(ENVIRONMENTS, "  dev:\n", remote)
    environments_text = edit(
        environments_text,
        "app: [local]\n    settings:\n      greeting: hello\n      farewell",
        "app: [app-1]\n    settings:\n      greeting: hello\n      farewell",
    )
    runbook, environments = write_pair(tmp_path, environments=environments_text)

    config = load_config(runbook, environments)

    assert config.environments["dev"].path_prepend == ["/opt/tools/bin"]


# --- roles -----------------------------------------------------------------------------------


def test_role_without_at(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS, "approvers: [U0APPROVER]", "approvers: [release-approvers]"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "release-approvers")
    assert f"{environments}:{line}: environments.dev.roles.approvers[0]:" in str(error)
    assert "'release-approvers' is neither a Slack user ID" in str(error)
    assert "write '@release-approvers'" in str(error)


@pytest.mark.parametrize("member", ["u0approver", "U0-APPROVER", "@Release Approvers", "@"])
def test_role_member_rejected(tmp_path: Path, member: str):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(ENVIRONMENTS, "approvers: [U0APPROVER]", f"approvers: ['{member}']"),
    )

    error = load_failing(runbook, environments)

    assert f"environments.dev.roles.approvers[0]: {member!r} is neither" in str(error)


def test_role_members_accepted(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS,
            "approvers: [U0APPROVER]",
            "approvers: [U0APPROVER, W012ABC, '@release.approvers_2']",
        ),
    )

    roles = load_config(runbook, environments).environments["dev"].roles

    assert roles.approvers == ["U0APPROVER", "W012ABC", "@release.approvers_2"]


def test_gate_without_approvers(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS, "      approvers: [U0APPROVER]\n", "      deployers: [U0A]\n"
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "deployers: [U0A]") - 1
    assert f"{environments}:{line}: environments.dev.roles.approvers:" in str(error)
    assert "no approvers are listed, but the gate step 'go' needs an approver" in str(error)
    assert len(error.problems) == 1


def test_gate_without_approval_loads(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        environments=edit(
            ENVIRONMENTS,
            "    roles:\n      approvers: [U0APPROVER]\n",
            "    require_approval: false\n",
        ),
    )

    config = load_config(runbook, environments)

    assert config.environments["dev"].roles.approvers == []


def test_signoff_needs_three_roles(tmp_path: Path):
    runbook, environments = write_pair(tmp_path, runbook=RUNBOOK + SIGNOFF_STEP)

    error = load_failing(runbook, environments)
    keys = [problem.path for problem in error.problems]

    assert "environments.dev.roles.deployers" in keys
    assert "environments.dev.roles.validators" in keys
    assert "environments.dev.roles.approvers" not in keys
    assert "the sign-off step 'sign' needs a deployer, a validator and an approver" in str(error)
    assert len(error.problems) == 4


def test_signoff_with_three_roles_loads(tmp_path: Path):
    roles = (
        "      approvers: [U0APPROVER]\n      deployers: [U0DEPLOYER]\n      validators: ['@qa']\n"
    )
    environments_text = edit(ENVIRONMENTS, "      approvers: [U0APPROVER]\n", roles)
    environments_text = edit(environments_text, "      approvers: ['@qa-approvers']\n", roles)
    runbook, environments = write_pair(
        tmp_path, runbook=RUNBOOK + SIGNOFF_STEP, environments=environments_text
    )

    config = load_config(runbook, environments)

    assert config.environments["qa"].roles.validators == ["@qa"]


# --- one pass over both files ----------------------------------------------------------------


def test_runbook_syntax_error_keeps_environment_problems(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "title: Checks\n", "title: [Checks\n"),
        environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: no"),
    )

    error = load_failing(runbook, environments)
    files = [problem.file for problem in error.problems]

    assert "is not valid YAML" in error.problems[0].message
    assert files == [str(runbook), str(environments)]


def test_environments_syntax_error_keeps_runbook_problems(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(RUNBOOK, "{{ greeting }}", "{{ greeting }"),
        environments=edit(ENVIRONMENTS, "    channel: C0DEV\n", "    channel: C0DEV\n\t"),
    )

    error = load_failing(runbook, environments)
    files = [problem.file for problem in error.problems]

    assert files == [str(runbook), str(environments)]
    assert "is not valid YAML" in error.problems[1].message


def test_missing_runbook_keeps_environment_problems(tmp_path: Path):
    _, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: 3.10")
    )

    error = load_failing(tmp_path / "absent.yml", environments)

    assert f"{tmp_path / 'absent.yml'}: cannot be read" in str(error)
    assert f"{environments}:{line_of(environments, 'farewell:')}:" in str(error)
    assert len(error.problems) == 2


# --- messages --------------------------------------------------------------------------------


def test_union_error_is_one_line(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, environments=edit(ENVIRONMENTS, "farewell: bye", "farewell: [bye]")
    )

    error = load_failing(runbook, environments)

    line = line_of(environments, "farewell:")
    assert len(error.problems) == 1
    assert error.problems[0].path == "environments.dev.settings.farewell"
    assert error.problems[0].line == line
    assert error.problems[0].message == "expected a string or an integer (got ['bye'])"


def test_empty_runbook(tmp_path: Path):
    runbook, environments = write_pair(tmp_path, runbook="# nothing yet\n")

    error = load_failing(runbook, environments)

    assert str(error) == (
        f"{runbook}: the file is empty; expected a mapping with keys name, title and phases"
    )


def test_empty_environments(tmp_path: Path):
    runbook, environments = write_pair(tmp_path, environments="")

    error = load_failing(runbook, environments)

    assert (
        str(error) == f"{environments}: the file is empty; expected a mapping with key environments"
    )


def test_step_kind_not_a_mapping(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "run:\n          hosts: app\n          command: echo {{ version }} {{ greeting }}\n",
            "run: echo hello\n",
        ),
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "run: echo hello")
    expected = "expected a mapping with keys hosts and command (got 'echo hello')"
    assert f"{runbook}:{line}: phases[0].steps[0].run: {expected}" in str(error)
    assert "RunSpec" not in str(error)


def test_tab_indentation(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path, runbook=edit(RUNBOOK, "        title: Say hello\n", "\ttitle: Say hello\n")
    )

    error = load_failing(runbook, environments)

    line = line_of(runbook, "\ttitle:")
    assert f"{runbook}:{line}: is not valid YAML" in str(error)
    assert "indent with spaces" in str(error)


# --- version pattern ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["v11.0.0", "v11.0.0-rc.1", "v1.2.3-beta-2.x7", "v2026.12.04", "v1.0.0-" + "a" * 57]
)
def test_default_pattern_accepts(version: str):
    assert version_matches(minimal_runbook(), version)


@pytest.mark.parametrize(
    "version",
    [
        "v١١.٠.٠",
        "v11.0.0-a..b",
        "v11.0.0-",
        "v11.0.0-rc.",
        "v11.0.0+build.5",
        "v11.0.0\n",
        "11.0.0",
        "v1.0.0-" + "a" * 58,
        "v11.0.0-" + "a" * 192,
    ],
)
def test_default_pattern_rejects(version: str):
    assert not version_matches(minimal_runbook(), version)


def test_runbook_pattern_is_authoritative():
    runbook = minimal_runbook(version_pattern=r"^release-\d+$")

    assert version_matches(runbook, "release-7")
    assert not version_matches(runbook, "v11.0.0")


def test_shipped_pattern_matches_ascii_digits():
    runbook = load_config(SHIPPED_RUNBOOK, SHIPPED_ENVIRONMENTS).runbook

    assert version_matches(runbook, "v11.0.0")
    assert version_matches(runbook, "v11.0.0-rc.1")
    assert not version_matches(runbook, "v١١.٠.٠")
    assert not version_matches(runbook, "v11.0.0-a..b")
    assert not version_matches(runbook, "v" + "1" * 200)


def test_pattern_conflicting_with_ascii(tmp_path: Path):
    runbook, environments = write_pair(
        tmp_path,
        runbook=edit(
            RUNBOOK,
            "title: Mini release\n",
            "title: Mini release\nversion_pattern: '(?u)^v\\d+$'\n",
        ),
    )

    error = load_failing(runbook, environments)

    assert "version_pattern: is not a valid regex" in str(error)


# --- helpers and payloads ----------------------------------------------------------------------


def minimal_runbook(**fields: str) -> Runbook:
    step = {"id": "check", "title": "Check", "manual": {}}
    phase = {"id": "release", "title": "Release", "steps": [step]}
    return Runbook.model_validate({"name": "mini", "title": "Mini", "phases": [phase], **fields})


SIGNOFF_STEP = """\
      - id: sign
        title: Sign off
        signoff:
          items: [Release notes sent]
"""

REVIEW_STEP = """\
      - id: review
        title: Review
        manual:
          items:
            - Logs read
            - 'Version {{ version } shown'
"""
