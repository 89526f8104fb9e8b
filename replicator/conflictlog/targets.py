"""From the job's ``conflict_log`` section to a target, a recorder, and a ready table."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.appendfile import why_not_appendable
from replicator.aws import clients
from replicator.aws.clients import Place
from replicator.aws.queues import check_exists
from replicator.aws.tables import where
from replicator.config.loader import refuse_directory
from replicator.config.model import ConflictLogKind, ResolvedJob, sqs_region
from replicator.conflictlog.base import ConflictLogTarget, Selection, StoreOutcome
from replicator.conflictlog.dynamodb import DynamoDbConflictLog
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.file import FileConflictLog
from replicator.conflictlog.places import (
    NO_CONFLICT_LOG,
    conflict_log_path,
    conflict_table,
    table_place,
)
from replicator.conflictlog.recorder import BackgroundRecorder
from replicator.conflictlog.sqs import SqsConflictLog
from replicator.exceptions import EnvironmentProblem
from replicator.metrics import Metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = structlog.get_logger(__name__)


class NoConflictLog:
    """``kind: none``: lost conflicts are counted and logged at debug level only."""

    description = NO_CONFLICT_LOG

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def put(self, entry: ConflictEntry) -> None:
        return None

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        return [None] * len(entries)

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        return iter(())


def _table_client(resolved: ResolvedJob, sdk_retries: bool) -> tuple[DynamoDBClient, str]:
    source = resolved.job.source
    region, endpoint, role = table_place(resolved)
    client = clients.dynamodb(
        Place(region, endpoint, role, source.external_id if role == source.role_arn else None),
        connect_timeout=3.0,
        read_timeout=5.0,
        sdk_retries=sdk_retries,
    )
    return client, where(region, endpoint)


def conflict_log_target(resolved: ResolvedJob, *, sdk_retries: bool = True) -> ConflictLogTarget:
    """The job's target. The recorder retries by itself (``sdk_retries=False``)."""
    settings = resolved.job.conflict_log
    if settings.kind is ConflictLogKind.FILE:
        return FileConflictLog(conflict_log_path(resolved))
    if settings.kind is ConflictLogKind.SQS:
        assert settings.queue_url
        region = sqs_region(settings, resolved.job.source.region)
        queue = clients.sqs(
            Place(region, settings.endpoint_url, settings.role_arn),
            connect_timeout=3.0,
            read_timeout=10.0,
            sdk_retries=sdk_retries,
        )
        return SqsConflictLog(queue, settings.queue_url, where(region, settings.endpoint_url))
    if settings.kind is ConflictLogKind.DYNAMODB:
        client, place = _table_client(resolved, sdk_retries)
        return DynamoDbConflictLog(client, conflict_table(resolved), settings.retention_days, place)
    return NoConflictLog()


def recorder_for(resolved: ResolvedJob, metrics: Metrics) -> BackgroundRecorder | None:
    """The processor's recorder, or None when the job keeps no conflict log."""
    settings = resolved.job.conflict_log
    if settings.kind is ConflictLogKind.NONE:
        return None
    return BackgroundRecorder(
        conflict_log_target(resolved, sdk_retries=False),
        metrics,
        max_pending=settings.max_pending,
        retry_for_s=settings.retry_for_s,
    )


def prepare(resolved: ResolvedJob) -> None:
    """Make the conflict log ready before replication starts.

    A DynamoDB table is created (with its TTL) when missing, and a file's directory; a
    queue that does not exist stops the start, one with a redrive policy is warned
    about (listings move its entries away);
    what only the operator can fix (access denied, a name DynamoDB refuses, a
    directory that cannot be created) stops the start with EnvironmentProblem, and a
    file path that names a directory as a problem of the job file. An outage does not:
    replication starts, and entries are retried and counted.
    """
    settings = resolved.job.conflict_log
    if settings.kind is ConflictLogKind.FILE:
        refuse_directory(resolved, "conflict_log")
        path = conflict_log_path(resolved)
        problem = why_not_appendable(path)
        if problem is not None:
            raise EnvironmentProblem(
                f"conflict_log.path: the conflict log {path} cannot be written: {problem}"
            )
        return
    if settings.kind is ConflictLogKind.SQS:
        queue = conflict_log_target(resolved, sdk_retries=False)  # one try: only a warning
        assert isinstance(queue, SqsConflictLog)
        region = sqs_region(settings, resolved.job.source.region)
        try:
            if not check_exists(
                queue.client,
                queue.queue_url,
                "conflict_log.queue_url",
                "conflict-log queue",
                where(region, settings.endpoint_url, settings.role_arn),
            ):
                return
            warning = queue.redrive_warning()
        except (ClientError, BotoCoreError) as error:
            log.info("conflict-log queue's redrive policy not checked", error=str(error))
            return
        if warning:
            log.warning(warning)
        return
    if settings.kind is not ConflictLogKind.DYNAMODB:
        return
    target = conflict_log_target(resolved)
    assert isinstance(target, DynamoDbConflictLog)
    try:
        target.ensure_exists()
    except (ClientError, BotoCoreError) as error:
        log.error(
            "conflict-log table not ready; replicating anyway, entries are retried and counted",
            table=target.table,
            where=target.where,
            error=str(error),
        )
