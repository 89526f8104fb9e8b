"""Job-file checks found by walking through an operator's scenarios: what ``run`` would
refuse or crash on is refused by ``validate`` first, naming the key (exit 2)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from replicator.config.fields import MAX_TABLE_NAME, MAX_TASK_NAME, TASK_TABLE_SUFFIXES
from replicator.config.loader import parse_job
from replicator.exceptions import ConfigError
from tests.config.test_config import MINIMAL, run_cli
from tests.support.cli import in_process, replicator, validate_in_process
from tests.support.special_files import FILE_TARGETS, SPECIAL_FILES, TOO_LONG, special_file

TWO = MINIMAL + "  - {region: ap-south-1, table: t22}\n"


def _refused(tmp_path: Path, text: str, key: str, *fragments: str) -> str:
    """``validate`` exits 2 with the file and the key named; the line about the key."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key} (line")]
    for fragment in fragments:
        assert fragment in line
    return line


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (
            MINIMAL.replace("table: orders}", "table: orders, endpoint_url: '127.0.0.1:5710'}", 1),
            "source.endpoint_url",
            "must start with http:// or https://",
        ),
        (
            TWO.replace("table: t22}", "table: t22, endpoint_url: 'http://127.0.0.1:5710 '}"),
            "destinations[1].endpoint_url",
            "whitespace",
        ),
        (
            TWO.replace("table: t22}", "table: t22, endpoint_url: 'http://127.0.0.1:57x0'}"),
            "destinations[1].endpoint_url",
            "port is not a number",
        ),
        (
            MINIMAL
            + "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", "
            "endpoint_url: 'localhost:4566'}\n",
            "dead_letter.endpoint_url",
            "must start with http:// or https://",
        ),
        (
            MINIMAL + "conflict_log: {kind: dynamodb, endpoint_url: 'http://h:4566/x?y=1'}\n",
            "conflict_log.endpoint_url",
            "no path, query or fragment",
        ),
        (
            MINIMAL.replace("table: orders}", "table: orders, endpoint_url: 'http://a_b:1'}", 1),
            "source.endpoint_url",
            "not a host name",
        ),
    ],
)
def test_an_endpoint_botocore_would_refuse_is_refused_naming_the_key(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    """``validate`` passed these, and ``run`` then crashed (ValueError: Invalid endpoint,
    Port could not be cast to integer)."""
    _refused(tmp_path, text, key, says, "http://127.0.0.1:8000")


def test_a_good_endpoint_passes_and_loses_a_trailing_slash() -> None:
    job = parse_job(
        MINIMAL.replace("table: orders}", "table: orders, endpoint_url: 'http://[::1]:8000/'}", 1),
        Path("job.yaml"),
    ).job
    assert job.source.endpoint_url == "http://[::1]:8000"


def test_an_endpoint_the_job_file_takes_from_a_variable_is_checked_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_ENDPOINT", "http://h:1 ")
    text = MINIMAL.replace("table: orders}", "table: orders, endpoint_url: '${MY_ENDPOINT}'}", 1)
    with pytest.raises(ConfigError, match=r"source\.endpoint_url \(line 2\): .*whitespace"):
        parse_job(text, Path("job.yaml"))


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("AWS_ENDPOINT_URL", "127.0.0.1:5710", "must start with http:// or https://"),
        ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:5710 ", "whitespace"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:57x0", "port is not a number"),
    ],
)
def test_a_bad_endpoint_in_botocores_environment_is_one_line_at_run(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    """botocore reads AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) itself: a bad one
    was a traceback from the first client; now one line naming the variable, exit 3."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "metrics: {enabled: false}\n")
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", variable: value}
    result = run_cli("run", "--config", str(path), env=env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator: ")]
    assert f"endpoint {value!r} for us-east-1, from ${variable}, is not usable: " in line
    assert says in line


def test_run_ends_with_its_exit_code_at_once_after_its_one_line_error(tmp_path: Path) -> None:
    """Once ``run`` has printed its start-up error, a SIGTERM cannot change its exit
    code: the process no longer lingers in the interpreter's shutdown (0.2 s to over a
    second, with the default handlers back, so a SIGTERM then gave 143, not 3)."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "metrics: {enabled: false}\n")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: cannot reach
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    while line.startswith("{"):  # log lines (a caution) before the error
        line = process.stderr.readline()
    assert line.startswith("replicator: ") and "cannot reach" in line, line
    process.send_signal(signal.SIGTERM)  # as soon as the line is out
    assert process.wait(30) == 3
    assert process.stderr.read() == ""


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (
            "runtime: kcl\n"
            + MINIMAL.replace(
                "table: orders}", "table: orders, role_arn: 'arn:aws:iam::123456789012:role/r'}", 1
            ),
            "source.role_arn",
            "is not supported by runtime kcl",
        ),
        (
            "source: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: s}}\n"
            "destinations: [{region: eu-west-1, table: aaa}]\n"
            "conflict: {policy: version, version_attribute: v}\n",
            "source.stream.kind",
            "a kinesis source needs runtime: kcl",
        ),
    ],
)
def test_what_the_runtime_would_refuse_is_refused_by_validate(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    """``validate`` passed these, and ``run`` then refused them (exit 4 for the KCL's
    source role, 3 for a kinesis source under runtime local)."""
    _refused(tmp_path, text, key, says)


def test_a_task_name_whose_longest_table_would_not_fit_is_refused_naming_the_limit(
    tmp_path: Path,
) -> None:
    """KCL 3 names <task>-WorkerMetricStats (18 more characters): a task name of 240 passed
    validate (only -watermark was counted) and DynamoDB then refused the KCL's table."""
    assert MAX_TASK_NAME == MAX_TABLE_NAME - len("-WorkerMetricStats") == 237
    longest = "t" * MAX_TASK_NAME
    resolved = parse_job(f"task_name: {longest}\n" + MINIMAL, Path("job.yaml"))
    for suffix in TASK_TABLE_SUFFIXES:
        assert len(resolved.task_name + suffix) <= MAX_TABLE_NAME
    _refused(
        tmp_path,
        f"task_name: {longest}x\n" + MINIMAL,
        "task_name",
        f"at most {MAX_TASK_NAME} characters (it has {MAX_TASK_NAME + 1})",
        "<task_name>-WorkerMetricStats",
        "255",
    )


def test_the_suffixes_are_the_ones_the_package_and_the_kcl_use() -> None:
    from replicator.tools import backfill_state
    from replicator.watermark import table

    resolved = parse_job("task_name: t.1_x-Y\n" + MINIMAL, Path("job.yaml"))
    assert table.SUFFIX in TASK_TABLE_SUFFIXES
    assert resolved.watermark_table == table.table_name("t.1_x-Y")
    assert backfill_state.state_table_name("t.1_x-Y") == "t.1_x-Y" + backfill_state.SUFFIX
    assert backfill_state.SUFFIX in TASK_TABLE_SUFFIXES
    assert {"-CoordinatorState", "-WorkerMetricStats"} <= set(TASK_TABLE_SUFFIXES)
    for suffix in TASK_TABLE_SUFFIXES:  # every derived name is a valid table name
        assert re.fullmatch(r"[a-zA-Z0-9_.-]+", suffix)


@pytest.mark.parametrize("name", ["orders/eu", "orders eu", "ordérs", "ab"])
def test_a_task_name_that_is_no_table_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"task_name \(line 1\): "):
        parse_job(f"task_name: '{name}'\n" + MINIMAL, tmp_path / "job.yaml")


