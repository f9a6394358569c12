"""Wall-clock time and sleeping, behind one object so tests can replace both."""

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> datetime:
        """Return the current time in UTC."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()
