"""`replicator properties`: the KCL properties a job runs with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.cli import in_process, replicator, replicator_into_a_pipe_nobody_reads


def properties(path: Path) -> dict[str, str]:
    result = in_process("properties", "--config", str(path))
    assert result.returncode == 0, result.stderr
    pairs = {}
    for line in result.stdout.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_kinesis_job_names_task_stream_and_processor() -> None:
    job = ROOT / "config" / "kinesis-source.yaml"
    props = properties(job)
    assert props["applicationName"] == "inventory-from-kinesis"
    assert props["streamName"] == "inventory-changes"
    assert props["executableName"] == (
        f"{sys.executable} -m replicator processor --config {job.resolve()}"
    )
    assert props["regionName"] == "us-east-1"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert props["failoverTimeMillis"] == "30000"
    assert props["callProcessRecordsEvenForEmptyRecordList"] == "true"
    assert props["AWSCredentialsProvider"] == "DefaultCredentialsProvider"  # AWS SDK v2 (KCL 3)
    # SIGTERM reaches the processors only if the daemon waits longer than the failover time.
    assert int(props["shutdownGraceMillis"]) > int(props["failoverTimeMillis"])
    # Keys the KCL reads nowhere are not written (it would ignore them silently).
    assert "validateSequenceNumberBeforeCheckpointing" not in props


def test_dynamodb_streams_job_names_the_table_or_arn(tmp_path: Path) -> None:
    props = properties(ROOT / "config" / "two-destinations.yaml")
    assert props["applicationName"] == "orders-fanout"
    assert props["streamName"] == "orders"  # the KCL insists on one; it names the table
    assert "dynamoDBStreamArn" not in props  # looked up from the table at start
    assert props["AWSCredentialsProvider"] == "DefaultCredentialsProvider"
    assert props["skipRecordsBehavior"] == "KCL_RETRY"  # on_trimmed_data: fail
    assert int(props["shutdownGraceMillis"]) > int(props["failoverTimeMillis"])
    job = tmp_path / "arn.yaml"
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
    job.write_text(
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:4566',\n"
        f"         stream: {{arn: '{arn}'}}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {worker_id: host-a, extra_properties: {shardSyncIntervalMillis: '5000'}}\n"
    )
    props = properties(job)
    # KCL 3 rejects a DynamoDB stream ARN as streamArn; the launcher reads this key.
    assert props["dynamoDBStreamArn"] == arn
    assert "streamArn" not in props
    assert props["applicationName"].startswith("DynamoDBCrossRegionReplication")
    assert props["workerId"] == "host-a"
    assert props["kinesisEndpoint"] == props["dynamoDBEndpoint"] == "http://127.0.0.1:4566"
    assert props["shardSyncIntervalMillis"] == "5000"


def test_properties_never_carry_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-value")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "replicator",
            "properties",
            "--config",
            str(ROOT / "config" / "two-destinations.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "AKIAEXAMPLEKEYID0000" not in result.stdout
    assert "example-secret-value" not in result.stdout


# -- what the KCL reads back: java.util.Properties escaping -------------------------------

PROPERTIES_READER = """\
import java.io.FileInputStream;
import java.util.Properties;
import java.util.TreeSet;

