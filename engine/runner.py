"""The engine that walks a deployment's steps. It uses the database, hosts and HTTP, never Slack.

A run is resumable: every decision is read back from the database, so any worker of any
process can continue a deployment after a restart, a button press or a crash. A worker keeps
a lease on the deployment while it runs, and stops when the next step waits for a person.
"""

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from engine import backups, criteria
from engine import evidence as evidence_checks
from engine.clock import Clock
from engine.config import (
    BACKUP_DIR,
    REJECTED_SLOT,
    RELEASE,
    ROLLBACK,
    SIGNOFF_SLOTS,
    Config,
    Environment,
    ProbeSpec,
    Runbook,
    RunSpec,
    Step,
    placeholders,
    step_texts,
)
from engine.evidence import Evidence
from engine.hosts import run_command
from engine.probes import ProbeRequest, run_probe
from engine.templates import Masker, MissingValue, render, render_data, render_shell
from storage import repository
from storage.db import Database
from storage.models import (
    Backup,
    ChecklistItemState,
    Deployment,
    DeploymentStatus,
    SignOff,
    StepRun,
    StepStatus,
)

logger = logging.getLogger(__name__)

OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 2500
LEASE_MARGIN = 120.0
ITEM_CHECKS_SECONDS = 600.0  # the lease while a manual step's items are checked
SETTLED_ITEM_STATES = (
    "ticked",
    "waived",
    "passed",
)  # seconds a lease outlives the longest step it covers


class RunObserver(Protocol):
    def deployment_changed(self, deployment_id: int) -> None:
        """Called after a committed change; the Slack side redraws from the database."""


class NullObserver:
    def deployment_changed(self, deployment_id: int) -> None:
        pass


def plan_steps(
    runbook: Runbook, environment: Environment, procedure: str = RELEASE
) -> list[StepRun]:
    """Return the step rows of a new deployment, in order, with manual fallbacks marked."""
    rows = []
    for position, (phase, step) in enumerate(runbook.procedure(procedure)):
        missing = [name for name in step.requires if environment.settings.get(name) is None]
        reason = None
        if missing and step.kind != "manual":
            reason = f"{', '.join(missing)} not configured for {environment.name}; check by hand"
        rows.append(
            StepRun(
                deployment_id=0,
                position=position,
                phase_id=phase.id,
                phase_title=phase.title,
                step_id=step.id,
                title=step.title,
                kind=step.kind,
                manual_reason=reason,
            )
        )
    return rows


def backup_location(environment: Environment, deployment_id: int, now: datetime) -> str | None:
    root = environment.settings.get("backup_root")
    if root is None:
        return None
    return f"{str(root).rstrip('/')}/backup-{now:%Y%m%d-%H%M%S}-d{deployment_id}"


