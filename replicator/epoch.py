"""Epoch times given as bare numbers: which unit a number is in.

Stream records carry creation times in seconds, milliseconds or microseconds, and people
type any of them. One ceiling tells seconds from the rest everywhere in the package: below
it a number is seconds (any date before 5138), at or above it it cannot be seconds of a
date anyone means, and it is milliseconds of a date after 1973, or a finer unit.
"""

from __future__ import annotations

SECONDS_CEILING = 100_000_000_000
"""Epoch seconds are below this (5138-11-16T09:46:40Z); larger numbers are a finer unit."""

_FINER_UNITS = (("milliseconds", 1_000), ("microseconds", 1_000_000), ("nanoseconds", 10**9))


def finer_unit(value: float) -> tuple[str, int] | None:
    """For a number at or above the ceiling: the unit it is most likely in and how many of
    it make a second (the coarsest unit that makes it a date before the ceiling), or None
    when no unit does."""
    for unit, per_second in _FINER_UNITS:
        if SECONDS_CEILING <= value < SECONDS_CEILING * per_second:
            return unit, per_second
    return None
