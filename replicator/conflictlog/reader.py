"""Reading the conflict log for ``replicator conflicts``: select, list and summarize.

Entries are kept once per task and lost change (a change replayed after a restart
records the same entry again), listed newest first, and summarized over everything
selected: counts per destination and per rule, the items that lose most often, and
restores.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from replicator.config.stranded import StrandedFile, stranded_lines
from replicator.conflictlog.base import ConflictLogTarget, Selection, entry_place
from replicator.conflictlog.entry import (
    CONFLICT,
    FORCED,
    RESTORE,
    ConflictEntry,
    instant,
    iso_exact,
)
from replicator.epoch import ISO_FORMS, SECONDS_CEILING, finer_unit, typed_iso_time, typed_number
from replicator.exceptions import LogReadingStopped, SinceSyntaxError
from replicator.items import (
    describe_field,
    describe_key,
    item_from_wire,
    key_token,
    value_from_wire,
)
from replicator.wording import counted

_RELATIVE = re.compile(r"([0-9]+)\s*([smhd])")  # ASCII digits, as documented
_MICROSECOND = Decimal("0.000001")
_EPOCH_FLOOR = 1_000_000_000  # 2001-09-09: no conflict log is older
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
TOP_KEYS = 10


def parse_since(text: str, now: datetime | None = None) -> str:
    """``30m``, ``12h``, ``7d`` (before now), epoch seconds (``1796527700.25``, as
    ``replicator watermark`` prints a watermark), or an ISO-8601 date or time (UTC
    unless it says).

    The time keeps the precision it was typed with, to the microsecond (more digits are
    cut there, as ``datetime`` does): cut to the log's milliseconds, a time just after
    an entry would list it. ISO times are read as ``replicator wait`` reads its times
    (:func:`typed_iso_time`): a date, or a date, ``T`` and a time with an optional ``Z``
    or ``+hh:mm`` offset; ``T`` and ``Z`` in capitals, nothing else between. Times are
    between the years 1 and 9999 UTC: a duration or an offset that lands outside them is
    refused naming the value, not left to overflow.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    try:
        if relative:
            delta = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
            return iso_exact(now - delta)
    except (OverflowError, ValueError, OSError):
        raise _out_of_range(text) from None
    number = typed_number(value)
    # A word float reads (inf, nan) is no number here: said as neither form.
    if number is not None and any(character.isdigit() for character in value):
        return _from_epoch_seconds(number, text)
    try:
        moment = typed_iso_time(value)
    except ValueError as error:
        hint = f"; {error}" if str(error) else ""
        raise SinceSyntaxError(
            f"{text!r} is neither a duration (30m, 12h, 7d), epoch seconds (such as "
            f"1796527700.25) nor an ISO-8601 date or time ({ISO_FORMS}, such as "
            f"2026-12-01 or 2026-12-01T10:00:00Z){hint}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return iso_exact(moment)
    except (OverflowError, ValueError, OSError):
        raise _out_of_range(text) from None


def _from_epoch_seconds(exact: Decimal | float, text: str) -> str:
    """Epoch seconds (:func:`typed_number`, every form ``replicator wait --until`` takes,
    so that a time copied from one command reads in the other) to the microsecond (more
    digits are cut, as an ISO time's are), below ``SECONDS_CEILING`` as ``replicator
    wait`` takes them: a number above is refused naming the finer unit it is a time in
    (epoch milliseconds pasted from a log), one beyond a float's (1e400) as out of range."""
    if exact < _EPOCH_FLOOR:
        # 30 (a duration without its unit), 2026 (a year), 20251201 (a date without its
        # dashes): a time before 2001 would list the whole log without a word.
        raise SinceSyntaxError(
            f"{text!r} as epoch seconds is before 2001-09-09: write a duration with its "
            "unit (30m, 12h, 7d) or a date as YYYY-MM-DD (2026-12-01)"
        )
    if exact >= SECONDS_CEILING:
        unit = finer_unit(exact)
        if unit is None:
            raise _out_of_range(text)
        name, per_second = unit
        given = f"{exact / per_second:f}"
        given = given.rstrip("0").rstrip(".") if "." in given else given
        raise SinceSyntaxError(f"{text!r} looks like epoch {name}: give seconds, such as {given}")
    # Cut to the microsecond first: the fraction's own arithmetic rounds at 28 digits,
    # and .99999999999999999999999999999 became a whole second more.
    micro = Decimal(exact).quantize(_MICROSECOND, rounding=ROUND_DOWN)  # finite by now
    whole = int(micro)
    moment = datetime.fromtimestamp(whole, UTC)
    return iso_exact(moment + timedelta(microseconds=int((micro - whole) * 1_000_000)))


def _out_of_range(text: str) -> SinceSyntaxError:
    return SinceSyntaxError(
        f"{text!r} is outside the times this command compares (UTC years 1 to 9999)"
    )


def key_text(entry: ConflictEntry) -> str:
    """The entry's key in its one spelling (numbers canonical, as the log groups entries):
    moto keeps ``1.0`` as written, and the listing's rows, its top keys and its header
    showed one item as ``sk=N:1.0`` and ``sk=N:1``, and counted it as two keys."""
    return _key_shown(entry.item)


def _key_shown(canonical: str) -> str:
    """A ``--key`` filter in the header, as the KEY column shows keys (``pk=S:order-1
    sk=N:3``), not in the canonical form the log groups entries by."""
    parts = json.loads(canonical)
    return describe_key(item_from_wire({name: {kind: value} for name, kind, value in parts}))


def read_entries(
    target: ConflictLogTarget,
    selection: Selection,
    aliases: dict[str, ConflictEntry] | None = None,
    named_places: frozenset[str] = frozenset(),
) -> list[ConflictEntry]:
    """The matching entries, once each, oldest first.

    Once per task and lost change: a change replayed after a restart that loses again is
    recorded again, under the same id, or under a new one when the restart is the
    upgrade that put the task in entry ids; the entry recorded first is kept, as a
    restore made before the replay names it. Two tasks' entries are two even when their
    ids match (ids recorded before they named the task), since jobs may share a log.
    ``aliases``, when given, is filled with the id of each entry left out for another
    of the same change and the entry kept: ``--restore`` of either id restores that one.

    A change is the same at one region and table whatever name its destination had when
    it was recorded (a name given or changed between a loss and its replay), except at
    ``named_places`` (:func:`named_places`), where only the name tells destinations apart.
    """
    unique: dict[tuple[str, ...], ConflictEntry] = {}
    left_out: list[tuple[tuple[str, ...], ConflictEntry]] = []
    for entry in _until_stopped(target, selection):
        if not selection.matches(entry):
            continue
        identity = _identity(entry, named_places)
        kept = unique.setdefault(identity, entry)
        if kept is entry:
            continue
        if _recorded(entry) < _recorded(kept):
            unique[identity] = entry
        left_out.append((identity, kept if unique[identity] is entry else entry))
    if aliases is not None:
        for identity, entry in left_out:
            if entry.id != unique[identity].id:
                aliases.setdefault(entry.id, unique[identity])
    return sorted(unique.values(), key=lambda e: e.sort_key)


def _identity(entry: ConflictEntry, named_places: frozenset[str]) -> tuple[str, ...]:
    """What one entry records: a task's lost change at a destination, or its restore."""
    if entry.kind == CONFLICT:
        place = entry_place(entry)
        at = entry.destination if place in named_places else place
        return (entry.task_name, at, entry.shard_id, entry.sequence_number)
    return (entry.task_name, RESTORE, entry.id)


def _recorded(entry: ConflictEntry) -> tuple[datetime, str]:
    return instant(entry.recorded_at), entry.id


def _until_stopped(target: ConflictLogTarget, selection: Selection) -> Iterator[ConflictEntry]:
    """``target.read(selection)``, raising LogReadingStopped once ``target.stopping`` is
    set, and closing the target's reading whatever ends it: an SQS log's reading lets go
    of the messages it holds only when its generator ends (their visibility timeout
    would hide them from the queue's consumers and the next reading for two minutes)."""
    entries = target.read(selection)
    try:
        for entry in entries:
            if target.stopping.is_set():
                break
            yield entry
    finally:
        if isinstance(entries, Generator):
            entries.close()
    if target.stopping.is_set():
        raise LogReadingStopped(f"the reading of {target.description} was stopped")


def read_task_entries(
    target: ConflictLogTarget,
    selection: Selection,
    task: str,
    aliases: dict[str, ConflictEntry] | None = None,
    named_places: frozenset[str] = frozenset(),
) -> tuple[list[ConflictEntry], list[ConflictEntry]]:
    """The matching entries of task ``task``, and those of other tasks, each oldest first
    (``aliases``: as :func:`read_entries` fills it).

    Several jobs may share one log (a ``conflict_log.path`` or ``table`` without
    ``{task_name}``): another job's entries are about its own tables, even when a
    destination name matches one of this job's, so they are neither listed, counted nor
    restored as this job's (as ``redrive`` keeps to the job's own letters); callers say
    how many were skipped.
    """
    entries = read_entries(target, selection, aliases, named_places)
    return (
        [e for e in entries if e.task_name == task],
        [e for e in entries if e.task_name != task],
    )


@dataclass
class Listing:
    target: str
    selection: Selection
    entries: list[ConflictEntry]
    # Entries of other tasks in the same log, skipped: how many per task.
    other_tasks: dict[str, int] = field(default_factory=dict)
    # Why the log has no entries at all, when it can tell (a file that does not exist).
    missing: str | None = None
    # What the reading left out, when it could not read the whole log (entries of an SQS
    # log another reader held past the wait): the listing is then no summary of the log.
    incomplete: str | None = None
    # Files of other derived task names beside a file log (replicator/config/stranded.py).
    stranded: list[StrandedFile] = field(default_factory=list)
    restores: dict[str, ConflictEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.restores = {
            e.restored_entry: e for e in self.entries if e.kind == RESTORE and e.restored_entry
        }

    @property
    def conflicts(self) -> list[ConflictEntry]:
        return [e for e in self.entries if e.kind == CONFLICT]

    def summary(self) -> dict[str, Any]:
        conflicts = self.conflicts
        return {
            "lost_conflicts": len(conflicts),
            "restores": len(self.entries) - len(conflicts),
            "other_tasks_skipped": dict(sorted(self.other_tasks.items())),
            "first": conflicts[0].at if conflicts else None,
            "last": conflicts[-1].at if conflicts else None,
            "per_destination": dict(Counter(e.destination for e in conflicts).most_common()),
            "per_rule": dict(Counter(e.rule for e in conflicts).most_common()),
            "top_keys": [
                {"key": key, "conflicts": count}
                for key, count in Counter(key_text(e) for e in conflicts).most_common(TOP_KEYS)
            ],
        }

    def newest(self, limit: int) -> list[ConflictEntry]:
        ordered = list(reversed(self.entries))
        return ordered if limit == 0 else ordered[:limit]

    def as_json(self, limit: int) -> str:
        entries = []
        for entry in self.newest(limit):
            body = asdict(entry)
            restore = self.restores.get(entry.id)
            body["restored_by"] = restore.id if restore else None
            entries.append(body)
        return json.dumps(
            {
                "target": self.target,
                "missing": self.missing,
                "incomplete": self.incomplete,
                "other_files": [
                    {"path": str(file.path), "task_name": file.task_name, "lines": file.lines}
                    for file in self.stranded
                ],
                "selection": asdict(self.selection),
                "summary": self.summary(),
                "entries": entries,
            },
            indent=2,
            ensure_ascii=False,
        )

    def text(self, limit: int) -> str:
        summary = self.summary()
        # Every filter given is named (an empty one quoted, so that it shows): a count of
        # what it selected must not read as the count of the whole log.
        narrowed = ", ".join(
            f"key {_key_shown(value)}"
            if name == "item" and value
            else f"{name} {value or repr(value)}"
            for name, value in asdict(self.selection).items()
            if value is not None and name != "place"
        )
        place = self.selection.place
        if place is not None and place != self.selection.destination:
            narrowed += f" at {place}"
        lines = [
            f"conflict log: {self.target}"
            + (f" ({narrowed})" if narrowed else "")
            + f": {counted(summary['lost_conflicts'], 'lost conflict')}"
            + f", {counted(summary['restores'], 'restore')}"
            + self._skipped()
        ]
        lines += [f"  {why}" for why in (self.missing, self.incomplete) if why]
        lines += stranded_lines(
            self.stranded,
            "conflict-log files",
            "to read such a file, run conflicts with a copy of the job file that sets "
            "task_name to its task",
        )
        if summary["lost_conflicts"]:
            lines.append(f"  from {summary['first']} to {summary['last']}")
            lines.append("  per destination: " + _counts(summary["per_destination"]))
            lines.append("  per rule: " + _counts(summary["per_rule"]))
            lines.append("  top keys:")
            lines += [f"    {top['conflicts']:>6}  {top['key']}" for top in summary["top_keys"]]
        shown = self.newest(limit)
        if not shown:
            return "\n".join(lines)
        lines.append(f"entries, newest first ({len(shown)} of {len(self.entries)}):")
        rows: list[tuple[str, ...]] = [
            ("ID", "TIME (UTC)", "DESTINATION", "KEY", "OP", "LOSER", "WINNER", "NOTE")
        ]
        rows += [self._row(entry) for entry in shown]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += [
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        return "\n".join(line.rstrip() for line in lines)

    def _skipped(self) -> str:
        if not self.other_tasks:
            return ""
        total = sum(self.other_tasks.values())
        tasks = ", ".join(f"{name!r}: {count}" for name, count in sorted(self.other_tasks.items()))
        return (
            f" (skipped {total} entr{'y' if total == 1 else 'ies'} of other tasks sharing "
            f"the log: {tasks})"
        )

    def _row(self, entry: ConflictEntry) -> tuple[str, ...]:
        if entry.kind == RESTORE:
            note = f"restore of {entry.restored_entry} ({entry.rule})"
        else:
            restore = self.restores.get(entry.id)
            note = f"restored by {restore.id} at {restore.recorded_at}" if restore else ""
            if entry.correction:
                note = (note + "; " if note else "") + _CORRECTION_NOTE
            if entry.truncated:
                note = (note + "; " if note else "") + "truncated: " + ", ".join(entry.truncated)
        loser, winner = _rank(entry.losing_rank), _winner(entry)
        digests = _tie_digests(entry)
        if digests is not None:
            loser, winner = f"{loser} digest={digests[0]}", f"{winner} digest={digests[1]}"
        return (
            entry.id,
            entry.at,
            entry.destination,
            key_text(entry),
            entry.op,
            loser,
            winner,
            note,
        )


# What a correction's loss is (LostConflict.correction), in its row's NOTE.
_CORRECTION_NOTE = (
    "a correction lost, not the application's write (that is the source's entry of "
    "this sequence number); not restorable"
)


def _tie_digests(entry: ConflictEntry) -> tuple[str, str] | None:
    """The loser's and the winner's digests (as the entry's ``why`` shows them) when the
    two tie on (value, origin): the digest decided, and their ranks alone read the same.
    None otherwise, and for a delete that won (its tombstone ranks above the image it
    deleted as a delete, not by a digest)."""
    orders = [(rank or {}).get("order") for rank in (entry.losing_rank, entry.winning_rank)]
    losing, winning = orders
    if not (isinstance(losing, list) and isinstance(winning, list)):
        return None
    if len(losing) != 4 or len(winning) != 4 or losing[:3] != winning[:3]:
        return None
    if losing[3] == winning[3]:
        return None
    return str(losing[3])[:12], str(winning[3])[:12]


def _winner(entry: ConflictEntry) -> str:
    """The winner's rank; a delete that won (a tombstone) says so, or the row would read
    as a put that lost to its own image; "no item" only when nothing won (a truncated
    winner did), and "not read" for what a forced restore replaced unseen."""
    rank = entry.winning_rank
    if rank and rank.get("delete"):  # a tombstone: its rank is the deleted image's
        region = rank.get("deleted_in")
        return f"delete in {key_token(str(region)) if region else '(unknown)'} of {_rank(rank)}"
    if entry.winning_image is not None or rank:
        return _rank(rank)
    if "winning" in entry.truncated:
        return "(truncated)"
    return "not read" if entry.kind == RESTORE and entry.rule == FORCED else "no item"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in counts.items())


def _rank(rank: dict[str, Any] | None) -> str:
    if not rank:
        return "-"
    value = None if rank.get("value") is None else value_from_wire(rank["value"], "value")
    text = describe_field(rank["attribute"], value)
    if rank.get("origin_attribute"):
        origin = rank.get("origin")
        # The origin as the entry holds it: the inner value of its stamp, a string if any.
        stamp = (
            None
            if origin is None
            else {"S": origin if isinstance(origin, str) else json.dumps(origin)}
        )
        text += f" {describe_field(rank['origin_attribute'], stamp)}"
    return text