def test_a_task_name_too_short_is_told_the_length_rule(tmp_path: Path) -> None:
    """The name sA has only good characters: the message must say what is wrong."""
    with pytest.raises(ConfigError) as refused:
        parse_job("task_name: sA\n" + MINIMAL, tmp_path / "job.yaml")
    assert "at least 3 characters" in str(refused.value)
    assert "'sA' (2 characters)" in str(refused.value)


@pytest.mark.parametrize(
    ("setting", "key", "says"),
    [
        ("dead_letter: {path: 'dead/{task}.jsonl'}", "dead_letter.path", "not {task}"),
        (
            "conflict_log: {kind: file, path: 'c/{task_name}{'}",
            "conflict_log.path",
            "Single '{'",
        ),
        (
            "conflict_log: {kind: dynamodb, table: '{task_name}/conflicts'}",
            "conflict_log.table",
            "not a DynamoDB table name",
        ),
        # format() would raise AttributeError or TypeError for these, or (for a method)
        # give a name with an address in it, different in every process.
        ("conflict_log: {kind: dynamodb, table: '{task_name.x}'}", "conflict_log.table", "not"),
        ("dead_letter: {path: 'dl/{task_name[x]}.jsonl'}", "dead_letter.path", "not"),
        ("dead_letter: {path: 'dl/{task_name.upper}.jsonl'}", "dead_letter.path", "not"),
        ("dead_letter: {path: 'dl/{task_name!r}.jsonl'}", "dead_letter.path", "not"),
        ("conflict_log: {kind: file, path: 'c/{task_name:>40}'}", "conflict_log.path", "not"),
    ],
)
def test_a_task_name_pattern_that_gives_no_name_is_refused(
    tmp_path: Path, setting: str, key: str, says: str
) -> None:
    """These passed (or crashed) validate and failed at run with a KeyError traceback or a
    table DynamoDB refused."""
    _refused(tmp_path, MINIMAL + setting + "\n", key, says)


