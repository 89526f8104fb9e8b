"""The job file's single values: what each key's value is checked for, on its own.

A region, a table or task name, a role ARN, a switch, a whole number, a path, a name
compared as text: each check says what is wrong in words that name the fix, and the
annotated types made of them (:data:`Bool`, :data:`Int`, :data:`Name`...) are what the
schema's sections (model.py) declare their keys with. :func:`shown` quotes a value as
every message about a job file does. Kept apart from the schema, so that it reads as
the list of keys and their defaults, and so that the checks across keys
(cross_checks.py) and of the KCL's properties (kcl_settings.py) judge a value by the
same rules and words.
"""

from __future__ import annotations

import decimal
import re
import string
from typing import Annotated, cast

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, ValidationInfo

from replicator.config.endpoints import holds_userinfo
from replicator.logs import redact

# Each pattern is the whole value, to its very end (\Z): ``$`` would also stop before a
# final newline, and take "us-east-1\n" as a region. Read them with fullmatch.
REGION_PATTERN = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d+\Z", re.ASCII)
TABLE_PATTERN = re.compile(r"[a-zA-Z0-9_.-]{3,255}\Z")
# IAM role names and the parts of their paths: letters, digits and + = , . @ _ -
# (role/NAME or role/PATH/NAME); a role name has at most 64 characters.
_IAM_NAME = r"[A-Za-z0-9+=,.@_-]"
ROLE_ARN_PATTERN = re.compile(
    rf"arn:aws[a-z-]*:iam::(?P<account>[0-9]{{12}}):role/(?:{_IAM_NAME}+/)*{_IAM_NAME}{{1,64}}\Z"
)
# arn:PARTITION:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL
DYNAMODB_STREAM_ARN_PATTERN = re.compile(
    r"arn:aws[a-z-]*:dynamodb:(?P<region>[^:\s]*):(?P<account>[^:\s]*)"
    r":table/(?P<table>[^/\s]+)/stream/[^/\s]+\Z"
)
# A Kinesis data stream's name, and its ARN: arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME
KINESIS_STREAM_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.-]{1,128}\Z")
KINESIS_STREAM_ARN_PATTERN = re.compile(
    r"arn:aws[a-z-]*:kinesis:[a-z]{2,4}(-[a-z]+)+-[0-9]+:[0-9]{12}:stream/(?P<name>[^:/]+)\Z"
)
TASK_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.-]{3,}\Z")


