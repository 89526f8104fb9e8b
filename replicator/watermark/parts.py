"""The parts of a destination's watermark, one per shard, and how readers combine them.

Each shard's processor publishes its own part (see tracker.py); a reader combines the
parts of one destination without knowing anything else about the stream:

* The watermark is the **minimum** over the parts that count. A part of 0 means "nothing
  known yet" (a shard registered before its processor published): while one counts,
  there is no watermark.
* A shard that has **ended** (it was read to its end, so its children hold the newer
  changes) stops counting once each of its children has a part; until then it counts at
  its last value, which holds the watermark where the children's changes begin.
* A part **superseded** (a shard of an earlier stream of the source, once what that
  stream left unread is recorded as an ``earlier_stream`` span) never counts again: no
  processor will read that shard, and the span covers every change it could hold.
* Dead-lettered changes are collected from every part, counted or not.

Shards are registered (a part of their parent's value, or 0) by the processor that
lists the stream (see publisher.py), so a reader never combines a subset of the shards
that exist: a new shard always enters with a value no higher than the current
watermark, which is why the combined watermark never moves backwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from replicator.exceptions import EnvironmentProblem, StatusItemUnreadable
from replicator.watermark.spans import UnreadSpan, loads, merge_spans, stored_rows
from replicator.watermark.tracker import DeadLetterRange

US = 1_000_000
T = TypeVar("T")
R = TypeVar("R")
MAX_DEAD_LETTER_RANGES = 32
EVERY = frozenset(
    {
        "watermark_us",
        "parents",
        "children",
        "ended",
        "superseded",
        "dead_letters",
        "dead_letter_ranges",
        "dead_letter_version",
        "updated_at",
        "owner",
        "unread_spans",
        "unread_version",
        "destination_table",
        "source",
    }
)
"""Every attribute of a part but the key that a reader that combines parts checks (not
``started_with``, which only a starting processor reads: see table.STARTED_WITH)."""


@dataclass(frozen=True)
class Part:
    """One (destination, shard) item of the status table."""

    destination: str
    shard: str
    watermark_us: int = 0
    parents: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()
    ended: bool = False
    superseded: bool = False
    dead_letters: int = 0
    dead_letter_ranges: tuple[DeadLetterRange, ...] = ()
    dead_letter_version: int = 0
    updated_at: float | None = None
    owner: str | None = None
    unread_spans: tuple[UnreadSpan, ...] = ()
    unread_version: int = 0
    started_with: frozenset[str] = frozenset()
    """The job's destinations at its first start, on the parts written then."""
    destination_table: str | None = None
    """The ``<region>/<table>`` the destination named when this part was last claimed
    (parts written before it was recorded have none)."""
    members: frozenset[str] = frozenset()
    """The job's destinations (labels) when this part was raised at ``members_at`` (parts
    written before it was recorded have none): a destination missing there was out of
    the job then, which a processor that finds it back in the job must know (see
    ShardWatermark._rejoined)."""
    members_at: float | None = None
    """The ``updated_at`` of the raise that wrote ``members``: a raise by a version that
    does not record them leaves them behind, and only members of the part's latest
    raise say who was in the job then."""
    source: str | None = None
    """The source of the job that registered or last claimed this part, as the lease
    table's owner tag names it (ownership.source_identity: the source table's ARN);
    parts written before it was recorded have none, and are taken for the reader's job's.
    Two jobs given one ``task_name`` share the status table: a part of another source is
    that job's, never raised or combined as this one's."""

    @property
    def current_members(self) -> frozenset[str] | None:
        """``members`` if the part's latest raise wrote them, else None (not known)."""
        if not self.members or self.members_at is None or self.members_at != self.updated_at:
            return None
        return self.members

    @classmethod
    def from_item(
        cls,
        item: Mapping[str, Any],
        table: str,
        attributes: Collection[str] = EVERY,
        *,
        unreadable_as_unset: Collection[str] = (),
    ) -> Part:
        """The part an item of status table ``table`` holds, ``attributes`` (the key, and
        by default every attribute) checked against what the replicator writes there.
        Operators edit these items by hand (to clear unread spans, say): an edit gone
        wrong must be refused naming the item and the attribute, not fail as a KeyError
        in every reader, nor be read as no spans or dead letters, which would tell a
        waiter "replicated" for changes that may not be there. Raises
        StatusItemUnreadable.

        A writer asks only for what it uses (the rest is left unset), so that a bad
        attribute it does not need (on another shard's item, say) does not stop it:
        readers that combine parts ask for every attribute. ``unreadable_as_unset``: of
        ``attributes``, those whose unset value is the safe one (a ``watermark_us`` of 0
        is "nothing known"), read as unset when they cannot be read."""
        read = _Item(item, table)
        destination, shard = read.text("destination"), read.text("shard")
        readers: dict[str, Callable[[str], Any]] = {
            "watermark_us": read.whole,
            "parents": read.texts,
            "children": read.texts,
            "ended": read.flag,
            "superseded": read.flag,
            "dead_letters": read.whole,
            "dead_letter_ranges": lambda name: read.rows(name, "[[from_us, to_us], ...]", _ranges),
            "dead_letter_version": read.whole,
            "updated_at": read.number,
            "owner": read.optional_text,
            "unread_spans": lambda name: read.rows(name, "[[from_us, to_us, reason], ...]", loads),
            "unread_version": read.whole,
            "started_with": read.texts,
            "destination_table": read.optional_text,
            "members": read.texts,
            "members_at": read.number,
            "source": read.optional_text,
        }
        fields: dict[str, Any] = {}
        for name in attributes:
            try:
                fields[name] = readers[name](name)
            except StatusItemUnreadable:
                if name not in unreadable_as_unset:
                    raise
        return cls(destination, shard, **fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "watermark": seconds(self.watermark_us),
            "watermark_utc": iso(self.watermark_us),
            "ended": self.ended,
            "superseded": self.superseded,
            "parents": sorted(self.parents),
            "children": sorted(self.children),
            "dead_letters": self.dead_letters,
            "unread": [span.as_dict() for span in self.unread_spans],
            "updated_at": self.updated_at,
            "owner": self.owner,
            "destination_table": self.destination_table,
            "source": self.source,
        }


