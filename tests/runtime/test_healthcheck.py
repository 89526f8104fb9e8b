"""The container's health probe, ``python -m replicator.runtime.healthcheck``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from replicator.config.model import MetricsConfig
from replicator.metrics import multiprocess
from replicator.metrics.server import MetricsServer
from replicator.runtime.healthcheck import url_of
from tests.support.healthcheck import healthcheck


def _serving(host: str) -> Iterator[MetricsServer]:
    directory = multiprocess.prepare()
    server = MetricsServer(host, 0, directory.path, problems=list, stall_after_s=60)
    server.start()
    yield server
    server.stop()
    multiprocess.discard(directory)


@pytest.fixture
def ipv6_server() -> Iterator[MetricsServer]:
    yield from _serving("::1")


@pytest.fixture
def ipv4_server() -> Iterator[MetricsServer]:
    yield from _serving("127.0.0.1")


def _job_file(tmp_path: Path, metrics: str) -> str:
    """A job file as mounted at /config/job.yaml, with ``metrics`` as its metrics section."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "runtime: local\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"metrics: {metrics}\n"
    )
    return str(path)


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_a_port_that_is_not_one_is_a_one_line_failure(port: str) -> None:
    result = healthcheck(REPLICATOR_METRICS_PORT=port)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"healthcheck: REPLICATOR_METRICS_PORT {port!r} is not a port (1-65535)"
    )


@pytest.mark.parametrize("host", ["bad host", "a/b", "user@host", "host:9400", "x:y:z"])
def test_a_host_that_is_not_one_is_a_one_line_failure(host: str) -> None:
    """As for the port: one line naming the variable, exit 1, whatever urllib would have
    made of it (a traceback for a space, another host for a slash or an @)."""
    result = healthcheck(REPLICATOR_METRICS_PORT="47151", REPLICATOR_METRICS_HOST=host)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"healthcheck: REPLICATOR_METRICS_HOST {host!r} is not an IP address or host name"
    )


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "[0.0.0.0]", "[localhost]", "[127.0.0.1"])
def test_a_host_the_job_file_refuses_is_refused_by_the_probe(host: str) -> None:
    """The probe kept a host pattern of its own that took ``999.1.1.1`` (and ``1.2.3``,
    which the resolver reads as 1.2.0.3) as host names, and stripped brackets from what
    is no IPv6 address: a setting the job's ``metrics.host`` refuses was probed, and
    reported as the replicator being unreachable."""
    with pytest.raises(ValidationError, match="is not a host name or IP address"):
        MetricsConfig(host=host)
    result = healthcheck(REPLICATOR_METRICS_PORT="47251", REPLICATOR_METRICS_HOST=host)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"healthcheck: REPLICATOR_METRICS_HOST {host!r} is not an IP address or host name"
    )


def test_the_probe_imports_neither_the_job_file_s_model_nor_the_aws_sdk() -> None:
    """It runs every few seconds in the container: pydantic, YAML and botocore would
    make each run several times slower to start."""
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, replicator.runtime.healthcheck\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'pydantic', 'yaml', 'botocore', 'boto3'} or m.startswith('replicator.config')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert listed.stdout.strip() == "[]"


def test_the_configured_host_is_probed(ipv6_server: MetricsServer) -> None:
    """A replicator listening on one specific address (here ::1) is not reached on
    127.0.0.1: the probe asks the address REPLICATOR_METRICS_HOST names."""
    port = str(ipv6_server.port)
    assert healthcheck(REPLICATOR_METRICS_PORT=port, REPLICATOR_METRICS_HOST="::1").returncode == 0
    missed = healthcheck(REPLICATOR_METRICS_PORT=port)
    assert missed.returncode == 1 and "unreachable" in missed.stderr


def test_wildcard_hosts_are_probed_on_loopback() -> None:
    assert url_of("0.0.0.0", 9400) == "http://127.0.0.1:9400/healthz"
    assert url_of("::", 9400) == "http://[::1]:9400/healthz"
    assert url_of("[fd00::5]", 9400) == "http://[fd00::5]:9400/healthz"
    assert url_of("10.1.2.3", 9400) == "http://10.1.2.3:9400/healthz"


def test_the_job_file_s_metrics_port_and_host_are_probed(
    tmp_path: Path, ipv4_server: MetricsServer, ipv6_server: MetricsServer
) -> None:
    """The image sets REPLICATOR_CONFIG to the mounted job file: a job that moved its
    metrics elsewhere is probed there, with no variable of its own (it was probed on 9400
    and reported unhealthy while it replicated)."""
    job = _job_file(tmp_path, f"{{port: {ipv4_server.port}}}")  # host: 0.0.0.0, the default
    assert healthcheck(REPLICATOR_CONFIG=job).returncode == 0
    job = _job_file(tmp_path, f"{{port: {ipv6_server.port}, host: '::1'}}")
    assert healthcheck(REPLICATOR_CONFIG=job).returncode == 0
    # The variables still decide over the file.
    missed = healthcheck(REPLICATOR_CONFIG=job, REPLICATOR_METRICS_HOST="127.0.0.1")
    assert missed.returncode == 1 and "unreachable" in missed.stderr
    given = healthcheck(REPLICATOR_CONFIG=job, REPLICATOR_METRICS_PORT=str(ipv4_server.port))
    assert given.returncode == 1, "the job's host ::1 with the variable's port"
    assert f"[::1]:{ipv4_server.port}" in given.stderr


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        ("{enabled: false}", "metrics.enabled is false, so /healthz is not served"),
        ("{port: 0}", "metrics.port is 0 (a port picked at start): give the job a fixed port"),
    ],
)
def test_job_metrics_no_probe_can_reach_are_one_line_naming_the_file(
    tmp_path: Path, metrics: str, said: str
) -> None:
    job = _job_file(tmp_path, metrics)
    result = healthcheck(REPLICATOR_CONFIG=job)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"healthcheck: {job}: {said}"), result.stderr


