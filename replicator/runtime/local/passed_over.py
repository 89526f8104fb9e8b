"""The changes a shard's worker passes over, told to the watermark before it moves on.

Trimmed data, or a pinned LATEST position that expired before any record came, makes a
worker read on past changes it never delivered. The watermark must never claim those:
:class:`PassedOver` notes where the span begins and, once reading picks up again,
stores it in every destination's status table (``ShardSettings.record_unread``) before
the processor sees anything after it. Kept apart from the worker's reading, which only
says when a span begins and where reading picked up: the span, its retries and its log
lines are this module's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.backoff import Backoff
from replicator.exceptions import ReplicatorError
from replicator.watermark import spans
from replicator.watermark.spans import UnreadSpan

log = structlog.get_logger(__name__)


@dataclass(eq=False, kw_only=True)
class PassedOver:
    """The span of one shard's changes being passed over, until it is recorded."""

    shard_id: str
    # Stores a span in the status tables (ShardSettings.record_unread), tried
    # ``attempts`` times, ``backoff`` apart, until ``stopping``; None: no watermark is
    # published, and nothing is noted.
    record_unread: Callable[[str, UnreadSpan], None] | None
    attempts: int
    stopping: threading.Event
    clock: Callable[[], float]  # the worker's, for a span that ends now
    backoff: Backoff
    # Changes passed over and not yet recorded: (created from, reason).
    _gap: tuple[int, str] | None = field(default=None, init=False)

    @property
    def pending(self) -> bool:
        """Whether a span is noted and not yet recorded."""
        return self._gap is not None

    def note(self, from_us: int, reason: str) -> None:
        """Changes created from ``from_us`` on are being passed over; the span ends where
        reading picks up again (see :meth:`record`)."""
        if self.record_unread is None:
            return
        if self._gap is not None:
            from_us = min(from_us, self._gap[0])
        self._gap = (from_us, reason)

    def record(self, first_created_us: int | None) -> None:
        """Store the span passed over, up to the first record read after it (to the end
        of its second: creation times are whole seconds), or up to now when the read
        came back empty. Tried a few times; if the status tables keep failing,
        replication goes on and the error says the watermark may pass the span."""
        assert self._gap is not None and self.record_unread is not None
        from_us, reason = self._gap
        if first_created_us is not None:
            to_us = first_created_us + spans.US - 1
        else:
            to_us = int(self.clock() * spans.US)
        span = UnreadSpan(from_us, max(from_us, to_us), reason)
        self._gap = None
        attempts = self.attempts
        for attempt in range(attempts):
            try:
                self.record_unread(self.shard_id, span)
            except (ClientError, BotoCoreError, ReplicatorError, OSError) as error:
                if attempt + 1 < attempts and not self.stopping.is_set():
                    self.stopping.wait(self.backoff.delay(attempt))
                    continue
                log.error(
                    "could not record the changes passed over in the status tables; the "
                    "watermark may claim them",
                    shard=self.shard_id,
                    unread=span.describe(),
                    error=str(error),
                )
                return
            log.warning(
                "changes passed over; recorded for the watermark",
                shard=self.shard_id,
                unread=span.describe(),
            )
            return
