"""Tests of the atomic updates in storage.repository, on SQLite and on PostgreSQL.

Each guarantee that must hold across processes (one active deployment per environment, one
worker per run, the first sign-off wins, each outbox row sent once) is checked with separate
sessions, as two processes would use them.
"""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from storage import repository
from storage.db import Database
from storage.models import Backup, Deployment, OutboxMessage, SignOff, StepRun
from tests.support.postgres import scratch_database

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
LEASE_SECONDS = 300.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
        database.create_tables()
        yield database
        database.dispose()
        return
    with scratch_database("gonogo_storage") as url:
        database = Database(url)
        database.create_tables()
        yield database
        database.dispose()


# --- one active deployment per environment ---------------------------------------------------


def test_second_deployment_busy(db: Database):
    first = create(db, "production")

    with pytest.raises(repository.EnvironmentBusy) as caught:
        create(db, "production")

    assert caught.value.active.id == first.id
    assert f"busy with deployment {first.id}" in str(caught.value)


def test_busy_deployment_not_stored(db: Database):
    create(db, "production")

    with pytest.raises(repository.EnvironmentBusy):
        create(db, "production", version="v2.0.0")

    with db.session() as session:
        versions = [d.version for d in session.exec(select(Deployment))]
    assert versions == ["v1.4.2"]


def test_other_environment_free(db: Database):
    first = create(db, "production")

    second = create(db, "staging")

    assert second.id != first.id


def test_release_frees_environment(db: Database):
    first = create(db, "production")
    with db.session() as session:
        repository.release_environment(session, repository.get_deployment(session, first.id))

    second = create(db, "production")

    with db.session() as session:
        active = repository.active_deployment(session, "production")
    assert active.id == second.id


def test_release_by_other_deployment_ignored(db: Database):
    first = create(db, "production")
    stranger = create(db, "staging")
    stranger.environment = "production"

    with db.session() as session:
        repository.release_environment(session, stranger)

    with db.session() as session:
        assert repository.active_deployment(session, "production").id == first.id


def test_steps_stored_in_order(db: Database):
    deployment = create(db, "production")

    with db.session() as session:
        steps = repository.steps_of(session, deployment.id)

    assert [step.step_id for step in steps] == ["backup", "go-no-go", "pull-image"]
    assert {step.deployment_id for step in steps} == {deployment.id}


# --- sign-offs -------------------------------------------------------------------------------


