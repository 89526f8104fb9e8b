"""What both runtimes check before they start: one line naming the setting, exit 3."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSOTokenLoadError,
)

from replicator.appendfile import unwritable_hint
from replicator.aws.tables import ReachedTable, identity_of, one_table
from replicator.config.loader import load_job
from replicator.exceptions import ConfigError, EnvironmentProblem
from replicator.runtime import preflight
from replicator.runtime.kcl import java
from tests.support.aws import client, create_table
from tests.support.cli import in_process, replicator
from tests.support.kcl_jars import fake_jars
from tests.support.special_files import FILE_TARGETS, SPECIAL_FILES, TOO_LONG, special_file


def job_file(path: Path, endpoint: str, source: str, destination: str, extra: str = "") -> Path:
    path.write_text(
        f"task_name: preflight-{source}\n"
        f"source: {{region: us-east-1, table: {source}, endpoint_url: '{endpoint}'{extra}}}\n"
        f"destinations: [{{region: eu-west-1, table: {destination}, endpoint_url: '{endpoint}'}}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"dead_letter: {{kind: file, path: '{path.parent}/dead/{{task_name}}.jsonl'}}\n"
        "metrics: {enabled: false}\n"
    )
    return path


def _refused_start(job: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """``replicator run`` refused at start: exit 3 and no traceback; its last line."""
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--config", str(job)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    return result, result.stderr.strip().splitlines()[-1]


@pytest.fixture
def tables(moto_endpoint: str, unique: Any) -> dict[str, str]:
    east = client("dynamodb", "us-east-1", moto_endpoint)
    ours, theirs = unique("ours"), unique("theirs")
    create_table(east, ours)
    other = create_table(east, theirs)
    destination = unique("dst")
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), destination, stream=None)
    return {
        "ours": ours,
        "theirs": theirs,
        "their_arn": other["LatestStreamArn"],
        "dst": destination,
    }


def test_a_stream_arn_of_another_table_stops_the_start_naming_both_tables(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """`validate` refuses an ARN whose text names another table (tests/config); this is the
    check behind it, against the stream itself, reached here by setting the ARN after
    validation."""
    resolved = load_job(
        job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    )
    source = resolved.job.source
    stream = source.stream.model_copy(update={"arn": tables["their_arn"]})
    job = resolved.job.model_copy(update={"source": source.model_copy(update={"stream": stream})})
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(resolved.model_copy(update={"job": job}))
    message = str(raised.value)
    assert "\n" not in message
    assert f"table {tables['theirs']}" in message
    assert f"source table {tables['ours']}" in message


def test_the_stream_arn_of_the_source_table_is_accepted(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    arn = client("dynamodb", "us-east-1", moto_endpoint).describe_table(TableName=tables["ours"])[
        "Table"
    ]["LatestStreamArn"]
    job = job_file(
        tmp_path / "job.yaml",
        moto_endpoint,
        tables["ours"],
        tables["dst"],
        extra=f", stream: {{arn: '{arn}'}}",
    )
    assert preflight.check(load_job(job)).stream_arn == arn


def test_a_dead_letter_directory_that_cannot_be_created_stops_run_with_exit_3(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """A file where the directory should be (as root, permission bits never refuse)."""
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    (tmp_path / "dead").write_text("in the way\n")
    _, line = _refused_start(job)
    assert line.startswith("replicator: dead_letter.path: ")
    assert f"{tmp_path}/dead/preflight-{tables['ours']}.jsonl" in line
    # The image's advice, where it can be the cause (see the next test).
    assert ("chown 10001" in line) == bool(unwritable_hint())
    assert (tmp_path / "dead").read_text() == "in the way\n"


def test_the_images_chown_advice_is_given_only_as_its_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given to root on a host (an immutable directory there), it sent the reader to
    chown a bind mount that does not exist; as another uid, to chown for the wrong one."""
    for uid, advised in [(0, False), (1000, False), (10001, True)]:
        monkeypatch.setattr(os, "geteuid", lambda uid=uid: uid)
        assert ("chown 10001 the host directory" in unwritable_hint()) == advised


def test_a_writable_dead_letter_directory_is_created_and_left_without_junk(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    preflight.check_dead_letter_file(load_job(job))
    assert list((tmp_path / "dead").iterdir()) == []


def test_a_conflict_log_file_that_cannot_be_written_names_its_setting(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    (tmp_path / "blocker").write_text("")
    job.write_text(
        job.read_text()
        + f"conflict_log: {{kind: file, path: '{tmp_path}/blocker/sub/conflicts.jsonl'}}\n"
    )
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job))
    message = str(raised.value)
    assert message.startswith("conflict_log.path: ")
    assert f"{tmp_path}/blocker is a file" in message


