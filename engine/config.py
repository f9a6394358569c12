"""The runbook and environments files: their schema, and strict loading of both.

A runbook is a list of phases, each a list of steps. One key decides a step's kind: ``run``
(a shell command on a host role), ``probe`` (an HTTP request), ``manual`` (a check a person
ticks), ``notify`` (a message to stakeholder channels), ``wait`` or ``gate`` (an approver's
go). Text in a step may name values as ``{{ name }}``: a built-in variable, an environment
setting, ``secrets.NAME`` or a value captured by an earlier step. Every name is checked
against every environment when the files are loaded, so a typo fails at start-up, not in the
middle of a release. Text has no escape for literal ``{{`` or ``}}``: each must be part of a
placeholder, and titles may not contain ``{{`` at all.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.yamlfile import ConfigError, ConfigProblem, Location, YamlDocument, dotted, load_yaml

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
# A "{{" or "}}" left over once the valid placeholders are blanked out with NUL characters,
# with up to 40 characters of the line around it. The context stops at a blanked placeholder.
STRAY_BRACES = re.compile(r"\{\{[^{}\n\0]{0,40}\}{0,2}|[^{}\n\0]{0,40}\}\}")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}")
SLUG = r"^[a-z0-9][a-z0-9-]*$"
# Versions such as v11.0.0 and v11.0.0-rc.1, with ASCII digits and at most 64 characters.
DEFAULT_VERSION_PATTERN = (
    r"^(?=.{1,64}$)v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
# A Slack user ID (U… or W…) or a user-group handle (@release-managers).
ROLE_MEMBER = re.compile(r"[UW][A-Z0-9]+|@[a-z0-9][a-z0-9._-]*")
LOCAL_HOST = "local"  # host entry for this machine, where commands run without SSH
COMMAND = r"^/[a-z][a-z0-9-]{0,30}$"
# Commands gonogo defines itself, which no phase may take.
RESERVED_COMMANDS = frozenset(
    {
        "/deploy",
        "/deploy-status",
        "/deploy-log",
        "/deploy-cancel",
        "/postdeploy",
        "/rollback",
        "/backups",
    }
)

# Variables the engine sets for every deployment; see engine.runner.deployment_variables.
BUILTIN_VARIABLES = frozenset(
    {"version", "environment", "deployment_id", "requested_by", "runbook", "deadline_7d"}
)
# A rollback also knows the backup it restores, from the record gonogo made when it was taken.
ROLLBACK_VARIABLES = frozenset(
    {
        "backup_dump",
        "backup_size",
        "backup_sha256",
        "backup_row_count",
        "backup_deployment_id",
        "backup_taken_at",
        "rolled_back_version",
    }
)
# backup_dir is derived from the backup_root setting, so it exists only where that does.
BACKUP_DIR, BACKUP_ROOT = "backup_dir", "backup_root"
STEP_KINDS = ("run", "probe", "manual", "notify", "wait", "gate", "signoff", "criteria")
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


# --- checks of single values -----------------------------------------------------------------


def _reject_placeholders(title: str) -> str:
    if "{{" in title:
        raise ValueError("titles are shown as written and never filled in, so '{{' is not allowed")
    return title


def _check_capture_regex(pattern: str) -> str:
    try:
        compiled = re.compile(pattern, re.MULTILINE)  # the flags engine.runner searches with
    except re.error as error:
        raise ValueError(f"is not a valid regex: {error}") from None
    if compiled.groups != 1:
        raise ValueError(
            f"has {compiled.groups} groups but needs exactly one, whose match becomes the value. "
            "Write any other group as (?:...)"
        )
    return pattern


def _check_role_member(member: str) -> str:
    if ROLE_MEMBER.fullmatch(member):
        return member
    handle = "@" + member.lstrip("@").lower()
    example = handle if ROLE_MEMBER.fullmatch(handle) else "@release-managers"
    message = (
        f"{member!r} is neither a Slack user ID (U or W followed by upper-case letters and "
        f"digits) nor a user-group handle. For a user group, write {example!r}"
    )
    raise PydanticCustomError("role_member", "{message}", {"message": message})


def _reject_untyped_text(value: Any) -> Any:
    # YAML turns unquoted 3.10 into 3.1, no into False and 2024-05-01 into a date. None of them
    # reads back as written, so each is rejected here with advice to quote it.
    if isinstance(value, bool | float | datetime.date):
        raise PydanticCustomError(
            "quote_required", "settings are substituted into commands as text"
        )
    return value


Title = AfterValidator(_reject_placeholders)
CaptureRegex = Annotated[StrictStr, AfterValidator(_check_capture_regex)]
RoleMember = Annotated[StrictStr, AfterValidator(_check_role_member)]
SettingValue = Annotated[StrictStr | StrictInt | None, BeforeValidator(_reject_untyped_text)]


# --- runbook ---------------------------------------------------------------------------------


class RunSpec(Strict):
    """A shell command run on every host of a role, in order, stopping at the first failure."""

    hosts: StrictStr  # host role of the environment
    command: StrictStr
    timeout: Seconds = 300.0  # wall-clock seconds for the whole command on one host
    capture: dict[StrictStr, CaptureRegex] = {}  # variable name -> regex with one group, on stdout


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


class DiskCheck(Strict):
    """Free space at ``path`` on every host of a role, against a minimum in GB (10^9 bytes)."""

    hosts: StrictStr
    path: StrictStr
    minimum_gb: StrictStr | int  # text may name a setting, such as {{ backup_min_free_gb }}


class CommandCheck(Strict):
    """A command that exits 0 on every host of a role when the item holds."""

    hosts: StrictStr
    script: StrictStr


class TlsCheck(Strict):
    """A TLS handshake with ``address`` (host:port); the certificate must be valid for long."""

    address: StrictStr
    minimum_days: Annotated[int, Field(ge=0, le=3650)] = 14
    ca_file: StrictStr | None = None  # a private CA's certificates; the system's by default


class HttpCheck(Strict):
    url: StrictStr


CHECK_KINDS = ("disk_space", "command", "tls", "http")


class ItemCheck(Strict):
    """The check by which the bot establishes a checklist item itself, of exactly one kind."""

    requires: list[StrictStr] = []  # settings without which a person ticks the item instead
    disk_space: DiskCheck | None = None
    command: CommandCheck | None = None
    tls: TlsCheck | None = None
    http: HttpCheck | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ItemCheck:
        kinds = [kind for kind in CHECK_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a check needs exactly one of {', '.join(CHECK_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in CHECK_KINDS if getattr(self, kind) is not None)


class ChecklistItem(Strict):
    text: StrictStr
    check: ItemCheck | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


class ManualSpec(Strict):
    """Items that a person with ``role`` ticks one by one; the bot checks some itself."""

    items: Annotated[list[ChecklistItem], Field(max_length=40)] = []  # a button each
    role: Literal["deployers", "approvers"] = "deployers"


class NoticeField(Strict):
    name: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
    label: Annotated[StrictStr, Field(min_length=1, max_length=2000)]


class NotifySpec(Strict):
    """A message to named channels of the environment.

    With ``ask``, a deployer first fills in those fields in a form; the text names them as
    ``{{ notice.NAME }}``. ``mention`` names entries of the environment's contacts to mention.
    """

    to: list[StrictStr]
    text: StrictStr
    ask: list[NoticeField] = []
    mention: list[StrictStr] = []


class WaitSpec(Strict):
    seconds: Seconds


class GateSpec(Strict):
    """A go/no-go decision; pressed by one person with ``role`` other than the requester."""

    role: Literal["approvers"] = "approvers"
    allow_self: bool = False
    prompt: StrictStr = ""
    always: bool = False  # asked even in an environment that does not require approval


class BackupSpec(Strict):
    """What a run step leaves in ``{{ backup_dir }}``, for gonogo to record and prove usable.

    After the command succeeds, gonogo records the dump's size and SHA-256 and the row count,
    then runs ``restore_check``, which must show that the dump restores.
    """

    dump: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._-]+$")]  # a file in backup_dir
    row_count: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._-]+$")] | None = None
    restore_check: StrictStr | None = None


class CriteriaSpec(Strict):
    """The go/no-go judgement of the runbook's success_criteria from the steps run so far."""


