"""The status table: one item per (destination, shard), in the destination's region.

Keyed by ``destination`` (the destination's label) and ``shard``, so that one Query
returns a destination's parts. One table per task (``<task_name>-watermark``), created
by the replicator in each destination's region and account, on demand, with TTL on
``expires_at`` so that the parts of ended shards go away two days after their end.

Every write that sets a part's value is conditional on raising it: a restarted
processor, or one on another host after a lease moved, may know less than the one
before it, and its lower claim must not replace a higher one (both are true; the higher
says more). A processor given its job's source records it on the parts it registers and
raises (``source``), and raises no part that records another: two jobs of one task name
that read different sources share the table (see :class:`OtherSource`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from replicator.aws.answers import parsed_away
from replicator.aws.errors import ACCESS_DENIED, error_code
from replicator.exceptions import EnvironmentProblem
from replicator.owned_tables import check_if_exists, check_key_schema
from replicator.watermark.parts import (
    EVERY,
    MAX_DEAD_LETTER_RANGES,
    Part,
    Placeholder,
    StatusTableShared,
    merge_ranges,
    names_source,
)
from replicator.watermark.spans import (
    OPEN_US,
    UNWATCHED,
    UnreadSpan,
    closed_at,
    covered_through,
    dumps,
    merge_spans,
)
from replicator.watermark.tracker import DeadLetters

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import KeyTypeType
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef

# What each write reads of the items it changes or plans from (see Part.from_item):
# only that, so that a bad attribute it does not use holds back no shard.
LINEAGE = ("children", "ended", "watermark_us")
"""Registering the stream's shards (a new shard's part takes its parent's value)."""
DEAD_LETTERS = ("dead_letters", "dead_letter_ranges", "dead_letter_version")
UNREAD = ("unread_spans", "unread_version")
STARTED_WITH = ("started_with",)
"""Telling whether a destination without parts was in the job at its first start."""
PLACE = ("destination_table",)
"""Telling whether a destination's name was given to another table (its parts are kept
by name)."""
MEMBERS = ("members", "members_at", "updated_at")
"""Telling whether a destination with parts was out of the job for a while (removed from
the job file, then added again)."""
SOURCE = ("source",)
"""Telling whether the destination's parts are the job's: a part that records another
source is another job's, of the same task name."""

ENDED_PARTS_KEPT_S = 2 * 24 * 3600  # longer than the stream keeps records (24 h)
SUFFIX = "-watermark"
KEYS: dict[str, KeyTypeType] = {"destination": "HASH", "shard": "RANGE"}
# What to do about a table of another key schema under the status table's name.
OTHER_KEYS_HINT = (
    "it is not a watermark status table (named <task_name>-watermark, in each "
    "destination's region): give the job a task_name that names no other table, or "
    "turn the watermark off (watermark.enabled: false)"
)


# An update of a part: its UpdateExpression, ConditionExpression and values.
_Update = tuple[str, str, dict[str, Any]]


class PartLost(Exception):
    """A part raised before has no owner: the status table was created again."""


class OtherSource(Exception):
    """A raise refused because the part records another source than the raiser's: a
    job of another source, given the same task name, registered or raised it."""

    def __init__(self, shard: str, source: str) -> None:
        super().__init__(f"the part of shard {shard} records the source {source}")
        self.shard = shard
        self.source = source


def table_name(task_name: str) -> str:
    return f"{task_name}{SUFFIX}"


def check_status_table(client: DynamoDBClient, name: str, where: str) -> bool:
    """Whether the status table exists; EnvironmentProblem when a table of that name has
    another key schema (checked at start, before any processor publishes into it)."""
    return check_if_exists(client, name, KEYS, f"status table {name}", where, OTHER_KEYS_HINT)


def task_of(name: str) -> str | None:
    """The task name a status table is named after (None: not named so)."""
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and name != SUFFIX else None


