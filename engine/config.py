"""The runbook and environments files: their schema, and strict loading of both.

A runbook is a list of phases, each a list of steps. One key decides a step's kind: ``run``
(a shell command on a host role), ``probe`` (an HTTP request), ``manual`` (a check a person
ticks), ``notify`` (a message to stakeholder channels), ``wait`` or ``gate`` (an approver's
go). Text in a step may name values as ``{{ name }}``: a built-in variable, an environment
setting, ``secrets.NAME`` or a value captured by an earlier step. Every name is checked
against every environment when the files are loaded, so a typo fails at start-up, not in the
middle of a release.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.yamlfile import ConfigError, ConfigProblem, Location, YamlDocument, dotted, load_yaml

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}")
SLUG = r"^[a-z0-9][a-z0-9-]*$"
COMMAND = r"^/[a-z][a-z0-9-]{0,30}$"
# Commands gonogo defines itself, which no phase may take.
RESERVED_COMMANDS = frozenset({"/deploy", "/deploy-status", "/deploy-log"})

# Variables the engine sets for every deployment; see engine.runner.deployment_variables.
BUILTIN_VARIABLES = frozenset(
    {"version", "environment", "deployment_id", "requested_by", "runbook", "deadline_7d"}
)
# backup_dir is derived from the backup_root setting, so it exists only where that does.
BACKUP_DIR, BACKUP_ROOT = "backup_dir", "backup_root"
STEP_KINDS = ("run", "probe", "manual", "notify", "wait", "gate", "signoff")
REJECTED_SLOT = "rejected"  # the slot a rejection of the final sign-off is stored under
# The slots of a final sign-off: (slot, label, role whose members may sign it).
SIGNOFF_SLOTS = (
    ("deployed_by", "Deployed by", "deployers"),
    ("validated_by", "Validated by", "validators"),
    ("authorized_by", "Authorized by", "approvers"),
)
MAX_PHASES = 40

Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- runbook ---------------------------------------------------------------------------------


class RunSpec(Strict):
    """A shell command run on every host of a role, in order, stopping at the first failure."""

    hosts: StrictStr  # host role of the environment
    command: StrictStr
    timeout: Seconds = 300.0  # wall-clock seconds for the whole command on one host
    capture: dict[StrictStr, StrictStr] = {}  # variable name -> regex with one group, on stdout


class ProbeSpec(Strict):
    """An HTTP request repeated until it meets its expectations or runs out of attempts."""

    url: StrictStr
    method: Literal["GET", "POST", "HEAD"] = "GET"
    headers: dict[StrictStr, StrictStr] = {}
    json_body: Any = Field(default=None, alias="json")
    expect_status: list[int] = []  # empty means any 2xx
    expect_json: dict[StrictStr, Any] = {}  # dotted path -> expected value
    attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    interval: Seconds = 5.0  # seconds between attempts
    initial_delay: Annotated[float, Field(ge=0, le=3600)] = 0.0
    timeout: Seconds = 10.0  # seconds for one request
    capture: dict[StrictStr, StrictStr] = {}  # variable name -> dotted path in the JSON reply


class ManualSpec(Strict):
    """A check that a person with ``role`` ticks in the checklist."""

    items: list[StrictStr] = []
    role: Literal["deployers", "approvers"] = "deployers"


class NotifySpec(Strict):
    """A message to named channels of the environment."""

    to: list[StrictStr]
    text: StrictStr


class WaitSpec(Strict):
    seconds: Seconds


class GateSpec(Strict):
    """A go/no-go decision; pressed by one person with ``role`` other than the requester."""

    role: Literal["approvers"] = "approvers"
    allow_self: bool = False
    prompt: StrictStr = ""


class SignoffSpec(Strict):
    """The final checklist, signed by a deployer, a validator and an approver."""

    items: list[StrictStr] = []


class Step(Strict):
    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: Annotated[StrictStr, Field(min_length=1, max_length=120)]
    requires: list[StrictStr] = []  # settings without which the step becomes a manual check
    run: RunSpec | None = None
    probe: ProbeSpec | None = None
    manual: ManualSpec | None = None
    notify: NotifySpec | None = None
    wait: WaitSpec | None = None
    gate: GateSpec | None = None
    signoff: SignoffSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a step needs exactly one of {', '.join(STEP_KINDS)}; found {kinds or 'none'}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> BaseModel:
        return getattr(self, self.kind)


class Phase(Strict):
    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: Annotated[StrictStr, Field(min_length=1, max_length=80)]
    # The slash command that runs this phase on its own; neighbouring phases may share one.
    command: Annotated[StrictStr, Field(pattern=COMMAND)] | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


class Window(Strict):
    """Checks due in a span of minutes after the rollout finished."""

    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: StrictStr
    from_minute: Annotated[int, Field(ge=0)]
    to_minute: Annotated[int, Field(gt=0)] | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


class RollbackProcedure(Strict):
    title: StrictStr
    within_minutes: Annotated[int, Field(gt=0)] | None = None  # offered only this long after
    steps: Annotated[list[Step], Field(min_length=1)]


class Rollback(Strict):
    quick: RollbackProcedure
    full: RollbackProcedure
    verify: RollbackProcedure


class SuccessCriteria(Strict):
    must_have: list[StrictStr] = []
    should_have: list[StrictStr] = []
    nice_to_have: list[StrictStr] = []


class Decision(Strict):
    condition: StrictStr
    action: StrictStr


class DeploymentLogFields(Strict):
    """The steps whose results fill the fields of the deployment log."""

    target_role: StrictStr | None = None
    health_checks: list[StrictStr] = []
    docker_pull: StrictStr | None = None
    services_up: StrictStr | None = None
    health_verified: StrictStr | None = None
    validation: dict[StrictStr, StrictStr] = {}

    def step_ids(self) -> list[str]:
        return [step_id for _, step_id in self.step_references()]

    def step_references(self) -> list[tuple[Location, str]]:
        """Return (key below deployment_log, step id) for every step this section names."""
        references: list[tuple[Location, str]] = [
            (("health_checks", index), step_id) for index, step_id in enumerate(self.health_checks)
        ]
        for name in ("docker_pull", "services_up", "health_verified"):
            if getattr(self, name):
                references.append(((name,), getattr(self, name)))
        references += [
            (("validation", label), step_id) for label, step_id in self.validation.items()
        ]
        return references


class Runbook(Strict):
    name: Annotated[StrictStr, Field(pattern=SLUG)]
    title: StrictStr
    version_pattern: StrictStr = r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$"
    # The checklist message draws one block per phase and up to 6 others, within Slack's 50.
    phases: Annotated[list[Phase], Field(min_length=1, max_length=MAX_PHASES)]
    post_deployment: list[Window] = []
    rollback: Rollback | None = None
    success_criteria: SuccessCriteria = SuccessCriteria()
    contacts: list[StrictStr] = []  # roles whose contact every environment fills in
    escalation: list[StrictStr] = []
    decision_matrix: list[Decision] = []
    deployment_log: DeploymentLogFields = DeploymentLogFields()

    @field_validator("version_pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"is not a valid regex: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _unique_ids(self) -> Runbook:
        seen: set[str] = set()
        for phase_index, phase in enumerate(self.phases):
            for step_index, step in enumerate(phase.steps):
                if step.id in seen:
                    raise _located_error(
                        ("phases", phase_index, "steps", step_index, "id"),
                        f"step id {step.id!r} is used twice; step ids must be unique",
                    )
                seen.add(step.id)
        previous = None
        taken: set[str] = set()
        for phase_index, phase in enumerate(self.phases):
            command = phase.command
            if command in RESERVED_COMMANDS:
                raise _located_error(
                    ("phases", phase_index, "command"),
                    f"{command} is one of gonogo's own commands; choose another name",
                )
            if command and command in taken and command != previous:
                raise _located_error(
                    ("phases", phase_index, "command"),
                    f"{command} already runs an earlier phase; only neighbours may share it",
                )
            if command:
                taken.add(command)
            previous = command
        for location, step_id in self.deployment_log.step_references():
            if step_id not in seen:
                raise _located_error(
                    ("deployment_log", *location),
                    f"deployment_log names step {step_id!r}, which no phase has",
                )
        return self

    def step(self, step_id: str) -> Step:
        for _, step in self.steps():
            if step.id == step_id:
                return step
        raise KeyError(f"step {step_id} is not in runbook {self.name}")

    def steps(self) -> list[tuple[Phase, Step]]:
        return [(phase, step) for phase in self.phases for step in phase.steps]

    def phase_commands(self) -> dict[str, list[Phase]]:
        """Return each phase command with the phases it runs, in runbook order."""
        commands: dict[str, list[Phase]] = {}
        for phase in self.phases:
            if phase.command:
                commands.setdefault(phase.command, []).append(phase)
        return commands

    def step_groups(self) -> list[tuple[tuple, list[Step]]]:
        """Return every list of steps with its location in the file, phases first."""
        groups: list[tuple[tuple, list[Step]]] = [
            (("phases", index, "steps"), phase.steps) for index, phase in enumerate(self.phases)
        ]
        groups += [
            (("post_deployment", index, "steps"), window.steps)
            for index, window in enumerate(self.post_deployment)
        ]
        if self.rollback:
            for name in ("quick", "full", "verify"):
                groups.append((("rollback", name, "steps"), getattr(self.rollback, name).steps))
        return groups


# --- environments ----------------------------------------------------------------------------


class SshSettings(Strict):
    user: StrictStr
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key_file: StrictStr
    known_hosts: StrictStr
    connect_timeout: Seconds = 10.0


class Roles(Strict):
    """Slack user IDs (``U…``) or user-group handles (``@handle``)."""

    deployers: list[StrictStr] = []
    approvers: list[StrictStr] = []
    validators: list[StrictStr] = []


class Environment(Strict):
    name: StrictStr = ""
    description: StrictStr = ""
    channel: StrictStr  # Slack channel ID of the checklist message
    notify_channels: dict[StrictStr, StrictStr] = {}
    roles: Roles = Roles()
    require_approval: bool = True
    separate_authorizer: bool = True  # the final sign-off's authorizer may not be its deployer
    signoff_reminder_minutes: Annotated[int, Field(ge=1, le=1440)] = 30
    ssh: SshSettings | None = None
    hosts: dict[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]]
    path_prepend: list[StrictStr] = []  # directories put in front of PATH for every command
    command_env: dict[StrictStr, StrictStr] = {}
    settings: dict[StrictStr, StrictStr | int | float | bool | None] = {}
    secrets: dict[StrictStr, StrictStr] = {}  # secret name -> environment variable holding it
    contacts: dict[StrictStr, StrictStr] = {}

    @model_validator(mode="after")
    def _ssh_when_remote(self) -> Environment:
        remote = [host for hosts in self.hosts.values() for host in hosts if host != "local"]
        if remote and self.ssh is None:
            raise ValueError(f"hosts {remote} are reached over SSH, so an ssh section is required")
        return self

    def host_roles(self) -> set[str]:
        return set(self.hosts)


class EnvironmentsFile(Strict):
    environments: dict[Annotated[str, Field(pattern=SLUG)], Environment]


class Config(BaseModel):
    """The runbook and the environments it may run in, checked against each other."""

    model_config = ConfigDict(frozen=True)

    runbook: Runbook
    environments: dict[str, Environment]
    runbook_file: str
    environments_file: str


# --- loading ---------------------------------------------------------------------------------


def load_config(runbook_path: Path, environments_path: Path) -> Config:
    """Load both files and check them; raise ConfigError listing every problem found."""
    runbook_doc = load_yaml(runbook_path)
    environments_doc = load_yaml(environments_path)
    problems: list[ConfigProblem] = []
    runbook = _validate(Runbook, runbook_doc, problems)
    _expand_env_references(environments_doc, problems)
    environments_file = _validate(EnvironmentsFile, environments_doc, problems)
    if problems:
        raise ConfigError(problems)
    environments = {}
    base = environments_path.resolve().parent
    for name, environment in environments_file.environments.items():
        path_prepend = [str((base / entry).resolve()) for entry in environment.path_prepend]
        environments[name] = environment.model_copy(
            update={"name": name, "path_prepend": path_prepend}
        )
    for name, environment in environments.items():
        _check_references(runbook, runbook_doc, name, environment, problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        runbook=runbook,
        environments=environments,
        runbook_file=str(runbook_path),
        environments_file=str(environments_path),
    )


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def step_texts(step: Step) -> list[tuple[str, str]]:
    """Return (field, text) for every text of ``step`` that may hold placeholders."""
    spec = step.spec
    texts: list[tuple[str, str]] = []
    if isinstance(spec, RunSpec):
        texts.append(("run.command", spec.command))
    elif isinstance(spec, ProbeSpec):
        texts.append(("probe.url", spec.url))
        texts += [(f"probe.headers.{key}", value) for key, value in spec.headers.items()]
        texts += [(f"probe.json.{path}", text) for path, text in _strings(spec.json_body, "")]
        texts += [
            (f"probe.expect_json.{key}", value)
            for key, value in spec.expect_json.items()
            if isinstance(value, str)
        ]
    elif isinstance(spec, NotifySpec):
        texts.append(("notify.text", spec.text))
    elif isinstance(spec, GateSpec):
        texts.append(("gate.prompt", spec.prompt))
    elif isinstance(spec, ManualSpec | SignoffSpec):
        texts += [(f"{step.kind}.items[{index}]", item) for index, item in enumerate(spec.items)]
    return texts


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _strings(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [pair for i, item in enumerate(value) for pair in _strings(item, f"{path}[{i}]")]
    return []


def _validate(model: type[BaseModel], document: YamlDocument, problems: list[ConfigProblem]):
    try:
        return model.model_validate(document.data)
    except ValidationError as error:
        for detail in error.errors():
            location = _document_location(detail["loc"])
            location += tuple(detail.get("ctx", {}).get("location", ()))
            problems.append(
                ConfigProblem(
                    document.file,
                    document.line_of(location),
                    dotted(location),
                    _describe(detail),
                )
            )
        return None


def _located_error(location: Location, message: str) -> PydanticCustomError:
    """Build a model validator's error that _validate reports at ``location`` inside the model."""
    return PydanticCustomError("located", "{message}", {"message": message, "location": location})