class SignoffSpec(Strict):
    """The final checklist, signed by a deployer, a validator and an approver."""

    items: list[StrictStr] = []


class Step(Strict):
    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: Annotated[StrictStr, Field(min_length=1, max_length=120), Title]
    requires: list[StrictStr] = []  # settings without which the step becomes a manual check
    run: RunSpec | None = None
    probe: ProbeSpec | None = None
    manual: ManualSpec | None = None
    notify: NotifySpec | None = None
    wait: WaitSpec | None = None
    gate: GateSpec | None = None
    signoff: SignoffSpec | None = None
    criteria: CriteriaSpec | None = None
    backup: BackupSpec | None = None  # the run step takes the deployment's backup

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a step needs exactly one of {', '.join(STEP_KINDS)}; found {kinds or 'none'}"
            )
        if self.backup is not None and self.run is None:
            raise ValueError("backup goes with a run step, whose command takes the backup")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> BaseModel:
        return getattr(self, self.kind)


class Phase(Strict):
    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: Annotated[StrictStr, Field(min_length=1, max_length=80), Title]
    # The slash command that runs this phase on its own; neighbouring phases may share one.
    command: Annotated[StrictStr, Field(pattern=COMMAND)] | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


class Window(Strict):
    """Checks due in a span of minutes after the rollout finished."""

    id: Annotated[StrictStr, Field(pattern=SLUG, max_length=60)]
    title: Annotated[StrictStr, Title]
    from_minute: Annotated[int, Field(ge=0)]
    to_minute: Annotated[int, Field(gt=0)] | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


