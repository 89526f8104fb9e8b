"""Job files: every example validates; broken ones fail with the key path named."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from replicator.config.loader import load_job, parse_job
from replicator.config.task_name import PREFIX
from replicator.exceptions import ConfigError
from tests.support import ROOT
from tests.support.cli import in_process, validate_in_process

EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))

MINIMAL = """
source: {region: us-east-1, table: orders}
destinations:
  - {region: eu-west-1, table: orders}
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


@contextmanager
def forget_modules(directory: Path) -> Iterator[None]:
    """Modules imported from ``directory`` (a job's custom resolvers, imported by a command
    run in this process) are forgotten on the way out: a later test's module of the same
    name, in its own directory, is imported afresh, not found already loaded."""
    try:
        yield
    finally:
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None)
            if where is not None and Path(where).is_relative_to(directory):
                del sys.modules[name]


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "one-way.yaml",
        "two-destinations.yaml",
        "active-active-us-east-1.yaml",
        "active-active-eu-west-1.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    """The first example as a process of its own, the others in this process: checking
    a job file is all that ``validate`` does."""
    run = run_cli if path == EXAMPLES[0] else in_process
    result = run("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "task name:" in result.stdout


def test_default_task_name_is_the_java_replicators_for_one_destination() -> None:
    resolved = parse_job(MINIMAL, Path("job.yaml"))
    digest = hashlib.md5(b"us-east-1orderseu-west-1orders").hexdigest()
    assert resolved.task_name == PREFIX + digest
    assert resolved.lease_table == resolved.task_name


def test_task_name_for_several_destinations_ignores_their_order() -> None:
    a = parse_job(MINIMAL + "  - {region: ap-south-1, table: t22}\n", Path("a.yaml"))
    b = parse_job(
        "source: {region: us-east-1, table: orders}\ndestinations:\n"
        "  - {region: ap-south-1, table: t22}\n  - {region: eu-west-1, table: orders}\n",
        Path("b.yaml"),
    )
    digest = hashlib.md5(b"us-east-1ordersap-south-1t22eu-west-1orders").hexdigest()
    assert a.task_name == b.task_name == PREFIX + digest


def test_explicit_task_name_wins() -> None:
    resolved = parse_job("task_name: my-job\n" + MINIMAL, Path("job.yaml"))
    assert resolved.task_name == "my-job"


def test_environment_variables_expand_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRC_TABLE", "from-env")
    monkeypatch.delenv("PORT_UNSET", raising=False)
    resolved = parse_job(
        "source: {region: us-east-1, table: '${SRC_TABLE}'}\n"
        "destinations: [{region: eu-west-1, table: 'x-${SRC_TABLE}'}]\n"
        "metrics: {port: '${PORT_UNSET:-9555}'}\n",
        Path("job.yaml"),
    )
    assert resolved.job.source.table == "from-env"
    assert resolved.job.destinations[0].table == "x-from-env"
    assert resolved.job.metrics.port == 9555


def test_a_switch_from_a_variable_is_the_word_true_or_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``${VAR}`` expansion always gives text, so a switch takes the words true and
    false as text too (and nothing else: see BROKEN)."""
    monkeypatch.setenv("METRICS_ON", "False")
    resolved = parse_job(
        MINIMAL + "metrics: {enabled: '${METRICS_ON}'}\nwatermark: {enabled: 'true'}\n",
        Path("job.yaml"),
    )
    assert resolved.job.metrics.enabled is False
    assert resolved.job.watermark.enabled is True


