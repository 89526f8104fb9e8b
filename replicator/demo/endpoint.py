"""An embedded DynamoDB-compatible endpoint on 127.0.0.1 (moto's server), for the demo."""

from __future__ import annotations

import logging
from typing import Any


class EmbeddedEndpoint:
    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:  # pragma: no cover - moto is a test dependency
            raise RuntimeError(
                "the demo needs moto[server] (pip install 'dynamodb-replicator[test]')"
            ) from error
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.stop()
