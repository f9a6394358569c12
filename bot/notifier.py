"""Keeps Slack in step with the database: one checklist message per deployment, and the outbox.

Changes are coalesced: a checklist message is redrawn at most once per ``min_interval``
seconds and only when its rendering changed. With the default interval of 1.2 s that is at
most 50 updates a minute per message, chat.update's documented allowance (Tier 3). Outbox
rows (step output, alerts, notices, the log) are sent in order, each once, whichever process
claims them. A 429 reply is retried after its Retry-After by slack_sdk's
RateLimitErrorRetryHandler in the client.
"""

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bot import views
from commands.context import Directory
from commands.deploy_log import render_markdown
from engine import rollback as rollbacks
from engine.clock import Clock
from engine.config import Config
from storage import repository
from storage.db import Database
from storage.models import Deployment, OutboxMessage

logger = logging.getLogger(__name__)

OUTBOX_CLAIM_SECONDS = 60.0
# NOTE: a process that dies after Slack accepted the post but before the ts was stored leaves
# a second checklist message behind once this claim lapses.
MESSAGE_CLAIM_SECONDS = 60.0
MAX_SEND_ATTEMPTS = 5
GROUP_HANDLE = re.compile(r"(?<![\w<@])@([a-z0-9][a-z0-9._-]*)")
JOINABLE_KINDS = frozenset(
    {"step_output", "decision", "paused"}
)  # thread replies that may share a post


class SlackPort(Protocol):
    """The few Web API calls the notifier makes; bot.slack_port and bot.console implement it."""

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> str:
        """Post a message and return its ts."""

    def update_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None
    ) -> None: ...

    def upload_file(self, channel: str, filename: str, content: str, title: str) -> None:
        """Upload a text file to a channel."""