def _with_queue(job: Path, section: str, url: str, endpoint: str) -> Path:
    text = job.read_text()
    if section == "dead_letter":
        text = "\n".join(line for line in text.splitlines() if "dead_letter" not in line) + "\n"
    job.write_text(
        text + f"{section}: {{kind: sqs, queue_url: '{url}', endpoint_url: '{endpoint}'}}\n"
    )
    return job


def test_a_dead_letter_queue_that_does_not_exist_stops_run_with_exit_3(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """As a dead-letter file that cannot be written: the first dead letter would have
    stopped every shard, and every restart after."""
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    queue = f"{moto_endpoint}/123456789012/no-such-queue"
    _with_queue(job, "dead_letter", queue, moto_endpoint)
    result, line = _refused_start(job)
    assert line.startswith(
        f"replicator: dead_letter.queue_url: the dead-letter queue {queue} does not exist at "
        f"{moto_endpoint} (us-east-1)"
    )
    assert "local runtime started" not in result.stderr


def test_a_conflict_log_queue_that_does_not_exist_stops_the_start(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    queue = f"{moto_endpoint}/123456789012/no-such-queue"
    _with_queue(job, "conflict_log", queue, moto_endpoint)
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job))
    assert str(raised.value).startswith(
        f"conflict_log.queue_url: the conflict-log queue {queue} does not exist"
    )


@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
def test_a_queue_that_exists_passes_and_one_whose_attributes_are_denied_is_a_warning(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path, unique: Any, section: str
) -> None:
    """A policy may leave sqs:GetQueueAttributes out (docs/security.md): the queue cannot
    be checked, and the start goes on with a warning."""
    import structlog.testing

    from tests.support.faults.proxy import Fault, FaultProxy, Mode

    queue = client("sqs", "us-east-1", moto_endpoint).create_queue(QueueName=unique("q"))
    url = queue["QueueUrl"]
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    text = job.read_text()
    with structlog.testing.capture_logs() as lines:
        preflight.check(load_job(_with_queue(job, section, url, moto_endpoint)))
    assert not [line for line in lines if line["log_level"] == "warning"]
    proxy = FaultProxy(moto_endpoint).start()
    try:
        proxy.set(Mode(Fault.DENY, operations=frozenset({"GetQueueAttributes"})))
        job.write_text(text)
        with structlog.testing.capture_logs() as lines:
            preflight.check(load_job(_with_queue(job, section, url, proxy.url)))
    finally:
        proxy.stop()
    assert proxy.counts("GetQueueAttributes")["denied"] >= 1
    warnings = [line for line in lines if line["log_level"] == "warning"]
    assert [line["event"] for line in warnings] == [
        f"{section.replace('_', '-')} queue not checked at start: "
        "sqs:GetQueueAttributes is not allowed"
    ]


def http2_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's moto server answers HTTP/1.1 only, which the KCL's Kinesis client does
    not speak: the start's check of that (tested below) is taken as passed."""
    monkeypatch.setattr(preflight, "answers_http2", lambda endpoint_url: True)


