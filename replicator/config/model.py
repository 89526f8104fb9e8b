"""The job file's schema: one replication job, validated once at start-up.

Every key that a job file may hold is declared here, with its default, so that the
README's configuration reference and the validator cannot drift apart. Unknown keys
are errors: a misspelt ``timestamp_atribute`` must not silently fall back to a default.
"""

from __future__ import annotations

import decimal
import difflib
import functools
import math
import os
import re
import string
from collections.abc import Callable, Collection
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from replicator.config.endpoints import check_endpoint, endpoint_identity, quoted, userinfo_problem
from replicator.hosts import host_problem, unbracketed
from replicator.logs import redact

# How long a processor asked to stop (shutdownRequested) waits for its writes in flight
# before it checkpoints what was applied (a destination that is down holds them back),
# unless kcl.shutdown_flush_ms is shorter.
PROCESSOR_FLUSH_TIMEOUT_MS = 20_000
# After its flush, the most a processor asked to stop waits for the watermark's last
# publish and for its dead-letter ranges and unread spans to be stored (one budget for
# both) before it checkpoints, or gives up the checkpoint.
PROCESSOR_STOP_WATERMARK_S = 2.0


def processor_stop_s(shutdown_flush_ms: int) -> float:
    """How long a processor takes at most to answer ``shutdownRequested`` (its flush,
    then the watermark's budget) before the checkpoint it asks for: the runtimes' stop
    limits are set above it."""
    return shutdown_flush_ms / 1000 + PROCESSOR_STOP_WATERMARK_S


# Each pattern is the whole value, to its very end (\Z): ``$`` would also stop before a
# final newline, and take "us-east-1\n" as a region. Read them with fullmatch.
_REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d+\Z", re.ASCII)
_TABLE = re.compile(r"[a-zA-Z0-9_.-]{3,255}\Z")
# IAM role names and the parts of their paths: letters, digits and + = , . @ _ -
# (role/NAME or role/PATH/NAME); a role name has at most 64 characters.
_IAM_NAME = r"[A-Za-z0-9+=,.@_-]"
_ROLE_ARN = re.compile(
    rf"arn:aws[a-z-]*:iam::(?P<account>[0-9]{{12}}):role/(?:{_IAM_NAME}+/)*{_IAM_NAME}{{1,64}}\Z"
)
# arn:PARTITION:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL
_DYNAMODB_STREAM_ARN = re.compile(
    r"arn:aws[a-z-]*:dynamodb:(?P<region>[^:\s]*):(?P<account>[^:\s]*)"
    r":table/(?P<table>[^/\s]+)/stream/[^/\s]+\Z"
)
# A Kinesis data stream's name, and its ARN: arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME
_KINESIS_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}\Z")
_KINESIS_STREAM_ARN = re.compile(
    r"arn:aws[a-z-]*:kinesis:[a-z]{2,4}(-[a-z]+)+-[0-9]+:[0-9]{12}:stream/(?P<name>[^:/]+)\Z"
)
_TASK_NAME = re.compile(r"[a-zA-Z0-9_.-]{3,}\Z")


