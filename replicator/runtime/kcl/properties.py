"""The KCL properties file for a job, rendered from the templates in ``properties/``.

The task name becomes the KCL ``applicationName``, which the KCL uses as the lease
table's name; the executable is this package's record processor, run (by ``replicator
run``) with a copy of the job file's text as it was validated, in the run's private
directory, so that the daemon's children read exactly the job the operator validated,
whatever happens to the file afterwards (edited, or a Kubernetes ConfigMap's symlinks
swapped and the old directory removed).
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import site
import socket
import string
import sys
import sysconfig
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from replicator.config.cross_checks import kcl_setting_problem
from replicator.config.kcl_settings import kcl_property_name
from replicator.config.model import JobConfig, OnTrimmedData, ResolvedJob, StreamKind
from replicator.exceptions import KclUnavailable

TEMPLATE_ENV = "REPLICATOR_PROPERTIES_DIR"
# How much longer than the processors' flush and the failover time together a graceful
# stop may take. The two follow one another: a processor asked to stop answers within its
# flush timeout, then checkpoints; only then does the KCL run its own final shutdown,
# which lasts about the failover time (it waits for the leases it held to be given up).
SHUTDOWN_GRACE_MARGIN_MS = 10_000


def shutdown_grace_ms(job: JobConfig) -> int:
    """The daemon's shutdownGraceMillis: the processors' flush timeout
    (``kcl.shutdown_flush_ms``) + the failover time + 10 s, so that a processor stopping
    with a destination down still answers, and checkpoints, and the KCL's final shutdown
    still completes, before the daemon gives up."""
    return job.kcl.shutdown_flush_ms + job.kcl.failover_time_ms + SHUTDOWN_GRACE_MARGIN_MS


def template_file(kind: StreamKind) -> str:
    """The properties template a source kind is rendered from."""
    return "kinesis.properties" if kind is StreamKind.KINESIS else "dynamodb-streams.properties"


def templates_dir(kind: StreamKind = StreamKind.KINESIS) -> Path:
    """``$REPLICATOR_PROPERTIES_DIR``, else the repository's or the installed copy.

    A directory the variable names must hold the template ``kind`` is rendered from and
    ``logback.xml`` (the daemons' logging): it is never passed over for another one.
    """
    explicit = os.environ.get(TEMPLATE_ENV)
    if explicit:
        directory = Path(explicit)
        needed = [template_file(kind), "logback.xml"]
        if not directory.is_dir():
            raise KclUnavailable(
                f"${TEMPLATE_ENV}: {directory} is not a directory (it should hold "
                f"{' and '.join(needed)}); unset it to use the bundled templates"
            )
        missing = [name for name in needed if not (directory / name).is_file()]
        if missing:
            raise KclUnavailable(
                f"${TEMPLATE_ENV}: {directory} has no {' and no '.join(missing)}; copy the "
                "bundled ones (properties/ in the repository) there, or unset it"
            )
        return directory
    candidates = [Path(__file__).resolve().parents[3] / "properties"]
    # Where pip put the package's data files: sys.prefix for a virtualenv or an image;
    # the scheme's data path, which differs on distributions whose system pip installs
    # under /usr/local; the user base for `pip install --user`.
    data_roots = [sys.prefix, sysconfig.get_path("data"), site.getuserbase()]
    for scheme in ("posix_prefix", "posix_local", "posix_user"):
        if scheme in sysconfig.get_scheme_names():
            data_roots.append(sysconfig.get_path("data", scheme))
    for root in dict.fromkeys(data_roots):
        installed = Path(root) / "share" / "dynamodb-replicator" / "properties"
        if installed not in candidates:
            candidates.append(installed)
    for candidate in candidates:
        if (candidate / template_file(kind)).is_file():
            return candidate
    raise KclUnavailable(
        "cannot find the KCL properties templates (looked in "
        + ", ".join(str(c) for c in candidates)
        + f"); set {TEMPLATE_ENV}"
    )


# The names a template may use as ${name}, each filled in by _render.
PLACEHOLDERS = (
    "endpoint_lines",
    "executable",
    "extra_lines",
    "failover_time_ms",
    "idle_time_between_reads_ms",
    "initial_position",
    "job_file",
    "max_records",
    "region",
    "shutdown_grace_ms",
    "skip_records_behavior",
    "stream_line",
    "stream_name",
    "table",
    "task_name",
    "worker_id",
)


def template_text(kind: StreamKind) -> str:
    """The text of the template ``kind`` is rendered from, once its placeholders are
    known to be ours.

    A placeholder that is not (``${nosuch}``, ``$nosuch``, an unclosed ``${max_records``)
    would reach the KCL as it is written, as a value it reads without a word (or an
    unknown key it ignores): it is refused, naming the file, the line and the names there
    are. A ``$`` that opens no placeholder (``pa$5word``) is a ``$``, and ``$$`` writes
    one anywhere. Comments are not read by the KCL: what is in them is left as written.
    """
    where = _template_where(kind)
    path = templates_dir(kind) / template_file(kind)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise KclUnavailable(
            f"{where}: not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    except OSError as error:
        raise KclUnavailable(f"{where}: cannot be read: {error.strerror or error}") from None
    problem = _placeholder_problem(text)
    if problem is not None:
        line, what = problem
        names = ", ".join(f"${{{name}}}" for name in PLACEHOLDERS)
        raise KclUnavailable(
            f"{where}, line {line}: {what}; a template's placeholders are {names} ($$ writes a $)"
        )
    line_problem = _line_placeholder_problem(text)
    if line_problem is not None:
        at, what = line_problem
        raise KclUnavailable(f"{where}{'' if at is None else f', line {at}'}: {what}")
    return text


def _template_where(kind: StreamKind) -> str:
    """The template ``kind`` is rendered from, as messages name it."""
    path = templates_dir(kind) / template_file(kind)
    return f"${TEMPLATE_ENV}: {path}" if os.environ.get(TEMPLATE_ENV) else str(path)


def _placeholder_problem(text: str) -> tuple[int, str] | None:
    """The first placeholder outside a comment that :data:`PLACEHOLDERS` does not name,
    as (its line, what is wrong); None if there is none. Placeholders are found as
    :class:`string.Template` finds them, which then fills them in."""
    lines = _natural_lines(text)
    starts = list(itertools.accumulate((len(line) for line in lines), initial=0))
    in_properties = {
        index for entry in _entries(lines) for index in range(entry.first, entry.last + 1)
    }
    for match in Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if match.group("escaped") is not None or name in PLACEHOLDERS:
            continue
        if name is None and not text.startswith("{", match.end()):
            continue  # a $ that opens nothing
        index = bisect.bisect_right(starts, match.start()) - 1
        if index not in in_properties:
            continue
        if name is not None:
            return index + 1, f"unknown placeholder {match.group()}"
        rest = lines[index][match.start() - starts[index] :].rstrip("\r\n")
        close = rest.find("}")
        written = rest[: close + 1] if close >= 0 else rest
        return index + 1, (
            f"{written[:60]!r} is no placeholder (${{ opens one, closed by }} after a name "
            "of letters, digits and underscores)"
        )
    return None


# The placeholders that write whole properties, each on a line of its own, with what they
# write. Every template must have both, at the start of a line, whatever the job sets:
# without one, what it writes would be left out without a word (a job's endpoint_url
# dropped, and the daemon reading AWS itself), and a template of one's own that lacks one
# is refused the first time it is read, not only once a job sets what it would drop.
LINE_PLACEHOLDERS = {
    "endpoint_lines": "kinesisEndpoint and dynamoDBEndpoint for source.endpoint_url",
    "extra_lines": "kcl.extra_properties",
}
_LINE_PLACEHOLDER_RUN = re.compile(
    r"[ \t\f]*(?:"  # the blanks Properties.load skips
    + "|".join(rf"\$\{{{name}\}}|\${name}(?![_a-zA-Z0-9])" for name in LINE_PLACEHOLDERS)
    + ")*"
)


def _line_placeholder_problem(text: str) -> tuple[int | None, str] | None:
    """The first of :data:`LINE_PLACEHOLDERS` that ``text`` lacks outside its comments, or
    that does not begin a line there (after blanks, or after the other one), as (its line,
    or None if it lacks one; what is wrong); None if both are where they work."""
    lines = _natural_lines(text)
    starts = list(itertools.accumulate((len(line) for line in lines), initial=0))
    entries = _entries(lines)
    firsts = {entry.first for entry in entries}
    in_properties = {index for entry in entries for index in range(entry.first, entry.last + 1)}
    found: set[str] = set()
    for match in Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name not in LINE_PLACEHOLDERS:
            continue
        index = bisect.bisect_right(starts, match.start()) - 1
        if index not in in_properties:
            continue  # in a comment, which the KCL does not read
        before = lines[index][: match.start() - starts[index]]
        if index not in firsts or not _LINE_PLACEHOLDER_RUN.fullmatch(before):
            return index + 1, (
                f"{match.group()} does not begin a line: it writes whole properties "
                f"({LINE_PLACEHOLDERS[name]}), which would become part of another's value; "
                "end the template with ${endpoint_lines}${extra_lines}, as the bundled ones do"
            )
        found.add(name)
    for name, written in LINE_PLACEHOLDERS.items():
        if name not in found:
            return None, (
                f"no ${{{name}}} outside a comment: the replicator writes {written} there, "
                "and would leave them out without a word; end the template with "
                "${endpoint_lines}${extra_lines}, as the bundled ones do"
            )
    return None


def processor_executable(job_file: Path) -> str:
    """The processor's command line as executableName: the daemon splits it on spaces and
    runs the parts directly (no shell, so no quoting), passing each through the JVM's
    file-name encoding. Paths with whitespace, control characters or non-ASCII
    characters cannot pass intact, and are refused."""
    parts = [sys.executable, "-m", "replicator", "processor", "--config", str(job_file)]
    for part in parts:
        if any(c.isspace() for c in part):
            raise KclUnavailable(
                f"the KCL cannot run a processor from a path with whitespace: {part!r} "
                "(it splits its command on spaces); move the job file, Python or $TMPDIR to a path "
                "without any"
            )
        if not (part.isascii() and part.isprintable()):
            raise KclUnavailable(
                f"the KCL cannot run a processor from a path with control or non-ASCII "
                f"characters: {part!r} (the JVM may not pass them intact); move the job file, "
                "Python or $TMPDIR to a plain ASCII path"
            )
    return " ".join(parts)


def escape_key(text: str) -> str:
    """``text`` as a java.util.Properties key: read back exactly by Properties.load."""
    return _escape(text, key=True)


def escape_value(text: str) -> str:
    """``text`` as a java.util.Properties value (after ``key = ``), read back exactly."""
    return _escape(text, key=False)


def property_line(key: str, value: str) -> str:
    return f"{escape_key(key)} = {escape_value(value)}\n"


_CONTROL_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}


def _escape(text: str, *, key: bool) -> str:
    """Properties.load reads ISO-8859-1 with backslash escapes: a backslash, line breaks,
    tabs and form feeds are escaped everywhere; spaces and ``= : # !`` in a key (where
    they would end it or start a comment); a leading space in a value (else trimmed);
    anything outside printable ASCII as ``\\uXXXX`` (UTF-16, as Java strings are). A
    lone surrogate (a byte that is not UTF-8 in a path) is written as the one UTF-16 unit
    it is: the job file refuses one in any value (replicator/config/fields.py), but the
    job file's own path, in a comment, may hold one."""
    out = []
    for index, char in enumerate(text):
        code = ord(char)
        if char in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[char])
        elif char == " " and (key or index == 0):
            out.append("\\ ")
        elif key and char in "=:#!":
            out.append("\\" + char)
        elif code < 0x20 or code > 0x7E:
            units = char.encode("utf-16-be", "surrogatepass")
            for at in range(0, len(units), 2):
                out.append(f"\\u{int.from_bytes(units[at : at + 2], 'big'):04X}")
        else:
            out.append(char)
    return "".join(out)


