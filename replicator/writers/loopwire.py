"""PutItem/DeleteItem sent from one event loop: hundreds of writes in flight, no thread each.

Why: a blocking client needs a thread per request in flight, and at hundreds in flight
the hand-offs between those threads under the GIL cost more CPU than the requests
themselves. Here one asyncio loop (one thread per processor process) keeps up to
``max_connections`` keep-alive HTTP/1.1 connections per destination; a request is
written to an idle connection and its answer is parsed as it arrives, with a callback
per request rather than a coroutine or task (DynamoDB's answers are small, with a
``Content-Length``; a chunked or read-to-close answer is understood too).

What a request sends (body, SigV4 headers on the learnt clock) and what its answer
means (the parsed output, or the botocore exception with the same code, status and
item) come from :class:`~replicator.writers.wire.WireWriteClient`, the same code the
blocking transport calls, so :func:`replicator.aws.errors.classify` gives the same
verdicts whichever transport sent a request. Transport failures map as the blocking
transport maps urllib3's: no answer within the read timeout, or no TLS handshake
within the connect timeout, is a :class:`~botocore.exceptions.ReadTimeoutError`, a
refused or timed-out TCP connect an
:class:`~botocore.exceptions.EndpointConnectionError`, and a reset, a connection
closed mid-answer, a TLS failure or a malformed answer a
:class:`~botocore.exceptions.ConnectionClosedError`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from contextlib import suppress
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from replicator.writers.sigv4 import host_of
from replicator.writers.wire import WireWriteClient, ca_bundle

# Called on the loop thread with the parsed output of a 200, or with the exception the
# request raised (exactly one of them), and when the request was written to its
# connection (``loop.time()``, which is ``time.monotonic()``; None if it never was): a
# request that got no answer may still be carried out, and how long after its send
# decides how long the item's next change waits (DestinationWriter.late_write_window_s).
Answered = Callable[[dict[str, Any] | None, BaseException | None, float | None], None]

_MAX_HEAD = 64 * 1024
_T = TypeVar("_T")


class RequestWire(Protocol):
    """What the pipeline's event loop needs of one destination's transport: a
    :class:`LoopWire`, or (the core benchmark) one that answers without a network."""

    wire: WireWriteClient

    def send(self, operation: str, params: Mapping[str, Any], answered: Answered) -> None: ...

    def drop_waiting(self) -> None: ...

    def close(self) -> None: ...


# Builds a destination's transport on the pipeline's loop (LoopWire itself by default).
WireFactory = Callable[[WireWriteClient, asyncio.AbstractEventLoop], RequestWire]


class EventLoopThread:
    """One asyncio loop running on a daemon thread, fed from other threads."""

    def __init__(self, name: str = "write-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._stopped = False
        self._ended = False
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()  # calls of ``run`` not started yet
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with self._lock:
                self._ended = True
                pending, self._pending = self._pending, set()
            for future in pending:  # never to run there: ``run`` runs them on its caller
                future.cancel()

    def call(self, function: Callable[..., object], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread, soon (from any thread)."""
        self.loop.call_soon_threadsafe(function, *args)

    def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function(*args)`` on the loop thread and wait for its result (or raise
        its exception). Once the loop has ended, it runs on the calling thread instead:
        what it does is then no one else's to do."""
        if self.in_loop():
            return function(*args)
        future: Future[_T] = Future()

        def started() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as error:  # noqa: BLE001  # raised again by the caller
                    future.set_exception(error)

        with self._lock:
            ended = self._ended
            if not ended:
                self._pending.add(future)
        if ended:
            return function(*args)
        with suppress(RuntimeError):  # closed after it ended: the future was cancelled then
            self.loop.call_soon_threadsafe(started)
        try:
            return future.result()
        except CancelledError:
            if not future.cancelled():
                raise  # raised by the function itself, which ran
            return function(*args)
        finally:
            with self._lock:
                self._pending.discard(future)

    def in_loop(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop after what it was handed so far; from any thread but its own,
        waits up to ``timeout`` for it to end."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        if self.in_loop():
            return
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """A client TLS context verifying as the blocking transport does (same CA bundle)."""
    bundle = ca_bundle(verify)
    if bundle is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=bundle)


