"""Stage 2: which decoded changes are sent on at all.

Two rules decide, both without I/O:

* Loop prevention (active-active): the application stamps every item it writes with
  its own region in ``origin_attribute``. A put whose new image carries another
  region's stamp was written here by a replicator, so sending it on would echo it
  back; it is skipped. Deletes carry no stamp of who deleted, so they are always sent
  on: an echoed delete finds the item already gone, or written since (which the rule
  keeps: a delete of an image the job's or the destination's region wrote removes only
  that very image, see replicator/rules/ordered.py), and a delete of nothing writes no
  stream record, so the echo ends there.
* TTL deletes (a REMOVE by the DynamoDB service principal) are replicated or skipped,
  as the job says.
* A Kinesis data stream may carry several tables' changes (each record names its
  ``tableName``): a record of another table belongs to another job and is skipped
  (counted as ``other_table``, checkpointed past, never dead-lettered).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from replicator.config.model import JobConfig, StreamKind, TtlDeletes
from replicator.exceptions import MalformedImage
from replicator.records import Change, Event


class Route(StrEnum):
    REPLICATE = "replicate"
    LOOP_SKIPPED = "loop_skipped"
    FILTERED = "filtered"
    OTHER_TABLE = "other_table"


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    origin_attribute: str | None
    origin_value: str
    skip_ttl_deletes: bool
    # Kinesis sources: the only table whose records are replicated (None: every record).
    source_table: str | None = None

    @classmethod
    def for_job(cls, job: JobConfig) -> ChangeFilter:
        kinesis = job.source.stream.kind is StreamKind.KINESIS
        return cls(
            origin_attribute=job.loop_prevention.origin_attribute,
            origin_value=job.origin_value,
            skip_ttl_deletes=job.ttl_deletes is TtlDeletes.SKIP,
            source_table=job.source.table if kinesis else None,
        )

    def route(self, change: Change) -> Route:
        if (
            self.source_table is not None
            and change.table is not None
            and change.table != self.source_table
        ):
            return Route.OTHER_TABLE
        if change.ttl_delete and self.skip_ttl_deletes:
            return Route.FILTERED
        if self.origin_attribute and change.event is not Event.REMOVE:
            origin = self.origin_of(change)
            if origin is not None and origin != self.origin_value:
                return Route.LOOP_SKIPPED
        return Route.REPLICATE

    def origin_of(self, change: Change) -> str | None:
        """The origin stamp of a put's new image, or None when the item has none."""
        if not self.origin_attribute or change.new is None:
            return None
        try:
            value = change.new.get(self.origin_attribute)
        except MalformedImage:
            return None  # not a stamp: replicated, and refused where it is written
        if value is None:
            return None
        text = value.get("S")
        return text if isinstance(text, str) else None