def _pattern_problem(pattern: str, field: str) -> str | None:
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
# KCL properties that point the KCL's clients at an endpoint other than AWS's.
KCL_ENDPOINT_KEYS = ("kinesisEndpoint", "dynamoDBEndpoint")
_DOTTED_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


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
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The largest power of ten read as a whole number from decimal text (a Java long's 19
# digits): past it, a message has no plain integer to suggest that any key takes.
_LARGEST_EXPONENT = 18


def _whole_decimal(text: str) -> int | None:
    """The whole number that decimal text (``"1e3"``, ``"1000.0"``, quoted or from a
    ``${VAR}``) stands for, which a whole-number key cannot read as it is written.
    None for digits alone (which it reads), a fraction, or no number at all."""
    bare = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", bare) or not _DECIMAL.fullmatch(bare):
        return None
    number = decimal.Decimal(bare)
    if number.adjusted() > _LARGEST_EXPONENT or number != number.to_integral_value():
        return None
    return int(number)


def _plain_integer_text(value: object) -> object:
    """A whole-number key takes YAML's number 1e3 as 1000, but text (quoted, or from a
    ``${VAR}``) only as digits: pydantic's own refusal of ``"1e3"`` ("unable to parse
    string as an integer") did not say what to write instead."""
    whole = _whole_decimal(value) if isinstance(value, str) else None
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
    takes: every function given the path would raise instead of saying which key it is."""
    _not_empty(value)
    if "\0" in value:
        raise ValueError(
            f"contains a NUL character ('\\x00'), which no file name can hold: got {shown(value)}"
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


def _encodable(value: str) -> str:
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


def _no_credentials(value: str) -> str:
    """The properties file is written to disk and printed (``replicator properties``),
    and credentials are never written: a value holding the secret key or session token
    of this environment (given as ``${AWS_SECRET_ACCESS_KEY}``, say) is refused. The
    KCL takes its credentials from its provider, the AWS default chain by default."""
    if redact(value) != value:
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


# Upper bounds of the job's times and counts: each far above any sane setting, and far
# below what a wait (threading.TIMEOUT_MAX), a socket timeout or the KCL's Java long
# could take, so that a mistyped value is refused by `validate` instead of failing the
# run (an OverflowError) or printing a property the KCL cannot read.
MAX_RETRY_DELAY_MS = 600_000
MAX_REQUEST_TIMEOUT_S = 600
# A stream keeps a change for 24 hours: a limit beyond that means nothing.
ONE_DAY_S = 86_400


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_region(value: str) -> str:
    if not _REGION.fullmatch(value):
        raise ValueError(f"expected an AWS region name such as us-east-1, got {shown(value)}")
    return value


def _check_optional_region(value: str | None) -> str | None:
    return None if value is None else _check_region(value)


def _check_table(value: str) -> str:
    if not _TABLE.fullmatch(value):
        raise ValueError(
            "expected a DynamoDB table name (3-255 characters of letters, digits, _ . -), "
            f"got {shown(value)}"
        )
    return value


# The partition of each region family that has one of its own, by the region's prefix.
_PARTITIONS = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"))


def _partition_of(region: str) -> str:
    return next((name for prefix, name in _PARTITIONS if region.startswith(prefix)), "aws")


def _check_role(value: str | None, info: ValidationInfo) -> str | None:
    if value is not None and not _ROLE_ARN.fullmatch(value):
        raise ValueError(
            "expected an IAM role ARN such as arn:aws:iam::123456789012:role/name, "
            f"got {shown(value)}"
        )
    region = info.data.get("region")
    if value is None or not isinstance(region, str) or not _REGION.fullmatch(region):
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


def _check_external_id(value: str | None, info: ValidationInfo) -> str | None:
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


class RuntimeKind(StrEnum):
    LOCAL = "local"
    KCL = "kcl"


class StreamKind(StrEnum):
    DYNAMODB_STREAMS = "dynamodb-streams"
    KINESIS = "kinesis"


class ConflictPolicyName(StrEnum):
    OVERWRITE = "overwrite"
    LAST_WRITER_WINS = "last_writer_wins"
    VERSION = "version"
    CUSTOM = "custom"


_ORDERED = (ConflictPolicyName.LAST_WRITER_WINS, ConflictPolicyName.VERSION)
# The active-active source writer's label is this prefix and the source's <region>/<table>.
SOURCE_LABEL_PREFIX = "source:"


class TtlDeletes(StrEnum):
    REPLICATE = "replicate"
    SKIP = "skip"


class OnTrimmedData(StrEnum):
    FAIL = "fail"
    RESTART_FROM_TRIM_HORIZON = "restart_from_trim_horizon"


class InitialPosition(StrEnum):
    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"


class StreamConfig(Strict):
    """Which change stream carries the source table's changes."""

    kind: StreamKind = StreamKind.DYNAMODB_STREAMS
    arn: Annotated[Text, AfterValidator(_encodable)] | None = Field(
        default=None,
        description="DynamoDB stream ARN or Kinesis stream ARN; default: the table's latest "
        "DynamoDB stream (dynamodb-streams only).",
    )
    name: Text | None = Field(default=None, description="Kinesis stream name (kinesis only).")

    @field_validator("name")
    @classmethod
    def _kinesis_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The KCL would be handed any text as its streamName and fail on AWS's answer."""
        if value is None or info.data.get("kind") is not StreamKind.KINESIS:
            return value
        if not _KINESIS_STREAM_NAME.fullmatch(value):
            raise ValueError(
                "expected a Kinesis data stream name (1-128 characters of letters, digits, "
                f"_ . -), got {shown(value)}"
            )
        arn = info.data.get("arn")
        if arn is not None and arn.rsplit(":stream/", 1)[-1] != value:
            # The KCL would read the stream by this name and the ARN would be ignored.
            raise ValueError(
                f"is {shown(value)}, but source.stream.arn names the stream "
                f"{arn.rsplit(':stream/', 1)[-1]!r}: give one of them (or the same stream in "
                "both)"
            )
        return value

    @field_validator("arn")
    @classmethod
    def _kinesis_arn(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The KCL takes the stream's name out of the ARN: text that is not a Kinesis
        stream ARN would be read as a stream name (a DynamoDB stream ARN is checked
        against the source table by _stream_arn_checks)."""
        if value is None or info.data.get("kind") is not StreamKind.KINESIS:
            return value
        match = _KINESIS_STREAM_ARN.fullmatch(value)
        if match is None or not _KINESIS_STREAM_NAME.fullmatch(match["name"]):
            hint = (
                "; it is a DynamoDB stream's ARN: for a DynamoDB stream set "
                "source.stream.kind: dynamodb-streams (the default)"
                if _DYNAMODB_STREAM_ARN.fullmatch(value)
                else ""
            )
            raise ValueError(
                "expected a Kinesis data stream ARN such as arn:aws:kinesis:us-east-1:"
                f"123456789012:stream/NAME{hint}, got {shown(value)}"
            )
        return value

    @model_validator(mode="after")
    def _kinesis_needs_a_stream(self) -> Self:
        if self.kind is StreamKind.KINESIS and not (self.arn or self.name):
            raise ValueError("a kinesis stream needs 'name' or 'arn'")
        if self.kind is StreamKind.DYNAMODB_STREAMS and self.name:
            raise ValueError("'name' is for kinesis streams; a DynamoDB stream is named by 'arn'")
        return self

    @property
    def kinesis_name(self) -> str:
        """The Kinesis data stream's name, which is what the KCL reads (in source.region,
        with the host's account): ``name``, else the name in ``arn``."""
        return self.name or (self.arn or "").rsplit(":stream/", 1)[-1]


class SourceConfig(Strict):
    region: str
    table: str
    endpoint_url: str | None = None
    role_arn: str | None = None
    external_id: Text | None = None
    stream: StreamConfig = StreamConfig()
    on_trimmed_data: OnTrimmedData = OnTrimmedData.FAIL

    _region = field_validator("region")(_check_region)
    _table = field_validator("table")(_check_table)
    _role = field_validator("role_arn")(_check_role)
    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _external_id = field_validator("external_id")(_check_external_id)


# The setting each policy decides by (overwrite reads none).
_DECIDED_BY = {
    ConflictPolicyName.LAST_WRITER_WINS: "timestamp_attribute",
    ConflictPolicyName.VERSION: "version_attribute",
    ConflictPolicyName.CUSTOM: "resolver",
}


def _other_policys(setting: str, policy: str, value: str | None) -> str:
    """What to say of ``setting``, another policy's attribute, given where the policy's
    own is missing: a policy changed without renaming its attribute."""
    if value is None:
        return ""
    return f" ({setting}: {value!r} is the {policy} policy's: rename it, or set policy: {policy})"


class ConflictConfig(Strict):
    """How a change and the item already at a destination are reconciled."""

    policy: ConflictPolicyName = ConflictPolicyName.OVERWRITE
    timestamp_attribute: Name | None = None
    version_attribute: Name | None = None
    resolver: Text | None = Field(
        default=None, description="module.path:function for the custom policy."
    )
    max_attempts: Annotated[Int, Field(ge=1, le=100)] = 10

    @property
    def ranked_by(self) -> str | None:
        """The attribute (or function) the policy decides by; None for overwrite."""
        setting = _DECIDED_BY.get(self.policy)
        return None if setting is None else cast("str | None", getattr(self, setting))

    @model_validator(mode="after")
    def _policy_needs_its_attribute(self) -> Self:
        if self.policy is ConflictPolicyName.LAST_WRITER_WINS and not self.timestamp_attribute:
            raise ValueError(
                "policy last_writer_wins needs 'timestamp_attribute'"
                + _other_policys("version_attribute", "version", self.version_attribute)
            )
        if self.policy is ConflictPolicyName.VERSION and not self.version_attribute:
            raise ValueError(
                "policy version needs 'version_attribute'"
                + _other_policys(
                    "timestamp_attribute", "last_writer_wins", self.timestamp_attribute
                )
            )
        if self.policy is ConflictPolicyName.CUSTOM and not self.resolver:
            raise ValueError("policy custom needs 'resolver' (module.path:function)")
        return self

    @field_validator("resolver")
    @classmethod
    def _resolver_is_dotted(cls, value: str | None) -> str | None:
        """At the key itself (the problem is named ``conflict.resolver``, as an import
        that fails is)."""
        if value is not None and not _DOTTED_CALLABLE.fullmatch(value):
            raise ValueError(f"must look like module.path:function, got {shown(value)}")
        return value


class DestinationConfig(Strict):
    region: str
    table: str
    name: Name | None = Field(
        default=None, description="Label in metrics and logs; default '<region>/<table>'."
    )
    endpoint_url: str | None = None
    role_arn: str | None = None
    external_id: Text | None = None
    conflict: ConflictConfig | None = Field(
        default=None, description="Overrides the job's conflict section for this destination."
    )

    _region = field_validator("region")(_check_region)
    _table = field_validator("table")(_check_table)
    _role = field_validator("role_arn")(_check_role)
    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _external_id = field_validator("external_id")(_check_external_id)

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(SOURCE_LABEL_PREFIX):
            raise ValueError(
                f"names starting with {SOURCE_LABEL_PREFIX!r} are reserved for the writer of "
                f"the job's own source table (active-active), got {shown(value)}"
            )
        return value

    @property
    def label(self) -> str:
        return self.name or f"{self.region}/{self.table}"


class LoopPreventionConfig(Strict):
    origin_attribute: Name | None = None
    origin_value: Name | None = Field(
        default=None,
        description="The value the source's application stamps; default: source.region.",
    )


class ActiveActiveConfig(Strict):
    """What makes a mesh of jobs (one per region) converge on one image per item.

    ``write_back``: when a replicated write loses to an item that ranks above it, that
    item is written to the source too, and a local write that ranks below the item it
    replaced is corrected in the source. ``tombstones``: every delete is kept, with its
    rank, in a small table beside each region's table, so that a put ranking below a
    delete never brings the item back. See docs/active-active.md.
    """

    write_back: Bool | None = Field(
        default=None,
        description="Default: on when loop_prevention.origin_attribute is set and the "
        "policy is last_writer_wins or version.",
    )
    tombstones: Bool = False
    tombstone_table: str = Field(
        default="{table}-tombstones",
        description="Name of each region's tombstone table; {table} is that region's table.",
    )
    tombstone_retention_hours: Annotated[Int, Field(ge=1, le=87_600)] = 168

    @field_validator("tombstone_table")
    @classmethod
    def _table_pattern(cls, value: str) -> str:
        if "{table}" not in value:
            raise ValueError(
                f"tombstone_table must contain {{table}}, so that every table has its own "
                f"tombstone table beside it, got {shown(value)}"
            )
        problem = _pattern_problem(value, "table")
        if problem:
            raise ValueError(f"tombstone_table may use only {{table}}: {shown(value)} ({problem})")
        return value  # the names it gives the job's tables: cross_checks


class RetryConfig(Strict):
    base_delay_ms: Annotated[Int, Field(ge=1, le=MAX_RETRY_DELAY_MS)] = 50
    max_delay_ms: Annotated[Int, Field(ge=1, le=MAX_RETRY_DELAY_MS)] = 20_000

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_delay_ms < self.base_delay_ms:
            raise ValueError("max_delay_ms must be >= base_delay_ms")
        return self


class WriterConfig(Strict):
    max_in_flight: Annotated[Int, Field(ge=1, le=1024)] = 512
    # A buffered change of a 1 KB item (both images) holds about 20 KB of Python objects,
    # and a shard read behind its tip keeps the buffer full: 2,000 (plus the batch that
    # arrives on top) is about 140 MB per shard process and two seconds of writes at
    # 1,000 changes/s, far more than max_in_flight needs to stay busy.
    # 100,000 is some 7 GB per shard process.
    max_buffered_changes: Annotated[Int, Field(ge=1, le=100_000)] = 2_000
    retry: RetryConfig = RetryConfig()
    access_denied_limit: Annotated[Int, Field(ge=1, le=10_000)] = 20
    connect_timeout_s: Annotated[Float, Field(gt=0, le=MAX_REQUEST_TIMEOUT_S)] = 5.0
    read_timeout_s: Annotated[Float, Field(gt=0, le=MAX_REQUEST_TIMEOUT_S)] = 10.0
    # After a write without a condition (overwrite's) got no answer, the
    # item's next write waits until this long after it was sent (docs/reliability.md).
    late_write_window_s: Annotated[Float, Field(ge=0, le=MAX_REQUEST_TIMEOUT_S)] = 30.0
    # PutItem/DeleteItem are sent over DynamoDB's JSON protocol directly (writers/wire.py),
    # which halves their CPU; true sends them through botocore's full request pipeline.
    send_with_botocore: Bool = False


class DeadLetterKind(StrEnum):
    FILE = "file"
    SQS = "sqs"


class DeadLetterConfig(Strict):
    """Where changes that no retry can apply are kept, so that nothing is lost."""

    kind: DeadLetterKind = DeadLetterKind.FILE
    path: FilePath = "dead-letters/{task_name}.jsonl"
    queue_url: Text | None = None
    region: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None

    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _role = field_validator("role_arn")(_check_role)
    _region = field_validator("region")(_check_optional_region)

    @model_validator(mode="after")
    def _sqs_needs_a_queue(self) -> Self:
        if self.kind is DeadLetterKind.SQS and not self.queue_url:
            raise ValueError(
                "a dead-letter queue of kind sqs needs 'queue_url'"
                + _foreign_options(self, _DEAD_LETTER_OPTIONS)
            )
        return self


class ConflictLogKind(StrEnum):
    NONE = "none"
    FILE = "file"
    SQS = "sqs"
    DYNAMODB = "dynamodb"


class ConflictLogConfig(Strict):
    """Where every lost conflict is recorded, so that a lost update can be found and restored.

    A change that lost is checkpointed once its entry is stored (see
    replicator/conflictlog/recorder.py); an entry that cannot be stored within
    ``retry_for_s`` is counted as dropped and its change passed, so the log holds
    replication back for that long at most. ``max_pending`` bounds the entries waiting
    while the log is failing.
    """

    kind: ConflictLogKind = ConflictLogKind.NONE
    path: FilePath = "conflicts/{task_name}.jsonl"
    table: Text = Field(
        default="{task_name}-conflicts",
        description="dynamodb: the table, created in the source region when missing.",
    )
    retention_days: Annotated[Int, Field(ge=1, le=3650)] = 30
    queue_url: Text | None = None
    region: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    max_pending: Annotated[Int, Field(ge=1, le=1_000_000)] = 1000
    retry_for_s: Annotated[Float, Field(gt=0, le=ONE_DAY_S)] = 60.0

    _role = field_validator("role_arn")(_check_role)
    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _region = field_validator("region")(_check_optional_region)

    @model_validator(mode="after")
    def _sqs_needs_a_queue(self) -> Self:
        if self.kind is ConflictLogKind.SQS and not self.queue_url:
            raise ValueError(
                "a conflict log of kind sqs needs 'queue_url'"
                + _foreign_options(self, _CONFLICT_LOG_OPTIONS)
            )
        return self


# What to set instead of a KCL property that the rendered properties file writes from the
# job, for the message that refuses it in kcl.extra_properties (a second value there
# would silently replace the job's). Which properties are refused is read from the
# templates themselves (replicator/runtime/kcl/properties.py: rendered_settings); one
# missing here and from KCL_FIXED_PROPERTIES is refused all the same, with a message
# naming the template.
KCL_PROPERTY_SETTINGS = {
    "applicationName": "task_name (the KCL application and lease table)",
    "streamName": "source.stream.name (kinesis) or source.table",
    "streamArn": "source.stream.arn",
    "dynamoDBStreamArn": "source.stream.arn",
    "regionName": "source.region",
    "workerId": "kcl.worker_id",
    "initialPositionInStream": (
        "kcl.initial_position (new leases start only at TRIM_HORIZON or LATEST)"
    ),
    "maxRecords": "kcl.max_records",
    "idleTimeBetweenReadsInMillis": "kcl.idle_time_between_reads_ms",
    "failoverTimeMillis": "kcl.failover_time_ms",
    "shutdownGraceMillis": (
        "kcl.failover_time_ms and kcl.shutdown_flush_ms (the graceful-stop time is the "
        "processors' flush + the failover time + 10 s)"
    ),
    "skipRecordsBehavior": "source.on_trimmed_data",
    "kinesisEndpoint": "source.endpoint_url",
    "dynamoDBEndpoint": "source.endpoint_url",
    # The stock daemon would name the lease table after it, the DynamoDB Streams launcher
    # would not: one job file would mean two lease tables.
    "tableName": "task_name (the KCL application and lease table)",
}
# Why a KCL property the templates write, that no job setting changes, must stay as written.
KCL_FIXED_PROPERTIES = {
    "executableName": "the replicator runs its own processor with this job file",
    "processingLanguage": "the processor is the replicator's own, in Python",
    "callProcessRecordsEvenForEmptyRecordList": (
        "the processors need the empty reads to checkpoint writes that finish later and to "
        "publish the watermark"
    ),
    "retrievalMode": "the replicator reads by polling (no enhanced fan-out)",
}
# Properties no template writes that would still contradict the job: refused whatever the
# templates say (streamArn would replace a Kinesis source's streamName).
CONTRADICTING_KCL_PROPERTIES = frozenset({"tableName", "streamArn"})

# The numeric KCL multilang properties (the setters of int, long and double of KCL 3.1's
# MultiLangDaemonConfiguration and its beans): the KCL reads a value that is not a number
# as 0 without a word (maxLeasesForWorker: lots would run uncapped). None of the whole
# numbers may be negative. Those the templates write from the job (maxRecords...) are
# here too: a template of one's own may write them otherwise.
KCL_INTEGER_PROPERTIES = frozenset(
    {
        "failoverTimeMillis",
        "idleTimeBetweenReadsInMillis",
        "maxRecords",
        "shutdownGraceMillis",
        "coordinatorStateReadCapacity",
        "coordinatorStateWriteCapacity",
        "dampeningPercentage",
        "gracefulLeaseHandoffTimeoutMillis",
        "inMemoryWorkerMetricsCaptureFrequencyMillis",
        "initialLeaseTableReadCapacity",
        "initialLeaseTableWriteCapacity",
        "leaseAssignmentIntervalMillis",
        "listShardsBackoffTimeInMillis",
        "logWarningForTaskAfterMillis",
        "maxDescribeStreamConsumerRetries",
        "maxDescribeStreamSummaryRetries",
        "maxGetRecordsThreadPool",
        "maxLeaseRenewalThreads",
        "maxLeasesForWorker",
        "maxLeasesToStealAtOneTime",
        "maxListShardsRetryAttempts",
        "metricsBufferTimeMillis",
        "metricsMaxQueueSize",
        "millisBehindLatestThresholdForReducedTps",
        "noOfPersistedMetricsPerWorkerMetrics",
        "parentShardPollIntervalMillis",
        "reBalanceThresholdPercentage",
        "registerStreamConsumerRetries",
        "retryBackoffMillis",
        "retryGetRecordsInSeconds",
        "schedulerInitializationBackoffTimeMillis",
        "shardSyncIntervalMillis",
        "taskBackoffTimeMillis",
        "timeoutInSeconds",
        "varianceBalancingFrequency",
        "workerMetricsReadCapacity",
        "workerMetricsReporterFreqInMillis",
        "workerMetricsWriteCapacity",
    }
)
KCL_DECIMAL_PROPERTIES = frozenset({"maxThroughputPerHostKBps", "workerMetricsEMAAlpha"})
# The KCL multilang properties whose value names a constant of a Java enum: KCL 3.1's
# converters upper-case it but do not trim it, so blanks around it fail the KCL's start
# ("No enum constant ...MetricsLevel. NONE "). kcl.extra_properties holds them trimmed, as
# they are checked; a template that writes one with blanks at its end (which
# java.util.Properties keeps) is refused.
# The KCL's constants for each property it reads as one of them (KCL 3.1's
# MultiLangDaemonConfiguration: upper-cased, then Enum.valueOf; an unknown name ends the
# daemon's start with "No enum constant", exit 1, a crash loop under a restart policy).
# The SDK's BillingMode also has UNKNOWN_TO_SDK_VERSION, which creates no table.
KCL_ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "clientVersionConfig": (
        "CLIENT_VERSION_CONFIG_3X",
        "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
    ),
    "coordinatorStateBillingMode": ("PAY_PER_REQUEST", "PROVISIONED"),
    "initialPositionInStream": ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
    "metricsLevel": ("NONE", "SUMMARY", "DETAILED"),
    "retrievalMode": ("DEFAULT", "FANOUT", "POLLING"),
    "workerMetricsBillingMode": ("PAY_PER_REQUEST", "PROVISIONED"),
}
KCL_ENUM_PROPERTIES = frozenset(KCL_ENUM_VALUES)
_JAVA_LONG = 2**63
# AWSCredentialsProvider (and its DynamoDB and CloudWatch variants, whose keys the KCL
# matches case-insensitively): providers separated by commas, each a Java class name
# (short, as in DefaultCredentialsProvider, or fully qualified) with optional
# |-separated arguments.
_JAVA_CLASS = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")
CREDENTIALS_PROVIDER_KEY = "awscredentialsprovider"


def kcl_property_name(key: str) -> str:
    """The property the KCL sets for ``key``: the key itself (Java properties, and the
    KCL's bean properties, are case-sensitive), but an AWSCredentialsProvider* key is
    matched whatever its case (KCL 3's KinesisClientLibConfigurator.processKey rewrites
    every casing of that word the same way)."""
    if _CREDENTIALS_PROVIDER_WORD.match(key):
        return _CREDENTIALS_PROVIDER_WORD.sub("awsCredentialsProvider", key)
    return key


_CREDENTIALS_PROVIDER_WORD = re.compile(CREDENTIALS_PROVIDER_KEY, re.IGNORECASE | re.ASCII)


def credentials_provider_names(value: str) -> list[str]:
    """The class names an AWSCredentialsProvider value lists, without arguments."""
    elements = (element.strip() for element in value.split(","))
    return [element.split("|", 1)[0].strip() for element in elements if element]


def _credentials_provider_problem(value: str) -> str | None:
    names = credentials_provider_names(value)
    bad = [name for name in names if not _JAVA_CLASS.fullmatch(name)]
    if names and not bad:
        return None
    return (
        f"{shown(value)} does not name a credentials provider: expected the class name of an "
        "AWS SDK for Java v2 provider (for example DefaultCredentialsProvider, or a fully "
        "qualified class), optionally with |-separated arguments, several separated by "
        "commas" + (f" ({bad[0]!r} is not a class name)" if bad else "")
    )


_UNREAD = "the KCL takes it without a word, and does not use it"
# The most digits of a Java long (9223372036854775807), leading zeros aside.
_JAVA_LONG_DIGITS = 19


# KCL 3.1's multilang properties it reads as booleans (MultiLangDaemonConfiguration's
# setters of a boolean): a word other than true or false is read as false, or as the
# default, without a word ("maybe", "enabled", "1").
KCL_BOOLEAN_PROPERTIES = frozenset(
    {
        "allowThroughputOvershoot",
        "callProcessRecordsEvenForEmptyRecordList",
        "cleanupLeasesUponShardCompletion",
        "coordinatorStateDeletionProtectionEnabled",
        "coordinatorStatePointInTimeRecoveryEnabled",
        "disableWorkerMetrics",
        "enablePriorityLeaseAssignment",
        "ignoreUnexpectedChildShards",
        "isGracefulLeaseHandoffEnabled",
        "leaseTableDeletionProtectionEnabled",
        "leaseTablePitrEnabled",
        "skipShardSyncAtWorkerInitializationIfLeasesExist",
        "validateSequenceNumberBeforeCheckpointing",
        "workerMetricsDeletionProtectionEnabled",
        "workerMetricsPointInTimeRecoveryEnabled",
    }
)


# Every property KCL 3.1's MultiLangDaemon reads (the setters of its multilang
# configuration and of the beans it reads into, executableName, processingLanguage and
# maxActiveThreads), and those the DynamoDB Streams launcher reads besides: the KCL takes
# any other key without a word and uses it for nothing (a misspelt maxLeaseForWorker).
KCL_KNOWN_PROPERTIES = (
    KCL_INTEGER_PROPERTIES
    | KCL_DECIMAL_PROPERTIES
    | KCL_ENUM_PROPERTIES
    | KCL_BOOLEAN_PROPERTIES
    | frozenset(
        {
            "applicationName",
            "awsCredentialsProvider",
            "awsCredentialsProviderCloudWatch",
            "awsCredentialsProviderDynamoDB",
            "consumerArn",
            "consumerName",
            "coordinatorStateTableName",
            "coordinatorStateTags",
            "dynamoDBEndpoint",
            "dynamoDBStreamArn",
            "executableName",
            "initialPositionInStreamExtended",
            "kinesisEndpoint",
            "maxActiveThreads",
            "metricsEnabledDimensions",
            "processingLanguage",
            "regionName",
            "shardPrioritization",
            "skipRecordsBehavior",
            "staleWorkerMetricsEntryCleanupDuration",
            "streamArn",
            "streamName",
            "tableName",
            "workerId",
            "workerIdentifier",
            "workerMetricsTableName",
            "workerMetricsTags",
        }
    )
)


def unknown_kcl_property_caution(key: str) -> str | None:
    """What ``validate`` says of a key of kcl.extra_properties that the KCL does not read
    (a caution, not an error: jars of a later KCL in kcl.jars_dir may read it)."""
    name = kcl_property_name(key)
    # A dotted key sets a property of one of the configuration's beans (the KCL applies
    # kinesisClient.endpointOverride, say): not judged.
    if name in KCL_KNOWN_PROPERTIES or "." in name:
        return None
    close = difflib.get_close_matches(name, sorted(KCL_KNOWN_PROPERTIES), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"kcl.extra_properties.{key} is not a property KCL 3.1's MultiLangDaemon reads: "
        f"the KCL takes it without a word and uses it for nothing{hint}"
    )


def _numeric_property_problem(key: str, value: str) -> str | None:
    text = value.strip()
    if key in KCL_BOOLEAN_PROPERTIES and text.lower() not in ("true", "false"):
        return (
            f"{shown(value)} is not true or false: the KCL would read it as false, or its "
            "default, without a word"
        )
    if key in KCL_INTEGER_PROPERTIES:
        # Python turns no text of more than 4,300 digits into an integer: the digits are
        # counted before they are read.
        if not (
            re.fullmatch(r"[+-]?[0-9]+", text)
            and len(text.lstrip("+-").lstrip("0")) <= _JAVA_LONG_DIGITS
            and -_JAVA_LONG <= int(text) < _JAVA_LONG
        ):
            whole = _whole_decimal(text)
            if whole is not None:
                return (
                    f"{shown(value)} is not a plain integer, the only form the KCL reads "
                    f"here ({_UNREAD}): write {whole}"
                )
            return f"{shown(value)} is not a whole number that a Java long holds ({_UNREAD})"
        if int(text) < 0:
            # Each is a count, a size, a percentage or a time: the KCL takes a negative
            # one and its scheduler throws at start-up (leaseAssignmentIntervalMillis), or
            # it runs with a nonsense bound.
            return f"{shown(value)} is negative: it is a count, a size or a time, 0 or more"
        return None
    if key in KCL_DECIMAL_PROPERTIES:
        if not _DECIMAL.fullmatch(text):
            return f"{shown(value)} is not a number ({_UNREAD})"
        if not math.isfinite(float(text)):
            return f"{shown(value)} is beyond the largest number the KCL reads (a Java double)"
    return None


def _unreserved_property(key: str) -> str:
    if key in CONTRADICTING_KCL_PROPERTIES:
        raise ValueError(f"is written from the job file, set {KCL_PROPERTY_SETTINGS[key]} instead")
    if not key:
        raise ValueError("a property needs a name")
    return key


# Booleans of YAML 1.1 that a job file reads as text (only true and false are booleans):
# the KCL's Java reads anything but "true" as false, so "yes" would turn an option off.
_TEXT_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})


