"""A moto server run as a process of its own, its port read from a file it writes."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support import ROOT


class MotoProcess:
    """``with Server(directory) as server: server.url`` - a moto server as a child process
    (``python -m <module> --ready-file F``, which writes its port to F once it listens)."""

    module = ""
    what = "the moto server"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        name = self.module.rsplit(".", 1)[-1]
        ready = self.directory / f"{name}.port"
        ready.unlink(missing_ok=True)
        log = (self.directory / f"{name}.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--ready-file", str(ready)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.what} exited; see {log.name}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.what} did not start in {timeout}s")
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def announce(ready_file: Path, port: int) -> None:
    """Tell :meth:`MotoProcess.start` the server listens on ``port`` (the file appears whole)."""
    partial = ready_file.with_suffix(".tmp")
    partial.write_text(str(port))
    partial.replace(ready_file)


def main(serve: Callable[[Path], None], description: str | None) -> None:
    """A server module's ``python -m``: ``serve`` until stopped, announcing in ``--ready-file``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ready-file", type=Path, required=True)
    serve(parser.parse_args().ready_file)
