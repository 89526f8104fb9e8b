"""One entry of the conflict log: a lost conflict, or the restore of one.

A conflict entry holds both sides as they were at the moment of the conflict: the
losing image (what the change would have written: its new image, or for a delete the
image it deleted at the source) and the winning image (the destination's item from
``ReturnValuesOnConditionCheckFailure=ALL_OLD``, or the item the custom resolver read),
in DynamoDB's JSON form with binaries in base64 and numbers exactly as they were sent.

Its ``id`` is derived from the task, destination, shard and sequence number, so a
change replayed after a restart (and losing again) produces the same entry, not a
second one, while two jobs that share a log and read the same stream, with a
destination of the same name, record two (their destinations are two tables).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from replicator.conflictlog.keys import canonical_key
from replicator.exceptions import AttributeFormatError, EntryFormatError, KeySyntaxError
from replicator.items import (
    Item,
    KeyId,
    describe_key,
    image_summary,
    item_from_wire,
    item_to_wire,
    key_id,
    value_from_wire,
)
from replicator.logs import redact
from replicator.records import Change, Event
from replicator.rules.base import ConflictRule
from replicator.rules.custom import CustomRule
from replicator.rules.ordered import OrderedRule

CONFLICT = "conflict"
RESTORE = "restore"
IMAGES = ("losing", "winning")
# The rule of a restore written with --force, without reading the item it replaced.
FORCED = "unconditional (--force)"

WireItem = dict[str, Any]


def iso(seconds: float) -> str:
    """UTC with milliseconds and a ``Z``: sorts as text in time order."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def iso_exact(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``: a time typed with more precision than the log's
    milliseconds keeps it (``--since``), so that an entry a fraction of a millisecond
    before it is not taken as at or after it."""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def utc_text(moment: datetime) -> str:
    """An entry's time as the log writes it (:func:`iso`: UTC, a ``Z``, milliseconds), with
    microseconds when it has them, so that nothing of a time read from a log is lost, and
    every time is listed as UTC whatever offset it was written with. OverflowError when it
    is not between the years 1 and 9999 in UTC."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def instant(text: str) -> datetime:
    """An entry's time (or ``--since``) as a datetime, to compare times of any precision:
    as text, ``…26.860Z`` sorts after ``…26.860499Z``. ValueError when it is not a time
    with a zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no zone")
    return moment


@dataclass(frozen=True, slots=True)
class ConflictEntry:
    id: str
    kind: str
    task_name: str
    destination: str
    table: str
    region: str
    key: WireItem
    item: str
    op: str
    event: str
    losing_image: WireItem | None
    winning_image: WireItem | None
    losing_rank: dict[str, Any] | None
    winning_rank: dict[str, Any] | None
    policy: str
    rule: str
    why: str
    sequence_number: str
    shard_id: str
    created: str
    recorded_at: str
    write_back: bool = False
    # A correction's loss (active-active): see :attr:`LostConflict.correction`.
    correction: bool = False
    truncated: dict[str, dict[str, Any]] = field(default_factory=dict)
    restored_entry: str | None = None
    version: int = 1

    @property
    def at(self) -> str:
        """When it happened: the losing change's creation, or the time of a restore."""
        return self.created if self.kind == CONFLICT else self.recorded_at

    @property
    def sort_key(self) -> str:
        return f"{self.at}#{self.id}"

    def key_item(self) -> Item:
        return item_from_wire(self.key)

    def image(self, which: str) -> Item | None:
        """An image in boto3 form (binaries as bytes), or None when there was none."""
        wire = self.losing_image if which == "losing" else self.winning_image
        return None if wire is None else item_from_wire(wire)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ConflictEntry:
        """An entry read back from a log. Logs are files and queues that anything can
        write to or cut short, so whatever is not an entry (bytes that are not UTF-8,
        JSON that is not an object, a field missing or of the wrong type) raises
        EntryFormatError, and a reader can skip it and read on: nothing later trips
        over it (the listing, --restore)."""
        try:
            body = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (ValueError, RecursionError) as error:  # also UnicodeDecodeError
            raise EntryFormatError(f"not JSON: {error}") from None
        if not isinstance(body, dict):
            raise EntryFormatError(f"a JSON {type(body).__name__}, not an object")
        values = {name: value for name, value in body.items() if name in _FIELDS}
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            raise EntryFormatError("no " + ", ".join(missing))
        _check_fields(values)
        return cls(**values | _utc_times(values))

    def fitted(
        self, limit: int, size: Callable[[ConflictEntry], int] | None = None
    ) -> ConflictEntry:
        """This entry, with as few of its images replaced by their digest as make it fit
        (``size``: what the target stores of it, if not its JSON as it is): the winning
        image first when dropping either one would do, since the destination still holds
        it (a restore finds it by its digest) while the losing image is what a restore
        puts back; both when one is not enough.

        A truncated image keeps its size, its attribute names and its sha256
        (:func:`~replicator.items.image_summary`) under ``truncated``; the image itself
        is dropped from the entry, never the entry.
        """
        measure = size or (lambda entry: len(entry.to_json().encode("utf-8")))
        if measure(self) <= limit:
            return self
        present = [
            which
            for which, image in (("winning", self.winning_image), ("losing", self.losing_image))
            if image is not None
        ]
        for which in present:
            entry = self._without(which)
            if measure(entry) <= limit:
                return entry
        entry = self
        for which in present:
            entry = entry._without(which)
        return entry

    def _without(self, which: str) -> ConflictEntry:
        """This entry with its ``which`` ("losing" or "winning") image replaced by its
        summary and digest."""
        image = self.losing_image if which == "losing" else self.winning_image
        assert image is not None
        return replace(
            self,
            truncated={**self.truncated, which: image_summary(image)},
            **{f"{which}_image": None},  # type: ignore[arg-type]
        )


