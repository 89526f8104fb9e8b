"""How many records a shard's worker asks GetRecords for, as the endpoint keeps up.

A page that goes unanswered for the read timeout would go unanswered again on every
retry (moto under load serves a thousand records in seconds), and the shard would never
move: :class:`PageSize` halves the page then, and doubles it back once a page is
answered quickly. Kept apart from the worker's reading, which only asks it for the size
and tells it how each call went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

# The fewest records a GetRecords call asks for, however often a page goes unanswered.
_SMALLEST_PAGE = 10


@dataclass(eq=False)
class PageSize:
    """The number of records a shard's GetRecords calls ask for."""

    shard_id: str
    # kcl.max_records: where a page starts, and what it grows back to.
    most: int
    # The stream client's read timeout (ShardSettings.read_timeout_s).
    read_timeout_s: float
    # The most, halved after a page went unanswered, doubled back after a page answered
    # in a quarter of the read timeout (an endpoint slow to serve a full page: moto under
    # load).
    records: int = field(init=False)

    def __post_init__(self) -> None:
        self.records = self.most

    def answered(self, asked: int, asked_at: float) -> None:
        """A call for ``asked`` records, sent at ``asked_at`` (``time.monotonic``), was
        answered: a page below the most, answered in a quarter of the read timeout,
        doubles (up to the most)."""
        if asked < self.most and time.monotonic() - asked_at < self.read_timeout_s / 4:
            self.records = min(self.most, asked * 2)

    def unanswered(self) -> None:
        """A GetRecords call went unanswered for the read timeout: an endpoint that takes
        that long to serve a page (moto under load serves a thousand records in seconds)
        would time out on every retry of the same page, and the shard would never move.
        Ask for half as many records from now on, down to :data:`_SMALLEST_PAGE`."""
        if self.records > _SMALLEST_PAGE:
            self.records = max(_SMALLEST_PAGE, self.records // 2)
            log.info(
                "GetRecords went unanswered; asking for fewer records a call",
                shard=self.shard_id,
                records_a_call=self.records,
            )
