"""Log lines: JSON with the job and task on every line of the runtime's own process."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import structlog

from replicator import logs
from replicator.config import parse_job
from replicator.runtime import supervisor

JOB = """
source: {region: us-east-1, table: orders}
destinations:
  - {region: eu-west-1, table: orders}
task_name: orders-sync
logging: {format: json}
"""


def test_the_runtimes_own_lines_name_the_job_and_task(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolved = parse_job(JOB, tmp_path / "job.yaml")
    original = sys.stderr  # logging is pointed back at it: the buffer goes with the test
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    try:
        supervisor.begin(resolved, "local")
        structlog.get_logger("test").info("local runtime started")
        line = captured.getvalue().strip().splitlines()[-1]
    finally:
        logs._GLOBAL_FIELDS.clear()
        logs.configure("info", "json", original)
    fields = json.loads(line)
    assert fields["job"] == str(tmp_path / "job.yaml")
    assert (fields["task"], fields["runtime"]) == ("orders-sync", "local")


def test_jvm_password_options_are_redacted_wherever_they_show() -> None:
    """$REPLICATOR_KCL_JVM_OPTIONS can carry proxy or trust-store passwords; the daemon's
    output and the launcher's errors pass through redact()."""
    from replicator.logs import REDACTED, redact

    text = redact(
        "java -Xmx1g -Dhttps.proxyPassword=hunter22 "
        '-Djavax.net.ssl.trustStorePassword="two words" -Dhttp.proxyHost=proxy'
    )
    assert "hunter22" not in text and "two words" not in text and "words" not in text
    assert f"-Dhttps.proxyPassword={REDACTED}" in text
    assert "-Dhttp.proxyHost=proxy" in text and "-Xmx1g" in text
