"""The event-loop transport driven like a blocking client, so that tests can give both
transports the same requests and expect the same answers and errors."""

from __future__ import annotations

import threading
from typing import Any

from replicator.writers.loopwire import EventLoopThread, LoopWire
from replicator.writers.wire import WireWriteClient


class LoopClient:
    """``put_item``/``delete_item`` sent by :class:`LoopWire` on its own event loop."""

    def __init__(self, wire: WireWriteClient) -> None:
        self.wire = wire
        self.thread = EventLoopThread("test-loop")
        self.loop_wire = LoopWire(wire, self.thread.loop)

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("PutItem", kwargs)

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteItem", kwargs)

    def close(self) -> None:
        self.thread.call(self.loop_wire.close)
        self.thread.stop()

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        done = threading.Event()
        outcome: list[tuple[dict[str, Any] | None, BaseException | None]] = []

        def answered(
            result: dict[str, Any] | None, error: BaseException | None, _: float | None
        ) -> None:
            outcome.append((result, error))
            done.set()

        self.thread.call(self.loop_wire.send, operation, params, answered)
        # Bounded by the client's connect and read timeouts; the margin is for a busy host.
        assert done.wait(self.wire.connect_timeout + self.wire.read_timeout + 60)
        ((result, error),) = outcome
        if error is not None:
            raise error
        assert result is not None
        return result
