"""A moto server that speaks cleartext HTTP/2, for the Java KCL's clients.

The AWS SDK for Java sends Kinesis requests over HTTP/2 only, which moto's own server
(Werkzeug) refuses with 505. The same moto WSGI application served by hypercorn answers
HTTP/1.1 (boto3), HTTP/2 with prior knowledge and the h2c upgrade on one port.

It runs as a process of its own (``python -m tests.support.h2moto --ready-file F``), so that the
test process's interpreter lock does not slow down the server the daemons wait on. The
listening socket is bound before hypercorn starts and handed over as a file descriptor,
so the port is known with no race for a free one.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

from tests.support.moto_process import MotoProcess, announce, main


def serve(ready_file: Path, host: str = "127.0.0.1") -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config
    from moto.server import DomainDispatcherApplication, create_backend_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.loglevel = "WARNING"
    config.errorlog = "-"
    config.keep_alive_timeout = 75  # the SDKs keep pooled connections open
    config.h2_max_concurrent_streams = 1000
    config.wsgi_max_body_size = 64 * 1024 * 1024
    from replicator.demo import fastmoto
    from replicator.demo.endpoint import serialize_table_writes

    serialize_table_writes()  # as every moto server of the project (tests/demo/test_moto_double.py)
    fastmoto.install()
    app = DomainDispatcherApplication(create_backend_app)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        announce(ready_file, port)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait, mode="wsgi")  # type: ignore[arg-type]

    asyncio.run(main())


class H2Moto(MotoProcess):
    """``with H2Moto(directory) as server: server.url`` - the server as a child process."""

    module = "tests.support.h2moto"
    what = "the HTTP/2 moto server"


if __name__ == "__main__":
    main(serve, __doc__)
