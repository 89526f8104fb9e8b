"""moto's own threaded server as users run it (``python -m moto.server``), unpatched.

Every other moto server of the project serializes table writes
(``serialize_table_writes``). This one does not, so that what moto does with writes
served at once can be tested: it numbers a stream record by the shard's length when the
write began, so records can share a number, and a record can follow higher numbers. It
runs as a process of its own (``python -m tests.support.stock_moto --ready-file F``): the
tests' own process patches moto.

Two writes must meet inside moto's few instructions between numbering a record and
appending it for that to happen, which a loaded machine may not bring about in any
number of tries. So one thing is added, and only for items whose partition key starts
with :data:`HELD`: such a write, once numbered, waits until two more records have been
appended before its own is (:func:`hold_marked_writes`). moto's numbering and its shard
are its own; the hold only makes the interleaving certain.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.moto_process import MotoProcess, announce, main

HELD = "held-"
"""Partition keys starting so are held between their numbering and their append."""

HOLD_AT_MOST = 30.0
"""Seconds a held write waits for the two records after it, then goes on unheld."""


def hold_marked_writes() -> None:
    """Wrap moto's ``StreamRecord``, made after numbering and before the append, so that
    a held write's record lands after two records numbered from the same shard length:
    the stream then serves n, n+1, n (a shared number, a lower one after a higher one)."""
    from moto.dynamodb.models import table as tables

    made = tables.StreamRecord.__init__

    def make(record: Any, table: Any, kind: str, event: str, old: Any, new: Any, seq: int) -> None:
        item = new if new is not None else old
        key = item.hash_key.to_json() if item is not None else {}
        if str(key.get("S", "")).startswith(HELD):
            shard = table.stream_shard
            deadline = time.monotonic() + HOLD_AT_MOST
            while len(shard.items) + shard.starting_sequence_number < seq + 2:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        made(record, table, kind, event, old, new, seq)

    tables.StreamRecord.__init__ = make  # type: ignore[method-assign]


def serve(ready_file: Path, host: str = "127.0.0.1") -> None:
    from moto.server import ThreadedMotoServer

    hold_marked_writes()
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    announce(ready_file, server.get_host_and_port()[1])
    stop.wait()
    server.stop()


class StockMoto(MotoProcess):
    """``with StockMoto(directory) as server: server.url`` - the server as a child process."""

    module = "tests.support.stock_moto"
    what = "the stock moto server"


if __name__ == "__main__":
    main(serve, __doc__)