public class ReadProperties {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            properties.load(in);
        }
        StringBuilder out = new StringBuilder();
        for (String key : new TreeSet<>(properties.stringPropertyNames())) {
            out.append(escape(key)).append('\\t').append(escape(properties.getProperty(key)))
                .append('\\n');
        }
        System.out.print(out);
    }

    static String escape(String text) {
        StringBuilder out = new StringBuilder();
        for (char c : text.toCharArray()) {
            out.append(c < 0x20 || c > 0x7e || c == '%' ? String.format("%%%04x", (int) c) : c);
        }
        return out.toString();
    }
}
"""


def _unescape(text: str) -> str:
    import re

    pairs = re.sub(r"%([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return pairs.encode("utf-16", "surrogatepass").decode("utf-16")


@pytest.fixture(scope="module")
def java_properties(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Parse a properties file with java.util.Properties itself, as the KCL does."""
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        pytest.skip("no JDK (javac) to check the rendering against java.util.Properties")
    directory = tmp_path_factory.mktemp("reader")
    (directory / "ReadProperties.java").write_text(PROPERTIES_READER)
    subprocess.run([javac, "ReadProperties.java"], cwd=directory, check=True, timeout=120)

    def parse(text: str) -> dict[str, str]:
        file = directory / "rendered.properties"
        file.write_bytes(text.encode("ascii"))  # anything else must be escaped
        result = subprocess.run(
            [java, "-cp", str(directory), "ReadProperties", str(file)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        pairs = {}
        for line in result.stdout.splitlines():
            key, value = line.split("\t")
            pairs[_unescape(key)] = _unescape(value)
        return pairs

    return parse


NASTY = {
    "injected": "x\napplicationName = hijacked",
    "key with spaces": "value",
    "key=with:separators#and!": "v",
    "backslashes": "C:\\dir\\file",
    "endsInBackslash": "trailing\\",
    "next": "must survive the line above",
    "leadingSpace": "  two spaces first",
    "unicode": "caf\u00e9 \u2603 \U0001f600",
    "tabs\tand\rreturns": "\t\r\f",
    "#comment-like": "!also",
}


def test_extra_properties_and_worker_id_read_back_exactly(
    tmp_path: Path, java_properties: Any
) -> None:
    from replicator.config.loader import parse_job
    from replicator.runtime.kcl.properties import render_properties

    resolved = parse_job(
        "runtime: kcl\ntask_name: escapes\n"
        "source: {region: us-east-1, table: orders, stream: {kind: kinesis, name: s}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
        "kcl: {worker_id: placeholder}\n",
        tmp_path / "job.yaml",
    )
    job = resolved.job.model_copy(
        update={
            "kcl": resolved.job.kcl.model_copy(
                update={"worker_id": "host\nworkerId = other", "extra_properties": NASTY}
            )
        }
    )
    text = render_properties(resolved.model_copy(update={"job": job}))
    assert text.isascii()
    read = java_properties(text)
    # The keys the replicator reads in a rendered file (to refuse those in extra_properties)
    # are those java.util.Properties reads.
    from replicator.runtime.kcl.properties import _entries, _natural_lines

    assert sorted(entry.key for entry in _entries(_natural_lines(text))) == sorted(read)
    for key, value in NASTY.items():
        assert read[key] == value, key
    assert read["workerId"] == "host\nworkerId = other"
    assert read["applicationName"] == "escapes"
    assert read["streamName"] == "s"


def test_escaping_follows_the_properties_format_without_a_jdk() -> None:
    from replicator.runtime.kcl.properties import escape_key, escape_value, property_line

    assert property_line("a b", "c\\") == "a\\ b = c\\\\\n"
    assert escape_key("k=v:w#x!y") == "k\\=v\\:w\\#x\\!y"
    assert escape_value(" lead and = : # ok") == "\\ lead and = : # ok"
    assert escape_value("one\ntwo\r\t\f") == "one\\ntwo\\r\\t\\f"
    assert escape_value("\u00e9\U0001f600") == "\\u00E9\\uD83D\\uDE00"


def _validate(tmp_path: Path, kcl: str) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"kcl: {kcl}\n"
    )
    return in_process("validate", "--config", str(job))


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("applicationName", "task_name"),
        ("workerId", "kcl.worker_id"),
        ("failoverTimeMillis", "kcl.failover_time_ms"),
        ("shutdownGraceMillis", "kcl.failover_time_ms"),
        ("dynamoDBStreamArn", "source.stream.arn"),
        ("skipRecordsBehavior", "source.on_trimmed_data"),
    ],
)
def test_a_property_the_job_sets_is_refused_in_extra_properties(
    tmp_path: Path, key: str, instead: str
) -> None:
    result = _validate(tmp_path, f"{{extra_properties: {{{key}: '1'}}}}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if f"kcl.extra_properties.{key}" in line]
    assert len(lines) == 1
    assert instead in lines[0]


# The defaults the templates mark replaceable (`# @default`): the credentials provider
# (docs/security.md) and metricsLevel.
REPLACEABLE = {"AWSCredentialsProvider", "metricsLevel"}
VARIANTS = {
    "kinesis-endpoint": "{region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:47400',"
    " stream: {kind: kinesis, name: changes}}",
    "kinesis": "{region: us-east-1, table: orders, stream: {kind: kinesis, name: changes}}",
    "dynamodb-streams-arn-endpoint": "{region: us-east-1, table: orders,"
    " endpoint_url: 'http://127.0.0.1:47400', stream: {arn: '"
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000'}}",
    "dynamodb-streams": "{region: us-east-1, table: orders}",
}


def _job(tmp_path: Path, source: str, extra: dict[str, str]) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\ntask_name: revproto-y\n"
        f"source: {source}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "conflict: {policy: version, version_attribute: v}\n"
        f"kcl: {{extra_properties: {json.dumps(extra)}}}\n"
    )
    return job


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_property_the_rendered_file_sets_is_refused_in_extra_properties(
    tmp_path: Path, variant: str
) -> None:
    """Java properties keep the last of two values: any key the file `replicator run`
    writes for the job (its template's, and the endpoints and stream ARN it adds) given
    again in kcl.extra_properties would silently replace the job's. Each is refused,
    once, naming it; the same job without them validates."""
    rendered = properties(_job(tmp_path, VARIANTS[variant], {}))
    if variant == "dynamodb-streams":  # `replicator run` adds the ARN it looks up
        rendered["dynamoDBStreamArn"] = "looked up"
    written = set(rendered) - REPLACEABLE
    assert {"callProcessRecordsEvenForEmptyRecordList", "processingLanguage"} <= written
    assert ("kinesisEndpoint" in written) == ("endpoint" in variant)
    assert ("retrievalMode" in written) == variant.startswith("kinesis")
    job = _job(tmp_path, VARIANTS[variant], {key: "1" for key in sorted(written)})
    result = in_process("validate", "--config", str(job))
    assert result.returncode == 2, result.stdout + result.stderr
    named = [line for line in result.stderr.splitlines() if "kcl.extra_properties." in line]
    for key in written:
        assert len([line for line in named if f" kcl.extra_properties.{key} (" in line]) == 1, key
    assert len(named) == len(written), named
    job = _job(tmp_path, VARIANTS[variant], {"maxLeasesForWorker": "2"})
    assert in_process("validate", "--config", str(job)).returncode == 0
    assert properties(job)["maxLeasesForWorker"] == "2"  # a genuinely extra key passes


def test_a_replaceable_default_is_written_once_as_the_extra_properties_say(
    tmp_path: Path, java_properties: Any
) -> None:
    """The credentials provider (matched by the KCL whatever the key's case) and
    metricsLevel may be given in kcl.extra_properties: the template's line becomes a
    comment, so the KCL reads one value, the job's."""
    extra = {
        "awscredentialsprovider": "ProfileCredentialsProvider|ops",
        "metricsLevel": "SUMMARY",
        "maxLeasesForWorker": "2",
    }
    job = _job(tmp_path, VARIANTS["kinesis"], extra)
    assert in_process("validate", "--config", str(job)).returncode == 0
    result = in_process("properties", "--config", str(job))
    assert result.returncode == 0, result.stderr
    read = java_properties(result.stdout)
    credentials = [key for key in read if key.lower() == "awscredentialsprovider"]
    assert credentials == ["awscredentialsprovider"]
    assert read["awscredentialsprovider"] == "ProfileCredentialsProvider|ops"
    assert read["metricsLevel"] == "SUMMARY"
    assert read["maxLeasesForWorker"] == "2"
    assert "# replaced by kcl.extra_properties: metricsLevel = NONE\n" in result.stdout


