"""A value is checked whole, to its last character, and each problem is reported at the
key that holds it: a name ending in a newline (``$`` matched before it) passed every
name check, and a table's was then reported at a key the file did not have. Values
that did nothing (an external id without a role, a stream name beside an ARN of
another stream) and values shown in Python's words are refused in the file's terms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.test_config import MINIMAL, run_cli
from tests.config.test_job_checks import _refused
from tests.support.cli import validate_in_process

ROLE = "arn:aws:iam::222222222222:role/replica-writer"
KINESIS = (
    "runtime: kcl\nconflict: {policy: version, version_attribute: v}\n"
    "destinations: [{region: eu-west-1, table: orders}]\n"
)


def _only_problem(tmp_path: Path, text: str, key: str, *fragments: str) -> None:
    """The file's one problem, at ``key``."""
    line = _refused(tmp_path, text, key, *fragments)
    result = validate_in_process(tmp_path / "job.yaml")
    assert "1 problem in the job file" in result.stderr, (line, result.stderr)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('task_name: "orders-job\\n"\n' + MINIMAL, "task_name"),
        (MINIMAL.replace("region: us-east-1", 'region: "us-east-1\\n"'), "source.region"),
        (MINIMAL.replace("table: orders}", 'table: "orders\\n"}', 1), "source.table"),
        (
            MINIMAL.replace("eu-west-1, table: orders", 'eu-west-1, table: "orders\\n"'),
            "destinations[0].table",
        ),
        (MINIMAL.replace("region: eu-west-1", 'region: "eu-west-1\\n"'), "destinations[0].region"),
        (
            MINIMAL.replace("orders}\ndest", f'orders, role_arn: "{ROLE}\\n"}}\ndest'),
            "source.role_arn",
        ),
        (
            "source: {region: us-east-1, table: orders, stream: {kind: kinesis, "
            'name: "s1\\n"}}\n' + KINESIS,
            "source.stream.name",
        ),
        (
            "source: {region: us-east-1, table: orders, stream: {kind: kinesis, "
            'arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s1\\n"}}\n' + KINESIS,
            "source.stream.arn",
        ),
        (
            "source: {region: us-east-1, table: orders, stream: {arn: "
            '"arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000'
            '\\n"}}\ndestinations: [{region: eu-west-1, table: orders}]\n',
            "source.stream.arn",
        ),
        (
            MINIMAL + 'conflict: {policy: custom, resolver: "rules:pick\\n"}\n',
            "conflict.resolver",
        ),
    ],
)
def test_a_value_ending_in_a_newline_is_refused_at_its_own_key(
    tmp_path: Path, text: str, key: str
) -> None:
    _only_problem(tmp_path, text, key, "\\n'")


def test_run_refuses_a_task_name_ending_in_a_newline_before_it_makes_a_table(
    tmp_path: Path,
) -> None:
    """``run`` went on to make a lease table named ``orders-job\\n``."""
    job = tmp_path / "job.yaml"
    job.write_text('task_name: "orders-job\\n"\n' + MINIMAL)
    result = run_cli("run", "--config", str(job))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{job}: 1 problem in the job file:\n  task_name (line 1): " in result.stderr


@pytest.mark.parametrize(
    "role", [ROLE + " ", "arn:aws:iam::222222222222:role/a b", ROLE + "*", ROLE + "/", "r" * 3]
)
def test_a_role_arn_is_an_iam_role_name_and_path(tmp_path: Path, role: str) -> None:
    text = MINIMAL.replace(
        "eu-west-1, table: orders", f"eu-west-1, table: orders, role_arn: '{role}'"
    )
    _only_problem(tmp_path, text, "destinations[0].role_arn", "expected an IAM role ARN")


