"""A DynamoDB-compatible fake endpoint on 127.0.0.1, for benchmarks only.

It speaks the DynamoDB JSON 1.0 protocol as boto3 sends it (``POST /`` with
``X-Amz-Target: DynamoDB_20120810.PutItem`` and a JSON body) and answers PutItem,
DeleteItem and BatchWriteItem without storing anything, so that it costs almost
nothing per request: the benchmark must measure the replicator, not its double. Each
answer is held back by a configurable latency (a destination a continent away), and a
configurable share of requests is refused with ProvisionedThroughputExceededException
(throttling) or ConditionalCheckFailedException (a conditional write that loses).

Every write is logged with its arrival time, the item's key and the item's creation
stamp (an attribute holding epoch microseconds), so that the benchmark can compute the
delay from a record's creation to its application. The log and the settings are read
and changed over the same port, under ``/_bench/`` (see :class:`EndpointControl`).

It runs as its own process (``python -m bench.fake_endpoint``), so that its CPU is not
charged to the process under test; it prints ``port <n>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JSON_CONTENT = b"application/x-amz-json-1.0"
TARGET_PREFIX = "DynamoDB_20120810."
ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"

# One logged write: arrival (epoch s), operation, key, creation stamp (epoch us or -1),
# outcome ("ok", "throttled", "condition_failed").
LogEntry = tuple[float, str, str, int, str]


@dataclass
class EndpointSettings:
    """How the endpoint behaves; changed at run time through ``/_bench/settings``."""

    latency_ms: float = 0.0
    throttle_rate: float = 0.0
    condition_fail_rate: float = 0.0
    key_attribute: str = "pk"
    stamp_attribute: str = "updated_at"
    record: bool = True
    seed: int = 1


@dataclass
class EndpointState:
    settings: EndpointSettings = field(default_factory=EndpointSettings)
    log: list[LogEntry] = field(default_factory=list)
    requests: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(1))

    def configure(self, changes: dict[str, Any]) -> None:
        known = asdict(self.settings)
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        self.settings = EndpointSettings(**{**known, **changes})
        self.rng = random.Random(self.settings.seed)

    def reset(self) -> None:
        self.log = []
        self.requests = 0


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


def _scalar(value: Any) -> str:
    """The text of a key attribute value (``{"S": "k1"}`` -> ``k1``)."""
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value.values())))
    return ""


def _stamp(item: dict[str, Any], attribute: str) -> int:
    value = item.get(attribute)
    if isinstance(value, dict):
        number = value.get("N")
        if isinstance(number, str):
            with contextlib.suppress(ValueError):
                return int(number)
    return -1


class DynamoDBHandler:
    """Answers one parsed request; shared by every connection."""

    def __init__(self, state: EndpointState) -> None:
        self.state = state

    def handle(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        now = time.time()
        state = self.state
        settings = state.settings
        state.requests += 1
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return 400, _error_body("SerializationException", "body is not JSON")
        if not isinstance(request, dict):
            return 400, _error_body("SerializationException", "body is not a JSON object")
        if operation not in ("PutItem", "DeleteItem", "BatchWriteItem"):
            return 400, _error_body(
                "UnknownOperationException", f"the fake endpoint does not serve {target!r}"
            )
        writes = self._writes(operation, request)
        outcome = "ok"
        status, answer = 200, dict[str, Any]()
        if operation == "BatchWriteItem":
            answer = {"UnprocessedItems": {}}
        if settings.throttle_rate and state.rng.random() < settings.throttle_rate:
            outcome = "throttled"
            status, answer = (
                400,
                _error_body(
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded.",
                ),
            )
        elif (
            settings.condition_fail_rate
            and operation != "BatchWriteItem"
            and request.get("ConditionExpression")
            and state.rng.random() < settings.condition_fail_rate
        ):
            outcome = "condition_failed"
            status, answer = (
                400,
                _error_body("ConditionalCheckFailedException", "The conditional request failed"),
            )
            if request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                answer["Item"] = request.get("Item") or request.get("Key") or {}
        if settings.record:
            state.log.extend((now, op, key, stamp, outcome) for op, key, stamp in writes)
        return status, answer

    def _writes(self, operation: str, request: dict[str, Any]) -> list[tuple[str, str, int]]:
        settings = self.state.settings
        key_name, stamp_name = settings.key_attribute, settings.stamp_attribute
        if operation == "PutItem":
            item = request.get("Item") or {}
            return [("put", _scalar(item.get(key_name)), _stamp(item, stamp_name))]
        if operation == "DeleteItem":
            key = request.get("Key") or {}
            return [("delete", _scalar(key.get(key_name)), -1)]
        writes = []
        for requests in (request.get("RequestItems") or {}).values():
            for entry in requests:
                if "PutRequest" in entry:
                    item = entry["PutRequest"].get("Item") or {}
                    writes.append(("put", _scalar(item.get(key_name)), _stamp(item, stamp_name)))
                elif "DeleteRequest" in entry:
                    key = entry["DeleteRequest"].get("Key") or {}
                    writes.append(("delete", _scalar(key.get(key_name)), -1))
        return writes

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The benchmark's own API: settings, log, reset, stats."""
        state = self.state
        if path == "/_bench/settings" and method == "POST":
            try:
                state.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError) as error:
                return 400, {"error": str(error)}
            return 200, asdict(state.settings)
        if path == "/_bench/settings":
            return 200, asdict(state.settings)
        if path == "/_bench/log":
            return 200, {"requests": state.requests, "writes": state.log}
        if path == "/_bench/stats":
            return 200, {"requests": state.requests, "writes": len(state.log)}
        if path == "/_bench/reset" and method == "POST":
            state.reset()
            return 200, {}
        return 404, {"error": f"no such control path {path}"}


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"__type": ERROR_PREFIX + code, "message": message}