class Notifier:
    def __init__(
        self,
        db: Database,
        config: Config,
        slack: SlackPort,
        *,
        owner: str,
        min_interval: float = 1.2,
        post_interval: float = 1.0,
        poll_interval: float = 2.0,
        clock: Clock | None = None,
        directory: Directory | None = None,
    ):
        self.db = db
        self.config = config
        self.slack = slack
        self.owner = owner
        self.min_interval = min_interval
        self.post_interval = post_interval
        self.poll_interval = poll_interval
        self.clock = clock or Clock()
        self.directory = directory
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn: dict[int, str] = {}  # deployment id -> hash of the last rendering sent
        self._drawn_at: dict[int, float] = {}
        self._posted_at: dict[str, float] = {}  # channel -> monotonic time of the last post

    # --- RunObserver -------------------------------------------------------------------------

    def deployment_changed(self, deployment_id: int) -> None:
        with self._lock:
            self._dirty.add(deployment_id)
            self._idle.clear()
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gonogo-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is left to draw or send; True unless the timeout ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            if self._idle.wait(timeout=0.1) and not self._dirty:
                with self.db.session() as session:
                    if repository.pending_outbox_count(session) == 0:
                        return True
        return False

    def run_once(self) -> None:
        """Redraw what changed and send what is queued; the loop calls this after each wake."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for deployment_id in sorted(dirty | self._unposted()):
            delay = self._redraw(deployment_id)
            if delay:
                with self._lock:
                    self._dirty.add(deployment_id)
        self._send_outbox()

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        logger.info("Notifier %s started", self.owner)
        while not self._stop.is_set():
            self._wake.wait(timeout=self.poll_interval)
            self._wake.clear()
            try:
                self.run_once()
            except Exception:
                logger.exception("Notifier pass failed; retrying in %.1f s", self.poll_interval)
                self._stop.wait(self.poll_interval)
            with self._lock:
                pause = self._next_pause() if self._dirty else None
                if pause is None:
                    self._idle.set()
            if pause is not None:
                self._stop.wait(pause)
                self._wake.set()
        logger.info("Notifier %s stopped", self.owner)

    def _next_pause(self) -> float:
        now = time.monotonic()
        waits = [
            self._drawn_at.get(deployment_id, 0.0) + self.min_interval - now
            for deployment_id in self._dirty
        ]
        return max(0.05, min(waits, default=0.05))

    def _unposted(self) -> set[int]:
        """Return deployments whose checklist message no process has claimed yet."""
        with self.db.session() as session:
            return set(repository.deployments_without_message(session, self.clock.now()))

    def _redraw(self, deployment_id: int) -> bool:
        """Post or update the checklist message; return True when it must wait for its turn."""
        with self.db.session() as session:
            deployment = repository.get_deployment(session, deployment_id)
            if deployment is None:
                return False
            steps = repository.steps_of(session, deployment_id)
            sign_offs = repository.sign_offs_of(session, deployment_id)
            item_states = repository.all_item_states(session, deployment_id)
            target = rollbacks.rollback_target(self.config, session, deployment)
        text, blocks = views.checklist_message(
            self.config, deployment, steps, sign_offs, item_states, target
        )
        digest = hashlib.sha256(json.dumps([text, blocks], sort_keys=True).encode()).hexdigest()
        if self._drawn.get(deployment_id) == digest:
            return False
        if deployment.message_ts is None:
            return self._post_checklist(deployment, text, blocks, digest)
        wait = self._drawn_at.get(deployment_id, 0.0) + self.min_interval - time.monotonic()
        if wait > 0:
            return True
        try:
            self.slack.update_message(deployment.channel, deployment.message_ts, text, blocks)
        except Exception as error:
            logger.warning("Updating the message of deployment %s failed: %s", deployment_id, error)
            self._drawn_at[deployment_id] = time.monotonic()
            return True
        self._drawn[deployment_id] = digest
        self._drawn_at[deployment_id] = time.monotonic()
        return False

    def _post_checklist(self, deployment: Deployment, text, blocks, digest: str) -> bool:
        with self.db.session() as session:
            claimed = repository.claim_message_post(
                session, deployment.id, self.owner, self.clock.now(), MESSAGE_CLAIM_SECONDS
            )
            if not claimed:
                # Another process posts it, perhaps drawn before this change, so this one
                # redraws once that process has stored the ts.
                self._drawn_at[deployment.id] = time.monotonic()
                return True
        try:
            ts = self.slack.post_message(deployment.channel, text, blocks)
        except Exception as error:
            logger.error(
                "Posting the checklist of deployment %s to %s failed: %s",
                deployment.id,
                deployment.channel,
                error,
            )
            with self.db.session() as session:
                row = repository.get_deployment(session, deployment.id)
                row.message_claimed_by = None  # let the next pass try again
                row.message_claimed_until = None
            self._drawn_at[deployment.id] = time.monotonic()
            return True
        with self.db.session() as session:
            row = repository.get_deployment(session, deployment.id)
            row.message_ts = ts
        logger.info(
            "Deployment %s: checklist posted to %s at %s", deployment.id, deployment.channel, ts
        )
        self._drawn[deployment.id] = digest
        self._drawn_at[deployment.id] = time.monotonic()
        return False

    def _send_outbox(self) -> None:
        with self.db.session() as session:
            messages = repository.claim_outbox(
                session, self.owner, self.clock.now(), OUTBOX_CLAIM_SECONDS
            )
        for post in self._batch(messages):
            self._send(post)

    def _batch(self, messages: list[OutboxMessage]) -> list["_Post"]:
        """Render claimed rows, joining neighbouring thread replies into one post each."""
        posts: list[_Post] = []
        for message in messages:
            with self.db.session() as session:
                deployment = repository.get_deployment(session, message.deployment_id)
                steps = repository.steps_of(session, message.deployment_id)
                sign_offs = repository.sign_offs_of(session, message.deployment_id)
            if message.kind == "log_file":
                posts.append(self._log_file(message, deployment, steps, sign_offs))
                continue
            try:
                channel, texts, thread, broadcast = self._render(
                    message, deployment, steps, sign_offs
                )
            except Exception as error:
                logger.exception("Rendering outbox message %s failed", message.id)
                self._record_failure([message], error)
                continue
            last = posts[-1] if posts else None
            joinable = message.kind in JOINABLE_KINDS and len(texts) == 1
            if (
                joinable
                and last is not None
                and last.joinable
                and (last.channel, last.thread) == (channel, thread)
                and len(last.texts[0]) + len(texts[0]) + 2 <= views.MESSAGE_TEXT_LIMIT
            ):
                last.texts[0] += "\n\n" + texts[0]
                last.rows.append(message)
            else:
                posts.append(_Post([message], channel, list(texts), thread, broadcast, joinable))
                if message.kind == "alert":
                    with self.db.session() as session:
                        target = rollbacks.rollback_target(self.config, session, deployment)
                    posts[-1].blocks = views.alert_blocks(texts[0], target)
        return posts

    def _log_file(self, message: OutboxMessage, deployment, steps, sign_offs) -> "_Post":
        with self.db.session() as session:
            trail = repository.audit_trail(session, deployment.id)
            item_states = repository.all_item_states(session, deployment.id)
        content = render_markdown(self.config, deployment, steps, sign_offs, trail, item_states)
        filename = f"deployment-{deployment.id}-{deployment.environment}-{deployment.version}.md"
        title = f"Deployment log #{deployment.id}: {deployment.version} to {deployment.environment}"
        return _Post([message], message.channel, [], None, False, False, (filename, content, title))

    def _send(self, post: "_Post") -> None:
        try:
            if post.upload is not None:
                self._pace(post.channel)
                self.slack.upload_file(post.channel, *post.upload)
            # NOTE: a log split over several messages is sent again whole after a failure.
            for text in post.texts:
                self._pace(post.channel)
                self.slack.post_message(
                    post.channel, text, post.blocks, thread_ts=post.thread, broadcast=post.broadcast
                )
        except Exception as error:
            ids = ", ".join(str(row.id) for row in post.rows)
            logger.warning(
                "Sending outbox message(s) %s to %s failed: %s", ids, post.channel, error
            )
            self._record_failure(post.rows, error)
            return
        with self.db.session() as session:
            for message in post.rows:
                row = session.get(OutboxMessage, message.id)
                row.sent_at = self.clock.now()

    def _pace(self, channel: str) -> None:
        """Keep posts to one channel ``post_interval`` apart (chat.postMessage allows ~1/s)."""
        wait = self._posted_at.get(channel, 0.0) + self.post_interval - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        self._posted_at[channel] = time.monotonic()

    def _record_failure(self, messages: list[OutboxMessage], error: Exception) -> None:
        with self.db.session() as session:
            for message in messages:
                row = session.get(OutboxMessage, message.id)
                row.attempts += 1
                row.last_error = str(error)[:500]
                row.claimed_by = None
                row.claimed_until = None
                if row.attempts >= MAX_SEND_ATTEMPTS:
                    logger.error("Giving up on message %s after %d attempts", row.id, row.attempts)
                    row.sent_at = self.clock.now()

    def _mention_groups(self, text: str) -> str:
        """Turn ``@handle`` of a known user group into Slack's mention of that group."""
        if self.directory is None:
            return text

        def mention(match: re.Match) -> str:
            group_id = self.directory.group_id(match.group(1))
            return f"<!subteam^{group_id}>" if group_id else match.group(0)

        return GROUP_HANDLE.sub(mention, text)

    def _render(self, message: OutboxMessage, deployment: Deployment, steps, sign_offs):
        """Return (channel, texts, thread ts, broadcast) for an outbox row."""
        by_id = {step.step_id: step for step in steps}
        thread = deployment.message_ts
        channel = deployment.channel
        if message.kind == "notify":
            return message.channel, [self._mention_groups(message.text)], None, False
        if message.kind == "step_output":
            return channel, [views.step_output_message(by_id[message.step_id])], thread, False
        if message.kind == "alert":
            text = views.alert_message(deployment, steps, message.step_id)
            return channel, [text], thread, True
        if message.kind == "decision":
            slot = message.text or ""  # the slot of a final sign-off, empty for other steps
            sign_off = next(s for s in sign_offs if s.step_id == message.step_id and s.slot == slot)
            return (
                channel,
                [views.decision_message(sign_off, by_id[message.step_id])],
                thread,
                False,
            )
        if message.kind == "item":
            with self.db.session() as session:
                item_states = repository.all_item_states(session, deployment.id)
            step = by_id[message.step_id]
            text = views.item_message(self.config, step, item_states, int(message.text))
            return channel, [text], thread, False
        if message.kind == "cancelled":
            return channel, [views.cancelled_message(deployment, steps)], thread, False
        if message.kind == "reminder":
            step = by_id[message.step_id]
            text = views.reminder_message(self.config, deployment, step, sign_offs)
            return channel, [text], thread, False
        if message.kind == "paused":
            text = views.paused_message(self.config, by_id[message.step_id])
            return channel, [text], thread, False
        if message.kind == "log":
            with self.db.session() as session:
                item_states = repository.all_item_states(session, deployment.id)
            texts = views.log_messages(self.config, deployment, steps, sign_offs, item_states)
            return channel, texts, thread, False
        raise ValueError(f"unknown outbox message kind {message.kind!r}")


@dataclass
class _Post:
    """One chat.postMessage (or a few, for a long log) carrying one or more outbox rows."""

    rows: list[OutboxMessage]
    channel: str
    texts: list[str]
    thread: str | None
    broadcast: bool
    joinable: bool
    upload: tuple[str, str, str] | None = None  # file name, content and title of a file to upload
    blocks: list[dict[str, Any]] | None = None  # of a post with one text
