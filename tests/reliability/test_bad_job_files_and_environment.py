"""Bad job files and a bad environment: one clear error naming the problem, and exit 2
(the file) or 3 (the environment), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replicator.cli import cli
from replicator.demo import tables
from tests.support.aws import client, no_aws_credentials
from tests.support.cli import in_process
from tests.support.faults.proxy import FaultProxy

pytestmark = pytest.mark.reliability


@dataclass
class Case:
    name: str
    text: str | None  # None: there is no job file
    fragment: str
    exit_code: int
    env: dict[str, str | None] = field(default_factory=dict)  # None removes a variable


def _job_text(
    endpoint: str,
    source: str,
    destination: str,
    *,
    source_region: str = "us-east-1",
    source_endpoint: str | None = None,
    destination_endpoint: str | None = None,
) -> str:
    return (
        "task_name: bad-environment\n"
        f"source: {{region: {source_region}, table: {source}, "
        f"endpoint_url: '{source_endpoint or endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: {destination}, "
        f"endpoint_url: '{destination_endpoint or endpoint}'}}\n"
        "metrics: {enabled: false}\n"
    )


def _run_cli(
    command: str, config: Path, env: dict[str, str | None]
) -> subprocess.CompletedProcess[str]:
    """``replicator <command> --config <config>``; ``command`` may carry options after
    the command's name (``backfill --skip-handoff-check``)."""
    environment = {**os.environ}
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, "-m", "replicator", *command.split(), "--config", str(config)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


# The cases' commands are independent processes (each with its own job file and
# environment), so they run a few at a time: each case still runs the real command and is
# checked on its own output, and the cases are reported in order.
_AT_ONCE = 4


def _run_all(
    runs: list[tuple[str, Path, dict[str, str | None]]],
) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(_AT_ONCE) as pool:
        return list(pool.map(lambda run: _run_cli(*run), runs))


def _check_case(
    case: Case, config: Path, results: dict[str, subprocess.CompletedProcess[str]]
) -> list[str]:
    """The problems found in the case's results (empty when it failed as it should); prints
    a report line."""
    problems: list[str] = []
    codes = []
    message = ""
    for command, result in results.items():
        codes.append(f"{command} exit {result.returncode}")
        lines = result.stderr.splitlines()
        errors = [line for line in lines if line.startswith("replicator: ")]
        if errors:
            message = " | ".join(lines[lines.index(errors[0]) :]).replace(f"{config.parent}/", "")
        else:
            message = result.stderr[-300:]
        if result.returncode != case.exit_code:
            problems.append(
                f"{case.name}: {command} exited {result.returncode}, not {case.exit_code}"
            )
        if "Traceback" in result.stderr + result.stdout:
            problems.append(f"{case.name}: {command} printed a traceback:\n{result.stderr}")
        if len(errors) != 1:
            problems.append(
                f"{case.name}: {command} printed {len(errors)} errors:\n{result.stderr}"
            )
        if case.fragment not in result.stderr:
            problems.append(
                f"{case.name}: {command} did not say {case.fragment!r}:\n{result.stderr}"
            )
    print(f"[reliability]     {case.name}: {', '.join(codes)}: {message[:220]}")
    return problems


