"""What can go wrong, named for what happened.

Errors that an operator is expected to meet (a bad job file, a missing table, no
credentials) derive from :class:`OperatorError`: the CLI prints their message and exits
with their ``exit_code``, without a traceback. Anything else is a bug or an outage we
did not foresee, and ends the process loudly so that work resumes from the last checkpoint.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base of every error this package raises on purpose."""


class OperatorError(ReplicatorError):
    """An expected failure whose message tells the operator what to fix."""

    exit_code = 1


class ConfigError(OperatorError):
    """The job file is unreadable or invalid; the message lists every problem."""

    exit_code = 2


class EnvironmentProblem(OperatorError):
    """AWS resources or credentials are not as the job file says (missing table, no stream...)."""

    exit_code = 3


class KclUnavailable(OperatorError):
    """The KCL runtime cannot start: no java, no jars, or a classpath that does not run."""

    exit_code = 4


class LeaseHeld(OperatorError):
    """Another worker holds this task's leases; the local runtime runs one worker per task."""

    exit_code = 5


class TrimmedData(OperatorError):
    """The checkpoint points at stream data that has already been trimmed (older than 24 h)."""

    exit_code = 6


class LeaseLost(ReplicatorError):
    """Our lease on a shard was taken by another worker; stop without checkpointing."""


class RecordDecodeError(ReplicatorError):
    """A stream record's payload is not a change we can replicate; it goes to the dead letters."""


class DestinationRefused(ReplicatorError):
    """A whole destination keeps refusing our writes (access denied, missing table)."""


class DeadLetterUnavailable(ReplicatorError):
    """A change could be neither applied nor dead-lettered; nothing may be checkpointed past it."""


class CheckpointFailed(ReplicatorError):
    """The daemon refused a checkpoint for a reason retrying cannot fix."""
