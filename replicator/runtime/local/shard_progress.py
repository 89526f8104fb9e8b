"""What the local runtime knows of each shard's worker: its progress and its trouble.

A worker fills its :class:`ShardProgress` as it reads, restarts its processor and stores
checkpoints; the runtime reads it for /healthz and its restart count, the demo to show
progress, and the worker itself to judge whether a failing processor has recovered. Kept
apart from the worker, so that what only reads progress does not depend on how a shard
is read. :func:`refusing_destination` is here because it fills the field that names a
destination refusing every write, from the processor's last words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class ShardProgress:
    """What the runtime shows and judges health by, per shard."""

    shard_id: str
    records_delivered: int = 0
    checkpoint: str | None = None
    last_checkpoint_at: float | None = None
    last_records_at: float | None = None
    restarts: int = 0
    child_pid: int | None = None
    ended: bool = False
    # Since when the current child has run (None between a failure and its restart), and
    # the last failure: /healthz reports a shard whose processor is down or crash-looping.
    child_up_since: float | None = None
    failed_at: float | None = None
    last_failure: str | None = None
    # The last failure carried exit code 3 (a destination refusing every write): only a
    # write settled there or a checkpoint of every record delivered after it counts as
    # recovered, not time running (the next child takes minutes of retries to fail the
    # same way). ``refusing_destination``: its label, as its last words name it.
    refusing: bool = False
    refusing_destination: str | None = None
    # When the last checkpoint covering every record delivered was written.
    last_full_checkpoint_at: float | None = None
    # Stream reads failing since (None while they succeed), and the last error.
    read_failing_since: float | None = None
    read_error: str | None = None
    # Since when the processor has not answered a processRecords (None while none is
    # out): a processor that is stuck freezes its own lag gauges, so only this shows it.
    answer_awaited_since: float | None = None
    # While a processRecords is out, the time (epoch seconds) from which every change
    # may be missing at every destination: its newest record's creation (nothing after
    # it is read until it is answered, and it may be applied nowhere yet), or for an
    # empty batch its sending less how far behind it said the reader was. The runtime's
    # floor under the shard's lag: see replicator/metrics/server.py.
    awaited_behind_since: float | None = None


_REFUSING = re.compile(r"^destination (.+?) \(")


def refusing_destination(reason: str | None) -> str | None:
    """The label of the destination a processor's last words say refused its writes
    (``destination <label> (<region>/<table>) refused ...``), if they say so. A tombstone
    table's refusal (``tombstone table <name> (<where>) refused ...``) names none: a write
    settled at the table beside it (an update, which reads no tombstone) does not show the
    tombstone table back, so only a checkpoint of every record delivered ends it."""
    match = _REFUSING.match(reason or "")
    return match.group(1) if match else None
