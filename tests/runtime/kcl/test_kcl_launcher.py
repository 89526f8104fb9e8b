"""The KCL runtime's launcher: the daemon's command line, clear refusals, and its lifecycle.

The command line and refusals are checked without a KCL; the lifecycle (signals, exit
status, health, no orphaned processes) with a stand-in daemon: a small script given as
``kcl.java`` that behaves like the daemon towards its supervisor. The real daemon is
driven in tests/runtime/kcl/test_kcl.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from replicator import entry
from replicator.config.loader import load_job
from replicator.demo import tables
from replicator.exceptions import KclUnavailable
from replicator.runtime.kcl import java
from replicator.runtime.kcl.awaited import AnswerNotes
from replicator.runtime.kcl.launcher import DaemonProcess, group_members, prepare_run
from replicator.runtime.kcl.properties import templates_dir
from tests.support import ROOT
from tests.support.aws import client, create_lease_table
from tests.support.e2e import wait_until
from tests.support.healthcheck import healthcheck
from tests.support.kcl_cluster import assert_json_lines
from tests.support.kcl_jars import fake_jars
from tests.support.metrics import health, logged_metrics_port, matching, scrape

STREAMS_CLASSES = [java.STREAMS_LAUNCHER, java.STREAMS_ADAPTER, java.MULTILANG_CONFIG]


def write_job(
    path: Path,
    *,
    kind: str = "kinesis",
    endpoint: str | None = "http://127.0.0.1:9",
    kcl: str = "",
    table: str = "orders",
    stream: str = "orders-changes",
    destination: str = "orders",
    task_name: str = "orders-kcl",
    metrics: str = "",
) -> Path:
    endpoint_key = f", endpoint_url: '{endpoint}'" if endpoint else ""
    stream_spec = f"{{kind: kinesis, name: {stream}}}" if kind == "kinesis" else "{}"
    path.write_text(
        "runtime: kcl\n"
        f"task_name: {task_name}\n"
        f"source: {{region: us-east-1, table: {table}, stream: {stream_spec}{endpoint_key}}}\n"
        f"destinations: [{{region: eu-west-1, table: {destination}{endpoint_key}}}]\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}\n"
        f"dead_letter: {{kind: file, path: '{path.parent / 'dead.jsonl'}'}}\n"
        f"metrics: {{host: 127.0.0.1, port: 0{metrics}}}\n"
        f"kcl: {{failover_time_ms: 5000{kcl}}}\n"
    )
    return path


def run_cli(
    job: Path, env: dict[str, str] | None = None, command: str = "run"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", command, "--config", str(job)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def assert_refused(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("replicator: ")
    for needle in needles:
        assert needle in message
    return message


# -- the command line ---------------------------------------------------------------------


def test_kinesis_source_runs_the_stock_daemon(tmp_path: Path) -> None:
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(tmp_path / "job.yaml", kcl=f", java: {sys.executable}, jars_dir: {jars}")
    resolved = load_job(job)
    installation = java.locate(resolved, environ={})
    properties = tmp_path / "orders-kcl.properties"
    argv = java.daemon_command(resolved, installation, properties, environ={})
    assert argv == [
        sys.executable,
        "-Daws.cborEnabled=false",  # the job has an endpoint override
        f"-Dlogback.configurationFile={templates_dir() / 'logback.xml'}",
        "-cp",
        f"{jars}/*",
        "software.amazon.kinesis.multilang.MultiLangDaemon",
        "--properties-file",
        str(properties),
    ]


def test_dynamodb_streams_source_runs_the_launcher_with_the_operators_jvm_options(
    tmp_path: Path,
) -> None:
    jars = fake_jars(tmp_path / "jars", STREAMS_CLASSES)
    job = write_job(tmp_path / "job.yaml", kind="dynamodb-streams", endpoint=None)
    resolved = load_job(job)
    environ = {
        "REPLICATOR_KCL_JARS": str(jars),
        "REPLICATOR_KCL_JVM_OPTIONS": "-Xmx512m '-Dhttps.proxyHost=proxy.internal'",
    }
    installation = java.locate(resolved, environ=environ)
    assert installation.jars_dir == jars
    argv = java.daemon_command(resolved, installation, tmp_path / "p.properties", environ)
    assert argv[0] == shutil.which("java")  # kcl.java defaults to the java on PATH
    assert "-Daws.cborEnabled=false" not in argv  # AWS itself reads CBOR
    assert argv[1:] == [
        f"-Dlogback.configurationFile={templates_dir() / 'logback.xml'}",
        "-Xmx512m",
        "-Dhttps.proxyHost=proxy.internal",
        "-cp",
        f"{jars}/*",
        "replicator.kcl.DynamoDbStreamsMultiLangDaemon",
        "--properties-file",
        str(tmp_path / "p.properties"),
    ]


def test_the_properties_name_the_stream_arn_preflight_resolved(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    table = unique("kcl-src")
    tables.create(client("dynamodb", "us-east-1", moto_endpoint), table, stream=True)
    tables.create(client("dynamodb", "eu-west-1", moto_endpoint), table, stream=False)
    arn = client("dynamodb", "us-east-1", moto_endpoint).describe_table(TableName=table)["Table"][
        "LatestStreamArn"
    ]
    jars = fake_jars(tmp_path / "jars", STREAMS_CLASSES)
    job = write_job(
        tmp_path / "job.yaml",
        kind="dynamodb-streams",
        endpoint=moto_endpoint,
        table=table,
        destination=table,
        kcl=f", java: {sys.executable}, jars_dir: {jars}, worker_id: host-a",
    )
    prepared = prepare_run(load_job(job), tmp_path)
    text = prepared.properties.read_text()
    assert f"\ndynamoDBStreamArn = {arn}\n" in text
    assert "\nworkerId = host-a\n" in text
    assert "\nshutdownGraceMillis = 35000\n" in text  # flush 20 s + failover 5 s + 10 s
    assert prepared.argv[-1] == str(prepared.properties)
    # The processors read the run's copy of the job, as validated, not the file.
    copy = tmp_path / f"{load_job(job).task_name}.job.yaml"
    assert copy.read_text() == job.read_text()
    assert f" processor --config {copy}\n" in text


def test_a_stop_held_while_starting_ends_the_preflight_with_0_before_the_daemon(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Under runtime kcl the preflight runs while stop signals are still held: one held
    then is acted on between its steps (exit 0, no daemon), not minutes later."""
    import signal

    from replicator import entry
    from replicator.runtime.kcl.launcher import run_kcl

    table = unique("kcl-stop")
    jars = fake_jars(tmp_path / "jars", STREAMS_CLASSES)
    job = write_job(
        tmp_path / "job.yaml",
        kind="dynamodb-streams",
        endpoint=moto_endpoint,
        table=table,
        destination=table,
        kcl=f", java: {sys.executable}, jars_dir: {jars}, worker_id: host-a",
    )
    entry._held.append((signal.SIGTERM, entry._now()))  # as entry._hold does
    try:
        assert run_kcl(load_job(job)) == 0  # the source table does not even exist
    finally:
        entry._held.clear()
    assert not entry.stop_held()