def _with_stream(arn: str, kind: str = "") -> str:
    stream = f"{{{kind}arn: '{arn}'}}"
    return MINIMAL.replace("table: orders}", f"table: orders, stream: {stream}}}", 1)


ARN = "arn:aws:dynamodb:{region}:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"


@pytest.mark.parametrize(
    ("arn", "says"),
    [
        (
            ARN.format(region="us-east-1", table="customers"),
            ("stream of table 'customers'", "source.table is 'orders'"),
        ),
        (
            ARN.format(region="eu-west-1", table="orders"),
            ("stream in region eu-west-1", "source.region is us-east-1"),
        ),
        (
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders-changes",
            ("expected a DynamoDB stream ARN", "set source.stream.kind: kinesis"),
        ),
    ],
)
def test_a_stream_arn_of_another_table_or_region_is_refused_naming_both(
    tmp_path: Path, arn: str, says: tuple[str, ...]
) -> None:
    """validate passed these; the replicator then read another table's changes (or
    DescribeStream failed at run)."""
    _refused(tmp_path, _with_stream(arn), "source.stream.arn", *says)


@pytest.mark.parametrize(
    "arn",
    [
        ARN.format(region="us-east-1", table="orders"),
        ARN.format(region="ddblocal", table="orders"),  # DynamoDB Local's region
        ARN.format(region="us-east-1", table="orders").replace("arn:aws:", "arn:aws-cn:"),
    ],
)
def test_the_source_tables_own_stream_arn_passes(arn: str) -> None:
    assert parse_job(_with_stream(arn), Path("job.yaml")).job.source.stream.arn == arn


KCL_VERSION_JOB = "runtime: kcl\nconflict: {policy: version, version_attribute: v}\n"


def test_a_kinesis_stream_arn_is_not_compared_with_the_table() -> None:
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/other-changes"
    job = parse_job(KCL_VERSION_JOB + _with_stream(arn, "kind: kinesis, "), Path("job.yaml")).job
    assert job.source.stream.arn == arn


def test_a_kinesis_stream_arn_of_another_region_is_refused_naming_both(tmp_path: Path) -> None:
    """validate passed it, and the run refused it at start: DynamoDB streams a table only
    to a Kinesis data stream of its own region, and the KCL reads the name in
    source.region."""
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders-changes"
    text = KCL_VERSION_JOB + _with_stream(arn, "kind: kinesis, ")
    _refused(
        tmp_path,
        text,
        "source.stream.arn",
        "Kinesis data stream in region eu-west-1",
        "source.region is us-east-1",
    )


