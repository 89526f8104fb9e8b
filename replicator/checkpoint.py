"""Stage 6: checkpoints through the daemon, with its errors handled as the KCL documents them.

The daemon answers each checkpoint request with the error the KCL raised, if any:

* ``ThrottlingException`` / ``KinesisClientLibDependencyException``: the lease table is
  busy or unreachable; retry a few times, then leave it to the next batch (a later
  checkpoint covers this one; nothing is lost by waiting).
* ``ShutdownException``: the lease is gone to another worker; stop without checkpointing.
* ``InvalidStateException`` or anything unknown: the daemon's state is broken; stop
  the process so the work resumes from the last good checkpoint.

No answer at all (our input at its end, our output closed) is not a refusal: the daemon
went away (killed with its runtime), which :class:`DaemonGone` reports as such.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from replicator.aws.backoff import Backoff
from replicator.exceptions import CheckpointFailed, DaemonGone, LeaseLost, UnsupportedDaemon
from replicator.metrics import Metrics

log = structlog.get_logger(__name__)

_RETRYABLE = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
_LEASE_GONE = frozenset({"ShutdownException"})


class DaemonCheckpointer(Protocol):
    """amazon-kclpy's ``Checkpointer`` (it raises CheckpointError with ``.value``)."""

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None: ...


class Checkpoints:
    def __init__(
        self,
        metrics: Metrics,
        shard_id: str,
        attempts: int = 5,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.metrics = metrics
        self.shard_id = shard_id
        self.attempts = attempts
        self.backoff = backoff or Backoff(base_s=0.2, cap_s=5.0)
        self.sleep = sleep
        self.last: str | None = None

    def moves(self, sequence_number: str | None) -> bool:
        """Whether a checkpoint at ``sequence_number`` would be past the last one."""
        if sequence_number is None or sequence_number == self.last:
            return False
        return self.last is None or int(sequence_number) > int(self.last)

    def write(
        self, checkpointer: DaemonCheckpointer, sequence_number: str | None, *, required: bool
    ) -> bool:
        """Checkpoint (``None`` = at shard end). ``required`` retries until it succeeds."""
        attempt = 0
        while True:
            try:
                checkpointer.checkpoint(sequence_number)
            except UnsupportedDaemon:
                raise  # its answer was no checkpoint answer of KCL 3's protocol
            except Exception as error:  # noqa: BLE001  # amazon-kclpy raises CheckpointError(Exception)
                if _daemon_gone(error):
                    raise DaemonGone(
                        f"shard {self.shard_id}: the daemon went away while checkpoint "
                        f"{sequence_number or 'SHARD_END'} was asked for ({type(error).__name__})"
                    ) from None
                value = str(getattr(error, "value", error))
                if value in _LEASE_GONE:
                    raise LeaseLost(
                        f"shard {self.shard_id}: lease lost while checkpointing"
                    ) from None
                if value not in _RETRYABLE:
                    raise CheckpointFailed(
                        f"shard {self.shard_id}: the daemon refused checkpoint "
                        f"{sequence_number or 'SHARD_END'}: {value}"
                    ) from None
                attempt += 1
                if not required and attempt >= self.attempts:
                    log.warning(
                        "checkpoint deferred to the next batch",
                        shard=self.shard_id,
                        sequence_number=sequence_number,
                        error=value,
                    )
                    return False
                self.sleep(self.backoff.delay(attempt))
                continue
            self.last = sequence_number
            self.metrics.checkpoints.inc()
            self.metrics.last_checkpoint.labels(self.shard_id).set(time.time())
            log.debug("checkpointed", shard=self.shard_id, sequence_number=sequence_number)
            return True


def _daemon_gone(error: BaseException) -> bool:
    """Whether a checkpoint failed for want of a daemon: amazon-kclpy parses the empty
    line it reads at the end of its input as JSON (JSONDecodeError on an empty document),
    and writing to a closed output raises BrokenPipeError. A daemon's answer, even one
    we cannot parse, is not this."""
    if isinstance(error, json.JSONDecodeError):
        return not error.doc.strip()
    return isinstance(error, BrokenPipeError | EOFError | ConnectionResetError)


def checkpoint_error_value(error: Any) -> str:
    return str(getattr(error, "value", error))