class StatusTableShared(EnvironmentProblem):
    """A destination's parts in the status table record another source than the job's,
    or two sources: two jobs that read different sources were given one ``task_name``
    and publish under one destination label, where each would raise the other's parts
    and a reader would combine both. Waiting will not mend it, so readers raise it
    (``wait`` and ``watermark`` exit 3) and a processor that finds it stops (exit 3)."""


# A source table's identity as ownership.source_identity writes it (the lease table's
# owner tag): its ARN, or, for a name near the longest, the ARN cut to end in its digest.
_TABLE_ARN = re.compile(r"arn:[^:]+:dynamodb:(?P<region>[^:]*):[^:]*:table/(?P<table>[^/]+)")
_DIGEST_MARK = "...sha256:"
_AWS_REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d+")


def names_source(recorded: str, source: str) -> bool:
    """Whether a part's ``source`` (``recorded``) names ``source``: the same identity, or,
    for a ``source`` given as ``<region>/<table>`` (a reader, who need not call the
    source to learn its ARN), a table ARN of that region and table (in whatever region
    for an emulator that writes its own word where an ARN has it, as the owner tag's
    check reads it). An identity cut to its digest cannot be told from a
    ``<region>/<table>``, and is taken for it."""
    if recorded == source or source.startswith("arn:"):
        return recorded == source
    if _DIGEST_MARK in recorded:
        return True
    match = _TABLE_ARN.fullmatch(recorded)
    region, _, table = source.partition("/")
    if match is None or match["table"] != table:
        return False
    return match["region"] == region or not _AWS_REGION.fullmatch(match["region"])


class _Item:
    """An item of the status table, read one attribute at a time (see Part.from_item)."""

    def __init__(self, item: Mapping[str, Any], table: str) -> None:
        self.item = item
        self.table = table

    def _stored(self, name: str, kind: str, form: str) -> Any:
        """What the attribute holds as DynamoDB type ``kind``; None when absent."""
        if name not in self.item:
            return None
        stored = self.item[name]
        if not (isinstance(stored, Mapping) and set(stored) == {kind}):
            raise self.unreadable(name, form)
        return stored[kind]

    def _converted(self, name: str, kind: str, form: str, convert: Callable[[Any], T]) -> T | None:
        stored = self._stored(name, kind, form)
        try:
            return None if stored is None else convert(stored)
        except (TypeError, ValueError):
            raise self.unreadable(name, form) from None

    def text(self, name: str) -> str:
        found = self._converted(name, "S", "a string (S)", str)
        if found is None:
            raise self.unreadable(name, "a string (S)")
        return found

    def optional_text(self, name: str) -> str | None:
        return self._converted(name, "S", "a string (S)", str)

    def whole(self, name: str) -> int:
        return self._converted(name, "N", "a whole number (N)", int) or 0

    def number(self, name: str) -> float | None:
        return self._converted(name, "N", "a number (N)", float)

    def flag(self, name: str) -> bool:
        return self._converted(name, "BOOL", "a boolean (BOOL)", bool) or False

    def texts(self, name: str) -> frozenset[str]:
        return self._converted(name, "SS", "a string set (SS)", frozenset) or frozenset()

    def rows(self, name: str, shape: str, parse: Callable[[str], tuple[R, ...]]) -> tuple[R, ...]:
        """A JSON attribute, ``parse`` saying (ValueError) what in it is wrong."""
        form = f"a string (S) of JSON {shape}"
        stored = self._stored(name, "S", form)
        try:
            return () if stored is None else parse(stored)
        except ValueError as error:
            raise self.unreadable(name, f"{form}: {error}") from None

    def unreadable(self, name: str, form: str) -> StatusItemUnreadable:
        def key(attribute: str) -> str:
            stored = self.item.get(attribute)
            return repr(stored.get("S")) if isinstance(stored, Mapping) else "?"

        shown = json.dumps(self.item[name], default=str)[:80] if name in self.item else "missing"
        return StatusItemUnreadable(
            f"status table {self.table}: the item of destination {key('destination')}, "
            f"shard {key('shard')} cannot be read: {name} is {shown}, not {form}; correct it "
            "as docs/watermark.md#the-status-table describes"
        )