def test_two_casings_of_the_credentials_key_are_refused(tmp_path: Path) -> None:
    """The KCL reads both as one property and takes whichever it meets last."""
    extra = {
        "AWSCredentialsProvider": "DefaultCredentialsProvider",
        "awsCredentialsProvider": "ProfileCredentialsProvider|ops",
    }
    result = in_process("validate", "--config", str(_job(tmp_path, VARIANTS["kinesis"], extra)))
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "kcl.extra_properties." in line]
    assert " kcl.extra_properties.awsCredentialsProvider (" in line
    assert "same property as kcl.extra_properties.AWSCredentialsProvider" in line


def test_plain_yaml_numbers_and_booleans_are_properties_as_text(tmp_path: Path) -> None:
    from replicator.config.loader import load_job

    result = _validate(
        tmp_path, "{extra_properties: {maxLeasesForWorker: 1, enablePriorityLeaseAssignment: true}}"
    )
    assert result.returncode == 0, result.stderr
    extra = load_job(tmp_path / "job.yaml").job.kcl.extra_properties
    assert extra == {"maxLeasesForWorker": "1", "enablePriorityLeaseAssignment": "true"}


# -- the processor's command line -------------------------------------------------------


def test_a_job_path_with_a_quote_is_passed_unquoted(tmp_path: Path) -> None:
    """The KCL splits executableName on spaces and runs it without a shell."""
    directory = tmp_path / "o'brien"
    directory.mkdir()
    job = directory / "job.yaml"
    job.write_bytes((ROOT / "config" / "kinesis-source.yaml").read_bytes())
    props = properties(job)
    assert props["executableName"] == (
        f"{sys.executable} -m replicator processor --config {job.resolve()}"
    )


def test_the_processors_read_the_runs_copy_of_the_job_not_the_file(tmp_path: Path) -> None:
    """A ConfigMap's symlinks swapped, or the file edited, after `replicator run` checked
    it: the processors the daemon starts later read the job as it was validated."""
    from replicator.config.loader import load_job
    from replicator.runtime.kcl.properties import render_properties

    versions = tmp_path / "..2026_01_01"
    versions.mkdir()
    (versions / "job.yaml").write_bytes((ROOT / "config" / "kinesis-source.yaml").read_bytes())
    (tmp_path / "..data").symlink_to(versions.name)
    job = tmp_path / "job.yaml"
    job.symlink_to("..data/job.yaml")
    resolved = load_job(job)
    assert resolved.text == (versions / "job.yaml").read_text()
    copy = tmp_path / "run" / "task.job.yaml"
    text = render_properties(resolved, job_copy=copy)
    assert f"\nexecutableName = {sys.executable} -m replicator processor --config {copy}\n" in text
    assert str(versions) not in text.replace(f"# Job file: {job}", "")


def test_a_processor_reading_the_copy_names_the_operators_job_file(tmp_path: Path) -> None:
    from replicator.config.loader import load_job
    from replicator.exceptions import ConfigError

    copy = tmp_path / "copy.yaml"
    copy.write_text("runtime: kcl\nsource: {region: us-east-1}\n")
    with pytest.raises(ConfigError) as raised:
        load_job(copy, named="/config/job.yaml")
    assert str(raised.value).startswith("/config/job.yaml: ")
    assert str(copy) not in str(raised.value)
    copy.write_bytes((ROOT / "config" / "kinesis-source.yaml").read_bytes())
    assert load_job(copy, named="/config/job.yaml").path == Path("/config/job.yaml")