def _response(status: int, payload: dict[str, Any], content_type: bytes = JSON_CONTENT) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    reason = b"OK" if status == 200 else b"Bad Request" if status == 400 else b"Not Found"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: " + content_type + b"\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"x-amzn-RequestId: fake\r\n\r\n",
            body,
        )
    )


class _Connection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive server connection (no chunked bodies, no pipelining
    beyond what arrives in order), which is all botocore's urllib3 pool needs."""

    def __init__(self, handler: DynamoDBHandler) -> None:
        self.handler = handler
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.head: tuple[str, str, str, int] | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = _parse_head(bytes(self.buffer[:end]))
                del self.buffer[: end + 4]
            method, path, target, length = self.head
            if len(self.buffer) < length:
                return
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.head = None
            self._respond(method, path, target, body)

    def _respond(self, method: str, path: str, target: str, body: bytes) -> None:
        if path.startswith("/_bench/"):
            status, payload = self.handler.control(method, path, body)
            self._send(_response(status, payload, b"application/json"))
            return
        status, payload = self.handler.handle(target, body)
        response = _response(status, payload)
        latency = self.handler.state.settings.latency_ms / 1000.0
        if latency > 0:
            self.loop.call_later(latency, self._send, response)
        else:
            self._send(response)

    def _send(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


def _parse_head(head: bytes) -> tuple[str, str, str, int]:
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].decode("latin-1").split(" ", 2)
    target = ""
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"x-amz-target":
            target = value.strip().decode("latin-1")
    return method, path, target, length


async def serve(port: int, settings: EndpointSettings) -> None:
    state = EndpointState()
    state.configure(asdict(settings))
    handler = DynamoDBHandler(state)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(handler), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"port {bound}", flush=True)
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def stop_on(signum: signal.Signals) -> None:
        stopped_by.append(signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_on, signum)
    async with server:
        await stop.wait()
    # The bench's watch reads it: a SIGINT is Ctrl-C's, which the bench had too.
    print(f"stopped by {stopped_by[0]}", flush=True)


