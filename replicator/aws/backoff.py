"""Capped exponential backoff with full jitter, without a limit on attempts.

Full jitter spreads the retries of many writers hitting one throttled partition; the
cap keeps a long outage from pushing single delays into minutes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.05
    cap_s: float = 20.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempt, 30)))
        return random.uniform(0, ceiling)