@pytest.mark.parametrize("name", ["sp ace", "caf\u00e9", "tab\tbed"])
def test_a_job_path_the_kcl_cannot_pass_is_refused_with_exit_4(tmp_path: Path, name: str) -> None:
    directory = tmp_path / name
    directory.mkdir()
    job = directory / "job.yaml"
    job.write_bytes((ROOT / "config" / "kinesis-source.yaml").read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "properties", "--config", str(job)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("replicator: the KCL cannot run a processor from a path")


# -- stopping: the daemon waits longer than a processor flushes ---------------------------


@pytest.mark.parametrize("failover_ms", [1_000, 10_000, 30_000, 60_000])
def test_the_graceful_stop_outlasts_the_processors_flush_and_the_failover(
    tmp_path: Path, failover_ms: int
) -> None:
    from replicator.config.loader import parse_job
    from replicator.config.model import PROCESSOR_FLUSH_TIMEOUT_MS
    from replicator.processor import ReplicationProcessor
    from replicator.runtime.kcl.properties import render_properties, shutdown_grace_ms

    resolved = parse_job(
        "runtime: kcl\nsource: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"kcl: {{failover_time_ms: {failover_ms}}}\n",
        tmp_path / "job.yaml",
    )
    grace = shutdown_grace_ms(resolved.job)
    # The processors flush first, then the KCL's final shutdown lasts about the failover
    # time: the grace covers both, one after the other, and a margin.
    assert grace == PROCESSOR_FLUSH_TIMEOUT_MS + failover_ms + 10_000
    assert f"shutdownGraceMillis = {grace}\n" in render_properties(resolved)
    processor = ReplicationProcessor(lambda shard: None, None)  # type: ignore[arg-type,return-value]
    assert processor._shutdown_flush_timeout_s * 1000 == PROCESSOR_FLUSH_TIMEOUT_MS


def test_a_shorter_processor_flush_shortens_the_graceful_stop(tmp_path: Path) -> None:
    """``kcl.shutdown_flush_ms`` (a stop that must fit a platform's grace period): the
    daemon's grace is that flush + the failover time + 10 s."""
    from replicator.config.loader import parse_job
    from replicator.runtime.kcl.properties import render_properties

    resolved = parse_job(
        "runtime: kcl\nsource: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {failover_time_ms: 5000, shutdown_flush_ms: 2000}\n",
        tmp_path / "job.yaml",
    )
    assert "shutdownGraceMillis = 17000\n" in render_properties(resolved)


def test_an_installed_package_carries_the_templates_where_the_runtime_looks() -> None:
    """pyproject's data-files install properties/ at sys.prefix/share/...; building a
    wheel takes too long for a test, so the configuration is checked against the tree
    and the runtime's lookup."""
    import tomllib

    from replicator.runtime.kcl import properties as module

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data_files = config["tool"]["setuptools"]["data-files"]
    target = "share/dynamodb-replicator/properties"
    shipped = sorted(Path(name).name for name in data_files[target])
    assert shipped == sorted(path.name for path in (ROOT / "properties").iterdir())
    assert all((ROOT / name).is_file() for name in data_files[target])
    source = Path(module.__file__).read_text()
    assert '"share" / "dynamodb-replicator" / "properties"' in source


@pytest.mark.parametrize(
    ("runtime", "stream", "setting", "expected"),
    [
        ("local", "{}", "fail", "stop with exit 6"),
        ("kcl", "{}", "fail", "KCL_RETRY"),
        ("kcl", "{}", "restart_from_trim_horizon", "SKIP_RECORDS_TO_TRIM_HORIZON"),
        ("kcl", "{kind: kinesis, name: s}", "fail", "no effect on a kinesis source"),
    ],
)
def test_validate_says_what_on_trimmed_data_does_here(
    tmp_path: Path, runtime: str, stream: str, setting: str, expected: str
) -> None:
    from replicator.cli import describe
    from replicator.config.loader import parse_job

    resolved = parse_job(
        f"runtime: {runtime}\n"
        f"source: {{region: us-east-1, table: orders, stream: {stream}, "
        f"on_trimmed_data: {setting}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "conflict: {policy: version, version_attribute: v}\n",
        tmp_path / "job.yaml",
    )
    (line,) = [line for line in describe(resolved).splitlines() if line.startswith("trimmed")]
    assert expected in line
    assert ("exit 6" in line) == (runtime == "local" and setting == "fail") or "no exit 6" in line


@pytest.mark.parametrize("where", ["user base", "scheme data"])
def test_templates_installed_with_pip_install_user_or_under_usr_local_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """`pip install --user` puts data files under the user base, Debian's system pip under
    /usr/local while sys.prefix is /usr: neither is sys.prefix."""
    from replicator.runtime.kcl import properties as module

    installed = tmp_path / "root" / "share" / "dynamodb-replicator" / "properties"
    installed.mkdir(parents=True)
    (installed / "kinesis.properties").write_text("# template\n")
    monkeypatch.delenv(module.TEMPLATE_ENV, raising=False)
    monkeypatch.setattr(module, "__file__", str(tmp_path / "a" / "b" / "c" / "properties.py"))
    monkeypatch.setattr(module.sys, "prefix", str(tmp_path / "elsewhere"))
    root = str(tmp_path / "root")
    if where == "user base":
        monkeypatch.setattr(module.site, "getuserbase", lambda: root)
    else:
        real = module.sysconfig.get_path
        monkeypatch.setattr(
            module.sysconfig,
            "get_path",
            lambda name, *a, **k: root if name == "data" and not a else real(name, *a, **k),
        )
    assert module.templates_dir() == installed


def _properties_with_templates(directory: Path, job: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", "properties", "--config", str(job)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "REPLICATOR_PROPERTIES_DIR": str(directory)},
    )


def test_a_templates_directory_set_explicitly_is_used_or_refused_never_passed_over(
    tmp_path: Path,
) -> None:
    """It was passed over, without a word, unless it held kinesis.properties."""
    job = ROOT / "config" / "two-destinations.yaml"  # a DynamoDB Streams source
    result = _properties_with_templates(tmp_path / "nowhere", job)
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("replicator: $REPLICATOR_PROPERTIES_DIR: ")
    assert "is not a directory" in line
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(ROOT / "properties" / "kinesis.properties", templates)
    result = _properties_with_templates(templates, job)
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "$REPLICATOR_PROPERTIES_DIR" in line
    assert "no dynamodb-streams.properties and no logback.xml" in line
    shutil.copy(ROOT / "properties" / "logback.xml", templates)
    (templates / "dynamodb-streams.properties").write_text(
        "# ours\nstreamName = ${table}\n${endpoint_lines}${extra_lines}"
    )
    result = _properties_with_templates(templates, job)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "# ours\nstreamName = orders\n"


@pytest.mark.parametrize("runtime", ["local", "kcl"])
@pytest.mark.parametrize("command", ["validate", "properties"])
def test_extra_properties_are_checked_alike_under_either_runtime(
    tmp_path: Path, runtime: str, command: str
) -> None:
    """`replicator properties` prints them for either runtime, and a job moves between
    them: runtime local passed a property the KCL would read as 0 without a word."""
    job = tmp_path / "job.yaml"
    job.write_text(
        f"runtime: {runtime}\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {maxLeasesForWorker: 1.5}}\n"
    )
    # The first case as a process of its own, the others in this process (the file alone
    # decides them).
    first = (runtime, command) == ("local", "validate")
    result = (replicator if first else in_process)(command, "--config", str(job))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert (
        "  kcl.extra_properties.maxLeasesForWorker (line 4): '1.5' is not a whole number"
        in result.stderr
    )


def kcl_job(tmp_path: Path, extra_properties: str, source: str = "") -> Path:
    """A runtime-kcl job with these ``kcl.extra_properties`` (a YAML flow mapping's
    inside) on line 4; ``source``: more of the source's settings."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\n"
        f"source: {{region: us-east-1, table: orders{source}}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"kcl: {{extra_properties: {{{extra_properties}}}}}\n"
    )
    return job


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        (
            "clientVersionConfig",
            "bogus",
            "CLIENT_VERSION_CONFIG_3X, CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
        ),
        ("metricsLevel", "bogus", "NONE, SUMMARY, DETAILED"),
        ("workerMetricsBillingMode", "unknown_to_sdk_version", "PAY_PER_REQUEST, PROVISIONED"),
        ("coordinatorStateBillingMode", "on-demand", "PAY_PER_REQUEST, PROVISIONED"),
        ("retrievalMode", "push", "DEFAULT, FANOUT, POLLING"),
    ],
)
def test_a_kcl_constant_the_kcl_does_not_know_is_refused_naming_those_it_does(
    tmp_path: Path, key: str, value: str, named: str
) -> None:
    """The daemon's start ended with "No enum constant ..." (exit 1, restarted for ever by
    a restart policy) where validate had said nothing; the endpoint the job reads
    (metricsLevel's own check) does not change what is said."""
    job = kcl_job(tmp_path, f"{key}: {value}", ", endpoint_url: 'http://127.0.0.1:9'")
    result = in_process("validate", "--config", str(job))
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"  kcl.extra_properties.{key} (line 4): {value!r} is none of the values the KCL takes "
        f"for {key}: {named} (in any case)" in result.stderr
    ), result.stderr


