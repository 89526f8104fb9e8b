"""Every number in a job file has an upper bound, and none is infinite or NaN: a value
past what a wait, a socket timeout or the KCL's Java long can hold passed ``validate``
and then failed the run (OverflowError, exit 1) or was printed as a property the KCL
cannot read. Each is refused naming the file and the key (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.test_config import MINIMAL, run_cli
from tests.config.test_job_checks import _refused
from tests.support.cli import in_process, validate_in_process

HUGE = "99999999999999999999999"


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        (
            "kcl: {idle_time_between_reads_ms: 10000000000000}",
            "kcl.idle_time_between_reads_ms",
            "must be at most 600000",
        ),
        (f"kcl: {{failover_time_ms: {HUGE}}}", "kcl.failover_time_ms", "must be at most 3600000"),
        # At most the default: the local runtime's stop deadlines are set for it.
        ("kcl: {shutdown_flush_ms: 20001}", "kcl.shutdown_flush_ms", "must be at most 20000"),
        ("kcl: {shutdown_flush_ms: 999}", "kcl.shutdown_flush_ms", "must be at least 1000"),
        (f"writer: {{retry: {{base_delay_ms: {HUGE}}}}}", "writer.retry.base_delay_ms", "600000"),
        (f"writer: {{retry: {{max_delay_ms: {HUGE}}}}}", "writer.retry.max_delay_ms", "600000"),
        (f"writer: {{access_denied_limit: {HUGE}}}", "writer.access_denied_limit", "10000"),
        (f"writer: {{max_buffered_changes: {HUGE}}}", "writer.max_buffered_changes", "100000"),
        ("writer: {connect_timeout_s: 1e9}", "writer.connect_timeout_s", "must be at most 600"),
        ("writer: {connect_timeout_s: .inf}", "writer.connect_timeout_s", "a finite number"),
        ("writer: {read_timeout_s: .nan}", "writer.read_timeout_s", "a finite number"),
        ("writer: {late_write_window_s: 601}", "writer.late_write_window_s", "must be at most 600"),
        ("writer: {late_write_window_s: -1}", "writer.late_write_window_s", "must be at least 0"),
        (
            "conflict_log: {kind: file, retry_for_s: .inf}",
            "conflict_log.retry_for_s",
            "a finite number",
        ),
        (
            "conflict_log: {kind: file, retry_for_s: 1e12}",
            "conflict_log.retry_for_s",
            "must be at most 86400",
        ),
        ("metrics: {stall_after_s: .inf}", "metrics.stall_after_s", "a finite number"),
        ("metrics: {stall_after_s: 1e300}", "metrics.stall_after_s", "must be at most 86400"),
        (
            "runtime: kcl\nkcl: {extra_properties: {maxThroughputPerHostKBps: 1e999}}",
            "kcl.extra_properties.maxThroughputPerHostKBps",
            "'1e999' is beyond the largest number the KCL reads (a Java double)",
        ),
    ],
)
def test_a_number_past_its_bound_is_refused_naming_the_key(
    tmp_path: Path, section: str, key: str, says: str
) -> None:
    _refused(tmp_path, MINIMAL + section + "\n", key, says)


@pytest.mark.parametrize("command", ["run", "properties"])
def test_run_and_properties_refuse_a_failover_time_past_a_java_long(
    tmp_path: Path, command: str
) -> None:
    """``properties`` printed failoverTimeMillis (and the shutdownGraceMillis made of it)
    beyond what the KCL's Java long holds; ``run`` crashed on the local runtime's wait."""
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL + f"runtime: kcl\nkcl: {{failover_time_ms: {HUGE}, "
        f"idle_time_between_reads_ms: {HUGE}}}\n"
    )
    # run as a process of its own; properties, which only reads the file, in this process
    result = (run_cli if command == "run" else in_process)(command, "--config", str(job))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert f"{job}: 2 problems in the job file" in result.stderr
    assert "  kcl.failover_time_ms (line 6): " in result.stderr
    assert "  kcl.idle_time_between_reads_ms (line 6): " in result.stderr


def test_every_number_at_its_bound_is_accepted(tmp_path: Path) -> None:
    """The bounds are the documented ones, and the largest grace the KCL is given (20 s
    + kcl.failover_time_ms + 10 s) is a Java long."""
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL + "runtime: kcl\n"
        "kcl: {idle_time_between_reads_ms: 600000, failover_time_ms: 3600000}\n"
        "writer: {max_buffered_changes: 100000, access_denied_limit: 10000,\n"
        "         connect_timeout_s: 600, read_timeout_s: 600, late_write_window_s: 600,\n"
        "         retry: {base_delay_ms: 600000, max_delay_ms: 600000}}\n"
        "conflict_log: {kind: file, retry_for_s: 86400}\n"
        "metrics: {stall_after_s: 86400}\n"
    )
    assert validate_in_process(job).returncode == 0
    result = in_process("properties", "--config", str(job))
    assert result.returncode == 0, result.stderr
    assert "\nshutdownGraceMillis = 3630000\n" in result.stdout
    assert "\nidleTimeBetweenReadsInMillis = 600000\n" in result.stdout


@pytest.mark.parametrize(
    ("section", "key", "written"),
    [
        ("watermark: {publish_interval_ms: '1e3'}", "watermark.publish_interval_ms", "1000"),
        ("writer: {max_in_flight: '${IN_FLIGHT:-1.0e+2}'}", "writer.max_in_flight", "100"),
        ("kcl: {failover_time_ms: '1000.0'}", "kcl.failover_time_ms", "1000"),
        (
            "kcl: {extra_properties: {maxLeasesForWorker: '1e3'}}",
            "kcl.extra_properties.maxLeasesForWorker",
            "1000",
        ),
        # No whole number, or none that any key takes: nothing to suggest.
        ("watermark: {publish_interval_ms: '1.5'}", "watermark.publish_interval_ms", None),
        ("watermark: {publish_interval_ms: '1e30'}", "watermark.publish_interval_ms", None),
        (
            "kcl: {extra_properties: {maxLeasesForWorker: '1.5e0'}}",
            "kcl.extra_properties.maxLeasesForWorker",
            None,
        ),
    ],
)
def test_a_whole_number_written_as_decimal_text_is_refused_saying_what_to_write(
    tmp_path: Path, section: str, key: str, written: str | None
) -> None:
    """Quoted, or from a ``${VAR}``, ``1e3`` is text that no whole-number key (nor the
    KCL's Long.parseLong) reads: the refusal said only "unable to parse string as an
    integer", or quoted it as no whole number at all."""
    line = _refused(tmp_path, MINIMAL + section + "\n", key, "(line 5)")
    if written is None:
        assert "write" not in line, line
    else:
        assert "plain integer" in line and line.endswith(f": write {written}"), line


def test_yaml_s_number_1e3_is_a_thousand_for_whole_number_keys_and_kcl_properties(
    tmp_path: Path,
) -> None:
    """A whole-number KCL property took YAML's 1e3 as the float it reads as and refused
    ``'1000.0'``, while the job's own whole-number keys take it as 1000."""
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL + "runtime: kcl\nwatermark: {publish_interval_ms: 1e3}\n"
        "kcl: {failover_time_ms: 1.5e4, extra_properties: {maxLeasesForWorker: 1e3,\n"
        "      leaseAssignmentIntervalMillis: 2.0e+3, maxThroughputPerHostKBps: 1e3}}\n"
    )
    validated = validate_in_process(job)
    assert validated.returncode == 0, validated.stderr
    assert "every 1000 ms" in validated.stdout
    result = in_process("properties", "--config", str(job))
    assert result.returncode == 0, result.stderr
    assert "\nmaxLeasesForWorker = 1000\n" in result.stdout
    assert "\nleaseAssignmentIntervalMillis = 2000\n" in result.stdout
    assert "\nmaxThroughputPerHostKBps = 1000.0\n" in result.stdout
    assert "\nfailoverTimeMillis = 15000\n" in result.stdout