def test_bad_job_files_give_one_clear_error_and_exit_2(tmp_path: Path) -> None:
    good = _job_text("http://127.0.0.1:1", "orders", "orders-copy")
    cases = [
        Case("YAML syntax error", good + "writer: {max_in_flight: 4\n", "YAML syntax error", 2),
        Case(
            "unknown key",
            good.replace("table: orders-copy", "tabel: orders-copy"),
            "destinations[0].tabel (line 4): unknown key (did you mean table?)",
            2,
        ),
        Case(
            "required key missing",
            good.replace("table: orders, ", ""),
            "source.table (line 2): required key is missing",
            2,
        ),
        Case(
            "invalid region",
            good.replace("region: eu-west-1", "region: europe"),
            "expected an AWS region name",
            2,
        ),
        Case(
            "unset variable",
            good.replace("orders-copy", "'${REPLICATOR_TEST_NO_SUCH_VARIABLE}'"),
            "environment variable REPLICATOR_TEST_NO_SUCH_VARIABLE is not set",
            2,
        ),
        Case("no job file", None, "job file not found", 2),
    ]
    print("\n[reliability] 5a. bad job files (replicator validate and run)")
    commands = ("validate", "run")
    configs = [tmp_path / f"job-{index}.yaml" for index in range(len(cases))]
    for case, config in zip(cases, configs, strict=True):
        if case.text is not None:
            config.write_text(case.text)
    # The first case's commands run as processes of their own; the others' refusals,
    # decided by the job file before either command does anything, in this process.
    results = iter(_run_all([(command, configs[0], cases[0].env) for command in commands]))
    problems: list[str] = []
    for index, (case, config) in enumerate(zip(cases, configs, strict=True)):
        ran = {
            command: next(results)
            if index == 0
            else in_process(*command.split(), "--config", str(config), env=case.env)
            for command in commands
        }
        problems += _check_case(case, config, ran)
    assert not problems, "\n".join(problems)


def test_a_bad_environment_gives_one_clear_error_and_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path, proxies: list[FaultProxy]
) -> None:
    name = unique("env")
    us = client("dynamodb", "us-east-1", moto_endpoint)
    eu = client("dynamodb", "eu-west-1", moto_endpoint)
    tables.create(us, f"{name}-src", stream=True)
    tables.create(us, f"{name}-nostream", stream=False)
    tables.create(eu, f"{name}-dst", stream=False)
    eu.create_table(
        TableName=f"{name}-hashonly",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    unreachable = proxies[0]
    unreachable.refuse()
    src, dst = f"{name}-src", f"{name}-dst"

    def job(**kwargs: Any) -> str:
        return _job_text(
            moto_endpoint, kwargs.pop("source", src), kwargs.pop("destination", dst), **kwargs
        )

    no_credentials = no_aws_credentials(tmp_path)
    failing = tmp_path / "failing-config"
    failing.write_text("[profile failing]\ncredential_process = /bin/false\n")
    cases = [
        Case(
            "missing source table",
            job(source=f"{name}-nope"),
            f"source table {name}-nope: not found",
            3,
        ),
        Case(
            "stream disabled",
            job(source=f"{name}-nostream"),
            "has no DynamoDB stream enabled",
            3,
        ),
        Case(
            "wrong region",
            job(source_region="eu-central-1"),
            f"source table {src}: not found at {moto_endpoint} (eu-central-1)",
            3,
        ),
        Case(
            "missing destination table",
            job(destination=f"{name}-nope"),
            f"destinations[0] table {name}-nope: not found",
            3,
        ),
        Case(
            "destination key schema differs",
            job(destination=f"{name}-hashonly"),
            "has key schema",
            3,
        ),
        Case("no credentials", job(), "no AWS credentials found", 3, env=no_credentials),
        Case(
            "a profile that does not exist",
            job(),
            "could not be loaded: The config profile (no-such-profile) could not be found",
            3,
            env={**no_credentials, "AWS_PROFILE": "no-such-profile"},
        ),
        Case(
            "a credential process that fails",
            job(),
            "could not be loaded: Error when retrieving credentials from custom-process",
            3,
            env={**no_credentials, "AWS_PROFILE": "failing", "AWS_CONFIG_FILE": str(failing)},
        ),
        Case(
            "unreachable source endpoint",
            job(source_endpoint=unreachable.url),
            f"cannot reach {unreachable.url}",
            3,
        ),
        Case(
            "unreachable destination endpoint",
            job(destination_endpoint=unreachable.url),
            f"destinations[0] table {dst}: cannot reach {unreachable.url}",
            3,
        ),
    ]
    print("\n[reliability] 5b. a bad environment (replicator run; validate reads only the file)")
    configs = [tmp_path / f"job-{index}.yaml" for index in range(len(cases))]
    for case, config in zip(cases, configs, strict=True):
        assert case.text is not None
        config.write_text(case.text)
    runs = _run_all(
        [("run", config, case.env) for case, config in zip(cases, configs, strict=True)]
    )
    problems: list[str] = []
    for case, config, ran in zip(cases, configs, runs, strict=True):
        problems += _check_case(case, config, {"run": ran})
        # validate reads the file only, whatever the environment: its exit code is asked
        # of the command in this process (5a runs validate as a process of its own).
        validated = CliRunner().invoke(cli, ["validate", "--config", str(config)], env=case.env)
        if validated.exit_code != 0:
            problems.append(f"{case.name}: validate exited {validated.exit_code}")
    assert not problems, "\n".join(problems)


def _drop_key_types(ddb: Any, table: str) -> None:
    """Leave ``table``'s DescribeTable without its key attributes' types, as moto's own
    server does after an UpdateTable that adds an index giving only the index's
    attribute (it replaces the table's AttributeDefinitions with those given)."""
    ddb.update_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "g", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "gidx",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            }
        ],
    )
    described = ddb.describe_table(TableName=table)["Table"]["AttributeDefinitions"]
    assert [d["AttributeName"] for d in described] == ["g"], described


