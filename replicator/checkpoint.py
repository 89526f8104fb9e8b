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

The answer must be about the position asked for: the KCL 3 MultiLangDaemon echoes the
request's ``sequenceNumber`` (null for a checkpoint at SHARD_END), and so does the local
runtime. Another line in its place, or an answer about another position, leaves where
the shard's checkpoint stands unknown: the process stops (:class:`ProtocolCheckpointer`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from replicator.aws.backoff import Backoff
from replicator.exceptions import (
    CheckpointFailed,
    DaemonGone,
    LeaseLost,
    ProtocolViolation,
    UnsupportedDaemon,
)
from replicator.metrics import Metrics

log = structlog.get_logger(__name__)

_RETRYABLE = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
_LEASE_GONE = frozenset({"ShutdownException"})


class DaemonCheckpointer(Protocol):
    """amazon-kclpy's ``Checkpointer`` (it raises CheckpointError with ``.value``)."""

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None: ...


class CheckpointRefused(Exception):
    """The daemon's answer carried an error: the KCL's exception's name, in ``value``."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class ProtocolCheckpointer:
    """Asks the daemon for a checkpoint and reads its answer, in place of amazon-kclpy's
    ``Checkpointer``: that one takes any checkpoint answer for success whatever position
    it names, and reports any other line as an ``InvalidStateException`` of the KCL's.

    ``parse`` turns a line into a message dict, raising ProtocolViolation for a line
    that is none and UnsupportedDaemon for another protocol's action."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        read_line: Callable[[], str],
        parse: Callable[[str], dict[str, Any]],
    ) -> None:
        self._write = write
        self._read_line = read_line
        self._parse = parse

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        self._write(
            {
                "action": "checkpoint",
                "sequenceNumber": sequence_number,
                "subSequenceNumber": sub_sequence_number,
            }
        )
        line = self._read_line()
        if not line:
            raise EOFError("the daemon closed our input")
        asked = sequence_number or "SHARD_END"
        try:
            answer = self._parse(line)
        except ProtocolViolation as error:
            raise ProtocolViolation(
                f"the daemon's answer to checkpoint {asked} could not be read: {error}"
            ) from None
        action = answer["action"]
        if action != "checkpoint":
            raise ProtocolViolation(
                f"the daemon sent {action!r} where its answer to checkpoint {asked} was "
                "awaited; where the shard's checkpoint stands is unknown"
            )
        if sequence_number is not None and "sequenceNumber" not in answer:
            raise ProtocolViolation(
                f"the daemon's answer to checkpoint {asked} names no sequenceNumber; "
                "where the shard's checkpoint stands is unknown"
            )
        answered = answer.get("sequenceNumber")
        if answered != sequence_number:
            raise ProtocolViolation(
                f"the daemon answered checkpoint {asked} with one at sequence number "
                f"{answered!r}; where the shard's checkpoint stands is unknown"
            )
        refusal = answer.get("error")
        if refusal is not None:
            raise CheckpointRefused(str(refusal))


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
        # Told each checkpoint's outcome: None once taken, else the daemon's answer, once
        # per ``attempts`` refusals in a row (a deferred one, and a required one retried
        # for ever at a shard's end or a stop): /healthz names refusals that last
        # (replicator/runtime/kcl/awaited.py).
        self.on_result: Callable[[str | None], object] | None = None

    def moves(self, sequence_number: str | None) -> bool:
        """Whether a checkpoint at ``sequence_number`` would be past the last one."""
        if sequence_number is None or sequence_number == self.last:
            return False
        return self.last is None or int(sequence_number) > int(self.last)

    def _tell(self, outcome: str | None) -> None:
        """``on_result``, which only feeds /healthz: its failure must not fail a checkpoint
        taken or change how a refused one is retried."""
        if self.on_result is None:
            return
        try:
            self.on_result(outcome)
        except Exception as error:  # noqa: BLE001  # said, and the checkpoint goes on
            log.warning("a checkpoint's outcome could not be noted", error=str(error))

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
            except ProtocolViolation as error:
                raise CheckpointFailed(f"shard {self.shard_id}: {error}") from None
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
                if attempt % self.attempts == 0:
                    self._tell(value)
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
            self._tell(None)
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
