"""Whether an endpoint given as ``http://`` answers HTTP/2 with prior knowledge.

The KCL's Kinesis client (the AWS SDK for Java's Netty client) speaks HTTP/2 only, and
to a cleartext endpoint it sends the HTTP/2 preface straight away. A server that answers
HTTP/1.1 alone (moto's own server, most emulators) makes the daemon log "First received
frame was not SETTINGS" every half minute and read nothing, while every check made
with boto3 (HTTP/1.1) passes and ``/healthz`` is ok. One preface sent at the start says
it at once: an HTTP/2 server's first frame is always its SETTINGS.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

# The client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_FRAME_HEADER = 9
_SETTINGS = 4


def answers_http2(endpoint_url: str, timeout_s: float = 3.0) -> bool | None:
    """True when the server at ``endpoint_url`` (``http://`` only) answers the preface
    with a SETTINGS frame, False when it answers anything else or closes or resets the
    connection without a word, None when it cannot be asked (another scheme, not reachable, no
    answer in ``timeout_s``): the checks that reach it otherwise say why, not this one."""
    parts = urlsplit(endpoint_url)
    if parts.scheme.lower() != "http" or not parts.hostname:
        return None
    try:
        port = parts.port or 80
        connection = socket.create_connection((parts.hostname, port), timeout=timeout_s)
    except (OSError, ValueError):
        return None
    head = b""
    with connection:
        try:
            connection.sendall(_PREFACE + _EMPTY_SETTINGS)
            while len(head) < _FRAME_HEADER:
                chunk = connection.recv(_FRAME_HEADER - len(head))
                if not chunk:
                    break
                head += chunk
        except (ConnectionResetError, BrokenPipeError):
            return False  # refused the preface as a server that does not speak it does
        except OSError:
            return None
    if len(head) < _FRAME_HEADER:
        return False
    return head[3] == _SETTINGS and int.from_bytes(head[5:9], "big") & 0x7FFF_FFFF == 0
