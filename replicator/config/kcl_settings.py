"""What the replicator knows of the KCL's properties: those KCL 3.1 reads, and as what.

The KCL takes any key and almost any value without a word: a misspelt property is used
for nothing, a number it cannot read is 0, a word other than true is false. These tables
(from KCL 3.1's MultiLangDaemon and the DynamoDB Streams launcher) say which properties
the job itself writes, and so refuses in kcl.extra_properties, and what a value of each
must be; ``validate`` judges an extra property by them, and the KCL runtime
(replicator/runtime/kcl/) reads a template's keys and credentials providers by the same
rules. Kept apart from the schema, which declares the kcl section's keys only.
"""

from __future__ import annotations

import difflib
import math
import re

from replicator.config.fields import DECIMAL_PATTERN, shown, whole_decimal

# KCL properties that point the KCL's clients at an endpoint other than AWS's.
KCL_ENDPOINT_KEYS = ("kinesisEndpoint", "dynamoDBEndpoint")
# The KCL 3 properties that name a table of the task's beside its lease table, and the
# suffix of its default name (``<task_name>-CoordinatorState``).
KCL_TABLE_SUFFIXES = {
    "coordinatorStateTableName": "-CoordinatorState",
    "workerMetricsTableName": "-WorkerMetricStats",
}


# The key each of those tables has in KCL 3.1 (CoordinatorState's hash key ``key``,
# WorkerMetricStats's ``wid``, strings both), and what it holds, for the start's check.
KCL_TABLE_KEYS = {
    "coordinatorStateTableName": ("key", "coordinator state table (the leader's lock)"),
    "workerMetricsTableName": ("wid", "worker metrics table"),
}


def kcl_table(extra_properties: dict[str, str], task_name: str, key: str) -> str:
    """The table the KCL uses for property ``key``: the name given (as written: the KCL
    keeps blanks, which ``validate`` refuses), else the task's default."""
    return extra_properties.get(key) or task_name + KCL_TABLE_SUFFIXES[key]


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
JAVA_LONG = 2**63
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


def credentials_provider_problem(value: str) -> str | None:
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


def numeric_property_problem(key: str, value: str) -> str | None:
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
            and -JAVA_LONG <= int(text) < JAVA_LONG
        ):
            whole = whole_decimal(text)
            if whole is not None:
                return (
                    f"{shown(value)} is not a plain integer, the only form the KCL reads "
                    f"here ({_UNREAD}): write {whole}"
                )
            return f"{shown(value)} is not a whole number that a Java long holds ({_UNREAD})"
        if int(text) < 0 and key == "maxLeasesForWorker":
            # Its least is 1 (below): "0 or more" sent the user to a second refusal.
            return f"{shown(value)} is negative: it is a count of leases, 1 or more"
        if int(text) < 0:
            # Each is a count, a size, a percentage or a time: the KCL takes a negative
            # one and its scheduler throws at start-up (leaseAssignmentIntervalMillis), or
            # it runs with a nonsense bound.
            return f"{shown(value)} is negative: it is a count, a size or a time, 0 or more"
        if key == "maxLeasesForWorker" and int(text) == 0:
            # KCL 3 hands a worker that holds no lease one whatever its cap.
            return (
                f"{shown(value)} would still let the worker take a lease (KCL 3 gives one to "
                "a worker holding none, whatever its cap): give 1 or more, and stop a worker "
                "that should take none"
            )
        return None
    if key in KCL_DECIMAL_PROPERTIES:
        if not DECIMAL_PATTERN.fullmatch(text):
            return f"{shown(value)} is not a number ({_UNREAD})"
        if not math.isfinite(float(text)):
            return f"{shown(value)} is beyond the largest number the KCL reads (a Java double)"
    return None


def unreserved_property(key: str) -> str:
    if key in CONTRADICTING_KCL_PROPERTIES:
        raise ValueError(f"is written from the job file, set {KCL_PROPERTY_SETTINGS[key]} instead")
    if not key:
        raise ValueError("a property needs a name")
    return key


# Booleans of YAML 1.1 that a job file reads as text (only true and false are booleans):
# the KCL's Java reads anything but "true" as false, so "yes" would turn an option off.
_TEXT_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})


def property_text(value: object) -> object:
    """YAML's plain integers, numbers and booleans, as the KCL reads them: text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip().lower() in _TEXT_BOOLEANS:
        raise ValueError(
            f"{shown(value)} is not a boolean the KCL reads (it reads anything but true as "
            "false): write true or false for a boolean property, a number for a numeric one"
        )
    return value
