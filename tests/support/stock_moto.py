"""moto's own threaded server as users run it (``python -m moto.server``), unpatched.

Every other moto server of the project serializes table writes
(``serialize_table_writes``). This one does not, so that what moto does with writes
served at once can be tested: it numbers a stream record by the shard's length when the
write began, so records can share a number, and a record can follow higher numbers. It
runs as a process of its own (``python -m tests.support.stock_moto --ready-file F``): the
tests' own process patches moto.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tests.support.moto_process import MotoProcess, announce, main


def serve(ready_file: Path, host: str = "127.0.0.1") -> None:
    from moto.server import ThreadedMotoServer

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