def _ranges(text: str) -> tuple[DeadLetterRange, ...]:
    return tuple((lo, hi) for lo, hi in stored_rows(text, (int, int)))


@dataclass(frozen=True)
class Watermark:
    """A destination's combined watermark, as a reader sees it."""

    destination: str
    watermark_us: int | None
    """Every change created at or before it is settled there; None: not known yet."""
    counted: tuple[Part, ...] = ()
    retired: tuple[Part, ...] = ()
    unknown: tuple[str, ...] = ()
    """Shards registered whose processor has not published yet (they hold it at None),
    and those of ``claimed_elsewhere``."""
    claimed_elsewhere: tuple[tuple[str, str], ...] = ()
    """Counted shards, each with the ``<region>/<table>`` its part was last claimed for,
    when that is not the destination's table now (its name was given to this table
    since): they hold the watermark at None until their processors record the change."""
    dead_letters: int = 0
    dead_letter_ranges: tuple[DeadLetterRange, ...] = field(default=())
    unread_spans: tuple[UnreadSpan, ...] = field(default=())
    """Changes never read for the destination (a LATEST start, a destination that joined
    late): the watermark may pass them, so a waiter is told of them instead."""

    @property
    def seconds(self) -> float | None:
        return None if self.watermark_us is None else seconds(self.watermark_us)

    def passes(self, until_us: int) -> bool:
        return self.watermark_us is not None and self.watermark_us >= until_us

    def dead_lettered_between(self, since_us: int, until_us: int) -> list[DeadLetterRange]:
        """Dead-lettered changes that may have been created in [since, until]."""
        return [(lo, hi) for lo, hi in self.dead_letter_ranges if lo <= until_us and hi >= since_us]

    def unread_between(self, since_us: int, until_us: int) -> list[UnreadSpan]:
        """Spans of changes never read for the destination that meet [since, until]."""
        return [span for span in self.unread_spans if span.meets(since_us, until_us)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "watermark": self.seconds,
            "watermark_utc": None if self.watermark_us is None else iso(self.watermark_us),
            "waiting_for_shards": list(self.unknown),
            "dead_letters": self.dead_letters,
            "dead_letter_ranges": [
                [seconds(lo), seconds(hi)] for lo, hi in self.dead_letter_ranges
            ],
            "unread": [span.as_dict() for span in self.unread_spans],
            "shards": [part.as_dict() for part in self.counted],
            "ended_shards": [part.as_dict() for part in self.retired],
        }


def combine(destination: str, parts: Iterable[Part], place: str | None = None) -> Watermark:
    """The destination's watermark from its parts. ``place``: the ``<region>/<table>`` the
    destination names now; a counted part claimed for another table (its name was given
    to this one since) holds the watermark at None, as a shard not yet published does,
    until its processor has recorded this table there, after the ``joined`` span that
    tells a waiter what the table never got."""
    every = {part.shard: part for part in parts}
    counted: list[Part] = []
    moved = {
        shard: claimed
        for shard in every
        if place is not None and (claimed := claimed_for(shard, every)) not in (None, place)
    }
    retired: list[Part] = []
    for part in sorted(every.values(), key=lambda p: p.shard):
        if part.superseded or (
            part.ended and part.children and all(child in every for child in part.children)
        ):
            retired.append(part)
        else:
            counted.append(part)
    unknown = tuple(part.shard for part in counted if part.watermark_us <= 0 or part.shard in moved)
    value: int | None = None
    if counted and not unknown:
        value = min(part.watermark_us for part in counted)
    ranges = merge_ranges([r for part in every.values() for r in part.dead_letter_ranges])
    return Watermark(
        destination=destination,
        watermark_us=value,
        counted=tuple(counted),
        retired=tuple(retired),
        unknown=unknown,
        claimed_elsewhere=tuple(
            (part.shard, moved[part.shard]) for part in counted if part.shard in moved
        ),
        dead_letters=sum(part.dead_letters for part in every.values()),
        dead_letter_ranges=tuple(ranges),
        unread_spans=tuple(merge_spans(s for part in every.values() for s in part.unread_spans)),
    )