def test_a_kinesis_source_at_an_endpoint_without_http2_stops_the_start_before_the_kcl(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A Kinesis job on a plain moto server: every boto3 check passed, then the daemon
    logged 'First received frame was not SETTINGS' for minutes with /healthz ok, reading
    nothing. The start says it at once (exit 3, one line), before the daemon starts."""
    table, name = unique("kin-src"), unique("kin-plain")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), table, stream=None)
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), table, stream=None)
    kinesis = client("kinesis", "us-east-1", moto_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    # moto has no DescribeKinesisStreamingDestination: that check is a warning here.
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    path = tmp_path / "kinesis.yaml"
    path.write_text(
        f"task_name: {unique('kin-task')}\nruntime: kcl\n"
        f"source: {{region: us-east-1, table: {table}, endpoint_url: '{moto_endpoint}', "
        f"stream: {{kind: kinesis, name: {name}}}}}\n"
        f"destinations: [{{region: eu-west-1, table: {table}, endpoint_url: '{moto_endpoint}'}}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
        "metrics: {enabled: false}\n"
        # No JVM here: jars with the daemon's class named, and a java never started.
        f"kcl: {{java: {sys.executable}, jars_dir: {jars}}}\n"
    )

    result = replicator("run", "--config", str(path), timeout=120)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator: ")]
    assert line.startswith(
        f"replicator: kinesis stream {name}: the endpoint {moto_endpoint} "
        "(source.endpoint_url) does not answer HTTP/2, which the KCL's Kinesis client speaks"
    ), line
    assert "KCL daemon started" not in result.stderr


def test_the_http2_probe_tells_a_settings_frame_from_http_1_and_says_nothing_it_cannot_know(
    moto_endpoint: str,
) -> None:
    import socket
    import struct
    import threading

    from replicator.aws.http2 import answers_http2

    def one_answer(reply: bytes | None) -> str:
        """A server that reads the preface and answers ``reply`` once (b"": closes; None:
        resets the connection)."""
        listener = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                preface = b""  # read whole: a close with bytes unread would reset
                while len(preface) < 33 and (chunk := connection.recv(33 - len(preface))):
                    preface += chunk
                if reply is None:  # closed at once, with a reset (RST), not a FIN
                    connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                elif reply:
                    connection.sendall(reply)
            listener.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    settings = bytes([0, 0, 6, 4, 0, 0, 0, 0, 0]) + bytes([0, 3, 0, 0, 0, 100])
    assert answers_http2(one_answer(settings)) is True
    assert answers_http2(one_answer(bytes([0, 0, 0, 1, 0, 0, 0, 0, 1]))) is False  # HEADERS
    assert answers_http2(one_answer(b"HTTP/1.1 505 HTTP Version Not Supported\r\n\r\n")) is False
    assert answers_http2(one_answer(b"")) is False  # closed without a word
    assert answers_http2(one_answer(None)) is False  # reset without a word
    assert answers_http2(moto_endpoint) is False  # moto's own server: HTTP/1.1 only
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        assert answers_http2(f"http://127.0.0.1:{closed.getsockname()[1]}") is None
    assert answers_http2("https://kinesis.us-east-1.amazonaws.com") is None  # ALPN: not asked


def test_a_kinesis_arn_the_kcl_would_not_read_is_refused(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KCL reads a Kinesis stream by name in source.region with the host's account:
    an ARN of a stream in another account would be read as this account's stream of that
    name (one of another region is a job-file error: DynamoDB streams a table only to a
    stream of its own region)."""
    http2_answered(monkeypatch)
    table, name = unique("kin-src"), unique("kin-changes")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), table, stream=None)
    kinesis = client("kinesis", "us-east-1", moto_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]

    def job(stream_arn: str) -> Any:
        path = tmp_path / "kinesis.yaml"
        path.write_text(
            "runtime: kcl\n"
            f"source: {{region: us-east-1, table: {table}, endpoint_url: '{moto_endpoint}', "
            f"stream: {{kind: kinesis, arn: '{stream_arn}'}}}}\n"
            f"destinations: [{{region: eu-west-1, table: {table}}}]\n"
            "conflict: {policy: version, version_attribute: v}\n"
        )
        return load_job(path)

    assert preflight.check_source(job(arn)).stream_arn == arn
    elsewhere = arn.replace(":123456789012:", ":210987654321:", 1)
    assert elsewhere != arn
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_source(job(elsewhere))
    assert elsewhere in str(raised.value)
    assert arn in str(raised.value)
    with pytest.raises(ConfigError, match="Kinesis data stream in region us-west-2"):
        job(arn.replace(":us-east-1:", ":us-west-2:"))


