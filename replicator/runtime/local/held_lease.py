"""The lease a shard's worker holds in the local runtime, and whether it still holds it.

A worker hands its processor batches only while the shard's lease is its own, and the
lease can go behind its back: the runtime's renewal finds it taken, or a hang outlasts
the failover time and another worker, or another host under the same worker id, takes
it over. :class:`HeldLease` tells that from the lease table (the owner and the counter
both), reads the lease through throttling, and gives it up at a stop. Kept apart from
the worker's reading: it needs the lease table, the lease, the worker's clock and how
the worker waits before a retry, nothing of the stream or the processor.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify
from replicator.exceptions import LeaseLost
from replicator.shards.leases import Lease, LeaseTable

log = structlog.get_logger(__name__)

# Reads of the lease at a stop, throttling and 5xx retried (stopping no longer waits).
_STOP_READ_ATTEMPTS = 4


@dataclass(eq=False, kw_only=True)
class HeldLease:
    """A shard's lease as its worker holds it: confirmed, checked, read and released."""

    # The worker's lease, the object the runtime's renewals update, in ``leases``.
    lease: Lease
    leases: LeaseTable
    stopping: threading.Event
    # The worker's wait before retry ``attempt`` of a read of the lease until the runtime
    # stops (raising when no retry can help): the lease is retried as the stream is.
    retry: Callable[[BaseException, int, str], None]
    # The lease's failover time (ShardSettings.lease_expiry_s); None: no check.
    expiry_s: float | None
    backoff: Backoff
    monotonic: Callable[[], float]
    # When (``monotonic``) a renewal or a checkpoint last showed the lease ours.
    _confirmed_at: float = field(init=False)
    taken: bool = field(default=False, init=False)  # the runtime found it renewed by another
    release_tried: bool = field(default=False, init=False)  # given up, or tried to

    def __post_init__(self) -> None:
        self._confirmed_at = self.monotonic()

    @property
    def shard_id(self) -> str:
        return self.lease.shard_id

    def confirmed(self) -> None:
        """The lease was just confirmed as ours: renewed by the runtime, or a checkpoint
        written with it."""
        self._confirmed_at = self.monotonic()

    def check(self) -> None:
        """Raise LeaseLost if the lease may have expired and is no longer ours.

        A worker that was hung (SIGSTOP, a frozen VM) for longer than the failover time
        may have been replaced; when it wakes up, the batch it has just read must not be
        written over the new owner's. Renewals confirm the lease every third of the
        failover time, so this reads the lease only after such a pause.

        The owner alone does not tell: two hosts can share a worker id (``kcl.worker_id``
        pinned in a shared job file, fixed hostnames), and the other one takes the lease
        over under the same name. Its take moved the counter, so the stored counter must
        also be the one this worker holds (see :meth:`is_ours`).
        """
        expiry = self.expiry_s
        if expiry is None or self.monotonic() - self._confirmed_at < expiry * 2 / 3:
            return
        ours, stored = self.is_ours(self.read)
        if not ours:
            raise LeaseLost(
                f"lease on shard {self.shard_id} was taken over by {self.taker(stored)} "
                "while this one was not renewing it"
            )
        self._confirmed_at = self.monotonic()

    def _holds(self, stored: Lease | None) -> bool:
        """Whether the stored lease is the one this worker holds: its owner, and the
        counter of this worker's last take, renewal or checkpoint of it (the runtime's
        renewals update ``self.lease``, the object this worker holds)."""
        return (
            stored is not None
            and stored.owner == self.leases.owner
            and stored.counter == self.lease.counter
        )

    def is_ours(
        self, read: Callable[[Callable[[str], Lease | None]], Lease | None]
    ) -> tuple[bool, Lease | None]:
        """Whether the lease is still this worker's as stored, and the lease as read
        (``read`` reads it with the function it is given).

        The runtime renews the lease on its own thread: a renewal landing between the
        read and its update of ``self.lease`` shows a counter one ahead of ours. So a
        read that disagrees is made once more, while no update of the lease table is in
        progress (:meth:`LeaseTable.get_settled`), before the lease is taken as lost. That
        read also recognises a renewal or checkpoint of ours whose answer was lost but
        which landed (it brings ``self.lease`` up to it): not a takeover either."""
        stored = read(self.leases.get)
        if self._holds(stored):
            return True, stored
        stored = read(functools.partial(self.leases.get_settled, held=self.lease))
        return self._holds(stored), stored

    def taker(self, stored: Lease | None) -> str:
        """Who has the lease now, as the error says it."""
        if stored is None:
            return "no worker (the lease is gone)"
        if stored.owner == self.leases.owner:
            return (
                f"another worker with this worker's id {stored.owner} (its counter moved "
                f"from {self.lease.counter} to {stored.counter}: two hosts share the id)"
            )
        return f"worker {stored.owner}"

    def ours_at_stop(self) -> bool:
        """Whether the lease is still this worker's at a stop. A lease that cannot be read
        (a few attempts) counts as lost: the child then drops what it has not written,
        which the next owner reads again from the checkpoint, rather than write it over
        a new owner's."""
        try:
            ours, stored = self.is_ours(functools.partial(self.read, attempts=_STOP_READ_ATTEMPTS))
        except (ClientError, BotoCoreError) as error:
            log.warning(
                "could not read the lease at the stop; the processor is told it is lost",
                shard=self.shard_id,
                error=str(error),
            )
            return False
        if not ours:
            log.warning(
                "the lease was taken over; the processor is told it is lost",
                shard=self.shard_id,
                taken_by=self.taker(stored),
            )
        return ours

    # -- the lease, read and given up on the way through outages ---------------------------

    def read(
        self,
        read: Callable[[str], Lease | None] | None = None,
        attempts: int | None = None,
    ) -> Lease | None:
        """The lease as stored (``read``: how, by default ``leases.get``), retried
        through throttling so a restart is not lost to it: until the runtime stops, or
        ``attempts`` times (throttling and 5xx only; at a stop, when ``stopping`` no
        longer waits)."""
        read = read or self.leases.get
        attempt = 0
        while True:
            try:
                return read(self.shard_id)
            except (ClientError, BotoCoreError) as error:
                if attempts is not None:
                    retried = classify(error) in (ErrorKind.THROTTLED, ErrorKind.RETRY)
                    if not retried or attempt + 1 >= attempts:
                        raise
                    time.sleep(self.backoff.delay(attempt))
                else:
                    if self.stopping.is_set():
                        raise
                    self.retry(error, attempt, "reading the shard's lease")
                attempt += 1

    def release(self) -> None:
        """Give the lease up at a clean stop; a few attempts, then leave it to expire.

        Releasing only lets another worker take the shard before the failover time; the
        checkpoint is already stored, so failing here must not turn a clean stop into an
        error.
        """
        self.release_tried = True
        for attempt in range(4):
            try:
                self.leases.release(self.lease)
                return
            except (ClientError, BotoCoreError) as error:
                if classify(error) not in (ErrorKind.THROTTLED, ErrorKind.RETRY) or attempt == 3:
                    log.warning(
                        "could not release the lease; it expires after the failover time",
                        shard=self.shard_id,
                        error=str(error),
                    )
                    return
                time.sleep(self.backoff.delay(attempt))
