"""``replicator redrive``: replay dead letters through the writers once their cause is fixed.

Every letter is claimed from the job's dead-letter target (file or SQS), decoded again
(with whatever fix is deployed) and written by the job's writers:

* a letter for one destination goes to that destination only: the one at the region
  and table the letter records, whatever it is called now (``_destination_of``); one
  whose region and table are no destination of the job stays, as failed again;
* a letter for ``*`` (it could not be decoded, so it never reached any destination)
  passes the job's filters and then goes to every destination;
* a synthetic letter of a backfill or repair is written with the same safeguards as
  when it was first tried (:mod:`replicator.tools.snapshot`).

A replayed change is then checked against the source (``_check_against_source``), a
synthetic letter's as well as a stream letter's. After a put: an item the source has
deleted since is removed again, and one it has changed since gets the source's image,
both only while the destination holds exactly the replayed image. After a delete: an
item the source holds (created again since, and that creation perhaps applied at the
destination before the late delete removed it) gets the source's image, only where the
destination holds no item (under an ordered policy: none, or one ranking below it).

A write the conflict policy declines counts as replayed: the destination holds a newer
item, which is what the policy is for. It is a lost conflict like one met in
replication, so it is recorded in the job's conflict log (under the letter's shard and
sequence number, as replication would have recorded it) and counted in the summary. The
conflict log is made ready first, as ``run`` makes it at start (``prepare``: a table
created when missing, one of other keys refused). A letter is settled only once the
entries of its lost conflicts are stored; one the log refuses, or cannot store within
``conflict_log.retry_for_s``, is counted as not recorded and its letter kept as failed
again (``conflict_not_recorded``), so the next redrive records it: a lost conflict is
never dropped with its letter. A log that could not store one ends the run after that
letter (exit 3), as a destination that stops answering does. Synthetic letters (a backfill's
or a repair's copy of a read item) are not changes, and a copy the destination declines
is not recorded, as in the backfill or the repair that wrote it first.

Letters of the same identity (:attr:`DeadLetter.identity`: one failure of one change
stored twice, as an SQS target does when a restart reads the change again, or a file
written before that was deduplicated) are replayed once: the first is replayed, and each
later copy is removed once that replay is settled, so the one letter that failed again,
if it did, stands for them all. A copy is removed only after the first's outcome is in
the target, so an interruption between leaves a copy, never no letter.

A letter that fails again stays in the target with ``attempts`` incremented and the new
error; a ``*`` letter that now fails at some destinations only stays as one letter per
failing destination. Letters are replayed one at a time, in the order the target
returns them (a file keeps the order in which they were written). The source and every
destination are described before any letter is claimed, as backfill and verify do: a
table or endpoint that is not there is the environment's problem (exit 3), and no letter
is touched for it. A destination that refuses three writes in a row (table deleted
since, access denied, credentials expired) fails its remaining letters at once, and the
exit status is 3. One that stops answering for the tools' bound (``UNANSWERED_FOR_S``)
ends the run: that letter is kept with one more attempt, the untried ones as after an
interruption, and the exit status is 3 too. The dead-letter target is checked before
any letter is claimed as well (as ``run`` checks it at start), and one that stops
taking letters (a queue silent for that bound, a file that cannot be appended to)
ends the run the same way, the letter in hand kept as it was. A file target with no
file at all is only looked at, nothing created: an absolute path with none is an empty
target (exit 0), and so is a relative one whose directory is there (``run`` creates it
at start); a relative one without even its directory, or a bare file name (whose
directory is the working directory, always there), may be the working directory's
fault, which is said, with exit 1 (``_missing_file``).

Only the job's own letters are replayed (their ``task_name`` is the job's task name):
several jobs may share a dead-letter file or queue, and another job's letter is about
its own tables even when its destination label matches one of ours. Those letters are
left exactly as they are (not retried, no attempt added) and only counted, and they do
not count against this job's exit status. What does not read as a letter stays in the
target as it is (the target says where); nobody can tell whose it is, so it counts as
not replayed: the exit status is 0 only when nothing is left for the job.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from replicator.appendfile import LINK_LOOP, dangling_link, not_a_regular_file, unusable
from replicator.config.destinations import destination_place, destinations_at
from replicator.config.model import ConflictPolicyName, DeadLetterKind, ResolvedJob
from replicator.config.stranded import StrandedFile, stranded_files, stranded_lines
from replicator.conflictlog.base import Loss
from replicator.conflictlog.recorder import BackgroundRecorder, ShardConflicts
from replicator.conflictlog.targets import prepare, recorder_for
from replicator.deadletter import (
    ALL_DESTINATIONS,
    Claimed,
    DeadLetter,
    DeadLetterTarget,
    Unreadable,
)
from replicator.deadletter.failed import DeadLetterer
from replicator.deadletter.file import SETTLED, FileDeadLetters
from replicator.exceptions import (
    ConflictNotRecorded,
    DeadLetterUnavailable,
    DestinationRefused,
    DestinationUnavailable,
    EnvironmentProblem,
    RecordDecodeError,
    WriteCancelled,
)
from replicator.filters import ChangeFilter, Route
from replicator.intake import Reader
from replicator.items import Item, describe_key, item_from_wire, key_id, key_token
from replicator.logs import redact
from replicator.metrics import Metrics, in_memory_metrics
from replicator.records import Change, Event
from replicator.tools.futures import StopGrace
from replicator.tools.scan import ReadRate
from replicator.tools.snapshot import (
    ResurrectionGuard,
    synthetic_purpose,
    tool_dead_letters,
    tool_writers,
    with_snapshot_rules,
)
from replicator.tools.tables import (
    KeptExpired,
    TableRef,
    check_same_keys,
    destination_refs,
    source_ref,
)
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome, WriteResult
from replicator.writers.refusals import NOT_PASSED

log = structlog.get_logger(__name__)

REFUSALS_BEFORE_GIVING_UP = 3
_CLOSE_POLL_S = 0.5  # how often a wait for the conflict log looks for a stop


@dataclass(frozen=True)
class Failure:
    destination: str
    reason: str
    error: str


@dataclass
class Replay:
    """What became of one claimed letter."""

    letter: DeadLetter
    failures: list[Failure]
    note: str = ""
    lost: list[str] = field(default_factory=list)  # destinations where its conflict was lost
    # The conflict log's futures of those losses, by destination: the letter is settled
    # only once each entry is stored or given up (``Redrive._await_entries``).
    recording: list[tuple[str, Future[None]]] = field(default_factory=list)
    # The key of the change replayed, from its record (None: the record does not decode,
    # the letter's ``keys`` field is all there is), as the summary names it.
    key: Item | None = None
    # Writes of the check against the source that were dead-lettered (new letters, in
    # the target): the destination may still hold the late image.
    check_letters: int = 0
    # The destinations where it was written (all of them unless it failed somewhere: a
    # ``*`` letter may fail at some destinations only).
    applied: list[str] = field(default_factory=list)

    @property
    def replayed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        letter = self.letter
        what = _what(letter, self.key)
        note = self.note
        if self.lost:
            note = (note + " " if note else "") + (
                f"(lost its conflict at {', '.join(self.lost)}: the destination kept its item)"
            )
        if self.replayed:
            return f"  replayed      {_shown(letter.destination)}: {what}" + (
                f" {note}" if note else ""
            )
        # A ``*`` letter written at some destinations: said too, before where it failed
        # (not where it failed after the write: a lost conflict the log did not store).
        failed = {failure.destination for failure in self.failures}
        written = [label for label in self.applied if label not in failed]
        shown = (
            [
                f"  replayed      {', '.join(map(_shown, written))}: {what}"
                + (f" {note}" if note else "")
            ]
            if written
            else []
        )
        return "\n".join(
            shown
            + [
                f"  failed again  {_shown(failure.destination)}: {what}: "
                f"{redact(f'{failure.reason}: {failure.error}')}"
                for failure in self.failures
            ]
        )


@dataclass(frozen=True)
class Copy:
    """A letter of the same identity as one replayed before it in this run (a failure
    stored twice: by a run before and after a restart, or by an SQS target, which cannot
    tell), settled with that replay's outcome instead of being replayed again."""

    letter: DeadLetter
    replayed: bool  # what became of the first copy: replayed, or kept as one letter
    key: Item | None = None  # the first copy's replayed key (the same record: the same key)

    def line(self) -> str:
        first = "replayed above" if self.replayed else "that failed again above, kept once"
        what = _what(self.letter, self.key)
        return (
            f"  copy          {_shown(self.letter.destination)}: {what}: removed, "
            f"a copy "
            f"of the letter {first}"
        )