BROKEN = {
    "unknown-key": (MINIMAL + "conflcit: {policy: overwrite}\n", "conflcit", "unknown key"),
    "bad-region": (
        "source: {region: us-east-1, table: orders}\n"
        "destinations:\n  - {region: eu-west-1, table: aaa}\n  - {region: Europe, table: bbb}\n",
        "destinations[1].region",
        "AWS region",
    ),
    "missing-table": (
        "source: {region: us-east-1}\ndestinations: [{region: eu-west-1, table: aaa}]\n",
        "source.table",
        "required key is missing",
    ),
    "no-destinations": (
        "source: {region: us-east-1, table: aaa}\ndestinations: []\n",
        "destinations",
        "at least 1",
    ),
    "lww-without-attribute": (
        MINIMAL + "conflict: {policy: last_writer_wins}\n",
        "conflict",
        "timestamp_attribute",
    ),
    "bad-policy": (MINIMAL + "conflict: {policy: newest}\n", "conflict.policy", "overwrite"),
    "destination-override": (
        MINIMAL.replace("table: orders}", "table: orders, conflict: {policy: version}}"),
        "destinations[0].conflict",
        "version_attribute",
    ),
    "kinesis-overwrite": (
        "source: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: s}}\n"
        "destinations: [{region: eu-west-1, table: aaa}]\n",
        "conflict.policy",
        "is overwrite, the default (the job file gives none): a kinesis stream may deliver "
        "an item's changes out of order; use last_writer_wins, version or custom",
    ),
    "kinesis-overwrite-destination": (
        "runtime: kcl\nsource: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: s}}\n"
        "conflict: {policy: version, version_attribute: v}\n"
        "destinations: [{region: eu-west-1, table: aaa, conflict: {policy: overwrite}}]\n",
        "destinations[0].conflict.policy",
        "a kinesis stream may deliver an item's changes out of order; use last_writer_wins, "
        "version or custom",
    ),
    "kinesis-watermark-on": (
        "runtime: kcl\nsource: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: s}}\n"
        "conflict: {policy: version, version_attribute: v}\n"
        "destinations: [{region: eu-west-1, table: aaa}]\nwatermark: {enabled: true}\n",
        "watermark.enabled",
        "the watermark needs a DynamoDB Streams source",
    ),
    "same-as-source": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations: [{region: us-east-1, table: aaa}]\n",
        "destinations[0]",
        "source table itself",
    ),
    "unset-variable": (
        MINIMAL + "metrics: {port: '${REPLICATOR_TEST_UNSET}'}\n",
        "metrics.port",
        "REPLICATOR_TEST_UNSET",
    ),
    "bad-role": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations: [{region: eu-west-1, table: aaa, role_arn: my-role}]\n",
        "destinations[0].role_arn",
        "role ARN",
    ),
    "bad-resolver": (
        MINIMAL + "conflict: {policy: custom, resolver: 'not a path'}\n",
        "conflict.resolver",
        "must look like module.path:function, got 'not a path'",
    ),
    "port-range": (MINIMAL + "metrics: {port: 70000}\n", "metrics.port", "65535"),
    "empty-metrics-host": (
        MINIMAL + "metrics: {host: ''}\n",
        "metrics.host",
        "must name the address to listen on",
    ),
    "kcl-at-timestamp": (
        MINIMAL + "runtime: kcl\nkcl: {initial_position: AT_TIMESTAMP}\n",
        "kcl.initial_position",
        "DynamoDB Streams Kinesis Adapter",
    ),
    "kcl-at-timestamp-property": (
        MINIMAL
        + "runtime: kcl\nkcl: {extra_properties: {initialPositionInStream: AT_TIMESTAMP}}\n",
        "kcl.extra_properties.initialPositionInStream",
        "only at TRIM_HORIZON or LATEST",
    ),
    "kcl-start-time-property": (
        MINIMAL
        + "runtime: kcl\n"
        + "kcl: {extra_properties: {initialPositionInStreamExtended: '1700000000'}}\n",
        "kcl.extra_properties.initialPositionInStreamExtended",
        "is '1700000000': the KCL reads this property as a time",
    ),
    "kcl-start-time-property-kinesis": (
        MINIMAL.replace("orders}", "orders, stream: {kind: kinesis, name: s}}", 1)
        + "runtime: kcl\n"
        + "kcl: {extra_properties: {initialPositionInStreamExtended: '1700000000'}}\n",
        "kcl.extra_properties.initialPositionInStreamExtended",
        "set the same start position",
    ),
    "kcl-property-yes": (
        MINIMAL
        + "runtime: kcl\n"
        + "kcl: {extra_properties: {callProcessRecordsEvenForEmptyRecordList: yes}}\n",
        "kcl.extra_properties.callProcessRecordsEvenForEmptyRecordList",
        "write true or false",
    ),
    "kcl-numeric-property-yes": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {maxLeasesForWorker: yes}}\n",
        "kcl.extra_properties.maxLeasesForWorker",
        "write true or false for a boolean property, a number for a numeric one",
    ),
    "kcl-table-name-property": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {tableName: other-leases}}\n",
        "kcl.extra_properties.tableName",
        "set task_name",
    ),
    "kcl-numeric-property-not-a-number": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {maxLeasesForWorker: lots}}\n",
        "kcl.extra_properties.maxLeasesForWorker",
        "'lots' is not a whole number",
    ),
    "kcl-numeric-property-a-fraction": (
        MINIMAL
        + "runtime: kcl\nkcl: {extra_properties: {workerMetricsReporterFreqInMillis: 1.5}}\n",
        "kcl.extra_properties.workerMetricsReporterFreqInMillis",
        "'1.5' is not a whole number",
    ),
    "kcl-numeric-property-negative": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {leaseAssignmentIntervalMillis: -5}}\n",
        "kcl.extra_properties.leaseAssignmentIntervalMillis",
        "'-5' is negative: it is a count, a size or a time, 0 or more",
    ),
    "kcl-max-leases-zero": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {maxLeasesForWorker: 0}}\n",
        "kcl.extra_properties.maxLeasesForWorker",
        "would still let the worker take a lease (KCL 3 gives one to a worker holding none",
    ),
    "kcl-max-leases-negative": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {maxLeasesForWorker: -1}}\n",
        "kcl.extra_properties.maxLeasesForWorker",
        "'-1' is negative: it is a count of leases, 1 or more",  # not "0 or more", refused too
    ),
    "kcl-decimal-property-not-a-number": (
        MINIMAL + "runtime: kcl\nkcl: {extra_properties: {workerMetricsEMAAlpha: half}}\n",
        "kcl.extra_properties.workerMetricsEMAAlpha",
        "'half' is not a number",
    ),
    "kcl-credentials-provider-not-a-class": (
        MINIMAL
        + "runtime: kcl\nkcl: {extra_properties: {AWSCredentialsProvider: 'my provider'}}\n",
        "kcl.extra_properties.AWSCredentialsProvider",
        "does not name a credentials provider",
    ),
    "active-active-destination-ranks-otherwise": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: aaa, conflict: {policy: version, version_attribute: ver}}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
        "active_active: {tombstones: true}\n",
        "destinations[0].conflict",
        "every destination must rank like the job",
    ),
    "destination-name-reserved": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations: [{region: eu-west-1, table: aaa, name: 'source:us-east-1/aaa'}]\n",
        "destinations[0].name",
        "reserved for the writer of the job's own source table",
    ),
    "tombstone-table-without-table": (
        MINIMAL + "active_active: {tombstone_table: tombstones}\n",
        "active_active.tombstone_table",
        "must contain {table}",
    ),
    "tombstone-table-is-a-job-table": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations: [{region: us-east-1, table: aaa-t}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
        "active_active: {tombstones: true, tombstone_table: '{table}-t'}\n",
        "active_active.tombstone_table",
        "one of the job's own tables",
    ),
    "tombstone-table-is-the-lease-table": (
        "task_name: shop-tombstones\n"
        "source: {region: us-east-1, table: shop}\n"
        "destinations: [{region: eu-west-1, table: shop}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
        "active_active: {tombstones: true}\n",
        "active_active.tombstone_table",
        "'shop-tombstones' in us-east-1 for the table 'shop', which is one of the job's own "
        "tables (its lease table, named task_name)",
    ),
    "tombstone-table-is-the-watermark-table": (
        "task_name: shop\n"
        "source: {region: us-east-1, table: shop}\n"
        "destinations: [{region: eu-west-1, table: shop}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
        "active_active: {tombstones: true, tombstone_table: '{table}-watermark'}\n",
        "active_active.tombstone_table",
        "'shop-watermark' in eu-west-1 for the table 'shop', which is one of the job's own "
        "tables (its watermark table)",
    ),
    "tombstone-table-is-the-conflict-log": (
        "task_name: shop\n"
        "source: {region: us-east-1, table: shop}\n"
        "destinations: [{region: eu-west-1, table: shop}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
        "conflict_log: {kind: dynamodb, table: '{task_name}-tombstones'}\n"
        "active_active: {tombstones: true}\n",
        "active_active.tombstone_table",
        "(its conflict log, conflict_log.table)",
    ),
    "tombstone-table-pattern-with-the-real-table": (
        "source: {region: us-east-1, table: carts}\n"
        "destinations: [{region: eu-west-1, table: carts}]\n"
        "active_active: {tombstones: true, tombstone_table: '{table}/t'}\n",
        "active_active.tombstone_table",
        "gives 'carts/t' (7 characters) for the table 'carts'",
    ),
    "tombstone-table-too-long-for-a-long-table": (
        f"source: {{region: us-east-1, table: {'t' * 250}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "active_active: {tombstones: true}\n",
        "active_active.tombstone_table",
        "(261 characters) for the table 'tttttttttttttttttttttttttttttttttttttttt'… (250 "
        "characters), which is not a DynamoDB table name",
    ),
    "timestamp-attribute-is-the-origin-attribute": (
        MINIMAL + "conflict: {policy: last_writer_wins, timestamp_attribute: origin}\n"
        "loop_prevention: {origin_attribute: origin}\n",
        "conflict.timestamp_attribute",
        "is 'origin', which is also loop_prevention.origin_attribute",
    ),
    "destination-version-attribute-is-the-origin-attribute": (
        "source: {region: us-east-1, table: aaa}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: aaa, conflict: {policy: version, version_attribute: o}}\n"
        "conflict: {policy: version, version_attribute: v}\n"
        "loop_prevention: {origin_attribute: o}\n"
        "active_active: {write_back: false}\n",
        "destinations[0].conflict.version_attribute",
        "also loop_prevention.origin_attribute",
    ),
    "retention-hours-given-a-switch": (
        MINIMAL + "active_active: {tombstone_retention_hours: true}\n",
        "active_active.tombstone_retention_hours",
        "expected a number, got true",
    ),
    "switch-given-a-number": (
        MINIMAL + "active_active: {write_back: 1}\n",
        "active_active.write_back",
        "expected true or false, got 1",
    ),
    "switch-given-another-word": (
        MINIMAL + "metrics: {enabled: 'yes'}\n",
        "metrics.enabled",
        "expected true or false, got 'yes'",
    ),
    "kcl-cloudwatch-with-local-endpoint": (
        "runtime: kcl\n"
        "source: {region: us-east-1, table: aaa, endpoint_url: 'http://127.0.0.1:8000'}\n"
        "destinations: [{region: eu-west-1, table: aaa}]\n"
        "kcl: {extra_properties: {metricsLevel: SUMMARY}}\n",
        "kcl.extra_properties.metricsLevel",
        "CloudWatch in AWS",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_job_files_exit_2_naming_the_key(name: str, tmp_path: Path) -> None:
    text, key_path, expected = BROKEN[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr
    assert f"  {key_path} (line" in result.stderr or f"  {key_path}:" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_an_active_active_job_whose_destination_ranks_otherwise_does_not_write_back() -> None:
    """write_back is on by default only where every destination ranks like the job."""
    text = (
        "source: {region: us-east-1, table: orders}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: orders,\n"
        "     conflict: {policy: version, version_attribute: v}}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
    )
    assert not parse_job(text, Path("job.yaml")).job.writes_back
    assert parse_job(
        text.replace("version, version_attribute: v", "last_writer_wins, timestamp_attribute: ts"),
        Path("job.yaml"),
    ).job.writes_back


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "runtime: lokal\nsource: {region: x, table: orders}\n"
        "destinations: [{region: eu-west-1}]\nextra: 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    message = str(caught.value)
    for key in ("runtime", "source.region", "destinations[0].table", "extra"):
        assert f"  {key} (line" in message
    assert "4 problems" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("source:\n  region: us-east-1\n  table: [orders\ndestinations: []\n")
    result = validate_in_process(path)
    assert result.returncode == 2
    assert "YAML syntax error at line" in result.stderr
    assert str(path) in result.stderr


def test_validate_warns_of_an_endpoint_variable_that_run_would_stop_on(tmp_path: Path) -> None:
    """``run`` stops with exit 3 on an endpoint variable that is no URL where it takes
    it; ``validate``, which reads the environment already, said nothing of it. Only the
    services the job calls without an endpoint_url count (STS: for a role_arn)."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL)
    bad = {
        "AWS_ENDPOINT_URL": "garbage",
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:1 ",
        "AWS_ENDPOINT_URL_STS": "127.0.0.1:2",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000",
    }

    def warned(env: dict[str, str | None]) -> list[str]:
        result = validate_in_process(path, env=env)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if "not usable as an endp" in line]

    # DynamoDB's own variable is good; the stream's client takes the general one.
    assert warned({**bad}) == [
        f"warning: {path}: $AWS_ENDPOINT_URL ('garbage') is not usable as an endpoint: "
        "it must start with http:// or https://; `run` stops on it (exit 3) where the job "
        "file gives no endpoint_url",
    ]
    path.write_text(
        MINIMAL.replace(
            "table: orders}\ndest", "table: orders, endpoint_url: 'http://h:1'}\ndest"
        ).replace(
            "eu-west-1, table: orders}",
            "eu-west-1, table: orders, role_arn: 'arn:aws:iam::123456789012:role/w'}",
        )
        + "dead_letter: {kind: sqs, queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/dl'}\n"
    )
    assert warned({**bad}) == [
        f"warning: {path}: $AWS_ENDPOINT_URL_SQS ('http://127.0.0.1:1 ') is not usable as an "
        "endpoint: it contains whitespace or a control character; `run` stops on it (exit 3) "
        "where the job file gives no endpoint_url",
        f"warning: {path}: $AWS_ENDPOINT_URL_STS ('127.0.0.1:2') is not usable as an endpoint: "
        "it must start with http:// or https://; `run` stops on it (exit 3) when it assumes "
        "the job's role_arn",
    ]
    assert warned({**bad, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}) == []


def test_a_missing_job_file_named_by_replicator_config_says_where_the_name_came_from(
    tmp_path: Path,
) -> None:
    """``docker run`` without the job file mounted: the image's REPLICATOR_CONFIG names
    a file the command line never showed."""
    missing = str(tmp_path / "job.yaml")
    result = in_process("run", env={"REPLICATOR_CONFIG": missing})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--config' / '-c': {missing!r}, from $REPLICATOR_CONFIG: "
        "job file not found (mount or write the job file there, or give --config)"
    )
    given = in_process("validate", "--config", missing, env={"REPLICATOR_CONFIG": missing})
    assert given.stderr == f"replicator: {missing}: job file not found\n"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "job file not found" in result.stderr


@pytest.mark.parametrize(
    "command", ["validate", "run", "verify", "backfill", "redrive", "conflicts", "processor"]
)
def test_a_job_file_in_a_loop_of_symbolic_links_is_refused_as_the_job_files_problem(
    tmp_path: Path, command: str
) -> None:
    """Exit 2 and one line from every command, where the commands that name the job by
    its resolved path met Python's RuntimeError first (a traceback, exit 1)."""
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    result = in_process(command, "--config", str(tmp_path / "a.yaml"))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"replicator: {tmp_path / 'a.yaml'}: cannot read job file: "
        "Too many levels of symbolic links\n"
    )


@pytest.mark.parametrize(
    ("content", "byte", "offset", "line"),
    [
        (b"\xff\xfe bad\n", "0xff", 0, 1),  # UTF-16's byte order mark
        (MINIMAL.encode() + b"# caf\xe9, in Latin-1\n", "0xe9", len(MINIMAL) + 5, 5),
    ],
)
def test_a_job_file_that_is_not_utf8_is_one_line_naming_the_byte(
    tmp_path: Path, content: bytes, byte: str, offset: int, line: int
) -> None:
    path = tmp_path / "j.yaml"
    path.write_bytes(content)
    result = (run_cli if line == 1 else in_process)("validate", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"replicator: {path}: not UTF-8 text: byte {byte} at offset {offset} (line {line}); "
        "job files are UTF-8\n"
    )


def test_loop_prevention_under_overwrite_is_valid_but_warned(tmp_path: Path) -> None:
    """A pair under overwrite can swap items for good; validate says so, and an ordered
    policy, or no loop prevention, gets no warning."""
    loop = "loop_prevention: {origin_attribute: origin_region}\n"
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + loop)
    result = validate_in_process(job)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    (warning,) = [line for line in warnings if "loop_prevention with" in line]
    assert warning.startswith(f"warning: {job}: loop_prevention with the overwrite policy")
    assert "last_writer_wins or version" in warning
    lww = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
    pinned = "task_name: pinned\n" + MINIMAL  # a derived task name is cautioned about too
    tombstones = "active_active: {tombstones: true}\n"  # without: a caution of its own
    assert parse_job(pinned + loop + lww + tombstones, job).job.cautions == []
    assert parse_job(pinned, job).job.cautions == []
    override = pinned + "  - {region: ap-south-1, table: t22, conflict: {policy: overwrite}}\n"
    (caution,) = parse_job(override + loop + lww, job).job.cautions
    assert "the overwrite policy" in caution