def another_jobs_parts(
    name: str, where: str, destination: str, shard: str, recorded: str, ours: str, *, reader: bool
) -> StatusTableShared:
    """The one line that says a destination's parts in status table ``name`` (at
    ``where``) record another source (``recorded``, on the part of ``shard``) than the
    job's (``ours``): for a job's start (it stops), or for a ``reader`` (``wait``,
    ``watermark``), which does not report that watermark."""
    task = task_of(name)
    shared = f" (the two jobs share task_name {task})" if task else ""
    said = (
        f"status table {name} at {where} holds another job's parts of destination "
        f"{destination!r}: the part of shard {shard} records the source {recorded}, and "
        f"this job reads {ours}"
    )
    if reader:
        return StatusTableShared(
            f"{said}; the watermark there is not this job's alone: give each job its own "
            f"task_name{shared}"
        )
    return StatusTableShared(
        f"{said}. Jobs with one task_name publish into one status table under one "
        "destination label, where each would raise and combine the other's parts (a wait "
        "could be told replicated for changes never written there): give each job its own "
        f"task_name{shared}; if this job's source was changed on purpose, delete the "
        "destination's items from the status table first"
    )


def goes_on_after(error: ClientError | EnvironmentProblem) -> bool:
    """Whether a start goes on after this error of the status table, with a warning
    saying what it risks: a request the job's policy does not allow (it need not grant
    the table when the watermark is off), an item that does not read (a hand edit) or a
    part that kept changing. Any other error is the caller's to explain (exit 3)."""
    return not isinstance(error, ClientError) or error_code(error) in ACCESS_DENIED