def test_a_role_of_a_path_and_every_character_iam_allows_is_taken(tmp_path: Path) -> None:
    role = "arn:aws-us-gov:iam::222222222222:role/service-role/team.a/w+=,.@_-1"
    text = MINIMAL.replace(
        "eu-west-1, table: orders", f"us-gov-west-1, table: orders, role_arn: '{role}'"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    assert f"as {role}, policy overwrite" in result.stdout


@pytest.mark.parametrize("url", ["http://[zz]:80", "http://[::1"])
def test_an_endpoint_of_a_broken_ipv6_host_is_refused_in_the_usual_words(
    tmp_path: Path, url: str
) -> None:
    text = MINIMAL.replace(
        "eu-west-1, table: orders", f"eu-west-1, table: orders, endpoint_url: '{url}'"
    )
    _only_problem(
        tmp_path,
        text,
        "destinations[0].endpoint_url",
        "expected an endpoint URL such as http://127.0.0.1:8000",
        "its host is not a host name or IP address",
        f"got {url!r}",
    )


def test_a_date_where_text_is_expected_is_named_as_the_date_written(tmp_path: Path) -> None:
    line = _refused(tmp_path, "task_name: 2026-01-01\n" + MINIMAL, "task_name")
    assert line == (
        "  task_name (line 1): expected text (got 2026-01-01, which YAML "
        'reads as a date: write it in quotes, "2026-01-01", to give it as text)'
    )


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("12345", 'got 12345, which YAML reads as a number: write it in quotes, "12345", to'),
        ("1.50", 'got 1.50, which YAML reads as a number: write it in quotes, "1.50", to give'),
        ("true", 'got true, which YAML reads as a boolean: write it in quotes, "true", to'),
        ("null", "got null, an empty value: give the text)"),
        ("~", "got ~, an empty value: give the text)"),
    ],
)
def test_a_number_boolean_or_null_where_text_is_expected_is_named_as_written(
    tmp_path: Path, written: str, said: str
) -> None:
    """``table: 12345`` is a fine table name, once quoted; the message said ``(got 12345)``
    with no word of the quotes, and a null was Python's ``None``."""
    line = _refused(
        tmp_path, MINIMAL.replace("table: orders}", f"table: {written}}}", 1), "source.table"
    )
    assert line.startswith("  source.table (line 2): expected text ("), line
    assert said in line, line


@pytest.mark.parametrize("key", ["null", "true", "~", "010"])
def test_a_key_is_named_as_it_is_written(tmp_path: Path, key: str) -> None:
    """``null:`` and ``true:`` were named None and True."""
    _only_problem(tmp_path, MINIMAL + f"metrics: {{{key}: 1}}\n", f"metrics.{key}", "unknown key")


def test_a_merge_key_of_several_values_that_are_no_mappings_is_one_problem(
    tmp_path: Path,
) -> None:
    _only_problem(
        tmp_path,
        MINIMAL + "metrics: {<<: [1, 2], port: 9401}\n",
        "metrics.<<",
        "the merge key << takes a mapping",
    )


def test_a_kinesis_stream_name_and_an_arn_of_another_stream_are_refused(tmp_path: Path) -> None:
    """The KCL reads the stream by its name: the ARN was ignored without a word."""
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s2"
    text = (
        f"source: {{region: us-east-1, table: orders, stream: {{kind: kinesis, name: s1, "
        f"arn: '{arn}'}}}}\n" + KINESIS
    )
    _only_problem(
        tmp_path, text, "source.stream.name", "is 's1', but source.stream.arn names the stream 's2'"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text.replace("name: s1,", "name: s2,"))
    assert validate_in_process(path).returncode == 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            MINIMAL.replace("eu-west-1, table: orders", "eu-west-1, table: orders, external_id: x"),
            "destinations[0].external_id",
        ),
        (
            MINIMAL.replace("table: orders}", "table: orders, external_id: x}", 1),
            "source.external_id",
        ),
    ],
)
def test_an_external_id_without_a_role_is_refused(tmp_path: Path, text: str, key: str) -> None:
    """It is sent only when a role is assumed: it did nothing."""
    _only_problem(tmp_path, text, key, "is sent only with role_arn")
    path = tmp_path / "job.yaml"
    path.write_text(text.replace("external_id: x", f"external_id: xy, role_arn: '{ROLE}'"))
    assert validate_in_process(path).returncode == 0, validate_in_process(path).stderr