def render_properties(
    resolved: ResolvedJob,
    *,
    worker_id: str | None = None,
    stream_arn: str | None = None,
    job_copy: Path | None = None,
) -> str:
    """The properties file; the processors read ``job_copy`` (``replicator run``'s copy
    of the job file) when given, else the job file itself."""
    job = resolved.job
    return _render(
        job,
        job_file=str(resolved.path),
        executable=processor_executable(job_copy or resolved.path.resolve()),
        task_name=resolved.task_name,
        worker_id=worker_id or job.kcl.worker_id or socket.gethostname(),
        stream_arn=stream_arn or job.source.stream.arn,
        extra=job.kcl.extra_properties,
    )


def rendered_settings(job: JobConfig) -> tuple[Path, dict[str, str]]:
    """The template a job is rendered from, and the properties the rendered file sets
    whatever ``kcl.extra_properties`` hold: each under the name the KCL reads it by
    (:func:`kcl_property_name`), with the key as written. The file is rendered as
    ``replicator run`` renders it (a DynamoDB stream's ARN, which it looks up, written);
    the names, paths and ids it fills in do not change which keys it has. The defaults
    the template marks replaceable are left out."""
    kind = job.source.stream.kind
    template = templates_dir(kind) / template_file(kind)
    settings = {
        kcl_property_name(entry.key): entry.key
        for entry in _entries(_natural_lines(_render_as_run(job, extra_lines=False)))
        if not entry.default
    }
    return template, settings


