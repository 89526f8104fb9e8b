"""Epoch times given as bare numbers: which unit a number is in.

Stream records carry creation times in seconds, milliseconds or microseconds, and people
type any of them. One ceiling tells seconds from the rest everywhere in the package: below
it a number is seconds (any date before 5138), at or above it it cannot be seconds of a
date anyone means, and it is milliseconds of a date after 1973, or a finer unit.

Times typed as ISO 8601 are read by one grammar everywhere (:func:`typed_iso_time`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

SECONDS_CEILING = 100_000_000_000
"""Epoch seconds are below this (5138-11-16T09:46:40Z); larger numbers are a finer unit."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def exact_seconds(moment: datetime) -> Decimal:
    """An aware datetime as epoch seconds, exact to its microsecond. ``timestamp()`` is a
    float, which from the year 2500 on has no room for every microsecond: a time just
    below the ceiling would round up to it (and be refused), others a few microseconds
    up, where every time is meant to be taken rounded down."""
    return Decimal((moment - _EPOCH) // _MICROSECOND).scaleb(-6)


def typed_number(text: str) -> Decimal | float | None:
    """Epoch seconds typed as a number, as ``wait --until`` and ``conflicts --since``
    take them: any decimal number Python's float reads in ASCII (not ``1_000``, its
    literal grouping, nor digits of other scripts), kept exactly as a Decimal (a float
    would round ``1796466592.9999999`` up to the next second). The float's reading where
    it is not finite (``inf``, ``1e400``) or no Decimal takes the exponent
    (``1e-99999999999999999999999``, 0 there). None: not a number."""
    if not text.isascii() or "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    try:
        return Decimal(text) if math.isfinite(value) else value
    except ArithmeticError:
        return value


_FINER_UNITS = (("milliseconds", 1_000), ("microseconds", 1_000_000), ("nanoseconds", 10**9))


def finer_unit(value: float | Decimal) -> tuple[str, int] | None:
    """For a number at or above the ceiling: the unit it is most likely in and how many of
    it make a second (the coarsest unit that makes it a date before the ceiling), or None
    when no unit does."""
    for unit, per_second in _FINER_UNITS:
        if SECONDS_CEILING <= value < SECONDS_CEILING * per_second:
            return unit, per_second
    return None


# The ISO 8601 times the commands take (docs/conflict-audit.md, docs/watermark.md): a
# date, optionally a capital T and hours and minutes, seconds with any fraction, then Z
# or an offset of hours and minutes. datetime.fromisoformat alone (Python 3.11) also
# takes any character between date and time (2026-12-01x17:00), week dates, basic
# formats without dashes, an hour alone and a comma before the fraction.
# ASCII digits only (\d would take other scripts' digits too).
_ISO_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_ZONE = re.compile(r"T[^+-]*([+-]([0-9]{2}):([0-9]{2}))\Z")
_TIME_FORM = "YYYY-MM-DDThh:mm[:ss[.fraction]]"
ISO_TIME_FORM = f"{_TIME_FORM} with Z, +hh:mm or -hh:mm"
"""The forms of a time with a zone (``replicator wait``)."""
ISO_FORMS = f"YYYY-MM-DD, or {_TIME_FORM} with an optional Z, +hh:mm or -hh:mm"
"""The forms of a date or a time, with or without a zone (``conflicts --since``)."""


def typed_iso_time(text: str) -> datetime:
    """The time an operator typed as ISO 8601, by the grammar of ``_ISO_TIME`` only (a
    date alone is its midnight; the result has no zone when none was written). Anything
    else is a ValueError whose message is a hint for the caller's own (empty, or what
    to write instead: T and Z in capitals, a T between date and time, a month 1..12)."""
    value = text.strip()
    if not _ISO_TIME.fullmatch(value):
        raise ValueError(_hint(value))
    zone = _ZONE.search(value)
    if zone is not None and (int(zone[2]) > 23 or int(zone[3]) > 59):
        # datetime's own error names its timedelta bounds, in Python's words.
        raise ValueError(f"the zone offset {zone[1]} is not one: hours 00-23, minutes 00-59")
    return datetime.fromisoformat(value)  # a month 13 or a hour 25: ValueError


_DATE_ALONE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?")


def date_alone(text: str) -> str | None:
    """For a valid date typed without a time (with a zone or not), its midnight as a time
    with that zone (Z when none), to suggest where a time is required; else None.
    ``2026-12-01Z`` would otherwise be refused as any malformed text is, with no word of
    what is missing."""
    found = _DATE_ALONE.fullmatch(text.strip())
    if found is None:
        return None
    try:
        datetime.fromisoformat(found[1])
    except ValueError:  # a month 13: the caller's own message names it
        return None
    return f"{found[1]}T00:00{found[2] or 'Z'}"


def _hint(value: str) -> str:
    if len(value) <= 10:
        return ""
    meant = value[:10] + "T" + value[11:].upper()
    if not _ISO_TIME.fullmatch(meant):
        return ""
    if value[10] in "Tt" or value[-1] == "z":
        return f"write T and Z in capitals: {meant!r}"
    return f"separate the date and the time with a capital T: {meant!r}"