def test_every_problem_of_the_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        'task_name: "orders-job\\n"\n'
        "source: {region: us-east-1, table: orders, external_id: x}\n"
        "destinations:\n"
        "  - {region: eu-west-1, table: orders, endpoint_url: 'http://[::1'}\n"
        "  - {region: eu-west-2, table: orders, role_arn: 'arn:aws:iam::222222222222:role/a b'}\n"
        "metrics: {null: 1}\n"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"replicator: {path}: 5 problems in the job file:"
    assert sorted(line.split(":")[0] for line in lines[1:]) == [
        "  destinations[0].endpoint_url (line 4)",
        "  destinations[1].role_arn (line 5)",
        "  metrics.null (line 6)",
        "  source.external_id (line 2)",
        "  task_name (line 1)",
    ]


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        (MINIMAL + "conflict: {policy: custom, resolvr: 'm:f'}\n", "conflict.resolvr", "resolver"),
        (MINIMAL + "writer: {max_inflight: 3}\n", "writer.max_inflight", "max_in_flight"),
        (MINIMAL + "conflcit: {policy: overwrite}\n", "conflcit", "conflict"),
        (
            MINIMAL.replace("eu-west-1, table: orders}", "eu-west-1, table: orders, endpoint: x}"),
            "destinations[0].endpoint",
            "endpoint_url",
        ),
        (
            MINIMAL.replace(
                "eu-west-1, table: orders}", "eu-west-1, table: orders, conflict: {polcy: v}}"
            ),
            "destinations[0].conflict.polcy",
            "policy",
        ),
        (  # a key cut short: too short for a close match by letters
            MINIMAL.replace("eu-west-1, table: orders}", "eu-west-1, table: orders, role: x}"),
            "destinations[0].role",
            "role_arn",
        ),
        # a key of another section, written where it does not belong
        (MINIMAL + "worker_id: host-a\n", "worker_id", "kcl.worker_id"),
        (MINIMAL + "kcl: {port: 9401}\n", "kcl.port", "metrics.port"),
        (MINIMAL + "kcl: {task_name: t-1}\n", "kcl.task_name", "the top-level task_name"),
        (  # an exact key elsewhere before a close one here (version_attribute)
            MINIMAL + "conflict: {policy: overwrite, origin_attribute: o}\n",
            "conflict.origin_attribute",
            "loop_prevention.origin_attribute",
        ),
        (
            MINIMAL.replace(
                "eu-west-1, table: orders}", "eu-west-1, table: orders, tombstones: true}"
            ),
            "destinations[0].tombstones",
            "active_active.tombstones",
        ),
    ],
)
def test_an_unknown_key_names_the_key_it_is_close_to(
    tmp_path: Path, text: str, key: str, hint: str
) -> None:
    line = _refused(tmp_path, text, key)
    assert line.endswith(f": unknown key (did you mean {hint}?)"), line


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("writer: {colour: blue}", "writer.colour"),
        ("writer: {max: 5}", "writer.max"),  # begins several keys: none is told
        ("kcl: {region: eu-west-1}", "kcl.region"),  # a key of several other sections
    ],
)
def test_an_unknown_key_close_to_nothing_gets_no_hint(tmp_path: Path, given: str, key: str) -> None:
    line = _refused(tmp_path, MINIMAL + given + "\n", key)
    assert line.endswith(": unknown key"), line