def check_template(job: JobConfig) -> None:
    """Refuse what rendering the job's properties would refuse (a placeholder that is not
    ours, a value the KCL cannot work with), before ``replicator run``'s AWS checks: their
    waits would only delay a refusal that comes after them all the same."""
    _render_as_run(job, extra_lines=True)


_STAND_IN_STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/looked-up"


def _render_as_run(job: JobConfig, *, extra_lines: bool) -> str:
    """The file as ``replicator run`` renders it (a DynamoDB stream's ARN, which it looks
    up, written), but for the names, paths and ids it fills in, which change no key."""
    return _render(
        job,
        job_file="-",
        executable="-",
        task_name="-",
        worker_id="-",
        stream_arn=job.source.stream.arn or _STAND_IN_STREAM_ARN,
        extra=job.kcl.extra_properties,
        extra_lines=extra_lines,
    )


def _render(
    job: JobConfig,
    *,
    job_file: str,
    executable: str,
    task_name: str,
    worker_id: str,
    stream_arn: str | None,
    extra: Mapping[str, str],
    extra_lines: bool = True,
) -> str:
    """The template filled in for ``job``, with ``extra`` written at ``${extra_lines}``
    (unless ``extra_lines`` is false) and the defaults they replace made comments."""
    source = job.source
    text = template_text(source.stream.kind)
    endpoint_lines = ""
    if source.endpoint_url:
        endpoint_lines = property_line("kinesisEndpoint", source.endpoint_url) + property_line(
            "dynamoDBEndpoint", source.endpoint_url
        )
    values = {
        "job_file": escape_value(job_file),
        "executable": escape_value(executable),
        "stream_name": escape_value(job.source.stream.kinesis_name),
        "stream_line": (
            property_line("dynamoDBStreamArn", stream_arn).rstrip("\n")
            if stream_arn
            else f"# dynamoDBStreamArn: the latest stream of table {source.table}, "
            "looked up by `replicator run`"
        ),
        "table": escape_value(source.table),
        "task_name": escape_value(task_name),
        "region": escape_value(source.region),
        "worker_id": escape_value(worker_id),
        "initial_position": job.kcl.initial_position.value,
        "max_records": str(job.kcl.max_records),
        "idle_time_between_reads_ms": str(job.kcl.idle_time_between_reads_ms),
        "failover_time_ms": str(job.kcl.failover_time_ms),
        "shutdown_grace_ms": str(shutdown_grace_ms(job)),
        "skip_records_behavior": (
            "SKIP_RECORDS_TO_TRIM_HORIZON"
            if source.on_trimmed_data is OnTrimmedData.RESTART_FROM_TRIM_HORIZON
            else "KCL_RETRY"
        ),
        "endpoint_lines": endpoint_lines,
        "extra_lines": "",
    }
    replaced = {kcl_property_name(key) for key in extra}
    _check_template_settings(job, text, values, replaced)
    if extra_lines:
        values["extra_lines"] = "".join(property_line(key, value) for key, value in extra.items())
    rendered = Template(text).safe_substitute(values)
    return _replace_defaults(rendered, replaced)