# -- clear refusals (exit 4, one line, no traceback) --------------------------------------


def test_missing_java_is_named_with_how_to_get_it(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", kcl=", java: /opt/no-such-jdk/bin/java")
    message = assert_refused(run_cli(job), 4, "kcl.java", "/opt/no-such-jdk/bin/java")
    assert "openjdk-17-jre-headless" in message


def test_missing_jars_name_the_setting_and_where_to_get_them(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", kcl=f", java: {sys.executable}")
    env = {"REPLICATOR_KCL_JARS": str(tmp_path / "nowhere")}
    assert_refused(run_cli(job, env), 4, str(tmp_path / "nowhere"), "not a directory of jars")


@pytest.mark.parametrize("setting", ["kcl.jars_dir", "$REPLICATOR_KCL_JARS"])
def test_a_jars_directory_with_the_path_separator_is_refused_up_front(
    tmp_path: Path, setting: str
) -> None:
    """`-cp <dir>/*` split at the `:` into two entries, the daemon found no class, and the
    run ended "the jars there do not form a working KCL classpath"."""
    jars = fake_jars(tmp_path / "kcl:3.1", [java.MULTILANG_DAEMON])
    in_job = setting == "kcl.jars_dir"
    job = write_job(
        tmp_path / "job.yaml",
        kcl=f", java: {sys.executable}" + (f", jars_dir: '{jars}'" if in_job else ""),
    )
    result = run_cli(job, {} if in_job else {"REPLICATOR_KCL_JARS": str(jars)})
    message = assert_refused(result, 4, f"{setting}: {jars} holds ':'")
    assert result.stderr.strip().splitlines() == [message]
    assert "classpath" in message


def checkout(directory: Path) -> Path:
    """A copy of what the build key covers: docker/pom.xml and docker/launcher."""
    shutil.copytree(ROOT / "docker" / "launcher", directory / "docker" / "launcher")
    shutil.copy(ROOT / "docker" / "pom.xml", directory / "docker" / "pom.xml")
    return directory


def test_without_a_setting_the_jars_of_the_checkouts_build_are_used(tmp_path: Path) -> None:
    repository = checkout(tmp_path / "repo")
    with pytest.raises(KclUnavailable, match=r"make kcl-jars.*kcl\.jars_dir.*REPLICATOR_KCL_JARS"):
        java.find_jars_dir(None, {}, repository)
    key = java.build_key(repository)
    assert key is not None
    built = fake_jars(repository / ".cache" / "kcl" / key, [java.MULTILANG_DAEMON])
    (built / ".complete").touch()
    assert java.find_jars_dir(None, {}, repository) == built
    other = fake_jars(tmp_path / "other", [java.MULTILANG_DAEMON])
    assert java.find_jars_dir(None, {"REPLICATOR_KCL_JARS": str(other)}, repository) == other

    # A change to the launcher is a new build: the old one is not used.
    (repository / "docker" / "launcher" / "NOTES").write_text("changed\n")
    with pytest.raises(KclUnavailable, match=r"builds in \.cache/kcl are of another"):
        java.find_jars_dir(None, {}, repository)


def test_the_build_script_and_the_runtime_agree_on_where_the_jars_are(tmp_path: Path) -> None:
    """scripts/build-kcl.sh names the directory without building when it is complete."""
    repository = checkout(tmp_path / "repo")
    (repository / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "build-kcl.sh", repository / "scripts" / "build-kcl.sh")
    key = java.build_key(repository)
    assert key is not None
    built = repository / ".cache" / "kcl" / key
    built.mkdir(parents=True)
    (built / ".complete").touch()
    result = subprocess.run(
        [str(repository / "scripts" / "build-kcl.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == str(built)


def test_building_the_jars_without_maven_or_java_says_so_in_one_line(tmp_path: Path) -> None:
    repository = checkout(tmp_path / "repo")
    (repository / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "build-kcl.sh", repository / "scripts" / "build-kcl.sh")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ["bash", "dirname", "find", "sort", "xargs", "sha256sum", "cut", "mkdir", "cat"]:
        (tools / tool).symlink_to(shutil.which(tool) or tool)

    def build() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(repository / "scripts" / "build-kcl.sh")],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": str(tools)},
        )

    result = build()
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("build-kcl: mvn is not on PATH")
    (tools / "mvn").symlink_to(shutil.which("mvn") or "/usr/bin/mvn")
    result = build()
    assert result.returncode == 1
    assert result.stderr.strip().startswith("build-kcl: java is not on PATH")
    assert len(result.stderr.strip().splitlines()) == 1


def test_jars_without_the_daemon_name_the_missing_class(tmp_path: Path) -> None:
    jars = fake_jars(tmp_path / "jars", ["org.example.Unrelated"])
    job = write_job(tmp_path / "job.yaml", kcl=f", java: {sys.executable}, jars_dir: {jars}")
    assert_refused(run_cli(job), 4, java.MULTILANG_DAEMON, str(jars))


def test_dynamodb_streams_without_the_launcher_says_how_to_build_it(tmp_path: Path) -> None:
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON, java.MULTILANG_CONFIG])
    job = write_job(
        tmp_path / "job.yaml",
        kind="dynamodb-streams",
        kcl=f", java: {sys.executable}, jars_dir: {jars}",
    )
    message = assert_refused(run_cli(job), 4, java.STREAMS_LAUNCHER, "make kcl-jars")
    assert java.STREAMS_ADAPTER in message


@pytest.mark.parametrize("kind", ["kinesis", "dynamodb-streams"])
def test_a_credentials_provider_the_jars_lack_is_named_by_its_job_key_with_exit_4(
    tmp_path: Path, kind: str
) -> None:
    """Found in the jars without a JVM, before either daemon would stop on it (the stock
    one with a stack trace, the launcher naming its temporary properties file)."""
    classes = [java.MULTILANG_DAEMON, *STREAMS_CLASSES]
    jars = fake_jars(tmp_path / "jars", classes)
    job = write_job(
        tmp_path / "job.yaml",
        kind=kind,
        kcl=f", java: {sys.executable}, jars_dir: {jars}, "
        "extra_properties: {AWSCredentialsProvider: NoSuchProviderX}",
    )
    message = assert_refused(
        run_cli(job), 4, str(job), "kcl.extra_properties.AWSCredentialsProvider", "NoSuchProviderX"
    )
    assert ".properties" not in message
    # A short name of the AWS SDK's or the multilang package's providers, or a class of
    # the jars by its full name, with arguments and as a chain, is found.
    fake_jars(
        tmp_path / "jars",
        [*classes, "software.amazon.awssdk.auth.credentials.ProfileCredentialsProvider"],
    )
    for value in ["ProfileCredentialsProvider|ops", "NoSuch, ProfileCredentialsProvider"]:
        text = job.read_text().replace("NoSuchProviderX", f"'{value}'")
        java.check_credentials_providers(load_job_text(tmp_path, text), jars)


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("maxRecords = ${max_records", "'${max_records' is no placeholder"),
        ("maxRecords = -${max_records}", "maxRecords: '-1000' is negative"),
    ],
    ids=["placeholder", "value"],
)
def test_a_template_the_kcl_cannot_take_is_refused_before_the_preflight(
    tmp_path: Path, written: str, said: str
) -> None:
    """`run` rendered `${max_records` into the daemon's properties as written, and a
    negative count the KCL threw on at start-up, 20 times over 31 s; it refuses them as
    `replicator properties` does, before the preflight's AWS calls (here to an endpoint
    that refuses connections, exit 3 had they been made) and the JVM."""
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(ROOT / "properties" / "logback.xml", templates)
    template = templates / "kinesis.properties"
    template.write_text(
        (ROOT / "properties" / "kinesis.properties")
        .read_text()
        .replace("maxRecords = ${max_records}", written)
    )
    line = next(
        number
        for number, text in enumerate(template.read_text().splitlines(), 1)
        if text.startswith("maxRecords")
    )
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(tmp_path / "job.yaml", kcl=f", java: {sys.executable}, jars_dir: {jars}")
    # An ended run's temporary directory there: its removal is no line of the refusal's
    # (a run killed beside this one made it two lines).
    scratch_dir = tmp_path / "tmp"
    ended = scratch_dir / "replicator-kcl-ended"
    ended.mkdir(parents=True)
    (ended / ".owner").write_text("12345\n")
    result = run_cli(
        job, env={"REPLICATOR_PROPERTIES_DIR": str(templates), "TMPDIR": str(scratch_dir)}
    )
    assert not ended.exists()
    message = assert_refused(
        result,
        4,
        f"$REPLICATOR_PROPERTIES_DIR: {template}, line {line}: {said}",
    )
    assert result.stderr.strip().splitlines() == [message]