def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_TEST_TABLE", "ab")
    monkeypatch.delenv("REPLICATOR_TEST_UNSET_PORT", raising=False)
    text = MINIMAL.replace("table: orders}", "table: '${REPLICATOR_TEST_TABLE}'}", 1)
    line = _refused(tmp_path, text, "source.table")
    assert line.endswith("got 'ab' (from the environment: REPLICATOR_TEST_TABLE)"), line
    # A default the file gives is the file's value: no variable is named.
    port = MINIMAL + "metrics: {port: '${REPLICATOR_TEST_UNSET_PORT:-x}'}\n"
    line = _refused(tmp_path, port, "metrics.port")
    assert "from the environment" not in line, line


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("metrics: {port: '${REPLICATOR_TEST_EMPTY}'}\n", "metrics.port"),
        ("writer: {max_in_flight: '${REPLICATOR_TEST_EMPTY}'}\n", "writer.max_in_flight"),
    ],
)
def test_a_variable_set_empty_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, key: str
) -> None:
    """An empty variable is the commonest mistake of all: it was not named."""
    monkeypatch.setenv("REPLICATOR_TEST_EMPTY", "")
    line = _refused(tmp_path, MINIMAL + written, key)
    assert line.endswith("(got '', from the environment: REPLICATOR_TEST_EMPTY (set, empty))"), line
    # With a default in the file, an empty variable takes it: the file's value.
    defaulted = written.replace("}'", ":-x}'")
    line = _refused(tmp_path, MINIMAL + defaulted, key)
    assert "from the environment" not in line, line


def test_an_empty_table_name_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_TEST_EMPTY", "")
    text = MINIMAL.replace("table: orders}", "table: '${REPLICATOR_TEST_EMPTY}'}", 1)
    line = _refused(tmp_path, text, "source.table")
    assert "from the environment: REPLICATOR_TEST_EMPTY (set, empty)" in line, line


def test_a_section_of_kind_sqs_without_its_queue_names_the_other_kinds_options_too(
    tmp_path: Path,
) -> None:
    """Every problem at once: the stray options were named only once queue_url was added."""
    text = (
        MINIMAL
        + "dead_letter: {kind: sqs, path: /tmp/x.jsonl}\n"
        + "conflict_log: {kind: sqs, path: /tmp/c.jsonl, table: t}\n"
    )
    letters = _refused(tmp_path, text, "dead_letter")
    assert letters.endswith(
        "a dead-letter queue of kind sqs needs 'queue_url'; and 'path' belongs to kind "
        "file, not sqs: remove it"
    ), letters
    log = _refused(tmp_path, text, "conflict_log")
    assert log.endswith(
        "a conflict log of kind sqs needs 'queue_url'; and 'path' belongs to kind file, "
        "'table' belongs to kind dynamodb, not sqs: remove them"
    ), log


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (MINIMAL + "dead_letter: file\n", "dead_letter", "expected a section of keys ("),
        ("source: []\ndestinations: [{region: eu-west-1, table: o}]\n", "source", "a section"),
        ("source: {region: us-east-1, table: orders}\ndestinations: []\n", "destinations", ""),
        (MINIMAL + "writer: {max_in_flight: abc}\n", "writer.max_in_flight", "a whole number"),
    ],
)
def test_a_value_of_the_wrong_kind_is_told_in_a_job_files_words(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    """pydantic's words named its classes (``instance of DeadLetterConfig``) and its steps
    (``List should have at least 1 item after validation``)."""
    line = _refused(tmp_path, text, key, says)
    assert "Input should" not in line and "instance of" not in line, line
    assert "validation" not in line and "Config" not in line, line
    if key == "destinations":
        assert "needs at least 1 entry (got [])" in line, line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("task_name:\n" + MINIMAL, "task_name"),
        ("task_name: ~\n" + MINIMAL, "task_name"),
        (
            MINIMAL.replace("table: orders}", "table: orders, endpoint_url: }", 1),
            "source.endpoint_url",
        ),
        (
            MINIMAL.replace("eu-west-1, table: orders", "eu-west-1, table: orders, role_arn: null"),
            "destinations[0].role_arn",
        ),
        (
            MINIMAL.replace("eu-west-1, table: orders", "eu-west-1, table: orders, name: "),
            "destinations[0].name",
        ),
        (
            MINIMAL.replace("eu-west-1, table: orders", "eu-west-1, table: orders, conflict: "),
            "destinations[0].conflict",
        ),
        (MINIMAL + "loop_prevention:\n  origin_attribute:\n", "loop_prevention.origin_attribute"),
        (MINIMAL + "kcl: {worker_id: }\n", "kcl.worker_id"),
        (MINIMAL + "dead_letter: {kind: sqs, queue_url: }\n", "dead_letter.queue_url"),
    ],
)
def test_a_key_written_with_no_value_is_refused_not_taken_as_left_out(
    tmp_path: Path, text: str, key: str
) -> None:
    """``task_name:`` with its value forgotten ran the job on the lease table of a derived
    task name (a replay of the stream, or under LATEST changes skipped), and ``role_arn:``
    wrote without the role: a key with no value was taken as a key left out."""
    _only_problem(
        tmp_path, text, key, "an empty value: give a value, or leave the key out for its default"
    )