class RollbackProcedure(Strict):
    title: Annotated[StrictStr, Title]
    # Offered only this long after the rollout phase ended; an environment may set its own.
    within_minutes: Annotated[int, Field(gt=0)] | None = None
    steps: Annotated[list[Step], Field(min_length=1)]


class Rollback(Strict):
    rollout_phase: Annotated[StrictStr, Field(pattern=SLUG)] = "rollout"  # its end starts the
    quick: RollbackProcedure  # quick window; a release that never reached it has nothing to undo
    full: RollbackProcedure
    verify: RollbackProcedure


class Criterion(Strict):
    """A success criterion and the steps whose results show it; without steps a person judges."""

    text: StrictStr
    steps: list[StrictStr] = []

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


class SuccessCriteria(Strict):
    must_have: list[Criterion] = []
    should_have: list[Criterion] = []
    nice_to_have: list[Criterion] = []


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


RELEASE, ROLLBACK, WINDOW = "release", "rollback", "window"
ROLLBACK_MODES = ("quick", "full")
QUICK_ROLLBACK_MINUTES = 30  # when neither the runbook nor the environment sets the window
CONFIRM_RESTORE, CHECK_BACKUP = "confirm-restore", "check-backup"
GUARD_STEPS = frozenset({CONFIRM_RESTORE, CHECK_BACKUP})
# Compares the dump with its record just before a restore; the values come from the database.
CHECK_BACKUP_COMMAND = """\
dump={{ backup_dir }}/{{ backup_dump }}
if ! test -f "$dump"; then
  echo "The backup dump $dump is gone; restore by hand from another copy." >&2
  exit 1
fi
size=$(wc -c < "$dump" | tr -d ' ')
sum=$(sha256sum < "$dump" | cut -d ' ' -f 1)
echo "$dump: $size bytes, SHA-256 $sum"
if test "$size" != {{ backup_size }} || test "$sum" != {{ backup_sha256 }}; then
  echo "The backup dump $dump has changed since it was taken: it was" {{ backup_size }} \\
    "bytes with SHA-256" {{ backup_sha256 }}. "Nothing was restored." >&2
  exit 1
fi
"""


def _phase(phase_id: str, title: str, steps: list[Step]) -> Phase:
    return Phase(id=phase_id, title=title[:80], steps=steps)