def test_a_timestamp_that_is_a_key_attribute_stops_the_start_naming_the_key(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """Only the table knows its keys: ``validate`` cannot see this, the start can."""
    path = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    path.write_text(
        path.read_text().replace("timestamp_attribute: updated_at", "timestamp_attribute: pk")
    )
    with pytest.raises(ConfigError) as raised:
        preflight.check(load_job(path))
    assert str(raised.value).startswith(
        f"{path}: 1 problem in the job file:\n  conflict.timestamp_attribute (line 4): is "
        f"'pk', a key attribute of the source table {tables['ours']} (hash key, S)"
    )


def test_an_origin_attribute_that_is_a_key_attribute_stops_the_run(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """Every put carries its key, never this region's name: each would be dropped as an
    echo and checkpointed past. ``replicator run`` refuses it, naming the file and key."""
    path = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    path.write_text(path.read_text() + "loop_prevention: {origin_attribute: pk}\n")

    result = replicator("run", "--config", str(path))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # Before it, as JSON log lines: the start's warnings for an active-active job.
    refusal = result.stderr[result.stderr.index("replicator: ") :]
    assert refusal.startswith(
        f"replicator: {path}: 1 problem in the job file:\n"
        "  loop_prevention.origin_attribute (line 7): is 'pk', a key attribute "
        f"of the source table {tables['ours']} (hash key, S)"
    )
    east = client("dynamodb", "us-east-1", moto_endpoint)
    assert f"preflight-{tables['ours']}" not in east.list_tables()["TableNames"]


def test_every_setting_that_is_a_key_attribute_is_reported_at_once_at_its_line(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """The start named only the first, without its line: the operator fixed one, ran
    again, and met the next."""
    path = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    text = path.read_text().replace("timestamp_attribute: updated_at", "timestamp_attribute: pk")
    text = text.replace(
        f"table: {tables['dst']}, endpoint_url: '{moto_endpoint}'",
        f"table: {tables['dst']}, endpoint_url: '{moto_endpoint}',\n"
        "  conflict: {policy: version, version_attribute: pk}",
    )
    path.write_text(text)

    result = replicator("run", "--config", str(path))

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"replicator: {path}: 2 problems in the job file:", result.stderr
    assert [
        line.split(": is 'pk', a key attribute of the source table ")[0] for line in lines[1:]
    ] == [
        "  conflict.timestamp_attribute (line 5)",
        "  destinations[0].conflict.version_attribute (line 4)",
    ]


def test_a_destination_missing_in_the_account_of_its_role_names_the_role_and_account(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table exists for the worker's own credentials, but the job reaches it through a
    role of another account, where it does not: the message must say where it looked."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)  # the role is assumed in moto
    role = "arn:aws:iam::222222222222:role/replica-writer"
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: preflight-role-{tables['ours']}\n"
        f"source: {{region: us-east-1, table: {tables['ours']}, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: missing-{tables['dst']}, "
        f"endpoint_url: '{moto_endpoint}', role_arn: '{role}'}}\n"
        "metrics: {enabled: false}\n"
    )
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(path))
    message = str(raised.value)
    assert f"missing-{tables['dst']}: not found at" in message, message
    assert f"as role {role} in account 222222222222" in message, message


def test_a_dead_letter_queue_that_answers_only_errors_stops_the_start_a_conflict_log_not(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path, unique: Any
) -> None:
    """Server errors outlasting the SDK's retries: a dead-letter queue is as needed as
    a destination (the first letter would stop its shard), so the start stops, naming
    it; a conflict log's entries are retried and counted, so the start goes on."""
    from tests.support.faults.proxy import Fault, FaultProxy, Mode

    url = client("sqs", "us-east-1", moto_endpoint).create_queue(QueueName=unique("q"))["QueueUrl"]
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    text = job.read_text()
    proxy = FaultProxy(moto_endpoint).start()
    try:
        proxy.set(Mode(Fault.SERVER_ERROR, operations=frozenset({"GetQueueAttributes"})))
        with pytest.raises(EnvironmentProblem) as raised:
            preflight.check(load_job(_with_queue(job, "dead_letter", url, proxy.url)))
        assert proxy.counts("GetQueueAttributes")["server_error"] > 1  # retried first
        job.write_text(text)
        preflight.check(load_job(_with_queue(job, "conflict_log", url, proxy.url)))
    finally:
        proxy.stop()
    assert str(raised.value).startswith(f"dead_letter.queue_url: dead-letter queue {url}: ")


def _with_file_target(job: Path, setting: str, key: str, target: str | Path) -> Path:
    """``job`` with the file target ``setting`` (of ``key``) at ``target``, in place of
    its own dead-letter file when that is the key."""
    text = job.read_text()
    if key == "dead_letter.path":
        text = "\n".join(line for line in text.splitlines() if not line.startswith("dead_letter"))
    job.write_text(text + "\n" + setting.replace("PATH", f"'{target}'") + "\n")
    return job


def test_a_destination_that_is_the_source_at_another_spelling_of_its_endpoint_is_refused(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """``localhost`` for ``127.0.0.1``: the job file's check compares endpoints as text
    and cannot see one server; DescribeTable shows one table (moto: its ARN and creation
    time), which the job would have replicated into itself."""
    other_spelling = moto_endpoint.replace("127.0.0.1", "localhost")
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: preflight-self-{tables['ours']}\n"
        f"source: {{region: us-east-1, table: {tables['ours']}, endpoint_url: '{moto_endpoint}'}}\n"
        f"destinations: [{{region: us-east-1, table: {tables['ours']}, "
        f"endpoint_url: '{other_spelling}'}}]\n"
        "conflict: {policy: overwrite}\n"
        "metrics: {enabled: false}\n"
    )
    result = in_process("run", "--config", str(path))
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"replicator: destinations[0] table {tables['ours']} at {other_spelling} (us-east-1) "
        "is the source table: DescribeTable shows one table, reached another way (another "
        "spelling of its endpoint, or a role into the same account); the job would write the "
        "source's changes back into it: name the table that is to receive the changes"
    )
    for command in ("verify", "backfill", "redrive"):
        result = in_process(command, "--config", str(path))
        assert result.returncode == 3, result.stderr
        assert (
            f"replicator: table us-east-1/{tables['ours']} at {other_spelling} (us-east-1) is "
            "the source table: DescribeTable shows one table"
        ) in result.stderr, command


def test_one_table_is_told_by_its_table_id_or_on_an_emulator_by_arn_time_and_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Emulators give every server's table of a name one ARN and a creation time to the
    millisecond: two servers set up by one script are two tables, not one, and a job
    between them is not refused. One server's table is one table whatever region names
    it (DynamoDB Local's ``-sharedDb`` keeps one database for every region)."""
    names = {
        "localhost": ["127.0.0.1", "::1"],
        "127.0.0.1": ["127.0.0.1"],
        "0.0.0.0": ["0.0.0.0"],
        "lan": ["10.0.0.9"],
    }

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    created = datetime.datetime(2026, 12, 7, 20, 0, tzinfo=datetime.UTC)
    arn = "arn:aws:dynamodb:ddblocal:000000000000:table/orders"

    def described(**table: Any) -> Any:
        return identity_of(table)  # type: ignore[arg-type]

    emulated = described(TableArn=arn, CreationDateTime=created)

    def at(url: str | None, identity: Any = emulated) -> ReachedTable:
        return ReachedTable(f"at {url}", url, identity)

    here = at("http://127.0.0.1:8000")
    assert one_table(here, at("http://localhost:8000/"))
    assert one_table(here, at("http://LOCALHOST.:8000"))
    assert one_table(here, at("HTTP://127.0.0.1:8000"))
    assert one_table(here, at("http://0.0.0.0:8000"))  # reaches this host's own server
    assert not one_table(here, at("http://127.0.0.1:8001"))
    assert not one_table(here, at("http://lan:8000"))
    assert not one_table(here, at("http://nowhere:8000"))
    later = described(TableArn=arn, CreationDateTime=created + datetime.timedelta(milliseconds=1))
    assert not one_table(here, at("http://localhost:8000", later))
    assert not one_table(at("http://127.0.0.1:8000", None), at("http://localhost:8000", None))
    # DynamoDB's TableId is the table wherever it is reached from (a VPC endpoint's name).
    table_id = described(TableId="4f2c", TableArn=arn, CreationDateTime=created)
    vpce = "https://vpce-1.dynamodb.us-east-1.vpce.amazonaws.com"
    assert one_table(at("https://dynamodb.us-east-1.amazonaws.com", table_id), at(vpce, table_id))
    other_id = described(TableId="9a1e", TableArn=arn, CreationDateTime=created)
    assert not one_table(at(vpce, table_id), at(vpce, other_id))


def test_two_destinations_that_are_one_table_are_refused_and_a_missing_one_says_what_to_do(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    other_spelling = moto_endpoint.replace("127.0.0.1", "localhost")
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: preflight-twice-{tables['ours']}\n"
        f"source: {{region: us-east-1, table: {tables['ours']}, endpoint_url: '{moto_endpoint}'}}\n"
        "destinations:\n"
        f"  - {{name: a, region: eu-west-1, table: {tables['dst']}, "
        f"endpoint_url: '{moto_endpoint}'}}\n"
        f"  - {{name: b, region: eu-west-1, table: {tables['dst']}, "
        f"endpoint_url: '{other_spelling}'}}\n"
        "conflict: {policy: overwrite}\n"
        "metrics: {enabled: false}\n"
    )
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(path))
    assert str(raised.value) == (
        f"destinations[1] table {tables['dst']} at {other_spelling} (eu-west-1) is "
        "destinations[0] (a): DescribeTable shows one table, reached another way (another "
        "spelling of its endpoint, or a role into the same account); the job would write "
        "every change to that table twice: name the table that is to receive the changes"
    )
    path.write_text(path.read_text().replace(f"table: {tables['dst']}", "table: nowhere", 1))
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(path))
    assert str(raised.value).startswith(
        f"destinations[0] table nowhere: not found at {moto_endpoint}"
    )
    assert str(raised.value).endswith(
        "; create it with the source's key schema (pk (hash key, S)) (if the job replicated "
        "to it before, what it held is gone: start the job, then run `replicator backfill "
        "--restart` beside it and `replicator verify`), or correct the table, region, "
        "endpoint_url or role_arn of destinations[0] in the job file"
    )