@dataclass
class RedriveReport:
    target: str
    task: str = ""
    replays: list[Replay] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)  # of letters in ``replays``
    unreadable: list[Unreadable] = field(default_factory=list)
    other_tasks: Counter[str] = field(default_factory=Counter)  # letters left, by task
    interrupted: bool = False
    refused: bool = False  # a destination refused every write (missing table, credentials)
    # Why the run stopped early: a destination that did not answer (the error); the
    # letters not replayed are kept as after an interruption.
    unavailable: str | None = None
    left: int | None = None  # letters in the target once interrupted, when it can count them
    # Where those letters are once interrupted, when the target can say (a file target:
    # the aside file of the replay and the live file); empty: in the target.
    kept_in: list[str] = field(default_factory=list)
    # The .settled files beside aside files among kept_in (the lines already done).
    settled_in: list[str] = field(default_factory=list)
    # A file target with no file at all (nor an interrupted replay's): why there is
    # nothing, and whether the path was relative (then the working directory is as likely
    # the reason as an empty target: not said to be drained, exit 1).
    missing: str | None = None
    missing_relative: bool = False
    # Files of other derived task names beside the job's (replicator/config/stranded.py).
    stranded: list[StrandedFile] = field(default_factory=list)
    conflict_log: str | None = None  # where lost conflicts are recorded; None: kind none
    recorded: int = 0  # lost conflicts stored in the conflict log
    not_recorded: int = 0  # lost conflicts it could not store (dropped, counted)

    @property
    def replayed(self) -> int:
        return sum(1 for replay in self.replays if replay.replayed)

    @property
    def failed(self) -> int:
        return sum(1 for replay in self.replays if not replay.replayed)

    @property
    def check_letters(self) -> int:
        """New letters stored by the checks against the source (see :class:`Replay`)."""
        return sum(replay.check_letters for replay in self.replays)

    @property
    def lost(self) -> int:
        """Lost conflicts: one per destination where a replayed letter lost."""
        return sum(len(replay.lost) for replay in self.replays)

    def _lost_text(self) -> str:
        if not self.lost:
            return ""
        lost = f"{self.lost} lost {'its' if self.lost == 1 else 'their'} conflict"
        if self.conflict_log is None:
            return f" ({lost}; not recorded: conflict_log.kind is none)"
        if self.not_recorded:
            kept = "its letter is" if self.not_recorded == 1 else "their letters are"
            return (
                f" ({lost}: {self.recorded} recorded in the conflict log {self.conflict_log}, "
                f"{self.not_recorded} could not be recorded: {kept} kept, see the error lines)"
            )
        return f" ({lost}, recorded in the conflict log {self.conflict_log})"

    @property
    def exit_code(self) -> int:
        """0 only if nothing is left: an unreadable letter is one not replayed; 3 when a
        destination refused every write or did not answer (its environment needs fixing
        first)."""
        if self.refused or self.unavailable:
            return 3
        if self.missing_relative:
            return 1
        failed = self.failed or self.check_letters or self.unreadable
        # A stop that came as the last letter settled left nothing: done, as without it.
        cut_short = self.interrupted and self.left != 0
        return 0 if not failed and not cut_short else 1

    @property
    def ended_early(self) -> bool:
        """Interrupted, or stopped by a destination that did not answer: letters may be
        left that were not tried."""
        return self.interrupted or self.unavailable is not None

    def _how_it_ended(self) -> str:
        if self.unavailable is not None:
            return f"stopped: {self.unavailable}"
        return "interrupted"

    def text(self) -> str:
        if self.missing is not None:
            return "\n".join(
                [
                    f"redrive: no dead letters in {self.target}: {self.missing}",
                    *stranded_lines(self.stranded, *_STRANDED),
                ]
            )
        if self.ended_early and not self.replays and not self.copies and not self.unreadable:
            return "\n".join(
                [
                    f"redrive of {self.target}: {self._how_it_ended()}: "
                    + (
                        f"no letter replayed, none left{self._cleared_note()}"
                        if self.left == 0
                        else (
                            f"{self.left} letter{'' if self.left == 1 else 's'} not replayed"
                            if self.left is not None
                            else "no letter replayed"
                        )
                        + f", kept in {self._kept_in()} (the next redrive takes them up"
                        + f"{self._settled_note()})"
                    ),
                    *self._left(),
                ]
            )
        if not self.replays and not self.copies and not self.unreadable:
            mine = f" of task {_task(self.task)}" if self.other_tasks else ""
            return "\n".join(
                [
                    f"redrive: no dead letters{mine} in {self.target}"
                    + (f" ({self._how_it_ended()})" if self.ended_early else ""),
                    *self._left(),
                    *stranded_lines(self.stranded, *_STRANDED),
                ]
            )
        total = len(self.replays) + len(self.copies) + len(self.unreadable)
        copies = len(self.copies)
        lines = [
            f"redrive of {self.target}: {total} letter{'' if total == 1 else 's'}"
            + (" handled before it stopped" if self.ended_early else "")
            + f", {self.replayed} replayed{self._lost_text()}, "
            f"{self.failed} failed again (kept in the target)"
            + (
                f", {copies} {'copy' if copies == 1 else 'copies'} of a letter replayed "
                "once (removed with it)"
                if copies
                else ""
            )
            + (f", {len(self.unreadable)} unreadable (kept as they are)" if self.unreadable else "")
            + (
                f", {self.check_letters} new "
                f"{'letter' if self.check_letters == 1 else 'letters'} from checking replays "
                "against the source (in the target: the next redrive replays them)"
                if self.check_letters
                else ""
            )
            + (f"; {self._how_it_ended()}: {self._rest()}" if self.ended_early else "")
        ]
        lines.extend(replay.line() for replay in self.replays)
        lines.extend(copy.line() for copy in self.copies)
        lines.extend(
            f"  unreadable    {item.where}: {redact(item.error)}" for item in self.unreadable
        )
        lines.extend(self._left())
        lines.extend(stranded_lines(self.stranded, *_STRANDED))
        return "\n".join(lines)

    def _kept_in(self) -> str:
        """The files that hold the letters left, or the target when it cannot say."""
        if not self.kept_in:
            return self.target
        return " and ".join(f"file {path}" for path in self.kept_in)

    def _rest(self) -> str:
        if self.left is None:
            return "the rest are still in the target (the next redrive takes them up)"
        if self.left == 0:
            # Stopped after its last letter was settled: nothing waits in any file (the
            # target's file may not even be there), only what the replay set aside.
            return f"no letter left{self._cleared_note()}"
        return (
            f"{self.left} letter{'' if self.left == 1 else 's'} now in {self._kept_in()} "
            f"(the next redrive takes them up{self._settled_note()})"
        )

    def _cleared_note(self) -> str:
        """With no letter left, the files an interrupted replay set aside hold only lines
        already done, which the next redrive removes (nothing to move with them)."""
        if not self.settled_in:
            return ""
        asides = [path.removesuffix(SETTLED) for path in self.settled_in]
        files = " and ".join(f"file {path}" for path in [*asides, *self.settled_in])
        return f" (the next redrive removes {files}, whose lines are all done)"

    def _settled_note(self) -> str:
        """An aside file still holds its lines already done: its .settled file names them."""
        if not self.settled_in:
            return ""
        files = " and ".join(f"file {path}" for path in self.settled_in)
        return (
            f"; the lines already done are named in {files}: move or copy "
            f"{'it' if len(self.settled_in) == 1 else 'each'} with its aside file"
        )

    def _left(self) -> list[str]:
        """One line for the letters of other tasks that were left as they are."""
        if not self.other_tasks:
            return []
        total = sum(self.other_tasks.values())
        tasks = ", ".join(
            f"{_task(name)}: {count}" for name, count in sorted(self.other_tasks.items())
        )
        return [
            f"left as they are: {total} letter{'' if total == 1 else 's'} of other tasks ({tasks})"
        ]


