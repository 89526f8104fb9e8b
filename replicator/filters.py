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

import re
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from replicator.config.model import JobConfig, StreamKind, TtlDeletes
from replicator.exceptions import MalformedImage
from replicator.records import Change, Event

log = structlog.get_logger(__name__)

# Puts read without the origin stamp, none with it, before the watch says so; and puts
# stamped with the source's region (not origin_value), none with origin_value.
UNSTAMPED_PUTS_WARNED_AFTER = 1000
REGION_STAMPED_PUTS_WARNED_AFTER = 100
# Stamps of regions the job does not write to, each said once per shard, at most these.
UNKNOWN_PEERS_TOLD = 3
# What an AWS region's name looks like (us-east-1, us-gov-west-1, ap-southeast-2).
_REGION_NAME = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")


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


@dataclass(slots=True)
class StampWatch:
    """What a shard's puts show of its loop prevention settings, said once each as a
    warning: a mistake in them replicates nothing, or everything twice, and no write
    fails for it.

    * :data:`REGION_STAMPED_PUTS_WARNED_AFTER` puts stamped with the source table's
      region, where ``origin_value`` is another value, and none stamped with
      ``origin_value``: each taken for another region's echo and skipped. When that
      region is what this region's applications stamp (``origin_value`` mistyped), none
      of their writes is replicated, and the watermark counts them as settled. (Two
      tables of one region, each with its own value, show puts of both stamps.)
    * :data:`UNSTAMPED_PUTS_WARNED_AFTER` puts without ``origin_attribute``, none with
      it: a misspelt attribute, or applications that do not stamp. Every put is then
      taken for this region's own and echoes go back and forth (a wasted write each,
      stopped by the rule's condition).
    * A put whose ``origin_attribute`` holds another type than text (``{"N": "1"}``):
      stamps are compared as strings, so it is taken for unstamped, as above, and no
      stamp of that application's ever stops an echo.
    * A put stamped with a region that is none of the job's destinations' (when the
      job's own stamp is its region, as a mesh's are): another region's job writes
      here, so that region is in the mesh, but this job does not write to it. Its echo
      is skipped here as it should be, and the region's job skips this region's writes
      it reads back from a third region as echoes too: that region never receives them
      (a mesh job missing a peer). Said once per stamp shaped like a region's name
      (a peer's own name, ``europe``, cannot be told from a mistake), for at most
      :data:`UNKNOWN_PEERS_TOLD` stamps."""

    origin_attribute: str
    origin_value: str
    source_region: str
    # The destinations' regions, when the job's own stamp is its region (empty: stamps
    # are names of the operators' own, which cannot be told from regions here).
    peer_regions: frozenset[str] = frozenset()
    unknown_peers_told: set[str] = field(default_factory=set)
    unstamped: int = 0
    stamp_seen: bool = False
    region_stamped: int = 0
    own_stamp_seen: bool = False
    mistyped_told: bool = False

    @classmethod
    def for_job(cls, job: JobConfig) -> StampWatch | None:
        attribute = job.loop_prevention.origin_attribute
        if not attribute:
            return None
        region_stamps = job.origin_value.startswith(job.source.region)
        peers = frozenset(d.region for d in job.destinations) if region_stamps else frozenset()
        return cls(attribute, job.origin_value, job.source.region, peers)

    def saw(self, change: Change, origin: str | None) -> None:
        """A put read (``origin``: its stamp, None for none)."""
        if origin is None:
            if not self.mistyped_told:
                self._check_type(change)
            if not self.stamp_seen:
                self.unstamped += 1
                if self.unstamped == UNSTAMPED_PUTS_WARNED_AFTER:
                    log.warning(
                        f"none of the first {UNSTAMPED_PUTS_WARNED_AFTER} puts read carried "
                        "the origin stamp (loop_prevention.origin_attribute): each is "
                        "replicated as this region's own, and the other regions' writes "
                        "echo back; check the attribute's name and that the applications "
                        "stamp every put",
                        origin_attribute=self.origin_attribute,
                        sequence_number=change.sequence_number,
                    )
            return
        self.stamp_seen = True
        if self.peer_regions and origin != self.origin_value and origin not in self.peer_regions:
            self._check_peer(change, origin)
        if self.own_stamp_seen:
            return
        if origin == self.origin_value:
            self.own_stamp_seen = True
        elif origin == self.source_region:
            self.region_stamped += 1
            if self.region_stamped == REGION_STAMPED_PUTS_WARNED_AFTER:
                log.warning(
                    f"{REGION_STAMPED_PUTS_WARNED_AFTER} puts stamped with the source "
                    "table's region, and none with loop_prevention.origin_value, were "
                    "skipped as another region's echoes. If this region's applications "
                    "stamp the region, none of their writes is replicated: set "
                    "origin_value to it (if another job's table in this region stamps it, "
                    "nothing is wrong)",
                    origin_attribute=self.origin_attribute,
                    stamp=origin,
                    origin_value=self.origin_value,
                    sequence_number=change.sequence_number,
                )

    def _check_peer(self, change: Change, origin: str) -> None:
        """Warn once of another region's stamp whose region this job does not write to
        (a value starting with a destination's region, ``eu-west-1b``, is that region's
        second table's; the source's region is another table's of this region)."""
        told = self.unknown_peers_told
        if (
            origin in told
            or len(told) >= UNKNOWN_PEERS_TOLD
            or not _REGION_NAME.fullmatch(origin)  # a name of the operators' own
            or origin.startswith(self.source_region)
            or any(origin.startswith(region) for region in self.peer_regions)
        ):
            return
        told.add(origin)
        log.warning(
            f"a put stamped {origin!r} was skipped as another region's echo, but no "
            f"destination of this job is in {origin!r}: its job writes to this region, "
            "and this job does not write to it. In a mesh every job lists every other "
            "region under destinations; without it, this region's writes never reach "
            f"{origin!r} (its job skips them as echoes when it reads them from a third "
            "region). Add the destination, restart, and run verify --repair from this "
            "region (nothing is wrong if that region replicates nothing from here)",
            origin_attribute=self.origin_attribute,
            stamp=origin,
            destination_regions=sorted(self.peer_regions),
            sequence_number=change.sequence_number,
        )

    def _check_type(self, change: Change) -> None:
        """Warn once of a put whose stamp attribute is there but not text (the image
        has already read it: a lookup)."""
        if change.new is None:
            return
        try:
            value = change.new.get(self.origin_attribute)
        except MalformedImage:
            return
        if value is None:
            return
        self.mistyped_told = True
        log.warning(
            "a put's origin stamp (loop_prevention.origin_attribute) is not text: stamps "
            "are compared as strings (S), so the put is replicated as unstamped, as this "
            "region's own; have the applications write the stamp as a string",
            origin_attribute=self.origin_attribute,
            stamp_type=next(iter(value), "?"),
            sequence_number=change.sequence_number,
        )