def _check_template_settings(
    job: JobConfig, text: str, values: Mapping[str, str], replaced: Collection[str]
) -> None:
    """Refuse a value the template sets, once filled in, that kcl.extra_properties may
    not hold (a negative count, a number the KCL reads as 0 without a word): the KCL
    would fail at start-up, again and again, or drop it silently. Each property of the
    template is filled in on its own, so that the message names the template's line; a
    default that an extra property replaces is not checked, being written as a comment."""
    lines = _natural_lines(text)
    where = _template_where(job.source.stream.kind)
    first_lines: dict[str, int] = {}
    for entry in _entries(lines):
        name = kcl_property_name(entry.key)
        if entry.default and name in replaced:
            continue
        if name in first_lines:
            # java.util.Properties keeps the last value without a word: which one the
            # template's author meant is not for the worker to guess.
            raise KclUnavailable(
                f"{where}, line {entry.first + 1}: {name} is set again (first at line "
                f"{first_lines[name]}); the KCL would take the last value without a word: "
                "set it once"
            )
        first_lines[name] = entry.first + 1
        filled = Template("".join(lines[entry.first : entry.last + 1])).safe_substitute(values)
        for setting in _entries(_natural_lines(filled)):
            problem = kcl_setting_problem(job, setting.key, setting.value)
            if problem is not None:
                raise KclUnavailable(f"{where}, line {entry.first + 1}: {setting.key}: {problem}")