def test_second_sign_off_rejected(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        repository.record_sign_off(session, sign_off(deployment.id, "approved", "U0FIRST"))

    with pytest.raises(repository.AlreadyDecided) as caught:
        with db.session() as session:
            repository.record_sign_off(session, sign_off(deployment.id, "rejected", "U0SECOND"))

    assert caught.value.sign_off.user_id == "U0FIRST"
    assert caught.value.sign_off.decision == "approved"
    assert "already approved" in str(caught.value)


def test_first_sign_off_kept(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        repository.record_sign_off(session, sign_off(deployment.id, "approved", "U0FIRST"))
    with pytest.raises(repository.AlreadyDecided):
        with db.session() as session:
            repository.record_sign_off(session, sign_off(deployment.id, "rejected", "U0SECOND"))

    with db.session() as session:
        stored = repository.sign_offs_of(session, deployment.id)

    assert [(s.user_id, s.decision) for s in stored] == [("U0FIRST", "approved")]


def test_sign_offs_on_other_steps(db: Database):
    deployment = create(db, "production")

    with db.session() as session:
        repository.record_sign_off(session, sign_off(deployment.id, "done", "U1", "backup"))
    with db.session() as session:
        repository.record_sign_off(session, sign_off(deployment.id, "approved", "U2"))

    with db.session() as session:
        assert len(repository.sign_offs_of(session, deployment.id)) == 2


# --- worker leases ---------------------------------------------------------------------------


def test_claim_run_one_owner(db: Database):
    deployment = create(db, "production")

    first = claim_run(db, deployment.id, "worker-a")
    second = claim_run(db, deployment.id, "worker-b")

    assert first == 0
    assert second is None
    with db.session() as session:
        assert repository.get_deployment(session, deployment.id).lease_owner == "worker-a"


def test_claim_run_after_lease_expired(db: Database):
    deployment = create(db, "production")
    claim_run(db, deployment.id, "worker-a")

    later = NOW + timedelta(seconds=LEASE_SECONDS + 1)

    assert claim_run(db, deployment.id, "worker-b", later) == 0


def test_claim_run_concurrent(db: Database):
    deployment = create(db, "production")
    owners = [f"worker-{index}" for index in range(8)]

    results = run_together(owners, lambda owner: claim_run(db, deployment.id, owner))

    assert sum(1 for seen in results.values() if seen == 0) == 1
    assert sum(1 for seen in results.values() if seen is None) == 7


def test_release_run_after_wake_fails(db: Database):
    deployment = create(db, "production")
    seen = claim_run(db, deployment.id, "worker-a")
    with db.session() as session:
        repository.wake(session, deployment.id)

    with db.session() as session:
        released = repository.release_run(session, deployment.id, "worker-a", seen)

    assert not released
    with db.session() as session:
        assert repository.get_deployment(session, deployment.id).lease_owner == "worker-a"


def test_release_run_with_current_wake(db: Database):
    deployment = create(db, "production")
    claim_run(db, deployment.id, "worker-a")
    with db.session() as session:
        repository.wake(session, deployment.id)
        repository.wake(session, deployment.id)

    with db.session() as session:
        released = repository.release_run(session, deployment.id, "worker-a", 2)

    assert released
    with db.session() as session:
        row = repository.get_deployment(session, deployment.id)
    assert row.lease_owner is None
    assert row.lease_until is None


def test_release_run_by_other_owner_fails(db: Database):
    deployment = create(db, "production")
    seen = claim_run(db, deployment.id, "worker-a")

    with db.session() as session:
        assert not repository.release_run(session, deployment.id, "worker-b", seen)


def test_claim_run_sees_wake_count(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        repository.wake(session, deployment.id)

    assert claim_run(db, deployment.id, "worker-a") == 1


# --- outbox ----------------------------------------------------------------------------------


def test_claim_outbox_disjoint(db: Database):
    deployment = create(db, "production", message_ts="1700000000.000100")
    enqueue(db, deployment.id, 5)

    with db.session() as session:
        first = [row.id for row in repository.claim_outbox(session, "a", NOW, 60, limit=3)]
    with db.session() as session:
        second = [row.id for row in repository.claim_outbox(session, "b", NOW, 60, limit=3)]

    assert len(first) == 3
    assert len(second) == 2
    assert set(first).isdisjoint(second)
    assert first == sorted(first)
    assert first + second == sorted(first + second)


def test_claim_outbox_concurrent(db: Database):
    deployment = create(db, "production", message_ts="1700000000.000100")
    enqueue(db, deployment.id, 60)
    owners = [f"notifier-{index}" for index in range(4)]

    def claim_all(owner: str) -> list[int]:
        claimed: list[int] = []
        while True:
            with db.session() as session:
                rows = repository.claim_outbox(session, owner, NOW, 60, limit=4)
            if not rows:
                return claimed
            claimed += [row.id for row in rows]

    results = run_together(owners, claim_all)
    every_claim = [message_id for claimed in results.values() for message_id in claimed]

    assert len(every_claim) == 60
    assert len(set(every_claim)) == 60


def test_claim_outbox_waits_for_message(db: Database):
    deployment = create(db, "production")
    enqueue(db, deployment.id, 2)

    with db.session() as session:
        assert repository.claim_outbox(session, "a", NOW, 60) == []


def test_claim_outbox_after_claim_expired(db: Database):
    deployment = create(db, "production", message_ts="1700000000.000100")
    enqueue(db, deployment.id, 1)
    with db.session() as session:
        repository.claim_outbox(session, "a", NOW, 60)

    later = NOW + timedelta(seconds=61)
    with db.session() as session:
        early = repository.claim_outbox(session, "b", NOW + timedelta(seconds=59), 60)
    with db.session() as session:
        late = repository.claim_outbox(session, "b", later, 60)

    assert early == []
    assert [row.claimed_by for row in late] == ["b"]


def test_claim_outbox_skips_sent(db: Database):
    deployment = create(db, "production", message_ts="1700000000.000100")
    enqueue(db, deployment.id, 2)
    with db.session() as session:
        first = repository.claim_outbox(session, "a", NOW, 60, limit=1)[0]
        first.sent_at = NOW

    with db.session() as session:
        pending = repository.pending_outbox_count(session)
    with db.session() as session:
        later = repository.claim_outbox(session, "b", NOW + timedelta(hours=1), 60)

    assert pending == 1
    assert [row.id for row in later] == [first.id + 1]


def test_reacquire_taken_environment(db: Database):
    first = create(db, "production")
    with db.session() as session:
        repository.release_environment(session, repository.get_deployment(session, first.id))
    second = create(db, "production")

    with pytest.raises(repository.EnvironmentBusy) as busy:
        with db.session() as session:
            repository.take_environment(session, repository.get_deployment(session, first.id), NOW)

    assert busy.value.active.id == second.id


def test_reacquire_free_environment(db: Database):
    first = create(db, "production")
    with db.session() as session:
        repository.release_environment(session, repository.get_deployment(session, first.id))
    with db.session() as session:
        repository.take_environment(session, repository.get_deployment(session, first.id), NOW)
    with db.session() as session:
        active = repository.active_deployment(session, "production")

    assert active.id == first.id


# --- checklist message claim -----------------------------------------------------------------


def test_claim_message_post_once(db: Database):
    deployment = create(db, "production")

    results = run_together(
        ["a", "b", "c"],
        lambda owner: session_call(
            db, repository.claim_message_post, deployment.id, owner, NOW, 60
        ),
    )

    assert sorted(results.values()) == [False, False, True]


def test_lapsed_message_claim_is_taken_over(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        first = repository.claim_message_post(session, deployment.id, "a", NOW, 60)
    with db.session() as session:
        too_early = repository.claim_message_post(session, deployment.id, "b", NOW, 60)
    later = NOW + timedelta(seconds=61)
    with db.session() as session:
        unclaimed = repository.deployments_without_message(session, later)
    with db.session() as session:
        taken_over = repository.claim_message_post(session, deployment.id, "b", later, 60)

    assert first
    assert not too_early
    assert unclaimed == [deployment.id]
    assert taken_over


def test_posted_message_is_not_claimed_again(db: Database):
    deployment = create(db, "production", message_ts="1700000000.000100")
    later = NOW + timedelta(hours=1)
    with db.session() as session:
        claimed = repository.claim_message_post(session, deployment.id, "a", later, 60)

    assert not claimed


# --- helpers ---------------------------------------------------------------------------------


# --- backups ---------------------------------------------------------------------------------


def test_backup_size_past_two_gib(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        repository.save_backup(
            session,
            Backup(
                deployment_id=deployment.id,
                environment="production",
                host="app-1",
                location="/backups/backup-20261204-101500-d1",
                dump="db_backup.sql",
                size_bytes=3_000_000_000,
                sha256="0" * 64,
                taken_at=NOW,
            ),
        )
        session.commit()
    with db.session() as session:
        stored = repository.backup_of(session, deployment.id)

    assert stored.size_bytes == 3_000_000_000


def create(db: Database, environment: str, **fields) -> Deployment:
    values = {
        "runbook": "vvb-v11",
        "environment": environment,
        "version": "v1.4.2",
        "requested_by": "U0RELEASE",
        "request_channel": "C0REQUESTS",
        "channel": "C0DEPLOY",
        "created_at": NOW,
        "updated_at": NOW,
        **fields,
    }
    steps = [
        StepRun(
            deployment_id=0,
            position=position,
            phase_id="phase",
            phase_title="Phase",
            step_id=step_id,
            title=step_id,
            kind=kind,
        )
        for position, (step_id, kind) in enumerate(
            [("backup", "run"), ("go-no-go", "gate"), ("pull-image", "run")]
        )
    ]
    with db.session() as session:
        return repository.create_deployment(session, Deployment(**values), steps, NOW)


def sign_off(deployment_id: int, decision: str, user_id: str, step_id: str = "go-no-go"):
    return SignOff(
        deployment_id=deployment_id,
        step_id=step_id,
        decision=decision,
        user_id=user_id,
        decided_at=NOW,
    )


def claim_run(db: Database, deployment_id: int, owner: str, now: datetime = NOW) -> int | None:
    with db.session() as session:
        return repository.claim_run(session, deployment_id, owner, now, LEASE_SECONDS)


def enqueue(db: Database, deployment_id: int, count: int) -> None:
    with db.session() as session:
        for index in range(count):
            message = OutboxMessage(
                deployment_id=deployment_id,
                kind="notify",
                channel="C0OPS",
                text=f"notice {index}",
                created_at=NOW,
            )
            repository.enqueue(session, message)


def session_call(db: Database, function, *arguments):
    with db.session() as session:
        return function(session, *arguments)


def run_together(owners: list[str], work) -> dict:
    """Call ``work(owner)`` in one thread per owner, released at once; return the results."""
    barrier = threading.Barrier(len(owners))
    results: dict = {}
    errors: list[BaseException] = []

    def run(owner: str) -> None:
        barrier.wait()
        try:
            results[owner] = work(owner)
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == len(owners)
    return results


def test_claim_run_excludes_same_owner_prefix(db: Database):
    deployment = create(db, "production")
    with db.session() as session:
        first = repository.claim_run(session, deployment.id, "proc:run-a", NOW, 60)
    with db.session() as session:
        second = repository.claim_run(session, deployment.id, "proc:run-b", NOW, 60)
    with db.session() as session:
        again = repository.claim_run(session, deployment.id, "proc:run-a", NOW, 60)

    assert first is not None
    assert second is None
    assert again is None  # a lease is never taken twice, not even by its holder
