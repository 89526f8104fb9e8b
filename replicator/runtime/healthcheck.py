"""``python -m replicator.runtime.healthcheck [PORT]``: a container's health probe.

Asks the running replicator's ``/healthz`` and exits 0 when it answers healthy, 1
otherwise (unhealthy, nothing listening, or a setting it cannot use), printing why in
one line or the health answer. It needs nothing but Python, so the image carries no
curl. The port is the argument, else ``$REPLICATOR_METRICS_PORT``, else 9400 (the job
file's default ``metrics.port``). The address is ``$REPLICATOR_METRICS_HOST`` (set it
to the job's ``metrics.host`` when that is one specific address: the probe runs inside
the container and must reach the address the replicator listens on), else 127.0.0.1;
a wildcard host (``0.0.0.0``, ``::``) is probed on its loopback address. A variable
that holds neither a port nor an address is the one line and exit 1.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request

from replicator.hosts import host_problem, unbracketed

DEFAULT_PORT = 9400
DEFAULT_HOST = "127.0.0.1"
PORT_ENV = "REPLICATOR_METRICS_PORT"
HOST_ENV = "REPLICATOR_METRICS_HOST"
# Listening on every address is reached through loopback of the same family.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": DEFAULT_HOST}  # noqa: S104


def url_of(host: str, port: int) -> str:
    host = host.strip().removeprefix("[").removesuffix("]")
    host = _WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/healthz"


def probe(port: int, timeout_s: float = 5.0, host: str = DEFAULT_HOST) -> tuple[bool, str]:
    """(healthy, what to say) for the replicator serving metrics on ``host``:``port``."""
    url = url_of(host, port)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310  # http:// only
            return response.status == 200, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return False, error.read().decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException) as error:
        return False, json.dumps({"status": "unreachable", "reasons": [f"{url}: {error}"]})


def _port(argv: list[str]) -> int:
    """The port to probe; ValueError naming where a bad one came from."""
    given, where = (argv[0], "the argument") if argv else (os.environ.get(PORT_ENV), PORT_ENV)
    if not given:
        return DEFAULT_PORT
    try:
        port = int(given)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"healthcheck: {where} {given!r} is not a port (1-65535)")
    return port


def _host() -> str:
    """The address to probe; ValueError naming the variable when it holds what the job
    file's ``metrics.host`` refuses (a space, a slash, a port, ``999.1.1.1``: urllib
    would raise on it, or ask another host than the one meant)."""
    given = os.environ.get(HOST_ENV) or ""
    bare = unbracketed(given.strip())
    if bare in _WILDCARDS:
        return given or DEFAULT_HOST
    if host_problem(bare):
        raise ValueError(f"healthcheck: {HOST_ENV} {given!r} is not an IP address or host name")
    return given


def main(argv: list[str]) -> int:
    try:
        port = _port(argv)
        host = _host()
    except ValueError as error:
        print(error, file=sys.stderr)  # stdout-ok: stderr of the container's health probe
        return 1
    healthy, body = probe(port, host=host)
    if not healthy:
        print(body, file=sys.stderr)  # stdout-ok: stderr of the container's health probe
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