def test_run_refuses_a_task_name_written_with_no_value(tmp_path: Path) -> None:
    """``run`` refuses it before reaching any table (no endpoint answers here)."""
    path = tmp_path / "job.yaml"
    path.write_text("task_name:\n" + MINIMAL)
    result = run_cli("run", "-c", str(path))
    assert result.returncode == 2, result.stderr
    assert "task_name (line 1): got null, an empty value" in result.stderr


def test_a_region_the_sdk_does_not_know_is_a_warning_where_no_endpoint_is_set(
    tmp_path: Path,
) -> None:
    """``us-east-9`` passed ``validate`` without a word, and ``run`` then said it could
    not reach it, which reads like the network. A warning, not a refusal: a region newer
    than the installed SDK is reached all the same. A local endpoint takes any name, and
    so does one botocore takes from the environment or the AWS config file."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: orders-job\n"
        "source: {region: us-east-9, table: orders}\n"
        "destinations:\n"
        "  - {region: fips-us-east-1, table: orders}\n"
        "  - {region: mars-north-1, table: orders, endpoint_url: 'http://127.0.0.1:9'}\n"
        "dead_letter: {kind: sqs, queue_url: 'https://sqs.eu-wset-1.amazonaws.com/123456789012/q'}\n"
    )
    unknown = [
        f"warning: {path}: {key} names the region {region!r}, which this host's AWS SDK does "
        "not know (a misspelling? `run` would say it cannot reach it); a region newer than the SDK "
        "is reached all the same"
        for key, region in (("source.region", "us-east-9"), ("dead_letter.queue_url", "eu-wset-1"))
    ]
    config = tmp_path / "aws-config"
    config.write_text("[default]\nendpoint_url = http://127.0.0.1:9\n")
    clean: dict[str, str | None] = {
        name: None
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_DYNAMODB",
            "AWS_ENDPOINT_URL_SQS",
            "AWS_PROFILE",
        )
    }
    # A profile this host does not have is run's to report (a traceback, exit 1, when the
    # check read it).
    for env, said in (
        ({}, unknown),
        ({"AWS_PROFILE": "no-such-profile"}, []),
        ({"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9"}, unknown[1:]),
        ({"AWS_CONFIG_FILE": str(config)}, []),
    ):
        result = validate_in_process(path, env={**clean, **env})
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
        assert warnings == said, (env, result.stdout)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "~\n", "null\n", "---\n...\n"])
def test_an_empty_job_file_is_told_the_keys_it_needs_however_it_is_empty(
    tmp_path: Path, text: str
) -> None:
    """A document of a null alone was told ``expected a mapping`` at line 1, where an
    empty file was told the keys it lacks."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"replicator: {path}: 2 problems in the job file (it holds no job: it is empty, "
        "comments alone, or a null):",
        "  source: required key is missing",
        "  destinations: required key is missing",
    ], result.stderr


def test_a_second_document_after_the_job_says_a_job_file_holds_one(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "---\n"
        "source: {region: us-east-1, table: carts}\n"
    )
    result = validate_in_process(path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"replicator: {path}: YAML syntax error at line 3, column 1: but found another "
        "document (a job file holds one job, one YAML document: remove the --- that starts "
        "a second one, or put each job in a file of its own)\n"
    )