class Runbook(Strict):
    name: Annotated[StrictStr, Field(pattern=SLUG)]
    title: Annotated[StrictStr, Title]
    # version_matches matches it against the whole version with re.ASCII, so \d means [0-9].
    version_pattern: StrictStr = DEFAULT_VERSION_PATTERN
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
            re.compile(pattern, re.ASCII)
        except (re.error, ValueError) as error:  # re raises ValueError when the pattern sets (?u)
            raise ValueError(f"is not a valid regex: {error}") from None
        return pattern

    _procedures: dict[str, list[tuple[Phase, Step]]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique_ids(self) -> Runbook:
        # Every step id is unique in the whole runbook, so an id alone finds its definition.
        seen: set[str] = set()
        for group_location, steps in self.step_groups():
            for step_index, step in enumerate(steps):
                if step.id in seen or step.id in GUARD_STEPS:
                    raise _located_error(
                        (*group_location, step_index, "id"),
                        f"step id {step.id!r} is "
                        + ("used twice" if step.id in seen else "gonogo's own")
                        + "; step ids must be unique in the runbook",
                    )
                seen.add(step.id)
        phase_ids = {step.id for _, step in self.steps()}
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
        for level in ("must_have", "should_have", "nice_to_have"):
            for index, criterion in enumerate(getattr(self.success_criteria, level)):
                for step_index, step_id in enumerate(criterion.steps):
                    if step_id not in phase_ids:
                        raise _located_error(
                            ("success_criteria", level, index, "steps", step_index),
                            f"success criterion names step {step_id!r}, which no phase has",
                        )
        for location, step_id in self.deployment_log.step_references():
            if step_id not in phase_ids:
                raise _located_error(
                    ("deployment_log", *location),
                    f"deployment_log names step {step_id!r}, which no phase has",
                )
        if self.rollback and self.rollback.rollout_phase not in {p.id for p in self.phases}:
            raise _located_error(
                ("rollback", "rollout_phase"),
                f"no phase has the id {self.rollback.rollout_phase!r}",
            )
        backups = [step for _, step in self.steps() if step.backup]
        if len(backups) > 1:
            raise _located_error(
                ("phases",),
                f"steps {', '.join(s.id for s in backups)} all take the backup; one step takes it",
            )
        return self

    def step(self, step_id: str) -> Step:
        """Return the definition of ``step_id`` in any procedure of the runbook."""
        for name in self.procedure_names():
            for _, step in self.procedure(name):
                if step.id == step_id:
                    return step
        raise KeyError(f"step {step_id} is not in runbook {self.name}")

    def steps(self) -> list[tuple[Phase, Step]]:
        return [(phase, step) for phase in self.phases for step in phase.steps]

    def backup_step(self) -> Step | None:
        return next((step for _, step in self.steps() if step.backup), None)

    def window(self, window_id: str) -> Window | None:
        return next((w for w in self.post_deployment if w.id == window_id), None)

    def procedure_names(self) -> list[str]:
        names = [RELEASE]
        if self.rollback:
            names += [f"{ROLLBACK}:{mode}" for mode in ROLLBACK_MODES]
        names += [f"{WINDOW}:{window.id}" for window in self.post_deployment]
        return names

    def procedure(self, name: str) -> list[tuple[Phase, Step]]:
        """Return the phases and steps a deployment runs by its procedure.

        ``release`` is the runbook's phases. ``rollback:quick`` and ``rollback:full`` are a
        rollback followed by its verification. A full one first waits for a second approver,
        then checks the backup against its record. ``window:ID`` is one post-deployment window.
        """
        if name == RELEASE:
            return self.steps()
        if name not in self._procedures:
            kind, _, detail = name.partition(":")
            if kind == WINDOW and self.window(detail):
                window = self.window(detail)
                phases = [_phase(window.id, window.title, window.steps)]
            elif kind == ROLLBACK and self.rollback and detail in ROLLBACK_MODES:
                chosen = getattr(self.rollback, detail)
                guard = self._restore_guard() if detail == "full" else []
                verify = self.rollback.verify
                phases = [
                    _phase(f"rollback-{detail}", chosen.title, [*guard, *chosen.steps]),
                    _phase("rollback-verify", verify.title, verify.steps),
                ]
            else:
                raise KeyError(f"runbook {self.name} has no procedure {name}")
            self._procedures[name] = [(phase, step) for phase in phases for step in phase.steps]
        return self._procedures[name]

    def _restore_guard(self) -> list[Step]:
        """Return the steps gonogo puts before a database restore."""
        guard = [
            Step(
                id=CONFIRM_RESTORE,
                title="A second approver confirms the database restore",
                gate=GateSpec(
                    always=True,
                    prompt=(
                        "Restore the database of {{ environment }} from the backup of "
                        "deployment {{ backup_deployment_id }}, taken {{ backup_taken_at }}? "
                        "Everything written since then is lost."
                    ),
                ),
            )
        ]
        backup = self.backup_step()
        if backup is not None:
            guard.append(
                Step(
                    id=CHECK_BACKUP,
                    title="Check the backup against its recorded size and SHA-256",
                    run=RunSpec(hosts=backup.run.hosts, command=CHECK_BACKUP_COMMAND),
                )
            )
        return guard

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

    deployers: list[RoleMember] = []
    approvers: list[RoleMember] = []
    validators: list[RoleMember] = []
    on_call: list[RoleMember] = []  # may roll back, like deployers


class Environment(Strict):
    name: StrictStr = ""
    description: StrictStr = ""
    channel: StrictStr  # Slack channel ID of the checklist message
    notify_channels: dict[StrictStr, StrictStr] = {}
    roles: Roles = Roles()
    require_approval: bool = True
    separate_authorizer: bool = True  # the final sign-off's authorizer may not be its deployer
    signoff_reminder_minutes: Annotated[int, Field(ge=1, le=1440)] = 30
    quick_rollback_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None  # the runbook's
    backup_retention: Annotated[int, Field(ge=1, le=1000)] = 5  # backups kept per environment
    ssh: SshSettings | None = None
    hosts: dict[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]]
    path_prepend: list[StrictStr] = []  # directories put in front of PATH for every command
    command_env: dict[StrictStr, StrictStr] = {}
    # Substituted into commands as text, so only strings, whole numbers and null are accepted.
    settings: dict[StrictStr, SettingValue] = {}
    secrets: dict[StrictStr, StrictStr] = {}  # secret name -> environment variable holding it
    contacts: dict[StrictStr, StrictStr] = {}

    @model_validator(mode="after")
    def _ssh_when_remote(self) -> Environment:
        remote = [host for host in self.all_hosts() if host != LOCAL_HOST]
        if remote and self.ssh is None:
            raise ValueError(f"hosts {remote} are reached over SSH, so an ssh section is required")
        return self

    def host_roles(self) -> set[str]:
        return set(self.hosts)

    def all_hosts(self) -> list[str]:
        return [host for hosts in self.hosts.values() for host in hosts]


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
    """Load both files and check them; raise ConfigError listing every problem found.

    A file that cannot be read or parsed does not stop the other file from being checked, but
    the checks of one file against the other run only when both files are valid.
    """
    problems: list[ConfigProblem] = []
    runbook_doc = _read(runbook_path, problems)
    runbook = _load_runbook(runbook_doc, problems) if runbook_doc else None
    environments_doc = _read(environments_path, problems)
    environments = None
    if environments_doc:
        environments = _load_environments(environments_doc, environments_path, problems)
    if runbook is not None and environments is not None:
        for name, environment in environments.items():
            _check_references(runbook, runbook_doc, name, environment, problems)
            _check_roles(runbook, environments_doc, name, environment, problems)
    if problems or runbook is None or environments is None:
        raise ConfigError(problems)
    return Config(
        runbook=runbook,
        environments=environments,
        runbook_file=str(runbook_path),
        environments_file=str(environments_path),
    )