def _document_location(loc: tuple) -> Location:
    # pydantic adds the name of the union member or model it tried; keep only document keys.
    return tuple(part for part in loc if not (isinstance(part, str) and "[" in part))


def _describe(detail: dict) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        return "unknown key; check its spelling against the documented keys"
    if kind == "missing":
        return "required key is missing"
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in detail and kind not in ("model_type", "dict_type", "list_type", "located"):
        shown = repr(detail["input"])
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


def _expand_env_references(document: YamlDocument, problems: list[ConfigProblem]) -> None:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in string values from os.environ."""

    def expand(value: Any, location: Location) -> Any:
        if isinstance(value, dict):
            return {key: expand(item, location + (key,)) for key, item in value.items()}
        if isinstance(value, list):
            return [expand(item, location + (index,)) for index, item in enumerate(value)]
        if not isinstance(value, str):
            return value

        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(
                ConfigProblem(
                    document.file,
                    document.line_of(location),
                    dotted(location),
                    f"environment variable {name} is not set; set it or write ${{{name}:-default}}",
                )
            )
            return ""

        return ENV_REFERENCE.sub(substitute, value)

    document.data = expand(document.data, ())


def _check_references(
    runbook: Runbook,
    runbook_doc: YamlDocument,
    environment_name: str,
    environment: Environment,
    problems: list[ConfigProblem],
) -> None:
    known = set(BUILTIN_VARIABLES) | set(environment.settings)
    known |= {f"secrets.{name}" for name in environment.secrets}
    if BACKUP_ROOT in environment.settings:
        known.add(BACKUP_DIR)
    for role in runbook.contacts:
        if role not in environment.contacts:
            problems.append(
                ConfigProblem(
                    runbook_doc.file,
                    runbook_doc.line_of(("contacts",)),
                    "contacts",
                    f"environment {environment_name!r} gives no contact for {role!r}",
                )
            )
    target_role = runbook.deployment_log.target_role
    if target_role and target_role not in environment.hosts:
        problems.append(
            ConfigProblem(
                runbook_doc.file,
                runbook_doc.line_of(("deployment_log", "target_role")),
                "deployment_log.target_role",
                f"host role {target_role!r} is not defined in environment {environment_name!r}",
            )
        )
    for group_location, steps in runbook.step_groups():
        if group_location[0] != "phases":
            # Post-deployment and rollback steps run after the phases, so every capture counts.
            known |= {name for _, step in runbook.steps() for name in _captures(step)}
        for step_index, step in enumerate(steps):
            location: Location = group_location + (step_index,)

            def report(field: str, message: str, location=location, step=step) -> None:
                problems.append(
                    ConfigProblem(
                        runbook_doc.file,
                        runbook_doc.line_of(location + tuple(field.split("."))),
                        f"{dotted(location)}.{field} (step {step.id})",
                        f"{message} in environment {environment_name!r}",
                    )
                )

            for field, text in step_texts(step):
                for name in placeholders(text):
                    if name not in known:
                        report(field, f"{{{{ {name} }}}} names no setting, secret or variable")
            for name in step.requires:
                if name not in environment.settings:
                    report("requires", f"setting {name!r} is not defined")
            if step.run and step.run.hosts not in environment.hosts:
                report("run.hosts", f"host role {step.run.hosts!r} is not defined")
            if step.notify:
                for channel in step.notify.to:
                    if channel not in environment.notify_channels:
                        report("notify.to", f"notify channel {channel!r} is not defined")
            known |= _captures(step)


def _captures(step: Step) -> set[str]:
    if step.run:
        return set(step.run.capture)
    if step.probe:
        return set(step.probe.capture)
    return set()
