"""Values a job file could hold that ``validate`` passed and ``run`` then misread or
failed on: YAML 1.1 words as switches, malformed ``${...}`` references, empty strings,
options of another kind, a record limit above the stream's. Each is refused by
``validate`` (exit 2, one line naming the key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config.loader import parse_job
from replicator.exceptions import ConfigError
from tests.config.test_config import MINIMAL, run_cli
from tests.config.test_job_checks import _refused
from tests.support import ROOT
from tests.support.cli import validate_in_process


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "ON", "y", "n"])
def test_a_yaml_1_1_boolean_word_is_not_a_switch(tmp_path: Path, word: str) -> None:
    """PyYAML read ``enabled: yes`` as true (YAML 1.1); the same word from a ``${VAR}``
    was already refused. Now both are the text the switch refuses."""
    _refused(
        tmp_path,
        MINIMAL + f"metrics: {{enabled: {word}}}\n",
        "metrics.enabled",
        f"expected true or false, got {word!r}",
    )


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "false", "False", "FALSE"])
def test_yaml_1_2_booleans_are_switches(word: str) -> None:
    job = parse_job(MINIMAL + f"watermark: {{enabled: {word}}}\n", Path("job.yaml")).job
    assert job.watermark.enabled is (word.lower() == "true")


def test_yes_no_on_off_elsewhere_stay_text() -> None:
    """A name or a key that happens to be one of YAML 1.1's boolean words is the word."""
    job = parse_job(
        "source: {region: us-east-1, table: yes}\n"
        "destinations: [{region: eu-west-1, table: off, name: on}]\n"
        "loop_prevention: {origin_attribute: n, origin_value: no}\n"
        "kcl: {extra_properties: {on: text}}\n",
        Path("job.yaml"),
    ).job
    assert job.source.table == "yes"
    assert job.destinations[0].table == "off"
    assert job.destinations[0].label == "on"
    assert (job.loop_prevention.origin_attribute, job.loop_prevention.origin_value) == ("n", "no")
    assert job.kcl.extra_properties == {"on": "text"}  # a value yes/y/on is refused


@pytest.mark.parametrize(
    "reference", ["${DL_DIR-/tmp}", "${ DL_DIR }", "${DL_DIR:-${HOME}}", "${DL_DIR", "$DL_DIR"]
)
def test_a_malformed_variable_reference_is_refused(tmp_path: Path, reference: str) -> None:
    """These were kept as literal text (a directory named '${DL_DIR-'), with no error."""
    _refused(
        tmp_path,
        MINIMAL + f"dead_letter: {{path: '{reference}/dl.jsonl'}}\n",
        "dead_letter.path",
        "malformed variable reference",
        "${VAR:-default}",
    )


def test_well_formed_references_and_dollars_still_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DL_DIR", "/var/dl")
    monkeypatch.delenv("DL_UNSET", raising=False)
    job = parse_job(
        MINIMAL + "dead_letter: {path: '${DL_DIR}/${DL_UNSET:-x}-$$1-a$1$.jsonl'}\n",
        Path("job.yaml"),
    ).job
    assert job.dead_letter.path == "/var/dl/x-$1-a$1$.jsonl"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("dead_letter: {path: ''}", "dead_letter.path"),
        ("dead_letter: {path: '${DL_UNSET_FOR_TEST:-}'}", "dead_letter.path"),
        ("conflict_log: {kind: file, path: ' '}", "conflict_log.path"),
        ("conflict_log: {kind: dynamodb, table: ''}", "conflict_log.table"),
        ("dead_letter: {kind: sqs, queue_url: ''}", "dead_letter.queue_url"),
        ("loop_prevention: {origin_attribute: ''}", "loop_prevention.origin_attribute"),
        ("kcl: {worker_id: ''}", "kcl.worker_id"),
    ],
)
def test_an_empty_text_value_is_refused(tmp_path: Path, section: str, key: str) -> None:
    """``dead_letter.path: ""`` passed validate (which showed a blank target) and run
    then failed with 'is a directory'; an empty origin_attribute turned loop prevention
    off without a word."""
    _refused(tmp_path, MINIMAL + section + "\n", key, "is empty", "leave the key out")


def test_a_file_target_ending_in_a_slash_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        MINIMAL + "dead_letter: {path: 'dead-letters/'}\n",
        "dead_letter.path",
        "names a directory",
        "dead-letters/{task_name}.jsonl",
    )