def version_matches(runbook: Runbook, version: str) -> bool:
    """Return whether ``version`` matches the runbook's version pattern in full.

    re.ASCII limits \\d and \\w to ASCII characters, so digits of other scripts (v١١.٠.٠) fail.
    """
    return re.fullmatch(runbook.version_pattern, version, re.ASCII) is not None


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def malformed_placeholders(text: str) -> list[str]:
    """Return each ``{{`` or ``}}`` of ``text`` that is not part of a valid placeholder, in context.

    ``{{ api-service }}`` and ``{{ api_service }`` are returned whole, but a single brace, as in
    the shell's ``{ cmd; }``, is left alone.
    """
    # Blanking keeps the offsets, so each match can be shown from the original text.
    blanked = PLACEHOLDER.sub(lambda match: "\0" * len(match.group()), text)
    return [text[match.start() : match.end()].strip() for match in STRAY_BRACES.finditer(blanked)]


def step_texts(step: Step) -> list[tuple[Location, str]]:
    """Return (location below the step, text) for every text of ``step`` with placeholders."""
    spec = step.spec
    texts: list[tuple[Location, str]] = []
    if isinstance(spec, RunSpec):
        texts.append((("run", "command"), spec.command))
    elif isinstance(spec, ProbeSpec):
        texts.append((("probe", "url"), spec.url))
        texts += [(("probe", "headers", key), value) for key, value in spec.headers.items()]
        texts += [(("probe", "json", *path), text) for path, text in _strings(spec.json_body, ())]
        texts += [
            (("probe", "expect_json", key), value)
            for key, value in spec.expect_json.items()
            if isinstance(value, str)
        ]
    elif isinstance(spec, NotifySpec):
        texts.append((("notify", "text"), spec.text))
    elif isinstance(spec, GateSpec):
        texts.append((("gate", "prompt"), spec.prompt))
    elif isinstance(spec, SignoffSpec):
        texts += [((step.kind, "items", index), item) for index, item in enumerate(spec.items)]
    elif isinstance(spec, ManualSpec):
        for index, item in enumerate(spec.items):
            texts.append(((step.kind, "items", index, "text"), item.text))
            if item.check is not None:
                kind = item.check.kind
                check = getattr(item.check, kind)
                location = (step.kind, "items", index, "check", kind)
                texts += [
                    ((*location, key), value)
                    for key, value in check.model_dump().items()
                    if isinstance(value, str) and key != "hosts"
                ]
    return texts


