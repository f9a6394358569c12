"""Wall-clock time and sleeping, behind one object so tests can replace both."""

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> datetime:
        """Return the current time as a naive datetime in UTC, as the database stores it."""
        return datetime.now(UTC).replace(tzinfo=None)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()