@pytest.mark.parametrize("value", ["maybe", "1", "enabled"])
def test_a_kcl_boolean_property_takes_true_or_false_only(tmp_path: Path, value: str) -> None:
    job = kcl_job(tmp_path, f"leaseTablePitrEnabled: TRUE, disableWorkerMetrics: '{value}'")
    result = in_process("validate", "--config", str(job))
    assert result.returncode == 2, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        f"  kcl.extra_properties.disableWorkerMetrics (line 4): {value!r} is not true or "
        "false: the KCL would read it as false, or its default, without a word"
    ], result.stderr


def test_a_kcl_constant_in_any_case_is_taken(tmp_path: Path) -> None:
    job = kcl_job(tmp_path, "retrievalMode: polling, metricsLevel: Summary")
    assert in_process("validate", "--config", str(job)).returncode == 0


@pytest.mark.parametrize("worker_id", ["", "  "])
def test_an_empty_worker_id_option_is_refused_as_the_job_files_is(
    tmp_path: Path, worker_id: str
) -> None:
    """It silently fell back to the host name, while the job file's empty
    kcl.worker_id is refused."""
    job = ROOT / "config" / "two-destinations.yaml"
    # The first case as a process of its own, the rest in this process (the option alone
    # decides them).
    run = replicator if worker_id == "" else in_process
    result = run("properties", "--config", str(job), "--worker-id", worker_id)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert f"Invalid value for '--worker-id': is empty ({worker_id!r})" in result.stderr
    named = in_process("properties", "--config", str(job), "--worker-id", "host-b")
    assert "\nworkerId = host-b\n" in named.stdout


@pytest.mark.parametrize(
    ("worker_id", "says"),
    [
        ("a\nb", "contains '\\n', a control or invisible character"),
        ("x\t", "contains '\\t', a control or invisible character"),
        ("x\r", "contains '\\r', a control or invisible character"),
        ("x\x1b[31m", "contains '\\x1b', a control or invisible character"),
        ("w\udcff", "contains '\\udcff', a control or invisible character"),
        (" x", "begins or ends with a space"),
    ],
)
def test_a_worker_id_option_is_checked_as_the_job_files_kcl_worker_id(
    tmp_path: Path, worker_id: str, says: str
) -> None:
    """Only emptiness was checked: a newline or a byte that is not UTF-8 (a traceback)
    went into the properties file, which the job file's kcl.worker_id refuses."""
    job = ROOT / "config" / "two-destinations.yaml"
    result = in_process("properties", "--config", str(job), "--worker-id", worker_id)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert f"Invalid value for '--worker-id': {says}" in result.stderr
    in_file = tmp_path / "job.yaml"
    in_file.write_text(job.read_text() + "kcl: {worker_id: '${W}'}\n")
    refused = in_process("validate", "--config", str(in_file), env={"W": worker_id})
    (line,) = [line for line in refused.stderr.splitlines() if "kcl.worker_id (line" in line]
    assert says in line