def load_job_text(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "other.yaml"
    path.write_text(text)
    return load_job(path)


def test_a_source_role_is_refused_since_the_daemon_would_not_use_it(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", kcl=f", java: {sys.executable}")
    text = job.read_text().replace(
        "source: {", "source: {role_arn: 'arn:aws:iam::123456789012:role/reader', "
    )
    job.write_text(text)
    # A job-file problem: refused when the job is loaded, by validate as by run (exit 2).
    for result in (run_cli(job), run_cli(job, command="validate")):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert str(job) in result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "source.role_arn" in line]
        assert line.startswith("  source.role_arn (line 3): is not supported by runtime kcl")
        assert "runtime: local" in line


# -- against AWS (moto): preflight, and a classpath that cannot start ---------------------


@pytest.fixture
def kinesis_job(endpoint: str, unique: Any, tmp_path: Path) -> dict[str, Any]:
    """A source table, a two-shard Kinesis stream and a destination table on moto, served
    over HTTP/2 as well, as the KCL's Kinesis client needs (the start checks it)."""
    table = unique("kcl-src")
    stream = unique("kcl-changes")
    tables.create(client("dynamodb", "us-east-1", endpoint), table, stream=False)
    tables.create(client("dynamodb", "eu-west-1", endpoint), table, stream=False)
    client("kinesis", "us-east-1", endpoint).create_stream(StreamName=stream, ShardCount=2)
    return {"endpoint": endpoint, "table": table, "destination": table, "stream": stream}


def test_a_missing_kinesis_stream_is_named(kinesis_job: dict[str, Any], tmp_path: Path) -> None:
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(
        tmp_path / "job.yaml",
        **{**kinesis_job, "stream": "no-such-stream"},
        kcl=f", java: {sys.executable}, jars_dir: {jars}",
    )
    assert_refused(run_cli(job), 3, "kinesis stream no-such-stream", "not found")


def test_a_dead_letter_queue_that_does_not_exist_is_named_before_the_daemon_starts(
    kinesis_job: dict[str, Any], tmp_path: Path
) -> None:
    """The KCL runtime's start runs the same preflight as the local one's."""
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(
        tmp_path / "job.yaml", **kinesis_job, kcl=f", java: {sys.executable}, jars_dir: {jars}"
    )
    queue = f"{kinesis_job['endpoint']}/123456789012/no-such-queue"
    job.write_text(
        job.read_text().replace(
            f"dead_letter: {{kind: file, path: '{tmp_path / 'dead.jsonl'}'}}",
            f"dead_letter: {{kind: sqs, queue_url: '{queue}', "
            f"endpoint_url: '{kinesis_job['endpoint']}'}}",
        )
    )
    assert "kind: sqs" in job.read_text()
    assert_refused(run_cli(job), 3, f"dead_letter.queue_url: the dead-letter queue {queue}")


def test_a_metrics_port_taken_is_exit_3_before_the_preflight_creates_anything(
    kinesis_job: dict[str, Any], tmp_path: Path
) -> None:
    """As under the local runtime: the port is bound once the preflight's checks have
    passed and before it creates the conflict-log table and the dead-letter directory,
    so a start refused for its port leaves neither behind."""
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    task = f"{kinesis_job['table']}-task"
    job = write_job(
        tmp_path / "job.yaml",
        **kinesis_job,
        task_name=task,
        kcl=f", java: {sys.executable}, jars_dir: {jars}",
    )
    made = tmp_path / "newdir"
    text = job.read_text().replace(
        str(tmp_path / "dead.jsonl"), str(made / "sub" / "{task_name}.jsonl")
    )
    regions = ("us-east-1", "eu-west-1")

    def tables_named() -> set[str]:
        return {
            name
            for region in regions
            for page in client("dynamodb", region, kinesis_job["endpoint"])
            .get_paginator("list_tables")
            .paginate()
            for name in page["TableNames"]
            if name.startswith(task)
        }

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job.write_text(
            text.replace("port: 0}", f"port: {port}}}") + "conflict_log: {kind: dynamodb}\n"
        )
        message = assert_refused(run_cli(job), 3)
    assert message == (
        f"replicator: metrics: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another metrics.port (0 picks a free one) or set metrics.enabled: false"
    )
    assert tables_named() == set()
    assert not made.exists()


def test_a_classpath_that_cannot_start_is_a_clear_error(
    kinesis_job: dict[str, Any], tmp_path: Path
) -> None:
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON], content=b"not a class file")
    job = write_job(tmp_path / "job.yaml", **kinesis_job, kcl=f", jars_dir: {jars}")
    result = run_cli(job)
    message = assert_refused(result, 4, "could not start", str(jars), "ClassFormatError")
    assert "working KCL classpath" in message
    # the JVM's own lines (not the KCL's logging) are JSON records too; only the final
    # error message is plain text
    assert_json_lines("\n".join(result.stderr.strip().splitlines()[:-1]))
    assert '"logger": "kcl"' in result.stderr


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        ("-Xmx1g '-Dfoo", ["REPLICATOR_KCL_JVM_OPTIONS", "No closing quotation"]),
        ("-Xmx1q", ["the JVM could not start", "Invalid maximum heap size: -Xmx1q"]),
        (
            "-Xms2g -Xmx1g",
            [
                "the JVM could not start: Error occurred during initialization of VM: "
                "Initial heap size set to a larger value than the maximum heap size",
                "REPLICATOR_KCL_JVM_OPTIONS",
            ],
        ),
    ],
)
def test_jvm_options_the_jvm_cannot_take_are_one_line_and_exit_4(
    kinesis_job: dict[str, Any], tmp_path: Path, options: str, needles: list[str]
) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java")
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(tmp_path / "job.yaml", **kinesis_job, kcl=f", jars_dir: {jars}")
    result = run_cli(job, env={"REPLICATOR_KCL_JVM_OPTIONS": options})
    assert_refused(result, 4, *needles)
    assert_json_lines("\n".join(result.stderr.strip().splitlines()[:-1]))


