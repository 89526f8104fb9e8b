"""Which process holds a lease of the local runtime, so a restart can tell its own
crashed run from a live one under the same worker id.

A worker id names a worker, not a process: every run on one host shares the default (the
host name), and every host a ``kcl.worker_id`` pinned in a shared job file. A lease owned
by our worker id may be left by a run of ours that crashed (take it at once: restarts
must stay instant) or held by a live run (taking it would kill that run with exit 5).
So each lease write of the local runtime also stores ``replicatorHolder`` (the KCL
leaves it alone): the host (its name, boot id and PID namespace: a pid means something
only within the last two), the pid and that process's start time (a recycled pid is not
the holder), and the counter the write set. A later write by the KCL or by an older
version moves the counter past it, so the attribute then tells nothing.
"""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass
from typing import Any

HOLDER = "replicatorHolder"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


class Standing(enum.Enum):
    """How a lease owned by our worker id stands, as its holder attribute tells."""

    THIS_PROCESS = "this process"
    GONE = "a process of this host that is gone"
    RUNNING = "a live process of this host"
    ELSEWHERE = "another host, or a writer that names none"


@dataclass(frozen=True)
class Holder:
    host: str
    boot_id: str | None
    pid_namespace: str | None
    pid: int
    start_time: int | None  # /proc/<pid>/stat's starttime, in clock ticks after boot

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        try:
            namespace: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            namespace = None
        return cls(socket.gethostname(), _boot_id(), namespace, pid, start_time(pid))

    def attribute(self, counter: int) -> dict[str, Any]:
        """The attribute value a write setting the lease's counter to ``counter`` stores."""
        fields: dict[str, Any] = {
            "host": {"S": self.host},
            "pid": {"N": str(self.pid)},
            "counter": {"N": str(counter)},
        }
        if self.boot_id is not None:
            fields["bootId"] = {"S": self.boot_id}
        if self.pid_namespace is not None:
            fields["pidNamespace"] = {"S": self.pid_namespace}
        if self.start_time is not None:
            fields["startTime"] = {"N": str(self.start_time)}
        return {"M": fields}

    @classmethod
    def from_item(cls, item: dict[str, Any], counter: int) -> Holder | None:
        """The holder the lease item names, if the write that set its ``counter`` named
        one; None for no attribute, one left by an earlier write, or one unreadable."""
        fields = item.get(HOLDER, {}).get("M")
        if not isinstance(fields, dict):
            return None

        def text(name: str, kind: str = "S") -> str | None:
            value = fields.get(name)
            found = value.get(kind) if isinstance(value, dict) else None
            return found if isinstance(found, str) else None

        host, pid, written, start = text("host"), text("pid", "N"), text("counter", "N"), None
        if host is None or pid is None or not pid.isdigit() or written != str(counter):
            return None
        started = text("startTime", "N")
        if started is not None and started.isdigit():
            start = int(started)
        return cls(host, text("bootId"), text("pidNamespace"), int(pid), start)

    def standing(self, me: Holder) -> Standing:
        """Whether this holder is ``me`` (this process), a process of this host (alive or
        gone), or can be told from nothing on this host."""
        if self == me:
            return Standing.THIS_PROCESS
        place = (self.host, self.boot_id, self.pid_namespace)
        here = (me.host, me.boot_id, me.pid_namespace)
        if None in place or self.start_time is None or place != here:
            return Standing.ELSEWHERE
        if start_time(self.pid) == self.start_time:
            return Standing.RUNNING
        return Standing.GONE

    def __str__(self) -> str:
        return f"process {self.pid} on host {self.host}"


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (field 22 of /proc/<pid>/stat); None when there is
    no such process, it has exited (a zombie not yet reaped), or /proc cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X") or not fields[19].isdigit():
        return None
    return int(fields[19])


def _boot_id() -> str | None:
    try:
        with open(_BOOT_ID, encoding="utf-8") as boot:
            return boot.read().strip() or None
    except OSError:
        return None
