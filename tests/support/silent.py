"""An HTTP endpoint that accepts every connection and never answers: a hung service, as a
client sees it (connected, then nothing)."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType


class SilentEndpoint:
    """``resets``: each connection is reset instead, once the client's first bytes are in
    (an https client's TLS ClientHello): a handshake broken off, nothing asked."""

    def __init__(self, *, resets: bool = False) -> None:
        self._resets = resets
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self.connected = threading.Event()
        """Set at the first connection accepted: a client is waiting on it from then on."""
        self._acceptor = threading.Thread(target=self._accept, name="silent-endpoint", daemon=True)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection = self._listener.accept()[0]
            except TimeoutError:
                continue
            self._held.append(connection)
            self.connected.set()
            if self._resets:
                connection.settimeout(5.0)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                linger = struct.pack("ii", 1, 0)  # close with a TCP RST, not a FIN
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                connection.close()

    def __enter__(self) -> SilentEndpoint:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._acceptor.join()
        self._listener.close()
        for connection in self._held:
            connection.close()


@dataclass
class Finished:
    """A command's end, timed from its first connection to the endpoint."""

    returncode: int
    stdout: str
    stderr: str
    took_s: float  # from its first read to its exit


def run_from_first_read(
    silent: SilentEndpoint,
    args: list[str],
    at_first_read: Callable[[subprocess.Popen[str]], None] = lambda _: None,
) -> Finished:
    """Run the CLI with ``args`` against ``silent``; ``at_first_read`` is called once it
    has connected. Timed from then, not from its start: starting Python and importing the
    CLI on a loaded machine is no part of the bound a test asserts."""
    running = subprocess.Popen(
        [sys.executable, "-m", "replicator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert silent.connected.wait(60), "the command never read"
        started = time.monotonic()
        at_first_read(running)
        out, err = running.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        if running.poll() is None:
            running.kill()
    return Finished(running.returncode, out, err, took)