_FIELDS = {f.name for f in fields(ConflictEntry)}
_REQUIRED = [
    f.name for f in fields(ConflictEntry) if f.default is MISSING and f.default_factory is MISSING
]
_TEXT = (
    *("id", "kind", "task_name", "destination", "table", "region", "item", "op", "event"),
    *("policy", "rule", "why", "sequence_number", "shard_id", "created", "recorded_at"),
)
_OPS = ("put", "delete")
# An id as entry_id makes it: what --restore and a restore entry's restored_entry name.
_ID = re.compile(r"[0-9a-f]{16}")
_TIMES = ("created", "recorded_at")


def _check_fields(values: dict[str, Any]) -> None:
    """Raise EntryFormatError, naming the field, unless ``values`` make an entry that
    reads (its key, images and ranks as the listing and a restore use them)."""
    for name in _TEXT:
        if not isinstance(values[name], str):
            raise EntryFormatError(f"{name} is {_json_type(values[name])}, not a string")
    if not _ID.fullmatch(values["id"]):
        raise EntryFormatError(f"id is {values['id']!r}, not 16 hexadecimal digits (0-9, a-f)")
    for name in ("destination", "table", "region"):
        if not values[name].strip():
            raise EntryFormatError(f"{name} is {values[name]!r}, empty")
    _utc_times(values)
    if values["kind"] not in (CONFLICT, RESTORE):
        raise EntryFormatError(f"kind is {values['kind']!r}, not {CONFLICT} or {RESTORE}")
    restored = values.get("restored_entry")
    shown = json.dumps(restored, ensure_ascii=False)
    if values["kind"] == RESTORE and not (isinstance(restored, str) and _ID.fullmatch(restored)):
        raise EntryFormatError(
            f"restored_entry is {shown}: a restore entry names the id of the conflict it "
            "restored (16 hexadecimal digits)"
        )
    if values["kind"] == CONFLICT and restored is not None:
        raise EntryFormatError(f"restored_entry is {shown} on a conflict entry, not null")
    if values["op"] not in _OPS:
        raise EntryFormatError(f"op is {values['op']!r}, not put or delete")
    events = {event.value: event for event in Event}
    event = events.get(values["event"])
    if event is None:
        raise EntryFormatError(f"event is {values['event']!r}, not {', '.join(events)}")
    if event.op != values["op"]:
        raise EntryFormatError(f"op is {values['op']!r}, but event {event} is a {event.op}")
    try:
        key = item_from_wire(values["key"])
        identity = key_id(key)
    except AttributeFormatError as error:
        raise EntryFormatError(f"key: {error}") from None
    _check_item(values["item"], key)
    for which in IMAGES:
        image = values[f"{which}_image"]
        if image is not None:
            try:
                parsed = item_from_wire(image)
            except AttributeFormatError as error:
                raise EntryFormatError(f"{which}_image: {error}") from None
            _check_image_key(f"{which}_image", parsed, key, identity)
        rank = values[f"{which}_rank"]
        if rank is not None:
            _check_rank(f"{which}_rank", rank)
    if not isinstance(values.get("write_back", False), bool):
        raise EntryFormatError(f"write_back is {_json_type(values['write_back'])}, not a boolean")
    if not isinstance(values.get("correction", False), bool):
        raise EntryFormatError(f"correction is {_json_type(values['correction'])}, not a boolean")
    if not isinstance(values.get("restored_entry"), str | None):
        raise EntryFormatError(f"restored_entry is {_json_type(values['restored_entry'])}")
    if type(values.get("version", 1)) is not int:
        raise EntryFormatError(f"version is {_json_type(values['version'])}, not an integer")
    if not isinstance(values.get("truncated", {}), dict):
        raise EntryFormatError(f"truncated is {_json_type(values['truncated'])}, not an object")
    for which, summary in values.get("truncated", {}).items():
        if which not in IMAGES or not isinstance(summary, dict):
            raise EntryFormatError(f"truncated.{which} is not the summary of an image")