_STRANDED = (
    "dead-letter files",
    "to replay such a file, run redrive with a copy of the job file that sets task_name to "
    "its task (letters for a destination no longer in the job are kept, as "
    "unknown_destination)",
)


def _shown(text: str) -> str:
    """A letter's destination or event as a summary line shows it. A letter is data (any
    process can write to a file or a queue), so a field that would not read back as it is
    (a newline would forge a line of the summary) is JSON-quoted, as a key's value is
    (:func:`key_token`); a label or event of a letter the replicator wrote shows as it is."""
    return key_token(text)


def _task(name: str) -> str:
    """A task name as the summary shows it: as :func:`_shown`, and quoted also when it
    holds what separates the entries of ``(orders-eu: 2, payments: 1)`` (which a task
    name of a valid job file never does)."""
    return key_token(name, forbidden="(),:")


class Redrive:
    def __init__(self, resolved: ResolvedJob, *, metrics: Metrics | None = None) -> None:
        self.resolved = resolved
        self.metrics = metrics or in_memory_metrics()
        self.run_id = uuid.uuid4().hex[:12]
        self.stop = threading.Event()
        self._writers: dict[str, DestinationWriter] = {}
        self._snapshot_writers: dict[str, DestinationWriter] = {}
        # The shard's filters, without the high-water stage: a letter is one change, out
        # of the stream's order. What its letters show of the stream's binary keys is
        # learned for the run (replicator/decode.py, StreamKeys).
        self._reader = Reader(ChangeFilter.for_job(resolved.job))
        self._guard: ResurrectionGuard | None = None
        self._source: tuple[TableRef, list[str]] | None = None  # and its key names
        self._kept = KeptExpired(None)
        self._target: DeadLetterTarget | None = None
        self._conflicts: LetterConflicts | None = None
        self.refused = False
        self.unavailable: str | None = None  # the first destination that did not answer
        # Reentrant: a signal handler (interrupt) may run while the main thread holds it.
        self._lock = threading.RLock()
        self._grace = StopGrace(self._cancel_writes)  # after a first stop
        self._cancelled = False  # the writes and the target's calls are given up

    def interrupt(self) -> None:
        """First call: stop after the letter in hand, giving it ``INTERRUPT_GRACE_S`` to
        settle. Second, or once that has passed: stop retrying it (it stays as it was)."""
        with self._lock:
            if self.stop.is_set():
                self._cancel_writes()
            else:
                self._grace.start()
            self.stop.set()

    def _cancel_writes(self) -> None:
        with self._lock:
            self._cancelled = True
            for writer in [*self._writers.values(), *self._snapshot_writers.values()]:
                writer.cancelled.set()
            if self._target is not None:
                self._target.cancel()  # a letter being put back, a queue being received from

    def run(self, target: DeadLetterTarget | None = None) -> RedriveReport:
        # Before any letter is claimed: conflict settings the source's key makes
        # meaningless are the job file's problem, whatever the letters hold.
        source = source_ref(self.resolved)
        # Every destination as well, as backfill and verify check them: one that does not
        # answer, or lacks its table, is one line and exit 3 before a letter is touched
        # (any letter may be for it: a ``*`` letter goes to every destination).
        shape = check_same_keys(self.resolved, source, destination_refs(self.resolved, 1))
        self._source = (source, shape.key_names)
        self._kept = KeptExpired.of(self.resolved, source)
        if target is None:
            missing = self._missing_file()
            if missing is not None:
                # Only read: checking the target as run does would create its directory.
                missing.stranded = self._stranded()
                return missing
        # And the dead-letter target, as run checks it: a queue that does not answer, or
        # a file that cannot be appended to, is exit 3 before a letter is claimed.
        target = target or tool_dead_letters(self.resolved, run_id=self.run_id)
        # The conflict log made ready as run makes it (a table created when missing,
        # one of other keys refused, exit 3), before a letter is claimed: a letter whose
        # lost conflict cannot be recorded is kept, so a log that was never there would
        # keep every such letter for nothing.
        if not self._prepare():
            return self._stopped_before(target)
        recorder = recorder_for(self.resolved, self.metrics)
        try:
            report = self._run(target, recorder)
        finally:
            if recorder is not None:
                # Before the grace is called off: a first stop bounds this wait too.
                self._close(recorder)
            self._grace.cancel()
        report.stranded = self._stranded()
        if recorder is not None:
            report.conflict_log = recorder.target.description
            report.recorded = _total(self.metrics.conflict_log_written)
            report.not_recorded = _total(self.metrics.conflict_log_dropped)
        log.info(
            "redrive done",
            replayed=report.replayed,
            failed_again=report.failed,
            conflicts_lost=report.lost,
            conflicts_recorded=report.recorded,
            conflicts_not_recorded=report.not_recorded,
            copies_removed=len(report.copies),
            unreadable=len(report.unreadable),
            other_tasks_left=sum(report.other_tasks.values()),
        )
        return report

    def _prepare(self) -> bool:
        """The conflict log made ready (``prepare``); False when a stop came first. A log
        that does not answer takes the SDK's timeouts to say so, and a Ctrl-C meanwhile,
        before any letter is claimed, ends the command without waiting for them: the
        preparation is left to finish (or fail) by itself, as ``run`` would redo it."""
        done: Future[None] = Future()

        def preparing() -> None:
            try:
                prepare(self.resolved)
            except BaseException as error:  # noqa: BLE001 - raised again in the command's thread
                done.set_exception(error)
            else:
                done.set_result(None)

        threading.Thread(target=preparing, name="conflict-log-prepare", daemon=True).start()
        while not self.stop.is_set():
            if wait([done], timeout=_CLOSE_POLL_S).done:
                done.result()  # what prepare raised, as if called here
                return not self.stop.is_set()
        return False

    def _stopped_before(self, target: DeadLetterTarget) -> RedriveReport:
        """The report of a run stopped before its first letter: every letter kept."""
        report = RedriveReport(target.description, self.resolved.task_name)
        report.interrupted = True
        if isinstance(target, FileDeadLetters):
            holding = target.holding()
            report.left = sum(holding.values())
            report.kept_in = [str(path) for path in holding]
            report.settled_in = [str(path) for path in target.settled_markers()]
        log.info("redrive stopped before its first letter")
        return report

    def _close(self, recorder: BackgroundRecorder) -> None:
        """Store what is queued before the command says it is done; what cannot be is
        counted (and logged at error level with the whole entry) as in replication. The
        wait is up to ``conflict_log.retry_for_s``, ended at once by a stop at once
        (:meth:`interrupt`, also one made during the wait): an entry still pending then
        is one whose letter was not settled, which stays in the target, and the next
        redrive records it. So a log that does not answer does not hold up a stop."""
        deadline = time.monotonic() + self.resolved.job.conflict_log.retry_for_s
        while not self._cancelled:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or recorder.flush(min(remaining, _CLOSE_POLL_S)):
                break
        recorder.close(timeout=0)

    def _stranded(self) -> list[StrandedFile]:
        """Dead-letter files of other derived task names beside the job's."""
        dead_letter = self.resolved.job.dead_letter
        if dead_letter.kind is not DeadLetterKind.FILE:
            return []
        return stranded_files(self.resolved, dead_letter.path)

    def _missing_file(self) -> RedriveReport | None:
        """For a file target with nothing at its path (nor an interrupted replay's aside
        file), the report that says so, with nothing created; None otherwise. A relative
        ``dead_letter.path`` is taken from the working directory, and a redrive run from
        another directory than the job's finds no file there however many letters wait:
        when not even the file's directory is there (which ``run`` creates at start), that
        is said, as ``conflicts`` says it of its file, and the exit status is not 0. So it
        is for a bare file name, whose directory (the working directory) proves nothing."""
        if self.resolved.job.dead_letter.kind is not DeadLetterKind.FILE:
            return None
        configured = self.resolved.dead_letter_path()
        target = FileDeadLetters(Path.cwd() / configured)  # an absolute path stays as it is
        try:
            if _in_the_way(target.path) or target.holds_files():
                return None
        except OSError:  # a directory that may not be read: the target's check says it
            return None
        # Links into a volume not mounted (the letters may be there), or to each other.
        looped = not_a_regular_file(target.path) == LINK_LOOP
        dangling = dangling_link(target.path) or (f"it is {LINK_LOOP}" if looped else None)
        if dangling is not None:
            raise EnvironmentProblem(
                f"dead_letter.path: the dead-letter file {target.path} cannot be read: {dangling}"
            )
        report = RedriveReport(target.description, self.resolved.task_name)
        # A bare file name's directory is the working directory, which is always there.
        bare = not configured.is_absolute() and configured.parent == Path()
        if configured.is_absolute() or (not bare and target.path.parent.is_dir()):
            # ``run`` creates the file's directory at start (its preflight), so a relative
            # path whose directory is here is the job's: nothing was dead-lettered yet.
            report.missing = "no such file (yet): nothing has been dead-lettered there"
        else:
            # No directory, or only the working directory itself: this may as well be
            # another directory than the job's, where the letters wait unseen.
            report.missing_relative = True
            report.missing = (
                f"no such file; dead_letter.path {str(configured)!r} is relative to the "
                f"working directory ({Path.cwd()}): run the command where the job runs, or "
                "make the path absolute"
                + (" (where the job runs, no file means nothing was dead-lettered)" if bare else "")
            )
        log.info("redrive done: no dead-letter file", path=str(target.path))
        return report

    def _run(self, target: DeadLetterTarget, recorder: BackgroundRecorder | None) -> RedriveReport:
        if recorder is not None:
            self._conflicts = LetterConflicts(recorder, self.resolved.task_name)
        # A letter that fails again goes back to the target as the same letter with one
        # more attempt (``_settle``), so the writers' failures are not stored as new ones.
        self._writers = tool_writers(self.resolved, self.metrics, self._conflicts)
        # A backfill's or repair's copy that loses is not a change lost (module docstring).
        self._snapshot_writers = with_snapshot_rules(
            {label: replace(writer, conflict_log=None) for label, writer in self._writers.items()}
        )
        for writer in [*self._writers.values(), *self._snapshot_writers.values()]:
            writer.refusal_limit = min(writer.refusal_limit, REFUSALS_BEFORE_GIVING_UP)
        with self._lock:
            self._target = target
            if self._cancelled:
                target.cancel()  # stopped at once before the target was known
        task = self.resolved.task_name
        report = RedriveReport(target.description, task)
        # Closed on the way out, so that a target lets go at once of what it holds.
        with closing(target.claim_all()) as claims:
            try:
                self._replay_all(claims, target, report)
            except WriteCancelled:
                # Stopped at once while the target was being asked (a letter put back, a
                # queue received from): what was in hand is not settled, and stays.
                report.interrupted = True
            except DeadLetterUnavailable as error:
                # The target stopped taking letters: the one in hand stays as it was, the
                # rest untried, as when a destination stops answering.
                self.unavailable = self.unavailable or str(error)
        report.refused = self.refused
        report.unavailable = self.unavailable
        if report.ended_early and isinstance(target, FileDeadLetters):
            holding = target.holding()
            report.left = sum(holding.values())
            report.kept_in = [str(path) for path in holding]
            report.settled_in = [str(path) for path in target.settled_markers()]
        return report

    def _replay_all(
        self,
        claims: Iterator[Claimed | Unreadable],
        target: DeadLetterTarget,
        report: RedriveReport,
    ) -> None:
        task = self.resolved.task_name
        # Replays of this run by the identity of their letter: a copy met later is
        # settled with the first one's outcome (module docstring).
        replayed: dict[bytes, Replay] = {}
        if self.stop.is_set():
            # Stopped before the first letter (while the conflict log was made ready,
            # say): none is claimed after the stop, as none is after the letter in hand.
            report.interrupted = True
            return
        for claimed in claims:
            if isinstance(claimed, Unreadable):
                report.unreadable.append(claimed)  # the target has kept it as it is
            elif claimed.letter.task_name != task:
                target.release(claimed)
                report.other_tasks[claimed.letter.task_name] += 1
            elif (first := replayed.get(claimed.letter.identity)) is not None:
                # Its change was replayed once: replayed, or kept as the one letter that
                # failed again (already in the target). Either way this copy goes.
                self._settle(target, claimed, Replay(claimed.letter, []))
                report.copies.append(Copy(claimed.letter, first.replayed, first.key))
                log.info(
                    "a copy of a letter replayed in this run removed",
                    destination=claimed.letter.destination,
                    sequence_number=_sequence(claimed.letter),
                    reason=claimed.letter.reason,
                    replayed=first.replayed,
                )
            else:
                try:
                    replay = self._replay(claimed.letter)
                except WriteCancelled:
                    # Not settled: a file keeps it for the next redrive, a queue shows it
                    # again once the replay lets go of what it received.
                    report.interrupted = True
                    return
                except DestinationUnavailable as error:
                    # Its check against the source could not write: not settled either.
                    self.unavailable = self.unavailable or str(error)
                    return
                report.replays.append(replay)
                self._settle(target, claimed, replay)
                replayed[claimed.letter.identity] = replay
                if self.unavailable is not None:
                    # The rest are kept untried: each would wait as long for nothing.
                    return
            if self.stop.is_set():
                report.interrupted = True
                return

    def _settle(self, target: DeadLetterTarget, claimed: Claimed, replay: Replay) -> None:
        """Remove a replayed letter, or put a failed one back with one more attempt; a
        target that cannot take it leaves the letter as it was, and says which."""
        try:
            self._settle_in(target, claimed, replay)
        except DeadLetterUnavailable as error:
            letter = claimed.letter
            # Named by its record's key, as the summary names it (the letter's own fields
            # are no more than copies made to name it).
            named = (
                f"{_event(letter)} {describe_key(replay.key)}"
                if replay.key is not None
                else "? (key unknown)"
            )
            raise DeadLetterUnavailable(
                f"the letter of record {_sequence(letter)} ({_shown(letter.destination)}: "
                f"{named}) could not be "
                f"{'removed from' if replay.replayed else 'put back in'} the target after "
                f"its replay, so it stays there as it was: {error}"
            ) from error

    def _settle_in(self, target: DeadLetterTarget, claimed: Claimed, replay: Replay) -> None:
        letter = claimed.letter
        failures = replay.failures
        if not failures:
            target.settle(claimed, replayed=True)
            return
        if letter.destination != ALL_DESTINATIONS or (
            len(failures) == 1 and failures[0].destination == ALL_DESTINATIONS
        ):
            # A letter for one destination (by its region and table, whatever its
            # destination is called now), or a ``*`` letter that fails as a whole.
            failure = failures[0]
            again = letter.retried(failure.error, failure.reason, self.run_id)
            target.settle(replace(claimed, letter=again), replayed=False)
            return
        # A letter for every destination that now fails at some of them only: one letter
        # per failing destination, stored before the original is removed.
        for failure in failures:
            writer = self._writers[failure.destination]
            again = replace(
                letter.retried(failure.error, failure.reason, self.run_id),
                destination=failure.destination,
                region=writer.region,  # where it failed, as a replication letter says
                table=writer.table,
            )
            target.put(again)
        target.settle(claimed, replayed=True)

    def _replay(self, letter: DeadLetter) -> Replay:
        try:
            routed = self._reader.read(letter.record)
            if self._reader.stream_keys.taught_by(routed.change, letter.keys):
                routed = self._reader.read(letter.record)
        except RecordDecodeError as error:
            return Replay(letter, [Failure(letter.destination, "undecodable", str(error))])
        change = routed.change
        replay = self._replay_change(letter, routed.route, change)
        replay.key = change.keys
        self._await_entries(replay)
        return replay

    def _await_entries(self, replay: Replay) -> None:
        """Wait until the entry of each conflict the letter's change lost is stored or
        given up, before the letter is settled. One given up (the log refused it, or
        could not store it within ``conflict_log.retry_for_s``) makes the letter a
        failure at that destination: it is kept, and the next redrive, whose replay
        loses again, records it. An entry the log could not store stops the run after
        this letter (exit 3): the next letters' entries would wait as long for nothing.
        A stop at once (:meth:`interrupt`) ends the wait with WriteCancelled: the letter
        is not settled, and stays."""
        description = self._conflicts.recorder.target.description if self._conflicts else ""
        for label, recorded in replay.recording:
            while True:
                try:
                    recorded.result(timeout=0.5)
                except TimeoutError:
                    if self._cancelled:
                        raise WriteCancelled(
                            f"waiting for the conflict log {description} cancelled"
                        ) from None
                    continue
                except ConflictNotRecorded as dropped:
                    replay.failures.append(
                        Failure(
                            label,
                            "conflict_not_recorded",
                            f"its lost conflict could not be recorded in the conflict log "
                            f"{description} ({dropped}); the letter is kept, and the next "
                            "redrive records it",
                        )
                    )
                    if dropped.reason != "rejected":
                        self.unavailable = self.unavailable or (
                            f"the conflict log {description} could not store a lost "
                            f"conflict: {dropped}"
                        )
                break

    def _replay_change(self, letter: DeadLetter, route: Route, change: Change) -> Replay:
        if self._conflicts is not None:
            self._conflicts.shard_id = letter.shard_id
        synthetic = synthetic_purpose(letter.record) is not None
        writers = self._snapshot_writers if synthetic else self._writers
        if letter.destination == ALL_DESTINATIONS:
            if route is not Route.REPLICATE:
                return Replay(letter, [], note=f"({route.value}: nothing to write)")
            labels = list(writers)
        else:
            found = _destination_of(letter, self.resolved)
            if isinstance(found, str):
                return Replay(
                    letter,
                    [Failure(letter.destination, "unknown_destination", self._unknown(found))],
                )
            labels = [found[0]]
        failures: list[Failure] = []
        applied: list[str] = []
        lost: list[str] = []
        recording: list[tuple[str, Future[None]]] = []
        for label in labels:
            result = self._write(writers[label], change)
            if isinstance(result, Failure):
                failures.append(result)
                continue
            applied.append(label)
            if result.outcome is Outcome.CONFLICT_LOST and not synthetic:
                lost.append(label)
                if result.recorded is not None:
                    recording.append((label, result.recorded))
        note, check_letters = "", 0
        if applied:
            # A replayed change is late: the source may have changed, deleted or created
            # the item again since, and that was applied at the destination before this.
            note, check_letters = self._check_against_source(change, applied)
        return Replay(
            letter,
            failures,
            note=note,
            lost=lost,
            recording=recording,
            check_letters=check_letters,
            applied=applied,
        )

    def _unknown(self, why: str) -> str:
        places = ", ".join(
            d.label if d.label == destination_place(d) else f"{d.label} at {destination_place(d)}"
            for d in self.resolved.job.destinations
        )
        return (
            f"{why}, which is not a destination of the job file {self.resolved.path} "
            f"(destinations: {places}); the letter is kept, not written elsewhere"
        )

    def _write(self, writer: DestinationWriter, change: Change) -> Failure | WriteResult:
        try:
            result = writer.write(change)
        except DestinationRefused as refused:
            self.refused = True
            error = str(refused).replace(NOT_PASSED, "the letter is kept in the target")
            return Failure(writer.label, "refused", error)
        except DestinationUnavailable as unanswered:
            self.unavailable = self.unavailable or str(unanswered)
            return Failure(writer.label, "unavailable", str(unanswered))
        if result.failed:
            return Failure(writer.label, result.reason or "failed", result.error or "")
        return result

    def _check_against_source(self, change: Change, labels: list[str]) -> tuple[str, int]:
        """A replayed change is checked against the source like a backfill's copy (read
        again, strongly consistent). After a put: an item the source no longer holds is
        removed from the destinations where the put was applied, while they still hold
        exactly its image; an item the source holds with another image is written there
        as the source has it, while they still hold exactly the replayed image (or, under
        an ordered policy, one ranking below the source's). After a delete, an item the
        source holds is written there as the source has it, as a read image that expects
        no item (:meth:`ResurrectionGuard.restore`).

        A stream letter's and a synthetic one's alike: a backfill's or repair's image
        replayed late is as stale as a stream change's, and the stream change that
        followed it may have been dead-lettered too, or replayed before it (then the
        replayed image, written where the destination held what was expected, would stay
        for good). A destination never keeps the late image of an item the source has
        deleted or changed since, nor lacks one the source holds because of a late
        delete. Returns a note for the summary, and how many of its writes were
        dead-lettered (new letters: the run then ends with exit 1)."""
        guard = self._source_guard()
        if change.event is Event.REMOVE:
            result = guard.restore([(change, labels)])
        else:
            result = guard.check([(change, labels)], catch_up=True)
        notes = []
        # The key in each line, and the destinations the replay was checked at: a log
        # pipeline ties it to the item (the summary says what was done where).
        about = {"key": describe_key(change.keys), "destinations_checked": labels}
        if result.undone:
            # Under custom the resolver decided that removal, as a delete: it may have
            # left a marker.
            logged, noted = (
                ("the resolver decided its removal", "its removal as the resolver decided")
                if self._resolver_decides(labels)
                else ("its copy was removed", "removed again")
            )
            log.info(f"the source no longer holds a replayed item; {logged}", **about)
            notes.append(f"(the source has deleted it since: {noted})")
        if result.expired:
            notes.append(f"(the source has deleted it since, {self._kept.why}: kept)")
        if result.caught_up:
            log.info(
                "the source holds a replayed item changed since; its image was written", **about
            )
            notes.append("(the source has changed it since: the source's image written)")
        if result.restored:
            log.info(
                "the source holds an item a replayed delete removed; its image was written",
                **about,
            )
            notes.append("(the source holds it again: its image written)")
        for gone in (False, True):
            # Nothing written: the destination keeps an item the source does not hold
            # (a writer's clock behind, an item written there since), as verify reports.
            declined = [(label, why) for label, why, removal in result.declined if removal == gone]
            if not declined:
                continue
            kept = "; ".join(f"at {_shown(label)}: {why}" for label, why in declined)
            log.info(
                "the policy kept the destination's item over the source's "
                + ("deletion" if gone else "image"),
                key=describe_key(change.keys),
                declined=declined,
            )
            notes.append(
                (
                    "(the source has deleted it since, not removed"
                    if gone
                    else "(the source holds another image, not written"
                )
                + f": the policy kept the destination's item {kept}; run `replicator "
                "verify` to compare them)"
            )
        if result.dead_lettered:
            notes.append("(checking it against the source failed: dead-lettered, see the target)")
        return " ".join(notes), result.dead_lettered

    def _resolver_decides(self, labels: list[str]) -> bool:
        """Whether a custom resolver decides the writes at every one of ``labels``."""
        job = self.resolved.job
        policies = {
            job.conflict_for(destination).policy
            for destination in job.destinations
            if destination.label in labels
        }
        return policies == {ConflictPolicyName.CUSTOM}

    def _source_guard(self) -> ResurrectionGuard:
        if self._guard is None:
            assert self._target is not None
            assert self._source is not None
            source, key_names = self._source
            # Its writes dead-letter to the real target: nothing it does is held back. They
            # carry this run's mark, as a letter put back does: a queue shows them to this
            # run again at once, and they are for the next redrive, as in a file.
            letters = DeadLetterer(
                self._target,
                self.metrics,
                self.resolved.task_name,
                "redrive",
                redrive_run=self.run_id,
            )
            self._guard = ResurrectionGuard(
                source, key_names, self._snapshot_writers, ReadRate(0), letters, self._kept
            )
        return self._guard