def _strings(value: Any, path: Location) -> list[tuple[Location, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _strings(item, (*path, key))]
    if isinstance(value, list):
        return [pair for i, item in enumerate(value) for pair in _strings(item, (*path, i))]
    return []


def _read(path: Path, problems: list[ConfigProblem]) -> YamlDocument | None:
    try:
        return load_yaml(path)
    except ConfigError as error:
        problems += error.problems
        return None


def _load_runbook(document: YamlDocument, problems: list[ConfigProblem]) -> Runbook | None:
    runbook = _validate(Runbook, document, problems)
    if runbook is not None:
        _check_templates(runbook, document, problems)
    return runbook


def _load_environments(
    document: YamlDocument, path: Path, problems: list[ConfigProblem]
) -> dict[str, Environment] | None:
    """Validate the environments file and resolve each path_prepend entry against its folder."""
    _expand_env_references(document, problems)
    environments_file = _validate(EnvironmentsFile, document, problems)
    if environments_file is None:
        return None
    base = path.resolve().parent
    environments = {}
    for name, environment in environments_file.environments.items():
        location: Location = ("environments", name)
        path_prepend = [str((base / entry).resolve()) for entry in environment.path_prepend]
        _check_path_prepend(document, location, environment, path_prepend, problems)
        _check_whole_numbers(document, location, environment, problems)
        environments[name] = environment.model_copy(
            update={"name": name, "path_prepend": path_prepend}
        )
    return environments


# --- turning pydantic errors into problems ---------------------------------------------------

# The type that each pydantic type error expected, as messages name it.
_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "none_required": "null",
}


def _validate(model: type[BaseModel], document: YamlDocument, problems: list[ConfigProblem]):
    try:
        return model.model_validate(document.data)
    except ValidationError as error:
        details_by_location: dict[Location, list[dict]] = {}
        for detail in error.errors():
            location = _document_location(document.data, detail)
            details_by_location.setdefault(location, []).append(detail)
        for location, details in details_by_location.items():
            for message in _messages(document, location, details):
                problems.append(
                    ConfigProblem(
                        document.file, document.line_of(location), dotted(location), message
                    )
                )
        return None


def _located_error(location: Location, message: str) -> PydanticCustomError:
    """Build a model validator's error that _validate reports at ``location`` inside the model."""
    return PydanticCustomError("located", "{message}", {"message": message, "location": location})


def _document_location(data: Any, detail: dict) -> Location:
    """Return the keys and indexes in the document at which pydantic reports ``detail``.

    pydantic puts the name of each union member it tried ("str", "int") and "[key]" for a
    mapping key into its locations. Walking the document separates them from real keys.
    """
    loc = detail["loc"]
    location: list[str | int] = []
    for position, part in enumerate(loc):
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif not (detail["type"] == "missing" and position == len(loc) - 1):
            continue
        location.append(part)
    return tuple(location) + tuple(detail.get("ctx", {}).get("location", ()))


def _messages(document: YamlDocument, location: Location, details: list[dict]) -> list[str]:
    """Word the errors pydantic reported at one location, one message per error.

    A value of the wrong type for a union fails every member, and pydantic reports each. Those
    become one message naming the accepted types. When a member took the type but failed
    another check, such as a pattern, only that member's errors are shown.
    """
    if len(details) > 1:
        other_errors = [detail for detail in details if detail["type"] not in _TYPE_NAMES]
        if not other_errors:
            accepted = list(dict.fromkeys(_TYPE_NAMES[detail["type"]] for detail in details))
            return [f"expected {join_words(accepted, 'or')}{_got(details[0]['input'])}"]
        details = other_errors
    return [_describe(document, location, detail) for detail in details]