def test_a_derived_task_name_is_cautioned_about_with_the_line_that_pins_it(
    tmp_path: Path,
) -> None:
    """Adding a destination changes a derived task name, and with it the lease table: the
    job starts over (LATEST loses what changed while it was stopped). validate says so and
    prints the line that keeps the current lease table; a pinned name is not cautioned."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "kcl: {initial_position: LATEST}\n")
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    derived = parse_job(MINIMAL, path).task_name
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {path}: task_name is derived from the source and every")
    assert "adding or removing a destination moves the job to a new lease table" in warning
    assert "LATEST: changes made while it was stopped are lost" in warning
    assert warning.endswith(f"add this line to the job file: task_name: {derived}")
    # The line it prints pins the same lease table, and then there is nothing to say.
    pinned = parse_job(f"task_name: {derived}\n" + MINIMAL, path)
    assert pinned.lease_table == derived
    assert pinned.job.cautions == []
    (caution,) = parse_job(MINIMAL, path).job.cautions
    assert "TRIM_HORIZON: up to 24 hours of changes are replayed" in caution


def test_run_logs_the_derived_task_name_caution_at_start(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "metrics: {enabled: false}\nlogging: {format: json}\n")
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens: exit 3 after start
    result = run_cli("run", "--config", str(path), env=env)
    assert result.returncode == 3, result.stderr
    derived = parse_job(MINIMAL, path).task_name
    output = result.stdout + result.stderr
    assert "task_name is derived from the source and every destination" in output
    assert f"task_name: {derived}" in output


@pytest.mark.parametrize(
    ("setting", "key", "says"),
    [
        (
            "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", region: 'eu west 1'}",
            "dead_letter.region",
            "AWS region",
        ),
        (
            "conflict_log: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", region: Europe}",
            "conflict_log.region",
            "AWS region",
        ),
        (
            "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", role_arn: my-role}",
            "dead_letter.role_arn",
            "role ARN",
        ),
    ],
)
def test_the_queues_region_and_role_are_checked_like_the_tables(
    tmp_path: Path, setting: str, key: str, says: str
) -> None:
    """A region botocore refuses was a traceback at run (InvalidRegionError)."""
    _refused(tmp_path, MINIMAL + setting + "\n", key, says)


@pytest.mark.parametrize(
    "pattern", ["{table}-{table.x}", "{table}-{table[0]}", "{table}{table!r}", "{table}{table:>9}"]
)
def test_a_tombstone_table_pattern_with_more_than_table_is_refused(
    tmp_path: Path, pattern: str
) -> None:
    _refused(
        tmp_path,
        MINIMAL + f"active_active: {{tombstones: true, tombstone_table: '{pattern}'}}\n",
        "active_active.tombstone_table",
        "may use only {table}",
    )


def test_a_region_of_a_four_letter_partition_prefix_is_accepted() -> None:
    """The AWS European Sovereign Cloud's regions (eusc-de-east-1)."""
    text = MINIMAL.replace("region: eu-west-1", "region: eusc-de-east-1")
    job = parse_job(text, Path("job.yaml")).job
    assert job.destinations[0].region == "eusc-de-east-1"


KINESIS = (
    "runtime: kcl\n"
    "source: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: aaa-changes}}\n"
    "destinations: [{region: eu-west-1, table: aaa}]\n"
    "conflict: {policy: version, version_attribute: v}\n"
)


def test_a_start_time_is_refused_for_the_reason_of_the_sources_stream_kind(
    tmp_path: Path,
) -> None:
    """A kinesis source was told that a DynamoDB stream has no shard iterator at a time,
    which is no reason for a Kinesis data stream: the job file has no key for the time."""
    at_timestamp = "kcl: {initial_position: AT_TIMESTAMP}\n"
    line = _refused(
        tmp_path,
        KINESIS + at_timestamp,
        "kcl.initial_position",
        "not supported for a kinesis source",
        "initialPositionInStreamExtended",
        "the job file has no key for it",
        "use TRIM_HORIZON",
    )
    assert "DynamoDB" not in line
    line = _refused(
        tmp_path, MINIMAL + at_timestamp, "kcl.initial_position", "DynamoDB Streams Kinesis Adapter"
    )
    assert "kinesis source" not in line
    # A source that is itself invalid does not tell which kind it is: both reasons.
    invalid = KINESIS.replace("region: us-east-1", "region: nowhere", 1)
    _refused(
        tmp_path,
        invalid + at_timestamp,
        "kcl.initial_position",
        "a DynamoDB stream has no shard iterator at a time",
        "for a kinesis source the job file has no key for the time",
    )


