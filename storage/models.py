"""Tables that hold every deployment's state; Slack messages are drawn from these alone.

Times are aware datetimes in UTC.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Enum, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # for a person: a manual check or a gate
    PAUSED = "paused"  # its last requested phase is done; the next phase command continues it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_DEPLOYMENT


FINISHED_DEPLOYMENT = frozenset(
    {
        DeploymentStatus.SUCCEEDED,
        DeploymentStatus.FAILED,
        DeploymentStatus.REJECTED,
        DeploymentStatus.CANCELLED,
    }
)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not_run"  # a step after a failure or a rejection

    @property
    def finished(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)


# Named constraints let later migrations drop or change them on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum_column(enum: type[StrEnum]) -> Enum:
    # Stored as plain text, so adding a state later needs no ALTER TYPE on PostgreSQL.
    return Enum(
        enum,
        native_enum=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class Deployment(SQLModel, table=True):
    __tablename__ = "deployments"

    id: int | None = Field(default=None, primary_key=True)
    runbook: str
    environment: str = Field(index=True)
    version: str
    # What it runs: "release" (the runbook's phases), "rollback:quick", "rollback:full" or
    # "window:ID" (post-deployment checks); the last three belong to the release in parent_id.
    procedure: str = Field(default="release", max_length=80)
    parent_id: int | None = Field(default=None, foreign_key="deployments.id", index=True)
    status: DeploymentStatus = Field(
        default=DeploymentStatus.PENDING, sa_type=_enum_column(DeploymentStatus)
    )
    requested_by: str
    request_channel: str
    channel: str  # channel of the checklist message
    message_ts: str | None = None
    message_claimed_by: str | None = None  # the process that posts the checklist message
    message_claimed_until: datetime | None = None  # after this, another process may post it
    variables: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # The run stops after the step at this position; None runs the whole runbook.
    target_position: int | None = None
    cancel_requested_by: str | None = None  # the worker ends the run after its current step
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    # A worker owns the run while its lease lasts; wake_seq counts requests to continue.
    lease_owner: str | None = None
    lease_until: datetime | None = None
    wake_seq: int = 0


class StepRun(SQLModel, table=True):
    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("deployment_id", "step_id"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", index=True)
    position: int
    phase_id: str
    phase_title: str
    step_id: str
    title: str
    kind: str  # run, probe, manual, notify, wait or gate
    manual_reason: str | None = None  # why a step of another kind is left to a person
    status: StepStatus = Field(default=StepStatus.PENDING, sa_type=_enum_column(StepStatus))
    hosts: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    output_tail: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    reminded_at: datetime | None = None  # last reminder about a pending sign-off


class SignOff(SQLModel, table=True):
    """A person's decision on a gate, a manual check or a slot of the final sign-off.

    The first press on a slot wins. Gates and manual checks use the empty slot.
    """

    __tablename__ = "sign_offs"
    __table_args__ = (UniqueConstraint("deployment_id", "step_id", "slot"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", index=True)
    step_id: str
    slot: str = ""  # deployed_by, validated_by, authorized_by or rejected on a final sign-off
    decision: str  # approved, rejected, done or signed
    user_id: str
    decided_at: datetime
    comment: str | None = None


class ChecklistItemState(SQLModel, table=True):
    """The settlement of one item of a manual step: a person's tick, a waiver or the bot's check."""

    __tablename__ = "checklist_items"
    __table_args__ = (UniqueConstraint("deployment_id", "step_id", "item_index"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", index=True)
    step_id: str
    item_index: int
    state: str  # ticked, waived, passed or failed (the last two by the bot's check)
    user_id: str | None = None  # who ticked or waived it
    decided_at: datetime
    evidence: str | None = Field(default=None, sa_column=Column(Text))
    reason: str | None = Field(default=None, sa_column=Column(Text))  # of a waiver


class Backup(SQLModel, table=True):
    """A deployment's backup on its host, as recorded after it was taken and test-restored.

    A rollback restores the backup of the release it undoes, found by deployment here and
    never by file name on the host.
    """

    __tablename__ = "backups"

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", unique=True)
    environment: str = Field(index=True)
    host: str
    location: str = Field(sa_column=Column(Text, nullable=False))  # the backup's folder
    dump: str  # the database dump's file name in the folder
    size_bytes: int = Field(sa_type=BigInteger)  # dumps pass 2 GiB
    sha256: str = Field(max_length=64)
    row_count: int | None = None  # of the critical table, when the dump was taken
    taken_at: datetime
    verified_at: datetime | None = None  # when the dump last restored cleanly
    verification: str | None = Field(default=None, sa_column=Column(Text))  # what showed it
    removed_at: datetime | None = None  # by the retention count; the row stays as history


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int | None = Field(default=None, index=True)
    at: datetime
    actor: str  # a Slack user ID, or "gonogo" for the engine
    action: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class EnvironmentLock(SQLModel, table=True):
    """One row per environment with an active deployment; the primary key makes it unique."""

    __tablename__ = "environment_locks"

    environment: str = Field(primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id")
    acquired_at: datetime


class OutboxMessage(SQLModel, table=True):
    """A post to Slack that a state change calls for, written in the same transaction.

    ``kind`` names what to draw from the stored state when it is sent: ``step_output`` (the
    output tail of ``step_id``), ``alert`` (a failure), ``notify`` (``text`` to ``channel``),
    ``decision`` (a sign-off on ``step_id``) or ``log`` (the deployment log).
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", index=True)
    kind: str
    step_id: str | None = None
    channel: str | None = None  # None means the thread of the checklist message
    text: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    sent_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
