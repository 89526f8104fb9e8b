"""Checks made before a runtime starts, so a misconfigured job fails with one clear line.

A missing table, a disabled stream, a wrong region, absent credentials or an endpoint
that does not answer are the operator's to fix; each becomes an EnvironmentProblem
naming the resource and what to do, instead of a retry loop or a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from replicator.appendfile import why_not_appendable
from replicator.aws import clients, queues, tables
from replicator.aws.clients import Place
from replicator.aws.errors import (
    ErrorKind,
    classify,
    error_code,
    error_message,
    excerpt,
    http_status,
)
from replicator.aws.http2 import answers_http2
from replicator.config.cross_checks import Problems
from replicator.config.kcl_settings import KCL_TABLE_KEYS, kcl_table
from replicator.config.loader import job_file_error
from replicator.config.model import (
    ConflictPolicyName,
    DeadLetterKind,
    JobConfig,
    ResolvedJob,
    RuntimeKind,
    StreamKind,
    sqs_region,
)
from replicator.conflictlog.targets import prepare
from replicator.exceptions import EnvironmentProblem, OperatorError
from replicator.owned_tables import check_if_exists
from replicator.runtime import file_owners
from replicator.shards import ownership
from replicator.shards.leases import check_lease_table
from replicator.tombstones.setup import prepare as prepare_tombstones
from replicator.watermark.off import record_watermark_off
from replicator.watermark.recreated import record_recreated
from replicator.watermark.table import check_status_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = structlog.get_logger(__name__)

_ORDERED = (ConflictPolicyName.LAST_WRITER_WINS, ConflictPolicyName.VERSION)


class Stopped(Exception):  # not an error: a stop asked for in time
    """A stop was asked for between two preflight checks: the runtime exits 0."""


@dataclass(frozen=True)
class SourceInfo:
    stream_arn: str
    view_type: str | None
    key_schema: dict[str, str]
    identity: tuple[Any, ...] | None = None
    endpoint_url: str | None = None  # the one its client uses


# After "cannot reach": what a network error at a check means, and what to do; said by
# every command (run, and the operator commands reading the same tables). A job starts
# only once every table it uses answers (a destination down at start holds back the
# others too), where a running job rides out a destination's outage.
UNREACHABLE_ADVICE = (
    "check the endpoint and region set for it and this host's network (DNS, proxy, "
    "firewall), then try again once it answers (`replicator run` starts a job only once "
    "everything it uses answers; a job already running waits out such an outage instead)"
)


# After a check that was throttled or failed on the server's side throughout its retries.
TRANSIENT_ADVICE = (
    "it is throttled or failing for now: try again once it answers (a job already "
    "running retries such answers without limit)"
)


def explain(error: BaseException, what: str, where: str) -> EnvironmentProblem:
    """Turn an AWS error met while checking ``what`` (at ``where``) into one clear sentence."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return EnvironmentProblem(
            f"{what}: no AWS credentials found. Provide them through the default chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance or "
            "container role)."
        )
    if isinstance(
        error, CredentialRetrievalError | ProfileNotFound | SSOError | TokenRetrievalError
    ):
        return EnvironmentProblem(
            f"{what}: AWS credentials could not be loaded: {excerpt(str(error))}"
        )
    if isinstance(error, EndpointConnectionError):
        return _unreachable(what, where, error)
    if isinstance(error, ClientError):
        code = error_code(error)
        message = error_message(error)
        if code == "ResourceNotFoundException":
            return EnvironmentProblem(f"{what}: not found at {where} ({message})")
        if code in (
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "AccessDeniedException",
            "ExpiredTokenException",
        ):
            return EnvironmentProblem(f"{what}: access denied at {where}: {code}: {message}")
        status = http_status(error)
        kind = classify(error)
        # Not 501 (a call the endpoint does not implement) nor a limit that can be a quota.
        passes = kind is ErrorKind.THROTTLED or (kind is ErrorKind.RETRY and status != 501)
        if passes and code != "LimitExceededException":
            # Throttling or a server error that outlasted the SDK's retries: it passes.
            return EnvironmentProblem(
                f"{what}: {code}: {message} (at {where}), still after the SDK's retries; "
                f"{TRANSIENT_ADVICE}"
            )
        return EnvironmentProblem(f"{what}: {code}: {message} (at {where})")
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return _unreachable(what, where, error)
    if isinstance(error, BotoCoreError):
        return EnvironmentProblem(f"{what}: cannot reach {where}: {excerpt(str(error))}")
    return EnvironmentProblem(f"{what}: {excerpt(str(error))}")


