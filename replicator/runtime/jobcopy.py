"""The job file a run's processors read: a copy of the text the run validated.

A processor child starts whenever a shard is taken (a lease takeover, a new shard after
a rollover), long after ``replicator run`` read the job. Reading the operator's file
then would let a Kubernetes ConfigMap update (its ``..data`` link swapped, the old
directory removed) fail every later processor with "job file not found", and an edit
change the configuration of some shards mid-run. So each runtime writes the validated
text into its private directory, points its processors at that copy, and tells them
the operator's path (``JOB_FILE_ENV``) to name in their messages.
"""

from __future__ import annotations

from pathlib import Path

from replicator.config.model import ResolvedJob

JOB_FILE_ENV = "REPLICATOR_JOB_FILE"


def write_job_copy(resolved: ResolvedJob, directory: Path) -> Path:
    """Write the text of the job this run validated into ``directory``; its path."""
    copy = directory / f"{resolved.task_name}.job.yaml"
    text = resolved.text if resolved.text is not None else resolved.path.read_text("utf-8")
    copy.write_text(text, encoding="utf-8")
    return copy