@pytest.mark.parametrize("command", ["validate", "properties", "run"])
def test_a_property_from_a_variable_of_bytes_not_utf8_is_refused_naming_the_key(
    tmp_path: Path, command: str
) -> None:
    """A ${VAR} holding a byte that is not UTF-8 gives a lone surrogate, which passed
    validate and then stopped properties and run with a UnicodeEncodeError."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\nsource: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {a: '${DL}'}}\n"
    )
    result = in_process(command, "--config", str(job), env={"DL": "dl\udcff.jsonl"})
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("  kcl.extra_properties.a (line")
    ]
    assert "contains '\\udcff', a byte that is not UTF-8" in line


def test_a_stream_arn_from_a_variable_of_bytes_not_utf8_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\nsource: {region: us-east-1, table: orders, stream: {arn: '${ARN}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
    )
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2020\udcff"
    result = in_process("properties", "--config", str(job), env={"ARN": arn})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "  source.stream.arn (line 2): contains '\\udcff'" in result.stderr


def test_a_job_file_path_not_utf8_is_written_in_the_properties_comment() -> None:
    """The job file's own path is written in a comment; a byte that is not UTF-8 in it
    is written as the UTF-16 unit it is read as, not a UnicodeEncodeError."""
    from replicator.runtime.kcl.properties import escape_value

    assert escape_value("/jobs/j\udcff.yaml") == "/jobs/j\\uDCFF.yaml"


# Where the job's endpoint and extra properties are written, which every template needs.
_JOB_LINES = "${endpoint_lines}${extra_lines}"


def _templates_of_our_own(tmp_path: Path, template: bytes) -> tuple[Path, dict[str, str]]:
    """A $REPLICATOR_PROPERTIES_DIR holding ``template`` as dynamodb-streams.properties,
    ending with :data:`_JOB_LINES`."""
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(ROOT / "properties" / "logback.xml", templates)
    (templates / "dynamodb-streams.properties").write_bytes(template + _JOB_LINES.encode())
    return templates / "dynamodb-streams.properties", {"REPLICATOR_PROPERTIES_DIR": str(templates)}


def _refusals_of_a_template(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """What `properties` (of a DynamoDB Streams job) and `validate` (of a job with
    kcl.extra_properties, which reads the template) say of the template in ``env``:
    one line each, after nothing on stdout, and exit 4."""
    with_extra = tmp_path / "extra.yaml"
    with_extra.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {maxLeasesForWorker: 1}}\n"
    )
    lines = []
    job = ROOT / "config" / "two-destinations.yaml"
    for command, path in (("properties", job), ("validate", with_extra)):
        result = in_process(command, "--config", str(path), env=env)
        assert result.returncode == 4, (command, result.stdout, result.stderr)
        assert result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        lines.append(line)
    return lines


# A template of one's own whose other lines hold what is no placeholder: a `$` before
# no name, `$$` (a `$`), and in comments, which the KCL does not read, anything.
_OWN_TEMPLATE = (
    "# ours: ${...} and ${nosuch} in a comment stay as written\n"
    "streamName = ${table}\n"
    "password = pa$5word, $$nosuch and a $\n"
)
_OWN_RENDERED = (
    "# ours: ${...} and ${nosuch} in a comment stay as written\n"
    "streamName = orders\n"
    "password = pa$5word, $nosuch and a $\n"
)


@pytest.mark.parametrize(
    ("bad", "said", "fixed", "rendered"),
    [
        ("foo = ${nosuch}", "unknown placeholder ${nosuch}", "foo = $${nosuch}", "foo = ${nosuch}"),
        ("foo = $nosuch", "unknown placeholder $nosuch", "foo = $$nosuch", "foo = $nosuch"),
        ("foo = ${Table}", "unknown placeholder ${Table}", "foo = ${table}", "foo = orders"),
        (
            "maxRecords = ${max_records",
            "'${max_records' is no placeholder",
            "maxRecords = ${max_records}",
            "maxRecords = 1000",
        ),
        (
            "foo = ${max records} and more",
            "'${max records}' is no placeholder",
            "foo = $${max records} and more",
            "foo = ${max records} and more",
        ),
        (
            "foo = a \\\n    ${nosuch}",  # a value continued: the KCL reads this line too
            "unknown placeholder ${nosuch}",
            "foo = a \\\n    $${nosuch}",
            "foo = a \\\n    ${nosuch}",
        ),
    ],
    ids=["unknown-braced", "unknown-named", "another-case", "unclosed", "not-a-name", "continued"],
)
def test_a_template_placeholder_that_is_not_ours_is_refused_naming_file_and_line(
    tmp_path: Path, bad: str, said: str, fixed: str, rendered: str
) -> None:
    """It reached the KCL as written (`${max_records` as maxRecords, which the KCL reads
    as nothing it can use, without a word), and `properties` and `validate` exited 0."""
    template, env = _templates_of_our_own(tmp_path, (_OWN_TEMPLATE + bad + "\n").encode())
    line_number = 4 + bad.count("\n")  # where the placeholder is
    for line in _refusals_of_a_template(tmp_path, env):
        assert line.startswith(
            f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}, line {line_number}: {said}"
        ), line
        assert "${max_records}, ${region}," in line  # the placeholders there are
    job = ROOT / "config" / "two-destinations.yaml"
    template.write_text(_OWN_TEMPLATE + fixed + "\n" + _JOB_LINES)
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _OWN_RENDERED + rendered + "\n"


def test_every_placeholder_a_template_may_use_is_filled_in(tmp_path: Path) -> None:
    """The names the refusal lists are the ones rendering fills in, all of them."""
    from replicator.runtime.kcl.properties import LINE_PLACEHOLDERS, PLACEHOLDERS

    text = "".join(
        f"n.{name} = [${{{name}}}]\n" for name in PLACEHOLDERS if name not in LINE_PLACEHOLDERS
    )
    _, env = _templates_of_our_own(tmp_path, text.encode())
    job = ROOT / "config" / "two-destinations.yaml"
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert "$" not in result.stdout
    assert "n.max_records = [1000]\n" in result.stdout


def test_a_template_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    """It ended `properties` with a UnicodeDecodeError's traceback."""
    template, env = _templates_of_our_own(tmp_path, b"# ours\nstreamName = caf\xe9\n")
    job = ROOT / "config" / "two-destinations.yaml"
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}: not UTF-8 text")


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        (
            "leaseAssignmentIntervalMillis = -5",
            "leaseAssignmentIntervalMillis: '-5' is negative: it is a count, a size or a "
            "time, 0 or more",
        ),
        (
            "idleTimeBetweenReadsInMillis = abc",
            "idleTimeBetweenReadsInMillis: 'abc' is not a whole number that a Java long holds",
        ),
        ("maxLeasesForWorker:\\\n    1.5", "maxLeasesForWorker: '1.5' is not a whole number"),
        ("max\\u004CeasesForWorker = -1", "maxLeasesForWorker: '-1' is negative"),
        ("maxRecords = ${max_records}0x", "maxRecords: '10000x' is not a whole number"),
        (
            "AWSCredentialsProviderDynamoDB = not a class",
            "AWSCredentialsProviderDynamoDB: 'not a class' does not name a credentials provider",
        ),
        (
            "stream\\u004Eame = other",  # streamName, written again (line 2), escaped
            "streamName is set again (first at line 2); the KCL would take the last value "
            "without a word: set it once",
        ),
    ],
    ids=[
        "negative",
        "not-a-number",
        "continued",
        "escaped-key",
        "filled-in",
        "credentials",
        "set-twice",
    ],
)
def test_a_bad_value_a_template_sets_is_refused_as_in_extra_properties(
    tmp_path: Path, bad: str, said: str
) -> None:
    """The same value in kcl.extra_properties is refused with exit 2; in a template it
    passed `properties` and `validate`, and the KCL threw at start-up 20 times
    (leaseAssignmentIntervalMillis) or read it as nothing without a word. A key set twice
    passed too, the KCL keeping the last value."""
    template, env = _templates_of_our_own(tmp_path, (_OWN_TEMPLATE + bad + "\n").encode())
    expected = f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}, line 4: {said}"
    for line in _refusals_of_a_template(tmp_path, env):
        assert line.startswith(expected), line
    job = ROOT / "config" / "two-destinations.yaml"
    template.write_text(_OWN_TEMPLATE + "leaseAssignmentIntervalMillis = 0\n" + _JOB_LINES)
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _OWN_RENDERED + "leaseAssignmentIntervalMillis = 0\n"


