"""Structured logs (structlog): JSON lines by default, readable columns on a terminal.

Logs always go to stderr: in the processor child, stdout carries the MultiLang
protocol and a stray line there would stop the daemon. Fields bound with
``bind_everywhere`` (job, task, shard) appear on every line from every thread.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import IO, Any, TextIO

import structlog

_GLOBAL_FIELDS: dict[str, Any] = {}
# logging.level's names, and the records' own (the KCL daemon's as the replicator writes
# them, critical included), in order.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _add_global_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for key, value in _GLOBAL_FIELDS.items():
        event.setdefault(key, value)
    return event


# AWS answers a bad signature with the canonical request it expected, session token
# header included; botocore's errors can quote request headers or URLs the same way. JVM
# options (-Dhttps.proxyPassword=..., -Djavax.net.ssl.trustStorePassword=...) can appear
# in the KCL daemon's output and in the launcher's errors. A quote around the name or the
# value may be escaped (a text quoted in another: JSON in a JSON line, a repr in a repr),
# and the value a bytes repr (b'...', how urllib3 and http.client print a header); a
# value's escapes (\r, \\n) are part of it, an escaped quote ends it.
_TOKEN_IN_TEXT = re.compile(
    r"((?:x-amz-security-token|aws_session_token|aws_secret_access_key|secretaccesskey|"
    r"sessiontoken|-D[\w.-]*(?:password|secret|token)[\w.-]*)(?:\\*['\"])?\s*[:=]\s*"
    r"(?:b?\\*['\"])?)"
    r"(?:(?<=['\"])(?:[^'\"\\]|\\+[^'\"\\])+|(?:[^\s,;&'\"}\\]|\\+[^\s,;&'\"}\\])+)",
    re.IGNORECASE,
)
# A user name and password in a URL (an endpoint or queue URL typed with them): refused
# by the job checks, whose message must not print them back (those quote the URL whole:
# config.endpoints.quoted). In a log line a URL ends at a blank or a quote; see
# _userinfo_end for where its user name and password end.
_URL_START = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]+://")
_URL_ENDS = frozenset("'\"<>")


def _userinfo_end(url: str) -> int | None:
    """Where the user name and password end in ``url`` (what follows its ``://``): at
    the last ``@`` before which they read as such, or None. A password may hold ``@``
    or ``/`` (urllib then reads part of it as the path); what comes before an ``@`` is
    taken for them if it holds no ``/``, or a ``:`` before its first ``/`` that is not a
    port's (a password is more than digits). So a path's ``@`` (``/@alice``, ``/users/
    a@b.com``, ``host:8000/x@y``) is left alone."""
    at = url.rfind("@")
    while at >= 0:
        before = url[:at]
        slash = before.find("/")
        colon = before.find(":")
        if slash < 0 or (0 <= colon < slash and not before[colon + 1 : slash].isdigit()):
            return at
        at = url.rfind("@", 0, at)
    return None


def _without_userinfo(text: str) -> str:
    parts: list[str] = []
    done = 0
    for start in _URL_START.finditer(text):
        begin = start.end()
        if begin <= done:
            continue
        end = begin
        while end < len(text) and text[end] not in _URL_ENDS and not text[end].isspace():
            end += 1
        at = _userinfo_end(text[begin:end])
        if at is not None:
            parts += [text[done:begin], REDACTED]
            done = begin + at
    return "".join(parts) + text[done:]


_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# A credential variable's value is replaced wherever it appears only from this length
# on. AWS's own are far longer (a secret key is 40 characters, a session token hundreds);
# shorter values are the stand-ins local endpoints take (moto's "testing", "test",
# "dummy"), and replacing them everywhere would blank ordinary words in every line. A
# value of any length is still redacted where a text names it (``aws_secret_access_key=``,
# a security-token header). docs/security.md states this length.
SECRET_MIN_CHARS = 8
REDACTED = "<redacted>"


# How many quotings deep a credential variable's value is looked for: a value quoted once
# (http.client's refusal of a header quotes it as a bytes repr), and that text quoted
# again (botocore's error repr'd in a field, or JSON-escaped in a KCL daemon's line).
_QUOTING_DEPTH = 2


def _inside_str_repr(text: str) -> list[str]:
    """``text`` as it is inside a str repr: between single quotes (a ``'`` escaped), or
    between double quotes (the quote Python picks for a text with a ``'`` and no ``"``)."""
    single = repr(text + "\"'")[1:-4]  # the quotes added make repr pick single quotes
    return [single, single.replace("\\'", "'")]


def _inside_bytes_repr(text: str) -> list[str]:
    """``text`` inside a bytes repr, in each encoding a header or a body gets (http.client
    encodes a header as Latin-1, most else is UTF-8); quoted as :func:`_inside_str_repr`."""
    forms = []
    for encoding in ("utf-8", "latin-1"):
        with contextlib.suppress(UnicodeEncodeError):
            single = repr(text.encode(encoding) + b"\"'")[2:-4]
            forms += [single, single.replace("\\'", "'")]
    return forms


def _inside_json(text: str) -> list[str]:
    """``text`` inside a JSON string (our log lines, the KCL's, AWS's answers)."""
    return [json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]]


@functools.lru_cache(maxsize=16)
def _written_forms(value: str) -> tuple[str, ...]:
    """Every way a credential variable's ``value`` is written in a text, longest first (a
    form that holds a shorter one is replaced whole): as it is; each part of it between
    whitespace that is :data:`SECRET_MIN_CHARS` long (a line break or a tab in the value
    splits a text that is read line by line, and ``excerpt`` turns it to a space; the
    trailing ``\r`` of an env file with CRLF line ends goes the same way); and each of
    those as a str repr, a bytes repr or JSON writes it, once or twice over. A value
    of letters, digits, ``/`` and ``+`` (every credential AWS issues) is the same in all."""
    forms = {value, *(part for part in value.split() if len(part) >= SECRET_MIN_CHARS)}
    for _ in range(_QUOTING_DEPTH):
        forms |= {
            quoted
            for form in forms
            for quote in (_inside_str_repr, _inside_bytes_repr, _inside_json)
            for quoted in quote(form)
        }
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` without credentials: a session token or secret key quoted in an error
    (AWS's canonical request, a header, a URL), or the value of a credential variable of
    this process's environment (:data:`SECRET_MIN_CHARS` or longer), in every form a
    quote gives it (:func:`_written_forms`). Credentials are never logged nor printed."""
    text = _TOKEN_IN_TEXT.sub(lambda match: match.group(1) + REDACTED, text)
    text = _without_userinfo(text)
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= SECRET_MIN_CHARS:
            for form in _written_forms(value):
                if form in text:
                    text = text.replace(form, REDACTED)
    return text


def unfiltered(name: str) -> Any:
    """A logger whose lines are written whatever ``logging.level`` says, at the level each
    call names. For the rare line an operator cannot do without at any level (the
    metrics port picked at start, which nothing else tells): the level of every other
    line stays as configured."""
    return structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory_args=(name,),
    )


def echo(text: str, err: bool = False, *, nl: bool = True) -> None:
    """Print a command's output (stdout) or a one-line error or warning (``err``).

    Output is printed exactly: it holds data (items, conflict images, keys, dead-letter
    records) that an operator compares, parses as JSON or pastes back into ``--key``,
    and redaction would change it (a value like ``ssh://git@host/x``, an attribute
    named ``sessionToken``). The error text within output (an endpoint's answer, a
    writer's reason) is redacted where the report puts it in. A line on stderr is error
    text as a whole, redacted as the logs are."""
    import click

    if err:
        click.echo(redact(text), err=True, nl=nl)
    elif _REPORTS:
        try:
            click.echo(text, file=_REPORTS[-1], nl=nl)
        except OSError as error:
            raise _unwritten(error) from None
    else:
        click.echo(text, nl=nl)


def _unwritten(error: OSError) -> Exception:
    from replicator.exceptions import ReportUnwritten

    return ReportUnwritten(f"the report could not be written to stdout: {error}")


# The stdout a command's report goes to while others' prints are kept out of it.
_REPORTS: list[TextIO] = []
# Those of them whose unwritten report the command has said on stderr instead.
_SAID_ELSEWHERE: set[int] = set()


def echo_outcome(text: str, err: bool = False) -> None:
    """Print the line that says a command's outcome (:func:`echo`), for a command whose
    exit code stands on its work (a restore made, a wait answered): a line that cannot be
    written to stdout is said on stderr after why, and the report's failing flush as the
    command ends is no longer the command's error; with stderr gone too, the exit code
    alone says it."""
    from replicator.exceptions import ReportUnwritten

    try:
        echo(text, err=err)
    except ReportUnwritten as unwritten:
        if _REPORTS:
            _SAID_ELSEWHERE.add(id(_REPORTS[-1]))
        with contextlib.suppress(OSError):
            echo(f"replicator: {unwritten}; it said: {text}", err=True)


def moved_off_stdout(out: TextIO) -> tuple[TextIO, int] | None:
    """``out``'s file descriptor (the process's 1) moved to a private one, and 1 made
    stderr from then on: a child process inherits 1, and C code or ``os.write(1, ...)``
    write there, past ``sys.stdout``, into what the process itself owns on stdout (the
    MultiLang protocol, a ``--json`` report). Returns a stream on the private descriptor
    and the descriptor ``out`` had; None when ``out`` has no descriptor of its own (a
    test's captured stream), or is not the process's stdout."""
    if out is not sys.__stdout__:
        return None
    try:
        descriptor = out.fileno()
        errors_to = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    out.flush()
    private = os.dup(descriptor)  # not inherited by child processes
    os.dup2(errors_to, descriptor)
    moved = open(  # noqa: SIM115  # it lives as long as the process's use of it
        private, "w", encoding=out.encoding, errors=out.errors, closefd=True
    )
    return moved, descriptor


class _StderrBelow(io.TextIOBase):
    """A ``sys.stdout`` stand-in whose text its subclass takes: what is written below the
    text (bytes to its ``buffer``, its descriptor) and what code encoding for it reads of
    it are stderr's."""

    def fileno(self) -> int:
        return sys.stderr.fileno()

    # What code that writes bytes or encodes for stdout reads of it: stderr's.
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return sys.stderr.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return sys.stderr.errors

    @property
    def buffer(self) -> Any:
        return sys.stderr.buffer

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def reconfigure(self, **_: Any) -> None:
        """Nothing: what code asks of its stdout is not stderr's to change (an encoding
        of ``ascii`` made every later log line with an accent fail)."""

    def __getattr__(self, name: str) -> Any:
        """The rest of a text stream (``line_buffering``, ``name``, ``mode``...):
        stderr's, so that code which asks for them of stdout works as it did."""
        return getattr(sys.stderr, name)


class _PrintsAside(_StderrBelow):
    """``sys.stdout`` while a command keeps its report apart: what others print (a custom
    resolver deciding on a writer's thread) goes to stderr, logged as ``printed`` lines
    when the log is JSON (configured once the job is read, after this is in place)."""

    def __init__(self) -> None:
        self._printed: PrintedLines | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if renders_json() and configured():
            if self._printed is None:
                self._printed = PrintedLines(sys.stderr)
            return self._printed.write(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        (self._printed or sys.stderr).flush()

    def flush_all(self) -> None:
        """Every thread's line printed without its end, as the command ends."""
        if self._printed is not None:
            self._printed.flush_all()
        sys.stderr.flush()


@contextlib.contextmanager
def report_kept_apart() -> Iterator[None]:
    """While inside, :func:`echo` writes the command's report to the stdout it started
    with, and nothing else reaches it: a custom resolver's prints as it decides (``verify
    --repair --json`` was then no JSON), a child process it starts."""
    out = sys.stdout
    if out is None:  # no stdout at all (closed when the process started): no report
        yield
        return
    moved = moved_off_stdout(out)
    _REPORTS.append(out if moved is None else moved[0])
    aside = _PrintsAside()
    sys.stdout = aside
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            aside.flush_all()
        _keep_if_replaced(aside)
        sys.stdout = out
        report = _REPORTS.pop()
        said_elsewhere = id(report) in _SAID_ELSEWHERE
        _SAID_ELSEWHERE.discard(id(report))
        if moved is not None:
            _give_back(report, moved[1], said_elsewhere=said_elsewhere)


def _give_back(report: TextIO, descriptor: int, *, said_elsewhere: bool = False) -> None:
    """The report's descriptor made ``descriptor`` (1) again, the report flushed first.
    A report that cannot be written (a closed pipe, a full disk) fails its flush, and that
    error is the command's (unless ``said_elsewhere``): the descriptor is given back
    before it is raised."""
    unwritten: Exception | None = None
    try:
        report.flush()
    except OSError as error:
        if not said_elsewhere:
            unwritten = _unwritten(error)
    finally:
        os.dup2(report.fileno(), descriptor)
        with contextlib.suppress(OSError, ValueError):  # bytes a failed flush kept
            report.close()
    if unwritten is not None:
        raise unwritten


def _redacted(value: Any) -> Any:
    """A log field without credentials, at any depth (a list of errors, a dict of them)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _redacted(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(inner) for inner in value]
    if isinstance(value, BaseException):
        return redact(str(value))
    return redact(repr(value))


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for key, value in event.items():
        if key not in {"_record", "_from_structlog"}:
            event[key] = _redacted(value)
    return event


class _WithoutTraceback(logging.Filter):
    """Keeps a record, drops its traceback: botocore warns of a failed credential refresh
    with one, and the failure itself is what the operator needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


# Every line of this process, from structlog or the logging module, is written under this
# lock, newline included, in one write: a process that ends at once (os._exit) takes it
# first, so no other thread's line is left half-written for the next process's output
# to be glued to.
_WRITING = threading.RLock()


class _LineLogger:
    """structlog's PrintLogger, but a line and its newline are one write under
    ``_WRITING`` (``print`` writes them separately: a process ended in between left the
    line without its newline)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        with _WRITING:
            self._stream.write(message + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _LineLogger:
        return _LineLogger(self._stream)


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The logging module's lines under the same lock as structlog's."""

    def emit(self, record: logging.LogRecord) -> None:
        with _WRITING:
            super().emit(record)


def finish_lines(timeout_s: float = 2.0) -> bool:
    """Before ending the process with ``os._exit``: wait for a line being written to be
    complete, flush stderr and stdout's buffers, and hold the lock so no line starts.
    ``timeout_s`` bounds the wait for a writer stuck on a full pipe; False when it ran
    out (the buffers are flushed all the same)."""
    held = _WRITING.acquire(timeout=timeout_s)
    for stream in (sys.stderr, sys.stdout, *_REPORTS):
        if stream is None:  # closed when the process started
            continue
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return held


def bind_everywhere(**fields: Any) -> None:
    """Add fields to every log line of this process, whatever thread logs it."""
    _GLOBAL_FIELDS.update({k: v for k, v in fields.items() if v is not None})


def bound_fields() -> dict[str, Any]:
    """The fields ``bind_everywhere`` added (for lines written without structlog)."""
    return dict(_GLOBAL_FIELDS)


_AS_JSON = [True]
_CONFIGURED = [False]


def configured() -> bool:
    """Whether :func:`configure` has run in this process (log lines go to stderr)."""
    return _CONFIGURED[0]


def renders_json() -> bool:
    """Whether ``configure`` chose JSON lines (not console columns)."""
    return _AS_JSON[0]


def write_line(stream: IO[str], text: str) -> None:
    """A line written whole, like structlog's, for lines made without it (the KCL's)."""
    with _WRITING:
        stream.write(text + "\n")
        stream.flush()


# A printed line without its end is logged once it holds this many characters (a
# resolver printing progress dots would otherwise be held until the process ends).
PRINTED_LINE_MAX = 4096


class PrintedLines(io.TextIOBase):
    """``sys.stdout`` of a process whose log is JSON lines: what its code prints (a custom
    resolver's ``print()``, a library's) is logged, each line as an ``info`` line
    ``printed`` with its ``text``, whatever ``logging.level`` says (the text reached the
    log at every level before), so that every line of the log still parses on its own
    (printed raw, it went between the JSON lines). Each thread's line is its own (a
    ``print`` writes its text and its end in two calls)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines = threading.local()
        # Each thread's unended line, for flush_all; a thread gone with nothing left
        # unended is dropped as the next one registers (threads come and go for days).
        self._every_threads: list[tuple[threading.Thread, list[str]]] = []
        # Held by every use of the lines, so flush_all may log another thread's.
        self._lines_lock = threading.RLock()
        self._log = unfiltered("printed")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lines_lock:
            pieces: list[str] = self._pieces()
            *ended, rest = text.split("\n")
            for piece in ended:
                pieces.append(piece)
                self._emit(pieces)
            pieces.append(rest)
            if len(pieces) > 64:  # many small writes: kept as one piece
                pieces[:] = ["".join(pieces)]
            if sum(len(piece) for piece in pieces) >= PRINTED_LINE_MAX:
                self._emit(pieces)
        return len(text)

    def flush(self) -> None:
        with self._lines_lock:
            pieces = self._pieces()
            if any(pieces):
                self._emit(pieces)

    def fileno(self) -> int:
        """The stream's own (a child process handed ``sys.stdout`` writes there raw)."""
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def _pieces(self) -> list[str]:
        pieces: list[str] | None = getattr(self._lines, "pieces", None)
        if pieces is None:
            pieces = self._lines.pieces = []
            self._every_threads = [
                (thread, kept)
                for thread, kept in self._every_threads
                if thread.is_alive() or any(kept)
            ]
            self._every_threads.append((threading.current_thread(), pieces))
        return pieces

    def flush_all(self) -> None:
        """Every thread's line printed without its end, logged: as the process or the
        command ends, when a writer thread's ``print(..., end="")`` would otherwise be
        lost (a flush is the calling thread's)."""
        with self._lines_lock:
            for _, pieces in self._every_threads:
                if any(pieces):
                    self._emit(pieces)

    def _emit(self, pieces: list[str]) -> None:
        line = "".join(pieces)
        pieces.clear()
        self._log.info("printed", text=line)


# Streams code put in place of a stand-in's ``sys.stdout`` (``io.TextIOWrapper(
# sys.stdout.buffer, ...)``, a module's own encoding): they wrap stderr's buffer, and one
# dropped would close it as it is collected ("lost sys.stderr", every later line failing).
_REPLACED: list[object] = []


def _keep_if_replaced(stand_in: object) -> None:
    """Keep (flushed) the stream that replaced ``stand_in`` as ``sys.stdout``, if any."""
    if sys.stdout is not stand_in and sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        _REPLACED.append(sys.stdout)


class HeldPrints:
    """``sys.stdout`` while a job's custom resolvers are imported, before the job has said
    how to log: what a module prints as it is imported is held, and given out by
    :meth:`release` once the log is configured, as ``printed`` lines when it is JSON
    (printed then, it was the one raw line of a JSON log). If the job does not load, it
    goes to stderr as it was, before the job's error. What is written below the text
    (``sys.stdout.buffer``, its descriptor) goes to stderr at once, as under
    :func:`report_kept_apart`; a module that keeps this ``sys.stdout`` (a logging handler
    made on it) writes through it as through that command's, once released."""

    def __init__(self) -> None:
        self._held = _HeldText()
        self._out: TextIO | None = None

    def __enter__(self) -> HeldPrints:
        self._out = sys.stdout
        sys.stdout = self._held
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        _keep_if_replaced(self._held)
        sys.stdout = self._out  # what it was
        if error is not None:
            self.release()

    def release(self) -> None:
        self._held.release()


class _HeldText(_PrintsAside):
    """The stand-in of :class:`HeldPrints`: its text is held until released, then written
    as :class:`_PrintsAside` writes it."""

    def __init__(self) -> None:
        super().__init__()
        self._pieces: list[str] | None = []
        self._holding = threading.RLock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as a text stream does (click writes b"" to ask)
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._holding:
            if self._pieces is not None:
                self._pieces.append(text)
                return len(text)
        return super().write(text)

    def flush(self) -> None:
        if self._pieces is None:
            super().flush()

    def release(self) -> None:
        with self._holding:  # held: another thread's next line waits, and comes after
            text = "".join(self._pieces or [])
            self._pieces = None
            if text:
                super().write(text)
            self.flush_all()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    _AS_JSON[0] = not use_console
    _CONFIGURED[0] = True
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
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=_LineLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (botocore) go to stderr too, as the
    # same JSON lines (or columns), credentials redacted.
    handler = _LineHandler(stream)
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
    # botocore warns, with a traceback, when refreshing credentials fails (and goes on
    # with the old ones for a while): the warning stays, as one line.
    credentials = logging.getLogger("botocore.credentials")
    if not any(isinstance(f, _WithoutTraceback) for f in credentials.filters):
        credentials.addFilter(_WithoutTraceback())
