"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, in front of one endpoint (the moto server).

One proxy stands for one destination: a job's ``endpoint_url`` for that destination
points here, so faults hit that destination alone while the source, its stream and the
lease table are read straight from the upstream server. The fault is switched at run
time from the test (:meth:`FaultProxy.set`) and applies to the next request:

* ``PASS``: forward as is.
* ``THROTTLE``: answer a fraction of requests with HTTP 400 and DynamoDB's JSON error body
  (``ProvisionedThroughputExceededException`` or ``ThrottlingException``), unforwarded.
* ``SERVER_ERROR``: answer a fraction with HTTP 500 ``InternalServerError``; with
  ``after_forward`` the request reaches the server first, so the write happened but the
  client cannot know it (the ambiguous outcome retries must survive).
* ``RESET``: reset the connection (RST) on a fraction of requests, before or after forwarding.
* ``BLACK_HOLE``: read the request and never answer (the client's read timeout fires).
* ``SLOW_ANSWER``: forward the next request, then hold its answer for ``latency_s``
  before sending it, once: the write lands, the client's read timeout fires first, and
  its retry meets its own write (then the proxy passes requests through again).
* ``LATE_LANDING``: hold the next request for ``latency_s``, then forward it, once: the
  client's read timeout fires first and its retry passes, and the request is carried out
  after it (held in a proxy or a load balancer), perhaps over a newer write.
* ``DENY``: answer a fraction of requests with HTTP 400 ``AccessDeniedException``,
  unforwarded (a destination whose permissions were taken away).
* ``BAD_SIGNATURE``: answer a fraction of requests with HTTP 400
  ``InvalidSignatureException`` whose message quotes the canonical request it expected,
  the request's ``x-amz-security-token`` header included, as AWS does; unforwarded.
* ``GARBAGE``: answer a fraction of requests with HTTP 200 and a body that is not JSON
  (``GARBAGE_BODY``), unforwarded or, with ``after_forward``, once the server has
  answered (a proxy or a broken link garbling a success).
* ``REFUSE``: stop listening, so connections are refused, and drop open keep-alive
  connections; leaving this fault listens again on the same port. The port stays bound
  meanwhile (a socket that does not listen: connections to it are refused), so that no
  server of the test run that asks for a free port takes it and answers in the proxy's
  place.

``latency_s`` delays every request, in any fault. ``operations`` narrows a fault and its
latency to those operations (such as PutItem and DeleteItem, to hold or slow a
destination's writes while its status table is still answered); other requests pass.
Every request is counted by operation (the ``X-Amz-Target`` action, such as ``PutItem``)
and outcome, so scenarios can report how many requests were throttled, failed or
forwarded (``upstream_<status>``); the
headers of the first requests are kept too (:meth:`FaultProxy.seen`), for what a client
sends (its credentials' access key id, its retry settings).

Threads, not asyncio: each client connection gets a thread that reads one request at a
time (boto3 keeps connections alive; bodies carry a Content-Length), and each forwarded
request uses a fresh upstream connection, so a proxy fault never leaves a half-used
upstream connection behind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import IO
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)
_MAX_LINE = 65_536
_KEPT_REQUESTS = 20_000


class Fault(StrEnum):
    PASS = "pass"
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    RESET = "reset"
    BLACK_HOLE = "black_hole"
    DENY = "deny"
    BAD_SIGNATURE = "bad_signature"
    REFUSE = "refuse"
    SLOW_ANSWER = "slow_answer"
    LATE_LANDING = "late_landing"
    GARBAGE = "garbage"


GARBAGE_BODY = b"\x00garbage{{["


THROTTLE_TYPES = {
    "ProvisionedThroughputExceededException": (
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
    ),
    "ThrottlingException": "com.amazon.coral.availability#ThrottlingException",
}


@dataclass(frozen=True)
class Mode:
    fault: Fault = Fault.PASS
    fraction: float = 1.0
    latency_s: float = 0.0
    throttle_code: str = "ProvisionedThroughputExceededException"
    after_forward: bool = False
    operations: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def operation(self) -> str:
        return self.target_action.rpartition(".")[2] or self.method

    @property
    def target_action(self) -> str:
        """The full ``X-Amz-Target`` (``DynamoDBStreams_20120810.GetRecords``), or ''."""
        for name, value in self.headers:
            if name.lower() == "x-amz-target":
                return value
        return ""

    @property
    def wants_close(self) -> bool:
        return any(
            name.lower() == "connection" and value.lower() == "close"
            for name, value in self.headers
        )


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        seed: int = 0,
        observe: Callable[[str, bytes, int], None] | None = None,
    ) -> None:
        """``observe(operation, request body, status)`` is called for each forwarded
        request once the upstream has answered, before the client gets the answer."""
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._observe = observe
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._mode = Mode()
        self._mode_changed = threading.Condition(self._lock)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._table_counts: Counter[tuple[str, str]] = Counter()
        self._seen: list[tuple[str, dict[str, str]]] = []
        self._connections: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listening = threading.Event()
        self._refusing = threading.Event()
        self._listener: socket.socket | None = self._bind(0)
        self._reserved: socket.socket | None = None  # the port, held while refusing
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )

    # -- control (test thread) ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._acceptor.start()
        self._listening.wait(5)
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._mode_changed:
            self._mode_changed.notify_all()
        self._acceptor.join(5)
        self._drop_connections()

    def set(self, mode: Mode) -> None:
        """Switch the fault; returns once it is in force (listening or not, as it says)."""
        with self._mode_changed:
            self._mode = mode
            self._mode_changed.notify_all()
        if mode.fault is Fault.REFUSE:
            self._drop_connections()
            if not self._refusing.wait(5):
                raise RuntimeError("proxy did not stop listening")
        elif not self._listening.wait(5):
            raise RuntimeError(f"proxy could not listen on port {self.port} again")

    def pass_through(self, latency_s: float = 0.0) -> None:
        self.set(Mode(latency_s=latency_s))

    def throttle(
        self, fraction: float, code: str = "ProvisionedThroughputExceededException"
    ) -> None:
        self.set(Mode(Fault.THROTTLE, fraction, throttle_code=code))

    def server_errors(self, fraction: float = 1.0, after_forward: bool = False) -> None:
        self.set(Mode(Fault.SERVER_ERROR, fraction, after_forward=after_forward))

    def resets(self, fraction: float, after_forward: bool = False, latency_s: float = 0.0) -> None:
        self.set(Mode(Fault.RESET, fraction, latency_s=latency_s, after_forward=after_forward))

    def garbage(self, fraction: float = 1.0, after_forward: bool = False) -> None:
        self.set(Mode(Fault.GARBAGE, fraction, after_forward=after_forward))

    def slow_answer_once(self, delay_s: float) -> None:
        self.set(Mode(Fault.SLOW_ANSWER, latency_s=delay_s))

    def late_landing_once(self, delay_s: float) -> None:
        self.set(Mode(Fault.LATE_LANDING, latency_s=delay_s))

    def black_hole(self) -> None:
        self.set(Mode(Fault.BLACK_HOLE))

    def refuse(self) -> None:
        self.set(Mode(Fault.REFUSE))

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    def counts(self, operation: str | None = None) -> Counter[str]:
        """Requests by outcome, for one operation (such as PutItem) or all of them."""
        with self._lock:
            totals: Counter[str] = Counter()
            for (op, outcome), count in self._counts.items():
                if operation is None or op == operation:
                    totals[outcome] += count
            return totals

    def seen(self) -> list[tuple[str, dict[str, str]]]:
        """(X-Amz-Target, headers with lower-case names) of the requests received so far."""
        with self._lock:
            return list(self._seen)

    def by_table(self, operation: str) -> Counter[str]:
        """Requests of one operation by the table they name (``TableName``, a batch's
        ``RequestItems`` tables joined by commas), whatever
        their outcome: a job's writes to its destination table apart from its tombstone
        table's."""
        with self._lock:
            return Counter(
                {table: n for (op, table), n in self._table_counts.items() if op == operation}
            )

    def _count(self, request: _Request, outcome: str) -> None:
        table = ""
        with contextlib.suppress(ValueError, AttributeError):
            body = json.loads(request.body)
            # A batch names its tables in RequestItems (a test's batches name one).
            table = str(body.get("TableName") or ",".join(body.get("RequestItems") or ()))
        with self._lock:
            self._counts[(request.operation, outcome)] += 1
            self._table_counts[(request.operation, table)] += 1

    def _keep(self, request: _Request) -> None:
        with self._lock:
            if len(self._seen) < _KEPT_REQUESTS:
                headers = {name.lower(): value for name, value in request.headers}
                self._seen.append((request.target_action, headers))

    # -- listening ------------------------------------------------------------------------

    def _bind(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        return listener

    def _accept_loop(self) -> None:
        """The only thread that opens and closes the listener, so select never races close."""
        try:
            while not self._stopped.is_set():
                refusing = self.mode.fault is Fault.REFUSE
                if refusing and self._listener is not None:
                    self._listener.close()
                    self._listener = None
                    self._reserved = self._reserve(self.port)
                    self._listening.clear()
                    self._refusing.set()
                elif not refusing and self._listener is None:
                    if self._reserved is not None:
                        self._reserved.close()
                        self._reserved = None
                    self._listener = self._rebind()
                    self._refusing.clear()
                if self._listener is None:
                    with self._mode_changed:
                        self._mode_changed.wait(0.05)
                    continue
                self._listening.set()
                ready, _, _ = select.select([self._listener], [], [], 0.05)
                if not ready:
                    continue
                try:
                    connection, _ = self._listener.accept()
                except OSError:
                    continue
                with self._lock:
                    self._connections.add(connection)
                threading.Thread(
                    target=self._serve, args=(connection,), name="proxy-conn", daemon=True
                ).start()
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            if self._reserved is not None:
                self._reserved.close()
                self._reserved = None

    @staticmethod
    def _reserve(port: int) -> socket.socket | None:
        """Bind ``port`` without listening: a connection to it is refused, as to a closed
        port, but a server of the test run asking for a free port (port 0) is not given
        it meanwhile (None if one took it at once). SO_REUSEADDR, as the listener: the
        connections just dropped leave the port in TIME_WAIT."""
        reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            reserved.bind(("127.0.0.1", port))
        except OSError:
            reserved.close()
            return None
        return reserved

    def _rebind(self) -> socket.socket | None:
        deadline = time.monotonic() + 5
        while True:
            try:
                return self._bind(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # -- one client connection ------------------------------------------------------------

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while not self._stopped.is_set():
                try:
                    request = _read_request(reader)
                except (OSError, ValueError):
                    return
                if request is None:
                    return
                if not self._handle(connection, request) or request.wants_close:
                    return
        finally:
            with self._lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                reader.close()
                connection.close()

    def _handle(self, connection: socket.socket, request: _Request) -> bool:
        """Answer one request as the current fault says; False once the connection is gone."""
        self._keep(request)
        with self._lock:
            mode = self._mode
            if mode.operations and request.operation not in mode.operations:
                mode = Mode()
            elif mode.fault in (Fault.SLOW_ANSWER, Fault.LATE_LANDING):
                self._mode = Mode()  # once
        if mode.fault is Fault.LATE_LANDING:
            self._stopped.wait(mode.latency_s)
            response = self._forward(request)
            self._count(request, f"late_landing_{response.status}")
            return self._send(connection, response)
        if mode.fault is Fault.SLOW_ANSWER:
            response = self._forward(request)
            self._count(request, f"slow_answer_{response.status}")
            self._stopped.wait(mode.latency_s)
            return self._send(connection, response)
        if mode.latency_s > 0:
            self._stopped.wait(mode.latency_s)
        with self._lock:
            hit = self._rng.random() < mode.fraction
        fault = mode.fault if hit else Fault.PASS
        if fault is Fault.REFUSE:
            # Switched to refusing after this request was read: drop it unanswered.
            self._count(request, "dropped")
            return False
        if fault is Fault.BLACK_HOLE:
            self._count(request, "black_holed")
            with self._mode_changed:
                while self._mode.fault is Fault.BLACK_HOLE and not self._stopped.is_set():
                    self._mode_changed.wait(0.5)
            return False
        if fault is Fault.THROTTLE:
            self._count(request, "throttled")
            kind = THROTTLE_TYPES.get(mode.throttle_code, mode.throttle_code)
            return self._send(connection, _error(400, kind, "Rate of requests exceeds capacity"))
        if fault is Fault.DENY:
            self._count(request, "denied")
            kind = "com.amazon.coral.service#AccessDeniedException"
            return self._send(connection, _error(400, kind, "Injected: not authorized"))
        if fault is Fault.BAD_SIGNATURE:
            self._count(request, "bad_signature")
            kind = "com.amazon.coral.service#InvalidSignatureException"
            return self._send(connection, _error(400, kind, _expected_signature(request)))
        if fault in (Fault.SERVER_ERROR, Fault.RESET, Fault.GARBAGE) and mode.after_forward:
            forwarded = self._forward(request)
            self._count(request, f"upstream_{forwarded.status}")
        if fault is Fault.SERVER_ERROR:
            self._count(
                request, "server_error_after_forward" if mode.after_forward else "server_error"
            )
            body = _error(500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "Injected")
            return self._send(connection, body)
        if fault is Fault.GARBAGE:
            self._count(request, "garbage_after_forward" if mode.after_forward else "garbage")
            return self._send(connection, _Response(200, "OK", [], GARBAGE_BODY))
        if fault is Fault.RESET:
            self._count(request, "reset_after_forward" if mode.after_forward else "reset")
            _reset(connection)
            return False
        response = self._forward(request)
        self._count(request, f"upstream_{response.status}")
        if self._observe is not None:
            self._observe(request.operation, request.body, response.status)
        return self._send(connection, response)

    def _forward(self, request: _Request) -> _Response:
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            upstream.putrequest(
                request.method, request.target, skip_host=True, skip_accept_encoding=True
            )
            for name, value in request.headers:
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(request.body)))
            upstream.endheaders(request.body)
            answer = upstream.getresponse()
            body = answer.read()
            return _Response(answer.status, answer.reason, answer.getheaders(), body)
        except (OSError, http.client.HTTPException) as error:
            return _error(502, "ProxyUpstreamError", f"{type(error).__name__}: {error}")
        finally:
            upstream.close()

    def _send(self, connection: socket.socket, response: _Response) -> bool:
        head = [f"HTTP/1.1 {response.status} {response.reason}"]
        head += [
            f"{name}: {value}"
            for name, value in response.headers
            if name.lower() not in _HOP_BY_HOP
        ]
        head += [f"Content-Length: {len(response.body)}", "Connection: keep-alive"]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body
        try:
            connection.sendall(data)
        except OSError:
            return False
        return True


