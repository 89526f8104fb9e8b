"""Which job's leases a task's lease table holds: a tag on the table names the source.

The lease table is named after the task and the KCL records no stream in a lease (a lease
is keyed by its shard's id alone). Two jobs given one ``task_name`` (another source
table, the same name copied from an example) would share the table: each worker takes
the other's leases and reads its checkpoints in its own stream, where those positions
mean nothing (moto gives every stream's shard the same id: a job took over the other's
lease and never read a record of its own stream), and each moves the other's
checkpoints. Nothing fails, and changes are lost. The local runtime records its stream
in the leases it writes, but not in the KCL's: a ``runtime: local`` job under another
job's task name took a KCL job's lease and checkpoint the same way.

So the lease table carries a tag naming the job's source (:data:`OWNER_TAG`): the
source table's ARN, or a Kinesis data stream's ARN and the table read from it. A run of
either runtime claims the table at start (the KCL creates it on a first start: then as
soon as it exists), and a run whose source is not the one the tag names is refused
(exit 3). The claim is no transaction (tags are read, then written, and a read may lag
a write by seconds): two jobs starting together may both find no tag, so both runtimes
read the tag again while they run (:data:`CHECK_INTERVAL_S`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from enum import IntEnum
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws import clients, tables
from replicator.aws.errors import error_code
from replicator.config.fields import REGION_PATTERN
from replicator.config.model import ResolvedJob, StreamKind
from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = structlog.get_logger(__name__)

OWNER_TAG = "replicator:source"
CLAIM_INTERVAL_S = 5.0  # until the table is claimed (the KCL creates it on a first start)
CHECK_INTERVAL_S = 60.0  # then: TagResource and its reads are limited per account
TAG_VALUE_LIMIT = 256  # DynamoDB's longest tag value
_DIGEST_MARK = "...sha256:"  # an identity too long for a tag ends in its digest
# What an endpoint answers for tag calls it does not offer (an emulator's answer; DynamoDB
# offers them): as for a role without the permissions, the job runs unchecked.
_NO_TAGS = frozenset({"UnknownOperationException", "NotImplemented", "NotImplementedException"})


class Claim(IntEnum):
    """How :func:`claim` found the lease table (false only while it does not exist)."""

    ABSENT = 0  # the table does not exist yet (the KCL creates it): claim it later
    CLAIMED = 1  # tagged for this job's source, now or before
    UNCHECKED = 2  # the tag cannot be read or written here (permissions, an emulator)


def source_identity(resolved: ResolvedJob, stream_arn: str) -> str:
    """What the job reads, as the tag names it: the source table's ARN (a DynamoDB
    stream's ARN less its ``/stream/<label>``, so that a stream enabled again keeps the
    table's owner), or a Kinesis data stream's ARN with the table (one data stream may
    carry several tables, each replicated by a job of its own)."""
    source = resolved.job.source
    if source.stream.kind is StreamKind.DYNAMODB_STREAMS:
        identity = stream_arn.split("/stream/", 1)[0]
    else:
        identity = f"{stream_arn} table {source.table}"
    if len(identity) <= TAG_VALUE_LIMIT:
        return identity
    # A name near DynamoDB's or Kinesis's longest: its end as a digest, still its own.
    suffix = f"{_DIGEST_MARK}{hashlib.sha256(identity.encode()).hexdigest()[:32]}"
    return identity[: TAG_VALUE_LIMIT - len(suffix)] + suffix


def claim(resolved: ResolvedJob, identity: str, client: DynamoDBClient | None = None) -> Claim:
    """Tag the lease table as this job's, or find it is already (:class:`Claim`).
    EnvironmentProblem when the tag names another source; any other error of AWS's
    (throttling, 5xx) is raised for the caller to try again."""
    source = resolved.job.source
    ddb = client if client is not None else clients.dynamodb(source)
    table = resolved.lease_table
    try:
        arn, owner = _owner_tag(ddb, table)
        if owner is None:
            ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": OWNER_TAG, "Value": identity}])
            log.info("lease table claimed for the job's source", lease_table=table, source=identity)
            return Claim.CLAIMED
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return Claim.ABSENT
        if error_code(error) in _NO_TAGS:
            log.warning(
                "the endpoint offers no tags: which job's leases the lease table holds is "
                "not checked (give each job a task_name of its own)",
                lease_table=table,
                error=str(error),
            )
            return Claim.UNCHECKED
        if error_code(error) == "AccessDeniedException":
            # A role written before the check (docs/security.md): the job runs unchecked
            # rather than not at all after an upgrade, and says what to grant.
            log.warning(
                "could not check which job's leases the lease table holds: grant "
                "dynamodb:ListTagsOfResource and dynamodb:TagResource on it "
                "(docs/security.md, LeaseTableOwnerTag)",
                lease_table=table,
                error=str(error),
            )
            return Claim.UNCHECKED
        raise
    if owner != identity:
        raise _another_jobs(resolved, owner, identity)
    return Claim.CLAIMED


def refuse_another_jobs(resolved: ResolvedJob, identity: str) -> None:
    """At a run's start, before it creates anything (a dead-letter directory, the owners
    file beside it recording this source for the task, tables): EnvironmentProblem when
    the lease table's tag names another source, as :func:`claim` finds later. A refused
    start had recorded its source beside the job's files, and the job of the right
    source was then refused by that record on the host. Any failure to read the tag
    leaves it to the claim, which tells them apart (:class:`Claim`).

    Then the same for the watermark's status tables, which a job of another source
    region shares under one task name though its lease table is another (see
    replicator/watermark/sources.py): a destination's part recording another source."""
    try:
        owner = _owner_tag(clients.dynamodb(resolved.job.source), resolved.lease_table)[1]
    except (ClientError, BotoCoreError):
        owner = None
    if owner is not None and owner != identity:
        raise _another_jobs(resolved, owner, identity)
    from replicator.watermark.sources import refuse_other_sources  # it imports this module

    refuse_other_sources(resolved, identity)


