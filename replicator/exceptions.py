"""What can go wrong, named for what happened: every exception the package defines.

All derive from :class:`ReplicatorError`. Errors that an operator is expected to meet (a
bad job file, a missing table, no credentials) derive from :class:`OperatorError`: the
CLI prints their message and exits with their ``exit_code``, without a traceback. Errors
about one piece of bad input (an attribute value, a key or a time typed at the CLI, a
change no rule can write) are also :class:`ValueError`, as the standard library's parsers'
are. Anything else is a bug or an outage we did not foresee, and ends the process loudly
so that work resumes from the last checkpoint.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base of every error this package raises on purpose."""


class OperatorError(ReplicatorError):
    """An expected failure whose message tells the operator what to fix."""

    exit_code = 1


class ReportUnwritten(OperatorError):
    """A command's report could not be written to its stdout (a closed pipe, a full disk):
    its work is done, but whoever runs it has not got the report."""


class ConfigError(OperatorError):
    """The job file is unreadable or invalid; the message lists every problem."""

    exit_code = 2


class UnknownDestination(ConfigError):
    """A ``--destination`` that names none of the job's destinations: refused where only
    a destination of the job can be meant, warned about where the name may be that of
    one since removed from the job file (``replicator conflicts``)."""


class EnvironmentProblem(OperatorError):
    """AWS resources or credentials are not as the job file says (missing table, no stream...)."""

    exit_code = 3


class KclUnavailable(OperatorError):
    """The KCL runtime cannot start: no java, no jars, or a classpath that does not run."""

    exit_code = 4


class DaemonStopped(OperatorError):
    """The KCL daemon ended without the stop this process asked of it: on its own (the
    KCL's scheduler gave up starting, a processor failed), by a signal someone else sent,
    or killed on a second stop request. The exit code is the run's, which depends on how."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class LeaseHeld(OperatorError):
    """Another worker holds this task's leases; the local runtime runs one worker per task."""

    exit_code = 5


class TrimmedData(OperatorError):
    """The checkpoint points at stream data that has already been trimmed (older than 24 h)."""

    exit_code = 6


class EntryNotFound(OperatorError):
    """No conflict-log entry (or more than one) answers to the id given."""

    exit_code = 1


class Interrupted(OperatorError):
    """Ctrl-C (SIGINT) stopped a command before it began its work: one line, and exit
    128 + SIGINT, as a shell reports a command that SIGINT ended."""

    exit_code = 130


class LeaseLost(ReplicatorError):
    """Our lease on a shard was taken by another worker; stop without checkpointing."""


class RecordDecodeError(ReplicatorError):
    """A stream record's payload is not a change we can replicate; it goes to the dead letters."""


class DestinationRefused(ReplicatorError):
    """A whole destination keeps refusing our writes (access denied, missing table)."""


class DestinationUnavailable(ReplicatorError):
    """A destination did not take a write within the bound an operator command sets
    (replication itself retries without one)."""


class DeadLetterUnavailable(ReplicatorError):
    """A change could be neither applied nor dead-lettered; nothing may be checkpointed past it."""


class CheckpointFailed(ReplicatorError):
    """The daemon refused a checkpoint for a reason retrying cannot fix."""


class DaemonGone(ReplicatorError):
    """The daemon (KCL MultiLangDaemon or local runtime) went away: our input ended or our
    output closed. Nothing refused anything; nobody is left to answer."""


class ProtocolViolation(ReplicatorError):
    """The daemon sent what KCL 3's MultiLang protocol never sends (a line that is no
    JSON object, an object without an action, a second initialize, a checkpoint answer
    nobody asked for or one about another position): the processor cannot tell where
    the shard stands, so it exits 1 and the shard resumes from its last checkpoint."""


class StreamOrderBroken(ReplicatorError):
    """A shard's records came with a sequence number already seen (or lower than one
    seen), which a stream never does (an unpatched moto can serve two records at one
    position). What is settled is accounted for by position: the first of two changes at
    one position to settle would settle the other, and a claim or a checkpoint could
    pass a change never written. So the processor stops, naming the position and the
    shard, and the shard resumes from its last checkpoint."""


