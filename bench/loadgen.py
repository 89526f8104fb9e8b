"""A load generator far cheaper than boto3, to find the fake endpoint's own ceiling.

It keeps ``connections`` keep-alive connections busy with one prepared PutItem request
each (raw bytes, no signing, no serialization) and counts the answers. It runs in its
own process, so that on a two-core machine the endpoint has a core to itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request(host: str, port: int) -> bytes:
    body = json.dumps(
        {
            "TableName": "bench-destination",
            "Item": {"pk": {"S": "ceiling"}, "updated_at": {"N": "1"}, "v": {"S": "x" * 200}},
        }
    ).encode()
    return (
        b"POST / HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"Content-Type: application/x-amz-json-1.0\r\n"
        + b"X-Amz-Target: DynamoDB_20120810.PutItem\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def _client(host: str, port: int, request: bytes, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            counts[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1
    finally:
        writer.close()


async def _run(url: str, connections: int, seconds: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request(host, port)
    counts = [0, 0]
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_client(host, port, request, deadline, counts) for _ in range(connections))
    )
    return LoadResult(counts[0], time.perf_counter() - start, counts[1])


def generate(url: str, connections: int = 32, seconds: float = 2.0) -> LoadResult:
    return asyncio.run(_run(url, connections, seconds))
