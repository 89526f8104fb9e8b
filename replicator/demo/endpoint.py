"""An embedded DynamoDB-compatible endpoint on 127.0.0.1 (moto's server), for the demo."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from replicator.demo import fastmoto

_WRITES = threading.RLock()
_PATCHED = False


def serialize_table_writes() -> None:
    """Make moto apply one DynamoDB write at a time, as DynamoDB does per item.

    moto's server answers requests on many threads but its tables are not thread-safe:
    two writes at once can number their stream records alike (the sequence number is
    the list's length before the append), and moto then delivers the second record
    twice; a conditional write can also be checked against an item that another
    request is replacing. DynamoDB numbers each record once and evaluates a condition
    atomically with its write, so every server this project starts serializes writes.
    """
    global _PATCHED  # noqa: PLW0603  # one patch per process
    with _WRITES:
        if _PATCHED:
            return
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import StreamShard

        for owner, name in (
            (DynamoDBBackend, "put_item"),
            (DynamoDBBackend, "update_item"),
            (DynamoDBBackend, "delete_item"),
            (DynamoDBBackend, "transact_write_items"),
            (StreamShard, "add"),
        ):
            setattr(owner, name, _serialized(getattr(owner, name)))
        _PATCHED = True


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(*args, **kwargs)

    return one_at_a_time


class EmbeddedEndpoint:
    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:  # pragma: no cover - moto is a test dependency
            raise RuntimeError(
                "the demo needs moto[server] (pip install 'dynamodb-replicator[test]')"
            ) from error
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        serialize_table_writes()
        fastmoto.install()
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self.url:  # started (a Ctrl-C can come before)
            self._server.stop()