# Why the fake endpoint ended while a benchmark ran on it (set by the watch that then
# interrupts the main thread): the processors would otherwise retry against it for ever.
GONE: list[str] = []


class EndpointControl:
    """The benchmark's handle on a running fake endpoint (its own process)."""

    def __init__(self, url: str, process: subprocess.Popen[str] | None = None) -> None:
        self.url = url
        self.process = process
        self._stopping = False  # stop() was called: the main thread is no longer waiting
        self._terminating = False  # stop() ended the endpoint itself
        self._watcher: threading.Thread | None = None

    def watch(self) -> None:
        """Interrupt the main thread (SIGINT) if the endpoint ends before :meth:`stop`:
        a processor whose endpoint is gone retries its writes for ever, and the run would
        wait on it without end. An end the endpoint says SIGINT caused is Ctrl-C's (the
        terminal sends it to the bench too), not the endpoint's own."""
        process = self.process
        if process is None:
            return
        main = threading.main_thread().ident
        assert main is not None

        def wait() -> None:
            said = process.stdout.read() if process.stdout is not None else ""
            code = process.wait()
            if self._terminating or "stopped by SIGINT" in said:
                return
            GONE.append(f"the fake endpoint (pid {process.pid}) exited with status {code}")
            if not self._stopping:  # else the main thread is already on its way out
                signal.pthread_kill(main, signal.SIGINT)

        self._watcher = threading.Thread(target=wait, daemon=True, name="endpoint-watch")
        self._watcher.start()

    @classmethod
    def start(cls, **settings: Any) -> EndpointControl:
        """Start ``python -m bench.fake_endpoint`` on a free port and wait until it listens."""
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_endpoint", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            process.kill()
            raise RuntimeError(f"the fake endpoint did not start (said {line!r})")
        control = cls(f"http://127.0.0.1:{int(line.split()[1])}", process)
        if settings:
            control.configure(**settings)
        return control

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "/_bench/settings", settings)

    def reset(self) -> None:
        self._call("POST", "/_bench/reset", {})

    def log(self) -> tuple[int, list[LogEntry]]:
        answer = self._call("GET", "/_bench/log", None)
        entries = [
            (float(t), str(op), str(key), int(stamp), str(outcome))
            for t, op, key, stamp, outcome in answer["writes"]
        ]
        return int(answer["requests"]), entries

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._call("GET", "/_bench/stats", None).items()}

    def cpu_seconds(self) -> float:
        """CPU time the endpoint process has used so far, to the nanosecond where the
        kernel keeps scheduler statistics (a few thousand requests cost only tens of
        milliseconds, a handful of the 10 ms ticks ``/proc/<pid>/stat`` counts in)."""
        assert self.process is not None
        return precise_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self._stopping = True
        if self.process is not None and self.process.poll() is not None:
            # Ended before the stop (a call to it failed first): its watch says why.
            if self._watcher is not None:
                self._watcher.join(timeout=5)
        elif self.process is not None:
            self._terminating = True
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def __enter__(self) -> EndpointControl:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def precise_cpu_seconds(pid: int) -> float:
    """On-CPU seconds of a process's live threads, from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds); ``process_cpu_seconds`` where the kernel has no scheduler statistics.
    Threads that have exited are not counted, so this is for processes whose threads live
    as long as they do, such as the single-threaded fake endpoint."""
    try:
        total_ns = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total_ns += int(schedstat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return process_cpu_seconds(pid)
    return total_ns / 1e9 if total_ns else process_cpu_seconds(pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--condition-fail-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    settings = EndpointSettings(
        latency_ms=args.latency_ms,
        throttle_rate=args.throttle_rate,
        condition_fail_rate=args.condition_fail_rate,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, settings))


if __name__ == "__main__":
    main()