# -- lifecycle, with a stand-in daemon ----------------------------------------------------

STAND_IN_DAEMON = """\
#!{python}
# Behaves towards its supervisor like the KCL daemon: one child per "shard", SIGTERM
# asks for a graceful stop, the exit status says how it ended.
import json, os, signal, subprocess, sys, time

argv = sys.argv
properties = open(argv[argv.index("--properties-file") + 1]).read()
mode = os.environ["STAND_IN_MODE"]
child_code = (
    "import signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "time.sleep(600)\\n"
    if mode == "stubborn-child"
    else "import os, sys, time\\n"
    # A processor that received a processRecords long ago and never answered it.
    "from replicator.runtime.kcl.awaited import AnswerNotes\\n"
    "notes = AnswerNotes.from_environment()\\n"
    "notes.started('shardId-held')\\n"
    "notes._since = time.monotonic() - 1000\\n"  # received 1000 s ago
    "notes.heard()\\n"
    "while os.getppid() == int(sys.argv[1]): time.sleep(0.1)\\n"
    if mode == "held"
    else "import os, sys, time\\n"
    # A processor the daemon has passed no batch for 1000 s (its reads of the shard fail).
    "from replicator.runtime.kcl.awaited import AnswerNotes\\n"
    "notes = AnswerNotes.from_environment()\\n"
    "notes.started('shardId-unread')\\n"
    "notes._batch_at = time.monotonic() - 1000\\n"
    "notes.heard()\\n"
    "while os.getppid() == int(sys.argv[1]): time.sleep(0.1)\\n"
    if mode == "unread"
    else "import sys\\n"
    # A processor that dies (exits on an error) once it has started its shard.
    "from replicator.runtime.kcl.awaited import AnswerNotes\\n"
    "AnswerNotes.from_environment().started('shardId-dead')\\n"
    "sys.exit(1)\\n"
    if mode == "died"
    else "import os, sys, time\\n"
    "while os.getppid() == int(sys.argv[1]): time.sleep(0.1)\\n"
)
children = [
    subprocess.Popen([sys.executable, "-c", child_code, str(os.getpid())]) for _ in range(2)
]
stopping = []
# As the JVM does: SIGTERM, SIGINT and SIGHUP start the graceful stop, and the exit
# status is 128 + the signal's number.
for caught in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(caught, lambda signum, _: stopping.append(signum))
record = {{
    "argv": argv,
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "children": [child.pid for child in children],
    "samples_dir": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
    "awaited": os.environ.get("REPLICATOR_AWAITED_DIR"),
    "properties": properties,
}}
with open(os.environ["STAND_IN_RECORD"] + ".tmp", "w") as out:
    json.dump(record, out)
os.replace(os.environ["STAND_IN_RECORD"] + ".tmp", os.environ["STAND_IN_RECORD"])
if mode == "stubborn-child":
    time.sleep(0.5)
    sys.exit(1)  # a processor failed: the daemon exits 1 and leaves its children behind
if mode == "died":
    # As the KCL after a processor's death: it exits 1 by itself (here once told to).
    while not os.path.exists(os.environ["STAND_IN_RECORD"] + ".release"):
        time.sleep(0.05)
    sys.exit(1)
while not stopping or mode == "deaf":
    if stopping and not os.path.exists(os.environ["STAND_IN_RECORD"] + ".sigterm"):
        open(os.environ["STAND_IN_RECORD"] + ".sigterm", "w").close()
    time.sleep(0.05)
open(os.environ["STAND_IN_RECORD"] + ".sigterm", "w").close()
sys.exit(128 + stopping[0])
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None when it is gone."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class StandIn:
    def __init__(
        self,
        kinesis_job: dict[str, Any],
        tmp_path: Path,
        mode: str,
        kcl: str = "",
        **job: str,
    ) -> None:
        script = tmp_path / "java"
        script.write_text(STAND_IN_DAEMON.format(python=sys.executable))
        script.chmod(0o755)
        jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
        self.job = write_job(
            tmp_path / "job.yaml",
            **kinesis_job,
            kcl=f", java: {script}, jars_dir: {jars}, worker_id: stand-in{kcl}",
            **job,
        )
        self.record_path = tmp_path / "record.json"
        self.log = tmp_path / "run.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(self.job)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "STAND_IN_MODE": mode,
                "STAND_IN_RECORD": str(self.record_path),
            },
        )

    def record(self) -> dict[str, Any]:
        wait_until(self.record_path.exists, 30, "the stand-in daemon to start")
        record: dict[str, Any] = json.loads(self.record_path.read_text())
        return record

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.record_path.exists():
            # A pid of the record whose process has ended may be another test's process
            # by now (pids wrap at 32768 here): only one started before the record was
            # written (the boot time read is whole seconds: one second's slack) is the
            # stand-in's.
            written = self.record_path.stat().st_mtime + 1.0
            for pid in [self.record()["pid"], *self.record()["children"]]:
                started = started_at(pid)
                if alive(pid) and started is not None and started <= written:
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stand_in(kinesis_job: dict[str, Any], tmp_path: Path) -> Any:
    started: list[StandIn] = []

    def start(mode: str, kcl: str = "", **job: str) -> StandIn:
        started.append(StandIn(kinesis_job, tmp_path, mode, kcl, **job))
        return started[-1]

    yield start
    for one in started:
        one.kill()


def test_a_second_run_of_one_worker_id_on_the_host_is_refused_with_exit_5(
    stand_in: Any,
) -> None:
    """Two runs of one task with one worker id would each take the other's leases for
    their own and write every change twice, without a word from the KCL: the second is
    refused before it creates anything, naming the first, and the first runs on."""
    run = stand_in("graceful")
    record = run.record()
    second = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--config", str(run.job)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 5, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert "with KCL worker id 'stand-in' is being run by process " in last, last
    assert "each worker of a task needs a worker id of its own (kcl.worker_id" in last
    assert alive(record["pid"]) and run.process.poll() is None
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]


def test_sighup_to_the_run_is_a_clean_stop_as_sigterm_is(stand_in: Any) -> None:
    """A closed terminal (an SSH session's end) sends SIGHUP: it ended the run at once
    (129), the daemon killed by its parent-death signal, no processor checkpointed."""
    run = stand_in("graceful")
    record = run.record()
    run.process.send_signal(signal.SIGHUP)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]
    assert Path(str(run.record_path) + ".sigterm").exists()  # a graceful stop, forwarded
    assert "the daemon stopped as asked" in run.log.read_text()
    assert not Path(record["samples_dir"]).exists()


def test_sigterm_reaches_the_daemon_and_a_stop_it_answers_is_a_clean_exit(stand_in: Any) -> None:
    run = stand_in("graceful")
    record = run.record()
    assert record["pgid"] == record["pid"]  # a process group of its own
    assert record["pgid"] != os.getpgid(run.process.pid)
    assert "\napplicationName = orders-kcl\n" in record["properties"]
    assert "\nworkerId = stand-in\n" in record["properties"]
    assert record["samples_dir"] and Path(record["samples_dir"]).is_dir()
    port = logged_metrics_port(run.log)
    status, body = health(port)
    assert (status, body["status"]) == (200, "ok"), body
    wait_until(
        lambda: matching(scrape(port), "replicator_shards_owned") == [2.0],
        10,
        "two processors counted as owned shards",
    )

    assert healthcheck(REPLICATOR_METRICS_PORT=str(port)).returncode == 0  # the image's HEALTHCHECK

    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0  # the daemon's 143 answers the SIGTERM it was sent
    assert Path(str(run.record_path) + ".sigterm").exists()  # forwarded, not a kill
    assert "the daemon stopped as asked" in run.log.read_text()
    wait_until(
        lambda: not any(alive(pid) for pid in [record["pid"], *record["children"]]),
        10,
        "the daemon and its children to be gone",
    )
    assert not Path(record["samples_dir"]).exists()
    probe = healthcheck(REPLICATOR_METRICS_PORT=str(port))
    assert probe.returncode == 1
    assert "unreachable" in probe.stderr


def test_a_daemon_that_fails_is_reported_and_its_leftover_children_are_killed(
    stand_in: Any,
) -> None:
    run = stand_in("stubborn-child")
    record = run.record()
    assert run.process.wait(30) == 1
    assert not group_members(record["pgid"])
    assert not any(alive(pid) for pid in record["children"])
    log = run.log.read_text()
    assert "processors outlived the daemon; killing them" in log
    assert '"status": 1' in log


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_second_stop_request_kills_a_daemon_that_does_not_stop_and_exits_with_its_number(
    stand_in: Any, second: signal.Signals
) -> None:
    """128 + the second request's signal, as a second one while starting (replicator.entry),
    not the 137 of the SIGKILL this process sent the daemon."""
    run = stand_in("deaf")
    record = run.record()
    run.process.send_signal(second)
    sigterm = Path(str(run.record_path) + ".sigterm")
    wait_until(sigterm.exists, 10, "the daemon to get the first SIGTERM")
    # Past the time within which a repeat is the same request (the first was received
    # before the daemon got its SIGTERM).
    time.sleep(entry.REPEAT_S + 0.2)
    assert run.process.poll() is None  # still waiting for its graceful stop
    run.process.send_signal(second)
    assert run.process.wait(30) == 128 + second
    assert not group_members(record["pgid"])
    text = run.log.read_text()
    assert "second stop request; killing the daemon" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"replicator: a second stop request ({second.name}) while the KCL")
    assert "were killed" in last


def test_a_second_stop_request_after_every_processor_ended_does_not_say_they_were_cut(
    stand_in: Any,
) -> None:
    """The processors had answered their shutdown and exited; only the daemon's own stop
    was still running when the second Ctrl-C came. The last line said shards stopping
    then did not checkpoint, which none was: it says the processors had ended."""
    run = stand_in("deaf")
    record = run.record()
    run.process.send_signal(signal.SIGINT)
    sigterm = Path(str(run.record_path) + ".sigterm")
    wait_until(sigterm.exists, 10, "the daemon to get the first SIGTERM")
    for child in record["children"]:  # each processor done with its shard's stop
        os.kill(child, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in record["children"]), 10, "the processors' end")
    time.sleep(entry.REPEAT_S + 0.2)  # past the time a repeat is the same request
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(30) == 128 + signal.SIGINT
    last = run.log.read_text().strip().splitlines()[-1]
    assert last == (
        "replicator: a second stop request (SIGINT) while the KCL daemon was stopping: it "
        "was killed with no processor running (any that ran had ended its shard's stop; "
        "only the daemon's own shutdown was cut short)"
    ), last


@pytest.mark.parametrize("second", [signal.SIGTERM], ids=["TERM"])
def test_a_stop_signal_repeated_at_once_is_one_request_and_a_clean_stop(
    stand_in: Any, second: signal.Signals
) -> None:
    """``timeout 60 replicator run`` signals the run and then its process group: two
    SIGTERMs a fraction of a millisecond apart were a second stop request, and killed the
    daemon and its processors before any checkpoint (143). A repeat within a second of
    the first is the same request: logged once, a clean stop."""
    run = stand_in("graceful")
    run.record()
    run.process.send_signal(signal.SIGTERM)
    run.process.send_signal(second)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]
    text = run.log.read_text()
    assert "the daemon stopped as asked" in text
    assert "second stop request" not in text
    assert text.count('"event": "stop requested"') == 1, text


def test_a_stop_signal_an_operator_sends_the_daemon_alone_exits_with_its_number(
    stand_in: Any,
) -> None:
    """The JVM answers SIGTERM itself, with a graceful stop and status 143: a run that did
    not ask for it exits 128 + the signal, saying it did not send it (not "stopped on its
    own")."""
    run = stand_in("graceful")
    record = run.record()
    os.kill(record["pid"], signal.SIGTERM)
    assert run.process.wait(30) == 143
    last = run.log.read_text().strip().splitlines()[-1]
    assert last == (
        "replicator: the KCL daemon was ended by SIGTERM, which this process did not send"
    )


@pytest.mark.parametrize(
    "sent", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"]
)
def test_a_stop_signal_sent_to_the_run_and_the_daemon_at_once_is_a_clean_stop(
    stand_in: Any, sent: signal.Signals
) -> None:
    """systemd's default KillMode (KillSignal=SIGINT too) or ``kill -- -PGID``: the JVM
    stops gracefully on the signal it got directly, with 128 + its number."""
    run = stand_in("graceful")
    record = run.record()
    os.kill(record["pid"], sent)
    run.process.send_signal(sent)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]
    assert "the daemon stopped as asked" in run.log.read_text()


def fake_java(tmp_path: Path, body: str) -> Path:
    """A ``kcl.java`` that runs ``body`` (Python) in place of the daemon."""
    script = tmp_path / "fake-java"
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(0o755)
    return script


# A line of the daemon's logging (properties/logback.xml), its stack trace escaped in it.
SCHEDULER_GAVE_UP = (
    "::kcl::2026-12-01T16:09:36.917Z\tERROR\tsoftware.amazon.kinesis.coordinator.Scheduler"
    "\tmain\tCaught exception when initializing LeaseCoordinator\t"
)


@pytest.mark.parametrize(
    "body",
    ["sys.exit(0)", f"print({SCHEDULER_GAVE_UP!r}, flush=True); sys.exit(0)", "true"],
    ids=["silent", "scheduler-gave-up", "bin-true"],
)
def test_a_daemon_that_stops_unasked_with_0_is_a_failure_with_one_line(
    kinesis_job: dict[str, Any], tmp_path: Path, body: str
) -> None:
    """The launcher exits 0 when the KCL's scheduler gives up initialising: a restart
    policy (Restart=on-failure) must see a failure, and the operator one line."""
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    program = Path("/bin/true") if body == "true" else fake_java(tmp_path, body)
    job = write_job(
        tmp_path / "job.yaml", **kinesis_job, kcl=f", java: {program}, jars_dir: {jars}"
    )
    result = run_cli(job)
    message = assert_refused(
        result, 1, "the KCL daemon stopped on its own without being asked to (status 0"
    )
    assert_json_lines("\n".join(result.stderr.strip().splitlines()[:-1]))
    if "LeaseCoordinator" in body:
        assert "its log above says why" in message
        assert "Caught exception when initializing LeaseCoordinator" in result.stderr
    else:
        # Nothing above says why: the line names the setting most likely at fault.
        assert f"printed nothing: kcl.java ({program}) may not be a Java runtime" in message
        assert "its log above" not in message


def test_an_http_client_the_sdk_cannot_load_is_a_classpath_failure_with_exit_4(
    kinesis_job: dict[str, Any], tmp_path: Path
) -> None:
    """A jar the checks do not look for (netty's) missing: the AWS SDK cannot build its
    client, and the daemon logs that and exits 1."""
    trace = (
        "software.amazon.awssdk.core.exception.SdkClientException: Unable to load an HTTP "
        "implementation from any provider in the chain. You must declare a dependency on an "
        "appropriate HTTP implementation or pass in an SdkHttpClient explicitly to the "
        "client builder.\\n\\tat software.amazon.awssdk.core.exception."
        "SdkClientException$BuilderImpl.build(SdkClientException.java:111)"
    )
    line = (
        "::kcl::2026-12-01T16:09:36.917Z\tERROR\treplicator.kcl.DynamoDbStreamsMultiLangDaemon"
        f"\tmain\tThe DynamoDB Streams daemon stopped on an error\t{trace}"
    )
    program = fake_java(tmp_path, f"print({line!r}, flush=True); sys.exit(1)")
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(
        tmp_path / "job.yaml", **kinesis_job, kcl=f", java: {program}, jars_dir: {jars}"
    )
    message = assert_refused(
        run_cli(job), 4, "could not start", str(jars), "Unable to load an HTTP implementation"
    )
    assert "working KCL classpath" in message


@pytest.mark.parametrize(
    "prefix",
    [
        "::kcl::2026-12-05T11:50:00.000Z\tERROR\treplicator.kcl.DynamoDbStreamsMultiLangDaemon\tmain\t",
        "11:50:00.000 [main] ERROR r.k.DynamoDbStreamsMultiLangDaemon - ",
    ],
    ids=["our-logback", "own-logback"],
)
def test_a_setting_the_launcher_cannot_start_with_is_exit_4_naming_it(
    kinesis_job: dict[str, Any], tmp_path: Path, prefix: str
) -> None:
    """The launcher's "Cannot start:" line (a credentials provider that gives none): the
    run said only that the daemon stopped on its own (exit 1, which a restart policy
    restarts for ever); it is a runtime that cannot start as set up, exit 4."""
    why = "AWSCredentialsProvider ProfileCredentialsProvider|nosuchprofile gives no credentials"
    # As the launcher says it: after the properties file it read, this run's temporary
    # one, gone once the run exits. The line names the job file instead.
    line = f"{prefix}Cannot start: " + "{file}: " + why
    program = fake_java(
        tmp_path,
        f"file = sys.argv[sys.argv.index('--properties-file') + 1]\n"
        f"print({line!r}.format(file=file), flush=True); sys.exit(1)",
    )
    jars = fake_jars(tmp_path / "jars", [java.MULTILANG_DAEMON])
    job = write_job(
        tmp_path / "job.yaml", **kinesis_job, kcl=f", java: {program}, jars_dir: {jars}"
    )
    message = assert_refused(run_cli(job), 4, f"the KCL daemon could not start: {why}")
    assert message.endswith(
        f"(a setting of kcl.extra_properties in {job}, or of the properties template; see "
        "docs/kcl-and-docker.md)"
    )
    assert ".properties" not in message
    assert "stopped on its own" not in message


def test_killing_the_supervisor_takes_the_daemon_with_it(stand_in: Any) -> None:
    run = stand_in("graceful")
    record = run.record()
    os.kill(run.process.pid, signal.SIGKILL)  # the supervisor alone, not its group
    run.process.wait(10)
    wait_until(
        lambda: not any(alive(pid) for pid in [record["pid"], *record["children"]]),
        15,
        "the daemon (parent-death signal) and its children (parent gone) to exit",
    )
    # Its temporary directory (the job's copy, the properties, the processors' notes)
    # could not be removed by it: the next run removes it (they piled up on a host that
    # restarted a crashing run).
    left = Path(record["awaited"]).parent
    run.record_path.unlink()
    again = stand_in("graceful")
    again.record()
    assert not left.exists()
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(30) == 0


def test_health_names_a_daemon_that_is_not_running() -> None:
    daemon = DaemonProcess(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], os.environ, grace_s=1
    )
    assert daemon.problems() == ["the daemon is not running"]  # not started yet
    daemon.start()
    try:
        assert daemon.problems() == []
        os.kill(daemon.pid, signal.SIGKILL)
        assert daemon.wait() == 128 + signal.SIGKILL
        assert (
            daemon.failure == "the KCL daemon was ended by SIGKILL, which this process did not send"
        )
        assert daemon.problems() == ["the daemon is not running"]
    finally:
        daemon.clean_up()


