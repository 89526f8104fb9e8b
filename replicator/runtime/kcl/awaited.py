"""Which processor has held a ``processRecords``, or gone silent, for ``/healthz`` under the KCL.

Under ``runtime: kcl`` the Java daemon, not this package, talks to the processors, and it
waits on a processor without limit. A processor that stops answering (deadlocked, stopped
by SIGSTOP, a frozen host) keeps its gauges, lag included, at their last values, so lag
alerts stay quiet while its shard replicates nothing. Each processor therefore keeps a
note, a file of its own in the directory the launcher names in :data:`ENV`: written when
it starts a shard, again when a ``processRecords`` arrives (with its time) and when it is
answered, and again every second by the processor's report thread. The launcher reads
the notes whenever health is judged and reports a processor that has held one batch for
``metrics.stall_after_s`` (in the words the local runtime uses), or whose note was not
written for as long (the whole process stopped: a processor stopped between batches
never reads the next one), or that was passed no batch for as long. The KCL passes a
batch, empty or not, after every read of the shard that succeeds
(``callProcessRecordsEvenForEmptyRecordList``); a processor passed none is one whose
shard the daemon cannot read (GetRecords not allowed, the stream unreachable: the KCL
retries such reads for ever, logging warnings) or a daemon that is stuck, and
replicates nothing while its gauges stay at their last values.

A processor that finishes its shard (its stop told and answered) removes its note, so a
note whose process is gone is one that died without finishing: killed (the out-of-memory
killer), crashed, or exited on an error. The KCL starts no other processor for the shard:
it notices at its next ``processRecords`` and the daemon exits 1 after its grace time
(``kcl.shutdown_flush_ms`` + ``kcl.failover_time_ms`` + 10 s: a minute and a half by
default), the shard replicating nothing meanwhile. The launcher names the shard at once,
until a processor of the same shard runs here again. A process is told from a later one
with its pid by its start time (``/proc/PID/stat``).

A checkpoint the daemon refuses (the KCL cannot write the lease table: a policy without
``dynamodb:UpdateItem`` on it) is deferred to the next batch; the KCL then loses the
lease, starts another processor for the shard from the last checkpoint, and the loop
goes on, writing the same changes again, while every processor looks healthy. So the
refusals are noted per shard (``checkpoint-<shard>.json``), outliving the processors
that made them, since when and the last answer, and a success removes the note; the
launcher names a shard whose checkpoints have been refused for ``stall_after_s`` while the
last refusal is recent (two minutes), between its processors too (until its lease could
have expired).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from replicator.shards.holder import start_time

ENV = "REPLICATOR_AWAITED_DIR"

log = structlog.get_logger("replicator")


# Refusals of a shard's checkpoints further apart than this begin a new spell (a shard
# whose checkpoints were refused an hour ago and are again now has not been refused for
# an hour); the launcher names a spell only while its last refusal is this recent.
REFUSALS_APART_S = 120.0
# The report thread's beat (replicator.processor: every second), and how many beats a
# processor may miss before it counts as not heard from, whatever metrics.stall_after_s
# says (a limit below a few beats would name idle, healthy processors between two).
BEAT_S = 1.0
MISSED_BEATS = 5


@dataclass
class AnswerNotes:
    """The processor's side: its one note. Times are ``time.monotonic()``, which is one
    clock for every process of the host and does not step with the wall clock."""

    directory: Path
    pid: int
    shard_id: str = ""
    _since: float | None = field(default=None, init=False)
    _batch_at: float | None = field(default=None, init=False)  # the last batch passed or answered
    _last_words: str = field(default="", init=False)  # why it is exiting on an error
    _read: bool = field(default=False, init=False)  # passed a batch once
    _start_ticks: int | None = field(default=None, init=False)
    _failed: bool = field(default=False, init=False)
    _ended: bool = field(default=False, init=False)
    # The protocol's thread and the report thread both write the note.
    _writing: threading.Lock = field(default_factory=threading.Lock, init=False, compare=False)

    def __post_init__(self) -> None:
        self._start_ticks = start_time(self.pid)

    @classmethod
    def from_environment(cls) -> AnswerNotes | None:
        """The notes the launcher asked for, or None (the local runtime watches its
        processors itself and names no directory)."""
        directory = os.environ.get(ENV)
        return cls(Path(directory), os.getpid()) if directory else None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.pid}.json"

    def started(self, shard_id: str) -> None:
        self.shard_id = shard_id
        self._batch_at = time.monotonic()
        self._write()

    def received(self) -> None:
        self._since = self._batch_at = time.monotonic()
        self._read = True
        self._write()

    def last_words(self, reason: str) -> None:
        """The processor exits on an error: its note keeps why, for the launcher's line
        naming its death (without it: "killed, or it exited on an error")."""
        self._last_words = reason[:1000]
        self._write()

    def no_more_batches(self) -> None:
        """Told to stop or that the shard ended: no batch follows, none is awaited."""
        self._batch_at = None
        self._write()

    def answered(self) -> None:
        # From the answer: the next batch is read only then (a batch held for minutes
        # is another reason's). None once no batch is awaited any more.
        self._since = None
        if self._batch_at is not None:
            self._batch_at = time.monotonic()
        self._write()

    def checkpoint_result(self, refused_by: str | None) -> None:
        """A checkpoint taken (``None``: the shard's note of refusals is removed) or
        deferred on the daemon's answer ``refused_by`` (noted, with since when)."""
        path = self.directory / f"checkpoint-{self.shard_id}.json"
        with self._writing:
            try:
                if refused_by is None:
                    path.unlink(missing_ok=True)
                    return
                now = time.monotonic()
                since = now
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    earlier = json.loads(path.read_text())
                    if now - float(earlier["last"]) <= REFUSALS_APART_S:
                        since = float(earlier["since"])
                partial = self.directory / f".checkpoint-{self.pid}.json"
                partial.write_text(json.dumps({"since": since, "last": now, "by": refused_by}))
                partial.replace(path)
            except OSError as error:
                # A note of refusals left as it was could name a shard taken since: gone.
                self._could_not(error, path)

    def heard(self) -> None:
        """The process runs (the report thread's beat): the note again, as it stands."""
        self._write()

    def ended(self) -> None:
        """The processor finished its shard (a stop told and answered, the protocol
        closed): no note is left, and no later beat writes one, so that its exit is not
        taken for a death."""
        with self._writing:
            self._ended = True
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        with self._writing:
            if self._ended:
                return
            note = {
                "shard": self.shard_id,
                "since": self._since,
                "batch_at": self._batch_at,
                "read": self._read,
                **({"last_words": self._last_words} if self._last_words else {}),
                "heard": time.monotonic(),
                "started": self._start_ticks,
            }
            partial = self.directory / f".{self.pid}.json"
            try:
                partial.write_text(json.dumps(note))
                partial.replace(self.path)  # whole, for a reader at any moment
            except OSError as error:
                self._could_not(error)

    def _could_not(self, error: OSError, path: Path | None = None) -> None:
        """Replication goes on without the note (it only feeds /healthz). A note left as
        it was could say a batch answered since is still held, so it is removed (``path``,
        by default this processor's): health then sees nothing of it until a later note is
        written. Said once."""
        with contextlib.suppress(OSError):
            (path or self.path).unlink(missing_ok=True)
        if not self._failed:
            self._failed = True
            log.warning(
                "the processor cannot keep its note for /healthz, which does not name it "
                "if it stops answering while no note can be written",
                directory=str(self.directory),
                error=str(error),
            )


@dataclass(frozen=True)
class Death:
    """A processor gone without finishing its shard, with no processor of the shard here
    since."""

    pid: int
    shard: str
    heard: float  # its last beat, time.monotonic()
    last_words: str = ""  # the reason it gave, exiting on an error

    def said(self, now: float) -> str:
        if self.last_words:
            return (
                f"the processor (pid {self.pid}) of shard {self.shard} exited on an error "
                f"without finishing its shard: {self.last_words} (last heard from "
                f"{now - self.heard:.0f}s ago)"
            )
        return (
            f"the processor (pid {self.pid}) of shard {self.shard} died without finishing its "
            f"shard (killed, or it exited on an error; last heard from {now - self.heard:.0f}s "
            "ago)"
        )


def unanswered(
    directory: Path,
    stall_after_s: float,
    now: float | None = None,
    on_death: Callable[[Death], object] | None = None,
    reads_every_s: float = 0.0,
    failover_s: float = 60.0,
    held: Callable[[set[str]], Mapping[str, float]] | None = None,
) -> list[str]:
    """The launcher's side: a reason for each live processor that has held a
    ``processRecords`` for ``stall_after_s`` or longer, or not written its note for as
    long (at least :data:`MISSED_BEATS` beats), or been passed no batch for as long (and
    at least three of the daemon's reads, one every ``reads_every_s`` while idle), and for
    each shard whose processor died (with no processor of the shard here since;
    ``on_death`` is told of each, for the run's final line), and for each shard ``held``
    gives (told the shards whose processor here has been passed a batch:
    :meth:`HeldWatch.since`) held that long without one. ``now``: ``time.monotonic()``."""
    now = time.monotonic() if now is None else now
    limit = max(stall_after_s, MISSED_BEATS * BEAT_S)
    unread_limit = max(limit, 3 * reads_every_s)
    reasons = []
    running: set[str] = set()
    reading: set[str] = set()  # of those, the ones the KCL has passed a batch
    dead: list[tuple[Path, Death]] = []
    try:
        notes = sorted(directory.glob("[0-9]*.json"))
    except OSError:
        return []
    for path in notes:
        try:
            pid = int(path.stem)
            note = json.loads(path.read_text())
            since = None if note["since"] is None else float(note["since"])
            heard = float(note["heard"])
            shard = str(note["shard"])
            batch_at = note.get("batch_at")
            unread_s = None if batch_at is None else now - float(batch_at)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a note of ours
        started = start_time(pid)
        if started is None or started != note.get("started"):
            # The processor is gone (its pid may be in use again by another process).
            words = note.get("last_words")
            dead.append((path, Death(pid, shard, heard, words if isinstance(words, str) else "")))
            continue
        running.add(shard)
        if note.get("read"):
            reading.add(shard)
        silent_s = now - heard
        held_s = None if since is None else now - since
        if held_s is not None and held_s >= stall_after_s:
            reasons.append(
                f"the processor (pid {pid}) of shard {shard} has not answered processRecords "
                f"for {held_s:.0f}s: it waits for room in its buffer (a destination takes no "
                "writes) or is stuck"
            )
        elif silent_s >= limit:
            reasons.append(
                f"the processor (pid {pid}) of shard {shard} has not been heard from for "
                f"{silent_s:.0f}s: the process is stopped (SIGSTOP) or cannot run"
            )
        elif unread_s is not None and unread_s >= unread_limit:
            reasons.append(
                f"the KCL has passed no batch to the processor (pid {pid}) of shard {shard} "
                f"for {unread_s:.0f}s, not even an empty one (it passes one after every read "
                "of the shard): the daemon's reads of the stream fail (its warnings say why: "
                "GetRecords or, for a Kinesis stream, ListShards not allowed, the stream "
                "unreachable) or it is stuck"
            )
    reasons.extend(_refused_checkpoints(directory, running, stall_after_s, now, failover_s))
    dead_shards = {death.shard for _, death in dead}
    # A processor the KCL starts and shuts down again before any read (leases lost over
    # and over) does not restart the count: only one that has read the shard does.
    for shard, since in sorted((held(reading) if held is not None else {}).items()):
        if shard in running or shard in dead_shards or now - since < limit:
            continue
        reasons.append(
            f"this worker has held the lease of shard {shard} for {now - since:.0f}s without "
            "a processor of it: the KCL cannot start reading the shard (GetShardIterator "
            "not allowed, the stream unreachable: the daemon's kcl warnings say why)"
        )
    for path, death in dead:
        if not death.shard or death.shard in running:
            # Died before it started a shard, or the shard has a processor again.
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        else:
            if on_death is not None:
                on_death(death)
            reasons.append(
                f"{death.said(now)}: the daemon starts no other, and exits 1 after its grace time"
            )
    return reasons


def _refused_checkpoints(
    directory: Path, running: set[str], stall_after_s: float, now: float, failover_s: float
) -> list[str]:
    """A reason for each shard whose checkpoints have been refused for ``stall_after_s``,
    the last refusal within :data:`REFUSALS_APART_S` while a processor of it runs here,
    and within ``failover_s`` + 30 s (the lease's expiry, after which the KCL starts the
    next processor) while none does: named only while one ran, the shard was healthy
    two thirds of the time, and a probe that wants three failures in a row never saw it
    unhealthy; named for as long as a processor could still come, a shard whose lease
    went to another host kept this one unhealthy for two minutes."""
    reasons = []
    try:
        notes = sorted(directory.glob("checkpoint-*.json"))
    except OSError:
        return []
    for path in notes:
        shard = path.stem.removeprefix("checkpoint-")
        try:
            note = json.loads(path.read_text())
            since, last, by = float(note["since"]), float(note["last"]), str(note["by"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        recent_s = REFUSALS_APART_S if shard in running else min(REFUSALS_APART_S, failover_s + 30)
        if now - last > recent_s or last - since < stall_after_s:
            continue
        why = (
            "the lease table is throttled (raise its capacity, or make it PAY_PER_REQUEST)"
            if by == "ThrottlingException"
            else "the KCL cannot write its lease table (dynamodb:UpdateItem on it not "
            "allowed, the table unreachable)"
        )
        reasons.append(
            f"the daemon has refused the checkpoints of shard {shard} for {last - since:.0f}s "
            f"(last: {by}): {why}; each lease it loses meanwhile has the shard read again "
            "from its last checkpoint"
        )
    return reasons