class UnsupportedDaemon(ReplicatorError):
    """The daemon sent an action of another MultiLang protocol than KCL 3's (a KCL 1.x
    ``shutdown``, or an action no protocol of ours knows): the processor cannot tell
    what it asks, so it answers nothing and exits with the CLI's code for a KCL runtime
    that cannot run (4)."""

    exit_code = KclUnavailable.exit_code

    def __init__(self, message: str, action: object, reason: object = None) -> None:
        super().__init__(message)
        self.action = action
        self.reason = reason


# -- bad input: one value, key, time or change ------------------------------------------


class AttributeFormatError(ReplicatorError, ValueError):
    """An attribute value is not a well-formed DynamoDB attribute value."""


class BinaryValueFound(ReplicatorError):
    """A binary value met on the path that does not convert binaries (``items.py`` then
    converts the image after all); never escapes that module."""


class KeySyntaxError(ReplicatorError, ValueError):
    """A key typed by an operator that cannot name an item; the message names it."""


class SinceSyntaxError(ReplicatorError, ValueError):
    """A --since value that is neither a duration nor a date; the message names it."""


class EntryFormatError(ReplicatorError, ValueError):
    """A stored conflict-log entry that does not read as one (corrupt, cut short, or
    written by something else); readers skip it with a warning that says where it is."""


class DeadLetterFormatError(ReplicatorError, ValueError):
    """A stored dead letter that does not read as one (cut short, not a letter, a field
    missing or of the wrong type); a redrive keeps it as it is for someone to look at."""


class PlanError(ReplicatorError, ValueError):
    """The change cannot be expressed as a safe write under this rule (goes to dead letters)."""

    reason = "unplannable"


class MalformedImage(PlanError):
    """A stream image, decoded after the record was accepted, is not well-formed
    DynamoDB JSON: the change can never be written as it is (goes to dead letters, as
    DynamoDB's own refusal of it would)."""

    reason = "rejected"


class ResolverFailed(PlanError):
    """The user's custom resolver raised: that change is dead-lettered, the shard goes on."""

    reason = "resolver_failed"


# -- the data path and its side outputs -------------------------------------------------


class WriteCancelled(ReplicatorError):
    """The pipeline was closed while this write was still being retried."""


class ConflictLogUnavailable(ReplicatorError):
    """The conflict log could not store an entry now; a later attempt may succeed."""


class ConflictLogRejected(ReplicatorError):
    """The conflict log refuses this entry as it is; retrying the same entry cannot help."""


class LogReadingStopped(ReplicatorError):
    """A reading of the conflict log ended because it was asked to (its target's
    ``stopping``, set by a stop signal): what it read is not the whole log."""


class ConflictNotRecorded(ReplicatorError):
    """A lost conflict's entry the recorder gave up (the exception of its future):
    ``reason`` as replicator_conflict_log_dropped_total counts it (``rejected``,
    ``unavailable``, ``backlog``, ``shutdown``), ``error`` what the log said last."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


class StatusTableMissing(ReplicatorError):
    """The status table does not exist (yet): the replicator has not published."""


class StatusTableSilent(ReplicatorError):
    """A read of the status table was not answered in the time a waiter had for it."""


class StatusItemUnreadable(EnvironmentProblem):
    """An item of the status table is not as the replicator writes it (an attribute of
    the wrong type, JSON that does not read): typically a hand edit gone wrong. No
    reader can combine the destination's parts without it, and waiting will not mend
    it, so readers raise it (``wait`` exits 3) and the publisher holds what it would
    write there; the message names the table, the item and the attribute."""


# -- the local runtime's processor children ---------------------------------------------


class ChildFailed(ReplicatorError):
    """A processor child exited, closed its output, broke the protocol, or did not answer
    in time. ``reason``: what the child said before it exited; ``exit_code``: the CLI's
    code for that reason, when the child gave one; ``timed_out``: it did not answer in
    time (rather than failing)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_code = exit_code
        self.timed_out = timed_out


class ChildKeepsFailing(ReplicatorError):
    """A shard's processor child died too often in a short time."""