def pattern_problem(pattern: str, field: str) -> str | None:
    """What is wrong with ``pattern`` as a ``str.format`` pattern of ``{field}`` alone.

    ``format`` itself would also take ``{field.attr}``, ``{field[0]}``, ``{field!r}`` and
    ``{field:>9}``, which raise other errors or give text that differs between processes
    (``{task_name.upper}`` names a method object at its address)."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as error:
        return str(error)
    for _, name, spec, conversion in parsed:
        if name is not None and (name != field or spec or conversion):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return f"not {{{shown}}}"
    return None


# DynamoDB's longest table name.
MAX_TABLE_NAME = 255
# Tables named <task_name><suffix> beside the lease table (named the task itself), in the
# source's region unless said: the watermark status table (in each destination's region,
# replicator/watermark/table.py), a backfill's progress table
# (replicator/tools/backfill_state.py), and the two that KCL 3 creates for its
# applicationName (runtime kcl). Every suffix is of DynamoDB's table-name characters
# (letters, digits, _ . -), so that a task name of those characters names valid tables.
TASK_TABLE_SUFFIXES = ("-watermark", "-backfill", "-CoordinatorState", "-WorkerMetricStats")
# The longest task name whose every table fits in MAX_TABLE_NAME (the longest suffix decides:
# a job may move between runtimes, and keeps its task name when it does).
MAX_TASK_NAME = MAX_TABLE_NAME - max(len(suffix) for suffix in TASK_TABLE_SUFFIXES)
DOTTED_CALLABLE_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


# The longest text a message quotes whole: a longer one (a ${VAR} may hold a file's
# worth) is quoted by its start and its length.
SHOWN_CHARACTERS = 200


def shown(value: object) -> str:
    """A value as a message quotes it: whole, or the start of a long text and how long it
    is (a 5,000-character ``${VAR}`` would otherwise fill the screen, and hide the key the
    message names). Any other value as its repr, cut the same way."""
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARACTERS:
            return repr(value)
        return f"{value[:40]!r}… ({len(value):,} characters)"
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:40]}… ({len(text):,} characters)"


def shown_with_length(value: str) -> str:
    """:func:`shown`, with the length of a short text too (a long one's is given)."""
    if len(value) <= SHOWN_CHARACTERS:
        return f"{value!r} ({len(value)} characters)"
    return shown(value)


def _yes_or_no(value: object) -> object:
    """A switch is a YAML ``true``/``false``, or that word from a ``${VAR}`` expansion
    (which always gives text). pydantic alone would also take ``1``, ``"yes"`` or
    ``"on"``, so a number or a word meant for another key would silently turn a switch
    on or off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {shown(value)}")


def _not_a_switch(value: object) -> object:
    """A number is never a YAML ``true``/``false`` (which pydantic reads as 1 and 0):
    ``tombstone_retention_hours: true`` is a mistake, not one hour. Digits from a
    ``${VAR}`` expansion are still taken as the number, but not with ``_`` between them:
    YAML 1.2 reads ``1_000`` as text, which pydantic alone would take as 1000."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, str) and "_" in value:
        raise ValueError(
            f"expected a number, got {shown(value)}: a number is written without _ "
            f"(such as {value.replace('_', '')})"
        )
    return value


# A number as decimal text: digits with a point or an exponent (1e3, 1000.0, .5).
DECIMAL_PATTERN = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The largest power of ten read as a whole number from decimal text (a Java long's 19
# digits): past it, a message has no plain integer to suggest that any key takes.
_LARGEST_EXPONENT = 18


def whole_decimal(text: str) -> int | None:
    """The whole number that decimal text (``"1e3"``, ``"1000.0"``, quoted or from a
    ``${VAR}``) stands for, which a whole-number key cannot read as it is written.
    None for digits alone (which it reads), a fraction, or no number at all."""
    bare = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", bare) or not DECIMAL_PATTERN.fullmatch(bare):
        return None
    number = decimal.Decimal(bare)
    if number.adjusted() > _LARGEST_EXPONENT or number != number.to_integral_value():
        return None
    return int(number)


def _plain_integer_text(value: object) -> object:
    """A whole-number key takes YAML's number 1e3 as 1000, but text (quoted, or from a
    ``${VAR}``) only as digits: pydantic's own refusal of ``"1e3"`` ("unable to parse
    string as an integer") did not say what to write instead."""
    whole = whole_decimal(value) if isinstance(value, str) else None
    if whole is not None:
        raise ValueError(
            f"expected a whole number as a plain integer, got {shown(cast(str, value))}: "
            f"write {whole}"
        )
    return value


def _not_empty(value: str) -> str:
    """An empty value (``path: ""``, or a ``${VAR:-}`` that expanded to nothing) is never
    what an operator means: leaving the key out gives its default."""
    if not value.strip():
        raise ValueError(
            f"is empty ({shown(value)}): give a value, or leave the key out for its default"
        )
    return value


def _path_text(value: str) -> str:
    """A path: not empty, and without a NUL (a ``"\\0"`` in YAML), which no system call
    takes: every function given the path would raise instead of saying which key it is.
    A space at either end or a leading ``~`` is refused too: each is taken as written (a
    file whose name starts with a space, a directory named ``~`` in the working
    directory), which no one means and no log line shows."""
    _not_empty(value)
    if "\0" in value:
        raise ValueError(
            f"contains a NUL character ('\\x00'), which no file name can hold: got {shown(value)}"
        )
    if value != value.strip():
        crlf = " (an env file written with CRLF line ends gives a \\r)" if "\r" in value else ""
        raise ValueError(
            f"begins or ends with a space or other blank{crlf}: remove it, got {shown(value)}"
        )
    if value.startswith("~"):
        home = (
            "${HOME}" + value[1:] if value.startswith("~/") or value == "~" else "the home's path"
        )
        raise ValueError(
            "starts with ~, which is not expanded (a path is taken as written, relative "
            f"to the working directory): write {home} or an absolute path, got {shown(value)}"
        )
    return value


def _file_path(value: str) -> str:
    """A file pattern: a path (:func:`_path_text`), and not a directory
    (``dead-letters/``), which ``run`` would only find out when it opens it."""
    _path_text(value)
    if value.endswith("/"):
        raise ValueError(
            f"names a directory ({shown(value)}): name the file, such as {value}{{task_name}}.jsonl"
        )
    return value


def _plain(value: str) -> str:
    """A name or value compared as text (with the items' attributes and values, the
    ``--destination`` a command is given): DynamoDB takes almost any attribute name, but
    a control character (an env file's carriage return, a newline) or a space at either
    end is never meant, and would match nothing: an ``origin_value`` of ``"us-east-1\\r"``
    drops every put as another region's echo. A space inside (``updated at``) is taken."""
    odd = next((character for character in value if not character.isprintable()), None)
    if odd is not None:
        raise ValueError(
            f"contains {odd!r}, a control or invisible character (an env file written with "
            f"CRLF line ends gives a \\r): give printable characters only, got {shown(value)}"
        )
    if value != value.strip():
        raise ValueError(f"begins or ends with a space: remove it, got {shown(value)}")
    return value


def encodable(value: str) -> str:
    """Text the properties file can hold: a ``${VAR}`` holding a byte that is not UTF-8
    gives a lone surrogate (``'\\udcff'``), which no Java string or file encoding
    writes, so that rendering the file would fail once the job runs."""
    odd = next((character for character in value if "\ud800" <= character <= "\udfff"), None)
    if odd is not None:
        raise ValueError(
            f"contains {odd!r}, a byte that is not UTF-8 (from a ${{VAR}}), which the KCL "
            f"properties file cannot hold: give UTF-8 text, got {shown(value)}"
        )
    return value


def without_credentials(value: str) -> str:
    """The properties file is written to disk and printed (``replicator properties``),
    and credentials are never written: a value holding the secret key or session token
    of this environment (given as ``${AWS_SECRET_ACCESS_KEY}``, say) is refused. The
    KCL takes its credentials from its provider, the AWS default chain by default."""
    if redact(value) != value or holds_userinfo(value):
        raise ValueError(
            "holds a credential (the secret access key or session token of this "
            "environment, such as ${AWS_SECRET_ACCESS_KEY}, or text that reads as one: a "
            "password in a URL, a security token): the KCL properties file is written to "
            "disk and printed by 'replicator properties', and credentials are never "
            "written; the KCL takes them from AWSCredentialsProvider (the AWS default chain)"
        )
    return value


def check_name(value: str) -> str:
    """What a name compared as text (:data:`Name`, such as kcl.worker_id) is checked for,
    for the same value given outside the job file (``properties --worker-id``): a
    ValueError says what is wrong, as the job file's key says it."""
    return _plain(_not_empty(value))


Bool = Annotated[bool, BeforeValidator(_yes_or_no)]
Text = Annotated[str, AfterValidator(_not_empty)]
# A name or value compared as text: not empty, printable, no space at either end.
Name = Annotated[str, AfterValidator(check_name)]
FilePath = Annotated[str, AfterValidator(_file_path)]
# A file or directory the job names as it is (kcl.java, kcl.jars_dir).
PathText = Annotated[str, AfterValidator(_path_text)]
Int = Annotated[int, BeforeValidator(_not_a_switch), BeforeValidator(_plain_integer_text)]
# Infinity and NaN are no amount of time: a wait or deadline made of them fails (or never
# ends) only once the job runs.
Float = Annotated[float, BeforeValidator(_not_a_switch), AllowInfNan(False)]


def check_region(value: str) -> str:
    if not REGION_PATTERN.fullmatch(value):
        raise ValueError(f"expected an AWS region name such as us-east-1, got {shown(value)}")
    return value


def check_optional_region(value: str | None) -> str | None:
    return None if value is None else check_region(value)


def check_table(value: str) -> str:
    if not TABLE_PATTERN.fullmatch(value):
        raise ValueError(
            "expected a DynamoDB table name (3-255 characters of letters, digits, _ . -), "
            f"got {shown(value)}"
        )
    return value


# The partition of each region family that has one of its own, by the region's prefix.
_PARTITIONS = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"))


def _partition_of(region: str) -> str:
    return next((name for prefix, name in _PARTITIONS if region.startswith(prefix)), "aws")


def check_role(value: str | None, info: ValidationInfo) -> str | None:
    if value is not None and not ROLE_ARN_PATTERN.fullmatch(value):
        raise ValueError(
            "expected an IAM role ARN such as arn:aws:iam::123456789012:role/name, "
            f"got {shown(value)}"
        )
    region = info.data.get("region")
    if value is None or not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
        return value
    # STS of a region assumes only roles of its own partition (aws, aws-cn, aws-us-gov):
    # another one's is refused at run; other partitions (isolated regions) are not judged.
    partition, expected = value.split(":", 2)[1], _partition_of(region)
    known = {"aws", *(name for _, name in _PARTITIONS)}
    if partition != expected and partition in known:
        raise ValueError(
            f"is a role of partition {partition}, but region {region} is in partition "
            f"{expected}: a role is assumed in its own partition only (arn:{expected}:iam::"
            f"...), got {shown(value)}"
        )
    return value


# STS's rule for AssumeRole's ExternalId, which botocore checks only when the role is
# assumed (``run``: "Parameter validation failed", exit 3).
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}\Z", re.ASCII)


def check_external_id(value: str | None, info: ValidationInfo) -> str | None:
    """An external id is sent only when a role is assumed: without ``role_arn`` it would
    be ignored without a word, while its author believes the role's condition is met.
    (A role_arn that is itself invalid is reported on its own.)"""
    if value is not None and "role_arn" in info.data and info.data["role_arn"] is None:
        raise ValueError(
            "is sent only with role_arn, the role to assume, which is not set here: it "
            "would do nothing; set role_arn too, or remove external_id"
        )
    if value is not None and not _EXTERNAL_ID.fullmatch(value):
        raise ValueError(
            "expected an external id of 2 to 1224 characters of letters, digits and "
            f"_ + = , . @ : / - (STS's rule), got {shown_with_length(value)}"
        )
    return value