def _property_text(value: object) -> object:
    """YAML's plain integers, numbers and booleans, as the KCL reads them: text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip().lower() in _TEXT_BOOLEANS:
        raise ValueError(
            f"{shown(value)} is not a boolean the KCL reads (it reads anything but true as "
            "false): write true or false"
        )
    return value


# The context key under which JobConfig tells KclConfig the source's stream kind.
STREAM_KIND_CONTEXT = "stream_kind"
_TIMES = "use TRIM_HORIZON (the oldest record the stream holds) or LATEST"
# Why kcl.initial_position cannot be AT_TIMESTAMP, by the source's stream kind (None: the
# source is invalid, its kind unknown).
_START_TIME_REFUSALS: dict[StreamKind | None, str] = {
    StreamKind.DYNAMODB_STREAMS: (
        "AT_TIMESTAMP is not supported: a DynamoDB stream has no shard iterator at a time "
        "(the DynamoDB Streams Kinesis Adapter that runtime kcl reads it through starts new "
        f"leases only at TRIM_HORIZON or LATEST); {_TIMES}"
    ),
    StreamKind.KINESIS: (
        "AT_TIMESTAMP is not supported for a kinesis source: the KCL starts a lease at a "
        "time only when given that time (its initialPositionInStreamExtended), and the job "
        f"file has no key for it; {_TIMES}"
    ),
    None: (
        "AT_TIMESTAMP is not supported: a DynamoDB stream has no shard iterator at a time, "
        f"and for a kinesis source the job file has no key for the time; {_TIMES}"
    ),
}


class KclConfig(Strict):
    initial_position: InitialPosition = InitialPosition.TRIM_HORIZON
    max_records: Annotated[Int, Field(ge=1, le=10_000)] = 1000
    idle_time_between_reads_ms: Annotated[Int, Field(ge=0, le=600_000)] = 500
    # The KCL's graceful stop waits shutdown_flush_ms + this + 10 s (shutdownGraceMillis).
    failover_time_ms: Annotated[Int, Field(ge=1000, le=3_600_000)] = 60_000
    # How long a processor asked to stop waits for its writes in flight before it
    # checkpoints what every destination settled. At most the default: the local
    # runtime's stop deadlines are set for it, and a shorter one fits a stop into a
    # platform's grace period (the KCL's stop takes this + the failover time + 10 s).
    shutdown_flush_ms: Annotated[Int, Field(ge=1000, le=PROCESSOR_FLUSH_TIMEOUT_MS)] = (
        PROCESSOR_FLUSH_TIMEOUT_MS
    )
    worker_id: Name | None = None
    java: PathText = "java"
    jars_dir: PathText | None = Field(
        default=None, description="Directory of KCL jars; default $REPLICATOR_KCL_JARS."
    )
    extra_properties: dict[
        Annotated[str, AfterValidator(_unreserved_property), AfterValidator(_encodable)],
        Annotated[
            str,
            BeforeValidator(_property_text),
            AfterValidator(_encodable),
            AfterValidator(_no_credentials),
        ],
    ] = Field(default_factory=dict)

    @field_validator("extra_properties", mode="before")
    @classmethod
    def _whole_numbers(cls, value: object) -> object:
        """YAML's number 1e3 for a whole-number property is 1000, as the job's own
        whole-number keys take it: written as the float it is read as, ``1000.0``, the
        KCL could not read it."""
        if not isinstance(value, dict):
            return value
        return {
            key: int(item)
            if isinstance(key, str)
            and key in KCL_INTEGER_PROPERTIES
            and isinstance(item, float)
            and item.is_integer()
            and abs(item) < _JAVA_LONG
            else item
            for key, item in value.items()
        }

    @field_validator("extra_properties")
    @classmethod
    def _enum_names_trimmed(cls, value: dict[str, str]) -> dict[str, str]:
        """The name of an enum constant is written as it is checked, without the blanks
        around it, which the KCL would take as part of it (:data:`KCL_ENUM_PROPERTIES`)."""
        return {
            key: item.strip() if key in KCL_ENUM_PROPERTIES else item for key, item in value.items()
        }

    @field_validator("initial_position", mode="before")
    @classmethod
    def _no_start_time(cls, value: object, info: ValidationInfo) -> object:
        """Why not depends on the source's stream kind, which JobConfig passes in the
        context (none when the source itself is invalid)."""
        if isinstance(value, str) and value.strip().upper() == "AT_TIMESTAMP":
            kind = (info.context or {}).get(STREAM_KIND_CONTEXT)
            raise ValueError(_START_TIME_REFUSALS[kind])
        return value


_LISTEN_ON = (
    "0.0.0.0 (every IPv4 address), :: (every address), 127.0.0.1 or ::1 (this host "
    "only), or one of its addresses or host names"
)


class MetricsConfig(Strict):
    enabled: Bool = True
    host: str = "0.0.0.0"  # noqa: S104  # a container must be scrapeable from outside
    port: Annotated[Int, Field(ge=0, le=65535)] = 9400
    stall_after_s: Annotated[Float, Field(gt=0, le=ONE_DAY_S)] = 300.0

    @field_validator("host")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        """An empty host would listen on every IPv4 address while the logs and the
        health probe show ``http://:9400``: the operator must say which address. A host
        is checked as an endpoint's is, without a look-up: ``0.0.0.0:9400`` or
        ``999.1.1.1`` would fail only when ``run`` binds it (exit 3)."""
        if not value.strip():
            raise ValueError(f"must name the address to listen on: {_LISTEN_ON}")
        bare = unbracketed(value)
        problem = host_problem(bare)
        if problem:
            raise ValueError(
                f"expected the address to listen on, without a port (that is metrics.port): "
                f"{_LISTEN_ON}: {problem}"
            )
        return bare


class WatermarkConfig(Strict):
    """The replication watermark each shard's processor publishes per destination."""

    enabled: Bool = True
    # At most one status write per shard and destination per interval (and none while the
    # shard's part has not changed): 86,400 writes a day per shard and destination at 1 s.
    publish_interval_ms: Annotated[Int, Field(ge=50, le=600_000)] = 1_000
    # How much earlier than an empty read a caught-up shard claims: the time a stream
    # record may take to become readable after its write, plus clock differences between
    # the application, DynamoDB and the replicator's hosts.
    caught_up_margin_ms: Annotated[Int, Field(ge=0, le=600_000)] = 1_000


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: LogFormat = LogFormat.AUTO