@pytest.mark.parametrize(
    ("section", "key", "belongs", "kind"),
    [
        (
            "dead_letter: {kind: file, queue_url: 'https://queue.amazonaws.com/123456789012/q'}",
            "dead_letter.queue_url",
            "sqs",
            "file",
        ),
        (
            "dead_letter: {queue_url: 'https://queue.amazonaws.com/123456789012/q'}",
            "dead_letter.queue_url",
            "sqs",
            "file",
        ),
        (
            "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", path: dl.jsonl}",
            "dead_letter.path",
            "file",
            "sqs",
        ),
        (
            "conflict_log: {kind: file, table: t-conflicts}",
            "conflict_log.table",
            "dynamodb",
            "file",
        ),
        (
            "conflict_log: {kind: dynamodb, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            "}",
            "conflict_log.queue_url",
            "sqs",
            "dynamodb",
        ),
        (
            "conflict_log: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", path: c.jsonl}",
            "conflict_log.path",
            "file",
            "sqs",
        ),
        ("conflict_log: {path: c.jsonl}", "conflict_log.path", "file", "none"),
    ],
)
def test_an_option_of_another_kind_is_refused(
    tmp_path: Path, section: str, key: str, belongs: str, kind: str
) -> None:
    """``dead_letter: {kind: file, queue_url: ...}`` ignored the queue, and validate
    showed the queue's URL as where the dead letters went."""
    _refused(
        tmp_path,
        MINIMAL + section + "\n",
        key,
        f"belongs to kind {belongs}",
        f"kind is {kind}, which does not read it",
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_origin_value_without_its_origin_attribute_is_refused(
    tmp_path: Path, command: str
) -> None:
    """``loop_prevention: {origin_value: use1}`` alone was accepted with loop prevention
    off, no warning: a pair of such jobs sends every write back (docs/active-active.md,
    section 10)."""
    path = tmp_path / "job.yaml"
    path.write_text(
        MINIMAL
        + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        + "loop_prevention: {origin_value: use1}\n"
    )
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "loop prevention: off" not in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("  loop_prevention.")]
    assert line.startswith("  loop_prevention.origin_value (line 6): ")
    assert "needs loop_prevention.origin_attribute, which is not set here" in line
    assert "set origin_attribute too, or remove origin_value" in line


@pytest.mark.parametrize(
    ("section", "key", "needs"),
    [
        (
            "active_active: {tombstone_table: '{table}-tb'}",
            "active_active.tombstone_table",
            "needs active_active.tombstones: true",
        ),
        (
            "active_active: {tombstones: false, tombstone_retention_hours: 24}",
            "active_active.tombstone_retention_hours",
            "needs active_active.tombstones: true",
        ),
        (
            "loop_prevention: {origin_value: '${ORIGIN:-us-east-1}'}",
            "loop_prevention.origin_value",
            "needs loop_prevention.origin_attribute",
        ),
    ],
)
def test_a_setting_read_only_beside_another_is_refused_without_it(
    tmp_path: Path, section: str, key: str, needs: str
) -> None:
    """Each was ignored without a word, as an option of another kind was."""
    _refused(tmp_path, MINIMAL + section + "\n", key, needs, "which is not set here")


def test_the_settings_beside_what_they_need_are_taken() -> None:
    job = parse_job(
        MINIMAL
        + "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        + "loop_prevention: {origin_attribute: origin, origin_value: use1}\n"
        + "active_active: {tombstones: true, tombstone_table: '{table}-tb',"
        + " tombstone_retention_hours: 24}\n",
        Path("job.yaml"),
    ).job
    assert job.origin_value == "use1"
    assert job.tombstone_table("orders") == "orders-tb"
    assert job.active_active.tombstone_retention_hours == 24