def deployment_variables(deployment: Deployment, environment: Environment) -> dict[str, Any]:
    """Return every value a placeholder may name for this deployment."""
    values: dict[str, Any] = dict(environment.settings)
    values.update(deployment.variables or {})
    values.update(
        version=deployment.version,
        environment=deployment.environment,
        deployment_id=deployment.id,
        requested_by=deployment.requested_by,
        runbook=deployment.runbook,
        deadline_7d=(deployment.created_at + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    for name, value in secret_values(environment).items():
        if value:
            values[f"secrets.{name}"] = value
    return values


def missing_secrets(
    runbook: Runbook, environment: Environment, procedure: str = RELEASE
) -> list[tuple[str, str]]:
    """Return (secret, environment variable) for each secret the procedure uses that is unset."""
    used = {
        name.removeprefix("secrets.")
        for _, step in runbook.procedure(procedure)
        for _, text in step_texts(step)
        for name in placeholders(text)
        if name.startswith("secrets.")
    }
    values = secret_values(environment)
    return [
        (name, environment.secrets[name])
        for name in sorted(used)
        if name in environment.secrets and not values[name]
    ]


def secret_values(environment: Environment) -> dict[str, str]:
    """Return each secret's value, stripped; one with control characters counts as unset."""
    values = {}
    for name, variable in environment.secrets.items():
        value = os.environ.get(variable, "").strip()
        values[name] = "" if any(ord(char) < 32 for char in value) else value
    return values


class Runner:
    def __init__(
        self,
        db: Database,
        config: Config,
        *,
        owner: str,
        clock: Clock | None = None,
        observer: RunObserver | None = None,
        probe_transport: httpx.BaseTransport | None = None,
    ):
        self.db = db
        self.config = config
        self.owner = owner
        self._run_owner = threading.local()  # the lease owner of the run on this thread
        self.clock = clock or Clock()
        self.observer = observer or NullObserver()
        self.probe_transport = probe_transport

    # --- public ------------------------------------------------------------------------------

    def run(self, deployment_id: int) -> None:
        """Advance the deployment as far as it can go, unless another worker has its lease."""
        # Each call holds its own lease, so two threads of one process exclude each other too.
        run_owner = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        with self.db.session() as session:
            seen = repository.claim_run(
                session, deployment_id, run_owner, self.clock.now(), LEASE_MARGIN
            )
        if seen is None:
            logger.info("Deployment %s is run by another worker", deployment_id)
            return
        self._run_owner.value = run_owner
        while True:
            try:
                self._advance(deployment_id)
            except Exception:
                logger.exception("Deployment %s: the run stopped on an error", deployment_id)
                self._fail_unexpectedly(deployment_id)
            with self.db.session() as session:
                if repository.release_run(session, deployment_id, run_owner, seen):
                    return
                deployment = repository.get_deployment(session, deployment_id)
                if deployment.lease_owner != run_owner:
                    # The lease lapsed and another worker took the run over; it goes on there.
                    logger.warning(
                        "Deployment %s: lease lost to %s", deployment_id, deployment.lease_owner
                    )
                    return
                seen = deployment.wake_seq

    # --- the step loop -----------------------------------------------------------------------

    def _advance(self, deployment_id: int) -> None:
        while True:
            with self.db.session() as session:
                deployment = repository.get_deployment(session, deployment_id)
                if deployment is None or deployment.status.finished:
                    return
                if deployment.cancel_requested_by:
                    self._finish(
                        session,
                        deployment,
                        DeploymentStatus.CANCELLED,
                        error=f"cancelled by {deployment.cancel_requested_by}",
                    )
                    self._commit_and_notify(session, deployment_id)
                    return
                steps = repository.steps_of(session, deployment_id)
                step = next((row for row in steps if not row.status.finished), None)
                if step is None:
                    self._finish(session, deployment, DeploymentStatus.SUCCEEDED)
                    self._commit_and_notify(session, deployment_id)
                    return
                target = deployment.target_position
                if target is not None and step.position > target:
                    if deployment.status != DeploymentStatus.PAUSED:
                        self._pause(session, deployment, step)
                        self._commit_and_notify(session, deployment_id)
                    return
                if deployment.status == DeploymentStatus.PENDING:
                    deployment.started_at = self.clock.now()
                    logger.info(
                        "Deployment %s of %s to %s started",
                        deployment_id,
                        deployment.version,
                        deployment.environment,
                    )
                action = self._next_action(session, deployment, step)
                slow = action is not None and action is not _CONTINUE
                if slow and not repository.not_cancelled(session, deployment_id):
                    session.rollback()  # cancelled meanwhile: the next turn ends the run
                    continue
                self._commit_and_notify(session, deployment_id)
            if action is None:
                return
            if action is not _CONTINUE:
                action()

    def _next_action(self, session, deployment: Deployment, step: StepRun):
        """Move ``step`` on as far as the database allows; return slow work to do, if any."""
        environment = self.config.environments[deployment.environment]
        definition = self.config.runbook.step(step.step_id)
        now = self.clock.now()
        if step.status == StepStatus.WAITING and step.kind == "signoff":
            return self._check_final_signoff(session, deployment, step)
        itemised = step.kind == "manual" and not step.manual_reason and definition.manual.items
        if step.status == StepStatus.WAITING and itemised:
            states = repository.item_states(session, deployment.id, step.step_id)
            if all(
                index in states and states[index].state in SETTLED_ITEM_STATES
                for index in range(len(definition.manual.items))
            ):
                last = max(row.decided_at for row in states.values())
                repository.update_step(session, step, status=StepStatus.PASSED, finished_at=last)
                deployment.status = DeploymentStatus.RUNNING
                return _CONTINUE
            deployment.status = DeploymentStatus.WAITING
            return None
        if step.status == StepStatus.WAITING:
            sign_off = _sign_off_for(session, deployment.id, step.step_id)
            if sign_off is None:
                return None
            if step.kind == "notify":
                # The notice's fields are filled in; the step now sends it like any other.
                repository.update_step(session, step, status=StepStatus.PENDING)
                deployment.status = DeploymentStatus.RUNNING
                return _CONTINUE
            self._apply_sign_off(session, deployment, step, sign_off)
            return _CONTINUE
        if step.kind == "gate" and not environment.require_approval and not definition.gate.always:
            reason = f"approval is not required in {environment.name}"
            repository.update_step(
                session,
                step,
                status=StepStatus.SKIPPED,
                started_at=now,
                finished_at=now,
                error=reason,
            )
            return _CONTINUE
        if itemised and checkable_items(definition, environment):
            repository.update_step(
                session, step, status=StepStatus.RUNNING, started_at=now, attempts=step.attempts + 1
            )
            deployment.status = DeploymentStatus.RUNNING
            deployment.updated_at = now
            repository.extend_run(
                session, deployment.id, self._run_owner.value, now, ITEM_CHECKS_SECONDS
            )
            values = deployment_variables(deployment, environment)
            return lambda: self._check_items(
                deployment.id, step.id, definition, environment, values
            )
        asks = step.kind == "notify" and bool(definition.notify.ask)
        if asks and _sign_off_for(session, deployment.id, step.step_id) is not None:
            asks = False  # filled in already: send it below
        if step.kind in ("manual", "gate", "signoff") or step.manual_reason or asks:
            repository.update_step(session, step, status=StepStatus.WAITING, started_at=now)
            deployment.status = DeploymentStatus.WAITING
            deployment.updated_at = now
            repository.audit(
                session,
                now=now,
                actor="gonogo",
                action="step.waiting",
                deployment_id=deployment.id,
                step=step.step_id,
            )
            return None
        repository.update_step(
            session, step, status=StepStatus.RUNNING, started_at=now, attempts=step.attempts + 1
        )
        deployment.status = DeploymentStatus.RUNNING
        deployment.updated_at = now
        repository.extend_run(
            session,
            deployment.id,
            self._run_owner.value,
            now,
            _step_seconds(definition, environment) + LEASE_MARGIN,
        )
        values = deployment_variables(deployment, environment)
        return lambda: self._execute(deployment.id, step.id, definition, environment, values)

    def _check_final_signoff(self, session, deployment: Deployment, step: StepRun):
        """Pass the final sign-off once every slot is signed; fail it on a rejection."""
        signed = {
            sign_off.slot: sign_off
            for sign_off in repository.sign_offs_of(session, deployment.id)
            if sign_off.step_id == step.step_id and sign_off.slot
        }
        rejection = signed.get(REJECTED_SLOT)
        if rejection is not None:
            error = f"sign-off rejected by {rejection.user_id}: {rejection.comment}"
            repository.update_step(
                session,
                step,
                status=StepStatus.FAILED,
                finished_at=rejection.decided_at,
                error=error,
            )
            self._finish(
                session,
                deployment,
                DeploymentStatus.FAILED,
                error=f"{step.title}: {error}",
                failed_step=step.step_id,
            )
            return None
        if any(slot not in signed for slot, _, _ in SIGNOFF_SLOTS):
            deployment.status = DeploymentStatus.WAITING  # a decision woke it, others remain
            return None
        environment = self.config.environments[deployment.environment]
        deployer, authorizer = signed["deployed_by"].user_id, signed["authorized_by"].user_id
        if environment.separate_authorizer and deployer == authorizer:
            # Two presses at the same moment can pass the check each makes alone.
            error = f"{deployer} signed both Deployed by and Authorized by"
            repository.update_step(session, step, status=StepStatus.FAILED, error=error)
            self._finish(
                session,
                deployment,
                DeploymentStatus.FAILED,
                error=f"{step.title}: {error}",
                failed_step=step.step_id,
            )
            return None
        last = max(sign_off.decided_at for sign_off in signed.values())
        repository.update_step(session, step, status=StepStatus.PASSED, finished_at=last)
        deployment.status = DeploymentStatus.RUNNING
        return _CONTINUE

    def _apply_sign_off(
        self, session, deployment: Deployment, step: StepRun, sign_off: SignOff
    ) -> None:
        if sign_off.decision == "rejected":
            repository.update_step(
                session,
                step,
                status=StepStatus.FAILED,
                finished_at=sign_off.decided_at,
                error=f"rejected by {sign_off.user_id}"
                + (f": {sign_off.comment}" if sign_off.comment else ""),
            )
            self._finish(session, deployment, DeploymentStatus.REJECTED, error=step.error)
            return
        repository.update_step(
            session, step, status=StepStatus.PASSED, finished_at=sign_off.decided_at
        )
        deployment.status = DeploymentStatus.RUNNING

    # --- executing one step ------------------------------------------------------------------

    def _execute(
        self,
        deployment_id: int,
        step_run_id: int,
        step: Step,
        environment: Environment,
        values: dict[str, Any],
    ) -> None:
        masker = Masker(secret_values(environment))
        logger.info("Deployment %s: step %s started", deployment_id, step.id)
        try:
            if step.backup is not None:
                with self.db.session() as session:
                    repository.forget_backup(session, deployment_id)
                    session.commit()
            if step.criteria is not None:
                outcome = self._judge_criteria(deployment_id)
            else:
                outcome = self._perform(step, environment, values)
            if step.backup is not None and outcome.ok:
                outcome = self._secure_backup(deployment_id, step, environment, values, outcome)
        except MissingValue as error:
            outcome = _Outcome(False, error=_missing_value_message(error, environment))
        with self.db.session() as session:
            deployment = repository.get_deployment(session, deployment_id)
            row = session.get(StepRun, step_run_id)
            now = self.clock.now()
            repository.update_step(
                session,
                row,
                status=StepStatus.PASSED if outcome.ok else StepStatus.FAILED,
                finished_at=now,
                exit_code=outcome.exit_code,
                hosts=outcome.hosts,
                output_tail=masker(_tail(outcome.output)),
                error=masker(outcome.error),
            )
            if outcome.captured:
                deployment.variables = {**(deployment.variables or {}), **outcome.captured}
            for channel, text in outcome.notices:
                repository.queue_post(
                    session,
                    deployment_id=deployment_id,
                    kind="notify",
                    channel=channel,
                    text=masker(text),
                    created_at=now,
                )
            if step.kind in ("run", "probe", "criteria"):
                repository.queue_post(
                    session,
                    deployment_id=deployment_id,
                    kind="step_output",
                    step_id=step.id,
                    created_at=now,
                )
            repository.audit(
                session,
                now=now,
                actor="gonogo",
                action="step.finished",
                deployment_id=deployment_id,
                step=step.id,
                status=row.status.value,
                exit_code=outcome.exit_code,
            )
            if not outcome.ok:
                logger.warning(
                    "Deployment %s: step %s failed: %s", deployment_id, step.id, row.error
                )
                self._finish(
                    session,
                    deployment,
                    DeploymentStatus.FAILED,
                    error=f"{step.title}: {row.error}",
                    failed_step=step.id,
                )
            else:
                logger.info("Deployment %s: step %s passed", deployment_id, step.id)
            self._commit_and_notify(session, deployment_id)

    def _check_items(
        self,
        deployment_id: int,
        step_run_id: int,
        step: Step,
        environment: Environment,
        values: dict[str, Any],
    ) -> None:
        """Establish the items the bot can check, store the evidence, then wait for people."""
        masker = Masker(secret_values(environment))
        results = []
        for index in checkable_items(step, environment):
            item = step.manual.items[index]
            evidence = self._item_evidence(item.check, environment, values)
            results.append((index, evidence))
            logger.info(
                "Deployment %s: item %r %s: %s",
                deployment_id,
                item.text,
                "holds" if evidence.ok else "does not hold",
                evidence.summary,
            )
        with self.db.session() as session:
            now = self.clock.now()
            rows = [
                ChecklistItemState(
                    deployment_id=deployment_id,
                    step_id=step.id,
                    item_index=index,
                    state="passed" if evidence.ok else "failed",
                    decided_at=now,
                    evidence=masker(evidence.summary),
                )
                for index, evidence in results
            ]
            repository.replace_check_results(session, rows)
            row = session.get(StepRun, step_run_id)
            output = "\n".join(
                f"{'holds' if e.ok else 'FAILS'}: {step.manual.items[i].text}: {e.summary}"
                for i, e in results
            )
            repository.update_step(
                session, row, status=StepStatus.WAITING, output_tail=masker(_tail(output))
            )
            deployment = repository.get_deployment(session, deployment_id)
            deployment.status = DeploymentStatus.WAITING
            deployment.updated_at = now
            repository.queue_post(
                session,
                deployment_id=deployment_id,
                kind="step_output",
                step_id=step.id,
                created_at=now,
            )
            self._commit_and_notify(session, deployment_id)

    def _item_evidence(self, check, environment: Environment, values: dict[str, Any]) -> Evidence:
        spec = getattr(check, check.kind)
        try:
            if check.kind == "http":
                return evidence_checks.http_endpoint(
                    render(spec.url, values), clock=self.clock, transport=self.probe_transport
                )
            if check.kind == "tls":
                host, _, port = render(spec.address, values).rpartition(":")
                ca_file = render(spec.ca_file, values) if spec.ca_file else None
                return evidence_checks.tls_certificate(
                    host,
                    int(port),
                    minimum_days=spec.minimum_days,
                    clock=self.clock,
                    ca_file=ca_file,
                )
            hosts = environment.hosts[spec.hosts]
            if check.kind == "disk_space":
                minimum = int(float(render(str(spec.minimum_gb), values)) * 10**9)
                path = render(spec.path, values)
                found = [
                    evidence_checks.disk_space(environment, h, path, minimum, clock=self.clock)
                    for h in hosts
                ]
            else:
                script = render_shell(spec.script, values)
                found = [
                    evidence_checks.command_succeeds(
                        environment, h, script, "the check", clock=self.clock
                    )
                    for h in hosts
                ]
        except (MissingValue, ValueError) as error:
            return Evidence(
                ok=False, summary=f"could not be checked: {error}", checked_at=self.clock.now()
            )
        return Evidence(
            ok=all(e.ok for e in found),
            summary="; ".join(e.summary for e in found),
            checked_at=self.clock.now(),
        )

    def _secure_backup(
        self,
        deployment_id: int,
        step: Step,
        environment: Environment,
        values: dict[str, Any],
        outcome: "_Outcome",
    ) -> "_Outcome":
        """Record the backup the step took, prove it restores, then apply the retention count."""
        hosts = environment.hosts[step.run.hosts]
        location = values.get(BACKUP_DIR)
        if len(hosts) != 1 or not location:
            problem = (
                f"host role {step.run.hosts} has {len(hosts)} hosts; a backup is taken on one"
                if len(hosts) != 1
                else "backup_root is not set, so the backup has no folder"
            )
            return outcome.failed(problem)
        host = hosts[0]
        measured = backups.measure(environment, host, location, step.backup.dump)
        if not measured.ok:
            return outcome.extended(measured.output).failed(measured.error)
        record = Backup(
            deployment_id=deployment_id,
            environment=environment.name,
            host=host,
            location=location,
            dump=step.backup.dump,
            size_bytes=measured.size_bytes,
            sha256=measured.sha256,
            taken_at=self.clock.now(),
        )
        outcome = outcome.extended(
            f"Backup of {backups.describe(measured.size_bytes)}, SHA-256 {measured.sha256}"
        )
        if step.backup.restore_check:
            script = render_shell(step.backup.restore_check, values)
            result = run_command(environment, host, script, step.run.timeout)
            outcome = outcome.extended((result.stdout + result.stderr).rstrip("\n"))
            if not result.ok:
                reason = result.failure
                record.verification = f"the restore check failed: {reason}"
                with self.db.session() as session:
                    repository.save_backup(session, record)
                    session.commit()
                return outcome.failed(
                    f"the backup at {location} does not restore ({reason}); "
                    "the rollout cannot begin without a usable backup"
                )
            record.verification = "restored into a scratch database by the restore check"
        else:
            record.verification = "measured; the runbook gives no restore check"
        if step.backup.row_count:
            record.row_count, error = backups.read_row_count(
                environment, host, location, step.backup
            )
            if error:
                return outcome.failed(error)
            outcome = outcome.extended(f"Rows a full rollback must find: {record.row_count}")
        record.verified_at = self.clock.now()
        with self.db.session() as session:
            repository.save_backup(session, record)
            session.commit()
            old = repository.backups_beyond(session, environment.name, environment.backup_retention)
            old = [(row.id, row.host, row.location) for row in old]
        removed = []
        for backup_id, old_host, old_location in old:
            with self.db.session() as session:
                repository.extend_run(
                    session,
                    deployment_id,
                    self._run_owner.value,
                    self.clock.now(),
                    backups.REMOVE_SECONDS + LEASE_MARGIN,
                )
                session.commit()
            error = backups.remove(environment, old_host, old_location)
            if error is not None:
                outcome = outcome.extended(
                    f"Could not remove the old backup {old_location}: {error}"
                )
                continue
            with self.db.session() as session:
                row = session.get(Backup, backup_id)
                row.removed_at = self.clock.now()
                session.commit()
            removed.append(old_location)
        if removed:
            outcome = outcome.extended(
                f"Removed {len(removed)} old backup(s), keeping the newest "
                f"{environment.backup_retention}: {', '.join(removed)}"
            )
        return outcome

    def _judge_criteria(self, deployment_id: int) -> "_Outcome":
        with self.db.session() as session:
            steps = repository.steps_of(session, deployment_id)
        verdict = criteria.evaluate(self.config.runbook.success_criteria, steps)
        error = None
        if not verdict.go:
            failed = "; ".join(result.text for result in verdict.failed_must_haves)
            error = f"No-Go: must-have criteria not met: {failed}"
        return _Outcome(verdict.go, output=criteria.report(verdict), error=error)

    def _perform(self, step: Step, environment: Environment, values: dict[str, Any]) -> "_Outcome":
        if isinstance(step.spec, RunSpec):
            return self._run_on_hosts(step.spec, environment, values)
        if isinstance(step.spec, ProbeSpec):
            return self._probe(step.spec, values)
        if step.wait is not None:
            self.clock.sleep(step.wait.seconds)
            return _Outcome(True, output=f"waited {step.wait.seconds:g} s")
        if step.notify is not None:
            text = render(step.notify.text, values)
            mentions = [_mention(environment.contacts[name]) for name in step.notify.mention]
            if mentions:
                text = f"{' '.join(mentions)} {text}"
            notices = [(environment.notify_channels[name], text) for name in step.notify.to]
            names = ", ".join(step.notify.to)
            return _Outcome(True, output=f"sent to {names}", notices=notices)
        raise AssertionError(f"step kind {step.kind} does not run in a worker")

    def _run_on_hosts(self, spec: RunSpec, environment: Environment, values) -> "_Outcome":
        script = render_shell(spec.command, values)
        hosts = environment.hosts[spec.hosts]
        output: list[str] = []
        captured: dict[str, Any] = {}
        for host in hosts:
            result = run_command(environment, host, script, spec.timeout)
            if len(hosts) > 1:
                output.append(f"--- {host}")
            output.append((result.stdout + result.stderr).rstrip("\n"))
            if not result.ok:
                error = result.error or f"exit code {result.exit_code} on {host}"
                return _Outcome(
                    False,
                    exit_code=result.exit_code,
                    output="\n".join(output),
                    error=error,
                    hosts=", ".join(hosts),
                )
            for name, pattern in spec.capture.items():
                match = re.search(pattern, result.stdout, re.MULTILINE)
                if match is None:
                    return _Outcome(
                        False,
                        exit_code=result.exit_code,
                        output="\n".join(output),
                        error=f"output on {host} has no match for {name} ({pattern})",
                        hosts=", ".join(hosts),
                    )
                captured[name] = match.group(1).strip()
        return _Outcome(
            True, exit_code=0, output="\n".join(output), captured=captured, hosts=", ".join(hosts)
        )

    def _probe(self, spec: ProbeSpec, values) -> "_Outcome":
        request = ProbeRequest(
            method=spec.method,
            url=render(spec.url, values),
            headers={key: render(value, values) for key, value in spec.headers.items()},
            json_body=render_data(spec.json_body, values),
            expect_status=spec.expect_status,
            expect_json=render_data(spec.expect_json, values),
            attempts=spec.attempts,
            interval=spec.interval,
            initial_delay=spec.initial_delay,
            timeout=spec.timeout,
            capture=spec.capture,
        )
        result = run_probe(request, self.clock, self.probe_transport)
        summary = f"{request.method} {request.url}: "
        summary += f"HTTP {result.status}" if result.status else "no reply"
        summary += f" after {result.attempts} attempt(s)"
        output = summary + ("\n" + result.body if result.body else "")
        return _Outcome(
            result.ok,
            exit_code=None,
            output=output,
            error=None if result.ok else f"{request.url}: {result.error}",
            captured={key: str(value) for key, value in result.captured.items()},
        )

    # --- finishing ---------------------------------------------------------------------------

    def _finish(
        self,
        session,
        deployment: Deployment,
        status: DeploymentStatus,
        *,
        error: str | None = None,
        failed_step: str | None = None,
    ) -> None:
        now = self.clock.now()
        deployment.status = status
        deployment.cancel_requested_by = None  # a request left from before this end is spent
        deployment.finished_at = now
        deployment.updated_at = now
        deployment.error = error
        repository.mark_not_run(session, deployment.id)
        repository.release_environment(session, deployment)
        if deployment.procedure.startswith(f"{ROLLBACK}:") and deployment.parent_id:
            _note_rollback(session, deployment)
        if status == DeploymentStatus.CANCELLED:
            repository.queue_post(
                session, deployment_id=deployment.id, kind="cancelled", created_at=now
            )
        if status == DeploymentStatus.FAILED:
            repository.queue_post(
                session,
                deployment_id=deployment.id,
                kind="alert",
                step_id=failed_step,
                created_at=now,
            )
        repository.queue_post(session, deployment_id=deployment.id, kind="log", created_at=now)
        repository.audit(
            session,
            now=now,
            actor="gonogo",
            action="deployment.finished",
            deployment_id=deployment.id,
            status=status.value,
        )
        logger.info(
            "Deployment %s of %s to %s finished: %s",
            deployment.id,
            deployment.version,
            deployment.environment,
            status.value,
        )

    def _pause(self, session, deployment: Deployment, next_step: StepRun) -> None:
        """Stop before ``next_step``, whose phase no command has started yet."""
        now = self.clock.now()
        deployment.status = DeploymentStatus.PAUSED
        deployment.updated_at = now
        repository.queue_post(
            session,
            deployment_id=deployment.id,
            kind="paused",
            step_id=next_step.step_id,
            created_at=now,
        )
        repository.audit(
            session,
            now=now,
            actor="gonogo",
            action="deployment.paused",
            deployment_id=deployment.id,
            next_step=next_step.step_id,
        )
        logger.info("Deployment %s paused before step %s", deployment.id, next_step.step_id)

    def _fail_unexpectedly(self, deployment_id: int) -> None:
        with self.db.session() as session:
            deployment = repository.get_deployment(session, deployment_id)
            if deployment is None or deployment.status.finished:
                return
            running = [
                row
                for row in repository.steps_of(session, deployment_id)
                if row.status == StepStatus.RUNNING
            ]
            for row in running:
                repository.update_step(
                    session,
                    row,
                    status=StepStatus.FAILED,
                    finished_at=self.clock.now(),
                    error="gonogo hit an internal error; see its log",
                )
            self._finish(
                session,
                deployment,
                DeploymentStatus.FAILED,
                error="gonogo hit an internal error; see its log",
                failed_step=running[0].step_id if running else None,
            )
        self.observer.deployment_changed(deployment_id)

    def _commit_and_notify(self, session, deployment_id: int) -> None:
        session.commit()
        self.observer.deployment_changed(deployment_id)


class _Outcome:
    def __init__(
        self,
        ok: bool,
        *,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
        captured: dict[str, Any] | None = None,
        notices: list[tuple[str, str]] | None = None,
        hosts: str | None = None,
    ):
        self.ok = ok
        self.exit_code = exit_code
        self.output = output
        self.error = error
        self.captured = captured or {}
        self.notices = notices or []
        self.hosts = hosts

    def extended(self, text: str) -> "_Outcome":
        """Return this outcome with ``text`` added to its output."""
        joined = "\n".join(part for part in (self.output, text) if part)
        return _Outcome(
            self.ok,
            exit_code=self.exit_code,
            output=joined,
            error=self.error,
            captured=self.captured,
            notices=self.notices,
            hosts=self.hosts,
        )

    def failed(self, error: str) -> "_Outcome":
        failed = self.extended("")
        failed.ok, failed.error = False, error
        return failed


_CONTINUE: Callable[[], None] = lambda: None  # noqa: E731  (a marker: go on without slow work)


VERIFIED_AFTER_ROLLBACK = (
    "version_after_rollback",
    "approval_rows_after_rollback",
    "api_approvals_after_rollback",
)


def _note_rollback(session, rollback: Deployment) -> None:
    """Write the rollback's outcome into its release, whose log lists it."""
    release = repository.get_deployment(session, rollback.parent_id)
    values = rollback.variables or {}
    entry = {
        "id": rollback.id,
        "mode": rollback.procedure.partition(":")[2],
        "status": rollback.status.value,
        "requested_by": rollback.requested_by,
        "finished_at": rollback.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "backup": values.get("backup_dir"),
        "error": rollback.error,
        **{name: values.get(name) for name in VERIFIED_AFTER_ROLLBACK},
    }
    earlier = [
        item for item in (release.variables or {}).get("rollbacks", []) if item["id"] != rollback.id
    ]
    release.variables = {**(release.variables or {}), "rollbacks": [*earlier, entry]}


def _sign_off_for(session, deployment_id: int, step_id: str) -> SignOff | None:
    for sign_off in repository.sign_offs_of(session, deployment_id):
        if sign_off.step_id == step_id and not sign_off.slot:
            return sign_off
    return None


def checkable_items(step: Step, environment: Environment) -> list[int]:
    """Return the indexes of items the bot checks itself in ``environment``."""
    return [
        index
        for index, item in enumerate(step.manual.items)
        if item.check is not None
        and all(environment.settings.get(name) is not None for name in item.check.requires)
    ]


def _mention(contact: str) -> str:
    """Return Slack's mention of a user ID; a @handle stays text, since mentioning a user
    group needs its ID."""
    return f"<@{contact}>" if re.fullmatch(r"[UW][A-Z0-9]+", contact) else contact


def _step_seconds(step: Step, environment: Environment) -> float:
    """Return the longest a step may take; the worker's lease must outlast it."""
    if step.run:
        hosts = len(environment.hosts[step.run.hosts])
        connect = environment.ssh.connect_timeout if environment.ssh else 0.0
        seconds = hosts * (step.run.timeout + connect)
        if step.backup:
            # Measuring twice, the restore check (as long as the command may take) and
            # removing the backups past the retention count, one at a time.
            seconds += 2 * backups.MEASURE_SECONDS + step.run.timeout
            seconds += backups.REMOVE_SECONDS * 2
        return seconds
    if step.probe:
        probe = step.probe
        return probe.initial_delay + probe.attempts * (probe.timeout + probe.interval)
    if step.wait:
        return step.wait.seconds
    return 0.0


def _tail(text: str) -> str:
    lines = text.strip("\n").splitlines()[-OUTPUT_TAIL_LINES:]
    tail = "\n".join(lines)
    return tail[-OUTPUT_TAIL_CHARS:]


def _missing_value_message(error: MissingValue, environment: Environment) -> str:
    name = error.name
    if name.startswith("secrets."):
        variable = environment.secrets.get(name.removeprefix("secrets."), "?")
        return f"secret {name} is missing: set the environment variable {variable}"
    return f"{{{{ {name} }}}} has no value: set it in environment {environment.name}"
