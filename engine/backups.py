"""Measuring a deployment's backup on its host and removing old backups.

After the backup step's command succeeds, the runner measures the dump on the host (size and
SHA-256), runs the runbook's restore check, reads the row count, and stores what it found.
A rollback later restores only a backup recorded here, and checks it against the record first.
"""

import re
import shlex
from dataclasses import dataclass
from datetime import datetime

from engine.config import BACKUP_ROOT, BackupSpec, Environment
from engine.hosts import run_command

MEASURE_SECONDS = 600.0  # hashing a large dump takes a while
REMOVE_SECONDS = 300.0
_FACT = re.compile(r"^(size|sha256)=(.*)$", re.MULTILINE)


@dataclass
class Measurement:
    ok: bool
    size_bytes: int = 0
    sha256: str = ""
    output: str = ""
    error: str | None = None


def measure(environment: Environment, host: str, location: str, dump_name: str) -> Measurement:
    """Return the size and SHA-256 of the dump in ``location`` on ``host``.

    An empty or missing dump is a failure.
    """
    dump = shlex.quote(f"{location}/{dump_name}")
    lines = [
        f"dump={dump}",
        'if ! test -s "$dump"; then',
        '  echo "The backup dump $dump is empty or missing." >&2',
        "  exit 1",
        "fi",
        "echo size=$(wc -c < \"$dump\" | tr -d ' ')",
        "echo sha256=$(sha256sum < \"$dump\" | cut -d ' ' -f 1)",
    ]
    result = run_command(environment, host, "\n".join(lines), MEASURE_SECONDS)
    output = (result.stdout + result.stderr).strip()
    if not result.ok:
        error = f"measuring the backup failed: {result.failure}"
        return Measurement(False, output=output, error=error)
    facts = dict(_FACT.findall(result.stdout))
    if not re.fullmatch(r"[0-9]+", facts.get("size", "")) or not re.fullmatch(
        r"[0-9a-f]{64}", facts.get("sha256", "")
    ):
        return Measurement(False, output=output, error=f"{host} gave no size and SHA-256")
    return Measurement(True, size_bytes=int(facts["size"]), sha256=facts["sha256"], output=output)


def compare(environment: Environment, backup) -> str | None:
    """Measure a recorded backup on its host again; return how it differs, or None."""
    found = measure(environment, backup.host, backup.location, backup.dump)
    if not found.ok:
        return found.error
    if (found.size_bytes, found.sha256) != (backup.size_bytes, backup.sha256):
        return (
            f"the dump {backup.location}/{backup.dump} has changed since it was taken: it is "
            f"now {found.size_bytes} bytes with SHA-256 {found.sha256}, and was "
            f"{backup.size_bytes} bytes with SHA-256 {backup.sha256}"
        )
    return None


def read_row_count(
    environment: Environment, host: str, location: str, spec: BackupSpec
) -> tuple[int | None, str | None]:
    """Return (the row count the backup's row_count file holds, None), or (None, an error)."""
    rows_file = shlex.quote(f"{location}/{spec.row_count}")
    result = run_command(environment, host, f"tr -d ' \\n' < {rows_file}", MEASURE_SECONDS)
    rows = result.stdout.strip()
    if not result.ok or not re.fullmatch(r"[0-9]+", rows):
        found = result.failure if not result.ok else repr(rows)
        return None, f"{spec.row_count} in the backup contains no row count: {found}"
    return int(rows), None


def removable(environment: Environment, location: str) -> bool:
    """Return whether ``location`` is a backup folder gonogo made, which it may delete."""
    root = environment.settings.get(BACKUP_ROOT)
    if root is None:
        return False
    prefix = f"{str(root).rstrip('/')}/backup-"
    if not location.startswith(prefix):
        return False
    return re.fullmatch(r"[0-9]{8}-[0-9]{6}-d[0-9]+", location[len(prefix) :]) is not None


def remove(environment: Environment, host: str, location: str) -> str | None:
    """Delete the backup folder ``location`` on ``host``; return an error, or None."""
    if not removable(environment, location):
        return f"{location} is not a backup folder under backup_root; left in place"
    result = run_command(environment, host, f"rm -rf -- {shlex.quote(location)}", REMOVE_SECONDS)
    if result.ok:
        return None
    return result.failure


def describe(size_bytes: int) -> str:
    """Return a size for people: 1.2 GB, 340 kB, 12 bytes."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} bytes"


def taken_at_text(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
