"""``/backups [environment]``: list the environment's recorded backups, newest first.

It reads the database only. Sizes and checksums are the ones recorded when each backup was
taken, not measured again on the host.
"""

from typing import Any

from commands.context import Reply, Request, Services
from commands.lookup import environment_for
from engine import backups as backup_files
from storage import repository
from storage.models import Backup, Deployment

ROLES = ("deployers", "approvers", "on_call")
# A heading, a retention note, one section per backup and a footnote stay under Slack's
# 50 blocks a message.
MAX_LISTED = 45
SECTION_LIMIT = 3000  # Slack's maximum characters of a section's text
HEADER_LIMIT = 150  # Slack's maximum characters of a header block
MESSAGE_TEXT_LIMIT = 3900  # Slack advises at most 4,000 characters of message text
SHA256_DIGITS_SHOWN = 12  # of the 64 hex digits the record keeps


def handle(services: Services, request: Request) -> Reply:
    environment_name, error = environment_for(services, request, ROLES, "see its backups")
    if error:
        return Reply(error)
    environment = services.config.environments[environment_name]

    # The row beyond MAX_LISTED, if any, shows that older backups are left out.
    with services.db.session() as session:
        found = repository.backups_in(session, environment_name, limit=MAX_LISTED + 1)
        versions = {
            backup.deployment_id: _version(session.get(Deployment, backup.deployment_id))
            for backup in found
        }
    if not found:
        return Reply(no_backups_text(environment_name))

    listed = found[:MAX_LISTED]
    heading = heading_text(environment_name)
    retention = retention_text(environment.backup_retention)
    entries = [backup_text(backup, versions[backup.deployment_id]) for backup in listed]
    left_out = len(found) > MAX_LISTED
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(heading, HEADER_LIMIT)}},
        _section(retention),
        *(_section(entry) for entry in entries),
    ]
    if left_out:
        blocks.append(_context(older_text(MAX_LISTED)))
    return Reply(summary_text(heading, retention, entries, left_out), blocks=blocks)


def no_backups_text(environment: str) -> str:
    return (
        f"`{environment}` has no recorded backups. A backup is recorded when the runbook's "
        f"backup step passes: run `/backup {environment}` during a deployment, or "
        f"`/deploy <version> {environment}` for the whole runbook."
    )


def heading_text(environment: str) -> str:
    return f"Backups of {environment}, newest first"


def retention_text(retention: int) -> str:
    kept = "newest verified backup" if retention == 1 else f"newest {retention} verified backups"
    return (
        f"gonogo keeps the {kept} on the hosts and removes older ones each time a new backup "
        "is verified. Backups that failed their restore check are not counted, and stay on the "
        "host for a person to remove."
    )


def backup_text(backup: Backup, version: str | None) -> str:
    """Describe one backup in three lines: what it belongs to, what it holds, and its state."""
    mark, state = _state(backup)
    release = f" · `{version}`" if version else ""
    rows = "row count not recorded" if backup.row_count is None else f"{backup.row_count} rows"
    checksum = backup.sha256[:SHA256_DIGITS_SHOWN]
    return (
        f"{mark} *Deployment #{backup.deployment_id}*{release} · taken "
        f"{backup_files.taken_at_text(backup.taken_at)}\n"
        f"{backup_files.describe(backup.size_bytes)} · SHA-256 `{checksum}` · {rows} · "
        f"`{backup.location}` on `{backup.host}`\n"
        f"{state}"
    )


def older_text(shown: int) -> str:
    return f"Only the newest {shown} backups are listed. Older records stay in the database."


def summary_text(heading: str, retention: str, entries: list[str], left_out: bool) -> str:
    """Return the reply's plain text: as many entries as fit Slack's message text limit."""
    parts = [f"*{heading}*", retention]
    room = MESSAGE_TEXT_LIMIT - 100  # the rest is for the closing note
    listed = 0
    for entry in entries:
        if len("\n\n".join([*parts, entry])) > room:
            break
        parts.append(entry)
        listed += 1
    if left_out or listed < len(entries):
        parts.append(f"This text lists only the newest {listed} backups.")
    return "\n\n".join(parts)


def _state(backup: Backup) -> tuple[str, str]:
    if backup.removed_at is not None:
        when = backup_files.taken_at_text(backup.removed_at)
        return ":heavy_minus_sign:", f"Removed by the retention count on {when}."
    if backup.verified_at is not None:
        when = backup_files.taken_at_text(backup.verified_at)
        detail = f": {backup.verification}" if backup.verification else ""
        return ":white_check_mark:", f"Verified on {when}{detail}."
    if backup.verification:
        return ":x:", f"Did not restore cleanly ({backup.verification})."
    return ":x:", "Not verified: no check is recorded."


def _version(deployment: Deployment | None) -> str | None:
    return deployment.version if deployment is not None else None


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}]}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
