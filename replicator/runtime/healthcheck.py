"""``python -m replicator.runtime.healthcheck [PORT]``: a container's health probe.

Asks the running replicator's ``/healthz`` and exits 0 when it answers healthy, 1
otherwise (unhealthy, nothing listening, or a setting it cannot use), printing why in
one line or the health answer. It needs nothing but Python, so the image carries no
curl. The port is the argument, else ``$REPLICATOR_METRICS_PORT``, else the job file's
``metrics.port`` (the file ``$REPLICATOR_CONFIG`` names, as ``replicator run`` reads it
in the image), else 9400. The address is ``$REPLICATOR_METRICS_HOST``, else the job
file's ``metrics.host``, else 127.0.0.1; a wildcard host (``0.0.0.0``, ``::``) is probed
on its loopback address. A job that changes its metrics port therefore needs no
variable of its own to be probed where it listens. A variable that holds neither a port
nor an address, a job file whose metrics cannot be probed (``metrics.enabled: false``,
``metrics.port: 0``), is the one line and exit 1; a job file that cannot be read leaves
the defaults, and a failed probe says why it was not read.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request

from replicator import logs
from replicator.exceptions import ConfigError
from replicator.hosts import host_problem, unbracketed

DEFAULT_PORT = 9400
DEFAULT_HOST = "127.0.0.1"
PORT_ENV = "REPLICATOR_METRICS_PORT"
HOST_ENV = "REPLICATOR_METRICS_HOST"
CONFIG_ENV = "REPLICATOR_CONFIG"
# The problems of a job file's refusal a failed probe repeats (``validate`` lists them
# all); each problem is one line of the refusal.
_PROBLEMS_SHOWN = 3
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


def _job_metrics(port_given: bool) -> tuple[int | None, str | None, str | None]:
    """(port, host, why not read) of the job file ``$REPLICATOR_CONFIG`` names: what
    ``replicator run`` listens on in the image. ValueError, naming the file, for metrics
    no probe can reach (``port_given``: a port was given, which a job's port 0 needs); a
    file that cannot be read (the replicator started with another ``--config``, say)
    gives no port and no host, and says why."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None, None, None
    from replicator.config.loader import load_job  # only when a job file is named

    try:
        metrics = load_job(path).job.metrics
    except ConfigError as error:
        # The problems themselves, not only their count: the probe's output is all a
        # container's health log keeps.
        heading, *problems = [line.strip() for line in str(error).splitlines() if line.strip()] or [
            "the job file could not be read"
        ]
        more = len(problems) - _PROBLEMS_SHOWN
        # " | " between problems: their own messages use "; ".
        said = " | ".join(problems[:_PROBLEMS_SHOWN]) + (f" | and {more} more" if more > 0 else "")
        # As validate shows them: a value from the environment may be a credential.
        return None, None, logs.redact(f"{CONFIG_ENV}: {heading} {said}".rstrip())
    if not metrics.enabled:
        raise ValueError(
            f"healthcheck: {path}: metrics.enabled is false, so /healthz is not served "
            "(enable metrics for the container's health check)"
        )
    if metrics.port == 0 and not port_given:
        raise ValueError(
            f"healthcheck: {path}: metrics.port is 0 (a port picked at start): give the "
            f"job a fixed port, or set {PORT_ENV}"
        )
    return metrics.port, metrics.host, None


def _port(argv: list[str], job_port: int | None = None) -> int:
    """The port to probe; ValueError naming where a bad one came from."""
    given, where = (argv[0], "the argument") if argv else (os.environ.get(PORT_ENV), PORT_ENV)
    if not given:
        return DEFAULT_PORT if job_port is None else job_port
    try:
        port = int(given)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"healthcheck: {where} {given!r} is not a port (1-65535)")
    return port


def _host(job_host: str | None = None) -> str:
    """The address to probe; ValueError naming the variable when it holds what the job
    file's ``metrics.host`` refuses (a space, a slash, a port, ``999.1.1.1``: urllib
    would raise on it, or ask another host than the one meant)."""
    given = os.environ.get(HOST_ENV) or ""
    if not given and job_host is not None:
        return job_host  # checked by the job file's own rules
    bare = unbracketed(given.strip())
    if bare in _WILDCARDS:
        return given or DEFAULT_HOST
    if host_problem(bare):
        raise ValueError(f"healthcheck: {HOST_ENV} {given!r} is not an IP address or host name")
    return given


def main(argv: list[str]) -> int:
    unread = None
    try:
        port_given = bool(argv) or bool(os.environ.get(PORT_ENV))
        job_port, job_host, unread = (
            (None, None, None)
            if port_given and os.environ.get(HOST_ENV)  # nothing left to read in the file
            else _job_metrics(port_given)
        )
        port = _port(argv, job_port)
        host = _host(job_host)
    except ValueError as error:
        print(error, file=sys.stderr)  # stdout-ok: stderr of the container's health probe
        return 1
    healthy, body = probe(port, host=host)
    if not healthy:
        print(body, file=sys.stderr)  # stdout-ok: stderr of the container's health probe
        if unread is not None:
            print(f"(the job file was not read: {unread})", file=sys.stderr)  # stdout-ok: as above
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