class LoopWire:
    """One destination's requests on the loop: a pool of keep-alive connections.

    Every method runs on the loop thread. ``send`` never blocks: with no idle connection
    it opens one (up to the client's ``max_connections``) or queues the request until
    one is free.
    """

    def __init__(self, wire: WireWriteClient, loop: asyncio.AbstractEventLoop) -> None:
        self.wire = wire
        self.loop = loop
        parts = urlsplit(wire.endpoint_url)
        secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if secure else 80)
        self.ssl = ssl_context(wire.verify) if secure else None
        self.max_connections = max(1, wire.max_connections)
        self.connect_timeout = wire.connect_timeout
        self.read_timeout = wire.read_timeout
        self._host_line = f"POST / HTTP/1.1\r\nHost: {host_of(wire.endpoint_url)}\r\n"
        self._idle: dict[_Connection, None] = {}  # LIFO: the most recently used first
        self._open: set[_Connection] = set()
        self._opening = 0
        self._waiting: deque[tuple[str, Mapping[str, Any], Answered]] = deque()
        self._connecting: set[asyncio.Task[None]] = set()
        self._closed = False
        # Read timeouts: one sweep of the connections awaiting an answer every tick (while
        # there are any) instead of a timer per request, which costs more than the sweep.
        self._busy: set[_Connection] = set()
        self._tick = min(0.1, self.read_timeout / 10)
        self._sweeper: asyncio.TimerHandle | None = None

    def send(self, operation: str, params: Mapping[str, Any], answered: Answered) -> None:
        """Send one request; ``answered`` is called once with its outcome."""
        if self._closed:
            return
        connection = self._take_idle()
        if connection is not None:
            self._write(connection, operation, params, answered)
        elif len(self._open) + self._opening < self.max_connections:
            self._connect(operation, params, answered)
        else:
            self._waiting.append((operation, params, answered))

    def drop_waiting(self) -> None:
        """Never send the requests not yet written (the lease is gone): those queued for a
        connection and those whose connection is being opened. They are never answered."""
        self._waiting.clear()
        for task in list(self._connecting):
            task.cancel()

    def close(self) -> None:
        """Drop every connection; answers still to come are never delivered."""
        self._closed = True
        self._waiting.clear()
        self._busy.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._open):
            connection.abandon()
        self._open.clear()
        self._idle.clear()

    # -- connections ----------------------------------------------------------------------

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection, _ = idle.popitem()
            if connection.usable:
                return connection
            self._open.discard(connection)
        return None

    def _connect(self, operation: str, params: Mapping[str, Any], answered: Answered) -> None:
        self._opening += 1
        task = self.loop.create_task(self._open_and_send(operation, params, answered))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open_and_send(
        self, operation: str, params: Mapping[str, Any], answered: Answered
    ) -> None:
        error: BaseException | None = None
        connection: _Connection | None = None
        # The protocol is made once the TCP connection is, before a TLS handshake: a
        # failure after that is not a connection never made. It maps as urllib3's does
        # (a stalled handshake a ReadTimeoutError, any other failure a
        # ConnectionClosedError), so that both transports say alike whether the write
        # is in doubt (:func:`replicator.aws.errors.may_have_landed`).
        made: list[_Connection] = []

        def protocol() -> _Connection:
            made.append(_Connection(self))
            return made[0]

        url = self.wire.endpoint_url
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await self.loop.create_connection(
                    protocol,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError as timeout:
            if made:
                error = ReadTimeoutError(endpoint_url=url, error=timeout)
            else:
                error = EndpointConnectionError(endpoint_url=url, error=timeout)
        except OSError as failure:  # ssl.SSLError among them
            if made or isinstance(failure, ssl.SSLError):
                error = ConnectionClosedError(endpoint_url=url, error=failure)
            else:
                error = EndpointConnectionError(endpoint_url=url, error=failure)
        finally:
            self._opening -= 1
        if self._closed:
            if connection is not None:
                connection.abandon()
            return
        if error is None and (connection is None or not connection.usable):
            closed = ConnectionResetError("the connection closed as it was opened")
            error = ConnectionClosedError(endpoint_url=self.wire.endpoint_url, error=closed)
        if connection is None or error is not None:
            try:
                answered(None, error, None)
            finally:
                self._pump()
            return
        self._open.add(connection)
        self._write(connection, operation, params, answered)

    def _write(
        self,
        connection: _Connection,
        operation: str,
        params: Mapping[str, Any],
        answered: Answered,
    ) -> None:
        try:
            body, headers = self.wire.request(operation, params)
        except Exception as error:  # noqa: BLE001  # no credentials: the writer's to judge
            self._release(connection)
            answered(None, error, None)
            return
        try:
            lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
            head = f"{self._host_line}{''.join(lines)}Content-Length: {len(body)}\r\n\r\n"
            connection.send(head.encode("latin-1") + body, operation, answered)
        except Exception as error:  # noqa: BLE001  # answered, never lost on the loop
            # Whatever went wrong, this connection's state is unknown: drop it, and let
            # the writer judge the error (one it does not know stops the shard).
            connection.abandon()
            self._forget(connection)
            answered(None, error, None)

    def _release(self, connection: _Connection) -> None:
        """A connection whose answer is complete: reuse it, or forget it if it closed."""
        if not connection.usable or self._closed:
            self._forget(connection)
            return
        if self._waiting:
            operation, params, answered = self._waiting.popleft()
            self._write(connection, operation, params, answered)
        else:
            self._idle[connection] = None

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._pump()

    def _awaiting(self, connection: _Connection) -> None:
        self._busy.add(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        """Fail the requests whose answer is overdue (within a tick of the read timeout)."""
        now = self.loop.time()
        try:
            for connection in [c for c in self._busy if c.deadline <= now]:
                connection.timed_out()
        finally:  # re-armed whatever a callback raised: timeouts never stop
            self._sweeper = self.loop.call_later(self._tick, self._sweep) if self._busy else None

    def _pump(self) -> None:
        """Open connections for queued requests while there is room."""
        while (
            self._waiting
            and not self._closed
            and len(self._open) + self._opening < self.max_connections
        ):
            self._connect(*self._waiting.popleft())


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: LoopWire) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answered: Answered | None = None
        self.operation = ""
        self.deadline = 0.0  # when the answer is overdue (loop time)
        self.sent_at: float | None = None  # when the request was written (loop time)
        self.head: _Head | None = None
        self.lost = False

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, payload: bytes, operation: str, answered: Answered) -> None:
        assert self.transport is not None
        self.answered = answered
        self.operation = operation
        pool = self.pool
        self.sent_at = now = pool.loop.time()
        self.deadline = now + pool.read_timeout
        pool._awaiting(self)
        self.transport.write(payload)

    def abandon(self) -> None:
        self.answered = None
        self._done_waiting()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answered is None:  # nothing asked: a server that talks out of turn
            self._close()
            return
        buffer = self.buffer
        buffer += data
        try:
            if self.head is None:
                self.head = _parse_head(buffer)
                if self.head is None:
                    return self._extend_deadline()
            body = self.head.body(buffer)
        except ValueError as error:
            self._fail(ConnectionClosedError(endpoint_url=self.pool.wire.endpoint_url, error=error))
            return
        if body is None:
            return self._extend_deadline()
        self._finish(self.head, body)

    def eof_received(self) -> bool:
        head = self.head
        if self.answered is not None and head is not None and head.until_close:
            self._finish(head, bytes(self.buffer[head.end :]))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._done_waiting()
        if self.answered is not None:
            closed = exc or ConnectionResetError("the connection closed before the answer")
            self._answer(None, ConnectionClosedError(endpoint_url=self._url, error=closed))
        self.pool._forget(self)

    # -- internals ------------------------------------------------------------------------

    @property
    def _url(self) -> str:
        return self.pool.wire.endpoint_url

    def _finish(self, head: _Head, body: bytes) -> None:
        self._done_waiting()
        answered = self.answered
        operation = self.operation
        sent_at = self.sent_at
        self.answered = None
        self.head = None
        del self.buffer[:]
        try:
            if answered is None:
                return
            try:
                result = self.pool.wire.answer(operation, head.status, body, head.crc32, head.date)
            except Exception as error:  # noqa: BLE001  # the botocore error, for the writer
                answered(None, error, sent_at)
                return
            answered(result, None, sent_at)
        finally:  # this answer first, then the connection takes the next request
            if head.keep_alive and not head.until_close:
                self.pool._release(self)
            else:
                self._close()

    def timed_out(self) -> None:
        self._fail(
            ReadTimeoutError(
                endpoint_url=self._url,
                error=TimeoutError(f"no answer within {self.pool.read_timeout} s"),
            )
        )

    def _fail(self, error: BaseException) -> None:
        self._done_waiting()
        self._answer(None, error)
        self._close()

    def _answer(self, result: dict[str, Any] | None, error: BaseException | None) -> None:
        answered, self.answered = self.answered, None
        if answered is not None:
            answered(result, error, self.sent_at)

    def _close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def _extend_deadline(self) -> None:
        """More of the answer arrived: the read timeout counts from now (as a socket's)."""
        self.deadline = self.pool.loop.time() + self.pool.read_timeout

    def _done_waiting(self) -> None:
        self.pool._busy.discard(self)


