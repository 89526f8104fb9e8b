"""Job files: schema, loading, and the derived task name."""

from replicator.config.loader import format_path, load_job, parse_job
from replicator.config.model import (
    ConflictConfig,
    ConflictPolicyName,
    DeadLetterKind,
    DestinationConfig,
    JobConfig,
    ResolvedJob,
    RuntimeKind,
    StreamKind,
    TtlDeletes,
)

__all__ = [
    "ConflictConfig",
    "ConflictPolicyName",
    "DeadLetterKind",
    "DestinationConfig",
    "JobConfig",
    "ResolvedJob",
    "RuntimeKind",
    "StreamKind",
    "TtlDeletes",
    "format_path",
    "load_job",
    "parse_job",
]
