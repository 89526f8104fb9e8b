"""The job file's schema: one replication job, validated once at start-up.

Every key that a job file may hold is declared here, with its default, so that the
README's configuration reference and the validator cannot drift apart. Unknown keys
are errors: a misspelt ``timestamp_atribute`` must not silently fall back to a default.
What a single value is checked for is in fields.py, what the KCL's properties take in
kcl_settings.py, and the rules that span sections in cross_checks.py.
"""

from __future__ import annotations

import difflib
import functools
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from replicator.config.endpoints import (
    aws_endpoint_of,
    aws_queue_region,
    check_endpoint,
    check_source_endpoint,
)
from replicator.config.fields import (
    DOTTED_CALLABLE_PATTERN,
    DYNAMODB_STREAM_ARN_PATTERN,
    KINESIS_STREAM_ARN_PATTERN,
    KINESIS_STREAM_NAME_PATTERN,
    MAX_TABLE_NAME,
    MAX_TASK_NAME,
    TASK_NAME_PATTERN,
    TASK_TABLE_SUFFIXES,
    Bool,
    FilePath,
    Float,
    Int,
    Name,
    PathText,
    Text,
    check_external_id,
    check_optional_region,
    check_region,
    check_role,
    check_table,
    encodable,
    pattern_problem,
    shown,
    shown_with_length,
    without_credentials,
)
from replicator.config.kcl_settings import (
    JAVA_LONG,
    KCL_ENDPOINT_KEYS,
    KCL_ENUM_PROPERTIES,
    KCL_INTEGER_PROPERTIES,
    property_text,
    unknown_kcl_property_caution,
    unreserved_property,
)
from replicator.hosts import host_problem, unbracketed

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


# Upper bounds of the job's times and counts: each far above any sane setting, and far
# below what a wait (threading.TIMEOUT_MAX), a socket timeout or the KCL's Java long
# could take, so that a mistyped value is refused by `validate` instead of failing the
# run (an OverflowError) or printing a property the KCL cannot read.
MAX_RETRY_DELAY_MS = 600_000
MAX_REQUEST_TIMEOUT_S = 600
# A stream keeps a change for 24 hours: a limit beyond that means nothing.
ONE_DAY_S = 86_400


# The kind of problem of a key written with no value where leaving it out has a meaning.
NULL_FOR_A_DEFAULT = "null_for_a_default"


@functools.cache
def _known_regions() -> frozenset[str] | None:
    """Every region of botocore's endpoint data, in every partition (DynamoDB is in each),
    and the names its DynamoDB endpoints take (``us-east-1-fips``); None when that data
    cannot be read. Read as data, not through a session, which would read the AWS
    profile: a profile missing here (a CI host) is ``run``'s to report."""
    import botocore.loaders  # here: only the commands that print cautions pay for it

    try:
        data = botocore.loaders.create_loader().load_data("endpoints")
        return frozenset(
            str(name)
            for partition in data["partitions"]
            for names in (
                partition["regions"],
                partition["services"].get("dynamodb", {}).get("endpoints", {}),
            )
            for name in names
        )
    except Exception:  # noqa: BLE001 - a caution only: without the data, none is given
        return None


def _region_name(region: str) -> str:
    """A region without the ``fips-`` prefix botocore also takes (``fips-us-east-1``)."""
    return region.removeprefix("fips-")


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_null_for_a_default(cls, value: object, info: ValidationInfo) -> object:
        """A key written with no value (``task_name:``, ``role_arn:``) was meant to be set:
        taken as left out, it would quietly run the job another way (a lease table named
        after a derived task name, writes without the role), so it is refused as an empty
        text is. Keys that take no null say so through their type."""
        field = cls.model_fields.get(info.field_name or "")
        if value is None and field is not None and field.default is None:
            raise PydanticCustomError(NULL_FOR_A_DEFAULT, "an empty value")
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


