"""Values no key can use are refused at their key, with its line, by every command that
reads the job file (exit 2), never with a traceback, a message without a line, or a
start that fails later: numbers too long to quote, characters a YAML file cannot hold,
names and values carrying an env file's carriage return, hosts that are no host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.test_config import MINIMAL
from tests.config.test_job_checks import _refused
from tests.support.cli import in_process, replicator

HEX = "0x" + "f" * 3600


@pytest.mark.parametrize("command", ["validate", "properties", "run"])
@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + f"metrics: {{port: {HEX}}}\n", "metrics.port (line 5)"),
        (MINIMAL.replace("table: orders}", f"table: {HEX}}}", 1), "source.table (line 2)"),
        (MINIMAL + f"kcl: {{max_records: {'9' * 5000}}}\n", "kcl.max_records (line 5)"),
    ],
)
def test_a_number_too_long_to_quote_is_refused_at_its_key_by_its_digits(
    tmp_path: Path, command: str, text: str, key: str
) -> None:
    """Python turns no integer of more than 4,300 digits into text: quoting the value
    in the message ended every command with a traceback (exit 1)."""
    path = tmp_path / "job.yaml"
    path.write_text(text)

    # validate and run (whose process starts as no other's) as processes of their own for
    # the first value, in this process for the others: the file is refused before any work.
    first = key == "metrics.port (line 5)" and command in ("validate", "run")
    result = (replicator if first else in_process)(command, "--config", str(path))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"replicator: {path}: 1 problem in the job file:"
    assert lines[1].startswith(f"  {key}: got a number of ")
    assert "no setting takes a number of more than 1,000 digits" in lines[1]
    assert len(result.stderr) < 500


def test_a_kcl_property_of_thousands_of_digits_is_refused_quoted_short(tmp_path: Path) -> None:
    line = _refused(
        tmp_path,
        MINIMAL + f"kcl: {{extra_properties: {{maxLeasesForWorker: '{'9' * 5000}'}}}}\n",
        "kcl.extra_properties.maxLeasesForWorker",
        "(5,000 characters) is not a whole number that a Java long holds",
    )
    assert len(line) < 300


def test_a_long_text_where_a_number_belongs_is_quoted_short(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "metrics: {port: '${PORT}'}\n")

    result = in_process("validate", "--config", str(path), env={"PORT": "9" * 5000})

    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "metrics.port (line 5)" in line]
    assert line.endswith(f"(got {'9' * 40!r}… (5,000 characters), from the environment: PORT)")


def test_long_texts_refused_at_any_key_are_quoted_short(tmp_path: Path) -> None:
    """A 256-character table name, a 5,000-character ${VAR} where a region, a role ARN,
    a task name or a queue URL belongs: each key's line quotes the value's start and its
    length (the docs' promise for text over 200 characters), not the whole value."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: '${LONG}'\n"
        f"source: {{region: '${{LONG}}', table: {'t' * 256}, role_arn: '${{LONG}}'}}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: orders}\n"
        "dead_letter: {kind: sqs, queue_url: '${LONG}'}\n"
    )

    result = in_process("validate", "--config", str(path), env={"LONG": "x" * 5000})

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()[1:]
    for key in ("source.region", "source.table", "source.role_arn", "dead_letter.queue_url"):
        (line,) = [line for line in lines if line.startswith(f"  {key} (line ")]
        assert "characters)" in line and "x" * 100 not in line and "t" * 100 not in line, line
    (task,) = [line for line in lines if line.startswith("  task_name (line 1)")]
    assert "x" * 100 not in task, task