def _in_the_way(path: Path) -> bool:
    """Whether no file could ever be at ``path`` (a name too long, a file where a
    directory of it should be): what the target's check at start refuses (exit 3), and
    says so, rather than a target with nothing in it yet."""
    if unusable(path) is not None:
        return True
    existing = next((parent for parent in path.parents if os.path.lexists(parent)), None)
    return existing is not None and not existing.is_dir()


class LetterConflicts:
    """The writers' conflict recorder during a redrive: a lost conflict is recorded under
    the shard of the letter being replayed (its entry id is then the one replication
    would have given it), by the task's background recorder."""

    def __init__(self, recorder: BackgroundRecorder, task_name: str) -> None:
        self.recorder = recorder
        self.task_name = task_name
        self.shard_id = "redrive"

    def lost(self, loss: Loss) -> Future[None] | None:
        return ShardConflicts(self.recorder, self.task_name, self.shard_id).lost(loss)


def _destination_of(letter: DeadLetter, resolved: ResolvedJob) -> tuple[str] | str:
    """The label of the job's destination ``letter`` is for, or why there is none. A
    letter records the region and table of the write that failed, and belongs to the
    destination there whatever it is called now, as a conflict entry does
    (``destinations_at``). A letter without them (a ``*`` letter split by an older
    version) is matched by its name."""
    destinations = resolved.job.destinations
    if letter.region is None or letter.table is None:
        if any(d.label == letter.destination for d in destinations):
            return (letter.destination,)
        return f"the letter is for the destination named {letter.destination!r}"
    place = f"{letter.region}/{letter.table}"
    there = destinations_at(destinations, place, letter.destination)
    if len(there) == 1:
        return (there[0].label,)
    recorded = "" if letter.destination == place else f" (recorded as {letter.destination!r})"
    return f"the letter is for {place}{recorded}"