def _unreachable(what: str, where: str, error: BaseException) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"{what}: cannot reach {where}: {excerpt(str(error))}; {UNREACHABLE_ADVICE}"
    )


# What to do once the source table was deleted while the job ran (run's two runtimes).
SOURCE_DELETED_ADVICE = (
    "create it again with its stream, start the job again and run "
    "`replicator backfill --restart` for what changed meanwhile"
)


def stream_replaced(resolved: ResolvedJob, ddb: DynamoDBClient, stream_arn: str) -> str | None:
    """While a job runs: why the DynamoDB stream it reads (``stream_arn``, its source
    table's latest stream at start) is no longer the table's, or None while it is.

    A table deleted and created again under its name, or whose stream was disabled (and
    perhaps enabled again), has another latest stream or none. The old stream is still
    described (DynamoDB keeps it 24 hours, disabled; moto answers for the new one under
    the old ARN), so reading it goes on without an error and without a change: the job
    would wait for ever with every lag at 0. A job that pins ``source.stream.arn`` reads
    that stream whatever the table's latest is. Errors are the caller's (DescribeTable)."""
    source = resolved.job.source
    if source.stream.kind is not StreamKind.DYNAMODB_STREAMS or source.stream.arn:
        return None
    table = ddb.describe_table(TableName=source.table)["Table"]
    latest = table.get("LatestStreamArn")
    enabled = tables.stream_enabled(table)
    if latest == stream_arn and enabled:
        return None
    where = tables.where(source.region, source.endpoint_url, source.role_arn)
    has_one = bool(latest and enabled)
    now = f"its stream is now {latest}" if has_one else "it has no stream enabled now"
    again = (
        "start the job again"
        if has_one
        else "enable the table's stream (NEW_AND_OLD_IMAGES) and start the job again"
    )
    if resolved.job.runtime is RuntimeKind.KCL:
        # The KCL's leases do not say which stream they are of, and it resumes any of
        # them: a new stream's shard of an old shard's id (moto gives every stream's
        # shard the same one) would be read after the old checkpoint, finding nothing.
        start = (
            f"With the job stopped, delete the lease table {resolved.lease_table} (the old "
            f"stream's leases), {'then ' if has_one else ''}{again}"
        )
    elif has_one:
        start = "Start the job again to read the new stream from its oldest record"
    else:
        start = again[0].upper() + again[1:]
    return (
        f"source table {source.table} at {where}: {now}, not the stream {stream_arn} this "
        "run reads (the table was deleted and created again, or its stream disabled, while "
        "the job ran); the changes made since are not in the stream being read. "
        f"{start}, then run `replicator backfill --restart` and `replicator verify --repair` "
        "for what the old stream held that was not read (--restart: a backfill stored before "
        "copies nothing new; --repair: items of the table before, deleted with it, are still "
        "at the destinations)"
    )


