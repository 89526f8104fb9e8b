"""Who holds a lease, as the local runtime's writes record it: a process of this host is
told alive or gone by its pid and start time, so a recycled pid or an exited process
that is not yet reaped is not taken for the holder; a holder the attribute does not
name for the lease's counter (a write by the KCL or an older version since) is unknown."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

from replicator.shards.holder import Holder, Standing, start_time
from replicator.shards.leases import Lease
from tests.support.e2e import wait_until


def _process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)


def test_a_live_process_of_this_host_is_running_and_one_that_exited_is_gone() -> None:
    me = Holder.this_process()
    assert me.start_time is not None and me.boot_id and me.pid_namespace
    assert me.standing(me) is Standing.THIS_PROCESS
    other = _process()
    holder = dataclasses.replace(me, pid=other.pid, start_time=start_time(other.pid))
    assert holder.standing(me) is Standing.RUNNING
    assert other.stdin is not None
    other.stdin.close()
    # Exited but not yet reaped (a zombie): gone, as once reaped.
    wait_until(lambda: start_time(other.pid) is None, 10, "the process to exit", 0.01)
    assert holder.standing(me) is Standing.GONE
    other.wait()
    assert holder.standing(me) is Standing.GONE


def test_a_recycled_pid_is_not_the_holder() -> None:
    me = Holder.this_process()
    other = _process()
    try:
        started = start_time(other.pid)
        assert started is not None
        recycled = dataclasses.replace(me, pid=other.pid, start_time=started + 1)
        assert recycled.standing(me) is Standing.GONE
    finally:
        other.kill()
        other.wait()


def test_another_host_boot_or_pid_namespace_or_an_unknown_start_is_elsewhere() -> None:
    me = Holder.this_process()
    for change in (
        {"host": "other-host"},
        {"boot_id": "another-boot"},
        {"pid_namespace": "pid:[1]"},
        {"boot_id": None},
        {"start_time": None, "pid": me.pid + 1},
    ):
        assert dataclasses.replace(me, **change).standing(me) is Standing.ELSEWHERE, change


def _item(holder: dict[str, Any] | None, counter: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "leaseKey": {"S": "shardId-1"},
        "leaseOwner": {"S": "vm"},
        "leaseCounter": {"N": str(counter)},
    }
    if holder is not None:
        item["replicatorHolder"] = holder
    return item


def test_the_holder_is_read_only_for_the_counter_its_write_set() -> None:
    me = Holder.this_process()
    written = me.attribute(4)
    assert Lease.from_item(_item(written, 4)).holder == me
    # The KCL (or an older version) renewed since, leaving the attribute alone.
    assert Lease.from_item(_item(written, 5)).holder is None
    assert Lease.from_item(_item(None, 4)).holder is None
    for bad in ({"S": "vm"}, {"M": {"host": {"S": "vm"}}}, {"M": {"pid": {"N": "x"}}}):
        assert Lease.from_item(_item(bad, 4)).holder is None, bad