ORDERED_POLICIES = (ConflictPolicyName.LAST_WRITER_WINS, ConflictPolicyName.VERSION)
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
    arn: Annotated[Text, AfterValidator(encodable)] | None = Field(
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
        if not KINESIS_STREAM_NAME_PATTERN.fullmatch(value):
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
        match = KINESIS_STREAM_ARN_PATTERN.fullmatch(value)
        if match is None or not KINESIS_STREAM_NAME_PATTERN.fullmatch(match["name"]):
            hint = (
                "; it is a DynamoDB stream's ARN: for a DynamoDB stream set "
                "source.stream.kind: dynamodb-streams (the default)"
                if DYNAMODB_STREAM_ARN_PATTERN.fullmatch(value)
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

    _region = field_validator("region")(check_region)
    _table = field_validator("table")(check_table)
    _role = field_validator("role_arn")(check_role)
    _endpoint = field_validator("endpoint_url")(check_source_endpoint)
    _external_id = field_validator("external_id")(check_external_id)


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


def policy_ranking(conflict: ConflictConfig) -> tuple[ConflictPolicyName, str | None]:
    if conflict.policy is ConflictPolicyName.VERSION:
        return conflict.policy, conflict.version_attribute
    return conflict.policy, conflict.timestamp_attribute


def policy_described(conflict: ConflictConfig) -> str:
    policy, attribute = policy_ranking(conflict)
    return f"{policy.value} on {attribute!r}"


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
        if value is not None and not DOTTED_CALLABLE_PATTERN.fullmatch(value):
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

    _region = field_validator("region")(check_region)
    _table = field_validator("table")(check_table)
    _role = field_validator("role_arn")(check_role)
    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _external_id = field_validator("external_id")(check_external_id)

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
        problem = pattern_problem(value, "table")
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
    _role = field_validator("role_arn")(check_role)
    _region = field_validator("region")(check_optional_region)

    @model_validator(mode="after")
    def _sqs_needs_a_queue(self) -> Self:
        if self.kind is DeadLetterKind.SQS and not self.queue_url:
            raise ValueError(
                "a dead-letter queue of kind sqs needs 'queue_url'"
                + _foreign_options(self, DEAD_LETTER_OPTIONS)
            )
        return self


def sqs_region(settings: DeadLetterConfig | ConflictLogConfig, source_region: str) -> str:
    """The region of a section's SQS client: its own ``region``; else, without an
    ``endpoint_url``, the region an AWS queue URL's host names (SQS answers about a queue
    only in the queue's region: a client in the source's was told the queue did not
    exist); else the source's."""
    if settings.region is not None:
        return settings.region
    if settings.endpoint_url is None and settings.queue_url:
        return aws_queue_region(settings.queue_url) or source_region
    return source_region


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

    _role = field_validator("role_arn")(check_role)
    _endpoint = field_validator("endpoint_url")(check_endpoint)
    _region = field_validator("region")(check_optional_region)

    @model_validator(mode="after")
    def _sqs_needs_a_queue(self) -> Self:
        if self.kind is ConflictLogKind.SQS and not self.queue_url:
            raise ValueError(
                "a conflict log of kind sqs needs 'queue_url'"
                + _foreign_options(self, CONFLICT_LOG_OPTIONS)
            )
        return self


# The options each kind of target reads: given under another kind, an option would be
# silently ignored (a queue_url under kind file, the dead letters going to a file).
DEAD_LETTER_OPTIONS: dict[str, tuple[StrEnum, ...]] = {
    "path": (DeadLetterKind.FILE,),
    "queue_url": (DeadLetterKind.SQS,),
    "region": (DeadLetterKind.SQS,),
    "endpoint_url": (DeadLetterKind.SQS,),
    "role_arn": (DeadLetterKind.SQS,),
}
_RECORDING = (ConflictLogKind.FILE, ConflictLogKind.SQS, ConflictLogKind.DYNAMODB)
CONFLICT_LOG_OPTIONS: dict[str, tuple[StrEnum, ...]] = {
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


# The context key under which JobConfig tells KclConfig the source's stream kind.
STREAM_KIND_CONTEXT = "stream_kind"
INITIAL_POSITION_ADVICE = "use TRIM_HORIZON (the oldest record the stream holds) or LATEST"
# Why kcl.initial_position cannot be AT_TIMESTAMP, by the source's stream kind (None: the
# source is invalid, its kind unknown).
_START_TIME_REFUSALS: dict[StreamKind | None, str] = {
    StreamKind.DYNAMODB_STREAMS: (
        "AT_TIMESTAMP is not supported: a DynamoDB stream has no shard iterator at a time "
        "(the DynamoDB Streams Kinesis Adapter that runtime kcl reads it through starts new "
        f"leases only at TRIM_HORIZON or LATEST); {INITIAL_POSITION_ADVICE}"
    ),
    StreamKind.KINESIS: (
        "AT_TIMESTAMP is not supported for a kinesis source: the KCL starts a lease at a "
        "time only when given that time (its initialPositionInStreamExtended), and the job "
        f"file has no key for it; {INITIAL_POSITION_ADVICE}"
    ),
    None: (
        "AT_TIMESTAMP is not supported: a DynamoDB stream has no shard iterator at a time, "
        f"and for a kinesis source the job file has no key for the time; {INITIAL_POSITION_ADVICE}"
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
        Annotated[str, AfterValidator(unreserved_property), AfterValidator(encodable)],
        Annotated[
            str,
            BeforeValidator(property_text),
            AfterValidator(encodable),
            AfterValidator(without_credentials),
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
            and abs(item) < JAVA_LONG
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
        if not TASK_NAME_PATTERN.fullmatch(value):
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
                p.value for p in policies | {self.conflict.policy} if p not in ORDERED_POLICIES
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
                f"{policy_described(self.conflict_for(destination))} but the job by "
                f"{policy_described(self.conflict)}, so active-active write-back is off (it "
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
        cautions.extend(self.unknown_region_cautions)
        return cautions

    @property
    def unknown_region_cautions(self) -> list[str]:
        """A region AWS's SDK here does not know for DynamoDB, at a key with no endpoint:
        a misspelling (``us-east-9``) otherwise surfaced only as ``cannot reach`` at start,
        which reads like a network problem. A caution, not a refusal: a region newer than
        the installed SDK is reached all the same."""
        # (key, region, service) of each region a section reaches AWS in by itself.
        places: list[tuple[str, str | None, str]] = []
        if not self.kcl_endpoint_override():
            places.append(("source.region", self.source.region, "dynamodb"))
        places += [
            (f"destinations[{index}].region", d.region, "dynamodb")
            for index, d in enumerate(self.destinations)
            if not d.endpoint_url
        ]
        log = self.conflict_log
        if log.kind is ConflictLogKind.DYNAMODB and not (
            log.endpoint_url or self.source.endpoint_url
        ):
            places.append(("conflict_log.region", log.region, "dynamodb"))
        for section, settings in (("dead_letter", self.dead_letter), ("conflict_log", log)):
            if settings.kind == "sqs" and not settings.endpoint_url and settings.queue_url:
                # The region written, or the one the queue URL names (``sqs_region``).
                where = settings.region or aws_queue_region(settings.queue_url)
                key = f"{section}.{'region' if settings.region else 'queue_url'}"
                places.append((key, where, "sqs"))
        known = _known_regions()
        if known is None:
            return []
        return [
            f"{key} names the region {region!r}, which this host's AWS SDK does not know (a "
            "misspelling? `run` would say it cannot reach it); a region newer than the SDK is "
            "reached all the same"
            for key, region, service in places
            if region is not None
            and _region_name(region) not in known
            and aws_endpoint_of(service, region) is not None  # not an endpoint set elsewhere
        ]

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
        return all(self.conflict_for(d).policy in ORDERED_POLICIES for d in self.destinations) and (
            self.conflict.policy in ORDERED_POLICIES
        )

    @property
    def ranks_alike(self) -> bool:
        """Whether every destination ranks items by the job's own policy and attribute
        (write-back and tombstones compare ranks across regions)."""
        return not self.ranked_otherwise

    @property
    def ranked_otherwise(self) -> list[tuple[int, DestinationConfig]]:
        """The destinations (with their index) that rank items otherwise than the job."""
        job_ranking = policy_ranking(self.conflict)
        return [
            (index, destination)
            for index, destination in enumerate(self.destinations)
            if policy_ranking(self.conflict_for(destination)) != job_ranking
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