def check_source(resolved: ResolvedJob) -> SourceInfo:
    job = resolved.job
    source = job.source
    where = tables.where(source.region, source.endpoint_url, source.role_arn)
    what = f"source table {source.table}"
    ddb = clients.dynamodb(source)
    try:
        table = ddb.describe_table(TableName=source.table)["Table"]
    except (ClientError, BotoCoreError) as error:
        raise explain(error, what, where) from None
    shape = tables.shape_of(table, what, where)
    key_schema = shape.key_schema
    check_key_settings(resolved, key_schema)
    if source.stream.kind is StreamKind.KINESIS:
        return SourceInfo(
            stream_arn=check_kinesis_stream(resolved, where),
            view_type=None,
            key_schema=key_schema,
            identity=shape.identity,
            endpoint_url=ddb.meta.endpoint_url,
        )
    stream_arn = source.stream.arn or table.get("LatestStreamArn")
    if not stream_arn or (not source.stream.arn and not tables.stream_enabled(table)):
        raise EnvironmentProblem(
            f"{what} at {where} has no DynamoDB stream enabled; enable one with view type "
            "NEW_AND_OLD_IMAGES (aws dynamodb update-table --stream-specification "
            "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES)"
        )
    if source.stream.arn and (
        source.stream.arn != table.get("LatestStreamArn") or not tables.stream_enabled(table)
    ):
        # Pinned on purpose (an earlier stream read to its end within its 24 hours), or
        # left pinned after the table was created again: then nothing new ever arrives.
        log.warning(
            "source.stream.arn is not the source table's current stream: the job reads an "
            "earlier stream, which holds no change made since the table's stream was "
            "replaced (and lag stays at 0 once it is read to its end); when that is not "
            "meant, remove source.stream.arn to read the table's latest stream, then run "
            "`replicator backfill --restart` and `replicator verify`",
            pinned=source.stream.arn,
            latest=table.get("LatestStreamArn") if tables.stream_enabled(table) else None,
        )
    streams = clients.dynamodb_streams(source)
    try:
        description = streams.describe_stream(StreamArn=stream_arn, Limit=1)["StreamDescription"]
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"stream {stream_arn}", where) from None
    streamed = description.get("TableName")
    if streamed and streamed != source.table:
        raise EnvironmentProblem(
            f"stream {stream_arn} (source.stream.arn) is the stream of table {streamed}, "
            f"not of the source table {source.table}: its changes would be written into "
            f"this job's destinations; give the ARN of {source.table}'s stream, or leave "
            "source.stream.arn out to read its latest stream"
        )
    view_type = description.get("StreamViewType")
    if view_type not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise EnvironmentProblem(
            f"stream {stream_arn} has view type {view_type}; the replicator needs the new "
            "image of every change (NEW_AND_OLD_IMAGES, or NEW_IMAGE for overwrite and "
            "custom)"
        )
    destinations, section = _ordered_users(job)
    if view_type != "NEW_AND_OLD_IMAGES" and (destinations or section):
        raise EnvironmentProblem(
            f"stream {stream_arn} has view type {view_type}; last_writer_wins and version "
            "check deletes against the deleted image, which needs NEW_AND_OLD_IMAGES, and "
            f"{', '.join([*destinations, *([section] if section else [])])}: enable "
            "NEW_AND_OLD_IMAGES on the source's stream"
            + ("" if section else ", or put those destinations under overwrite or custom")
        )
    return SourceInfo(
        stream_arn=stream_arn,
        view_type=view_type,
        key_schema=key_schema,
        identity=shape.identity,
        endpoint_url=ddb.meta.endpoint_url,
    )


def _ordered_users(job: JobConfig) -> tuple[list[str], str | None]:
    """What in the job applies last_writer_wins or version, by key: each destination
    under its rule, and the job's ``conflict`` section where the job writes to its
    source (write-back) or keeps tombstones (None when it does not, or under another
    rule: a section no one applies does not count)."""
    destinations = [
        f"destinations[{index}] ({destination.label}) is under "
        f"{job.conflict_for(destination).policy.value}"
        + ("" if destination.conflict is not None else " (the job's conflict section)")
        for index, destination in enumerate(job.destinations)
        if job.conflict_for(destination).policy in _ORDERED
    ]
    applied_by = [
        what
        for what, applies in (
            ("write-back", job.writes_back),
            ("tombstones", job.active_active.tombstones),
        )
        if applies
    ]
    if job.conflict.policy not in _ORDERED or not applied_by:
        return destinations, None
    return destinations, (
        f"conflict (the job's section, which its {' and '.join(applied_by)} "
        f"appl{'y' if len(applied_by) > 1 else 'ies'}) is under {job.conflict.policy.value}"
    )


def _ranking_attribute_problems(resolved: ResolvedJob, key_schema: dict[str, str]) -> Problems:
    """A timestamp or version that is a key attribute never changes, so every image of
    an item would tie on it and the order would fall to origin and digest."""
    problems: Problems = []
    for place, conflict in resolved.job.conflict_sections:
        if conflict.policy not in _ORDERED:
            continue
        name = (
            "version_attribute"
            if conflict.policy is ConflictPolicyName.VERSION
            else "timestamp_attribute"
        )
        attribute = getattr(conflict, name)
        if attribute in key_schema:
            kind = tables.key_kind(key_schema[attribute])
            problems.append(
                (
                    (*place, name),
                    f"is {attribute!r}, a key attribute of the source table "
                    f"{resolved.job.source.table} ({kind}): a key never "
                    "changes, so every image of an item would rank the same; name the "
                    "attribute the application sets to its time or version on every write",
                )
            )
    return problems