@pytest.mark.parametrize(
    ("resolver", "says"),
    [
        ("nomod:f", "cannot import nomod: ModuleNotFoundError"),
        ("goodres:missing", "goodres has no function missing"),
        ("goodres:not_callable", "goodres.not_callable is an int, not a function"),
        ("raises_at_import:f", "cannot import raises_at_import: RuntimeError: boom"),
        ("bad_syntax:f", "cannot import bad_syntax: SyntaxError"),
        ("goodres.py:f", "not a file"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run", "verify --repair", "redrive"])
def test_a_custom_resolver_that_does_not_load_is_a_problem_of_the_job_file(
    tmp_path: Path, resolver: str, says: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything starts (no processor failing at each start, no traceback).

    ``validate`` and ``run`` (whose process starts as no other command's does: see
    replicator/entry.py) run as processes of their own for the first resolver; the other
    cases in this process (the refusal comes before the command does anything), the
    test's modules on the import path and forgotten afterwards (:func:`forget_modules`)."""
    (tmp_path / "goodres.py").write_text(
        "not_callable = 5\ndef f(change, existing):\n    return True\n"
    )
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + f"conflict: {{policy: custom, resolver: '{resolver}'}}\n")
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    if resolver == "nomod:f" and command in ("validate", "run"):
        env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
        result = run_cli(*command.split(), "--config", str(job), env=env)
    else:
        monkeypatch.syspath_prepend(str(tmp_path))
        with forget_modules(tmp_path):
            result = in_process(*command.split(), "--config", str(job), env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{job}: 1 problem in the job file:" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert line.startswith(f"  conflict.resolver (line 5): custom resolver '{resolver}'")
    assert says in line


def test_a_custom_resolver_that_loads_passes_validate(tmp_path: Path) -> None:
    (tmp_path / "goodres.py").write_text("def f(change, existing):\n    return True\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL
        + "  - {region: ap-south-1, table: t22,\n"
        + "     conflict: {policy: custom, resolver: 'goodres:f'}}\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    result = run_cli("validate", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert "policy custom on goodres:f" in result.stdout


def test_validate_shows_an_ipv6_metrics_address_in_brackets(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + "metrics: {host: '::1', port: 19463}\n")
    result = validate_in_process(job)
    assert result.returncode == 0, result.stderr
    assert "http://[::1]:19463/metrics" in result.stdout


@pytest.mark.parametrize(
    ("conflict", "key", "says"),
    [
        ("conflict: {policy: version, version_attribute: v, timestamp_attribute: ts}",
         "conflict.timestamp_attribute (line 5)",
         "is read only by policy last_writer_wins, but conflict.policy is version, which "
         "does not read it: remove it, or set the policy it belongs to"),
        ("conflict: {policy: overwrite, resolver: 'a:b'}",
         "conflict.resolver (line 5)",
         "is read only by policy custom, but conflict.policy is overwrite"),
        ("conflict: {max_attempts: 5}",
         "conflict.max_attempts (line 5)",
         "is read only by policy custom, but conflict gives no policy, so it is overwrite, "
         "the default, which does not read it: remove it"),
        # A destination's section replaces the job's whole: that destination was written
        # with overwrite, unconditionally, with only a warning.
        ("conflict: {policy: last_writer_wins, timestamp_attribute: ts}",
         "destinations[0].conflict.timestamp_attribute (line 4)",
         "but destinations[0].conflict gives no policy, so it is overwrite, the default, "
         "which does not read it (a destination's conflict section replaces the job's "
         "whole conflict section, its policy included)"),
    ],
)  # fmt: skip
def test_a_conflict_setting_its_policy_does_not_read_is_refused(
    tmp_path: Path, conflict: str, key: str, says: str
) -> None:
    job = tmp_path / "job.yaml"
    text = MINIMAL + conflict + "\n"
    if key.startswith("destinations"):
        text = text.replace(
            "eu-west-1, table: orders}",
            "eu-west-1, table: orders, conflict: {timestamp_attribute: t}}",
        )
    job.write_text(text)
    result = validate_in_process(job)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key}")]
    assert says in line


def test_a_destination_conflict_section_without_a_policy_is_refused(tmp_path: Path) -> None:
    """``conflict: {}`` replaced the job's section with overwrite, the default, silently."""
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL.replace("eu-west-1, table: orders}", "eu-west-1, table: orders, conflict: {}}")
        + "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    )
    result = validate_in_process(job)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("  destinations")]
    assert line.startswith(
        "  destinations[0].conflict (line 4): gives no policy: a destination's conflict "
        "section replaces the job's whole conflict section, its policy included, so this "
        "destination would be written with overwrite, the default"
    ), line


KINESIS = (
    "runtime: kcl\nsource: {region: us-east-1, table: orders, stream: {kind: kinesis, name: s}}\n"
)


def test_a_kinesis_job_whose_destinations_all_have_their_own_policy_needs_none_of_its_own(
    tmp_path: Path,
) -> None:
    """The job's default overwrite decides for no destination: it was refused at line 1."""
    job = tmp_path / "job.yaml"
    own = "conflict: {policy: last_writer_wins, timestamp_attribute: ts}"
    job.write_text(KINESIS + f"destinations:\n  - {{region: eu-west-1, table: orders, {own}}}\n")
    assert validate_in_process(job).returncode == 0
    job.write_text(KINESIS + "destinations:\n  - {region: eu-west-1, table: orders}\n")
    refused = validate_in_process(job)
    assert refused.returncode == 2
    # No line: the file has no conflict section (line 1 was runtime's, another key).
    assert "  conflict.policy: is overwrite, the default" in refused.stderr


def test_validate_shows_the_attribute_each_policy_reads(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        MINIMAL.replace("eu-west-1, table: orders}", "eu-west-1, table: orders, conflict: "
                        "{policy: version, version_attribute: v}}")
        + "  - {region: eu-west-2, table: orders}\n"
        + "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    )  # fmt: skip
    result = validate_in_process(job)
    assert result.returncode == 0, result.stderr
    assert "policy version on v" in result.stdout
    assert "policy last_writer_wins on ts" in result.stdout
    assert "warning: " not in result.stdout.replace(f"warning: {job}: task_name is derived", "")


def test_verify_without_repair_does_not_need_the_resolver(tmp_path: Path) -> None:
    """A read-only comparison plans no write: it runs where the resolver is not installed."""
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + "conflict: {policy: custom, resolver: 'nomod:f'}\n")
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens: exit 3, not 2
    result = run_cli("verify", "--config", str(job), env=env)
    assert result.returncode == 3, result.stderr
    assert "resolver" not in result.stderr


def test_a_resolver_in_the_working_directory_loads_as_the_processors_load_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processors run as ``python -m``, with the working directory on the import path;
    the check in the console script's process finds the module there too."""
    (tmp_path / "cwd_resolver.py").write_text("def f(change, existing):\n    return True\n")
    monkeypatch.chdir(tmp_path)
    without_cwd = [p for p in sys.path if p not in ("", str(tmp_path))]
    monkeypatch.setattr(sys, "path", without_cwd)
    parse_job(
        MINIMAL + "conflict: {policy: custom, resolver: 'cwd_resolver:f'}\n",
        tmp_path / "job.yaml",
        resolvers=True,
    )
    assert str(tmp_path) not in sys.path


RANKED_OTHERWISE = (
    "source: {region: us-east-1, table: aaa}\n"
    "destinations:\n"
    "  - {region: eu-west-1, table: aaa, conflict: {policy: version, version_attribute: ver}}\n"
    "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    "loop_prevention: {origin_attribute: origin}\n"
)


@pytest.mark.parametrize(
    "active", ["{tombstones: true}", "{write_back: true}", "{write_back: true, tombstones: true}"]
)
def test_the_fix_a_ranking_override_refusal_suggests_makes_the_job_valid(active: str) -> None:
    """A destination ranking otherwise is refused under write-back or tombstones; the
    settings the message suggests, taken as written, give a job that validates."""
    with pytest.raises(ConfigError) as refused:
        parse_job(RANKED_OTHERWISE + f"active_active: {active}\n", Path("job.yaml"))
    (hint,) = re.findall(r"drop this override, or set (.*?)\)", str(refused.value))
    suggested = dict(re.findall(r"active_active\.(\w+): (\w+)", hint))
    assert suggested, hint
    # Applied to the job's own active_active settings, as the user edits the file.
    settings = {**dict(re.findall(r"(\w+): (\w+)", active)), **suggested}
    fixed = ", ".join(f"{name}: {value}" for name, value in settings.items())
    parse_job(RANKED_OTHERWISE + f"active_active: {{{fixed}}}\n", Path("job.yaml"))


def test_write_back_turned_off_by_a_destination_ranking_otherwise_is_warned() -> None:
    """Loop prevention with a destination ranking otherwise leaves write-back off by
    default: validate says so; given explicitly off, or ranked alike, no warning."""
    pinned = "task_name: pinned\n" + RANKED_OTHERWISE
    caution, deletes = parse_job(pinned, Path("job.yaml")).job.cautions
    assert caution.startswith(
        "destinations[0] ranks items by version on 'ver' but the job by last_writer_wins "
        "on 'ts', so active-active write-back is off"
    )
    assert deletes.startswith("active_active.tombstones is off")  # without tombstones
    chosen = pinned + "active_active: {write_back: false}\n"
    (only,) = parse_job(chosen, Path("job.yaml")).job.cautions
    assert only.startswith("active_active.tombstones is off")
    alike = pinned.replace(", conflict: {policy: version, version_attribute: ver}", "")
    alike += "active_active: {tombstones: true}\n"
    assert parse_job(alike, Path("job.yaml")).job.cautions == []


ORDERED_PAIR = (
    "task_name: pinned\n"
    "source: {region: us-east-1, table: carts}\n"
    "destinations:\n"
    "  - {region: eu-west-1, table: carts}\n"
    "loop_prevention: {origin_attribute: origin_region}\n"
)
UNTOMBSTONED = "active_active.tombstones is off, and this job replicates deletes"


@pytest.mark.parametrize(
    "conflict",
    [
        "{policy: last_writer_wins, timestamp_attribute: updated_at}",
        "{policy: version, version_attribute: ver}",
    ],
)
def test_validate_warns_that_an_ordered_pair_without_tombstones_can_diverge_on_deletes(
    tmp_path: Path, conflict: str
) -> None:
    """The defaults of an active-active pair (write-back on, tombstones off) leave a put
    racing another region's delete of the item able to keep the regions apart for good
    (docs/active-active.md): validate says so, naming verify and the setting that closes
    it, and still exits 0; with tombstones on, or without loop prevention, it says
    nothing of it."""
    job = tmp_path / "job.yaml"
    job.write_text(ORDERED_PAIR + f"conflict: {conflict}\n")
    result = run_cli("validate", "--config", str(job))

    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {job}: {UNTOMBSTONED}")
    assert "a put racing a delete of the same item in another region" in warning
    assert "can leave the regions holding different items for good" in warning
    assert "'replicator verify' finds such differences" in warning
    assert "'verify --repair' settles them" in warning
    assert warning.endswith(
        "to close the race, set active_active.tombstones: true (docs/active-active.md)"
    )

    job.write_text(ORDERED_PAIR + f"conflict: {conflict}\nactive_active: {{tombstones: true}}\n")
    closed = run_cli("validate", "--config", str(job))
    assert closed.returncode == 0, closed.stderr
    assert "warning:" not in closed.stdout
    one_way = ORDERED_PAIR.replace("loop_prevention: {origin_attribute: origin_region}\n", "")
    assert parse_job(one_way + f"conflict: {conflict}\n", job).job.cautions == []


def test_run_logs_the_untombstoned_deletes_warning_at_start(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        ORDERED_PAIR + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        "metrics: {enabled: false}\nlogging: {format: json}\n"
    )
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens: exit 3 after start
    result = run_cli("run", "--config", str(path), env=env)
    assert result.returncode == 3, result.stderr
    logged = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "active_active.tombstones is off" in line
    ]
    assert len(logged) == 1, result.stdout + result.stderr
    assert '"level": "warning"' in logged[0]
    assert "set active_active.tombstones: true" in logged[0]


def _ordered_pair(active: dict[str, str], ranked_otherwise: bool) -> str:
    text = ORDERED_PAIR + "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    if ranked_otherwise:
        text = text.replace(
            "table: carts}\nloop",
            "table: carts, conflict: {policy: version, version_attribute: v}}\nloop",
        )
    if active:
        text += "active_active: {" + ", ".join(f"{k}: {v}" for k, v in active.items()) + "}\n"
    return text


@pytest.mark.parametrize(
    ("active", "ranked_otherwise"),
    [
        ({}, False),
        ({"write_back": "true"}, False),
        ({"write_back": "false"}, False),
        ({}, True),
        ({"write_back": "false"}, True),
    ],
)
def test_the_setting_the_untombstoned_deletes_warning_names_makes_it_go(
    active: dict[str, str], ranked_otherwise: bool
) -> None:
    """Taken as written, what the warning says to do gives a valid job that has nothing
    to warn about: tombstones need write-back and every destination ranked like the job,
    so the warning says so where the job has either otherwise."""
    cautions = parse_job(_ordered_pair(active, ranked_otherwise), Path("job.yaml")).job.cautions
    (caution,) = [c for c in cautions if c.startswith("active_active.tombstones is off")]
    (fix,) = re.findall(r"to close the race, (.*) \(docs/active-active\.md\)$", caution)
    assert fix.startswith("set active_active.tombstones: true")
    settings = {**active, "tombstones": "true"}
    if "remove active_active.write_back: false" in fix:
        assert settings.pop("write_back") == "false"
    ranked = ranked_otherwise and "rank every destination like the job" not in fix
    assert parse_job(_ordered_pair(settings, ranked), Path("job.yaml")).job.cautions == []


@pytest.mark.parametrize("command", ["validate", "run", "properties", "conflicts", "demo"])
def test_an_empty_config_option_is_refused_as_empty(command: str) -> None:
    """pathlib reads '' as '.': the message was about a directory no one named."""
    result = in_process(command, "--config", "")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid value for '--config' / '-c': is empty (''): give the path of the job file" in (
        result.stderr
    )
    assert "directory" not in result.stderr


@pytest.mark.parametrize(
    ("origin_value", "said"),
    [
        ("us-east1", "Did you mean 'us-east-1' (or leave origin_value out)?"),
        ("eu-west-1", "and 'eu-west-1' is a destination's region"),
        ("use1", None),  # a stamp of its own
        ("us-east-1b", None),  # two tables of one region: a value each
        ("us-east-1", None),
    ],
)
def test_validate_warns_of_an_origin_value_that_looks_mistyped(
    tmp_path: Path, origin_value: str, said: str | None
) -> None:
    """A typo in origin_value (us-east1) passed validate: the job then skipped every
    write of its region's applications as another region's echo, and nothing said so."""
    job = tmp_path / "job.yaml"
    job.write_text(
        ORDERED_PAIR.replace(
            "{origin_attribute: origin_region}",
            f"{{origin_attribute: origin_region, origin_value: {origin_value}}}",
        )
        + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        + "active_active: {tombstones: true}\n"
    )
    result = run_cli("validate", "--config", str(job))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    if said is None:
        assert warnings == []
        return
    (warning,) = warnings
    assert warning.startswith(
        f"warning: {job}: loop_prevention.origin_value '{origin_value}' is not the source table's "
        "region 'us-east-1': the job skips every put not stamped"
    )
    assert said in warning


@pytest.mark.parametrize(
    ("conflict", "said"),
    [
        (
            "{policy: version, timestamp_attribute: updated_at}",
            "conflict (line 6): policy version needs 'version_attribute' (timestamp_attribute: "
            "'updated_at' is the last_writer_wins policy's: rename it, or set policy: "
            "last_writer_wins)",
        ),
        (
            "{policy: last_writer_wins, version_attribute: ver}",
            "conflict (line 6): policy last_writer_wins needs 'timestamp_attribute' "
            "(version_attribute: 'ver' is the version policy's: rename it, or set policy: "
            "version)",
        ),
        ("{policy: version}", "conflict (line 6): policy version needs 'version_attribute'"),
    ],
)
def test_a_policy_changed_without_its_attribute_names_the_attribute_left(
    tmp_path: Path, conflict: str, said: str
) -> None:
    """Only "needs 'version_attribute'" was said, the timestamp_attribute left beside it
    not named."""
    job = tmp_path / "job.yaml"
    job.write_text(ORDERED_PAIR + f"conflict: {conflict}\n")
    result = run_cli("validate", "--config", str(job))
    assert result.returncode == 2
    assert [line.strip() for line in result.stderr.splitlines()[1:]] == [said]


def test_tombstones_refused_for_a_destination_s_override_name_that_override(
    tmp_path: Path,
) -> None:
    """The refusal named active_active.tombstones, not the destination whose conflict
    section set overwrite."""
    job = tmp_path / "job.yaml"
    job.write_text(
        ORDERED_PAIR.replace(
            "{region: eu-west-1, table: carts}",
            "{region: eu-west-1, table: carts, conflict: {policy: overwrite}}",
        )
        + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        + "active_active: {tombstones: true}\n"
    )
    result = run_cli("validate", "--config", str(job))
    assert result.returncode == 2
    assert [line.strip() for line in result.stderr.splitlines()[1:]] == [
        "destinations[0].conflict (line 4): policy overwrite here, but "
        "active_active.tombstones needs the last_writer_wins or version policy for the job "
        "and every destination (they rank images and deletes): drop this override, or set "
        "active_active.tombstones: false and active_active.write_back: false"
    ]