def _utc_times(values: dict[str, Any]) -> dict[str, str]:
    """``created`` and ``recorded_at`` in UTC as the log writes them (:func:`utc_text`):
    a time written by hand or by another program with an offset, or with nanoseconds, is
    listed under TIME (UTC) and sorted as one; EntryFormatError, naming the field, for
    what is no time with a zone, or none in the years 1 to 9999 UTC."""
    times = {}
    for name in _TIMES:
        try:
            times[name] = utc_text(instant(values[name]))
        except ValueError:
            raise EntryFormatError(
                f"{name} is {values[name]!r}, not an ISO-8601 time with a zone"
            ) from None
        except OverflowError:
            raise EntryFormatError(
                f"{name} is {values[name]!r}, outside the years 1 to 9999 in UTC"
            ) from None
    return times


def _check_item(item: str, key: Item) -> None:
    """``item`` must be ``key``'s canonical string: a log finds an item's entries by it
    (``--key``, a DynamoDB log's partition), and a restore writes under ``key``."""
    try:
        canonical = canonical_key(key)
    except KeySyntaxError as error:
        raise EntryFormatError(f"key: {error}") from None
    if item != canonical:
        raise EntryFormatError(f"item {item!r} is not the entry's key ({describe_key(key)})")


def _check_image_key(name: str, image: Item, key: Item, identity: KeyId) -> None:
    """An image must carry the entry's key: it is the item at that key, before or after
    the conflict. One of another key (a line edited by hand, or corrupted) leaves the
    entry naming two items, and a restore would write one while recording the other."""
    missing = [attribute for attribute in key if attribute not in image]
    if missing:
        raise EntryFormatError(
            f"{name} has no key attribute {', '.join(missing)} of the entry's key "
            f"({describe_key(key)})"
        )
    carried = {attribute: image[attribute] for attribute in key}
    try:
        same = key_id(carried) == identity
    except AttributeFormatError:
        same = False
    if not same:
        raise EntryFormatError(
            f"{name}'s key ({describe_key(carried)}) is not the entry's key ({describe_key(key)})"
        )