def test_validate_shows_the_target_of_the_kind(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("task_name: shop\n" + MINIMAL + "dead_letter: {path: 'dl/{task_name}.jsonl'}\n")
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    assert "dead letters: file dl/shop.jsonl" in result.stdout
    path.write_text(
        MINIMAL + "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
        "}\n"
    )
    result = validate_in_process(path)
    assert "dead letters: sqs https://queue.amazonaws.com/123456789012/q" in result.stdout


def test_validate_shows_the_writer_logging_and_kcl_settings(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        MINIMAL + "writer: {max_in_flight: 8, retry: {base_delay_ms: 10, max_delay_ms: 900}}\n"
        "logging: {level: debug, format: console}\n"
    )
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        "writer: up to 8 writes in flight per destination, 2000 changes buffered, retries "
        "after 10-900 ms, timeouts 5 s to connect, 10 s to answer" in lines
    )
    assert "logging: debug, format console" in lines
    assert not [line for line in lines if line.startswith("kcl:")]  # runtime local
    # What the local runtime reads of kcl: where a shard with no checkpoint starts.
    assert (
        "reading: a new job's shards start at TRIM_HORIZON (shards added later at "
        "TRIM_HORIZON), up to 1000 records a read (kcl.initial_position, kcl.max_records)" in lines
    )
    path.write_text(MINIMAL + "kcl: {initial_position: LATEST, max_records: 100}\n")
    assert (
        "reading: a new job's shards start at LATEST (shards added later at TRIM_HORIZON), "
        "up to 100 records a read (kcl.initial_position, kcl.max_records)"
        in validate_in_process(path).stdout.splitlines()
    )
    path.write_text(
        "runtime: kcl\n" + MINIMAL + "kcl: {worker_id: host-a, initial_position: LATEST, "
        "max_records: 250}\n"
    )
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    assert (
        "kcl: new leases start at LATEST, up to 250 records a read, worker id host-a, Java "
        "runtime java (every KCL property: replicator properties)" in result.stdout.splitlines()
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_more_records_than_a_dynamodb_stream_returns_is_refused(
    tmp_path: Path, command: str
) -> None:
    """GetRecords on a DynamoDB stream refuses a Limit above 1000: the local runtime
    exited 3 with nothing replicated, and the KCL launcher silently lowered it."""
    path = tmp_path / "job.yaml"
    path.write_text(MINIMAL + "kcl: {max_records: 1001}\n")
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "  kcl.max_records (line" in line]
    assert "is 1001, but a DynamoDB stream returns at most 1000 records" in line
    assert "10000 is for a kinesis source" in line


def test_a_kinesis_source_takes_up_to_10000_records() -> None:
    text = (
        "runtime: kcl\n"
        "source: {region: us-east-1, table: aaa, stream: {kind: kinesis, name: s}}\n"
        "destinations: [{region: eu-west-1, table: aaa}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
    )
    assert parse_job(text + "kcl: {max_records: 10000}\n", Path("j.yaml")).job.kcl.max_records
    with pytest.raises(ConfigError, match=r"kcl\.max_records \(line 5\): .*10000"):
        parse_job(text + "kcl: {max_records: 10001}\n", Path("j.yaml"))
    assert parse_job(MINIMAL + "kcl: {max_records: 1000}\n", Path("j.yaml")).job