class StatusTable:
    def __init__(
        self,
        client: DynamoDBClient,
        name: str,
        destination: str,
        place: str | None = None,
        source: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.destination = destination
        # The destination's <region>/<table> (None: not known): a publisher records it on
        # the parts it claims, a reader counts no part claimed for another table.
        self.place = place
        # For a reader: the job's source, its <region>/<table> or the identity its parts
        # record (None: not known); a part recording another is refused (see
        # :meth:`refuse_other_sources`). A publisher passes its own to each write.
        self.source = source

    def _key(self, shard: str) -> dict[str, Any]:
        return {"destination": {"S": self.destination}, "shard": {"S": shard}}

    # -- the table --------------------------------------------------------------------

    def ensure_exists(self, wait_s: float = 60.0) -> None:
        """Create the table if it does not exist, and wait until it is ACTIVE."""
        created = False
        try:
            described = self._describe()
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            created = self._create()
            described = self._describe()
        deadline = time.monotonic() + wait_s
        while described["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise EnvironmentProblem(
                    f"status table {self.name} is still {described['TableStatus']}"
                )
            time.sleep(1.0)
            described = self._describe()
        # A table of that name made by someone else (another key schema) would refuse
        # every write: one line saying so, not a warning each interval.
        check_key_schema(
            described, KEYS, f"status table {self.name}", self.where(), OTHER_KEYS_HINT
        )
        if created:
            self.client.update_time_to_live(
                TableName=self.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )

    def _describe(self) -> TableDescriptionTypeDef:
        return self.client.describe_table(TableName=self.name)["Table"]

    def where(self) -> str:
        endpoint = self.client.meta.endpoint_url
        region = self.client.meta.region_name
        return region if endpoint.endswith(".amazonaws.com") else f"{endpoint} ({region})"

    def _create(self) -> bool:
        """True if this call created the table (False: another processor did just now)."""
        try:
            self.client.create_table(
                TableName=self.name,
                KeySchema=[
                    {"AttributeName": "destination", "KeyType": "HASH"},
                    {"AttributeName": "shard", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "destination", "AttributeType": "S"},
                    {"AttributeName": "shard", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as error:
            if error_code(error) != "ResourceInUseException":
                raise
            return False
        return True

    # -- reading ----------------------------------------------------------------------

    def parts_if_any(
        self, attributes: Collection[str] = EVERY, *, unreadable_as_unset: Collection[str] = ()
    ) -> list[Part]:
        """:meth:`parts`, or none when the table does not exist yet."""
        try:
            return self.parts(attributes, unreadable_as_unset=unreadable_as_unset)
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            return []

    def parts(
        self, attributes: Collection[str] = EVERY, *, unreadable_as_unset: Collection[str] = ()
    ) -> list[Part]:
        """Every part of this destination (one strongly consistent Query, paged), with
        ``attributes`` read and checked, the rest left unset (see Part.from_item). A page
        that is no Query answer (neither ``Items`` nor ``Count``) raises MalformedAnswer."""
        found: list[Part] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "#d = :d",
            "ExpressionAttributeNames": {"#d": "destination"},
            "ExpressionAttributeValues": {":d": {"S": self.destination}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            if page.keys().isdisjoint(("Items", "Count")):
                # An application's unchecked client parses a 200 of garbage into {}: no
                # part at all, which would read as "nothing published" for good.
                raise parsed_away("Query", "neither Items nor Count: not a Query answer")
            found.extend(
                Part.from_item(item, self.name, attributes, unreadable_as_unset=unreadable_as_unset)
                for item in page.get("Items", [])
            )
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def refuse_other_sources(self, parts: Collection[Part]) -> None:
        """StatusTableShared when the destination's ``parts`` (read with ``source``)
        record another source than :attr:`source` (if known), or two sources: two jobs
        that read different sources publish there under one task name, and a watermark
        combined from their parts is neither's. Parts without one (written before it was
        recorded) are taken for the job's."""
        recorded = sorted(
            ((part.source, part.shard) for part in parts if part.source is not None),
            key=lambda found: (found[1], found[0]),
        )
        if self.source is not None:
            for source, shard in recorded:
                if not names_source(source, self.source):
                    raise another_jobs_parts(
                        self.name,
                        self.where(),
                        self.destination,
                        shard,
                        source,
                        self.source,
                        reader=True,
                    )
        first: dict[str, str] = {}
        for source, shard in recorded:
            first.setdefault(source, shard)
        if len(first) > 1:
            (one, at), (other, elsewhere) = list(first.items())[:2]
            task = task_of(self.name)
            shared = f" (the two jobs share task_name {task})" if task else ""
            raise StatusTableShared(
                f"status table {self.name} at {self.where()} holds parts of destination "
                f"{self.destination!r} of two jobs: the part of shard {at} records the "
                f"source {one}, that of shard {elsewhere} the source {other}; a watermark "
                f"combined from them is neither job's: give each job its own task_name{shared}"
            )

    def part(self, shard: str, attributes: Collection[str] = EVERY) -> Part | None:
        item = self.client.get_item(
            TableName=self.name, Key=self._key(shard), ConsistentRead=True
        ).get("Item")
        return Part.from_item(item, self.name, attributes) if item else None

    def lineage(self) -> list[Part]:
        """The parts as registering the stream's shards needs them (LINEAGE). A
        ``watermark_us`` that cannot be read is taken as 0, nothing known: a child
        registered from it holds the watermark until its own processor claims (and
        readers refuse the item until it is corrected), where refusing would stop every
        processor that starts from registering, storing its dead letters and claiming."""
        return self.parts(LINEAGE, unreadable_as_unset=("watermark_us",))

    # -- writing ----------------------------------------------------------------------

    def raise_part(
        self,
        shard: str,
        watermark_us: int,
        owner: str,
        *,
        raised_before: bool = False,
        members: frozenset[str] | None = None,
        source: str | None = None,
    ) -> int:
        """Set the shard's value if it is higher than the stored one; the stored value.

        ``members``: the job's destinations to record with the raise (a publisher's: a
        destination removed from the job and added again is told by them).

        ``source``: the job's source (ownership.source_identity), recorded with the raise;
        a part that records another is not raised, and :class:`OtherSource` says so (a
        job of another source, of the same task name, registered or raised it first).

        ``raised_before``: the caller raised this part before, so it has an owner; one
        without (a placeholder, or no item: the table was deleted and created again) is
        not raised, and :class:`PartLost` says so, so that the caller stores again what
        it had stored there before it claims."""
        condition = "attribute_not_exists(watermark_us) OR watermark_us < :w"
        if raised_before:
            condition = f"attribute_exists(#owner) AND ({condition})"
        update = "SET watermark_us = :w, updated_at = :now, #owner = :owner"
        values: dict[str, Any] = {
            ":w": {"N": str(watermark_us)},
            ":now": {"N": f"{time.time():.3f}"},
            ":owner": {"S": owner},
        }
        names = {"#owner": "owner"}
        if source is not None:
            # "source" is a reserved word of DynamoDB's expressions: always a placeholder.
            condition = f"({condition}) AND (attribute_not_exists(#source) OR #source = :source)"
            update += ", #source = :source"
            values[":source"] = {"S": source}
            names["#source"] = "source"
        if self.place is not None:
            update += ", destination_table = :place"
            values[":place"] = {"S": self.place}
        if members:
            update += ", members = :members, members_at = :now"
            values[":members"] = {"SS": sorted(members)}
        try:
            self.client.update_item(
                TableName=self.name,
                Key=self._key(shard),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] = dict(error.response.get("Item") or {})  # type: ignore[call-overload]
            if source is not None and "source" in old:
                recorded = Part.from_item(old, self.name, SOURCE).source
                if recorded is not None and recorded != source:
                    raise OtherSource(shard, recorded) from None
            if raised_before and "owner" not in old:
                raise PartLost(
                    f"status table {self.name}: the part of shard {shard} was never raised"
                ) from None
            # A stored value that is no number fails the comparison, and must not pass
            # for the part raised (the caller would claim on from it); nothing else of
            # the item is read, so nothing else there stops the claim.
            if "watermark_us" not in old:
                return watermark_us
            return Part.from_item(old, self.name, ("watermark_us",)).watermark_us
        return watermark_us

    def add_placeholder(self, placeholder: Placeholder, source: str | None = None) -> bool:
        """Register a shard that has no part yet (recording the job's ``source``, when
        given); False if it has one by now."""
        item: dict[str, Any] = {
            **self._key(placeholder.shard),
            "watermark_us": {"N": str(placeholder.watermark_us)},
            "updated_at": {"N": f"{time.time():.3f}"},
        }
        if placeholder.parents:
            item["parents"] = {"SS": sorted(placeholder.parents)}
        if source is not None:
            item["source"] = {"S": source}
        try:
            self.client.put_item(
                TableName=self.name,
                Item=item,
                ConditionExpression="attribute_not_exists(#shard)",
                ExpressionAttributeNames={"#shard": "shard"},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def add_children(self, shard: str, children: frozenset[str]) -> None:
        """Name a part's children (only on an existing part: a bare item would count as 0)."""
        self._update_existing(shard, "ADD children :c", {":c": {"SS": sorted(children)}})

    def _update_existing(self, shard: str, update: str, values: dict[str, Any]) -> None:
        """``update`` on the shard's part if it exists; nothing where it does not (an item
        created by an update alone, without ``watermark_us``, would read as a part)."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key=self._key(shard),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(#shard)",
                ExpressionAttributeNames={"#shard": "shard"},
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def mark_ended(self, shard: str) -> None:
        """The shard was read to its end; once its children have parts it stops counting."""
        self._set_flag_to_expire(shard, "ended")

    def mark_superseded(self, shard: str) -> None:
        """The shard is of an earlier stream of the source, whose unread changes are
        recorded as a span: its part stops counting (parts.combine)."""
        self._set_flag_to_expire(shard, "superseded")

    def _set_flag_to_expire(self, shard: str, flag: str) -> None:
        """Set ``flag`` on the shard's part, which then goes with the ended parts' time
        to live. A part that does not exist needs nothing."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key=self._key(shard),
                UpdateExpression=f"SET {flag} = :t, expires_at = :e",
                ConditionExpression="attribute_exists(#shard)",
                ExpressionAttributeNames={"#shard": "shard"},
                ExpressionAttributeValues={
                    ":t": {"BOOL": True},
                    ":e": {"N": str(int(time.time()) + ENDED_PARTS_KEPT_S)},
                },
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def add_dead_letters(self, shard: str, dead_letters: DeadLetters, attempts: int = 5) -> None:
        """Add dead letters to the part: a count, and ranges of creation times kept small.

        Read, merge, write conditionally on the version read, so that two processes
        writing one part (a lease on its way to another host) never drop each other's.
        """
        for _ in range(attempts):
            current = self.part(shard, DEAD_LETTERS)
            version = current.dead_letter_version if current else 0
            stored = current.dead_letter_ranges if current else ()
            ranges = merge_ranges([*stored, *dead_letters.ranges], MAX_DEAD_LETTER_RANGES)
            condition = (
                "attribute_not_exists(dead_letter_version) OR dead_letter_version = :v"
                if version == 0
                else "dead_letter_version = :v"
            )
            try:
                self.client.update_item(
                    TableName=self.name,
                    Key=self._key(shard),
                    UpdateExpression=(
                        "SET dead_letter_ranges = :r, dead_letter_version = :next "
                        "ADD dead_letters :n"
                    ),
                    ConditionExpression=condition,
                    ExpressionAttributeValues={
                        ":r": {"S": json.dumps([list(r) for r in ranges])},
                        ":v": {"N": str(version)},
                        ":next": {"N": str(version + 1)},
                        ":n": {"N": str(dead_letters.count)},
                    },
                )
                return
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
        raise EnvironmentProblem(
            f"status table {self.name}: dead letters of shard {shard} could not be recorded "
            f"after {attempts} attempts (the part kept changing)"
        )

    def add_unread_spans(
        self,
        shard: str,
        spans: tuple[UnreadSpan, ...],
        attempts: int = 5,
        *,
        started_with: frozenset[str] = frozenset(),
    ) -> None:
        """Add spans of changes never read for the destination to the part.

        Read, merge, write conditionally on the version read (as dead letters are), so
        that two processes writing one part never drop each other's spans.
        ``started_with``: added to the part's in the same write (see
        :meth:`add_started_with`), so that no crash leaves one without the other.
        """
        added = ""
        values: dict[str, Any] = {}
        if started_with:
            added, values = " ADD started_with :f", {":f": {"SS": sorted(started_with)}}
        for _ in range(attempts):
            current = self.part(shard, UNREAD)
            version = current.unread_version if current else 0
            stored = current.unread_spans if current else ()
            merged = merge_spans([*stored, *spans])
            condition = (
                "attribute_not_exists(unread_version) OR unread_version = :v"
                if version == 0
                else "unread_version = :v"
            )
            try:
                self.client.update_item(
                    TableName=self.name,
                    Key=self._key(shard),
                    UpdateExpression="SET unread_spans = :s, unread_version = :next" + added,
                    ConditionExpression=condition,
                    ExpressionAttributeValues={
                        ":s": {"S": dumps(merged)},
                        ":v": {"N": str(version)},
                        ":next": {"N": str(version + 1)},
                        **values,
                    },
                )
                return
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
        raise EnvironmentProblem(
            f"status table {self.name}: unread spans of shard {shard} could not be recorded "
            f"after {attempts} attempts (the part kept changing)"
        )

    def record_place(self, shard: str) -> None:
        """Record on the shard's part, if it has one, the table the destination names now
        (:attr:`place`): a part is claimed only as its watermark rises, and one whose
        stored value is higher would keep naming the table it named before."""
        if self.place is not None:
            self._update_existing(
                shard, "SET destination_table = :place", {":place": {"S": self.place}}
            )

    def add_started_with(self, shard: str, destinations: frozenset[str]) -> None:
        """Record on the part that the job had ``destinations`` when it first started (a
        set added to, so processors starting at once lose nothing): a destination of
        them found later without parts of its own was in the job from its start, not
        added to it (see publisher.ShardWatermark._decided)."""
        self.client.update_item(
            TableName=self.name,
            Key=self._key(shard),
            UpdateExpression="ADD started_with :f",
            ExpressionAttributeValues={":f": {"SS": sorted(destinations)}},
        )

    def clear_unread_through(self, through_us: int, attempts: int = 5) -> int:
        """Remove from every part what a complete copy covers: changes created at or before
        ``through_us`` (see spans.covered_through). Conditional on the version read, so a
        span added meanwhile is kept. The number of parts changed."""
        return self._rewrite_spans(lambda spans: covered_through(spans, through_us), attempts)

    def clear_dead_letters_through(self, through_us: int, attempts: int = 5) -> int:
        """Remove from every part the dead-letter ranges a comparison that found the
        destination equal covers: changes created at or before ``through_us`` (a range
        reaching past it is cut there). Such a change is settled: the destination holds
        what the source held then, so neither the letter's change nor the one that
        replaced it is missing. Conditional on the version read, so a dead letter added
        meanwhile is kept; a part left without ranges counts no dead letters. The number
        of parts changed."""
        changed = 0
        for part in self.parts_if_any(DEAD_LETTERS):
            if part.dead_letter_ranges and self._clear_letters(part, through_us, attempts):
                changed += 1
        return changed

    def _clear_letters(self, part: Part, through_us: int, attempts: int) -> bool:
        def update(part: Part) -> _Update | None:
            remaining = tuple(
                (max(low, through_us + 1), high)
                for low, high in part.dead_letter_ranges
                if high > through_us
            )
            if remaining == part.dead_letter_ranges:
                return None
            version = part.dead_letter_version
            expression = "SET dead_letter_ranges = :r, dead_letter_version = :next"
            values: dict[str, Any] = {
                ":r": {"S": json.dumps([list(r) for r in remaining])},
                ":v": {"N": str(version)},
                ":next": {"N": str(version + 1)},
            }
            if not remaining:
                expression += ", dead_letters = :none"
                values[":none"] = {"N": "0"}
            condition = "dead_letter_version = :v"
            if version == 0:
                condition = f"attribute_not_exists(dead_letter_version) OR {condition}"
            return expression, condition, values

        return self._rewrite_versioned(part, DEAD_LETTERS, update, "dead-letter ranges", attempts)

    def open_unwatched(self, attempts: int = 5) -> int:
        """Add to every part that has none an open ``unwatched`` span from the part's
        watermark on: the job runs with the watermark off (replicator/watermark/off.py).
        A ``watermark_us`` that cannot be read opens it from the start. The number of
        parts changed (0 when the table does not exist)."""
        opened = 0
        read = ("watermark_us", *UNREAD)
        for part in self.parts_if_any(read, unreadable_as_unset=("watermark_us",)):
            if any(span.open for span in part.unread_spans):
                continue
            start = part.watermark_us + 1 if part.watermark_us > 0 else 0
            self.add_unread_spans(part.shard, (UnreadSpan(start, OPEN_US, UNWATCHED),), attempts)
            opened += 1
        return opened

    def close_unwatched(self, to_us: int, attempts: int = 5) -> int:
        """End every open ``unwatched`` span at ``to_us``: a processor starts with the
        watermark on again. The number of parts changed."""
        return self._rewrite_spans(lambda spans: closed_at(spans, to_us), attempts)

    def _rewrite_spans(
        self,
        rewrite: Callable[[tuple[UnreadSpan, ...]], tuple[UnreadSpan, ...]],
        attempts: int,
    ) -> int:
        changed = 0
        for stored in self.parts_if_any(UNREAD):
            if stored.unread_spans and self._rewrite_part(stored, rewrite, attempts):
                changed += 1
        return changed

    def _rewrite_part(
        self,
        part: Part,
        rewrite: Callable[[tuple[UnreadSpan, ...]], tuple[UnreadSpan, ...]],
        attempts: int,
    ) -> bool:
        def update(part: Part) -> _Update | None:
            remaining = rewrite(part.unread_spans)
            if remaining == part.unread_spans:
                return None
            values = {
                ":s": {"S": dumps(remaining)},
                ":v": {"N": str(part.unread_version)},
                ":next": {"N": str(part.unread_version + 1)},
            }
            return "SET unread_spans = :s, unread_version = :next", "unread_version = :v", values

        return self._rewrite_versioned(part, UNREAD, update, "unread spans", attempts)

    def _rewrite_versioned(
        self,
        part: Part,
        attributes: Collection[str],
        update: Callable[[Part], _Update | None],
        what: str,
        attempts: int,
    ) -> bool:
        """Write the part as ``update`` plans it from what was read (None: nothing to
        change), conditional on the version read; read again and plan again when a
        writer came between. Whether it was changed."""
        for _ in range(attempts):
            planned = update(part)
            if planned is None:
                return False
            expression, condition, values = planned
            try:
                self.client.update_item(
                    TableName=self.name,
                    Key=self._key(part.shard),
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
                return True
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
            fresh = self.part(part.shard, attributes)
            if fresh is None:
                return False
            part = fresh
        raise EnvironmentProblem(
            f"status table {self.name}: {what} of shard {part.shard} could not be rewritten "
            f"after {attempts} attempts (the part kept changing)"
        )