class JobConfig(Strict):
    """One replication job: one source table, one or more destinations."""

    runtime: RuntimeKind = RuntimeKind.LOCAL
    task_name: str | None = None
    source: SourceConfig
    destinations: Annotated[list[DestinationConfig], Field(min_length=1)]
    conflict: ConflictConfig = ConflictConfig()
    loop_prevention: LoopPreventionConfig = LoopPreventionConfig()
    ttl_deletes: TtlDeletes = TtlDeletes.REPLICATE
    writer: WriterConfig = WriterConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    conflict_log: ConflictLogConfig = ConflictLogConfig()
    active_active: ActiveActiveConfig = ActiveActiveConfig()
    kcl: KclConfig = KclConfig()
    metrics: MetricsConfig = MetricsConfig()
    watermark: WatermarkConfig = WatermarkConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("kcl", mode="wrap")
    @classmethod
    def _kcl_for_the_source(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> object:
        """The kcl section is validated knowing the source's stream kind (when the source
        is valid): what it may hold, and why not, depends on it."""
        source = info.data.get("source")
        if isinstance(value, dict) and isinstance(source, SourceConfig):
            context = {**(info.context or {}), STREAM_KIND_CONTEXT: source.stream.kind}
            return KclConfig.model_validate(value, context=context)
        return handler(value)

    @field_validator("task_name")
    @classmethod
    def _task_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _TASK_NAME.fullmatch(value):
            # Both rules in one message: a short name of good characters ("sA") must not
            # be told its characters are wrong.
            raise ValueError(
                "names the lease table and the tables beside it: at least 3 characters, "
                "letters, digits, _ . - only (DynamoDB's table-name rules), got "
                f"{shown_with_length(value)}"
            )
        if len(value) > MAX_TASK_NAME:
            longest = max(TASK_TABLE_SUFFIXES, key=len)
            raise ValueError(
                f"may have at most {MAX_TASK_NAME} characters (it has {len(value)}): "
                f"it names tables such as <task_name>{longest}, and a DynamoDB table name has "
                f"at most {MAX_TABLE_NAME}"
            )
        return value

    def kcl_endpoint_override(self) -> bool:
        """True when the KCL talks to an endpoint other than AWS's (a local emulator)."""
        extra = self.kcl.extra_properties
        return bool(self.source.endpoint_url) or any(key in extra for key in KCL_ENDPOINT_KEYS)

    def conflict_for(self, destination: DestinationConfig) -> ConflictConfig:
        return destination.conflict or self.conflict

    @property
    def origin_value(self) -> str:
        return self.loop_prevention.origin_value or self.source.region

    @property
    def conflict_sections(self) -> list[tuple[tuple[str | int, ...], ConflictConfig]]:
        """The job's conflict section and each destination's own, by key path."""
        return [(("conflict",), self.conflict)] + [
            (("destinations", index, "conflict"), destination.conflict)
            for index, destination in enumerate(self.destinations)
            if destination.conflict is not None
        ]

    @property
    def conflict_settings(self) -> list[tuple[str, ConflictConfig]]:
        """The job's conflict section and each destination's own, with where each is."""
        return [("conflict", self.conflict)] + [
            (f"destinations[{index}].conflict", destination.conflict)
            for index, destination in enumerate(self.destinations)
            if destination.conflict is not None
        ]

    @property
    def origin_value_caution(self) -> str | None:
        """An ``origin_value`` that looks mistyped: the job takes every put stamped
        otherwise for another region's echo and skips it, so a typo replicates none of
        its region's writes, without an error (``wait`` even says they arrived)."""
        loop = self.loop_prevention
        origin, region = loop.origin_value, self.source.region
        if not loop.origin_attribute or origin is None or origin == region:
            return None
        skipped = (
            f"loop_prevention.origin_value {origin!r} is not the source table's region "
            f"{region!r}: the job skips every put not stamped {origin!r} in "
            f"{loop.origin_attribute} as another region's echo"
        )
        if origin in {d.region for d in self.destinations}:
            return (
                f"{skipped}, and {origin!r} is a destination's region: its writes, echoed "
                "back, would be replicated while this region's are skipped. Set it to the "
                "value this region's applications stamp"
            )
        # A value that starts with the region is one of its own (two tables of one
        # region need two: us-east-1b); one close to it otherwise is likely a typo.
        if not origin.startswith(region) and (
            difflib.SequenceMatcher(None, origin, region).ratio() >= 0.8
        ):
            return (
                f"{skipped}; if this region's applications stamp {region!r}, none of their "
                f"writes is replicated. Did you mean {region!r} (or leave origin_value out)?"
            )
        return None

    @property
    def cautions(self) -> list[str]:
        """Settings that are valid but rarely what an operator means: ``validate`` prints
        them and ``run`` logs them as warnings at start."""
        cautions = []
        if self.loop_prevention.origin_attribute and not self.ordered_everywhere:
            policies = {self.conflict_for(d).policy for d in self.destinations}
            unordered = sorted(
                p.value for p in policies | {self.conflict.policy} if p not in _ORDERED
            )
            cautions.append(
                f"loop_prevention with the {' and '.join(unordered)} policy: an item written "
                "in two regions at nearly the same time can end with each region holding the "
                "other's image, for good (that policy gives the regions no order to agree "
                "on). For an active-active pair use last_writer_wins or version, which converge"
            )
        if (
            self.loop_prevention.origin_attribute
            and self.ordered_everywhere
            and not self.ranks_alike
            and self.active_active.write_back is None
        ):
            index, destination = self.ranked_otherwise[0]
            cautions.append(
                f"destinations[{index}] ranks items by "
                f"{_described(self.conflict_for(destination))} but the job by "
                f"{_described(self.conflict)}, so active-active write-back is off (it "
                "compares ranks across regions): a conflict lost at that destination is not "
                "written back to the source, and the two regions can end holding different "
                "images. For an active-active pair, rank every destination like the job"
            )
        if self.loop_prevention.origin_attribute and self.ordered_everywhere:
            caution = self.untombstoned_deletes_caution
            if caution:
                cautions.append(caution)
        caution = self.origin_value_caution
        if caution:
            cautions.append(caution)
        if self.task_name is None:
            cautions.append(self.derived_task_name_caution)
        for key in self.kcl.extra_properties:
            caution = unknown_kcl_property_caution(key)
            if caution:
                cautions.append(caution)
        return cautions

    @property
    def untombstoned_deletes_caution(self) -> str | None:
        """What an ordered active-active job without tombstones cannot settle: nothing
        records a delete, so a put ranking below it that lands after it (another region's
        concurrent put, replicated or written back late) is taken for a new item in one
        region while the other has already dropped it. No region can tell that late put
        from a re-creation, so the regions can stay different; only tombstones close it
        (docs/active-active.md). None with tombstones on."""
        if self.active_active.tombstones:
            return None
        fix = "set active_active.tombstones: true"
        if self.active_active.write_back is False:
            fix += " and remove active_active.write_back: false (tombstones need write-back)"
        if not self.ranks_alike:
            fix += " and rank every destination like the job (tombstones compare ranks)"
        return (
            "active_active.tombstones is off, and this job replicates deletes: a put racing a "
            "delete of the same item in another region (both regions writing it at once, "
            "then one deleting it) can leave the regions holding different items for good "
            "(one holds the other's put, the other holds no item), as no region keeps a "
            "record of the delete. 'replicator verify' finds such differences and "
            f"'verify --repair' settles them; to close the race, {fix} "
            "(docs/active-active.md)"
        )

    @property
    def derived_task_name_caution(self) -> str:
        """What a derived task name means when the destinations change, and how to pin it."""
        from replicator.config.task_name import default_task_name

        return (
            "task_name is derived from the source and every destination, so adding or "
            "removing a destination moves the job to a new lease table, where it starts "
            f"over at kcl.initial_position ({self.kcl.initial_position.value}: "
            + (
                "changes made while it was stopped are lost for every destination"
                if self.kcl.initial_position is InitialPosition.LATEST
                else "up to 24 hours of changes are replayed to every destination"
            )
            + "), and to new files named after it ({task_name} in dead_letter.path or "
            "conflict_log.path: the letters stored before stay in the old dead-letter file, "
            "which redrive names but does not read; see 'The task name' in "
            "docs/configuration.md). To keep this lease table and these files, "
            f"add this line to the job file: task_name: {default_task_name(self)}"
        )

    @property
    def ordered_everywhere(self) -> bool:
        """Whether the job and every destination use last_writer_wins or version."""
        return all(self.conflict_for(d).policy in _ORDERED for d in self.destinations) and (
            self.conflict.policy in _ORDERED
        )

    @property
    def ranks_alike(self) -> bool:
        """Whether every destination ranks items by the job's own policy and attribute
        (write-back and tombstones compare ranks across regions)."""
        return not self.ranked_otherwise

    @property
    def ranked_otherwise(self) -> list[tuple[int, DestinationConfig]]:
        """The destinations (with their index) that rank items otherwise than the job."""
        job_ranking = _ranking(self.conflict)
        return [
            (index, destination)
            for index, destination in enumerate(self.destinations)
            if _ranking(self.conflict_for(destination)) != job_ranking
        ]

    @property
    def writes_back(self) -> bool:
        """Whether lost conflicts are written back and stale local writes corrected."""
        chosen = self.active_active.write_back
        if chosen is not None:
            return chosen
        return (
            bool(self.loop_prevention.origin_attribute)
            and self.ordered_everywhere
            and self.ranks_alike
        )

    def tombstone_table(self, table: str) -> str:
        """The tombstone table beside the user table ``table`` (in its region)."""
        return self.active_active.tombstone_table.format(table=table)


class ResolvedJob(BaseModel):
    """A validated job plus what is derived from it (task name, file location)."""

    model_config = ConfigDict(frozen=True)

    job: JobConfig
    path: Path
    task_name: str
    # The file's text as it was read and validated (``replicator run`` under the KCL hands
    # its processors a copy of it, whatever happens to the file afterwards).
    text: str | None = Field(default=None, repr=False)

    @property
    def lease_table(self) -> str:
        return self.task_name

    @property
    def watermark_table(self) -> str:
        """The status table, one per task, in each destination's region (and account)."""
        return f"{self.task_name}-watermark"

    @property
    def publishes_watermark(self) -> bool:
        """Only a DynamoDB stream keeps a shard's records in the order the table made them,
        which the watermark relies on (see replicator/watermark/tracker.py)."""
        return (
            self.job.watermark.enabled
            and self.job.source.stream.kind is StreamKind.DYNAMODB_STREAMS
        )

    def dead_letter_path(self) -> Path:
        path = Path(self.job.dead_letter.path.format(task_name=self.task_name))
        return path


Problems = list[tuple[tuple[str | int, ...], str]]


def cross_checks(
    job: JobConfig, invalid: Collection[str] = (), job_file: Path | None = None
) -> Problems:
    """Rules that span sections, each reported at the key path it concerns.

    ``invalid`` names the top-level keys that failed their own validation (and stand at
    their defaults in ``job``): the checks that read one of them are skipped, since they
    would judge a default, and every other check runs, so that a bad ``metrics.port``
    does not hide a bad ``dead_letter.path``. ``job_file``: the job file's path, which
    no file target may name."""
    problems: Problems = []
    for check, reads in _CROSS_CHECKS:
        if reads.isdisjoint(invalid):
            problems += check(job)
    if FILE_CHECK_KEYS.isdisjoint(invalid):
        problems += _file_checks(job, job_file)
    return problems


# What stands for "the account of the default credential chain" when no ARN tells which
# account that is: equal only to itself, never to an account number.
_DEFAULT_CHAIN = "the default credential chain"


def _accounts(job: JobConfig) -> Callable[[str | None], str]:
    """The account a table is reached in, from the ``role_arn`` that reaches it: the
    role's account, or, without a role, the default chain's, which is known only when a
    source without a role names it in its DynamoDB stream ARN."""
    default = _DEFAULT_CHAIN
    match = _DYNAMODB_STREAM_ARN.match(job.source.stream.arn or "")
    if job.source.role_arn is None and match and re.fullmatch(r"\d{12}", match["account"]):
        default = match["account"]

    def account(role_arn: str | None) -> str:
        found = _ROLE_ARN.match(role_arn or "")
        return found["account"] if found else default

    return account


def _table_place(
    settings: SourceConfig | DestinationConfig, table: str | None = None
) -> tuple[str, str | None, str]:
    """Region, endpoint (as the server it reaches, not its text) and name of ``table``
    (by default the settings' own) where ``settings`` reaches."""
    return (
        settings.region,
        endpoint_identity(settings.endpoint_url, settings.region),
        settings.table if table is None else table,
    )


def _destination_checks(job: JobConfig) -> Problems:
    """No destination is the source, repeats another, or takes another's name.

    A table is its region, name, endpoint and account: the same region and table reached
    through a role of another account is another table (a disaster-recovery copy). Where
    the account is unknown (the default chain's, beside a role's) the two may be two
    accounts, and are taken as such."""
    problems: Problems = []
    account = _accounts(job)
    source = job.source
    source_where = (*_table_place(source), account(source.role_arn))
    seen: dict[tuple[str, str | None, str, str], int] = {}
    labels: dict[str, int] = {}
    for index, destination in enumerate(job.destinations):
        where = (*_table_place(destination), account(destination.role_arn))
        if where == source_where:
            problems.append((("destinations", index), "is the source table itself"))
            continue
        if where in seen:
            problems.append((("destinations", index), f"repeats destinations[{seen[where]}]"))
            continue
        seen[where] = index
        label = destination.label
        place = ("destinations", index, "name")
        if label in labels:
            other = labels[label]
            if destination.name is None and job.destinations[other].name is None:
                problems.append(
                    (
                        place,
                        f"is missing: the default name {label!r} is already that of "
                        f"destinations[{other}] (the same region and table, in another "
                        f"account or at another endpoint): {_GIVE_A_NAME}",
                    )
                )
            else:
                problems.append((place, f"{label!r} is already the name of destinations[{other}]"))
        labels.setdefault(label, index)
    named = {key for key, _ in problems}  # a name said once: shared, or another's place
    return problems + [problem for problem in _name_place_checks(job) if problem[0] not in named]


def _name_place_checks(job: JobConfig) -> Problems:
    """No destination's name is another's ``<region>/<table>``: ``--destination`` takes
    a destination's name before any ``<region>/<table>``, so that spelling (which it
    offers for a named destination) would find the named one, never the one there. A
    name that is its own ``<region>/<table>`` (the default, written out) is taken."""
    places: dict[str, int] = {}
    for index, destination in enumerate(job.destinations):
        places.setdefault(f"{destination.region}/{destination.table}", index)
    problems: Problems = []
    for index, destination in enumerate(job.destinations):
        name = destination.name
        if (
            name is None
            or name not in places
            or name == f"{destination.region}/{destination.table}"
        ):
            continue
        problems.append(
            (
                ("destinations", index, "name"),
                f"{shown(name)} is the <region>/<table> of destinations[{places[name]}], which "
                "--destination would then not find by it: give this destination another name",
            )
        )
    return problems


_GIVE_A_NAME = (
    "give each destination a name of its own (destinations[].name), which it goes by in "
    "metrics, logs, dead letters, conflict-log entries and the watermark"
)


def _source_name_checks(job: JobConfig) -> Problems:
    """An active-active job's writer of its own source table goes by the source's
    ``<region>/<table>`` in metrics and conflict-log entries, which ``restore`` tells
    apart from a destination's by that name alone: no destination may go by it (one at
    the source's region and table, in another account, does by default)."""
    if not job.writes_back:
        return []
    source_name = f"{job.source.region}/{job.source.table}"
    return [
        (
            ("destinations", index, "name"),
            (
                repr(source_name)
                if destination.name
                else f"is missing: the default name {source_name!r}"
            )
            + " is the name of the job's source table, which its writer goes by "
            f"(active_active write-back): {_GIVE_A_NAME}",
        )
        for index, destination in enumerate(job.destinations)
        if destination.label == source_name
    ]


def _active_active_checks(job: JobConfig) -> Problems:
    """What write-back and tombstones need of loop prevention and the policies."""
    problems: Problems = []
    active = job.active_active
    if active.write_back or active.tombstones:
        what = "write_back" if active.write_back else "tombstones"
        # Tombstones need write-back: turning write-back off alone leaves a job refused.
        turn_off = (
            "set active_active.tombstones: false and active_active.write_back: false"
            if active.tombstones
            else "set active_active.write_back: false"
        )
        if not job.loop_prevention.origin_attribute:
            problems.append(
                (
                    ("active_active", what),
                    "needs loop_prevention.origin_attribute (an active-active job stamps "
                    "its origin, or the source's own corrections would be sent on)",
                )
            )
        overridden = [
            (index, destination.conflict.policy)
            for index, destination in enumerate(job.destinations)
            if destination.conflict is not None and destination.conflict.policy not in _ORDERED
        ]
        if job.conflict.policy in _ORDERED and overridden:
            # The job's own policy ranks: the override is what to change, named there.
            problems += [
                (
                    ("destinations", index, "conflict"),
                    f"policy {policy.value} here, but active_active.{what} needs the "
                    "last_writer_wins or version policy for the job and every destination "
                    f"(they rank images and deletes): drop this override, or {turn_off}",
                )
                for index, policy in overridden
            ]
        elif not job.ordered_everywhere:
            problems.append(
                (
                    ("active_active", what),
                    "needs the last_writer_wins or version policy for the job and every "
                    "destination (they rank images and deletes)",
                )
            )
        if job.ordered_everywhere:
            problems += [
                (
                    ("destinations", index, "conflict"),
                    f"ranks items by {_described(job.conflict_for(destination))} but the "
                    f"job by {_described(job.conflict)}: active_active.{what} compares "
                    "ranks across regions, so every destination must rank like the job "
                    f"(drop this override, or {turn_off})",
                )
                for index, destination in job.ranked_otherwise
            ]
    return problems


def _settings_read_beside_checks(job: JobConfig) -> Problems:
    """Every loop_prevention and active_active setting given is read: each of these means
    something only beside another setting, and alone would be ignored without a word, as
    an option of another kind would (see _kind_option_checks). An ``origin_value`` is what
    ``origin_attribute`` is compared with: without the attribute loop prevention is off,
    and a pair of such jobs sends every write back (docs/active-active.md, section 10).
    The tombstone table's name and retention are read only with tombstones on."""
    problems: Problems = []
    loop = job.loop_prevention
    if loop.origin_value is not None and not loop.origin_attribute:
        problems.append(
            (
                ("loop_prevention", "origin_value"),
                "needs loop_prevention.origin_attribute, which is not set here: origin_value "
                "is the value that attribute is compared with, so alone it would do nothing "
                "(loop prevention stays off: no echo is skipped, and an active-active pair "
                "of such jobs does not converge); set origin_attribute too, or remove "
                "origin_value",
            )
        )
    active = job.active_active
    if not active.tombstones:
        problems += [
            (
                ("active_active", option),
                "needs active_active.tombstones: true, which is not set here: only "
                "tombstones read it, so it would do nothing; set tombstones: true too, or "
                f"remove {option}",
            )
            for option in ("tombstone_table", "tombstone_retention_hours")
            if option in active.model_fields_set
        ]
    return problems


def _tombstones_need_write_back(job: JobConfig) -> Problems:
    if job.active_active.tombstones and job.active_active.write_back is False:
        return [
            (
                ("active_active", "tombstones"),
                "needs write_back (a stale local put after a delete is corrected in the "
                "source by the same machinery)",
            )
        ]
    return []


def _kinesis_policy_checks(job: JobConfig) -> Problems:
    """A kinesis stream's changes may come out of order: overwrite could keep an older image."""
    if job.source.stream.kind is not StreamKind.KINESIS:
        return []
    problems: Problems = []
    # The job's section decides only for the destinations without their own (write-back
    # and tombstones need an ordered policy there, which their own checks say).
    if job.conflict.policy is ConflictPolicyName.OVERWRITE and any(
        destination.conflict is None for destination in job.destinations
    ):
        given = "policy" in job.conflict.model_fields_set
        problems.append(
            (
                ("conflict", "policy"),
                ("" if given else "is overwrite, the default (the job file gives none): ")
                + "a kinesis stream may deliver an item's changes out of order; use "
                "last_writer_wins, version or custom (overwrite could keep an older image)",
            )
        )
    for index, destination in enumerate(job.destinations):
        conflict = destination.conflict
        if (
            conflict is not None
            and conflict.policy is ConflictPolicyName.OVERWRITE
            and "policy" in conflict.model_fields_set  # else _conflict_option_checks says
        ):
            problems.append(
                (
                    ("destinations", index, "conflict", "policy"),
                    "a kinesis stream may deliver an item's changes out of order; use "
                    "last_writer_wins, version or custom (overwrite could keep an older image)",
                )
            )
    return problems


def _kinesis_watermark_checks(job: JobConfig) -> Problems:
    """The watermark needs a DynamoDB stream (its shards keep the table's order): asked
    for by name with a kinesis source, it would be off without a word, and ``wait``
    refused later."""
    watermark = job.watermark
    if (
        job.source.stream.kind is StreamKind.KINESIS
        and watermark.enabled
        and "enabled" in watermark.model_fields_set
    ):
        return [
            (
                ("watermark", "enabled"),
                "the watermark needs a DynamoDB Streams source (a kinesis stream may "
                "deliver an item's changes out of order, so no time can be said to be "
                "replicated); remove the key or set it to false",
            )
        ]
    return []


# GetRecords on a DynamoDB stream takes a Limit of at most 1000 (ValidationException
# otherwise); on a Kinesis data stream, of at most 10000.
DYNAMODB_STREAMS_MAX_RECORDS = 1000


def _max_records_checks(job: JobConfig) -> Problems:
    """kcl.max_records is GetRecords' Limit in both runtimes: the local runtime's reads
    fail on a larger one (exit 3), and the KCL launcher would silently lower it."""
    records = job.kcl.max_records
    if job.source.stream.kind is StreamKind.DYNAMODB_STREAMS and (
        records > DYNAMODB_STREAMS_MAX_RECORDS
    ):
        return [
            (
                ("kcl", "max_records"),
                f"is {records}, but a DynamoDB stream returns at most "
                f"{DYNAMODB_STREAMS_MAX_RECORDS} records per GetRecords call and refuses a "
                f"larger Limit; use at most {DYNAMODB_STREAMS_MAX_RECORDS} (up to 10000 is "
                "for a kinesis source)",
            )
        ]
    return []


# The options each kind of target reads: given under another kind, an option would be
# silently ignored (a queue_url under kind file, the dead letters going to a file).
_DEAD_LETTER_OPTIONS: dict[str, tuple[StrEnum, ...]] = {
    "path": (DeadLetterKind.FILE,),
    "queue_url": (DeadLetterKind.SQS,),
    "region": (DeadLetterKind.SQS,),
    "endpoint_url": (DeadLetterKind.SQS,),
    "role_arn": (DeadLetterKind.SQS,),
}
_RECORDING = (ConflictLogKind.FILE, ConflictLogKind.SQS, ConflictLogKind.DYNAMODB)
_CONFLICT_LOG_OPTIONS: dict[str, tuple[StrEnum, ...]] = {
    "path": (ConflictLogKind.FILE,),
    "table": (ConflictLogKind.DYNAMODB,),
    "retention_days": (ConflictLogKind.DYNAMODB,),
    "queue_url": (ConflictLogKind.SQS,),
    "region": (ConflictLogKind.SQS, ConflictLogKind.DYNAMODB),
    "endpoint_url": (ConflictLogKind.SQS, ConflictLogKind.DYNAMODB),
    "role_arn": (ConflictLogKind.SQS, ConflictLogKind.DYNAMODB),
    "max_pending": _RECORDING,
    "retry_for_s": _RECORDING,
}


def _foreign_options(
    section: DeadLetterConfig | ConflictLogConfig, options: dict[str, tuple[StrEnum, ...]]
) -> str:
    """The options given that the section's kind does not read, for the message that
    refuses the section for another reason: the job-file check that names them
    (:func:`_kind_option_checks`) reads only a section that passed, so they would be
    named one run later."""
    foreign = [
        f"{option!r} belongs to kind {' or '.join(kind.value for kind in kinds)}"
        for option, kinds in options.items()
        if option in section.model_fields_set and section.kind not in kinds
    ]
    if not foreign:
        return ""
    it = "it" if len(foreign) == 1 else "them"
    return f"; and {', '.join(foreign)}, not {section.kind.value}: remove {it}"


def _kind_option_checks(job: JobConfig) -> Problems:
    """Every option given in dead_letter and conflict_log is one its kind reads."""
    problems: Problems = []
    sections: list[tuple[str, DeadLetterConfig | ConflictLogConfig, dict[str, tuple[StrEnum, ...]]]]
    sections = [
        ("dead_letter", job.dead_letter, _DEAD_LETTER_OPTIONS),
        ("conflict_log", job.conflict_log, _CONFLICT_LOG_OPTIONS),
    ]
    for name, section, options in sections:
        for option, kinds in options.items():
            if option in section.model_fields_set and section.kind not in kinds:
                problems.append(
                    (
                        (name, option),
                        f"belongs to kind {' or '.join(kind.value for kind in kinds)}, but "
                        f"{name}.kind is {section.kind.value}, which does not read it: "
                        "remove it, or set the kind it belongs to",
                    )
                )
    return problems


# The conflict settings each policy reads: any other one given is refused.
_CONFLICT_OPTIONS: dict[str, tuple[ConflictPolicyName, ...]] = {
    "timestamp_attribute": (ConflictPolicyName.LAST_WRITER_WINS,),
    "version_attribute": (ConflictPolicyName.VERSION,),
    "resolver": (ConflictPolicyName.CUSTOM,),
    "max_attempts": (ConflictPolicyName.CUSTOM,),
}


def _conflict_option_checks(job: JobConfig) -> Problems:
    """Every setting given in a conflict section is one its policy reads. A destination's
    ``conflict: {timestamp_attribute: t}`` replaced the job's section whole, policy
    included: that destination was written with overwrite, unconditionally, with only a
    warning; a setting of another policy beside the one chosen is as likely a mix-up."""
    problems: Problems = []
    for (where, section), (place, _) in zip(
        job.conflict_sections, job.conflict_settings, strict=True
    ):
        if (
            where != ("conflict",)
            and not section.model_fields_set - {"policy"}
            and ("policy" not in section.model_fields_set)
        ):
            problems.append(
                (
                    where,
                    "gives no policy: a destination's conflict section replaces the job's "
                    "whole conflict section, its policy included, so this destination would "
                    f"be written with {section.policy.value}, the default; give its policy "
                    f"(policy: {section.policy.value} to mean that), or remove the section to "
                    "use the job's",
                )
            )
            continue
        for option, policies in _CONFLICT_OPTIONS.items():
            if option not in section.model_fields_set or getattr(section, option) is None:
                continue
            if section.policy in policies:
                continue
            note = ""
            if "policy" in section.model_fields_set:
                chosen = f"{place}.policy is {section.policy.value}"
            else:
                chosen = f"{place} gives no policy, so it is {section.policy.value}, the default"
                if where != ("conflict",):
                    note = (
                        " (a destination's conflict section replaces the job's whole "
                        "conflict section, its policy included)"
                    )
            problems.append(
                (
                    (*where, option),
                    f"is read only by policy {' or '.join(p.value for p in policies)}, but "
                    f"{chosen}, which does not read it{note}: remove it, or set the policy "
                    "it belongs to",
                )
            )
    return problems


def _kcl_checks(job: JobConfig) -> Problems:
    """kcl.extra_properties the rendered file already sets, and, for the properties not
    refused already, what else the KCL would take but the job cannot work with: under
    any runtime, since ``replicator properties`` prints them for any, and a job moves
    between runtimes."""
    refused = _rendered_property_problems(job)
    problems: Problems = [(("kcl", "extra_properties", key), text) for key, text in refused.items()]
    return problems + _kcl_property_checks(job, refused)


def _rendered_property_problems(job: JobConfig) -> dict[str, str]:
    """The extra properties that the properties file rendered for this job already sets,
    as `replicator run` renders it (with the stream ARN it looks up), each with why it is
    refused: Java properties keep the last of two values, so an extra one would silently
    replace the job's. The set comes from the templates themselves, so that a key added
    to one is refused without a list here to keep in step; a default the template marks
    replaceable (the credentials provider, metricsLevel) is not refused. Two extra keys
    the KCL reads as one property (AWSCredentialsProvider in two casings) are refused
    too: which of them wins is not defined."""
    extra = job.kcl.extra_properties
    if not extra:
        return {}
    from replicator.runtime.kcl.properties import rendered_settings

    template, settings = rendered_settings(job)
    problems: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in extra:
        name = kcl_property_name(key)
        written = settings.get(name)
        if written is not None:
            read_as = "" if written == key else f" (the KCL reads it as {written})"
            if written in KCL_PROPERTY_SETTINGS:
                problems[key] = (
                    f"is written from the job file{read_as}, set "
                    f"{KCL_PROPERTY_SETTINGS[written]} instead"
                )
            elif written in KCL_FIXED_PROPERTIES:
                problems[key] = (
                    f"is written by the replicator{read_as} and cannot be changed: "
                    f"{KCL_FIXED_PROPERTIES[written]}"
                )
            else:
                problems[key] = (
                    f"is set by the KCL properties template {template}{read_as}; a second "
                    "value would silently replace it"
                )
        elif name in seen:
            problems[key] = (
                f"the KCL reads it as the same property as kcl.extra_properties.{seen[name]} "
                "(it matches AWSCredentialsProvider keys whatever their case), and which "
                "of the two it takes is not defined: keep one"
            )
        seen.setdefault(name, key)
    return problems


def _origin_attribute_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The attribute that ranks images cannot also be the origin stamp: loop prevention
    would read every image's timestamp as a region name (and never find its own), and
    the order would compare region names as times."""
    origin = job.loop_prevention.origin_attribute
    if not origin:
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for place, conflict in job.conflict_sections:
        if conflict.policy not in _ORDERED:
            continue
        policy, attribute = _ranking(conflict)
        if attribute == origin:
            name = (
                "version_attribute"
                if policy is ConflictPolicyName.VERSION
                else "timestamp_attribute"
            )
            problems.append(
                (
                    (*place, name),
                    f"is {attribute!r}, which is also loop_prevention.origin_attribute: the "
                    "attribute that ranks images and the one that stamps their region must "
                    "be two attributes",
                )
            )
    return problems


def _ranking(conflict: ConflictConfig) -> tuple[ConflictPolicyName, str | None]:
    if conflict.policy is ConflictPolicyName.VERSION:
        return conflict.policy, conflict.version_attribute
    return conflict.policy, conflict.timestamp_attribute


def _described(conflict: ConflictConfig) -> str:
    policy, attribute = _ranking(conflict)
    return f"{policy.value} on {attribute!r}"


def _task(job: JobConfig) -> str:
    """The job's task name, given or derived."""
    from replicator.config.task_name import default_task_name

    return job.task_name or default_task_name(job)


def _file_patterns(job: JobConfig) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The files the job appends to: each key, what it is, and its ``{task_name}`` pattern."""
    files: list[tuple[tuple[str | int, ...], str, str]] = []
    if job.dead_letter.kind is DeadLetterKind.FILE:
        files.append((("dead_letter", "path"), "the dead-letter file", job.dead_letter.path))
    if job.conflict_log.kind is ConflictLogKind.FILE:
        files.append((("conflict_log", "path"), "the conflict log", job.conflict_log.path))
    return files


def _task_pattern_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The names made from ``{task_name}`` patterns (the files and table the job uses)."""
    task = _task(job)
    patterns = [(where, pattern, False) for where, _, pattern in _file_patterns(job)]
    if job.conflict_log.kind is ConflictLogKind.DYNAMODB:
        patterns.append((("conflict_log", "table"), job.conflict_log.table, True))
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for where, pattern, is_table in patterns:
        what = _pattern_problem(pattern, "task_name")
        if what:
            problems.append(
                (where, f"may use only {{task_name}} (and {{{{ }}}} for a brace): {what}")
            )
            continue
        name = pattern.format(task_name=task)
        if is_table and not _TABLE.fullmatch(name):
            problems.append(
                (
                    where,
                    f"gives {shown(name)} for task {shown(task)}, which is not a DynamoDB "
                    "table name "
                    "(3-255 characters of letters, digits, _ . -)",
                )
            )
    return problems


def _stream_arn_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """A DynamoDB stream ARN names its table and region in its text: they must be the
    source's (DescribeStream at run checks that the stream exists)."""
    source = job.source
    arn = source.stream.arn
    if not arn:
        return []
    where: tuple[str | int, ...] = ("source", "stream", "arn")
    if source.stream.kind is StreamKind.KINESIS:
        return _kinesis_arn_checks(arn, source.region, where)
    match = _DYNAMODB_STREAM_ARN.fullmatch(arn)
    if match is None:
        hint = (
            "; for a Kinesis data stream set source.stream.kind: kinesis"
            if ":kinesis:" in arn
            else ""
        )
        return [
            (
                where,
                "expected a DynamoDB stream ARN such as arn:aws:dynamodb:us-east-1:"
                f"123456789012:table/{source.table}/stream/2026-01-01T00:00:00.000{hint}, "
                f"got {shown(arn)}",
            )
        ]
    problems: list[tuple[tuple[str | int, ...], str]] = []
    table, region = match["table"], match["region"]
    if table != source.table:
        problems.append(
            (
                where,
                f"is a stream of table {shown(table)}, but source.table is {source.table!r}: a "
                "stream carries only its own table's changes; name the source table's "
                "stream, or leave stream.arn out to use the table's latest",
            )
        )
    # A local emulator's ARNs may carry a region of its own (DynamoDB Local: ddblocal).
    if region != source.region and _REGION.fullmatch(region):
        problems.append(
            (
                where,
                f"is a stream in region {region}, but source.region is {source.region}: "
                "the stream must be read in its table's region",
            )
        )
    return problems


def _kinesis_arn_checks(
    arn: str, source_region: str, where: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """DynamoDB streams a table's changes only to a Kinesis data stream in the table's own
    region, and the KCL reads the stream's name in source.region: an ARN of another
    region names a stream that cannot carry the table's changes (the name, not the ARN,
    is what would be read). The ARN's text was checked by StreamConfig."""
    region = arn.split(":")[3]
    if region == source_region or not _REGION.fullmatch(region):
        return []
    return [
        (
            where,
            f"is a Kinesis data stream in region {region}, but source.region is "
            f"{source_region}: DynamoDB streams a table's changes only to a Kinesis data "
            "stream in the table's region, and the KCL reads the stream in source.region",
        )
    ]


def _runtime_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Settings that the job's runtime cannot work with (``run`` would refuse them)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if job.runtime is RuntimeKind.KCL and job.source.role_arn:
        # The daemon reads the stream and keeps its lease table with the host's own
        # credentials; only the processors (destinations) assume roles.
        problems.append(
            (
                ("source", "role_arn"),
                "is not supported by runtime kcl (the KCL reads the source with the host's "
                "own credentials); run the workers with credentials of the source account "
                "and drop source.role_arn, or use runtime: local",
            )
        )
    if job.runtime is RuntimeKind.LOCAL and job.source.stream.kind is StreamKind.KINESIS:
        problems.append(
            (
                ("source", "stream", "kind"),
                "kinesis is not supported by runtime local, which reads DynamoDB Streams; "
                "a kinesis source needs runtime: kcl",
            )
        )
    return problems


def _tombstone_table_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The tombstone table pattern, formatted with every table the job formats it with
    (the source's and each destination's), must give a DynamoDB table name, and with
    tombstones on never one of the job's own tables: a user table, or a table the job
    keeps for itself (lease, watermark, backfill, KCL, conflict log), whose items the
    tombstone writes would mix with (or which has another key)."""
    where: tuple[str | int, ...] = ("active_active", "tombstone_table")
    tables = [(job.source.region, job.source.table)] + [
        (d.region, d.table) for d in job.destinations
    ]
    if not job.active_active.tombstones:
        return []  # no tombstone table: a one-way job's long table name is no problem
    for _, table in tables:
        name = job.tombstone_table(table)
        if not _TABLE.fullmatch(name):
            shorter = (
                ": set a shorter active_active.tombstone_table pattern"
                if len(name) > MAX_TABLE_NAME
                else ""
            )
            return [
                (
                    where,
                    f"gives {shown(name)} for the table {shown(table)} ({len(name)} characters), "
                    "which is not a DynamoDB table name (3-255 characters of letters, "
                    f"digits, _ . -){shorter}",
                )
            ]
    own = _own_tables(job)
    for region, table in tables:
        name = job.tombstone_table(table)
        clash = own.get((region, name))
        if clash is not None:
            return [
                (
                    where,
                    f"gives {shown(name)} in {region} for the table {shown(table)}, which is "
                    "one of the "
                    f"job's own tables ({clash}): "
                    "choose a pattern (or a task_name) that gives the tombstones a table "
                    "of their own",
                )
            ]
    return []


def _own_tables(job: JobConfig, *, conflict_log: bool = True) -> dict[tuple[str, str], str]:
    """Every table the job reads or writes, by (region, name): what each one is
    (``conflict_log``: the conflict log's table among them)."""
    task = _task(job)
    source = job.source.region
    own = {(source, task): "its lease table, named task_name"}
    for suffix in TASK_TABLE_SUFFIXES:
        if suffix == "-watermark":
            for destination in job.destinations:
                own[(destination.region, task + suffix)] = "its watermark table"
        else:
            own[(source, task + suffix)] = f"its {suffix[1:]} table"
    log = job.conflict_log
    if (
        conflict_log
        and log.kind is ConflictLogKind.DYNAMODB
        and not _pattern_problem(log.table, "task_name")
    ):
        own[(log.region or source, log.table.format(task_name=task))] = (
            "its conflict log, conflict_log.table"
        )
    for index, destination in reversed(list(enumerate(job.destinations))):
        own[(destination.region, destination.table)] = f"the table of destinations[{index}]"
    own[(source, job.source.table)] = "the source table"
    return own


def _task_table_checks(job: JobConfig) -> Problems:
    """The tables named after the task (the lease table and the KCL's two and a
    backfill's progress table in the source's region, the watermark's status table in
    each destination's) are the replicator's own: one that is the source or a
    destination table (same region and endpoint) would get leases or parts written
    among the application's items, or be refused as having other keys only at start."""
    task = _task(job)
    source = job.source
    users: dict[tuple[str, str | None, str], str] = {}
    for index, destination in reversed(list(enumerate(job.destinations))):
        users[_table_place(destination)] = f"the table of destinations[{index}]"
    users[_table_place(source)] = "the source table"
    own = [(_table_place(source, task), "lease table")]
    for suffix in TASK_TABLE_SUFFIXES:
        if suffix == "-watermark":
            own += [
                (_table_place(d, task + suffix), "watermark status table") for d in job.destinations
            ]
        else:
            own.append((_table_place(source, task + suffix), f"{suffix[1:]} table"))
    for place, what in own:
        clash = users.get(place)
        if clash is not None:
            region, _, name = place
            return [
                (
                    ("task_name",),
                    f"{shown(task)} names the job's {what} {shown(name)} in {region}, "
                    f"which is {clash}: "
                    "the replicator keeps its own items in that table; give the job a "
                    "task_name that names none of its tables",
                )
            ]
    return []


def _conflict_log_table_checks(job: JobConfig) -> Problems:
    """A conflict log of kind dynamodb has a table of its own: one of the job's own tables
    (the source, a destination, the lease table, a watermark, backfill or KCL table)
    would get the entries as items among the application's (or the replicator's) and
    its TTL turned on, and ``conflicts`` would list its items as unreadable entries.
    Tables are compared as the tombstone tables are, by region and name. A tombstone
    table that is the log's is reported at active_active.tombstone_table."""
    log = job.conflict_log
    if log.kind is not ConflictLogKind.DYNAMODB or _pattern_problem(log.table, "task_name"):
        return []
    name = log.table.format(task_name=_task(job))
    region = log.region or job.source.region
    clash = _own_tables(job, conflict_log=False).get((region, name))
    if clash is None:
        return []
    return [
        (
            ("conflict_log", "table"),
            f"gives {shown(name)} in {region}, which is one of the job's own tables ({clash}): "
            "the entries would be written as items of that table, and its TTL turned on; "
            "give the conflict log a table of its own (the default is "
            "{task_name}-conflicts)",
        )
    ]


# An SQS queue URL, as AWS and the emulators give them: http(s)://host[:port]/<account
# id: 12 digits>/<queue name: 1 to 80 letters, digits, - and _; .fifo for a FIFO queue>.
_QUEUE_URL = re.compile(r"https?://[^/\s?#]+/\d{12}/[A-Za-z0-9_-]{1,80}(?:\.fifo)?", re.I)


def _queue_url_checks(job: JobConfig) -> Problems:
    """A queue URL that is not one (a typo, a queue's name or ARN) names no queue: the
    first dead letter would stop the worker, every conflict-log entry would be dropped.

    A FIFO queue takes only messages with a MessageGroupId, which the dead letters and
    the conflict log do not send: every message would be refused (MissingParameter), a
    dead letter stopping the worker and an entry counted as dropped. A FIFO queue's
    name, the last part of its URL, ends in ``.fifo``."""
    problems: Problems = []
    targets: list[tuple[str, str | None, str, str | None, str]] = []
    source = job.source.region
    if job.dead_letter.kind is DeadLetterKind.SQS:
        letters = job.dead_letter
        targets.append(
            (
                "dead_letter",
                letters.queue_url,
                "dead letter",
                letters.endpoint_url,
                letters.region or source,
            )
        )
    if job.conflict_log.kind is ConflictLogKind.SQS:
        log = job.conflict_log
        targets.append(
            (
                "conflict_log",
                log.queue_url,
                "conflict-log entry",
                log.endpoint_url,
                log.region or source,
            )
        )
    for section, url, what, endpoint_url, region in targets:
        problem = userinfo_problem(url) if url else None
        if url and problem:
            # Refused as an endpoint_url with them is: the form has no place for them.
            problems.append(
                (
                    (section, "queue_url"),
                    f"expected an SQS queue URL, http(s)://host[:port]/<account id, 12 "
                    f"digits>/<queue name>: {problem}, got {quoted(url)}",
                )
            )
        elif url and not _QUEUE_URL.fullmatch(url):
            problems.append(
                (
                    (section, "queue_url"),
                    f"{shown(url)} is not an SQS queue URL, which has the form "
                    "https://sqs.<region>.amazonaws.com/<account id, 12 digits>/<queue name> "
                    "(or the same path after the endpoint_url of an SQS-compatible "
                    "endpoint); give the QueueUrl that aws sqs get-queue-url prints",
                )
            )
        elif url and url.lower().endswith(".fifo"):
            problems.append(
                (
                    (section, "queue_url"),
                    f"{shown(url)} is a FIFO queue (its name ends in .fifo), which refuses every "
                    f"message sent without a MessageGroupId, as each {what} is; "
                    "FIFO queues are not supported: give a standard queue",
                )
            )
        elif url and endpoint_url is None:
            sent_to = _aws_sqs_endpoint_for(url, region)
            if sent_to is not None:
                problems.append(
                    (
                        (section, "queue_url"),
                        f"{shown(url)} is not at AWS's SQS host, and {section}.endpoint_url is "
                        f"not set: every request about it would go to {sent_to}, AWS's own "
                        f"SQS endpoint in {region}, not to the server in the URL; give "
                        f"{section}.endpoint_url, the endpoint that serves this queue",
                    )
                )
    return problems


def _aws_sqs_endpoint_for(url: str, region: str) -> str | None:
    """AWS's SQS endpoint, where a section without an ``endpoint_url`` sends its requests
    about queue ``url`` (botocore sends them to the client's endpoint, whatever host the
    URL names), when the URL names another server: a queue of an emulator or a proxy
    that the requests would never reach. None when the URL is at an AWS host (any of
    AWS's endpoints serves the queue its path names), or when an endpoint comes from
    ``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL`` or the AWS config file, which the job
    cannot see but botocore uses (a client is made to ask it, only for a URL at another
    host). FIPS, dual-stack and the other partitions' endpoints are AWS's too."""
    if _at_aws(url):
        return None
    import botocore.exceptions  # here: only a URL at another host pays for them
    import botocore.session

    try:
        # Placeholder keys: making a client without any would walk the credential chain,
        # which can wait on the instance metadata service; the endpoint needs none.
        client = botocore.session.Session().create_client(
            "sqs",
            region_name=region,
            aws_access_key_id="placeholder",
            aws_secret_access_key="placeholder",  # noqa: S106 - never sent anywhere
        )
        endpoint = str(client.meta.endpoint_url)
    except (botocore.exceptions.BotoCoreError, ValueError):
        return None  # a profile or an endpoint botocore refuses: run reports it, naming it
    return endpoint if _at_aws(endpoint) else None


def _at_aws(url: str) -> bool:
    """Whether ``url``'s host is in one of AWS's DNS domains (every partition's, as
    botocore lists them: amazonaws.com, api.aws, amazonaws.com.cn, c2s.ic.gov, ...)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    return any(host.endswith(f".{suffix}") for suffix in _aws_dns_suffixes())


@functools.cache
def _aws_dns_suffixes() -> tuple[str, ...]:
    import botocore.loaders

    partitions = botocore.loaders.create_loader().load_data("partitions")["partitions"]
    suffixes = {
        str(partition["outputs"][name]).lower()
        for partition in partitions
        for name in ("dnsSuffix", "dualStackDnsSuffix")
        if partition["outputs"].get(name)
    }
    return tuple(sorted(suffixes))


# The host of an SQS queue URL in AWS (``sqs.<region>.amazonaws.com``, the legacy
# ``<region>.queue.amazonaws.com`` and ``queue.amazonaws.com`` of us-east-1, the
# dual-stack ``sqs.<region>.api.aws``): the host names the region the queue is in.
_AWS_QUEUE_HOST = re.compile(
    r"(?:sqs\.(?P<sqs>[a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)"
    r"|(?P<legacy>[a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?|queue\.amazonaws\.com)"
)


def _queue_identity(
    url: str, region: str, endpoint_url: str | None
) -> tuple[str, str | None, str, str]:
    """The queue a (valid) queue URL names where a section reaches it: the region, the
    endpoint (as the server it reaches, None for AWS's own), the account and the name.
    Without an endpoint_url an AWS host in the URL says the region; an endpoint_url that
    is AWS's own SQS endpoint (``https://sqs.<region>.amazonaws.com``, default port) is
    no endpoint in the region it names, where the SDK would send the requests too.
    Nothing is looked up, so two spellings of one emulator's host stay two places."""
    parts = urlsplit(url)
    account, name = parts.path.strip("/").split("/")
    host = (parts.hostname or "").rstrip(".").lower()
    if endpoint_url is not None:
        endpoint = urlsplit(endpoint_url)
        scheme = endpoint.scheme.lower()
        default_port = {"http": 80, "https": 443}.get(scheme)
        aws = _AWS_QUEUE_HOST.fullmatch((endpoint.hostname or "").rstrip(".").lower())
        if aws is None or (endpoint.port or default_port) != default_port:
            return (region, endpoint_identity(endpoint_url, region), account, name)
        return (aws["sqs"] or aws["legacy"] or "us-east-1", None, account, name)
    found = _AWS_QUEUE_HOST.fullmatch(host)
    if found:
        region = found["sqs"] or found["legacy"] or "us-east-1"
    return (region, None, account, name)


def _shared_queue_checks(job: JobConfig) -> Problems:
    """The conflict log and the dead letters are never one queue: ``redrive`` would read
    every entry as an unreadable letter (kept, so every redrive exits 1), and
    ``conflicts`` every letter as an unreadable entry (hiding it from ``redrive`` for its
    visibility timeout). Queues are compared by region, endpoint, account and name, so
    the same URL spelt with another case or the default port is the same queue."""
    letters, log = job.dead_letter, job.conflict_log
    if letters.kind is not DeadLetterKind.SQS or log.kind is not ConflictLogKind.SQS:
        return []
    urls = (letters.queue_url or "", log.queue_url or "")
    if not all(_QUEUE_URL.fullmatch(url) for url in urls):
        return []  # reported by _queue_url_checks
    source = job.source.region
    letters_queue = _queue_identity(urls[0], letters.region or source, letters.endpoint_url)
    if letters_queue != _queue_identity(urls[1], log.region or source, log.endpoint_url):
        return []
    return [
        (
            ("conflict_log", "queue_url"),
            f"gives {urls[1]!r}, which is also the dead-letter queue (dead_letter.queue_url: "
            f"{urls[0]!r}): conflict-log entries and dead letters would be mixed in one "
            "queue, each read as unreadable messages of the other (every redrive would exit "
            "1, conflicts warn about every letter); give the conflict log a queue of its own",
        )
    ]


def _job_files(job: JobConfig) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The files the job appends to, each with its key, what it is and its path as the
    runtime makes it (``{task_name}`` filled in, relative to the working directory)."""
    task = _task(job)
    return [
        (where, what, pattern.format(task_name=task))
        for where, what, pattern in _file_patterns(job)
        if not _pattern_problem(pattern, "task_name")
    ]


def _same_file(one: str, other: str) -> bool:
    """Whether two paths (relative ones to the working directory) name one file: the
    same text once normalized, through symbolic links, or one file by two names."""
    if os.path.realpath(one) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist (yet): only a name can tell
        return False


def _file_checks(job: JobConfig, job_file: Path | None) -> Problems:
    """No two of the job's files are one: the conflict log in the dead-letter file would
    make ``redrive`` read its entries as unreadable letters (and ``conflicts`` the
    letters as unreadable entries), and either in the job file would append JSON lines
    to it."""
    files = _job_files(job)
    problems: Problems = []
    for index, (where, what, path) in enumerate(files):
        for _, earlier_what, earlier in files[:index]:
            if _same_file(path, earlier):
                problems.append(
                    (
                        where,
                        f"gives {path!r}, which is also {earlier_what} ({earlier!r}): "
                        f"{what} and {earlier_what} would be mixed in one file, each read as "
                        f"unreadable lines of the other; give {what} a file of its own",
                    )
                )
        if job_file is not None and _same_file(path, str(job_file)):
            problems.append(
                (
                    where,
                    f"gives {path!r}, which is the job file itself: {what} would append "
                    "its lines to it; give it a file of its own",
                )
            )
    return problems


def disk_checks(job: JobConfig, *, directories_only: bool = False) -> Problems:
    """What only the files on disk tell (``validate``, in the working directory that
    ``run`` will use): a file target that names an existing directory, or (unless
    ``directories_only``) something else that is not a regular file (a FIFO, which
    opening would wait on for ever, ``/dev/null``, which keeps nothing) or a path no
    file can have (a name too long, a directory to make where a file is), each of which
    ``run`` refuses at start."""
    from replicator.appendfile import file_in_the_way, not_a_regular_file, unusable

    problems: Problems = []
    for where, what, path in _job_files(job):
        kind = None if directories_only else not_a_regular_file(path)
        problem = None if directories_only else unusable(path)
        blocking = None if directories_only else file_in_the_way(path)
        if blocking is not None:
            shown = os.path.abspath(path)
            problems.append(
                (
                    where,
                    f"{what} {shown} cannot be written: {os.path.abspath(blocking)} is a file, "
                    f"so the directory {os.path.dirname(shown)} cannot be created",
                )
            )
        elif problem is not None:
            problems.append((where, f"{what} {os.path.abspath(path)} cannot be written: {problem}"))
        elif kind is not None and kind != "a directory":
            problems.append(
                (
                    where,
                    f"{what} {os.path.abspath(path)} is {kind}, not a regular file: "
                    f"{'.'.join(map(str, where))} must name a file of its own",
                )
            )
        elif os.path.isdir(path):
            shown = os.path.abspath(path)
            problems.append(
                (
                    where,
                    f"{what} {shown} is a directory: {'.'.join(map(str, where))} must name "
                    f"a file (such as {os.path.join(path, '{task_name}.jsonl')})",
                )
            )
    return problems


def _start_time_problem(value: str, dynamodb: bool) -> str:
    """Why initialPositionInStreamExtended is refused, quoting what was written: the KCL
    reads it as a time (seconds since 1970) to start new leases at, AT_TIMESTAMP, and
    fails on anything else (a position such as LATEST is kcl.initial_position's)."""
    position = value.strip().upper()
    hint = (
        f"; {position} is a position, not a time: set kcl.initial_position: {position}"
        if position in InitialPosition.__members__
        else ""
    )
    why = (
        "which a DynamoDB stream does not support: the DynamoDB Streams Kinesis Adapter "
        "starts new leases only at TRIM_HORIZON or LATEST (kcl.initial_position)"
        if dynamodb
        # It sets the very field kcl.initial_position's initialPositionInStream sets, and
        # the KCL applies the two in no fixed order (a hash map's): the start would be
        # either, by chance.
        else "which is not supported for a kinesis source: it and kcl.initial_position set "
        f"the same start position, and the KCL applies them in no fixed order; {_TIMES} "
        "(kcl.initial_position)"
    )
    return (
        f"is {shown(value)}: the KCL reads this property as a time (seconds since 1970) to "
        f"start new leases at (AT_TIMESTAMP), {why}{hint}"
    )


def _kcl_property_checks(
    job: JobConfig, refused: Collection[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """kcl.extra_properties that the KCL would take but the job cannot work with (those
    ``refused`` already aside)."""
    extra = {key: value for key, value in job.kcl.extra_properties.items() if key not in refused}
    problems = ((key, kcl_setting_problem(job, key, value)) for key, value in extra.items())
    return [(("kcl", "extra_properties", key), text) for key, text in problems if text]


def kcl_setting_problem(job: JobConfig, key: str, value: str) -> str | None:
    """Why the KCL would take ``key = value`` but the job cannot work with it (None if
    it can): the same whether kcl.extra_properties or a properties template sets it."""
    dynamodb = job.source.stream.kind is StreamKind.DYNAMODB_STREAMS
    if key in KCL_ENUM_PROPERTIES and value != value.strip():
        return (
            f"{shown(value)} has blanks around it, which the KCL reads as part of the name of "
            f"its constant ({value.upper()!r} is none): write {value.strip()!r}"
        )
    if key in KCL_ENUM_VALUES and value.upper() not in KCL_ENUM_VALUES[key]:
        return (
            f"{shown(value)} is none of the values the KCL takes for {key}: "
            f"{', '.join(KCL_ENUM_VALUES[key])} (in any case)"
        )
    if key == "initialPositionInStream":
        if dynamodb and value.strip().upper() == "AT_TIMESTAMP":
            return (
                "AT_TIMESTAMP is not supported for a DynamoDB stream: the DynamoDB Streams "
                "Kinesis Adapter starts new leases only at TRIM_HORIZON or LATEST "
                "(kcl.initial_position)"
            )
        return None
    if key == "initialPositionInStreamExtended":
        return _start_time_problem(value, dynamodb)
    if key == "metricsLevel":
        level = value.strip().upper()
        if level != "NONE" and job.kcl_endpoint_override():
            return (
                f"{level} would make the KCL publish its metrics to CloudWatch in AWS while "
                "the job reads a local endpoint (source.endpoint_url); leave metricsLevel at "
                "NONE (the replicator serves its own metrics on /metrics)"
            )
        return None
    problem = _numeric_property_problem(key, value)
    if problem is None and key.lower().startswith(CREDENTIALS_PROVIDER_KEY):
        problem = _credentials_provider_problem(value)
    return problem


# Every cross-field check, with the top-level keys it reads (a derived task name reads
# the source and the destinations): see cross_checks.
_TASK = frozenset({"task_name", "source", "destinations"})
_CROSS_CHECKS: tuple[tuple[Callable[[JobConfig], Problems], frozenset[str]], ...] = (
    (_destination_checks, frozenset({"source", "destinations"})),
    (
        _source_name_checks,
        frozenset({"source", "destinations", "active_active", "loop_prevention", "conflict"}),
    ),
    (_task_pattern_checks, _TASK | {"dead_letter", "conflict_log"}),
    (_runtime_checks, frozenset({"runtime", "source"})),
    (_stream_arn_checks, frozenset({"source"})),
    (_tombstone_table_checks, _TASK | {"active_active", "conflict_log"}),
    (
        _active_active_checks,
        frozenset({"active_active", "loop_prevention", "conflict", "destinations"}),
    ),
    (_origin_attribute_checks, frozenset({"loop_prevention", "conflict", "destinations"})),
    (_tombstones_need_write_back, frozenset({"active_active"})),
    (_settings_read_beside_checks, frozenset({"loop_prevention", "active_active"})),
    (_kcl_checks, frozenset({"runtime", "kcl", "source"})),
    (_kinesis_policy_checks, frozenset({"source", "conflict", "destinations"})),
    (_kinesis_watermark_checks, frozenset({"source", "watermark"})),
    (_max_records_checks, frozenset({"source", "kcl"})),
    (_kind_option_checks, frozenset({"dead_letter", "conflict_log"})),
    (_conflict_option_checks, frozenset({"conflict", "destinations"})),
    (_conflict_log_table_checks, _TASK | {"conflict_log"}),
    (_queue_url_checks, frozenset({"dead_letter", "conflict_log"})),
    (_shared_queue_checks, frozenset({"dead_letter", "conflict_log", "source"})),
    (_task_table_checks, _TASK),
)
# The checks that read the files the job names, with the keys they read.
FILE_CHECK_KEYS = _TASK | {"dead_letter", "conflict_log"}