def check_key_settings(resolved: ResolvedJob, key_schema: dict[str, str]) -> None:
    """The job's attributes that must not be key attributes of the source (what the rules
    rank by, the origin stamp), refused as problems of the job file, all at once, each at
    its key and line. Only the table knows its keys, so this is checked where the key
    schema is read anyway: ``run`` at start and every operator command before it reads
    or writes an item (:func:`replicator.tools.tables.checked_source`); not by
    ``validate``, which reads no table."""
    problems = _ranking_attribute_problems(resolved, key_schema)
    origin = resolved.job.loop_prevention.origin_attribute
    if origin in key_schema:
        # Every put would be dropped as another region's echo (a key's value is never
        # this region's name) and checkpointed past.
        problems.append(
            (
                ("loop_prevention", "origin_attribute"),
                f"is {origin!r}, a key attribute of the source table "
                f"{resolved.job.source.table} ({tables.key_kind(key_schema[origin])}): its value "
                "is the item's key, never this region's origin value, so every put would be "
                "dropped as another region's echo; name the attribute the application "
                "stamps with its region on every write",
            )
        )
    if problems:
        raise job_file_error(resolved, problems)


def check_task_tables(resolved: ResolvedJob) -> None:
    """The lease table (the KCL's too) and the watermark's status tables are the job's
    own, found by name: one of those names given to a table of another key schema (an
    application's) is refused before anything is written into it, rather than failing
    on every write (or, for the lease table, on items that are not leases)."""
    source = resolved.job.source
    where = tables.where(source.region, source.endpoint_url, source.role_arn)
    what = f"lease table {resolved.lease_table}"
    try:
        check_lease_table(clients.dynamodb(source), resolved.lease_table, where)
    except (ClientError, BotoCoreError) as error:
        raise explain(error, what, where) from None
    if resolved.job.runtime is RuntimeKind.KCL:
        check_kcl_tables(resolved, where)
    if not resolved.publishes_watermark:
        return
    seen: set[str] = set()
    for destination in resolved.job.destinations:
        where = tables.where(destination.region, destination.endpoint_url, destination.role_arn)
        if where in seen:
            continue
        seen.add(where)
        name = resolved.watermark_table
        try:
            check_status_table(clients.dynamodb(destination), name, where)
        except (ClientError, BotoCoreError) as error:
            raise explain(error, f"status table {name}", where) from None


def check_kcl_tables(resolved: ResolvedJob, where: str) -> None:
    """KCL 3's other tables of the task (beside its lease table): one of those names given
    to a table of other keys (a leftover of another tool, an application's) made the KCL
    fail to initialise for minutes, with /healthz ok, before the daemon gave up (exit 1
    and a restart loop under a restart policy), where a start can say it at once."""
    source = resolved.job.source
    ddb = clients.dynamodb(source)
    for setting, (key, role) in KCL_TABLE_KEYS.items():
        table = kcl_table(resolved.job.kcl.extra_properties, resolved.task_name, setting)
        what = f"KCL {role} {table}"
        hint = (
            f"KCL 3 keeps its {role} there, keyed on {key} (hash key, S): name another "
            f"table for it in kcl.extra_properties.{setting}, or, if this one was left by "
            "an earlier run of the task, delete it with every worker of the task stopped "
            "(the KCL creates it again); another task_name would do too, but it names "
            "another lease table, without this job's checkpoints"
        )
        try:
            check_if_exists(ddb, table, {key: "HASH"}, what, where, hint)
        except (ClientError, BotoCoreError) as error:
            raise explain(error, what, where) from None


def mark_watermark_off(resolved: ResolvedJob) -> None:
    """With the watermark off, its status tables (where they exist) say so from now on
    (replicator/watermark/off.py). A Kinesis job never publishes one: nothing to mark."""
    if resolved.job.watermark.enabled or resolved.job.source.stream.kind is not (
        StreamKind.DYNAMODB_STREAMS
    ):
        return
    for destination in resolved.job.destinations:
        where = tables.where(destination.region, destination.endpoint_url, destination.role_arn)
        try:
            record_watermark_off(resolved, destination)
        except (ClientError, BotoCoreError) as error:
            raise explain(error, f"status table {resolved.watermark_table}", where) from None


