"""``python -m replicator.runtime.healthcheck [PORT]``: a container's health probe.

Asks the running replicator's ``/healthz`` on 127.0.0.1 and exits 0 when it answers
healthy, 1 otherwise (unhealthy, or nothing listening), printing why. It needs nothing
but Python, so the image carries no curl. The port is the argument, else
``$REPLICATOR_METRICS_PORT``, else 9400 (the job file's default ``metrics.port``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 9400
PORT_ENV = "REPLICATOR_METRICS_PORT"


def probe(port: int, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(healthy, what to say) for the replicator serving metrics on ``port``."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return False, error.read().decode("utf-8", "replace")
    except (OSError, ValueError) as error:
        return False, json.dumps({"status": "unreachable", "reasons": [f"{url}: {error}"]})


def main(argv: list[str]) -> int:
    port = int(argv[0]) if argv else int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
    healthy, body = probe(port)
    if not healthy:
        print(body, file=sys.stderr)  # stdout-ok: stderr of the container's health probe
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