def _check_rank(name: str, rank: Any) -> None:
    if not isinstance(rank, dict):
        raise EntryFormatError(f"{name} is {_json_type(rank)}, not an object")
    if not isinstance(rank.get("attribute"), str):
        raise EntryFormatError(f"{name}.attribute is {_json_type(rank.get('attribute'))}")
    if rank.get("value") is not None:
        try:
            value_from_wire(rank["value"], f"{name}.value")
        except AttributeFormatError as error:
            raise EntryFormatError(str(error)) from None
    if not isinstance(rank.get("origin_attribute"), str | None):
        raise EntryFormatError(f"{name}.origin_attribute is {_json_type(rank['origin_attribute'])}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return names.get(type(value), "a list" if isinstance(value, list) else "an object")


def rank_of(rule: ConflictRule, image: Item | None) -> dict[str, Any] | None:
    """How the rule orders an image (its ordering attribute and origin), for the record."""
    if not isinstance(rule, OrderedRule):
        return None
    value = image.get(rule.attribute) if image is not None else None
    origin = None
    if image is not None and rule.origin_attribute:
        stamp = image.get(rule.origin_attribute)
        origin = None if stamp is None else next(iter(item_to_wire({"o": stamp})["o"].values()))
    tier, ordering, (_, origin_text), digest = rule.rank(image)
    return {
        "attribute": rule.attribute,
        "value": None if value is None else item_to_wire({"v": value})["v"],
        "origin_attribute": rule.origin_attribute,
        "origin": origin,
        "order": [tier, str(ordering), origin_text, str(digest)],
    }


def describe_rule(rule: ConflictRule) -> str:
    if isinstance(rule, OrderedRule):
        ties = f", ties by {rule.origin_attribute}" if rule.origin_attribute else ""
        return f"{rule.name} on {rule.attribute}{ties}"
    if isinstance(rule, CustomRule):
        resolver = rule.resolver
        module = getattr(resolver, "__module__", "?")
        name = getattr(resolver, "__qualname__", getattr(resolver, "__name__", "?"))
        return f"custom resolver {module}:{name}"
    return rule.name


def entry_id(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LostConflict:
    """What the writer knows when a change loses, captured cheaply on its thread.

    A change that is a correction (active-active: ``change.corrects`` is set; the
    source's highest state sent in place of a stale local write) loses at a destination
    that holds something higher still, usually a write or delete made there at the same
    moment. Its entry is kept, marked ``correction``: the loss is counted at that
    destination like any other, and the entry is the only record that the correction
    did not land there and what the destination kept instead. It is not the
    application's write losing: that write (the stale one) is the source's entry of the
    same sequence number, and the losing image here is the correction's, a state the
    job chose. So it is marked rather than presented as a loss of the application's,
    and ``--restore`` refuses it: writing the correction's image back would put an
    older state over the destination's newer one, and the regions would differ.
    """

    task_name: str
    destination: str
    table: str
    region: str
    shard_id: str
    rule: ConflictRule
    change: Change
    existing: Item | None
    why: str
    recorded_s: float
    write_back: bool = False
    winning_rank: dict[str, Any] | None = None  # a winner that is not an item (a delete)

    def entry(self) -> ConflictEntry:
        change = self.change
        losing = change.image
        return ConflictEntry(
            id=entry_id(self.task_name, self.destination, self.shard_id, change.sequence_number),
            kind=CONFLICT,
            task_name=self.task_name,
            destination=self.destination,
            table=self.table,
            region=self.region,
            key=item_to_wire(change.keys),
            item=canonical_key(change.keys),
            op=change.event.op,
            event=change.event.value,
            losing_image=None if losing is None else item_to_wire(losing),
            winning_image=None if self.existing is None else item_to_wire(self.existing),
            losing_rank=rank_of(self.rule, losing),
            winning_rank=(
                _wire_rank(self.winning_rank)
                if self.winning_rank is not None
                else rank_of(self.rule, self.existing)
            ),
            policy=self.rule.name,
            rule=describe_rule(self.rule),
            why=redact(self.why),  # stored and shown as the logs are: redacted
            sequence_number=change.sequence_number,
            shard_id=self.shard_id,
            created=iso(change.created_s),
            recorded_at=iso(self.recorded_s),
            write_back=self.write_back,
            correction=change.corrects is not None,
        )


def _wire_rank(rank: dict[str, Any]) -> dict[str, Any]:
    value = rank.get("value")
    return {**rank, "value": None if value is None else item_to_wire({"v": value})["v"]}
