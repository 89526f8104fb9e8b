"""Where the job's conflict log is (file, queue or table), read from the job alone.

Apart from the targets themselves (replicator/conflictlog/targets.py) so that showing a
job (``replicator validate``) imports no AWS SDK."""

from __future__ import annotations

from pathlib import Path

from replicator.aws.tables import where
from replicator.config.model import ConflictLogKind, ResolvedJob

NO_CONFLICT_LOG = "no conflict log (conflict_log.kind: none)"


def conflict_table(resolved: ResolvedJob) -> str:
    return resolved.job.conflict_log.table.format(task_name=resolved.task_name)


def conflict_log_path(resolved: ResolvedJob) -> Path:
    path = Path(resolved.job.conflict_log.path.format(task_name=resolved.task_name))
    return path if path.is_absolute() else Path.cwd() / path


def table_place(resolved: ResolvedJob) -> tuple[str, str | None, str | None]:
    """Region, endpoint and role of the table: the source's unless the section says."""
    settings = resolved.job.conflict_log
    source = resolved.job.source
    return (
        settings.region or source.region,
        settings.endpoint_url or source.endpoint_url,
        settings.role_arn or source.role_arn,
    )


def describe_target(resolved: ResolvedJob) -> str:
    """The target as ``replicator validate`` shows it (no client is made)."""
    settings = resolved.job.conflict_log
    if settings.kind is ConflictLogKind.FILE:
        return f"file {conflict_log_path(resolved)}"
    if settings.kind is ConflictLogKind.SQS:
        return f"SQS queue {settings.queue_url}"
    if settings.kind is ConflictLogKind.DYNAMODB:
        region, endpoint, _ = table_place(resolved)
        return (
            f"DynamoDB table {conflict_table(resolved)} ({where(region, endpoint)}), "
            f"kept {settings.retention_days} days"
        )
    return NO_CONFLICT_LOG