@pytest.mark.parametrize(
    ("character", "column"), [("\x07", 14), ("\x00", 14), ("\ufffe", 14), ("\x1b", 14)]
)
def test_a_character_yaml_does_not_allow_is_placed_by_line_and_column(
    tmp_path: Path, character: str, column: int
) -> None:
    """The reader's error gave an offset into "<unicode string>" (libyaml's in bytes)."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + f'task_name: "é{character}x"\n', encoding="utf-8")

    result = in_process("validate", "--config", str(path))

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"replicator: {path}: YAML syntax error at line 5, column {column}: unacceptable "
        f"character #x{ord(character):04x}: control characters are not allowed\n"
    )


ROLE = "arn:aws:iam::222222222222:role/replica-writer"


def _destination(settings: str) -> str:
    """MINIMAL with ``settings`` added to its destination."""
    return MINIMAL.replace("eu-west-1, table: orders}", f"eu-west-1, table: orders, {settings}}}")


def _with_external_id(external_id: str) -> str:
    return _destination(f"role_arn: '{ROLE}', external_id: '{external_id}'")


@pytest.mark.parametrize("external_id", ["x", "a b", "x" * 1225, "id#1", "tenant\\u00e9"])
def test_an_external_id_sts_would_refuse_is_refused_by_validate(
    tmp_path: Path, external_id: str
) -> None:
    """STS takes 2 to 1224 characters of [\\w+=,.@:/-]: ``validate`` took "x", and ``run``
    then failed assuming the role (Parameter validation failed, exit 3)."""
    text = _with_external_id(external_id).replace("'", '"')
    _refused(
        tmp_path,
        text,
        "destinations[0].external_id",
        "expected an external id of 2 to 1224 characters",
    )


def test_run_refuses_an_external_id_sts_would_refuse_before_it_assumes_the_role(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(_with_external_id("x"))

    result = replicator("run", "--config", str(path))

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[1].startswith(
        "  destinations[0].external_id (line 4): expected an external id of 2 to 1224"
    )


@pytest.mark.parametrize("external_id", ["ab", "a:b/c@d=e,f.g+h_i-j", "7" * 1224])
def test_an_external_id_of_stss_characters_is_taken(tmp_path: Path, external_id: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(_with_external_id(external_id))
    result = in_process("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr


LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ('name: "dr\\n"', "name"),
        ('name: "d\\0r"', "name"),
        ('name: "\\e[31mdr"', "name"),
        ('name: "dr "', "name"),
        ('conflict: {policy: version, version_attribute: " v"}', "conflict.version_attribute"),
    ],
)
def test_a_destinations_name_or_attribute_with_a_control_character_or_edge_space_is_refused(
    tmp_path: Path, settings: str, key: str
) -> None:
    text = _destination(settings)
    line = _refused(tmp_path, text, f"destinations[0].{key}")
    assert "control or invisible character" in line or "begins or ends with a space" in line


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (
            "conflict: {policy: last_writer_wins, timestamp_attribute: '${A}'}",
            "conflict.timestamp_attribute",
        ),
        ("conflict: {policy: version, version_attribute: '${A}'}", "conflict.version_attribute"),
        (LWW + "loop_prevention: {origin_attribute: '${A}'}", "loop_prevention.origin_attribute"),
        (
            LWW + "loop_prevention: {origin_attribute: origin, origin_value: '${A}'}",
            "loop_prevention.origin_value",
        ),
        ("kcl: {worker_id: '${A}'}", "kcl.worker_id"),
    ],
)
@pytest.mark.parametrize("value", ["us-east-1\r", "updated_at ", " v", "a\tb", "a\u200bb"])
def test_a_value_from_a_crlf_env_file_is_refused_at_its_key(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    """``${OV}`` of ``us-east-1\\r`` as the origin value passed ``validate``, and every
    put was then dropped as another region's echo."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + section + "\n")

    result = in_process("validate", "--config", str(path), env={"A": value})

    assert result.returncode == 2, result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key} (line")]
    assert f"got {value!r}" in line


def test_a_name_or_attribute_with_a_space_inside_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        _destination("name: dr eu")
        + "conflict: {policy: last_writer_wins, timestamp_attribute: updated at}\n"
        + "loop_prevention: {origin_attribute: origin région, origin_value: us-east-1}\n"
    )
    result = in_process("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "host", ["no such host", "999.1.1.1", "0.0.0.0:9400", "[0.0.0.0]", " 0.0.0.0", "host_1"]
)
def test_a_metrics_host_that_is_no_host_or_address_is_refused(tmp_path: Path, host: str) -> None:
    """``0.0.0.0:9400`` passed and printed ``http://[0.0.0.0:9400]:9400/metrics``; ``run``
    then failed to bind (exit 3)."""
    _refused(
        tmp_path,
        MINIMAL + f"metrics: {{host: '{host}'}}\n",
        "metrics.host",
        "expected the address to listen on, without a port (that is metrics.port)",
        f"{host!r} is not a host name or IP address",
    )


def test_run_refuses_a_metrics_host_with_a_port(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "metrics: {host: '0.0.0.0:9400'}\n")

    result = replicator("run", "--config", str(path))

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[1].startswith("  metrics.host (line 5): expected the address")


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::", "[::]"),
        ("[::1]", "[::1]"),
        ("localhost", "localhost"),
        ("metrics.example.internal", "metrics.example.internal"),
    ],
)
def test_a_metrics_host_name_or_address_is_taken(tmp_path: Path, host: str, shown: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + f"metrics: {{host: '{host}', port: 47101}}\n")
    result = in_process("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"http://{shown}:47101/metrics" in result.stdout


def test_an_endpoint_of_digits_and_dots_that_is_no_address_is_refused(tmp_path: Path) -> None:
    """No top-level domain is all digits: botocore's host name rule took 999.1.1.1."""
    _refused(
        tmp_path,
        _destination("endpoint_url: 'http://999.1.1.1:8000'"),
        "destinations[0].endpoint_url",
        "'999.1.1.1' is not a host name or IP address",
    )


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        ("", "which a DynamoDB stream does not support"),
        (", stream: {kind: kinesis, name: s}", "it and kcl.initial_position set the same start"),
    ],
)
def test_a_start_position_given_as_the_start_time_property_is_refused_as_written(
    tmp_path: Path, stream: str, why: str
) -> None:
    """``initialPositionInStreamExtended: LATEST`` was refused as AT_TIMESTAMP, a value
    the file did not hold."""
    text = (
        MINIMAL.replace("table: orders}", f"table: orders{stream}}}", 1)
        + "runtime: kcl\nconflict: {policy: version, version_attribute: v}\n"
        + "kcl: {extra_properties: {initialPositionInStreamExtended: LATEST}}\n"
    )
    line = _refused(tmp_path, text, "kcl.extra_properties.initialPositionInStreamExtended")
    assert line.split(": ", 1)[1].startswith(
        "is 'LATEST': the KCL reads this property as a time (seconds since 1970)"
    )
    assert why in line
    assert line.endswith("LATEST is a position, not a time: set kcl.initial_position: LATEST")