@pytest.mark.parametrize(
    ("text", "field_key", "cross_key", "says"),
    [
        (
            MINIMAL + "metrics: {port: 70000}\ndead_letter: {path: 'dl/{task}.jsonl'}\n",
            "metrics.port",
            "dead_letter.path",
            "may use only {task_name}",
        ),
        (
            MINIMAL
            + "active_active: {tombstone_table: tombstones}\n"
            + f"conflict_log: {{kind: dynamodb, table: '{'t' * 250}-{{task_name}}'}}\n",
            "active_active.tombstone_table",
            "conflict_log.table",
            "not a DynamoDB table name",
        ),
        (
            "source: {region: us-east-1}\n"
            "destinations: [{region: eu-west-1, table: t11}]\n"
            "kcl: {max_records: 2000}\n"
            "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'"
            ", path: dl.jsonl}\n",
            "source.table",
            "dead_letter.path",
            "belongs to kind file",
        ),
        (
            "task_name: orders\n"
            "source: {region: us-east-1, table: aaa, endpoint_url: 'http://127.0.0.1:1/p'}\n"
            "destinations: [{region: eu-west-1, table: aaa}]\n"
            "conflict_log: {kind: file, path: 'c/{x}.jsonl'}\n",
            "source.endpoint_url",
            "conflict_log.path",
            "may use only {task_name}",
        ),
        (
            "source: {region: us-east-1, table: aaa}\n"
            "destinations: [{region: eu-west-1, tabel: aaa}]\n"
            "dead_letter: {path: 'dl/{task}.jsonl'}\n",
            "destinations[0].tabel",
            "dead_letter.path",
            "may use only {task_name}",
        ),
        (
            MINIMAL + "dead_letter: {path: 'dl/{x}.jsonl'}\n"
            "conflict_log: {kind: file, path: c.jsonl, colour: red}\n",
            "conflict_log.colour",
            "dead_letter.path",
            "may use only {task_name}",
        ),
    ],
)
def test_cross_field_checks_that_read_only_valid_keys_are_reported_with_the_field_errors(
    tmp_path: Path, text: str, field_key: str, cross_key: str, says: str
) -> None:
    """Cross-field checks ran only once every key was valid, so a field error hid them."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"  {field_key} (line" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {cross_key} (")]
    assert says in line


def test_a_cross_field_check_that_reads_an_invalid_key_waits_for_it() -> None:
    """kcl.max_records is judged by the source's stream kind: with the source invalid, it
    is not judged (it would be judged against a default)."""
    with pytest.raises(ConfigError) as caught:
        parse_job(
            "source: {region: us-east-1}\ndestinations: [{region: eu-west-1, table: t11}]\n"
            "kcl: {max_records: 2000}\n",
            Path("j.yaml"),
        )
    assert "1 problem in the job file" in str(caught.value)
    assert "kcl.max_records" not in str(caught.value)


def test_numbers_and_credentials_providers_the_kcl_reads_pass_in_extra_properties() -> None:
    job = parse_job(
        "runtime: kcl\n"
        + MINIMAL
        + "kcl:\n  extra_properties:\n"
        + "    maxLeasesForWorker: 4\n    leaseAssignmentIntervalMillis: '+1'\n"
        + "    shardSyncIntervalMillis: ' 60000'\n    workerMetricsEMAAlpha: 0.5\n"
        + "    maxThroughputPerHostKBps: 1e3\n    someUnknownKey: lots\n"
        + "    AWSCredentialsProvider: 'ProfileCredentialsProvider|ops, "
        + "DefaultCredentialsProvider'\n"
        + "    AWSCredentialsProviderDynamoDB: org.example.auth.LeaseTableProvider\n",
        Path("job.yaml"),
    ).job
    assert job.kcl.extra_properties["maxLeasesForWorker"] == "4"
    # 1e3 is a number to YAML 1.2 (not to YAML 1.1, which wants a dot): its value, as text.
    assert job.kcl.extra_properties["maxThroughputPerHostKBps"] == "1000.0"


# The texts the configuration guide says a number's and a switch's keys take (quoted here,
# as a ${VAR} gives them): each one it names is taken, as it reads, and named there.
_DOCUMENTED_NUMBERS = [(" 9400 ", 9400), ("+9400", 9400), ("-0", 0)]
_DOCUMENTED_FRACTIONS = [("2.5", 2.5), (".5", 0.5), ("1e1", 10.0)]
_DOCUMENTED_SWITCHES = [("TRUE", True), ("True", True), (" true ", True)]


@pytest.mark.parametrize(("text", "number"), _DOCUMENTED_NUMBERS)
def test_the_whole_number_texts_the_guide_names_are_taken(text: str, number: int) -> None:
    job = parse_job(MINIMAL + f"metrics: {{port: '{text}'}}\n", Path("job.yaml")).job
    assert job.metrics.port == number


@pytest.mark.parametrize(("text", "number"), _DOCUMENTED_FRACTIONS)
def test_the_decimal_texts_the_guide_names_are_taken(text: str, number: float) -> None:
    text = MINIMAL + f"conflict_log: {{kind: file, retry_for_s: '{text}'}}\n"
    assert parse_job(text, Path("job.yaml")).job.conflict_log.retry_for_s == number


@pytest.mark.parametrize(("text", "value"), _DOCUMENTED_SWITCHES)
def test_the_switch_texts_the_guide_names_are_taken(text: str, value: bool) -> None:
    job = parse_job(MINIMAL + f"metrics: {{enabled: '{text}'}}\n", Path("job.yaml")).job
    assert job.metrics.enabled is value


def test_the_guide_says_which_texts_a_number_and_a_switch_take() -> None:
    """It said a number takes "its digits" and a switch "the text true or false", while
    blanks, a sign and any case were taken (and files rely on them)."""
    guide = " ".join((ROOT / "docs" / "configuration.md").read_text().split())
    for text, _ in _DOCUMENTED_NUMBERS + _DOCUMENTED_SWITCHES:
        shown = f'`"{text}"`' if text != text.strip() else f"`{text}`"
        assert shown in guide, shown
    for text, _ in _DOCUMENTED_FRACTIONS:
        assert f"`{text}`" in guide, text
    assert "in any case and with blanks around it" in guide
    assert "digits with an optional sign and blanks around them" in guide
