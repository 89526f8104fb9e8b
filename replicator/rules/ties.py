"""Puts of one item whose images rank alike but for their digest: a warning.

``last_writer_wins`` and ``version`` cannot tell which of two different images with the
same timestamp (or version) and origin was written later: the digest of each image
decides, the same way in every region, so that regions never keep different images.
When the later write loses that draw, the destination keeps the earlier image while
the source holds the later one, until the item is written again. That happens only
when the application writes an item twice without changing the attribute (a timestamp
in seconds, an update that does not bump it), against the rule's contract, and nothing
else would show it: so each process says so, at most once a minute, with how many such
losses it saw (docs/conflict-rules.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from replicator.items import AttributeValue, describe_key

log = structlog.get_logger(__name__)

WARN_EVERY_S = 60.0


class TieWatch:
    """Counts the later puts that lost by the digest alone, and warns now and then."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = 0
        self._warned_at: float | None = None

    def later_put_lost(
        self,
        attribute: str,
        keys: Mapping[str, AttributeValue],
        shown: Callable[[], tuple[str, str]],
        where: str,
    ) -> None:
        """A put lost to an image that ranks above it only by its digest, though it was
        written after it: ``shown`` gives the kept and the lost image's ranking fields
        (asked only when a warning is due), ``where`` is the destination, or the
        buffer's squash."""
        with self._lock:
            self._seen += 1
            now = self._clock()
            if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
                return
            seen, self._seen, self._warned_at = self._seen, 0, now
        kept, lost = shown()
        log.warning(
            f"two different images of one item have the same {attribute}: the one with the "
            "higher digest is kept, which need not be the later write, so the destination "
            f"can keep an older image than the source's; change {attribute} on every write "
            "(docs/conflict-rules.md)",
            attribute=attribute,
            key=describe_key(keys),
            kept=kept,
            lost=lost,
            where=where,
            since_last_warning=seen,
        )


TIES = TieWatch()