def test_a_template_default_that_extra_properties_replace_is_not_checked(tmp_path: Path) -> None:
    """The rendered file has the template's line as a comment: the KCL never reads it."""
    default = "# @default\nAWSCredentialsProvider = not a class\n"
    template, env = _templates_of_our_own(tmp_path, default.encode())
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {AWSCredentialsProvider: DefaultCredentialsProvider}}\n"
    )
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\nAWSCredentialsProvider = DefaultCredentialsProvider\n")
    assert in_process("validate", "--config", str(job), env=env).returncode == 0
    result = in_process(
        "properties", "--config", str(ROOT / "config" / "two-destinations.yaml"), env=env
    )
    assert result.returncode == 4
    assert f"{template}, line 2: AWSCredentialsProvider: 'not a class'" in result.stderr


def _bundled_templates_with(tmp_path: Path, last_line: str) -> tuple[Path, dict[str, str]]:
    """A copy of the bundled templates whose DynamoDB Streams template ends with
    ``last_line`` instead of ``${endpoint_lines}${extra_lines}``."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "properties", templates)
    template = templates / "dynamodb-streams.properties"
    text = template.read_text()
    assert text.endswith("\n${endpoint_lines}${extra_lines}\n")
    template.write_text(text.removesuffix("${endpoint_lines}${extra_lines}\n") + last_line)
    return template, {"REPLICATOR_PROPERTIES_DIR": str(templates)}


def _endpoint_and_extra_job(tmp_path: Path) -> Path:
    """A job with source.endpoint_url and kcl.extra_properties: lines the file adds."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:4566'}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {maxLeasesForWorker: 1}}\n"
    )
    return job


@pytest.mark.parametrize(
    ("last_line", "lacking"),
    [
        ("", "${endpoint_lines}"),
        ("${endpoint_lines}\n", "${extra_lines}"),
        ("${extra_lines}\n", "${endpoint_lines}"),
        ("# ${endpoint_lines}${extra_lines}\n", "${endpoint_lines}"),
    ],
    ids=["neither", "no-extra", "no-endpoint", "in-a-comment"],
)
def test_a_template_without_the_lines_the_job_adds_is_refused_naming_what_it_lacks(
    tmp_path: Path, last_line: str, lacking: str
) -> None:
    """A template without ${endpoint_lines} or ${extra_lines} was taken: `validate` and
    `properties` exited 0, and the file had no kinesisEndpoint, dynamoDBEndpoint or
    maxLeasesForWorker, so the daemon read AWS itself instead of source.endpoint_url.
    Every template needs both, whatever the job sets, so that one of one's own is refused
    before the job that would lose something runs."""
    template, env = _bundled_templates_with(tmp_path, last_line)
    job = _endpoint_and_extra_job(tmp_path)
    plain = ROOT / "config" / "two-destinations.yaml"  # neither an endpoint nor extras
    for command, path in (("validate", job), ("properties", job), ("properties", plain)):
        result = in_process(command, "--config", str(path), env=env)
        assert result.returncode == 4, (command, path, result.stdout, result.stderr)
        assert result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(
            f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}: no {lacking} outside a comment"
        ), line


@pytest.mark.parametrize(
    "last_line",
    ["foo = ${endpoint_lines}${extra_lines}\n", "foo = a \\\n${endpoint_lines}${extra_lines}\n"],
    ids=["in-a-value", "continuing-a-value"],
)
def test_the_lines_the_job_adds_must_begin_a_line_of_the_template(
    tmp_path: Path, last_line: str
) -> None:
    """Written inside another property's value, the job's endpoint would become part of
    that value, and the KCL would read AWS itself."""
    template, env = _bundled_templates_with(tmp_path, last_line)
    line_number = len(template.read_text().splitlines())
    result = in_process(
        "properties", "--config", str(ROOT / "config" / "two-destinations.yaml"), env=env
    )
    assert result.returncode == 4, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}, line {line_number}: "
        "${endpoint_lines} does not begin a line"
    ), line