def test_a_daemon_ended_by_the_stop_asked_for_is_no_health_problem() -> None:
    """Every requested stop logged the warning ``unhealthy: the daemon is not running``
    just before its end: a log-based alert fired on each deploy."""
    daemon = DaemonProcess(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], os.environ, grace_s=1
    )
    daemon.start()
    try:
        daemon.request_stop()
        daemon.wait()
        assert not daemon.running()
        assert daemon.problems() == []
    finally:
        daemon.clean_up()


def test_health_names_each_processor_holding_a_process_records_unanswered(
    stand_in: Any,
) -> None:
    """The daemon waits on its processors without limit: one that stops answering (stuck,
    SIGSTOP) froze its lag while /healthz said ok. Each processor notes the processRecords
    it holds in the directory the run names; /healthz is 503 naming every one held for
    metrics.stall_after_s. A processor killed leaves its shard without one, named at once
    (the real daemon starts no other and exits 1 after its grace time), until a processor
    of the shard runs here again."""
    run = stand_in("held")
    record = run.record()
    port = logged_metrics_port(run.log)
    first, second = record["children"]

    def reasons() -> list[str]:
        status, body = health(port)
        assert status == (503 if body["reasons"] else 200), body
        return list(body["reasons"])

    def held(pid: int) -> str:
        return f"the processor (pid {pid}) of shard shardId-held has not answered processRecords"

    found = wait_until(lambda: len(reasons()) == 2 and reasons(), 30, "both processors named")
    assert [reason[: len(held(first))] for reason in sorted(found)] == sorted(
        [held(first), held(second)]
    )
    assert all("is stuck" in reason for reason in found)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: [r[: len(held(second))] for r in reasons()] == [held(second)], 30, "one")
    os.kill(second, signal.SIGKILL)
    died = f"the processor (pid {second}) of shard shardId-held died"
    (gone,) = wait_until(
        lambda: [r for r in reasons() if r.startswith(died)], 30, "the shard named without one"
    )
    assert "without finishing its shard (killed, or it exited on an error;" in gone
    assert len(reasons()) == 1
    # A processor of the shard runs here again (this process's note stands in for it).
    again = AnswerNotes(Path(record["awaited"]), os.getpid())
    again.started("shardId-held")

    def healthy() -> bool:
        again.heard()
        return reasons() == []

    wait_until(healthy, 30, "/healthz ok once the shard has a processor again")
    assert not list(Path(record["awaited"]).glob(f"{second}.json"))
    assert run.process.poll() is None
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]


