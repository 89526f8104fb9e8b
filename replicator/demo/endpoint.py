"""An embedded DynamoDB-compatible endpoint on 127.0.0.1 (moto's server), for the demo.

``python -m replicator.demo.endpoint --port 8000`` serves it on its own until Ctrl-C or
SIGTERM: a stock ``moto_server`` applies two writes to one item at once, which no pair of
active-active jobs can converge on (docs/active-active.md, Limits); this one applies one
write at a time, as DynamoDB does per item."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import click

from replicator import logs
from replicator.demo import fastmoto

_WRITES = threading.RLock()
_PATCHED = False
# Per thread: the items an UpdateItem under way created (``created``), and whether table
# writes write stream records (``silent``).
_KEY_ONLY = threading.local()


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
        from moto.dynamodb.models.table import StreamShard, Table

        _one_insert_per_created_item(DynamoDBBackend, Table, StreamShard)
        for owner, name in (
            (DynamoDBBackend, "put_item"),
            (DynamoDBBackend, "update_item"),
            (DynamoDBBackend, "delete_item"),
            (DynamoDBBackend, "transact_write_items"),
            (StreamShard, "add"),
        ):
            setattr(owner, name, _serialized(getattr(owner, name)))
        _PATCHED = True


def _one_insert_per_created_item(backend: Any, table: Any, shard: Any) -> None:
    """Make an UpdateItem that creates an item write one INSERT stream record, and one
    that fails create nothing.

    moto creates such an item by putting its bare key first, which writes an INSERT of
    the key alone before the INSERT of the item: DynamoDB writes the second only. An
    active-active job reads the first as a write of its region (an item without its
    ordering attribute or stamp) and logs conflicts and corrections that DynamoDB never
    causes. When the update then fails (an item over 400 KB, a bad ADD), moto keeps the
    bare key, where DynamoDB stores nothing: it is removed again, unrecorded, as no
    record of it was written."""
    update_item, put_item, add = backend.update_item, table.put_item, shard.add

    @functools.wraps(update_item)
    def updating(*args: Any, **kwargs: Any) -> Any:
        outer = getattr(_KEY_ONLY, "created", None)
        created: list[tuple[Any, Any]] = []
        _KEY_ONLY.created = created
        try:
            return update_item(*args, **kwargs)
        except BaseException:
            for owner, item in created:
                with _unrecorded():
                    owner.delete_item(item.hash_key, item.range_key)
            raise
        finally:
            _KEY_ONLY.created = outer

    @functools.wraps(put_item)
    def putting(owner: Any, *args: Any, **kwargs: Any) -> Any:
        created = getattr(_KEY_ONLY, "created", None)
        if created is None:
            return put_item(owner, *args, **kwargs)
        with _unrecorded():  # the bare key UpdateItem stores first
            item = put_item(owner, *args, **kwargs)
        created.append((owner, item))
        return item

    @functools.wraps(add)
    def adding(*args: Any, **kwargs: Any) -> Any:
        if not getattr(_KEY_ONLY, "silent", False):
            add(*args, **kwargs)

    backend.update_item, table.put_item, shard.add = updating, putting, adding


@contextlib.contextmanager
def _unrecorded() -> Iterator[None]:
    """Table writes on this thread meanwhile write no stream record."""
    outer = getattr(_KEY_ONLY, "silent", False)
    _KEY_ONLY.silent = True
    try:
        yield
    finally:
        _KEY_ONLY.silent = outer


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(*args, **kwargs)

    return one_at_a_time


class EmbeddedEndpoint:
    def __init__(self, port: int = 0) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:  # pragma: no cover - moto is a test dependency
            raise RuntimeError(
                "the demo needs moto[server] (pip install 'dynamodb-replicator[test]')"
            ) from error
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        serialize_table_writes()
        fastmoto.install()
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self.url:  # started (a Ctrl-C can come before)
            self._server.stop()


class _Port(click.IntRange):
    """A TCP port, or 0 for any free one; anything else named in one line."""

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is no port: give 0 to 65535", param, ctx)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="A DynamoDB-compatible endpoint (moto) on 127.0.0.1 that applies one write at a "
    "time, as DynamoDB does per item. Its URL is printed; Ctrl-C or SIGTERM stops it.",
)
@click.option(
    "--port", type=_Port(0, 65535), default=8000, show_default=True, help="0: any free port"
)
def main(port: int) -> None:
    """Serve the endpoint until SIGINT or SIGTERM (exit 0); 3 when the port is taken."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    try:  # moto's server thread would only print the refusal and serve nothing
        with socket.create_server(("127.0.0.1", port)):
            pass
    except OSError as error:
        logs.echo(f"replicator.demo.endpoint: cannot serve on 127.0.0.1:{port}: {error}", err=True)
        sys.exit(3)
    endpoint = EmbeddedEndpoint(port)
    logs.echo(endpoint.start())
    try:
        stop.wait()
    finally:
        endpoint.stop()


if __name__ == "__main__":
    main(prog_name="python -m replicator.demo.endpoint")