# -- reading the rendered file back: which keys it sets, and where -------------------------

# A comment line (``# @default: ...``) before a property in a template: kcl.extra_properties
# may replace it, and the rendered file then has the template's line as a comment.
DEFAULT_MARK = "@default"
_NATURAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_BLANKS = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass(frozen=True)
class _Entry:
    key: str
    value: str
    first: int  # its first natural line
    last: int  # its last (a value continued with a backslash spans several)
    default: bool  # marked replaceable by DEFAULT_MARK


def _natural_lines(text: str) -> list[str]:
    """``text`` split as java.util.Properties splits it (\\n, \\r or \\r\\n), ends kept."""
    return _NATURAL_LINE.findall(text)


def _entries(lines: list[str]) -> list[_Entry]:
    """The properties of a file, read as java.util.Properties.load reads them: blank and
    comment lines skipped (a comment is never continued), a line ending in an odd number
    of backslashes continued on the next, the key up to the first unescaped ``=``, ``:``
    or blank."""
    entries: list[_Entry] = []
    marked = False
    index = 0
    while index < len(lines):
        body = lines[index].rstrip("\r\n").lstrip(_BLANKS)
        if not body or body[0] in "#!":
            marked = marked or body[1:].strip().startswith(DEFAULT_MARK)
            index += 1
            continue
        first = index
        logical = body
        while _continued(logical) and index + 1 < len(lines):
            index += 1
            logical = logical[:-1] + lines[index].rstrip("\r\n").lstrip(_BLANKS)
        entries.append(_Entry(*_split(logical), first, index, marked))
        marked = False
        index += 1
    return entries


def _continued(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _split(line: str) -> tuple[str, str]:
    """A logical line's key and value, unescaped, as Properties.load splits them: the
    key ends at the first unescaped ``=``, ``:`` or blank; blanks, one ``=`` or ``:``,
    and blanks again separate it from the value."""
    end = 0
    escaped = False
    while end < len(line):
        char = line[end]
        if not escaped and (char in "=:" or char in _BLANKS):
            break
        escaped = char == "\\" and not escaped
        end += 1
    start = end
    separated = False
    while start < len(line) and (line[start] in _BLANKS or line[start] in "=:"):
        if line[start] in "=:":
            if separated:
                break
            separated = True
        start += 1
    return _unescape(line[:end]), _unescape(line[start:])


def _unescape(text: str) -> str:
    units: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            index += 1
            char = text[index]
            code = text[index + 1 : index + 5]
            if char == "u" and len(code) == 4 and all(c in string.hexdigits for c in code):
                units.append(chr(int(code, 16)))
                index += 4
            else:
                units.append(_ESCAPES.get(char, char))
        elif char != "\\":
            units.append(char)
        index += 1
    return "".join(units).encode("utf-16", "surrogatepass").decode("utf-16")


def _replace_defaults(text: str, replaced: Collection[str]) -> str:
    """``text`` with each marked default that an extra property replaces (by the KCL's
    name for it) turned into a comment, so that the file sets every property once: the
    KCL would otherwise take whichever of two AWSCredentialsProvider casings it meets
    last, and a reader would see two values."""
    if not replaced:
        return text
    lines = _natural_lines(text)
    for entry in _entries(lines):
        if entry.default and kcl_property_name(entry.key) in replaced:
            for index in range(entry.first, entry.last + 1):
                lines[index] = "# replaced by kcl.extra_properties: " + lines[index]
    return "".join(lines)
