"""The KCL properties file for a job, rendered from the templates in ``properties/``.

The task name becomes the KCL ``applicationName``, which the KCL uses as the lease
table's name; the executable is this package's record processor, run with the job
file, so that the daemon's children read exactly the job the operator validated.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path
from string import Template

from replicator.config.model import JobConfig, OnTrimmedData, ResolvedJob, StreamKind
from replicator.exceptions import KclUnavailable

TEMPLATE_ENV = "REPLICATOR_PROPERTIES_DIR"
# How much longer than the failover time a graceful stop may take (KCL 2.x spends about
# the failover time in it: it waits for the leases it held to be given up).
SHUTDOWN_GRACE_MARGIN_MS = 10_000


def shutdown_grace_ms(job: JobConfig) -> int:
    """The daemon's shutdownGraceMillis: ``kcl.extra_properties`` may set it explicitly."""
    explicit = job.kcl.extra_properties.get("shutdownGraceMillis")
    if explicit is not None and explicit.strip().isdigit():
        return int(explicit)
    return job.kcl.failover_time_ms + SHUTDOWN_GRACE_MARGIN_MS


def templates_dir() -> Path:
    """``$REPLICATOR_PROPERTIES_DIR``, else the repository's or the installed copy."""
    candidates = []
    if os.environ.get(TEMPLATE_ENV):
        candidates.append(Path(os.environ[TEMPLATE_ENV]))
    candidates.append(Path(__file__).resolve().parents[3] / "properties")
    candidates.append(Path(sys.prefix) / "share" / "dynamodb-replicator" / "properties")
    for candidate in candidates:
        if (candidate / "kinesis.properties").is_file():
            return candidate
    raise KclUnavailable(
        "cannot find the KCL properties templates (looked in "
        + ", ".join(str(c) for c in candidates)
        + f"); set {TEMPLATE_ENV}"
    )


def processor_executable(job_file: Path) -> str:
    """The daemon splits executableName on spaces, so the paths must not contain any."""
    parts = [sys.executable, "-m", "replicator", "processor", "--config", str(job_file)]
    for part in parts:
        if any(c.isspace() for c in part):
            raise KclUnavailable(
                f"the KCL cannot run a processor from a path with spaces: {part!r}"
            )
    return " ".join(shlex.quote(p) if "'" in p else p for p in parts)


def stream_name(resolved: ResolvedJob) -> str:
    stream = resolved.job.source.stream
    if stream.name:
        return stream.name
    if stream.arn and ":stream/" in stream.arn:
        return stream.arn.rsplit(":stream/", 1)[1]
    return stream.arn or ""


def render_properties(
    resolved: ResolvedJob,
    *,
    worker_id: str | None = None,
    stream_arn: str | None = None,
) -> str:
    job = resolved.job
    source = job.source
    kind = source.stream.kind
    template = "kinesis" if kind is StreamKind.KINESIS else "dynamodb-streams"
    text = (templates_dir() / f"{template}.properties").read_text(encoding="utf-8")
    endpoint_lines = ""
    if source.endpoint_url:
        endpoint_lines = (
            f"kinesisEndpoint = {source.endpoint_url}\ndynamoDBEndpoint = {source.endpoint_url}\n"
        )
    extra_lines = "".join(f"{key} = {value}\n" for key, value in job.kcl.extra_properties.items())
    values = {
        "job_file": str(resolved.path),
        "executable": processor_executable(resolved.path.resolve()),
        "stream_name": stream_name(resolved),
        "stream_line": (
            f"dynamoDBStreamArn = {stream_arn or source.stream.arn}"
            if stream_arn or source.stream.arn
            else f"# dynamoDBStreamArn: the latest stream of table {source.table}, "
            "looked up by `replicator run`"
        ),
        "table": source.table,
        "task_name": resolved.task_name,
        "region": source.region,
        "worker_id": worker_id or job.kcl.worker_id or socket.gethostname(),
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
        "extra_lines": extra_lines,
    }
    return Template(text).safe_substitute(values)