def test_a_table_described_without_its_key_types_gives_one_clear_error_and_exit_3(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Every command that compares key schemas names the table whose description lacks a
    key attribute's type (source or destination) and exits 3, as for another key schema."""
    name = unique("keytypes")
    us = client("dynamodb", "us-east-1", moto_endpoint)
    eu = client("dynamodb", "eu-west-1", moto_endpoint)
    for ddb, table, stream in (
        (us, f"{name}-src", True),
        (us, f"{name}-bare-src", True),
        (eu, f"{name}-dst", False),
        (eu, f"{name}-bare-dst", False),
    ):
        tables.create(ddb, table, stream=stream)
    _drop_key_types(us, f"{name}-bare-src")
    _drop_key_types(eu, f"{name}-bare-dst")
    commands = ("verify", "backfill --skip-handoff-check", "redrive", "run")
    cases = {
        f"us-east-1/{name}-bare-src": Case(
            "source described without its key types",
            _job_text(moto_endpoint, f"{name}-bare-src", f"{name}-dst"),
            "DescribeTable gives no type for its key attributes pk, sk",
            3,
        ),
        f"eu-west-1/{name}-bare-dst": Case(
            "destination described without its key types",
            _job_text(moto_endpoint, f"{name}-src", f"{name}-bare-dst"),
            "DescribeTable gives no type for its key attributes pk, sk",
            3,
        ),
    }
    print("\n[reliability] 5c. a table described without its key attributes' types")
    configs = [tmp_path / f"job-{index}.yaml" for index in range(len(cases))]
    for case, config in zip(cases.values(), configs, strict=True):
        assert case.text is not None
        config.write_text(case.text)
    results = iter(
        _run_all(
            [
                (command, config, case.env)
                for case, config in zip(cases.values(), configs, strict=True)
                for command in commands
            ]
        )
    )
    problems: list[str] = []
    for (table, case), config in zip(cases.items(), configs, strict=True):
        ran = {command: next(results) for command in commands}
        problems += _check_case(case, config, ran)
        region, _, bare = table.partition("/")
        for command, result in ran.items():
            errors = [line for line in result.stderr.splitlines() if "DescribeTable" in line]
            if not any(bare in line and region in line for line in errors):
                problems.append(f"{case.name}: {command} did not name {table}:\n{result.stderr}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["validate", "demo"])
def test_a_working_directory_deleted_under_the_shell_is_one_line_and_exit_2(
    tmp_path: Path, command: str
) -> None:
    """A shell left in a directory removed since (a checkout deleted and cloned again):
    every command reads relative paths from the working directory, so it says that it
    cannot be read, in one line, instead of a traceback from wherever it was first read."""
    from tests.support import ROOT

    gone = tmp_path / "gone"
    gone.mkdir()
    job = ROOT / "config" / "demo.yaml"
    script = (
        "import os, sys, runpy; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
        "sys.argv = ['replicator', *sys.argv[2:]]; runpy.run_module('replicator', "
        "run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(gone), command, "-c", str(job)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the working directory cannot be read" in lines[0], result.stderr