def check_kinesis_stream(resolved: ResolvedJob, where: str, *, for_backfill: bool = False) -> str:
    """The Kinesis data stream's ARN, once it is known to exist and be readable.

    The KCL's MultiLangDaemon reads a stream by name, in ``source.region`` and the
    account of the host's credentials, whatever account and region an ARN names (KCL 3.1
    takes only the name out of ``streamArn``): the stream is looked up the same way, and
    an ARN that names another stream is refused rather than read in its place."""
    source = resolved.job.source
    stream = source.stream
    name = stream.kinesis_name
    kinesis = clients.kinesis(source)
    what = f"kinesis stream {stream.arn or stream.name}"

    # The job file's check keeps an ARN in source.region: only its account can differ.
    try:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except (ClientError, BotoCoreError) as error:
        raise explain(error, what, where) from None
    found = str(summary["StreamARN"])
    if stream.arn and found != stream.arn:
        raise EnvironmentProblem(
            f"{what} (source.stream.arn) is not the stream runtime kcl would read: the KCL "
            f"reads a stream by name, in source.region with the host's account, which is "
            f"{found}; run the workers with credentials of the stream's account"
        )
    status = summary.get("StreamStatus")
    if status not in ("ACTIVE", "UPDATING"):
        raise EnvironmentProblem(
            f"{what} at {where} is {status}; the KCL reads only an ACTIVE stream"
        )
    check_table_streams_to(resolved, found, where, for_backfill=for_backfill)
    if not for_backfill and source.endpoint_url and answers_http2(source.endpoint_url) is False:
        raise EnvironmentProblem(
            f"{what}: the endpoint {source.endpoint_url} (source.endpoint_url) does not "
            "answer HTTP/2, which the KCL's Kinesis client speaks (to an http:// endpoint "
            "with prior knowledge): the daemon would log 'First received frame was not "
            "SETTINGS' and read nothing. Serve the emulator over HTTP/2 as well (moto's own "
            "server answers HTTP/1.1 only; its application under hypercorn answers both: "
            "docs/kcl-and-docker.md)"
        )
    return found


# A Kinesis streaming destination's states in which the table writes its changes there,
# and those in which it did and stopped.
_STREAMING = ("ACTIVE", "ENABLING", "UPDATING")
_STOPPED = ("DISABLED", "DISABLING")


def check_table_streams_to(
    resolved: ResolvedJob, stream_arn: str, where: str, *, for_backfill: bool = False
) -> None:
    """Refuse a Kinesis stream the source table does not write its changes to.

    Every record of another table is skipped as such: a job given another table's stream
    (a name mistyped, a job file copied) would read it to its end and report lag 0 and
    ``/healthz`` ok while its own table is never replicated. DynamoDB lists the streams a
    table writes to. One whose streaming failed to start (ENABLE_FAILED) never held the
    table's changes: refused. A table that wrote there once (streaming since disabled) is
    warned about at ``run``, which drains what the stream still holds; a backfill is
    refused, since changes made during its scan would reach no destination. Where the
    list cannot be had (a policy without the action, an endpoint that fails or does not
    answer it: moto has no such call) the start goes on, saying the stream was not
    checked."""
    source = resolved.job.source
    what = f"source table {source.table}"
    try:
        answer = clients.dynamodb(source).describe_kinesis_streaming_destination(
            TableName=source.table
        )
    except (ClientError, BotoCoreError) as error:
        kind = classify(error)
        if kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND):
            raise explain(error, what, where) from None
        log.warning(
            "not checked at start whether the source table writes its changes to the "
            "kinesis stream: "
            + (
                "dynamodb:DescribeKinesisStreamingDestination is not allowed"
                if kind is ErrorKind.DENIED
                else "the endpoint did not answer DescribeKinesisStreamingDestination ("
                + (
                    f"{error_code(error)}: {error_message(error)}"
                    if isinstance(error, ClientError)
                    else excerpt(str(error))
                )
                + ")"
            ),
            table=source.table,
            stream=stream_arn,
            at=where,
        )
        return
    listed = [
        (
            str(d.get("StreamArn")),
            str(d.get("DestinationStatus")),
            str(d.get("DestinationStatusDescription") or ""),
        )
        for d in answer.get("KinesisDataStreamDestinations", [])
    ]
    states = [(state, why) for arn, state, why in listed if arn == stream_arn]
    if any(state in _STREAMING for state, _ in states):
        return
    writes_to = (
        "it writes to "
        + ", ".join(f"{arn} ({state})" for arn, state, _ in listed if state in _STREAMING)
        if any(state in _STREAMING for _, state, _ in listed)
        else "it writes to no Kinesis stream"
    )
    enable = (
        f"aws dynamodb enable-kinesis-streaming-destination --table-name {source.table} "
        f"--stream-arn {stream_arn}"
    )
    if not states:
        raise EnvironmentProblem(
            f"{what} at {where} does not write its changes to kinesis stream {stream_arn} "
            f"({writes_to}): the job would skip every record there as another table's and "
            "replicate nothing; name the stream the table writes to in source.stream, or turn "
            f"streaming to it on ({enable})"
        )
    state, why = states[-1]
    if state not in ("ENABLE_FAILED", *_STOPPED):
        log.warning(
            "the source table's streaming to the kinesis stream is in a state this "
            "version does not know; the job reads the stream",
            table=source.table,
            stream=stream_arn,
            destination_status=state,
        )
        return
    if state in _STOPPED and not for_backfill:
        log.warning(
            "the source table no longer writes its changes to the kinesis stream the job "
            "reads: the job replicates what the stream still holds, and no change made "
            f"since ({writes_to}); when that is not meant, enable it again ({enable}), "
            "then run `replicator backfill` and `replicator verify`",
            table=source.table,
            stream=stream_arn,
            destination_status=state,
        )
        return
    said = f"; {excerpt(why)}" if why else ""
    now = f"its streaming to kinesis stream {stream_arn} is {state}{said} ({writes_to})"
    if state in _STOPPED:
        raise EnvironmentProblem(
            f"{what} at {where}: {now}: the changes made during the backfill's scan "
            f"would reach no destination; turn streaming on again ({enable}), start "
            "the replicator, then run the backfill"
        )
    raise EnvironmentProblem(
        f"{what} at {where}: {now}: the stream never received the table's changes, "
        f"and the job would replicate nothing; turn streaming on ({enable}) once the "
        "cause is fixed, or name the stream the table writes to in source.stream"
    )