def _describe(document: YamlDocument, location: Location, detail: dict) -> str:
    kind = detail["type"]
    value = detail.get("input")
    if kind == "extra_forbidden":
        return "unknown key; check its spelling against the documented keys"
    if kind == "missing":
        return "required key is missing"
    if kind == "model_type":
        model = _model_named(detail.get("ctx", {}).get("class_name"))
        keys = _required_keys(model) if model else ""
        if location == () and value is None:
            return f"the file is empty; expected a mapping{keys}"
        return f"expected a mapping{keys}{_got(value)}"
    if kind == "quote_required":
        return _quote_advice(document, location, value, detail["msg"])
    if kind == "string_type" and _is_yaml_scalar(value):
        return _quote_advice(document, location, value, "a string is required here")
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    # These messages show the value themselves, or the value is too large to show.
    if "input" in detail and kind not in ("dict_type", "list_type", "located", "role_member"):
        message += _got(value)
    return message


def _quote_advice(document: YamlDocument, location: Location, value: Any, reason: str) -> str:
    text = document.source_text.get(location, str(value))
    return f"YAML reads {text} as {_yaml_reading(value)}, but {reason}, so quote it: '{text}'"


def _yaml_reading(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return f"the date {value}"


def _is_yaml_scalar(value: Any) -> bool:
    """Return whether ``value`` is a scalar that YAML makes from unquoted text, other than null."""
    return isinstance(value, int | float | datetime.date)


def _got(value: Any) -> str:
    shown = repr(value)
    return f" (got {shown})" if len(shown) <= 60 else ""


def _model_named(name: str | None) -> type[Strict] | None:
    return next((model for model in Strict.__subclasses__() if model.__name__ == name), None)


def _required_keys(model: type[BaseModel]) -> str:
    names = [field.alias or name for name, field in model.model_fields.items()]
    required = [
        field.alias or name for name, field in model.model_fields.items() if field.is_required()
    ]
    if len(required) == 1:
        return f" with key {required[0]}"
    if required:
        return f" with keys {join_words(required, 'and')}"
    return f" with any of the keys {join_words(names, 'or')}"


def join_words(words: list[str], conjunction: str) -> str:
    """Return "a, b or c" for ``words`` and the conjunction "or"."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


# --- checks that need more than one value ----------------------------------------------------


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


def _check_templates(runbook: Runbook, document: YamlDocument, problems: list[ConfigProblem]):
    """Report every ``{{`` or ``}}`` in step text that is not part of a valid placeholder."""
    for group_location, steps in runbook.step_groups():
        for step_index, step in enumerate(steps):
            for field, text in step_texts(step):
                location = group_location + (step_index,) + field
                for fragment in malformed_placeholders(text):
                    message = (
                        f"{fragment!r} is not a valid placeholder. Write {{{{ name }}}} with a "
                        "name of letters, digits, '_' and '.' that starts with a letter or '_'"
                    )
                    if field == ("run", "command"):
                        message += (
                            ". For braces that the shell should see, split them with quotes, "
                            "as in '{''{.Names}''}'"
                        )
                    problems.append(
                        ConfigProblem(
                            document.file,
                            document.line_of(location),
                            f"{dotted(location)} (step {step.id})",
                            message,
                        )
                    )


def _check_path_prepend(
    document: YamlDocument,
    location: Location,
    environment: Environment,
    resolved: list[str],
    problems: list[ConfigProblem],
) -> None:
    """Report path_prepend entries that are not directories on this machine.

    Only environments that run commands here are checked. A remote host gets the same PATH,
    but its directories exist on that host, where the loader cannot look.
    """
    if LOCAL_HOST not in environment.all_hosts():
        return
    for index, entry in enumerate(environment.path_prepend):
        directory = resolved[index]
        if Path(directory).is_dir():
            continue
        state = "is not a directory" if Path(directory).exists() else "does not exist"
        message = f"{directory} {state}"
        if entry != directory:
            message = (
                f"{entry!r} resolves to {directory}, which {state}. "
                "Relative entries start from the folder of the environments file"
            )
        entry_location = location + ("path_prepend", index)
        problems.append(
            ConfigProblem(
                document.file, document.line_of(entry_location), dotted(entry_location), message
            )
        )


def _check_whole_numbers(
    document: YamlDocument,
    location: Location,
    environment: Environment,
    problems: list[ConfigProblem],
) -> None:
    """Report whole-number settings that YAML read differently from how they are written.

    YAML 1.1 reads 010 as 8, 0x1F as 31, 1_000 as 1000 and 1:30 as 90, but a setting is
    substituted as text, so its value must read back as written.
    """
    for key, value in environment.settings.items():
        setting_location = location + ("settings", key)
        text = document.source_text.get(setting_location)
        if isinstance(value, int) and text is not None and text != str(value):
            message = _quote_advice(
                document,
                setting_location,
                value,
                "settings are substituted into commands as text",
            )
            problems.append(
                ConfigProblem(
                    document.file,
                    document.line_of(setting_location),
                    dotted(setting_location),
                    message,
                )
            )


def _check_roles(
    runbook: Runbook,
    environments_doc: YamlDocument,
    environment_name: str,
    environment: Environment,
    problems: list[ConfigProblem],
) -> None:
    """Report roles left empty that a gate or a final sign-off of the runbook needs."""
    steps = [step for _, group in runbook.step_groups() for step in group]
    gate = next((step for step in steps if step.gate), None)
    signoff = next((step for step in steps if step.signoff), None)
    reasons: dict[str, list[str]] = {}
    if gate and environment.require_approval:
        reasons["approvers"] = [
            f"the gate step {gate.id!r} needs an approver because require_approval is true"
        ]
    if signoff:
        for _, _, role in SIGNOFF_SLOTS:
            reasons.setdefault(role, []).append(
                f"the sign-off step {signoff.id!r} needs a deployer, a validator and an approver"
            )
    for role, role_reasons in reasons.items():
        if getattr(environment.roles, role):
            continue
        location = ("environments", environment_name, "roles", role)
        problems.append(
            ConfigProblem(
                environments_doc.file,
                environments_doc.line_of(location),
                dotted(location),
                f"no {role} are listed, but {' and '.join(role_reasons)}. "
                "Add a Slack user ID or a @handle",
            )
        )


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
        if group_location[0] == "rollback":
            known |= ROLLBACK_VARIABLES
        for step_index, step in enumerate(steps):
            location: Location = group_location + (step_index,)

            def report(field: Location, message: str, location=location, step=step) -> None:
                problems.append(
                    ConfigProblem(
                        runbook_doc.file,
                        runbook_doc.line_of(location + field),
                        f"{dotted(location + field)} (step {step.id})",
                        f"{message} in environment {environment_name!r}",
                    )
                )

            if step.notify:
                known |= {f"notice.{field.name}" for field in step.notify.ask}
            for field, text in step_texts(step):
                for name in placeholders(text):
                    if name not in known:
                        report(field, f"{{{{ {name} }}}} names no setting, secret or variable")
            for name in step.requires:
                if name not in environment.settings:
                    report(("requires",), f"setting {name!r} is not defined")
            if step.run and step.run.hosts not in environment.hosts:
                report(("run", "hosts"), f"host role {step.run.hosts!r} is not defined")
            for index, item in enumerate(step.manual.items if step.manual else []):
                check = item.check
                if check is None:
                    continue
                location = ("manual", "items", index, "check")
                role = getattr(getattr(check, check.kind), "hosts", None)
                if role is not None and role not in environment.hosts:
                    report((*location, check.kind, "hosts"), f"host role {role!r} is not defined")
                for name in check.requires:
                    if name not in environment.settings:
                        report((*location, "requires"), f"setting {name!r} is not defined")
            if step.notify:
                for channel in step.notify.to:
                    if channel not in environment.notify_channels:
                        report(("notify", "to"), f"notify channel {channel!r} is not defined")
                for contact in step.notify.mention:
                    if contact not in environment.contacts:
                        report(("notify", "mention"), f"contact {contact!r} is not defined")
            known |= _captures(step)


def _captures(step: Step) -> set[str]:
    if step.run:
        return set(step.run.capture)
    if step.probe:
        return set(step.probe.capture)
    return set()