def waiting_on(watermark: Watermark) -> str:
    """What holds a watermark at None, for ``wait`` and ``watermark`` to say: shards that
    have not published, and shards whose parts were claimed for another table."""
    elsewhere = dict(watermark.claimed_elsewhere)
    unpublished = [shard for shard in watermark.unknown if shard not in elsewhere]
    said = []
    if unpublished:
        said.append(f"shards {', '.join(unpublished)} have not published yet")
    by_table: dict[str, list[str]] = {}
    for shard, table in watermark.claimed_elsewhere:
        by_table.setdefault(table, []).append(shard)
    said.extend(
        f"shards {', '.join(shards)} were last claimed for table {table}, not the "
        "destination's table now: they count again once the job runs with its table now "
        "and their processors record it"
        for table, shards in by_table.items()
    )
    return "; ".join(said)


def claimed_for(shard: str, every: Mapping[str, Part]) -> str | None:
    """The ``<region>/<table>`` the shard's part was claimed for; for a placeholder not
    claimed yet (a child registered with its parent's value), its parents' (None: not
    recorded)."""
    part = every[shard]
    if part.destination_table is not None:
        return part.destination_table
    for parent in sorted(part.parents):
        if parent in every and every[parent].destination_table is not None:
            return every[parent].destination_table
    return None


def merge_ranges(
    ranges: Iterable[DeadLetterRange], limit: int = MAX_DEAD_LETTER_RANGES
) -> list[DeadLetterRange]:
    """Overlapping ranges joined, then the closest neighbours joined until ``limit`` remain.

    Joining only widens a range, so a reader may be told a change *may* have been
    dead-lettered when it was not, never the reverse; and the item stays small however
    many changes are dead-lettered.
    """
    merged: list[DeadLetterRange] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    while len(merged) > limit:
        gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
        i = gaps.index(min(gaps))
        merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
    return merged


@dataclass(frozen=True)
class Placeholder:
    """A part to create for a shard that has none yet."""

    shard: str
    watermark_us: int
    parents: frozenset[str]


@dataclass(frozen=True)
class Registration:
    placeholders: tuple[Placeholder, ...]
    children: dict[str, frozenset[str]]
    """Parent shard -> children to add to its part."""
    ended: tuple[str, ...]
    """Parents to mark ended: a child of theirs has started, so they were read to the end."""


class ListedShard(Protocol):
    """A shard as the stream lists it (shards.stream.Shard is one)."""

    @property
    def shard_id(self) -> str: ...

    @property
    def parent_id(self) -> str | None: ...

    @property
    def closed(self) -> bool: ...


def plan_registration(
    shards: Sequence[ListedShard], parts: Mapping[str, Part], starting: str | None = None
) -> Registration:
    """What to write so that every shard that will be read has a part.

    Registered: every open shard (the leaves of the stream), and every shard whose parent
    has a part (a child the runtime will read after its parent). A new part takes its
    parent's value (the parent's changes all precede the child's), or 0 when its parent
    has none, which happens only for shards that exist when the job first starts.
    ``starting`` is the shard whose processor is starting: its parent has been read to
    its end (runtimes start a child only then), so the parent is marked ended.
    """
    placeholders = []
    children: dict[str, set[str]] = {}
    for shard in shards:
        parent = parts.get(shard.parent_id) if shard.parent_id else None
        if shard.shard_id not in parts and (parent is not None or not shard.closed):
            placeholders.append(
                Placeholder(
                    shard=shard.shard_id,
                    watermark_us=parent.watermark_us if parent is not None else 0,
                    parents=frozenset([shard.parent_id]) if shard.parent_id else frozenset(),
                )
            )
        if parent is not None and shard.shard_id not in parent.children:
            children.setdefault(parent.shard, set()).add(shard.shard_id)
    ended: tuple[str, ...] = ()
    if starting is not None:
        me = next((shard for shard in shards if shard.shard_id == starting), None)
        parent = parts.get(me.parent_id) if me is not None and me.parent_id else None
        if parent is not None and not parent.ended:
            ended = (parent.shard,)
    return Registration(
        tuple(placeholders), {parent: frozenset(c) for parent, c in children.items()}, ended
    )


def seconds(us: int) -> float:
    return us / US


def iso(us: int) -> str:
    """``us`` as an ISO time; beyond the years a datetime holds (a status item edited by
    hand), its epoch seconds instead, so that a message naming it can still be said."""
    try:
        moment = datetime.fromtimestamp(us // US, tz=UTC).replace(microsecond=us % US)
    except (ValueError, OverflowError, OSError):
        return f"{seconds(us):.6f}"
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
