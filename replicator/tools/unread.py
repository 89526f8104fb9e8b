"""Clearing the watermark's unread spans (changes never read for a destination, see
:mod:`replicator.watermark.spans`) once a destination is known to reflect them.

Only a whole-table ``replicator verify`` that ends with no difference left at a
destination shows that: whatever the source held when it was read, the destination held
too, and verify reports items only at the destination as ``extra``, so a delete the job
never read is seen as well. A backfill cannot show it: a scan copies only items that
exist at the source, and an item deleted there during a span stays at the destination.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator import wiring
from replicator.config.model import ResolvedJob
from replicator.exceptions import ReplicatorError
from replicator.watermark.parts import US
from replicator.watermark.table import StatusTable

log = structlog.get_logger(__name__)

MANUAL_STEP = (
    "they stay reported until a later verify clears them (or edit the destination's items "
    "in the status table by hand: remove the unread spans and dead-letter ranges that end "
    "at or before that time, and set dead_letters to 0 where no range is left)"
)


@dataclass
class Cleared:
    """What clearing did: the last creation time no longer reported unread, the
    destinations where spans were removed, and those where removing them failed."""

    through: str
    cleared: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def cleared_through_us(started_s: float, margin_ms: int) -> int:
    """The last creation time a comparison that started reading at ``started_s`` covers:
    a second earlier (a stream's creation times are whole seconds) and less the
    watermark's margin (the clocks of the source and of this host may differ)."""
    return int(started_s) * US - US - margin_ms * 1000


def clear_unread(
    resolved: ResolvedJob, started_s: float, destinations: Iterable[str]
) -> Cleared | None:
    """Clear, at each of ``destinations``, the unread spans and dead-letter ranges up to
    what a comparison that started at ``started_s`` covers; None when the job publishes
    no watermark. A failure is logged with the manual step and reported: the comparison
    itself succeeded."""
    if not resolved.publishes_watermark:
        return None
    through_us = cleared_through_us(started_s, resolved.job.watermark.caught_up_margin_ms)
    moment = datetime.fromtimestamp(through_us / US, UTC)
    result = Cleared(moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    for label in destinations:
        table = StatusTable(wiring.status_client(resolved, label), resolved.watermark_table, label)
        try:
            spans = table.clear_unread_through(through_us)
            if table.clear_dead_letters_through(through_us) or spans:
                result.cleared.append(label)
        except (ClientError, BotoCoreError, ReplicatorError) as error:
            result.failed.append(label)
            log.warning(
                f"could not clear the watermark's unread spans; {MANUAL_STEP}",
                destination=label,
                status_table=resolved.watermark_table,
                error=str(error),
            )
    return result
