"""Structured logs (structlog): JSON lines by default, readable columns on a terminal.

Logs always go to stderr: in the processor child, stdout carries the MultiLang
protocol and a stray line there would stop the daemon. Fields bound with
``bind_everywhere`` (job, task, shard) appear on every line from every thread.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_GLOBAL_FIELDS: dict[str, Any] = {}
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _add_global_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for key, value in _GLOBAL_FIELDS.items():
        event.setdefault(key, value)
    return event


# AWS answers a bad signature with the canonical request it expected, session token
# header included; botocore's errors can quote request headers or URLs the same way.
_TOKEN_IN_TEXT = re.compile(
    r"((?:x-amz-security-token|X-Amz-Security-Token|aws_session_token|aws_secret_access_key)"
    r"\s*[:=]\s*)[^\s,;&'\"]+",
    re.IGNORECASE,
)
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """``text`` without credentials: a session token or secret key quoted in an error
    (AWS's canonical request, a header, a URL), or the value of a credential variable of
    this process's environment. Credentials are never logged nor printed."""
    text = _TOKEN_IN_TEXT.sub(lambda match: match.group(1) + REDACTED, text)
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, REDACTED)
    return text


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for key, value in event.items():
        if type(value) is str:
            event[key] = redact(value)
        elif isinstance(value, BaseException):
            event[key] = redact(str(value))
    return event


def bind_everywhere(**fields: Any) -> None:
    """Add fields to every log line of this process, whatever thread logs it."""
    _GLOBAL_FIELDS.update({k: v for k, v in fields.items() if v is not None})


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_global_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (botocore) go to stderr too, as the
    # same JSON lines (or columns), credentials redacted.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                _add_global_fields,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                _redact_secrets,
            ],
        )
    )
    logging.basicConfig(handlers=[handler], level=logging.WARNING, force=True)
    # botocore warns, with a traceback, when refreshing credentials fails; the command
    # reports that failure itself, in one line (exit 3), so the warning would only repeat
    # it as a traceback.
    logging.getLogger("botocore.credentials").setLevel(logging.ERROR)
