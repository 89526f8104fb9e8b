"""Structured logs (structlog): JSON lines by default, readable columns on a terminal.

Logs always go to stderr: in the processor child, stdout carries the MultiLang
protocol and a stray line there would stop the daemon. Fields bound with
``bind_everywhere`` (job, task, shard) appear on every line from every thread.
"""

from __future__ import annotations

import logging
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (botocore) go to stderr too.
    logging.basicConfig(stream=stream, level=logging.WARNING, force=True)