def check_destinations(resolved: ResolvedJob, source: SourceInfo) -> dict[str, datetime]:
    """Every destination there, with the source's key schema, and each a table of its
    own: not the source nor another destination reached another way (a second spelling
    of its endpoint, ``localhost`` for ``127.0.0.1``, or a role into the same account),
    which the job file's check cannot see. Each destination's creation time, by label,
    where DescribeTable gives it."""
    job = resolved.job
    created: dict[str, datetime] = {}
    seen = [tables.ReachedTable("the source table", source.endpoint_url, source.identity)]
    for index, destination in enumerate(job.destinations):
        where = tables.where(destination.region, destination.endpoint_url, destination.role_arn)
        what = f"destinations[{index}] table {destination.table}"
        ddb = clients.dynamodb(destination)
        try:
            table = ddb.describe_table(TableName=destination.table)["Table"]
        except (ClientError, BotoCoreError) as error:
            raise tables.missing_destination(
                explain(error, what, where), error, f"destinations[{index}]", source.key_schema
            ) from None
        shape = tables.shape_of(table, what, where)
        reached = tables.ReachedTable(
            f"destinations[{index}] ({destination.label})", ddb.meta.endpoint_url, shape.identity
        )
        tables.check_destination(what, where, shape, source.key_schema, reached, seen)
        if isinstance(table.get("CreationDateTime"), datetime):
            created[destination.label] = table["CreationDateTime"]
    return created


def note_recreated_destinations(resolved: ResolvedJob, created: dict[str, datetime]) -> None:
    """A destination table created after the job last settled changes there (deleted
    while the job was stopped, and created again): its watermark is told so, and the
    start says what to do (replicator/watermark/recreated.py)."""
    if not resolved.publishes_watermark:
        return
    for destination in resolved.job.destinations:
        if destination.label not in created:
            continue
        where = tables.where(destination.region, destination.endpoint_url, destination.role_arn)
        try:
            record_recreated(resolved, destination, created[destination.label])
        except (ClientError, BotoCoreError) as error:
            raise explain(error, f"status table {resolved.watermark_table}", where) from None