def _total(counter: Any) -> int:
    """The sum of a labelled counter over its labels (this run's metrics only)."""
    return int(
        sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )


def _what(letter: DeadLetter, key: Item | None = None) -> str:
    """A letter's change as a summary line names it: by ``key``, the key of the change
    its record holds, which is what a replay writes; as unknown when its record does not
    decode (the letter's ``event`` and ``keys`` fields beside it, marked unchecked). A
    ``keys`` field that names another item (a letter edited by hand) is shown beside it,
    so that neither is hidden: the record is the change as the stream gave it, the field
    only a copy of its key made to name it."""
    sequence = f"(sequence {_sequence(letter)})"
    if key is None:
        # Only the record says what the change is: a letter's ``event`` and ``keys``
        # fields of a record that does not decode (edited by hand, the record garbled
        # after it was stored) are shown as what they are, never as the change's.
        shown = f"? (key unknown) {sequence}"
        if letter.event or letter.keys:
            shown += (
                f" (the letter's fields name {_event(letter)} {letter.key_text()}, "
                "unchecked: its record does not decode)"
            )
        return shown
    shown = f"{_event(letter)} {describe_key(key)} {sequence}"
    if _names_another_item(letter, key):
        shown += (
            f" (the letter's keys field names {letter.key_text()}; the key shown is its "
            "record's, which is what is replayed)"
        )
    return shown


def _names_another_item(letter: DeadLetter, key: Item) -> bool:
    """Whether the letter's ``keys`` field names another item than ``key``."""
    if not letter.keys:
        return False
    try:
        return key_id(item_from_wire(letter.keys)) != key_id(key)
    except (ValueError, TypeError, RecursionError):  # a letter's field, edited by hand
        return True


def _event(letter: DeadLetter) -> str:
    return _shown(letter.event) if letter.event else "?"


def _sequence(letter: DeadLetter) -> str:
    """The letter's sequence number, quoted as :func:`_task` quotes a name when it is not
    a plain token (a stream's is digits; a letter's record holds whatever was stored)."""
    return key_token(str(letter.record.get("sequenceNumber")), forbidden="()")