def test_health_names_each_processor_the_kcl_passes_no_batch(stand_in: Any) -> None:
    """GetRecords refused (a policy without it): the KCL retried the shard's reads for
    ever, logging warnings, its processor got no batch, and /healthz said ok while the
    shard replicated nothing. The KCL passes a batch after every read, empty or not: a
    processor passed none for metrics.stall_after_s is named."""
    run = stand_in("unread")
    record = run.record()
    port = logged_metrics_port(run.log)

    def reasons() -> list[str]:
        status, body = health(port)
        assert status == (503 if body["reasons"] else 200), body
        return list(body["reasons"])

    found = wait_until(lambda: len(reasons()) == 2 and reasons(), 30, "both processors named")
    assert sorted(reason.split(" for ", 1)[0] for reason in found) == sorted(
        f"the KCL has passed no batch to the processor (pid {pid}) of shard shardId-unread"
        for pid in record["children"]
    )
    assert all(
        reason.endswith(
            "not even an empty one (it passes one after every read of the shard): the "
            "daemon's reads of the stream fail (its warnings say why: GetRecords or, for a "
            "Kinesis stream, ListShards not allowed, the stream unreachable) or it is stuck"
        )
        for reason in found
    )
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]


def leader_lock(endpoint: str, task: str) -> tuple[Any, dict[str, Any]]:
    """KCL 3's leader-lock row held by the stand-in's worker id, as the lock client writes
    it in ``<task>-CoordinatorState``: a client of that region, and the row's key."""
    ddb = client("dynamodb", "us-east-1", endpoint)
    ddb.create_table(
        TableName=f"{task}-CoordinatorState",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    lock = {"key": {"S": "Leader"}}
    ddb.put_item(
        TableName=f"{task}-CoordinatorState",
        Item={**lock, "ownerName": {"S": "stand-in"}, "recordVersionNumber": {"S": "v"}},
    )
    return ddb, lock


def lease_table(endpoint: str, task: str, **owners: str) -> None:
    """The task's lease table as the KCL makes it, a lease per shard (``shardId_x``
    names shard ``shardId-x``) held by its worker id."""
    ddb = client("dynamodb", "us-east-1", endpoint)
    create_lease_table(ddb, task)
    for shard, owner in owners.items():
        ddb.put_item(
            TableName=task,
            Item={
                "leaseKey": {"S": shard.replace("_", "-")},
                "leaseOwner": {"S": owner},
                "leaseCounter": {"N": "1"},
                "checkpoint": {"S": "TRIM_HORIZON"},
            },
        )


def test_health_names_a_lease_held_without_a_processor(
    stand_in: Any, kinesis_job: dict[str, Any], unique: Any
) -> None:
    """GetShardIterator refused: the KCL held the shards' leases and retried for ever
    before starting any processor; nothing ran, so nothing was named, and /healthz said
    ok while the worker replicated nothing. The launcher reads the leases its worker id
    holds: one held for metrics.stall_after_s without a processor here is named."""
    task = unique("held-kcl")
    lease_table(kinesis_job["endpoint"], task, shardId_unstarted="stand-in", shardId_elsewhere="w2")
    # The leader's lock, which a graceful stop leaves to the daemon (it gives it up itself).
    ddb, lock = leader_lock(kinesis_job["endpoint"], task)
    run = stand_in("graceful", task_name=task, metrics=", stall_after_s: 2")
    run.record()
    port = logged_metrics_port(run.log)
    (reason,) = wait_until(
        lambda: health(port)[1]["reasons"], 30, "the lease held without a processor named"
    )
    assert reason.startswith("this worker has held the lease of shard shardId-unstarted for "), (
        reason
    )
    assert "(GetShardIterator not allowed, the stream unreachable" in reason
    assert health(port)[0] == 503
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]
    assert "Item" in ddb.get_item(TableName=f"{task}-CoordinatorState", Key=lock)