def check_dead_letter_file(resolved: ResolvedJob) -> None:
    """A dead-letter file that cannot be written would stop the first shard that needs
    it, and every restart after: say so now, naming the setting and the path."""
    if resolved.job.dead_letter.kind is not DeadLetterKind.FILE:
        return
    path = Path.cwd() / resolved.dead_letter_path()  # an absolute path stays as it is
    problem = why_not_appendable(path)
    if problem is not None:
        raise EnvironmentProblem(
            f"dead_letter.path: the dead-letter file {path} cannot be written: {problem}"
        )


def check_dead_letter_queue(resolved: ResolvedJob) -> None:
    """A dead-letter queue that does not exist (or cannot be reached) would stop every
    shard at its first dead letter, and every restart after: say so now, naming the
    setting and the queue, as for a file that cannot be written."""
    settings = resolved.job.dead_letter
    if settings.kind is not DeadLetterKind.SQS:
        return
    assert settings.queue_url
    region = sqs_region(settings, resolved.job.source.region)
    where = tables.where(region, settings.endpoint_url, settings.role_arn)
    client = clients.sqs(Place(region, settings.endpoint_url, settings.role_arn))
    what = "dead-letter queue"
    try:
        if not queues.check_exists(
            client, settings.queue_url, "dead_letter.queue_url", what, where
        ):
            return
    except (ClientError, BotoCoreError) as error:
        raise explain(error, f"dead_letter.queue_url: {what} {settings.queue_url}", where) from None
    try:
        policy = queues.redrive_policy(client, settings.queue_url)
    except (ClientError, BotoCoreError) as error:
        log.info("dead-letter queue's redrive policy not checked", error=str(error))
        return
    if policy is not None:
        count, moved_to = policy
        log.warning(
            f"the dead-letter queue {settings.queue_url} has a redrive policy: every "
            "`replicator redrive` receives each message in it once (more while another "
            f"reader holds messages), and after {count} receives SQS moves a message to "
            f"the queue {moved_to}, out of the dead-letter target, where no redrive finds "
            "it: the letters of other tasks and the unreadable messages a redrive leaves "
            "in place, and this job's letters a redrive stopped early left unsettled; "
            "give the dead letters a queue without a redrive policy"
        )


def check_dead_letter_target(resolved: ResolvedJob) -> None:
    """The dead-letter file or queue, as :func:`check` checks it at start: the operator
    commands check it too before their first read, so that a target that cannot take
    a letter is one line and exit 3 now, not a hang or a stop at the first letter."""
    check_dead_letter_file(resolved)
    check_dead_letter_queue(resolved)


def check(
    resolved: ResolvedJob,
    stopped: Callable[[], bool] = lambda: False,
    before_creating: Callable[[], object] = lambda: None,
) -> SourceInfo:
    """Check the dead-letter queue, the source and destinations and the task's tables,
    then the dead-letter file (its directory created when missing), and make the job's
    conflict log (a file's directory, checked writable) and tombstone tables ready (the
    replicator's own, created when missing like the lease table).

    ``stopped`` is asked before each step (creating a table can wait minutes): when it
    says a stop was asked for, :class:`Stopped` is raised. ``before_creating`` is called
    once the steps that create nothing have passed, before the first that may create a
    directory or a table: the local runtime takes its host lock there, so that a start
    the lock refuses creates nothing, and a job the checks refuse is told why whatever
    else runs."""

    try:
        return _checked(resolved, stopped, before_creating)
    except OperatorError:
        if stopped():  # asked to stop while the failing step was in flight: said first
            log.info(
                "stop requested", during="preflight", note="the start-up step in flight failed"
            )
        raise


def _checked(
    resolved: ResolvedJob, stopped: Callable[[], bool], before_creating: Callable[[], object]
) -> SourceInfo:
    def go_on() -> None:
        if stopped():
            raise Stopped

    go_on()
    check_dead_letter_queue(resolved)
    go_on()
    info = check_source(resolved)
    go_on()
    created = check_destinations(resolved, info)
    go_on()
    check_task_tables(resolved)
    go_on()
    ownership.refuse_another_jobs(resolved, ownership.source_identity(resolved, info.stream_arn))
    go_on()
    file_owners.check(resolved)
    before_creating()
    mark_watermark_off(resolved)
    go_on()
    note_recreated_destinations(resolved, created)
    go_on()
    check_dead_letter_file(resolved)
    go_on()
    prepare(resolved)
    go_on()
    file_owners.claim(resolved)
    go_on()
    prepare_tombstones(resolved)
    go_on()
    return info
