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

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.support import ROOT


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
    from replicator.demo.endpoint import serialize_table_writes

    serialize_table_writes()  # as every moto server of the project (tests/demo/test_moto_double.py)
    app = DomainDispatcherApplication(create_backend_app)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        partial = ready_file.with_suffix(".tmp")
        partial.write_text(str(port))
        partial.replace(ready_file)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait, mode="wsgi")  # type: ignore[arg-type]

    asyncio.run(main())


class H2Moto:
    """``with H2Moto(directory) as server: server.url`` - the server as a child process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> H2Moto:
        ready = self.directory / "h2moto.port"
        ready.unlink(missing_ok=True)
        log = (self.directory / "h2moto.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.h2moto", "--ready-file", str(ready)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"the HTTP/2 moto server exited; see {log.name}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP/2 moto server did not start in {timeout}s")
            time.sleep(0.05)
        port = int(ready.read_text())
        self.url = f"http://127.0.0.1:{port}"
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> H2Moto:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ready-file", type=Path, required=True)
    serve(parser.parse_args().ready_file)