def test_a_lease_held_without_a_processor_is_not_named_once_a_stop_is_asked(
    stand_in: Any, kinesis_job: dict[str, Any], unique: Any
) -> None:
    """A stop's processors end first, and the lease rows name this worker until they
    expire: each graceful stop was named unhealthy for a lease-table reading, blaming
    GetShardIterator."""
    task = unique("held-stop")
    lease_table(kinesis_job["endpoint"], task, shardId_stopping="stand-in")
    run = stand_in("deaf", task_name=task, metrics=", stall_after_s: 2")  # slow to stop
    run.record()
    port = logged_metrics_port(run.log)
    wait_until(lambda: health(port)[1]["reasons"], 30, "the lease held without a processor")
    run.process.send_signal(signal.SIGTERM)
    wait_until(Path(str(run.record_path) + ".sigterm").exists, 30, "the daemon told to stop")
    status, body = health(port)
    assert (status, body["reasons"]) == (200, []), body


def test_a_processor_passed_no_batch_within_three_idle_reads_is_not_named(stand_in: Any) -> None:
    """The daemon reads an idle shard every kcl.idle_time_between_reads_ms: with reads 10
    minutes apart, a processor passed no batch for 1000 s (under three of them) is not
    one whose reads fail."""
    run = stand_in("unread", ", idle_time_between_reads_ms: 600000")
    record = run.record()
    port = logged_metrics_port(run.log)
    awaited = Path(record["awaited"])
    wait_until(
        lambda: all(
            (awaited / f"{pid}.json").exists()
            and json.loads((awaited / f"{pid}.json").read_text())["batch_at"] is not None
            for pid in record["children"]
        ),
        30,
        "both processors' notes",
    )
    status, body = health(port)
    assert (status, body["reasons"]) == (200, []), body
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.log.read_text()[-2000:]


