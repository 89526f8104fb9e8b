"""What the local runtime tells each shard's worker: the stream, the limits, the hooks.

The runtime makes one :class:`ShardSettings` from the job file for every
:class:`~replicator.runtime.local.shard_worker.ShardWorker` it starts, with the time a
processor is given to stop (:func:`stop_answer_limit_s`), which the runtime's own stop
deadline must stay above. Kept apart from the worker, so that what only sets a worker up
or weighs its limits does not import the reading machinery with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from replicator.config.model import PROCESSOR_FLUSH_TIMEOUT_MS, OnTrimmedData, processor_stop_s
from replicator.exceptions import EnvironmentProblem
from replicator.watermark.spans import UnreadSpan

# Above what a processor takes to answer shutdownRequested: the checkpoint it asks for
# written to the lease table, and its answer read.
_STOP_ANSWER_MARGIN_S = 5.0


def stop_answer_limit_s(shutdown_flush_ms: int) -> float:
    """How long a processor is given to answer ``shutdownRequested`` with
    ``kcl.shutdown_flush_ms``: what it may take (:func:`processor_stop_s`) and a margin,
    so that one that waited its flush and the watermark in full is not killed."""
    return processor_stop_s(shutdown_flush_ms) + _STOP_ANSWER_MARGIN_S


@dataclass(frozen=True)
class ShardSettings:
    stream_arn: str
    max_records: int
    idle_s: float
    on_trimmed: OnTrimmedData
    # Failures allowed in restart_window_s; also exit-3 failures allowed in a row with no
    # checkpoint between them, however far apart.
    restart_limit: int = 5
    restart_window_s: float = 300.0
    # How long a processor may take to answer shutdownRequested before it is killed:
    # see stop_answer_limit_s (27 s with the default kcl.shutdown_flush_ms).
    shutdown_timeout_s: float = stop_answer_limit_s(PROCESSOR_FLUSH_TIMEOUT_MS)
    # A restarted processor counts as recovered once it has checkpointed, or has run
    # this long without failing (an idle stream gives it nothing to checkpoint), unless
    # it last failed with exit code 3: then only a checkpoint counts.
    recovered_after_s: float = 60.0
    # Stores a span of changes this shard passed over (trimmed, an expired LATEST) in
    # every destination's status table, so that the watermark never claims them; None
    # when no watermark is published.
    record_unread: Callable[[str, UnreadSpan], None] | None = None
    record_unread_attempts: int = 8
    # The lease's failover time: a worker that has not confirmed its lease (a renewal or
    # a checkpoint) for this long checks that the lease is still its own before handing
    # its processor another batch. None: no check.
    lease_expiry_s: float | None = None
    # Seconds of failing stream reads before the shard is reported (metrics.stall_after_s).
    read_stall_after_s: float = 300.0
    # While a call to the stream goes unanswered (an endpoint that hangs GetRecords or
    # GetShardIterator until botocore's read timeout), and in the waits between retries,
    # the processor is told every this many seconds how far behind the reader may be by
    # now, so that its lag grows with the wait, not once per failed read.
    outstanding_read_report_s: float = 1.0
    # Turns an AWS error no retry fixes, met while doing ``what``, into the line the run
    # ends with (naming the stream or lease table, where, and what to do); None: the
    # error as it is.
    explain: Callable[[ClientError | BotoCoreError, str], EnvironmentProblem] | None = None
    # The stream client's read timeout: a GetRecords page that is not answered within it
    # is asked for again at half the size (see PageSize.unanswered).
    read_timeout_s: float = 10.0