@FILE_TARGETS
@SPECIAL_FILES
def test_a_file_target_that_is_no_regular_file_stops_run_with_exit_3_unopened(
    moto_endpoint: str,
    tables: dict[str, str],
    tmp_path: Path,
    setting: str,
    key: str,
    what: str,
    special: str,
) -> None:
    """A FIFO blocked run in open() for ever (logging nothing, deaf to a first SIGTERM),
    and /dev/null threw every dead letter away: each is refused at start, naming the key
    and the path."""
    target, kind = special_file(tmp_path, special)
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    _, line = _refused_start(_with_file_target(job, setting, key, target))
    assert line == (
        f"replicator: {key}: {what} {target} cannot be written: it is {kind}, not a regular "
        "file: name a file of its own"
    )


@FILE_TARGETS
def test_a_file_target_linked_into_a_missing_directory_stops_run_with_exit_3(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path, setting: str, key: str, what: str
) -> None:
    """A link into a volume not mounted passed the start (``exists`` says no to a link to
    nothing; a file made beside the link proved the wrong directory writable) and
    stopped the job at its first dead letter, naming neither the link nor its target."""
    link = tmp_path / "linked.jsonl"
    link.symlink_to("/nonexistent-volume/letters.jsonl")
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    _, line = _refused_start(_with_file_target(job, setting, key, link))
    assert line == (
        f"replicator: {key}: {what} {link} cannot be written: it is a symbolic link to "
        "/nonexistent-volume/letters.jsonl, and /nonexistent-volume it points into does not "
        "exist (a volume not mounted?): mount or create it, or name another file"
    )
    assert not Path("/nonexistent-volume").exists()