def test_the_lines_the_job_adds_are_written_where_the_template_puts_them(tmp_path: Path) -> None:
    _, env = _bundled_templates_with(tmp_path, "  ${extra_lines}\n${endpoint_lines}# end\n")
    job = _endpoint_and_extra_job(tmp_path)
    assert in_process("validate", "--config", str(job), env=env).returncode == 0
    result = in_process("properties", "--config", str(job), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(
        "  maxLeasesForWorker = 1\n\n"
        "kinesisEndpoint = http://127.0.0.1:4566\n"
        "dynamoDBEndpoint = http://127.0.0.1:4566\n"
        "# end\n"
    )


def test_an_enum_property_is_written_as_checked_without_the_blanks_around_it(
    tmp_path: Path,
) -> None:
    """metricsLevel: ' none ' passed `validate` (checked trimmed), was written as it came,
    and the KCL refused it at start-up: "No enum constant ...MetricsLevel. NONE "."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders, endpoint_url: 'http://127.0.0.1:4566'}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "kcl: {extra_properties: {metricsLevel: ' none ', clientVersionConfig: "
        "'CLIENT_VERSION_CONFIG_3X\t', workerMetricsBillingMode: ' PAY_PER_REQUEST'}}\n"
    )
    assert in_process("validate", "--config", str(job)).returncode == 0
    written = properties(job)
    assert written["metricsLevel"] == "none"
    assert written["clientVersionConfig"] == "CLIENT_VERSION_CONFIG_3X"
    assert written["workerMetricsBillingMode"] == "PAY_PER_REQUEST"
    result = in_process("properties", "--config", str(job))
    assert "\nmetricsLevel = none\n" in result.stdout


def test_an_enum_property_a_template_writes_with_blanks_after_it_is_refused(
    tmp_path: Path,
) -> None:
    """java.util.Properties keeps the blanks at a value's end, and the KCL does not trim
    the name of an enum constant."""
    template, env = _templates_of_our_own(
        tmp_path, (_OWN_TEMPLATE + "metricsLevel = NONE \n").encode()
    )
    expected = (
        f"replicator: $REPLICATOR_PROPERTIES_DIR: {template}, line 4: metricsLevel: 'NONE ' has "
        "blanks around it"
    )
    for line in _refusals_of_a_template(tmp_path, env):
        assert line.startswith(expected), line


def _setters(jars: Path, class_name: str) -> set[str]:
    """The properties a class of the KCL's multilang jar sets: its public setters."""
    (jar,) = jars.glob("amazon-kinesis-client-multilang-*.jar")
    javap = shutil.which("javap")
    assert javap is not None, "javap (the JDK) is needed to read the KCL's classes"
    listed = subprocess.run(
        [javap, "-cp", str(jar), "-public", class_name],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    names = set()
    for line in listed.splitlines():
        head, _, _ = line.strip().partition("(")
        method = head.rsplit(" ", 1)[-1]
        if head.startswith("public void set") and len(method) > 3:
            names.add(method[3].lower() + method[4:])
    return names


def test_every_property_the_kcl_multilang_configuration_sets_is_known(kcl_jars: Path) -> None:
    """The properties validate does not caution about are those of the jars the image
    ships: each setter of KCL 3.1's multilang configuration (and of the fan-out bean it
    reads into) is known."""
    from replicator.config.kcl_settings import KCL_KNOWN_PROPERTIES

    package = "software.amazon.kinesis.multilang.config."
    setters = _setters(kcl_jars, package + "MultiLangDaemonConfiguration") | _setters(
        kcl_jars, package + "FanoutConfigBean"
    )
    assert "maxLeasesForWorker" in setters and "awsCredentialsProvider" in setters
    assert setters - KCL_KNOWN_PROPERTIES == set()


def test_a_property_the_kcl_does_not_read_is_cautioned_about_with_the_closest(
    tmp_path: Path,
) -> None:
    """The KCL takes a misspelt key without a word (maxLeaseForWorkr: nothing is capped);
    validate says so, and still passes (a later KCL in kcl.jars_dir may read it)."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "task_name: orders-to-eu\n"
        "kcl:\n"
        "  extra_properties:\n"
        "    maxLeaseForWorkr: 2\n"
        "    AWSCredentialsProvider: ProfileCredentialsProvider|ops\n"
        "    leaseTablePitrEnabled: true\n"
        "    somethingElse: x\n"
        "    kinesisClient.endpointOverride: 'https://kinesis.example'\n"
    )
    result = in_process("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {path}: kcl.extra_properties.maxLeaseForWorkr is not a property KCL 3.1's "
        "MultiLangDaemon reads: the KCL takes it without a word and uses it for nothing "
        "(did you mean maxLeasesForWorker?)",
        f"warning: {path}: kcl.extra_properties.somethingElse is not a property KCL 3.1's "
        "MultiLangDaemon reads: the KCL takes it without a word and uses it for nothing",
    ]


def test_properties_that_cannot_be_written_are_said_in_one_line() -> None:
    """``properties -c job.yaml | head -0`` exited 1 without a word (click's handling of
    a closed pipe), where the other commands name what failed."""
    done = replicator_into_a_pipe_nobody_reads(
        "properties", "-c", str(ROOT / "config/one-way.yaml")
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "replicator: the report could not be written to stdout: [Errno 32] Broken pipe"
    ], done.stderr