def test_a_port_0_job_is_probed_on_the_port_the_variable_gives(
    tmp_path: Path, ipv4_server: MetricsServer
) -> None:
    job = _job_file(tmp_path, "{port: 0}")
    result = healthcheck(REPLICATOR_CONFIG=job, REPLICATOR_METRICS_PORT=str(ipv4_server.port))
    assert result.returncode == 0, result.stderr


def test_a_job_file_the_probe_cannot_read_leaves_the_defaults_and_says_why(
    tmp_path: Path, ipv4_server: MetricsServer
) -> None:
    """``run --config other.yaml`` with nothing at REPLICATOR_CONFIG: the probe asks the
    port the variable gives, else 9400, and a failure says the file was not read."""
    missing = str(tmp_path / "absent.yaml")
    given = healthcheck(REPLICATOR_CONFIG=missing, REPLICATOR_METRICS_PORT=str(ipv4_server.port))
    assert given.returncode == 0, given.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime: [\n")
    failed = healthcheck(REPLICATOR_CONFIG=str(bad), REPLICATOR_METRICS_PORT="9")
    assert failed.returncode == 1
    assert "http://127.0.0.1:9/healthz" in failed.stderr
    assert f"(the job file was not read: REPLICATOR_CONFIG: {bad}" in failed.stderr, failed.stderr
    # The problem itself, naming the key, not only the count of problems.
    unset = tmp_path / "unset.yaml"
    unset.write_text(
        "source: {region: us-east-1, table: t10}\ndestinations: [{region: eu-west-1, table: t10}]\n"
        "task_name: ${HEALTHCHECK_UNSET_VARIABLE}\n"
    )
    failed = healthcheck(REPLICATOR_CONFIG=str(unset), REPLICATOR_METRICS_PORT="9")
    assert failed.returncode == 1
    (said,) = [line for line in failed.stderr.splitlines() if "was not read" in line]
    assert "1 problem in the job file: task_name (line 3): " in said, said
    assert "HEALTHCHECK_UNSET_VARIABLE is not set" in said, said
    # Several: separated, the first three said and the rest counted.
    many = tmp_path / "many.yaml"
    many.write_text(
        "source: {region: us-east-1, table: t1}\ndestinations: [{region: eu-west-1, table: t2}]\n"
        "task_name: ${HEALTHCHECK_UNSET_VARIABLE}\nruntime: nowhere\n"
    )
    failed = healthcheck(REPLICATOR_CONFIG=str(many), REPLICATOR_METRICS_PORT="9")
    (said,) = [line for line in failed.stderr.splitlines() if "was not read" in line]
    assert "4 problems in the job file: " in said and said.endswith(" | and 1 more)"), said
    assert said.count(" | ") == 3, said


def test_a_port_given_still_probes_the_job_file_s_host(
    tmp_path: Path, ipv6_server: MetricsServer
) -> None:
    job = _job_file(tmp_path, "{port: 9, host: '::1'}")
    assert healthcheck(str(ipv6_server.port), REPLICATOR_CONFIG=job).returncode == 0


def test_both_variables_leave_the_job_file_unread(
    tmp_path: Path, ipv4_server: MetricsServer
) -> None:
    """Set when `run` reads another file than REPLICATOR_CONFIG: that file's metrics
    section (here off) is not the running job's."""
    job = _job_file(tmp_path, "{enabled: false}")
    result = healthcheck(
        REPLICATOR_CONFIG=job,
        REPLICATOR_METRICS_PORT=str(ipv4_server.port),
        REPLICATOR_METRICS_HOST="127.0.0.1",
    )
    assert result.returncode == 0, result.stderr


def test_a_credential_in_a_refused_value_is_not_repeated_by_the_probe(tmp_path: Path) -> None:
    """The probe's output is kept in the container's health log (`docker inspect`): a
    refused value from the environment is shown as validate shows it, redacted."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {region: us-east-1, table: t10}\ndestinations: [{region: eu-west-1, table: t10}]\n"
        "task_name: ${AWS_SECRET_ACCESS_KEY}\n"
    )
    failed = healthcheck(
        REPLICATOR_CONFIG=str(job), REPLICATOR_METRICS_PORT="9", AWS_SECRET_ACCESS_KEY=secret
    )
    assert failed.returncode == 1
    (said,) = [line for line in failed.stderr.splitlines() if "was not read" in line]
    assert "task_name (line 3)" in said, said
    assert secret not in failed.stderr and "EXAMPLEKEY" not in failed.stderr, failed.stderr