@FILE_TARGETS
@TOO_LONG
def test_a_file_target_too_long_for_a_file_name_stops_run_and_redrive_with_exit_3(
    moto_endpoint: str,
    tables: dict[str, str],
    tmp_path: Path,
    setting: str,
    key: str,
    what: str,
    too_long: str,
) -> None:
    """A name over 255 bytes or a path over 4096 (ENAMETOOLONG) ended run and redrive in
    a traceback: it is one line naming the key, as a path that cannot be created is."""
    target = f"{tmp_path}/{too_long}"
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"])
    _, line = _refused_start(_with_file_target(job, setting, key, target))
    assert line.startswith(
        f"replicator: {key}: {what} {target} cannot be written: its name is too long"
    )
    if key == "dead_letter.path":
        result = replicator("redrive", "--config", str(job))
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == line


def test_a_stop_asked_for_while_a_failing_step_was_in_flight_is_said_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's error ends the start (its exit code); the stop asked for meanwhile was
    dropped without a word."""
    job = job_file(tmp_path / "job.yaml", "http://127.0.0.1:9", "orders", "orders-eu")
    asked: list[bool] = []

    def check_source(resolved: Any) -> None:
        asked.append(True)  # the signal comes while the step waits for its answer
        raise EnvironmentProblem("source table orders: cannot reach it")

    monkeypatch.setattr(preflight, "check_dead_letter_queue", lambda resolved: None)
    monkeypatch.setattr(preflight, "check_source", check_source)
    with (
        structlog.testing.capture_logs() as logged,
        pytest.raises(EnvironmentProblem, match="cannot reach it"),
    ):
        preflight.check(load_job(job), stopped=lambda: bool(asked))
    assert logged == [
        {
            "event": "stop requested",
            "during": "preflight",
            "note": "the start-up step in flight failed",
            "log_level": "info",
        }
    ]


def test_a_pinned_stream_that_is_not_the_tables_current_one_is_warned_about(
    moto_endpoint: str, tables: dict[str, str], tmp_path: Path
) -> None:
    """The source table created again while its job pins the earlier stream's ARN: the
    job starts (reading an earlier stream to its end is what pinning is for) but says
    that it reads no change made since; pinned to the current stream, it says nothing."""
    east = client("dynamodb", "us-east-1", moto_endpoint)
    current = east.describe_table(TableName=tables["ours"])["Table"]["LatestStreamArn"]
    pinned = f", stream: {{arn: '{current}'}}"
    job = job_file(tmp_path / "job.yaml", moto_endpoint, tables["ours"], tables["dst"], pinned)
    with structlog.testing.capture_logs() as lines:
        preflight.check_source(load_job(job))
    assert [line for line in lines if line["log_level"] == "warning"] == []

    east.delete_table(TableName=tables["ours"])
    latest = create_table(east, tables["ours"])["LatestStreamArn"]
    assert latest != current
    with structlog.testing.capture_logs() as lines:
        preflight.check_source(load_job(job))
    (warning,) = [line for line in lines if line["log_level"] == "warning"]
    assert warning["event"].startswith("source.stream.arn is not the source table's current")
    assert warning["pinned"] == current and warning["latest"] == latest


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9/"),
    ],
)
def test_an_endpoint_that_does_not_answer_is_named_with_what_to_do(error: Exception) -> None:
    """A destination down at start stops the whole job (exit 3), where a running job waits
    out the same outage: the line says so, and what to check, not only the error."""
    problem = preflight.explain(error, "destinations[1] table orders", "http://127.0.0.1:9")
    said = str(problem)
    assert said.startswith("destinations[1] table orders: cannot reach http://127.0.0.1:9: ")
    assert said.endswith(
        "; check the endpoint and region set for it and this host's network (DNS, proxy, "
        "firewall), then try again once it answers (`replicator run` starts a job only once "
        "everything it uses answers; a job already running waits out such an outage instead)"
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [("ProvisionedThroughputExceededException", 400), ("InternalServerError", 500)],
)
def test_a_table_throttled_or_failing_at_start_is_said_to_pass(code: str, status: int) -> None:
    """A destination throttled throughout the start's retries ended the start with a bare
    ``ProvisionedThroughputExceededException`` line (exit 3): a crash loop under a restart
    policy, with nothing saying it passes."""
    error = ClientError(
        {
            "Error": {"Code": code, "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "DescribeTable",
    )
    said = str(preflight.explain(error, "destinations[0] table orders", "eu-west-1"))
    assert said == (
        f"destinations[0] table orders: {code}: slow down (at eu-west-1), still after the "
        "SDK's retries; it is throttled or failing for now: try again once it answers (a "
        "job already running retries such answers without limit)"
    )


@pytest.mark.parametrize(
    ("code", "status"), [("LimitExceededException", 400), ("NotImplemented", 501)]
)
def test_a_quota_or_a_call_not_implemented_is_not_said_to_pass(code: str, status: int) -> None:
    """A table quota (CreateTable's LimitExceededException) or an endpoint that does not
    implement the call does not pass by waiting: no advice to try again."""
    error = ClientError(
        {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateTable",
    )
    said = str(preflight.explain(error, "status table t", "eu-west-1"))
    assert said == f"status table t: {code}: no (at eu-west-1)"


def test_an_expired_sso_login_is_a_credentials_problem_not_the_network() -> None:
    said = str(preflight.explain(SSOTokenLoadError(error_msg="expired"), "source table t", "AWS"))
    assert said.startswith("source table t: AWS credentials could not be loaded: ")
    assert "network" not in said


def _kinesis_job(tmp_path: Path, endpoint: str, table: str, stream: str) -> Any:
    path = tmp_path / "kinesis.yaml"
    path.write_text(
        "runtime: kcl\n"
        f"source: {{region: us-east-1, table: {table}, endpoint_url: '{endpoint}', "
        f"stream: {{kind: kinesis, name: {stream}}}}}\n"
        f"destinations: [{{region: eu-west-1, table: {table}}}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
    )
    return load_job(path)


@pytest.fixture
def streaming_destinations(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, list[dict[str, str]]]]:
    """DynamoDB's DescribeKinesisStreamingDestination on the in-process moto server (moto
    has no such call, and answers HTTP 500): the listing per table is the test's."""
    from moto.dynamodb.responses import DynamoHandler

    listings: dict[str, list[dict[str, str]]] = {}

    def describe(handler: Any) -> str:
        table = handler.body["TableName"]
        return json.dumps(
            {"TableName": table, "KinesisDataStreamDestinations": listings.get(table, [])}
        )

    monkeypatch.setattr(
        DynamoHandler, "describe_kinesis_streaming_destination", describe, raising=False
    )
    _forget_method_names()  # the demo's fast moto keeps each handler's list of calls
    yield listings
    monkeypatch.undo()
    _forget_method_names()


