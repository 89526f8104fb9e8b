"""Which processor has held a ``processRecords``, or gone silent, for ``/healthz`` under the KCL.

Under ``runtime: kcl`` the Java daemon, not this package, talks to the processors, and it
waits on a processor without limit. A processor that stops answering (deadlocked, stopped
by SIGSTOP, a frozen host) keeps its gauges, lag included, at their last values, so lag
alerts stay quiet while its shard replicates nothing. Each processor therefore keeps a
note, a file of its own in the directory the launcher names in :data:`ENV`: written when
it starts a shard, again when a ``processRecords`` arrives (with its time) and when it is
answered, and touched every second by the processor's report thread. The launcher reads
the notes whenever health is judged and reports a processor that has held one batch for
``metrics.stall_after_s`` (in the words the local runtime uses), or whose note nobody
touched for as long (the whole process stopped: a processor stopped between batches
never reads the next one).

A note whose process is gone is dropped: a processor that died is the daemon's to start
again, and its shard may be taken by another host meanwhile. A process is told from a
later one with its pid by its start time (``/proc/PID/stat``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

ENV = "REPLICATOR_AWAITED_DIR"

log = structlog.get_logger("replicator")


def _started(pid: int) -> str | None:
    """The live process's start time in clock ticks since boot; None for a process that
    has ended (a zombie included: its daemon may not have reaped it yet), or where /proc
    says nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


@dataclass
class AnswerNotes:
    """The processor's side: its one note."""

    directory: Path
    pid: int
    shard_id: str = ""
    _failed: bool = False

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
        self._write(None)

    def received(self, at: float) -> None:
        self._write(at)

    def answered(self) -> None:
        self._write(None)

    def heard(self) -> None:
        """The process runs (the report thread's beat, every second)."""
        try:
            os.utime(self.path)
        except OSError as error:
            self._could_not(error)

    def _write(self, since: float | None) -> None:
        note = {"shard": self.shard_id, "since": since, "started": _started(self.pid)}
        partial = self.directory / f".{self.pid}.json"
        try:
            partial.write_text(json.dumps(note))
            partial.replace(self.path)  # whole, for a reader at any moment
        except OSError as error:
            self._could_not(error)

    def _could_not(self, error: OSError) -> None:
        """Replication goes on without the note (it only feeds /healthz), said once."""
        if not self._failed:
            self._failed = True
            log.warning(
                "the processor cannot keep its note for /healthz, which will not see it "
                "if it stops answering",
                directory=str(self.directory),
                error=str(error),
            )


def unanswered(directory: Path, stall_after_s: float, now: float | None = None) -> list[str]:
    """The launcher's side: a reason for each live processor that has held a
    ``processRecords``, or not touched its note, for ``stall_after_s`` or longer. Notes
    of processes that are gone are removed."""
    now = time.time() if now is None else now
    reasons = []
    try:
        notes = sorted(directory.glob("[0-9]*.json"))
    except OSError:
        return []
    for path in notes:
        try:
            pid = int(path.stem)
            heard = path.stat().st_mtime
            note = json.loads(path.read_text())
            since = None if note["since"] is None else float(note["since"])
            shard = str(note["shard"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a note of ours
        started = _started(pid)
        if started is None or started != note.get("started"):
            path.unlink(missing_ok=True)  # the processor is gone (its pid may be reused)
            continue
        silent_s = now - heard
        held_s = None if since is None else now - since
        if held_s is not None and held_s >= stall_after_s:
            reasons.append(
                f"the processor (pid {pid}) of shard {shard} has not answered processRecords "
                f"for {held_s:.0f}s: it waits for room in its buffer (a destination takes no "
                "writes) or is stuck"
            )
        elif silent_s >= stall_after_s:
            reasons.append(
                f"the processor (pid {pid}) of shard {shard} has not been heard from for "
                f"{silent_s:.0f}s: the process is stopped (SIGSTOP) or cannot run"
            )
    return reasons