class _Head:
    """An answer's status line and the headers the client needs."""

    __slots__ = ("chunked", "crc32", "date", "end", "keep_alive", "length", "status")

    def __init__(self, end: int, status: int) -> None:
        self.end = end  # where the body starts
        self.status = status
        self.length = -1
        self.chunked = False
        self.keep_alive = True
        self.crc32: str | None = None
        self.date: str | None = None

    @property
    def until_close(self) -> bool:
        return self.length < 0 and not self.chunked

    def body(self, buffer: bytearray) -> bytes | None:
        """The whole body once it is in ``buffer`` (None until then)."""
        if self.chunked:
            return _dechunk(buffer, self.end)
        if self.length >= 0:
            if len(buffer) - self.end < self.length:
                return None
            if len(buffer) - self.end > self.length:
                raise ValueError("more data than the answer's Content-Length")
            return bytes(buffer[self.end :])
        return None  # until the connection closes


def _parse_head(buffer: bytearray) -> _Head | None:
    """The head of the answer at the start of ``buffer`` (interim 1xx answers skipped),
    None while incomplete; ValueError when it is not HTTP/1.x."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ValueError("an answer head longer than 64 KiB")
            return None
        lines = bytes(buffer[:end]).split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
        status = int(status_line[9:12])
        if 100 <= status < 200:
            del buffer[: end + 4]
            continue
        head = _Head(end + 4, status)
        head.keep_alive = status_line[7:8] == b"1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                head.length = _digits(value.strip(), 10)
            elif name == b"transfer-encoding":
                head.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                if b"close" in tokens:
                    head.keep_alive = False
                elif b"keep-alive" in tokens:
                    head.keep_alive = True
            elif name == b"x-amz-crc32":
                head.crc32 = value.strip().decode("latin-1")
            elif name == b"date":
                head.date = value.strip().decode("latin-1")
        if status in (204, 304):
            head.length = 0
        return head


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """A chunked body starting at ``start``, once it is complete (trailers ignored)."""
    parts: list[bytes] = []
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = _digits(bytes(buffer[position:line_end]).split(b";", 1)[0].strip(), 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                return None
            return b"".join(parts)
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position : position + size]))
        position += size + 2


_DIGITS = {10: frozenset(b"0123456789"), 16: frozenset(b"0123456789abcdefABCDEF")}


def _digits(text: bytes, base: int) -> int:
    """A length or chunk size: digits only (``int`` would take a sign, ``_`` and spaces,
    and a negative chunk size would read the same chunk for ever); ValueError else."""
    if not text or not set(text) <= _DIGITS[base] or len(text) > 16:
        raise ValueError(f"not a length: {text[:20]!r}")
    return int(text, base)