def _forget_method_names() -> None:
    from moto.core import responses

    getattr(responses.method_names_from_class, "cache_clear", lambda: None)()


def test_a_kinesis_stream_the_source_table_does_not_write_to_is_refused(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    streaming_destinations: dict[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another table's stream (a mistyped name, a copied job file) was read to its end,
    each record skipped as another table's, lag 0 and /healthz ok, the job's table never
    replicated. A stream the table wrote to once (streaming disabled since) is drained,
    with a warning; one it writes to starts quietly."""
    http2_answered(monkeypatch)
    table, other_table = unique("kin-src"), unique("kin-other")
    ours, theirs = unique("kin-ours"), unique("kin-theirs")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), table, stream=None)
    kinesis = client("kinesis", "us-east-1", moto_endpoint)
    arns = {}
    for name in (ours, theirs):
        kinesis.create_stream(StreamName=name, ShardCount=1)
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        arns[name] = summary["StreamARN"]
    streaming_destinations[table] = [{"StreamArn": arns[ours], "DestinationStatus": "ACTIVE"}]
    streaming_destinations[other_table] = [
        {"StreamArn": arns[theirs], "DestinationStatus": "ACTIVE"}
    ]

    with structlog.testing.capture_logs() as lines:
        assert (
            preflight.check_source(_kinesis_job(tmp_path, moto_endpoint, table, ours)).stream_arn
            == arns[ours]
        )
    assert not [line for line in lines if line["log_level"] == "warning"]

    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_source(_kinesis_job(tmp_path, moto_endpoint, table, theirs))
    assert str(raised.value).startswith(
        f"source table {table} at {moto_endpoint} (us-east-1) does not write its changes to "
        f"kinesis stream {arns[theirs]} (it writes to {arns[ours]} (ACTIVE)): the job would "
        "skip every record there"
    )
    streaming_destinations[table] = []
    with pytest.raises(EnvironmentProblem, match="it writes to no Kinesis stream"):
        preflight.check_source(_kinesis_job(tmp_path, moto_endpoint, table, ours))

    streaming_destinations[table] = [{"StreamArn": arns[ours], "DestinationStatus": "DISABLED"}]
    with structlog.testing.capture_logs() as lines:
        preflight.check_source(_kinesis_job(tmp_path, moto_endpoint, table, ours))
    [warning] = [line for line in lines if line["log_level"] == "warning"]
    assert warning["event"].startswith(
        "the source table no longer writes its changes to the kinesis stream the job reads"
    )
    assert warning["destination_status"] == "DISABLED"
    # A backfill is refused: the changes made during its scan would reach no destination.
    where = f"{moto_endpoint} (us-east-1)"
    job = _kinesis_job(tmp_path, moto_endpoint, table, ours)
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_kinesis_stream(job, where, for_backfill=True)
    assert str(raised.value).startswith(
        f"source table {table} at {where}: its streaming to kinesis stream {arns[ours]} is "
        "DISABLED (it writes to no Kinesis stream): the changes made during the backfill's "
        "scan would reach no destination"
    )
    # Streaming that never started held no change of the table: refused, with AWS's reason.
    streaming_destinations[table] = [
        {
            "StreamArn": arns[ours],
            "DestinationStatus": "ENABLE_FAILED",
            "DestinationStatusDescription": "User does not have a permission",
        },
        {"StreamArn": arns[theirs], "DestinationStatus": "ACTIVE"},
    ]
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check_source(job)
    assert str(raised.value).startswith(
        f"source table {table} at {where}: its streaming to kinesis stream {arns[ours]} is "
        f"ENABLE_FAILED; User does not have a permission (it writes to {arns[theirs]} "
        "(ACTIVE)): the stream never received the table's changes"
    )


def test_a_stream_that_cannot_be_checked_against_the_table_is_a_warning(
    moto_endpoint: str, unique: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto has no DescribeKinesisStreamingDestination (HTTP 500), and a policy may leave
    it out: the start goes on, saying the stream was not checked, and why."""
    http2_answered(monkeypatch)
    from tests.support.faults.proxy import Fault, FaultProxy, Mode

    table, name = unique("kin-src"), unique("kin-changes")
    create_table(client("dynamodb", "us-east-1", moto_endpoint), table, stream=None)
    client("kinesis", "us-east-1", moto_endpoint).create_stream(StreamName=name, ShardCount=1)

    def warned(fault: Fault | None) -> str:
        """The one warning of a start whose streaming check meets ``fault`` (None: moto)."""
        proxy = FaultProxy(moto_endpoint).start()
        try:
            if fault is not None:
                checked = frozenset({"DescribeKinesisStreamingDestination"})
                proxy.set(Mode(fault, operations=checked))
            with structlog.testing.capture_logs() as lines:
                preflight.check_source(_kinesis_job(tmp_path, proxy.url, table, name))
        finally:
            proxy.stop()
        [warning] = [line for line in lines if line["log_level"] == "warning"]
        return str(warning["event"])

    unchecked = (
        "not checked at start whether the source table writes its changes to the kinesis stream: "
    )
    assert warned(None).startswith(
        f"{unchecked}the endpoint did not answer DescribeKinesisStreamingDestination (500: "
    )
    assert warned(Fault.DENY) == (
        f"{unchecked}dynamodb:DescribeKinesisStreamingDestination is not allowed"
    )
    # No answer at all (connections reset): the start goes on too, warned.
    assert warned(Fault.RESET).startswith(
        f"{unchecked}the endpoint did not answer DescribeKinesisStreamingDestination ("
    )


def _view_type_job(tmp_path: Path, endpoint: str, source: str, destination: str, tail: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: preflight-{source}\n"
        f"source: {{region: us-east-1, table: {source}, endpoint_url: '{endpoint}'}}\n"
        f"destinations:\n  - {{region: eu-west-1, table: {destination}, endpoint_url: "
        f"'{endpoint}'{tail}}}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        "metrics: {enabled: false}\n"
    )
    return path


def test_a_new_image_stream_counts_only_the_rules_the_job_applies(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A NEW_IMAGE stream serves overwrite and custom: a job whose only destination
    overrides the job's last_writer_wins section with overwrite starts (the section
    is applied nowhere: no write-back, no tombstones), and one whose destination applies
    last_writer_wins is refused naming that destination. KEYS_ONLY serves no rule, and
    its refusal names custom among those NEW_IMAGE serves."""
    east = client("dynamodb", "us-east-1", moto_endpoint)
    new_image, keys_only = unique("newimg"), unique("keysonly")
    create_table(east, new_image, stream="NEW_IMAGE")
    create_table(east, keys_only, stream="KEYS_ONLY")
    destination = unique("dst")
    create_table(client("dynamodb", "eu-west-1", moto_endpoint), destination, stream=None)

    overridden = _view_type_job(
        tmp_path, moto_endpoint, new_image, destination, ", conflict: {policy: overwrite}"
    )
    assert preflight.check(load_job(overridden)).view_type == "NEW_IMAGE"

    applied = _view_type_job(tmp_path, moto_endpoint, new_image, destination, "")
    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(applied))
    assert str(raised.value).endswith(
        f"which needs NEW_AND_OLD_IMAGES, and destinations[0] (eu-west-1/{destination}) is "
        "under last_writer_wins (the job's conflict section): enable NEW_AND_OLD_IMAGES on "
        "the source's stream, or put those destinations under overwrite or custom"
    ), raised.value

    keys = _view_type_job(
        tmp_path, moto_endpoint, keys_only, destination, ", conflict: {policy: overwrite}"
    )
    with pytest.raises(EnvironmentProblem) as refused:
        preflight.check(load_job(keys))
    assert str(refused.value).endswith(
        "(NEW_AND_OLD_IMAGES, or NEW_IMAGE for overwrite and custom)"
    ), refused.value
