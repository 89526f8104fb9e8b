"""Host names and IP addresses as the job file and the health probe take them.

Its own module, of the standard library alone: the container's health probe
(:mod:`replicator.runtime.healthcheck`) runs every few seconds and must start fast, and
importing :mod:`replicator.config` would import pydantic and YAML for it.
"""

from __future__ import annotations

import ipaddress
import re

# A host name as botocore takes one in an endpoint URL: dot-separated labels of letters,
# digits and -, each of 1 to 63 characters that neither starts nor ends with -, and an
# optional final dot.
_HOST_NAME = re.compile(r"(?:(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.?\Z")
_LONGEST_HOST_NAME = 255


def host_problem(host: str) -> str | None:
    """What is wrong with ``host`` as a host name or an IP address (IPv6 without
    brackets), or None. Nothing is looked up: a name that does not resolve is found
    where it is used. A name of digits and dots alone is an IPv4 address or nothing
    (``999.1.1.1``): no top-level domain is all digits."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if (
        len(host) > _LONGEST_HOST_NAME
        or not _HOST_NAME.fullmatch(host)
        or host.rstrip(".").rsplit(".", 1)[-1].isdigit()
    ):
        return f"{host!r} is not a host name or IP address"
    return None


def unbracketed(host: str) -> str:
    """An IPv6 address as a URL writes it (``[::1]``) without its brackets; anything else
    as given (``[localhost]`` stays, and is no host)."""
    if host.startswith("[") and host.endswith("]") and ":" in host:
        return host[1:-1]
    return host