def _another_jobs(resolved: ResolvedJob, owner: str, identity: str) -> EnvironmentProblem:
    source = resolved.job.source
    table = resolved.lease_table
    where = tables.where(source.region, source.endpoint_url, source.role_arn)
    return EnvironmentProblem(
        f"lease table {table} at {where} is another job's: its tag {OWNER_TAG} names the "
        f"source {owner}, and this job reads {identity}. Jobs with one task_name share "
        "one lease table, and each would take the other's leases and checkpoints "
        "(reading none of its own changes); give this job a task_name of its own (if "
        f"this job's source was changed on purpose, stop its workers and delete the "
        f"lease table {table}: the new source is read from kcl.initial_position)"
    )


# A DynamoDB source's identity as source_identity writes it (not cut to a digest).
_TABLE_ARN = re.compile(r"arn:[^:]+:dynamodb:(?P<region>[^:]*):[^:]*:table/(?P<table>[^/]+)")
# How long a command waits for the tag: an endpoint answers the two calls in
# milliseconds, and the command's own reads keep their bound but for this.
_READ_BOUND_S = 2.0


def check_reader(resolved: ResolvedJob) -> None:
    """For a command that reads what the job's runs publish under its task name (the
    watermark's status tables): EnvironmentProblem when the lease table's tag names
    another source, whose runs published it. A job under another job's task name is
    refused by ``run``, and its ``wait`` would otherwise pass on the other job's
    watermark. The tag is compared by region and table, so that no call reaches the
    source table; a tag that cannot be read in :data:`_READ_BOUND_S` (no lease table
    yet, no permission to read tags, an endpoint without them, one that hangs, no
    credentials for the source) leaves the check undone, as a run leaves it unchecked:
    the status table is still read. For a DynamoDB stream's job (the watermark's): a
    Kinesis job's tag names another job."""
    found: list[str | None] = []

    def read() -> None:
        try:
            ddb = clients.dynamodb(
                resolved.job.source, connect_timeout=1.0, read_timeout=2.0, sdk_retries=False
            )
            found.append(_owner_tag(ddb, resolved.lease_table)[1])
        except BaseException:  # noqa: BLE001  # any failure leaves the check undone, as
            found.append(None)  # documented (and a thread's error would print a traceback)

    reader = threading.Thread(target=read, name="owner-tag-read", daemon=True)
    reader.start()
    reader.join(_READ_BOUND_S)
    owner = found[0] if found else None
    source = resolved.job.source
    if owner is None or _DIGEST_MARK in owner:
        return
    if _names_table(owner, source.region, source.table):
        return
    where = tables.where(source.region, source.endpoint_url, source.role_arn)
    raise EnvironmentProblem(
        f"lease table {resolved.lease_table} at {where} is another job's: its tag "
        f"{OWNER_TAG} names the source {owner}, and this job reads {source.region}/"
        f"{source.table}; what the task publishes (its watermark) is that job's, not "
        "this one's: give this job a task_name of its own"
    )


def _names_table(owner: str, region: str, table: str) -> bool:
    """Whether the tag ``owner`` names the DynamoDB table ``table`` in ``region`` (in
    whatever region, for an emulator that writes its own word where an ARN has it)."""
    match = _TABLE_ARN.fullmatch(owner)
    if match is None or match["table"] != table:
        return False
    return match["region"] == region or not REGION_PATTERN.fullmatch(match["region"])


def _owner_tag(ddb: DynamoDBClient, table: str) -> tuple[str, str | None]:
    """The lease table's ARN and its owner tag (None: it has none)."""
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    tags = ddb.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
    return arn, next((tag["Value"] for tag in tags if tag["Key"] == OWNER_TAG), None)