def _read_request(reader: IO[bytes]) -> _Request | None:
    """One request from a keep-alive connection; None at a clean end of the connection."""
    line = reader.readline(_MAX_LINE)
    while line in (b"\r\n", b"\n"):
        line = reader.readline(_MAX_LINE)
    if not line:
        return None
    method, target, _version = line.decode("latin-1").split(maxsplit=2)
    headers: list[tuple[str, str]] = []
    while True:
        header = reader.readline(_MAX_LINE)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise ValueError("chunked request bodies are not supported")
    length = int(fields.get("content-length", "0"))
    body = reader.read(length) if length else b""
    if len(body) < length:
        return None
    return _Request(method, target, headers, body)


def _error(status: int, kind: str, message: str) -> _Response:
    body = json.dumps({"__type": kind, "message": message}).encode()
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-RequestId", f"fault-{time.monotonic_ns()}"),
    ]
    reason = {400: "Bad Request", 500: "Internal Server Error", 502: "Bad Gateway"}[status]
    return _Response(status, reason, headers, body)


def _expected_signature(request: _Request) -> str:
    """AWS's answer to a bad signature: the canonical request it expected, headers
    (the session token among them) in plain text."""
    signed = sorted(
        f"{name.lower()}:{value}"
        for name, value in request.headers
        if name.lower() in ("host", "x-amz-date", "x-amz-security-token", "x-amz-target")
    )
    return (
        "The request signature we calculated does not match the signature you provided. "
        "The Canonical String for this request should have been\n'POST\n/\n\n"
        + "\n".join(signed)
        + "\n'"
    )


def _reset(connection: socket.socket) -> None:
    """Close with SO_LINGER 0, which sends a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