@pytest.mark.parametrize(
    ("stream", "key", "says"),
    [
        ("name: 'a b'", "source.stream.name", ("expected a Kinesis data stream name", "'a b'")),
        ("name: '" + "s" * 129 + "'", "source.stream.name", ("1-128 characters",)),
        ("arn: 'not-an-arn'", "source.stream.arn", ("expected a Kinesis data stream ARN",)),
        (
            "arn: 'arn:aws:kinesis:us-east-1:1234:stream/aaa-changes'",
            "source.stream.arn",
            ("expected a Kinesis data stream ARN",),
        ),
        (
            "arn: 'arn:aws:kinesis:us-east-1:123456789012:stream/a b'",
            "source.stream.arn",
            ("expected a Kinesis data stream ARN",),
        ),
        (
            "arn: 'arn:aws:dynamodb:us-east-1:123456789012:table/aaa/stream/2020'",
            "source.stream.arn",
            ("it is a DynamoDB stream's ARN", "source.stream.kind: dynamodb-streams"),
        ),
    ],
)
def test_a_kinesis_stream_name_or_arn_that_names_no_stream_is_refused(
    tmp_path: Path, stream: str, key: str, says: tuple[str, ...]
) -> None:
    """These passed validate, and ``replicator properties`` handed the KCL the text as
    its streamName (``streamName = not-an-arn``)."""
    text = KINESIS.replace("name: aaa-changes", stream, 1)
    line = _refused(tmp_path, text, key, *says)
    if "dynamodb" not in stream:
        assert "DynamoDB" not in line
    result = in_process("properties", "--config", str(tmp_path / "job.yaml"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "streamName" not in result.stdout


@pytest.mark.parametrize(
    "stream",
    [
        "name: 'Inventory.changes_2-b'",
        "name: '" + "s" * 128 + "'",
        "arn: 'arn:aws:kinesis:us-east-1:123456789012:stream/aaa-changes'",
        "arn: 'arn:aws-cn:kinesis:cn-north-1:123456789012:stream/aaa-changes'",
    ],
)
def test_a_kinesis_stream_name_or_arn_is_read_by_the_kcl_by_its_name(stream: str) -> None:
    from replicator.runtime.kcl.properties import render_properties

    text = KINESIS.replace("name: aaa-changes", stream, 1)
    if "cn-north-1" in stream:  # the stream is in the table's region
        text = text.replace("region: us-east-1", "region: cn-north-1", 1)
    resolved = parse_job(text, Path("job.yaml"))
    name = stream.split("'")[1].rsplit("/", 1)[-1]
    assert f"\nstreamName = {name}\n" in render_properties(resolved, worker_id="w")


def test_a_one_way_job_of_a_long_table_name_passes_without_a_tombstone_table(
    tmp_path: Path,
) -> None:
    """The tombstone table's name is made only with tombstones on: a one-way job whose
    table name leaves no room for '-tombstones' is valid."""
    long_name = "t" * (MAX_TABLE_NAME - len("-tombstones") + 1)
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL.replace("table: orders}", f"table: {long_name}}}", 1))
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    assert "tombstone" not in result.stderr


def test_a_tombstone_table_name_too_long_says_to_shorten_the_pattern(tmp_path: Path) -> None:
    long_name = "t" * (MAX_TABLE_NAME - len("-tombstones") + 1)
    text = MINIMAL.replace("table: orders}", f"table: {long_name}}}", 1) + (
        "loop_prevention: {origin_attribute: origin}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "active_active: {tombstones: true}\n"
    )
    _refused(
        tmp_path,
        text,
        "active_active.tombstone_table",
        "256 characters",
        "set a shorter active_active.tombstone_table pattern",
    )


@pytest.mark.parametrize(
    ("setting", "key", "says"),
    [
        ('dead_letter: {path: " dl.jsonl "}', "dead_letter.path", "begins or ends with a space"),
        ('conflict_log: {kind: file, path: "c.jsonl "}', "conflict_log.path", "ends with a space"),
        (
            'dead_letter: {path: "~/dl/{task_name}.jsonl"}',
            "dead_letter.path",
            "starts with ~, which is not expanded (a path is taken as written, relative to the "
            "working directory): write ${HOME}/dl/{task_name}.jsonl or an absolute path",
        ),
        ('kcl: {java: "~bob/bin/java"}', "kcl.java", "write the home's path or an absolute path"),
        (
            'kcl: {jars_dir: "jars\\r"}',
            "kcl.jars_dir",
            "other blank (an env file written with CRLF",
        ),
    ],
)
def test_a_path_padded_with_spaces_or_starting_with_a_tilde_is_refused(
    tmp_path: Path, setting: str, key: str, says: str
) -> None:
    """Each was taken as written: a file named with spaces (which the summary did not
    show) or a directory named ``~`` in the working directory."""
    _refused(tmp_path, MINIMAL + setting + "\n", key, says)


_NUL_PATHS = [
    ('dead_letter: {path: "x\\0y"}', "dead_letter.path"),
    ('conflict_log: {kind: file, path: "x\\0y"}', "conflict_log.path"),
]
_NUL_COMMANDS = ["validate", "properties", "run", "backfill", "verify", "redrive", "conflicts"]


@pytest.mark.parametrize(
    ("setting", "key", "command"),
    [(*path, command) for path in _NUL_PATHS for command in _NUL_COMMANDS]
    + [
        ('kcl: {java: "x\\0y"}', "kcl.java", "validate"),
        ('kcl: {jars_dir: "x\\0y"}', "kcl.jars_dir", "validate"),
    ],
)
def test_a_path_with_a_nul_is_refused_naming_the_key(
    tmp_path: Path, setting: str, key: str, command: str
) -> None:
    """No system call takes a path with a NUL: each command that loads the job refuses
    it as a bad value (exit 2, the key and its line), instead of a ValueError."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + setting + "\n")
    result = in_process(command, "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key} (line")]
    assert "contains a NUL character" in line


@FILE_TARGETS
@SPECIAL_FILES
def test_a_file_target_that_is_no_regular_file_is_refused_by_validate(
    tmp_path: Path, setting: str, key: str, what: str, special: str
) -> None:
    """validate refuses an existing directory there: a FIFO (which run waited on for
    ever) or a device (/dev/null kept no dead letter) is refused alike, never opened."""
    target, kind = special_file(tmp_path, special)
    text = MINIMAL + setting.replace("PATH", f"'{target}'") + "\n"
    _refused(tmp_path, text, key, f"{what} {target} is {kind}, not a regular file")


@FILE_TARGETS
def test_a_file_target_linked_into_a_missing_directory_is_refused_by_validate(
    tmp_path: Path, setting: str, key: str, what: str
) -> None:
    """A symbolic link into a volume not mounted passed validate (``exists`` says no to
    a link to nothing) and stopped the job at its first line to store."""
    link = tmp_path / "linked.jsonl"
    link.symlink_to("/nonexistent-volume/letters.jsonl")
    text = MINIMAL + setting.replace("PATH", f"'{link}'") + "\n"
    _refused(
        tmp_path,
        text,
        key,
        f"{what} {link} cannot be written: it is a symbolic link to "
        "/nonexistent-volume/letters.jsonl, and /nonexistent-volume it points into does not "
        "exist (a volume not mounted?)",
    )
    (tmp_path / "there").mkdir()
    link.unlink()
    link.symlink_to(tmp_path / "there" / "letters.jsonl")
    result = validate_in_process(tmp_path / "job.yaml")
    assert result.returncode == 0, result.stderr


@FILE_TARGETS
@TOO_LONG
def test_a_file_target_too_long_for_a_file_name_is_refused_by_validate_and_conflicts(
    tmp_path: Path, setting: str, key: str, what: str, too_long: str
) -> None:
    """A name over 255 bytes or a path over 4096 crashed run, redrive and conflicts with
    a traceback (ENAMETOOLONG from a check that took only a missing file as an answer):
    validate refuses it at its key, and conflicts, which reads the log, as validate."""
    target = f"{tmp_path}/{too_long}"
    text = (
        MINIMAL
        + "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        + setting.replace("PATH", f"'{target}'")
        + "\n"
    )
    line = _refused(tmp_path, text, key, f"{what} {target} cannot be written: its name is too long")
    assert "ENAMETOOLONG" in line
    if key == "conflict_log.path":
        result = replicator("conflicts", "--config", str(tmp_path / "job.yaml"))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert f"  {key} (line 6): {what} {target} cannot be written: its name" in result.stderr


def test_conflicts_refuses_a_conflict_log_that_is_a_fifo_without_opening_it(
    tmp_path: Path,
) -> None:
    """Reading a FIFO waits for a writer for ever: ``conflicts`` refuses it as validate
    does (exit 2, the key and its line)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = tmp_path / "job.yaml"
    path.write_text(
        MINIMAL + "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        f"conflict_log: {{kind: file, path: '{fifo}'}}\n"
    )
    result = replicator("conflicts", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"  conflict_log.path (line 6): the conflict log {fifo} is a FIFO" in result.stderr


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_a_kcl_property_holding_a_credential_is_refused_and_never_printed(
    tmp_path: Path, variable: str
) -> None:
    """``replicator properties`` printed it, and ``run`` wrote it to the properties file;
    credentials are never written (the KCL takes them from its provider)."""
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    path = tmp_path / "job.yaml"
    path.write_text(
        KINESIS
        + "kcl:\n  extra_properties:\n    maxLeasesForWorker: 2\n"
        + f"    someSecret: 'prefix-${{{variable}}}'\n"
    )
    env: dict[str, str | None] = {variable: secret}
    for command in ("validate", "properties"):
        result = in_process(command, "--config", str(path), env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        (line,) = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("  kcl.extra_properties.someSecret (line 8)")
        ]
        assert "holds a credential" in line
        assert f"from the environment: {variable}" in line
        assert secret not in result.stdout + result.stderr
    # A local endpoint's stand-in ("testing") is no credential, as in the logs.
    done = in_process("properties", "--config", str(path), env={variable: "testing"})
    assert done.returncode == 0, done.stderr
    assert "\nsomeSecret = prefix-testing\n" in done.stdout


@pytest.mark.parametrize(
    "proxy", ["http://u:pa/ss0rdQQ@proxy:3128", "http://u:pa ss0rdQQ@proxy:3128"]
)
def test_a_kcl_property_holding_a_url_password_of_any_form_is_refused(
    tmp_path: Path, proxy: str
) -> None:
    """A password holding ``/`` or a blank did not read as one, and the URL was printed
    and written to the properties file whole."""
    path = tmp_path / "job.yaml"
    path.write_text(KINESIS + "kcl:\n  extra_properties:\n    kinesisClient.proxyUrl: ${P}\n")
    for command in ("validate", "properties"):
        result = in_process(command, "--config", str(path), env={"P": proxy})
        assert result.returncode == 2, result.stdout + result.stderr
        assert "holds a credential" in result.stderr
        assert "ss0rdQQ" not in result.stdout + result.stderr


def _destination_with_role(region: str, role: str) -> str:
    """MINIMAL with its destination in ``region``, reached through ``role``."""
    return MINIMAL.replace(
        "  - {region: eu-west-1, table: orders}",
        f"  - {{region: {region}, table: orders, role_arn: '{role}'}}",
    )


@pytest.mark.parametrize(
    ("region", "role", "says"),
    [
        (
            "eu-west-1",
            "arn:aws-cn:iam::222222222222:role/w",
            "partition aws-cn, but region eu-west-1",
        ),
        ("cn-north-1", "arn:aws:iam::222222222222:role/w", "partition aws, but region cn-north-1"),
        ("us-gov-west-1", "arn:aws:iam::222222222222:role/w", "is in partition aws-us-gov"),
    ],
)
def test_a_role_of_another_partition_than_its_region_is_refused(
    tmp_path: Path, region: str, role: str, says: str
) -> None:
    """validate passed them; STS of the region refuses a role of another partition at run."""
    text = _destination_with_role(region, role)
    _refused(tmp_path, text, "destinations[0].role_arn", says)


@pytest.mark.parametrize(
    ("region", "role"),
    [
        ("cn-northwest-1", "arn:aws-cn:iam::222222222222:role/w"),
        ("us-gov-east-1", "arn:aws-us-gov:iam::222222222222:role/w"),
        ("eu-west-1", "arn:aws:iam::222222222222:role/w"),
        ("us-iso-east-1", "arn:aws-iso:iam::222222222222:role/w"),  # not judged
    ],
)
def test_a_role_of_its_regions_partition_passes(region: str, role: str) -> None:
    text = _destination_with_role(region, role)
    assert parse_job(text, Path("job.yaml")).job.destinations[0].role_arn == role


KCL_TABLES = (
    "runtime: kcl\ntask_name: orders-x\n"
    "source: {region: us-east-1, table: orders}\n"
    "destinations: [{region: eu-west-1, table: orders}]\n"
)


@pytest.mark.parametrize(
    ("properties", "key", "says"),
    [
        ("coordinatorStateTableName: orders", "coordinatorStateTableName", "the source table"),
        ("workerMetricsTableName: orders-x", "workerMetricsTableName", "its lease table"),
        (
            "coordinatorStateTableName: orders-x-backfill",
            "coordinatorStateTableName",
            "its backfill table",
        ),
        (
            "workerMetricsTableName: orders-x-CoordinatorState",
            "workerMetricsTableName",
            "the KCL's table of coordinatorStateTableName",
        ),
        (
            "coordinatorStateTableName: kcl, workerMetricsTableName: kcl",
            "coordinatorStateTableName",
            "the KCL's table of workerMetricsTableName",
        ),
        ("coordinatorStateTableName: 'a b'", "coordinatorStateTableName", "not a DynamoDB table"),
        (
            "coordinatorStateTableName: ' ops-coordination '",
            "coordinatorStateTableName",
            "has blanks around it, which the KCL keeps in the table's name",
        ),
    ],
)
def test_a_kcl_table_moved_onto_another_of_the_jobs_tables_is_refused(
    tmp_path: Path, properties: str, key: str, says: str
) -> None:
    """The KCL would keep its items in a table whose key is another's and retry its start
    for ever, reading no shard; validate names the property instead."""
    text = KCL_TABLES + f"kcl: {{extra_properties: {{{properties}}}}}\n"
    line = _refused(tmp_path, text, f"kcl.extra_properties.{key}", says)
    assert f"leave {key} out" in line or "not a DynamoDB table" in line or "write 'ops" in line


@pytest.mark.parametrize(
    "properties",
    [
        "coordinatorStateTableName: ops-coordination",
        "coordinatorStateTableName: orders-x-CoordinatorState",
        "workerMetricsTableName: orders-x-WorkerMetricStats",
        "coordinatorStateTableName: ops-a, workerMetricsTableName: ops-b",
    ],
)
def test_a_kcl_table_of_its_own_name_is_taken(properties: str) -> None:
    job = parse_job(KCL_TABLES + f"kcl: {{extra_properties: {{{properties}}}}}\n", Path("j.yaml"))
    assert job.job.kcl.extra_properties


@pytest.mark.parametrize(
    ("source", "properties", "named"),
    [
        ("endpoint_url: 'http://127.0.0.1:8000'", "", "(source.endpoint_url)"),
        (
            "",
            "kinesisEndpoint: 'http://127.0.0.1:8000', ",
            "(kcl.extra_properties.kinesisEndpoint)",
        ),
    ],
)
def test_cloudwatch_metrics_with_a_local_endpoint_name_where_the_endpoint_is_set(
    tmp_path: Path, source: str, properties: str, named: str
) -> None:
    text = (
        "runtime: kcl\ntask_name: orders-x\n"
        f"source: {{region: us-east-1, table: orders{', ' + source if source else ''}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"kcl: {{extra_properties: {{{properties}metricsLevel: SUMMARY}}}}\n"
    )
    _refused(tmp_path, text, "kcl.extra_properties.metricsLevel", f"reads a local endpoint {named}")


def test_a_kcl_table_moved_onto_a_tombstone_table_in_the_source_region_is_refused(
    tmp_path: Path,
) -> None:
    text = (
        "runtime: kcl\ntask_name: orders-x\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: us-east-1, table: copy}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "active_active: {tombstones: true}\n"
        "kcl: {extra_properties: {workerMetricsTableName: copy-tombstones}}\n"
    )
    _refused(
        tmp_path,
        text,
        "kcl.extra_properties.workerMetricsTableName",
        "a tombstone table of the job",
    )


def test_a_kcl_tables_default_name_stays_the_jobs_once_that_table_is_moved(
    tmp_path: Path,
) -> None:
    """An earlier run may have left the moved table under its default name, holding the
    coordinator's items: the other KCL table moved onto it would meet them."""
    text = KCL_TABLES + (
        "kcl: {extra_properties: {coordinatorStateTableName: ops-coordination, "
        "workerMetricsTableName: orders-x-CoordinatorState}}\n"
    )
    _refused(
        tmp_path,
        text,
        "kcl.extra_properties.workerMetricsTableName",
        "the default name of the KCL's table of coordinatorStateTableName, which an earlier run",
    )