def test_the_final_line_of_a_daemon_that_exits_after_a_processor_died_names_the_processor(
    stand_in: Any, kinesis_job: dict[str, Any], unique: Any
) -> None:
    """The KCL starts no other processor for a dead one's shard: the daemon exits 1 by
    itself, and the run's last line said only that, over a log with no word of the death
    (a kill -9 leaves none). It names the processor /healthz named meanwhile. The
    leader's lock the daemon left is given up (the other workers waited out its two
    minutes before assigning this worker's leases)."""
    task = unique("died")
    ddb, lock = leader_lock(kinesis_job["endpoint"], task)
    run = stand_in("died", task_name=task)
    record = run.record()
    port = logged_metrics_port(run.log)
    wait_until(
        lambda: any(" died without finishing its shard " in r for r in health(port)[1]["reasons"]),
        30,
        "/healthz to name the dead processors",
    )
    Path(str(run.record_path) + ".release").touch()
    assert run.process.wait(30) == 1, run.log.read_text()[-2000:]
    last = run.log.read_text().strip().splitlines()[-1]
    assert last.startswith(
        "replicator: the KCL daemon stopped on its own without being asked to (status 1; its "
        "log above says why); before it ended, the processor (pid "
    ), last
    assert any(
        f"(pid {pid}) of shard shardId-dead died without finishing its shard (killed, or it "
        "exited on an error; last heard from " in last
        for pid in record["children"]
    ), last
    assert "Item" not in ddb.get_item(TableName=f"{task}-CoordinatorState", Key=lock)
    assert "gave up the leader's lock this worker held" in run.log.read_text()


def test_a_daemon_killed_for_not_stopping_in_time_is_a_stop_that_did_not_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1, as a graceful stop the daemon itself reports incomplete: the SIGKILL is
    this process's own, not a signal someone else sent (128 + N)."""
    from replicator.runtime.kcl import launcher

    monkeypatch.setattr(launcher, "STOP_MARGIN_S", 0.5)
    ready = tmp_path / "ready"
    deaf = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    daemon = DaemonProcess([sys.executable, "-c", deaf], os.environ, grace_s=0)
    daemon.start()
    try:
        wait_until(ready.exists, 30, "the daemon to ignore SIGTERM")
        daemon.request_stop(signal.SIGTERM)
        assert daemon.wait() == 1
        assert daemon.status == 128 + signal.SIGKILL
        assert daemon.failure is not None
        assert daemon.failure.startswith("the KCL daemon did not stop within 0.5 s of the stop")
    finally:
        daemon.clean_up()


def test_an_operators_first_signal_after_a_stop_of_our_own_is_not_the_second(
    tmp_path: Path,
) -> None:
    """The run asks the daemon to stop by itself (the source's stream was replaced); an
    operator's SIGTERM then (``docker stop``) was counted as the second stop request and
    killed the daemon and its stopping processors. It lets the graceful stop go on."""
    ready, stopping = tmp_path / "ready", tmp_path / "stopping"
    slow_stop = (
        "import signal, sys, time\n"
        f"def stop(*_): open({str(stopping)!r}, 'w').close(); time.sleep(1.0); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    output = io.StringIO()
    daemon = DaemonProcess(
        [sys.executable, "-c", slow_stop], os.environ, grace_s=30, output=output, as_json=True
    )
    daemon.start()
    try:
        wait_until(ready.exists, 30, "the daemon to start")
        daemon.stop_of_our_own()
        waiting = threading.Thread(target=daemon.wait)
        waiting.start()
        wait_until(stopping.exists, 30, "the daemon's graceful stop to begin")
        daemon.request_stop(signal.SIGTERM)  # the operator's one signal
        waiting.join(30)
        assert not waiting.is_alive()
    finally:
        daemon.clean_up()
    assert daemon.status == 0, daemon.failure
    assert daemon.failure is None


def test_the_daemon_logs_each_processor_line_once() -> None:
    """The KCL copies each line a processor writes to stderr as is, and logs it again as
    an ERROR; the logging configuration keeps only the copy."""
    text = (templates_dir() / "logback.xml").read_text()
    assert (
        '<logger name="software.amazon.kinesis.multilang.DrainChildSTDERRTask" level="OFF"/>'
        in text
    )


def test_the_daemon_is_forked_with_its_parent_death_signal_only_while_no_thread_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fork while another thread holds a lock leaves that lock held in the child: the
    parent-death signal (armed between fork and exec) is used only when this process is
    its one thread, and the daemon always gets a session of its own."""
    seen: list[dict[str, Any]] = []

    class Recorded:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            seen.append(kwargs)
            self.pid, self.stdout = 1, None

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    others = [
        thread for thread in threading.enumerate() if thread is not threading.current_thread()
    ]
    release = threading.Event()
    extra = threading.Thread(target=release.wait, daemon=True)
    extra.start()
    try:
        DaemonProcess(["java"], {}, grace_s=1).start()
    finally:
        release.set()
        extra.join()
    assert seen[-1]["start_new_session"] is True
    assert seen[-1]["preexec_fn"] is None
    if not others and sys.platform == "linux":  # the test process itself has one thread
        DaemonProcess(["java"], {}, grace_s=1).start()
        assert seen[-1]["preexec_fn"] is not None


def test_entering_the_metrics_scaffold_starts_no_thread(tmp_path: Path) -> None:
    """run_kcl starts the daemon between entering it and Served.start: the watermark
    readers (threads) start only then."""
    from replicator.runtime import supervisor

    job = write_job(tmp_path / "job.yaml", kind="dynamodb-streams")
    resolved = load_job(job)
    assert resolved.publishes_watermark
    before = threading.active_count()
    with supervisor.metrics_served(resolved, list, []) as served:
        assert threading.active_count() == before
        assert served.marks
        served.start()
        assert threading.active_count() > before


def test_a_jvm_option_secret_with_spaces_is_redacted_whole_in_the_started_line() -> None:
    """The command was logged joined by spaces, and the redaction, which ends a value at
    a blank, left `-Dhttps.proxyPassword=<redacted> horse battery staple`."""
    import io

    from replicator import logs

    options = java.jvm_options(
        {
            java.JVM_OPTIONS_ENV: "'-Dhttps.proxyPassword=correct horse battery staple' "
            "-XX:TieredStopAtLevel=1 -Dhttps.proxyHost=proxy.internal"
        }
    )
    captured = io.StringIO()
    logs.configure("info", "json", captured)
    daemon = DaemonProcess([sys.executable, "-c", "pass", *options], os.environ, grace_s=1)
    try:
        daemon.start()
        daemon.wait()
    finally:
        daemon.clean_up(wait_s=5)
        logs.configure("info", "json")
    (started,) = [
        json.loads(line)
        for line in captured.getvalue().splitlines()
        if '"KCL daemon started"' in line
    ]
    assert started["command"] == (
        f"{sys.executable} -c pass -Dhttps.proxyPassword=<redacted> -XX:TieredStopAtLevel=1 "
        "-Dhttps.proxyHost=proxy.internal"
    )
